"""Faults: a rank killed under torchrun, and writes that fail for lack of space (``RLIMIT_FSIZE`` in a child process:
a write past the limit fails with EFBIG, as one on a full disk fails with ENOSPC). Nothing a fault leaves behind may
pass for complete output: not for ``verify``, not for a later run."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from model_data import make_dataset, one_thread, synthetic_docs  # noqa: F401 (autouse fixture)

from pgolf_data.cli import main as data_main
from pgolf_data.tokenizer import artifact as tok_artifact
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.spec import TokenizerSpec
from pgolf_data.verify import verify
from pgolf_model.training import checkpoint

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def limited(argv: list[str], max_file_bytes: int, **kwargs) -> subprocess.CompletedProcess:
    """``argv`` in a child process that cannot write a file past ``max_file_bytes``."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(
        argv, cwd=REPO, env=ENV, preexec_fn=limit, capture_output=True, text=True, timeout=300, **kwargs
    )


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# --- a full disk -------------------------------------------------------------------------------------------------


def test_shard_on_a_full_disk_leaves_only_what_resume_continues(tmp_path, dev_docs):
    docs = dev_docs[:200]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    tok = tmp_path / "tok"
    tok_artifact.save(ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260)), tok, report={})
    val_tokens = sum(len(d.encode()) + 1 for d in docs[:40])
    shard_tokens = val_tokens + 1000  # the validation split is one short shard; train shards are full ones
    args = ["shard", "--tokenizer", str(tok), "--corpus", str(corpus), "--val-docs", "40", "--workers", "1"]
    args += ["--shard-tokens", str(shard_tokens), "--quiet"]
    out = tmp_path / "out"
    # Room for the validation shard and its sidecar, not for the first full train shard.
    proc = limited([sys.executable, "-m", "pgolf_data", *args, "--out", str(out)], 1024 + 2 * val_tokens + 1000)
    assert proc.returncode == 1, proc.stderr
    assert "File too large; kept 1 complete shard(s)" in proc.stderr and "Traceback" not in proc.stderr
    left = sorted(tree(out))
    assert left == ["fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin", "resume.json"], left
    assert not verify(out).ok, "no manifest: not a complete shard set"
    assert data_main([*args, "--out", str(out)]) == 2, "a new run refuses the unfinished one"
    assert data_main([*args, "--out", str(out), "--resume"]) == 0
    assert data_main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert tree(out) == tree(tmp_path / "whole") and verify(out, corpus=docs).ok


def test_train_tokenizer_on_a_full_disk_leaves_nothing(tmp_path, dev_docs):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in dev_docs[:200]), encoding="utf-8")
    out = tmp_path / "tok"
    argv = [sys.executable, "-m", "pgolf_data", "train-tokenizer", "--spec", "sp1024_lossless", "--vocab", "600"]
    proc = limited([*argv, "--corpus", str(corpus), "--out", str(out)], 512)  # below the artifact's size (~1 KB)
    assert proc.returncode == 1, proc.stderr
    assert "File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"], "no output, no temporary directory"


ARTIFACT_ON_A_FULL_DISK = """
import resource, sys
from pgolf_model import artifact
from pgolf_model.train import main

real_write = artifact.write

def write_on_a_full_disk(path, data, limit=artifact.LIMIT):
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) // 2, resource.RLIM_INFINITY))  # the disk fills now
    return real_write(path, data, limit)

artifact.write = write_on_a_full_disk
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_at_the_artifact_write_leaves_no_artifact(tmp_path):
    data, tok = make_dataset(tmp_path, synthetic_docs(60, 1), synthetic_docs(6, 2))
    script = tmp_path / "full_disk.py"
    script.write_text(textwrap.dedent(ARTIFACT_ON_A_FULL_DISK))
    out = tmp_path / "run"
    argv = [sys.executable, str(script), "--data", str(data), "--tokenizer", str(tok), "--preset", "smoke"]
    argv += ["--out", str(out), "--no-progress", "--train.iterations", "3", "--train.val_every", "0"]
    argv += ["--train.val_tokens", "512"]
    proc = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not write {out / 'model.pga'}: File too large; the trained weights are in")
    assert "Traceback" not in proc.stderr
    assert not (out / "model.pga").exists() and not (out / "model.pga.tmp").exists()
    assert checkpoint.load(checkpoint.latest(out))["step"] == 3, "the checkpoint written before it is intact"


# --- a rank killed under torchrun --------------------------------------------------------------------------------

DDP_FLAGS = {
    "train.iterations": 40,
    "train.checkpoint_every": 5,
    "train.keep_checkpoints": 10,
    "train.val_every": 0,
    "train.val_tokens": 512,
    "train.log_every": 5,
}


def torchrun(data: Path, tok: Path, out: Path, port: int, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}"]
    argv += ["-m", "pgolf_model.train", "--preset", "smoke", "--data", str(data), "--tokenizer", str(tok)]
    argv += ["--out", str(out), "--no-progress", *extra]
    return argv + [f for key, value in DDP_FLAGS.items() for f in (f"--{key}", str(value))]


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def rank_pid(agent: int, rank: int) -> int | None:
    for pid in children(agent):
        try:
            env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


@pytest.mark.slow
def test_a_killed_rank_stops_the_other_and_the_run_resumes_to_the_same_result(tmp_path):
    data, tok = make_dataset(tmp_path, synthetic_docs(300, 1), synthetic_docs(10, 2))
    full = subprocess.run(torchrun(data, tok, tmp_path / "full", 29531), cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert full.returncode == 0, full.stderr[-3000:]

    cut = tmp_path / "cut"
    agent = subprocess.Popen(
        torchrun(data, tok, cut, 29532), cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while len(checkpoint.checkpoints(cut)) < 2 and time.monotonic() < deadline and agent.poll() is None:
        time.sleep(0.02)
    victim = rank_pid(agent.pid, 1)
    assert victim is not None and len(checkpoint.checkpoints(cut)) >= 2, "training did not get going"
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = agent.communicate(timeout=300)
    assert time.monotonic() - killed_at < 60, "the surviving rank must not wait for its peer"
    assert agent.returncode != 0
    assert "error: rank 0: a collective failed at step" in err and "relaunch with --resume auto" in err, err[-3000:]
    steps = sorted(step for step, _ in checkpoint.checkpoints(cut))
    assert steps[-1] < DDP_FLAGS["train.iterations"], "killed mid-training"
    assert checkpoint.load(checkpoint.latest(cut))["step"] == steps[-1], "the last checkpoint is intact"
    assert not (cut / "model.pga").exists()

    resumed = subprocess.run(torchrun(data, tok, cut, 29533, "--resume", "auto"), cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (checkpoint.load(d / "checkpoints" / "step_000040.pt")["model"] for d in (tmp_path / "full", cut))
    assert [name for name in a if not torch.equal(a[name], b[name])] == []
    summaries = [json.loads((d / "summary.json").read_text()) for d in (tmp_path / "full", cut)]
    assert summaries[0]["artifact_val_bpb"] == summaries[1]["artifact_val_bpb"]
