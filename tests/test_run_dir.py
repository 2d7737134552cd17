"""A run directory is one run: a new run refuses a used --out, --resume must match the checkpoint's settings and be
the run's newest, --force deletes only what a run writes; checkpoints load without running pickled code; Ctrl-C
saves a checkpoint that resumes to the uninterrupted result; bad checkpoints and empty validation bytes are one-line
errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from model_data import encode_stream, make_dataset, one_thread, synthetic_docs, write_split  # noqa: F401 (autouse)

from pgolf_data.sidecars import write_index
from pgolf_data.tokenizer.artifact import to_artifact
from pgolf_model.config import ConfigError
from pgolf_model.presets import preset
from pgolf_model.train import main as train_main
from pgolf_model.training import checkpoint, run_dir
from pgolf_model.training import trainer as trainer_module
from pgolf_model.training.trainer import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = {
    "train.iterations": 6,
    "train.checkpoint_every": 2,
    "train.keep_checkpoints": 2,
    "train.val_every": 0,
    "train.val_tokens": 512,
    "train.log_every": 1,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), synthetic_docs(200, 1), synthetic_docs(10, 2))


def smoke(**changes):
    return preset("smoke").override({"model.vocab_size": 260, **FLAGS, **changes})


def cli(dataset, out, *flags: str) -> list[str]:
    data, tok = dataset
    argv = ["--data", str(data), "--tokenizer", str(tok), "--preset", "smoke", "--out", str(out), "--no-progress"]
    return [*argv, *(f for key, value in FLAGS.items() for f in (f"--{key}", str(value))), *flags]


def starts(out) -> int:
    return sum(json.loads(line)["event"] == "start" for line in (out / "log.jsonl").read_text().splitlines())


def steps(out) -> list[int]:
    return sorted(step for step, _ in checkpoint.checkpoints(out))


def test_a_used_run_directory_needs_resume_or_force(dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_main(cli(dataset, out)) == 0
    assert steps(out) == [4, 6] and starts(out) == 1
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()

    assert train_main(cli(dataset, out, "--train.iterations", "3")) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume auto" in err and "--force" in err and len(err.splitlines()) == 1
    # The case: a resume with another seed (and length) continued the seed-1337 run under the new claim.
    assert train_main(cli(dataset, out, "--resume", "auto", "--seed", "7", "--train.iterations", "12")) == 2
    err = capsys.readouterr().err
    assert "train.iterations 6 (now 12)" in err and "train.seed 1337 (now 7)" in err
    assert steps(out) == [4, 6] and starts(out) == 1, "a refused run changes nothing"

    assert train_main(cli(dataset, out, "--force", "--train.iterations", "3", "--train.checkpoint_every", "1")) == 0
    assert steps(out) == [2, 3], "the old run's later checkpoints must not take the keep slots"
    assert starts(out) == 1, "log.jsonl is the new run's alone"
    assert (out / "notes.txt").read_text() == "mine", "--force deletes only what a run writes"
    assert json.loads((out / "summary.json").read_text())["steps"] == 3


def test_resume_continues_only_from_the_runs_newest_checkpoint(dataset, tmp_path):
    data, tok = dataset
    out = tmp_path / "run"
    run(smoke(), data=data, tokenizer=tok, out_dir=out, progress=False)
    older = checkpoint.checkpoint_dir(out) / "step_000004.pt"
    with pytest.raises(run_dir.RunDirError, match=r"newest checkpoint is .*step_000006\.pt; continuing from another"):
        run(smoke(), data=data, tokenizer=tok, out_dir=out, resume=str(older), progress=False)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "x.txt").write_text("x")
    with pytest.raises(run_dir.RunDirError, match=r"already holds files .* but no checkpoint"):
        run(smoke(), data=data, tokenizer=tok, out_dir=elsewhere, resume=str(older), progress=False)
    with pytest.raises(run_dir.RunDirError, match="no checkpoints in"):
        run(smoke(), data=data, tokenizer=tok, out_dir=tmp_path / "new", resume="auto", progress=False)
    # A setting that only decides what is logged may change on resume.
    summary = run(
        smoke(**{"train.iterations": 6, "train.log_every": 3}),
        data=data, tokenizer=tok, out_dir=out, resume="auto", progress=False,
    )  # fmt: skip
    assert summary["steps"] == 6


def test_checkpoints_load_without_running_pickled_code(dataset, tmp_path, capsys):
    data, tok = dataset
    out = tmp_path / "run"
    run(smoke(**{"train.iterations": 2}), data=data, tokenizer=tok, out_dir=out, progress=False)
    path = checkpoint.latest(out)
    raw = torch.load(path, weights_only=True)  # tensors, numbers and strings only
    assert isinstance(raw["config"], str) and json.loads(raw["config"])["train"]["seed"] == 1337
    assert checkpoint.load(path)["config"]["train"]["iterations"] == 2

    marker = tmp_path / "payload-ran"
    planted = tmp_path / "planted.pt"
    torch.save({**raw, "model": Payload(str(marker))}, planted)
    with pytest.raises(checkpoint.CheckpointError, match="not a loadable pgolf checkpoint") as refused:
        checkpoint.load(planted)
    assert "Unsupported global" in str(refused.value) and "Please" not in str(refused.value), "the reason, no advice"
    assert not marker.exists()

    for name, content in (("fake.pt", b"not a checkpoint\n"), ("empty.pt", b"")):
        (tmp_path / name).write_bytes(content)
        fresh = tmp_path / f"run-{name}"
        assert train_main(cli(dataset, fresh, "--resume", str(tmp_path / name))) == 2
        err = capsys.readouterr().err
        assert f"{name}: not a loadable pgolf checkpoint" in err and len(err.strip().splitlines()) == 1
        assert len(err) < 300, err


class Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_uninterrupted_result(dataset, tmp_path, monkeypatch, capsys):
    data, tok = dataset
    full = run(smoke(), data=data, tokenizer=tok, out_dir=tmp_path / "full", progress=False)
    real_step = trainer_module.Trainer.step

    def step_then_ctrl_c(self):
        out = real_step(self)
        if self.clock.step == 3:  # mid-run, off the checkpoint grid: the saved one is the interrupt's
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(trainer_module.Trainer, "step", step_then_ctrl_c)
    out = tmp_path / "cut"
    assert train_main(cli(dataset, out)) == 130
    err = capsys.readouterr().err
    assert f"interrupted: SIGINT at step 3: saved {out}/checkpoints/step_000003.pt; continue with --resume auto" in err
    assert "Traceback" not in err and steps(out) == [2, 3]
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["event"] == "interrupted"
    monkeypatch.setattr(trainer_module.Trainer, "step", real_step)

    assert train_main(cli(dataset, out, "--resume", "auto")) == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["val_bpb"] == full["val_bpb"] and resumed["artifact_val_bpb"] == full["artifact_val_bpb"]
    a, b = (checkpoint.load(d / "checkpoints" / "step_000006.pt")["model"] for d in (tmp_path / "full", out))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_real_ctrl_c_exits_130_with_a_checkpoint(dataset, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "pgolf_model.train", *cli(dataset, out, "--train.iterations", "100000")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not steps(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted: SIGINT at step" in err
    assert checkpoint.load(checkpoint.latest(out))["step"] == max(steps(out))


def test_a_validation_split_without_bytes_is_refused_before_training(dataset, tmp_path):
    data, tok = dataset
    empty = tmp_path / "data"
    (empty / "bytes").mkdir(parents=True)
    for f in [*data.glob("*_train_*.bin"), *data.glob("bytes/*_train_*.bin")]:  # the sidecars live in bytes/
        (empty / f.relative_to(data)).write_bytes(f.read_bytes())
    tokenizer = tok_of(tok)
    tokens, _ = encode_stream(tokenizer, ["a few words"])
    write_split(empty, "val", tokens, np.zeros_like(tokens))
    write_index(
        empty, tokenizer, to_artifact(tokenizer), {"source": "this test"}, ("val", "train")
    )  # a finished folder
    with pytest.raises(ConfigError, match="val sidecars count 0 bytes"):
        run(smoke(), data=empty, tokenizer=tok, out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def tok_of(tok_dir):
    from pgolf_data.tokenizer import artifact

    return artifact.load(tok_dir)
