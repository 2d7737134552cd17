"""Progressive context growth (PR #2014): the stage and re-warm-up formulas, the loader's shorter rows from the same
slot, and a training run that changes length on schedule, one static shape per stage, and resumes through a
re-warm-up."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_data import make_dataset, one_thread  # noqa: F401 (autouse fixture)

from pgolf_model.config import ConfigError, TrainConfig
from pgolf_model.presets import preset
from pgolf_model.training import checkpoint, context
from pgolf_model.training.data import TrainLoader
from pgolf_model.training.trainer import run

RECORD = TrainConfig(
    seq_len=3072, device_batch_tokens=98_304, batch_tokens=786_432, seq_stages=(1024, 2048),
    seq_stage_ends=(0.1, 0.7), seq_rewarm_steps=32,
)  # fmt: skip


def test_stages_follow_the_share_of_training():
    got = [context.seq_len_at(RECORD, f) for f in (0.0, 0.0999, 0.1, 0.5, 0.6999, 0.7, 1.0)]
    assert got == [1024, 1024, 2048, 2048, 2048, 3072, 3072]
    assert context.lengths(RECORD) == [1024, 2048, 3072]
    assert [context.rewarm(RECORD, s) for s in (None, 0, 15, 31, 200)] == [1.0, 1 / 32, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"seq_stages": (1000,), "seq_stage_ends": (0.5,)}, "divisor"),
        ({"seq_stages": (1024,), "seq_stage_ends": ()}, "as many ends"),
        ({"seq_stages": (1024, 2048), "seq_stage_ends": (0.7, 0.1)}, "increasing"),
        ({"seq_stages": (1024,), "seq_stage_ends": (1.0,)}, "increasing"),
    ],
)
def test_bad_schedules_are_errors(changes, match):
    fields = {k: getattr(RECORD, k) for k in ("seq_len", "device_batch_tokens", "batch_tokens")}
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**fields, **changes)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, dev_sample):
    return make_dataset(tmp_path_factory.mktemp("ds"), dev_sample[100:400], dev_sample[:30])


def test_a_shorter_length_cuts_the_same_slot_into_more_rows(dataset):
    from pgolf_data.shards import ShardSet

    shards = ShardSet.open(dataset[0], "train")
    plain = TrainLoader(shards, seq_len=64, device_batch_tokens=256, grad_accum=1)
    full, short = plain.tokens(3, 0), plain.tokens(3, 0, 16)
    assert full.shape == (4, 65) and short.shape == (16, 17)
    np.testing.assert_array_equal(full[:, :-1].reshape(-1), short[:, :-1].reshape(-1))  # the same stream positions
    shuffled = TrainLoader(shards, seq_len=64, device_batch_tokens=256, grad_accum=1, shuffle=True, seed=5)
    rows = shuffled.tokens(2, 0, 32)
    assert rows.shape == (8, 33)
    np.testing.assert_array_equal(rows, shuffled.tokens(2, 0, 32))  # a pure function of the step
    stream = shuffled.stream.read(0, shuffled.stream.total)
    for row in rows:  # each row is a window of 33 tokens starting at a multiple of 32
        starts = [s for s in range(0, len(stream) - 32, 32) if np.array_equal(stream[s : s + 33], row)]
        assert starts
    with pytest.raises(ValueError, match="does not divide"):
        plain.tokens(0, 0, 48)


def _cfg(**changes):
    return preset("smoke").override(
        {
            "model.vocab_size": 260, "train.iterations": 8, "train.val_every": 0, "train.val_tokens": 512,
            "train.log_every": 1, "optim.lr_warmup_steps": 0, "optim.warmdown_steps": 0,
            "train.seq_stages": (16, 32), "train.seq_stage_ends": (0.25, 0.5), "train.seq_rewarm_steps": 4,
            **changes,
        }
    )  # fmt: skip


def _events(out, kind):
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [e for e in lines if e.get("event") == kind]


def test_training_grows_its_context_on_schedule_with_one_shape_per_stage(dataset, tmp_path, monkeypatch):
    data, tok = dataset
    shapes = []
    real = TrainLoader.batch

    def spy(self, step, micro, seq_len=0):
        x, y = real(self, step, micro, seq_len)
        shapes.append((step, tuple(x.shape)))
        return x, y

    monkeypatch.setattr(TrainLoader, "batch", spy)
    run(_cfg(), data=data, tokenizer=tok, out_dir=tmp_path, progress=False)
    by_step = dict(shapes)
    assert [by_step[s] for s in range(8)] == [(64, 16)] * 2 + [(32, 32)] * 2 + [(16, 64)] * 4
    assert [(e["step"], e["seq_len"]) for e in _events(tmp_path, "context")] == [(2, 32), (4, 64)]
    lr = {e["step"]: e["lr_scale"] for e in _events(tmp_path, "train")}  # logged after the step: step = index + 1
    assert [round(lr[s], 3) for s in range(1, 9)] == [1.0, 1.0, 0.25, 0.5, 0.25, 0.5, 0.75, 1.0]


def test_resume_inside_a_rewarm_reproduces_the_run(dataset, tmp_path):
    data, tok = dataset
    cfg = _cfg(**{"train.checkpoint_every": 5, "train.keep_checkpoints": 5})
    run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "a", progress=False)
    resume = str(tmp_path / "a" / "checkpoints" / "step_000005.pt")  # one step into the last stage's re-warm-up
    run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "b", progress=False, resume=resume)
    a, b = (checkpoint.load(tmp_path / d / "checkpoints" / "step_000008.pt") for d in ("a", "b"))
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
