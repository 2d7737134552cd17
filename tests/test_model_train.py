"""End to end on CPU: smoke training beats the unigram entropy, the artifact round trip, resume, the wall-clock stop,
budget refusal, and a 2-process gloo DDP run against one process with the same global batch."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from model_data import make_dataset, one_thread  # noqa: F401 (autouse fixture)

from pgolf_data.shards import ShardFormatError
from pgolf_model import artifact, evaluate
from pgolf_model.config import ConfigError
from pgolf_model.evaluation.byte_counts import load_val
from pgolf_model.presets import preset
from pgolf_model.train import main as train_main
from pgolf_model.training import checkpoint
from pgolf_model.training.trainer import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUND_TRIP_BOUND = 0.02  # BPB: int8 per-row rounding of a smoke model moves BPB by ~0.001


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, dev_sample):
    return make_dataset(tmp_path_factory.mktemp("ds"), dev_sample[100:700], dev_sample[:40])


def smoke(**changes):
    return preset("smoke").override({"model.vocab_size": 260, **changes})


def unigram_bpb(data_dir) -> float:
    """BPB of the best context-free model of the val split: the entropy of its own target unigram distribution."""
    tokens, counts = load_val(data_dir)
    freq = np.bincount(tokens[1:]).astype(float)
    p = freq[freq > 0] / freq.sum()
    return -(freq[freq > 0] * np.log2(p)).sum() / counts[1:].sum()


@pytest.fixture(scope="module")
def smoke_run(dataset, tmp_path_factory):
    data, tok = dataset
    out = tmp_path_factory.mktemp("run")
    return out, run(smoke(), data=data, tokenizer=tok, out_dir=out, progress=False)


def test_smoke_trains_clearly_below_the_unigram_entropy(dataset, smoke_run):
    out, summary = smoke_run
    uni = unigram_bpb(dataset[0])
    assert 4.0 < uni < 5.5
    assert summary["val_bpb"] < 0.85 * uni, (summary["val_bpb"], uni)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    events = {r["event"] for r in records}
    assert events == {"start", "train", "val", "quant", "result"}
    vals = [r for r in records if r["event"] == "val"]
    assert vals[0]["step"] == 0 and vals[-1]["full"] and vals[0]["val_bpb"] > vals[-1]["val_bpb"]
    train = [r for r in records if r["event"] == "train"]
    assert all({"step", "train_loss", "tokens_per_s", "elapsed_s"} <= set(r) for r in train)
    assert train[-1]["step"] == 80


def test_artifact_round_trip_stays_within_the_bound(smoke_run, dataset, capsys):
    out, summary = smoke_run
    assert abs(summary["artifact_val_bpb"] - summary["val_bpb"]) < ROUND_TRIP_BOUND
    assert summary["artifact_bytes"] == (out / "model.pga").stat().st_size < artifact.LIMIT
    # The CLI evaluates from the artifact alone (its own config, tokenizer and code) and gets the same number.
    assert evaluate.main([str(out / "model.pga"), "--data", str(dataset[0]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["val_bpb"] == pytest.approx(summary["artifact_val_bpb"], rel=1e-9)
    assert result["val_tokens"] == summary["val_targets"]


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_reproduces_the_uninterrupted_run(dataset, tmp_path, ema_decay):
    data, tok = dataset
    cfg = smoke(
        **{
            "train.ema_decay": ema_decay,  # the EMA is checkpointed too
            "train.iterations": 6,
            "train.checkpoint_every": 3,
            "train.keep_checkpoints": 5,
            "train.val_every": 0,
            "train.val_tokens": 512,
            "train.shuffle": True,  # the seeded window order must resume too
        }
    )
    full = run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "a", progress=False)
    resumed = run(
        cfg,
        data=data,
        tokenizer=tok,
        out_dir=tmp_path / "b",
        progress=False,
        resume=str(tmp_path / "a" / "checkpoints" / "step_000003.pt"),
    )
    a, b = (checkpoint.load(tmp_path / d / "checkpoints" / "step_000006.pt") for d in ("a", "b"))
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    assert resumed["val_bpb"] == full["val_bpb"]
    assert (tmp_path / "b" / "model.pga").read_bytes()[-1000:] == (tmp_path / "a" / "model.pga").read_bytes()[-1000:]
    # The benchmarks' loader: the newest checkpoint's weights, or its EMA's.
    for ema in (False, True):
        model, saved, state, missing = checkpoint.newest_model(tmp_path / "a", ema=ema)
        want = a["ema"] if ema and ema_decay else a["model"]
        assert state["path"].name == "step_000006.pt" and missing == [] and not model.training
        assert saved == cfg and all(torch.equal(t, want[k]) for k, t in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.newest_model(tmp_path / "empty")


def test_wall_clock_limit_stops_cleanly_and_writes_the_artifact(dataset, tmp_path):
    data, tok = dataset
    cfg = smoke(**{"train.max_minutes": 1e-4, "train.val_tokens": 512})
    summary = run(cfg, data=data, tokenizer=tok, out_dir=tmp_path, progress=False)
    assert summary["stopped_by_clock"] and 1 <= summary["steps"] < cfg.train.iterations
    assert (tmp_path / "model.pga").is_file() and math.isfinite(summary["artifact_val_bpb"])
    assert checkpoint.latest(tmp_path).name == f"step_{summary['steps']:06d}.pt"


def test_config_over_budget_is_refused_before_training(dataset, tmp_path):
    data, tok = dataset
    with pytest.raises(artifact.BudgetError, match=r"over the 50,000-byte limit by [\d,]+"):
        run(smoke(), data=data, tokenizer=tok, out_dir=tmp_path / "r", budget_limit=50_000, progress=False)
    assert not (tmp_path / "r").exists()


def test_bad_inputs_are_refused(dataset, tmp_path):
    data, tok = dataset
    with pytest.raises(ConfigError, match=r"model\.vocab_size = 300, but the tokenizer has 260 ids"):
        run(smoke(**{"model.vocab_size": 300}), data=data, tokenizer=tok, out_dir=tmp_path, progress=False)
    no_sidecars = tmp_path / "nosc"
    no_sidecars.mkdir()
    for f in data.glob("*.bin"):
        (no_sidecars / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ShardFormatError, match="no exact byte sidecars and no official byte count exists for a bytes"):
        run(smoke(), data=no_sidecars, tokenizer=tok, out_dir=tmp_path / "x", progress=False)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(dataset, tmp_path):
    data, tok = dataset
    flags = {
        "train.iterations": 8,
        "train.log_every": 1,
        "train.val_every": 4,
        "train.val_tokens": 2048,
        "train.batch_tokens": 2048,
        "train.device_batch_tokens": 1024,
    }
    single = run(smoke(**flags), data=data, tokenizer=tok, out_dir=tmp_path / "one", progress=False)
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "pgolf_model.train",
        "--preset",
        "smoke",
        "--data",
        str(data),
        "--tokenizer",
        str(tok),
        "--out",
        str(tmp_path / "two"),
        "--no-progress",
    ]
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def records(d):
        return [json.loads(line) for line in (tmp_path / d / "log.jsonl").read_text().splitlines()]

    one, two = records("one"), records("two")
    start = next(r for r in two if r["event"] == "start")
    assert start["world_size"] == 2 and start["grad_accum"] == 1
    assert next(r for r in one if r["event"] == "start")["grad_accum"] == 2
    losses = [[r["train_loss"] for r in recs if r["event"] == "train"] for recs in (one, two)]
    assert len(losses[0]) == 8
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-4)
    bpbs = [[r["val_bpb"] for r in recs if r["event"] == "val"] for recs in (one, two)]
    np.testing.assert_allclose(bpbs[1], bpbs[0], rtol=2e-4)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["val_targets"] == single["val_targets"]


def test_cli_reports_bad_input_in_one_line(dataset, capsys):
    data, tok = dataset
    base = ["--data", str(data), "--tokenizer", str(tok), "--preset", "smoke"]
    assert train_main([*base, "--model.num_kv_heads", "3"]) == 2
    assert "error: model.num_kv_heads = 3: must divide num_heads = 4" in capsys.readouterr().err
    assert train_main(["--data", str(data), "--tokenizer", "/nonexistent", "--preset", "smoke"]) == 2
    assert "error: no tokenizer artifact at /nonexistent" in capsys.readouterr().err
    assert evaluate.main(["/nonexistent.pga", "--data", str(data)]) == 2
    assert "error: no model artifact at /nonexistent.pga" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_training_matches_eager(dataset, tmp_path, monkeypatch):
    # The aot_eager backend runs the same Dynamo capture and autograd graphs as inductor without its C++ code
    # generation, which takes minutes on a shared CPU; bench/train_step.py times the real inductor build.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    data, tok = dataset
    flags = {"train.iterations": 3, "train.log_every": 1, "train.val_every": 0, "train.val_tokens": 512}
    eager = run(smoke(**flags), data=data, tokenizer=tok, out_dir=tmp_path / "e", progress=False)
    compiled = run(
        smoke(**flags, **{"train.compile": True}), data=data, tokenizer=tok, out_dir=tmp_path / "c", progress=False
    )
    losses = [
        [
            json.loads(line)["train_loss"]
            for line in (tmp_path / d / "log.jsonl").read_text().splitlines()
            if '"event": "train"' in line
        ]
        for d in ("e", "c")
    ]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    assert compiled["val_bpb"] == pytest.approx(eager["val_bpb"], rel=1e-4)
