"""GPTQ calibration from training tokens inside the training clock (``quant.calib_source train`` with
``train.calib_reserve_s``, the 1.0611 record's legal variant): the windows, the clock's reserve, the export's use of the
given Hessians, and a training run that collects them on its clock."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_data import make_dataset, one_thread  # noqa: F401 (autouse fixture)

from pgolf_data.shards import ShardSet
from pgolf_model.config import ConfigError, QuantConfig, TrainConfig
from pgolf_model.export import calibration
from pgolf_model.export.weights import calibration_hessians, export_weights
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.training.clock import Clock
from pgolf_model.training.data import TokenStream, random_windows
from pgolf_model.training.trainer import run

CPU = Runtime(torch.device("cpu"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, dev_sample):
    return make_dataset(tmp_path_factory.mktemp("ds"), dev_sample[100:400], dev_sample[:20])


def smoke(**changes):
    return preset("smoke").override({"model.vocab_size": 260, **changes})


def test_random_windows_are_seeded_slices_of_the_training_stream(dataset):
    data, _ = dataset
    stream = TokenStream(ShardSet.open(data, "train"))
    flat = stream.read(0, stream.total)
    windows = random_windows(stream, 6, 32, seed=5)
    assert windows.shape == (6, 32) and windows.dtype == torch.int64
    for row in windows.numpy():
        starts = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(flat, 32) == row, axis=1))
        assert len(starts)
    assert torch.equal(windows, random_windows(stream, 6, 32, seed=5))
    assert not torch.equal(windows, random_windows(stream, 6, 32, seed=6))


def test_the_reserve_ends_training_early():
    cfg = TrainConfig(max_minutes=1.0, calib_reserve_s=15.0, iterations=1000)
    assert cfg.limit_seconds == 45.0
    clock = Clock(step=10, seconds=44.9)
    assert not clock.out_of_time(cfg)
    clock.seconds = 45.0
    assert clock.out_of_time(cfg) and clock.fraction(cfg) == 1.0
    with pytest.raises(ConfigError, match="calib_reserve_s"):
        TrainConfig(max_minutes=0.5, calib_reserve_s=30.0)
    with pytest.raises(ConfigError, match="calib_source"):
        QuantConfig(allocate=True, calib_source="train")


def test_export_uses_the_given_hessians_as_its_own(dev_sample):
    """Hessians handed in give the artifact the export computes from the same tokens itself (here: its own
    self-generated ones, rotated as the export rotates)."""
    cfg = smoke(**{"quant.method": "gptq", "quant.calib_seqs": 4, "quant.calib_seq_len": 16, "quant.bits": 6})
    cfg = cfg.override({"quant.rotate": ("vo",), "quant.keep_float_max_numel": 256})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.normal_(0, 0.05)
            block.mlp.proj.weight.normal_(0, 0.05)
    own = export_weights(model, cfg, runtime=CPU)
    q = cfg.quant
    tokens = calibration.generate(model, q.calib_seqs, q.calib_seq_len, batch_size=q.calib_batch, seed=cfg.train.seed)
    given = calibration_hessians(model, cfg, tokens, runtime=CPU)
    train_cfg = cfg.override({"quant.calib_source": "train"})
    assert export_weights(model, train_cfg, runtime=CPU, hessians=given).weights == own.weights
    with pytest.raises(ValueError, match="inside the training clock"):
        export_weights(model, train_cfg, runtime=CPU)


def test_training_collects_the_hessians_on_its_clock(dataset, tmp_path):
    data, tok = dataset
    cfg = smoke(
        **{
            "train.iterations": 20, "train.val_tokens": 512, "train.max_minutes": 10.0, "train.calib_reserve_s": 30.0,
            "quant.method": "gptq", "quant.calib_source": "train", "quant.calib_seqs": 8, "quant.calib_seq_len": 64,
        }
    )  # fmt: skip
    summary = run(cfg, data=data, tokenizer=tok, out_dir=tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    (calib,) = [r for r in records if r["event"] == "calibration"]
    last_step = [r for r in records if r["event"] == "train"][-1]
    assert calib["source"] == "train" and calib["seconds"] > 0
    # The calibration's time is training time: the summary's train_seconds include it.
    assert summary["train_seconds"] == pytest.approx(calib["train_seconds"], abs=1e-3)
    assert summary["train_seconds"] >= last_step["elapsed_s"] + calib["seconds"] - 1e-3
    (quant,) = [r for r in records if r["event"] == "quant"]
    assert "calibration" not in quant["seconds"]  # nothing was generated after training
    assert (tmp_path / "model.pga").is_file() and summary["artifact_val_bpb"] < 8
