"""The model side of a comparison: the compute budget, the cached training stage, and what its artifact holds.

A training stage runs ``pgolf_model.training.trainer.run`` on one spec's shards with one seed. The trainer scores the
full validation split twice, before quantization and from the written artifact alone; the artifact's score is the one a
comparison uses (it is what the challenge scores). The stage keeps ``run/log.jsonl``, ``run/summary.json`` and
``run/model.pga``; the resumable checkpoints are dropped once the artifact exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pgolf_data.compress import CODEC_IDS, compress
from pgolf_data.manifest import MANIFEST_NAME
from pgolf_model import artifact as model_artifact
from pgolf_model import registry
from pgolf_model.artifact import codec_for
from pgolf_model.config import Config
from pgolf_model.quant import QuantizedState
from pgolf_model.training import trainer

from .cache import StageCache, read_json, source_hash
from .stages import SHARD_DIR, TOKENIZER_DIR

BudgetMode = Literal["steps", "tokens", "wall-clock"]
BUDGET_MODES = ("steps", "tokens", "wall-clock")
RUN_DIR = "run"
UNBOUNDED_STEPS = 10**9  # under a wall-clock budget the clock, not a step count, ends training


def apply_compute_budget(cfg: Config, mode: BudgetMode, value: float | None) -> tuple[Config, str]:
    """The config with the compute budget set, and a sentence saying what every run gets.

    ``steps``: the same number of optimizer steps (``value``, default the preset's ``train.iterations``);
    ``tokens``: the same number of training tokens (``value``, default steps x ``train.batch_tokens``), rounded up to
    whole steps; ``wall-clock``: the same training time in minutes (``value``, default the preset's
    ``train.max_minutes``), validation excluded, with the warm-down scheduled against the clock.

    A step or token budget that differs from the preset's ``train.iterations`` rescales the schedule's step counts
    (learning-rate warm-up, Muon momentum warm-up, warm-down) by the same factor, so the schedule keeps its shape:
    the ``tiny`` preset's 120-step warm-down would otherwise cover all of a 40-step run.
    """
    t = cfg.train
    if value is not None and not value > 0:
        raise ValueError(f"the compute budget value must be positive, got {value}")
    if mode == "steps":
        steps = int(value) if value is not None else t.iterations
        if value is not None and steps != value:
            raise ValueError(f"--budget-value for steps must be a whole number, got {value}")
        return _with_steps(cfg, steps), f"{steps:,} steps per run"
    if mode == "tokens":
        tokens = int(value) if value is not None else t.iterations * t.batch_tokens
        steps = math.ceil(tokens / t.batch_tokens)
        return (
            _with_steps(cfg, steps),
            f"{steps * t.batch_tokens:,} training tokens per run ({steps:,} steps of {t.batch_tokens:,})",
        )
    if mode == "wall-clock":
        minutes = float(value) if value is not None else t.max_minutes
        if not minutes > 0:
            raise ValueError(f"the preset {cfg.preset!r} has no wall-clock limit; give --budget-value MINUTES")
        return (
            cfg.override({"train.iterations": UNBOUNDED_STEPS, "train.max_minutes": minutes}),
            f"{minutes:g} minutes of training time per run (validation excluded)",
        )
    raise ValueError(f"budget mode must be one of {', '.join(BUDGET_MODES)}, got {mode!r}")


SCHEDULE_STEPS = ("optim.lr_warmup_steps", "optim.muon_momentum_warmup_steps", "optim.warmdown_steps")


def _with_steps(cfg: Config, steps: int) -> Config:
    changes: dict = {"train.iterations": steps, "train.max_minutes": 0.0}
    if steps != cfg.train.iterations:
        for key in SCHEDULE_STEPS:
            section, name = key.split(".")
            changes[key] = round(getattr(getattr(cfg, section), name) * steps / cfg.train.iterations)
    return cfg.override(changes)


def train_inputs(tokenizer_dir: Path, shard_dir: Path, cfg: Config) -> dict:
    manifest = (shard_dir / SHARD_DIR / MANIFEST_NAME).read_bytes()
    tok = (tokenizer_dir / TOKENIZER_DIR / "tokenizer.pgt").read_bytes()
    return {
        "tokenizer_sha256": hashlib.sha256(tok).hexdigest(),
        "shards_manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "config": cfg.to_dict(),
        "code": source_hash(
            "pgolf_model", "pgolf_data.shards", "pgolf_data.tokenizer", *registry.model_class(cfg.arch).counted_modules
        ),
        "torch": torch.__version__,
    }


def train_stage(
    cache: StageCache,
    tokenizer_dir: Path,
    shard_dir: Path,
    cfg: Config,
    *,
    threads: int,
    label: str = "",
    inputs: dict | None = None,
) -> Path:
    """Train and evaluate one (spec, seed); ``<dir>/run`` holds the artifact, ``log.jsonl`` and ``summary.json``.

    ``inputs`` (default ``train_inputs(...)``) lets a worker process use the key its parent computed.
    """

    def build(tmp: Path) -> None:
        torch.set_num_threads(threads)
        run = tmp / RUN_DIR
        trainer.run(
            cfg, data=shard_dir / SHARD_DIR, tokenizer=tokenizer_dir / TOKENIZER_DIR, out_dir=run, progress=False
        )
        shutil.rmtree(run / "checkpoints", ignore_errors=True)

    return cache.run("train", inputs or train_inputs(tokenizer_dir, shard_dir, cfg), build, label=label)


@dataclass(frozen=True)
class TrainRequest:
    tokenizer_dir: Path
    shard_dir: Path
    config: Config
    label: str


def train_stages(cache: StageCache, requests: list[TrainRequest], *, jobs: int, threads: int) -> list[Path]:
    """The stage directory of every request, in order; up to ``jobs`` trainings run at once in worker processes.

    Small models use cores poorly from one process (one 2-thread run on 2 cores was measured slower than two
    1-thread runs side by side), so on a few cores it pays to train several seeds at once, ``threads // jobs``
    torch threads each.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(requests) <= 1:
        return [
            train_stage(cache, r.tokenizer_dir, r.shard_dir, r.config, threads=threads, label=r.label) for r in requests
        ]
    per_job = max(1, threads // jobs)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(requests)), mp_context=context) as pool:
        futures = [
            pool.submit(
                _train_in_worker,
                cache.root,
                r.tokenizer_dir,
                r.shard_dir,
                train_inputs(r.tokenizer_dir, r.shard_dir, r.config),  # keyed by this process's view of the code
                per_job,
                r.label,
            )
            for r in requests
        ]
        try:
            for future in as_completed(futures):
                future.result()  # the first failure surfaces now, not after every queued run
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        done = [f.result() for f in futures]
    for _, built in done:
        cache.executions["train"] += built
    return [stage for stage, _ in done]


def _train_in_worker(
    root: Path, tokenizer_dir: Path, shard_dir: Path, inputs: dict, threads: int, label: str
) -> tuple[Path, bool]:
    cache = StageCache(root, log=lambda line: print(line, flush=True))
    cfg = registry.config_from_dict(inputs["config"])
    stage = train_stage(cache, tokenizer_dir, shard_dir, cfg, threads=threads, label=label, inputs=inputs)
    return stage, cache.executions["train"] == 1


def run_result(stage_dir: Path) -> dict:
    """The numbers a report uses, read from the run's own files: the log's result record and the artifact."""
    run = stage_dir / RUN_DIR
    records = [r for r in _read_log(run / "log.jsonl") if r["event"] == "result"]
    if len(records) != 1:
        raise ValueError(f"{run / 'log.jsonl'}: expected one result record, found {len(records)}")
    result = records[0]
    art = model_artifact.read(run / trainer.ARTIFACT_NAME)
    return {
        "val_bpb": result["artifact_val_bpb"],  # scored from the artifact alone
        "val_bpb_before_quant": result["val_bpb"],
        # The official eval's byte rule over the targets it scores (SentencePiece-based tokenizers only, else None).
        "val_bpb_official": result.get("artifact_val_bpb_official"),
        "val_loss": result["artifact_val_loss"],
        "val_targets": result["val_targets"],
        "val_bytes": result["val_bytes"],
        "steps": result["steps"],
        "train_seconds": result["train_seconds"],
        "params": result["params"],
        "artifact_bytes": art.total_bytes,
        "artifact_parts": art.sizes,
        "budget_split": budget_split(art),
        "config": art.config,
        "code_sha256": hashlib.sha256(model_artifact.pack_code(art.code)).hexdigest(),  # the counted code it carries
    }


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def budget_split(art: model_artifact.Artifact) -> dict[str, int]:
    """Artifact bytes as tokenizer / embeddings / other weights / code + config; sums to the artifact's length.

    The embeddings are the vocabulary tables (the model's ``tensor_roles`` marked ``vocab``: the token table and an
    untied head), whose size grows with the vocabulary. The weights are compressed as one stream, so the weights
    part is divided between them and the other tensors in proportion to what each group's stored values compress to
    on their own.
    """
    state = QuantizedState.from_bytes(art.weights, where=f"{art.path}: weights")
    with torch.device("meta"):
        roles = registry.build(registry.config_from_dict(art.config, where=f"{art.path}: config")).tensor_roles()
    vocab = {name for name, role in roles.items() if role.vocab}
    if not vocab & set(state.entries):
        raise ValueError(f"{art.path}: none of the model's vocabulary tables ({', '.join(sorted(vocab))}) is stored")
    # The per-group codec compresses by role, not as one stream: brotli stands in for it in the proportion.
    codecs = tuple(c for c in codec_for(art.weights_codec) if c in CODEC_IDS) or ("brotli",)
    groups = {"embeddings": [], "other": []}
    for name, entry in state.entries.items():
        group = groups["embeddings" if name in vocab else "other"]
        group.extend(entry[key] for key in ("q", "scale", "value") if key in entry)
    alone = {
        k: len(compress(b"".join(np.ascontiguousarray(v).tobytes() for v in parts), codecs)[1])
        for k, parts in groups.items()
    }
    weights = art.sizes["weights"]
    embeddings = round(weights * alone["embeddings"] / (alone["embeddings"] + alone["other"]))
    return {
        "tokenizer": art.sizes["tokenizer"],
        "embeddings": embeddings,
        "other_weights": weights - embeddings,
        "code": art.total_bytes - art.sizes["tokenizer"] - weights,  # code, config and the container's table
    }


def read_manifest(shard_dir: Path) -> dict:
    return read_json(shard_dir / SHARD_DIR / MANIFEST_NAME)
