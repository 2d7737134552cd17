"""External official-style scripts in the tokenizer A/B: ``--trainer external:PATH/train_gpt.py``.

A script in the challenge's style (the baseline ``train_gpt.py`` or a record's) finds its data through environment
variables and reports through printed lines. For each spec the A/B exports the spec's shards as the folder the script
reads (``pgolf-data export``: the official globs and ``.model``, and for ``caseops-record`` the records' byte
sidecars), runs the script once per seed in its own directory with ``DATA_PATH``, ``TOKENIZER_PATH``, ``VOCAB_SIZE``,
``SEED``, ``RUN_ID``, the compute budget as ``ITERATIONS`` / ``MAX_WALLCLOCK_SECONDS`` and the user's ``--env K=V``,
optionally under ``torchrun --nproc_per_node N``, and reads from what it printed (``pgolf_model.submission.logs``)
its final score, its submission size and how it counted the bytes under its BPB.

Both the export and each run are cached stages: a run's key holds the sha256 of the script and of the ``.py`` files
beside it (what its imports find), every environment variable the A/B sets, the process count and the Python and
torch versions. A script that exits non-zero, or prints no final ``val_loss``/``val_bpb`` line, is an error naming the
run, with the tail of its stderr; its output is kept under ``<cache>/failed/``.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pgolf_data.manifest import MANIFEST_NAME
from pgolf_data.official_export import TARGETS, export_folder
from pgolf_model.submission import logs

from .cache import StageCache, read_json, source_hash, write_json
from .documents import CorpusSplit
from .model_stages import results_in_order
from .stages import SHARD_DIR

PREFIX = "external:"
EXPORT_DIR = "official"
RUN_DIR = "run"
STDOUT_NAME, STDERR_NAME = "stdout.txt", "stderr.txt"
RESULT_NAME = "result.json"
FAILED_DIR = "failed"
TAIL_LINES = 25
# Set per spec and seed by the A/B itself; an --env of the same name would make the runs disagree with the report.
SET_BY_AB = ("DATA_PATH", "TOKENIZER_PATH", "VOCAB_SIZE", "SEED", "RUN_ID")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ExternalRunError(ValueError):
    """An external script that failed, or finished without the lines a comparison needs."""


def parse_env(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``--env K=V`` items as ``(K, V)`` pairs, in order; a malformed, repeated or A/B-owned name is an error."""
    pairs: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not _ENV_NAME.match(name):
            raise ValueError(f"--env {item!r}: expected NAME=VALUE with NAME a shell variable name")
        if name in SET_BY_AB:
            raise ValueError(f"--env {name}: the A/B sets {', '.join(SET_BY_AB)} itself, per tokenizer and seed")
        if name in pairs:
            raise ValueError(f"--env {name} is given twice ({pairs[name]!r} and {value!r})")
        pairs[name] = value
    return tuple(pairs.items())


@dataclass(frozen=True)
class ExternalTrainer:
    """The script, the environment every run adds, the process count (None: plain ``python``) and the export."""

    script: Path
    env: tuple[tuple[str, str], ...] = ()
    nproc: int | None = None
    export_for: str = "baseline"

    def __post_init__(self) -> None:
        if not self.script.is_file():
            raise FileNotFoundError(f"--trainer {PREFIX}{self.script}: no such file")
        if self.nproc is not None and self.nproc < 1:
            raise ValueError(f"--nproc must be >= 1, got {self.nproc}")
        if self.export_for not in TARGETS:
            raise ValueError(f"--export-for {self.export_for!r}: expected one of {', '.join(TARGETS)}")
        parse_env([f"{k}={v}" for k, v in self.env])

    @classmethod
    def from_flag(cls, trainer: str, **kwargs) -> ExternalTrainer:
        """From ``--trainer external:PATH``."""
        if not trainer.startswith(PREFIX) or not trainer[len(PREFIX) :]:
            raise ValueError(f"--trainer {trainer!r}: expected 'pgolf' or '{PREFIX}PATH/train_gpt.py'")
        return cls(Path(trainer[len(PREFIX) :]).resolve(), **kwargs)

    def sources(self) -> dict[str, str]:
        """sha256 of the script and of every ``.py`` beside it (a record imports its helpers from there)."""
        files = {self.script, *self.script.parent.glob("*.py")}
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(files)}

    def command(self) -> list[str]:
        if self.nproc is None:
            return [sys.executable, str(self.script)]
        # torchrun itself, as the module it is installed from: no dependence on PATH.
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}",
                str(self.script)]  # fmt: skip


def budget_env(mode: str, value: float | None, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """The variables that give every run the same compute, and a sentence saying what each run gets.

    ``steps``: ``ITERATIONS`` with the clock off (``MAX_WALLCLOCK_SECONDS=0``, as the official scripts read it);
    ``tokens``: as many steps of ``TRAIN_BATCH_TOKENS`` (given with ``--env``) as hold the tokens, rounded up;
    ``wall-clock``: ``MAX_WALLCLOCK_SECONDS`` (minutes x 60). Without ``--budget-value``: the script's own defaults.
    """
    if value is not None and not value > 0:
        raise ValueError(f"the compute budget value must be positive, got {value}")
    if value is None:
        given = ", ".join(f"{k}={env[k]}" for k in ("ITERATIONS", "MAX_WALLCLOCK_SECONDS") if k in env)
        return {}, f"the script's own budget ({given or 'its defaults of ITERATIONS and MAX_WALLCLOCK_SECONDS'})"
    owned = [k for k in ("ITERATIONS", "MAX_WALLCLOCK_SECONDS") if k in env]
    if owned:
        raise ValueError(f"--env {owned[0]} and --budget-value both set the compute budget; give one of them")
    if mode == "steps":
        if value != int(value):
            raise ValueError(f"--budget-value for steps must be a whole number, got {value}")
        return {"ITERATIONS": str(int(value)), "MAX_WALLCLOCK_SECONDS": "0"}, f"{int(value):,} steps per run"
    if mode == "tokens":
        if "TRAIN_BATCH_TOKENS" not in env:
            raise ValueError("--budget-mode tokens with an external script needs --env TRAIN_BATCH_TOKENS=N")
        batch = int(env["TRAIN_BATCH_TOKENS"])
        steps = math.ceil(value / batch)
        return (
            {"ITERATIONS": str(steps), "MAX_WALLCLOCK_SECONDS": "0"},
            f"{steps * batch:,} training tokens per run ({steps:,} steps of {batch:,})",
        )
    if mode == "wall-clock":
        return {"MAX_WALLCLOCK_SECONDS": f"{60 * value:g}"}, f"{value:g} minutes of training time per run"
    raise ValueError(f"budget mode must be steps, tokens or wall-clock, got {mode!r}")


# --- stages --------------------------------------------------------------------------------------------------------


def export_stage(cache: StageCache, shard_dir: Path, split: CorpusSplit, target: str, *, label: str = "") -> Path:
    """The spec's shards as the folder ``target``'s script reads, ``<dir>/official`` (hard links, no copies)."""
    manifest = (shard_dir / SHARD_DIR / MANIFEST_NAME).read_bytes()
    sidecars = TARGETS[target].record_sidecars
    inputs = {
        "shards_manifest_sha256": hashlib.sha256(manifest).hexdigest(),
        "target": target,
        "docs": split.content_key()["val"] if sidecars else None,  # the records' sidecars re-encode the val docs
        "code": source_hash("pgolf_data.official_export", "pgolf_data.tokenizer"),
    }

    def build(tmp: Path) -> None:
        export_folder(shard_dir / SHARD_DIR, target, tmp / EXPORT_DIR, corpus=split.val() if sidecars else None)

    return cache.run("export", inputs, build, label=label)


def export_paths(export_dir: Path) -> dict[str, str]:
    """``DATA_PATH`` and ``TOKENIZER_PATH`` of an export stage."""
    folder = export_dir / EXPORT_DIR
    models = sorted(folder.glob("*.model"))
    if len(models) != 1:
        raise ExternalRunError(f"{folder}: expected one .model, found {len(models)}: not a complete export")
    return {"DATA_PATH": str(folder), "TOKENIZER_PATH": str(models[0])}


@dataclass(frozen=True)
class ExternalRequest:
    export_dir: Path
    env: dict[str, str]  # all the A/B sets for the run but the export's paths: VOCAB_SIZE, SEED, the budget, --env
    label: str


def run_env(trainer: ExternalTrainer, vocab_size: int, seed: int, budget: dict[str, str]) -> dict[str, str]:
    """One run's variables, but for the export's paths; the later entries win."""
    return {
        **TARGETS[trainer.export_for].env,
        **dict(trainer.env),
        **budget,
        "VOCAB_SIZE": str(vocab_size),
        "SEED": str(seed),
        "RUN_ID": f"seed{seed}",
    }


def run_inputs(trainer: ExternalTrainer, request: ExternalRequest) -> dict:
    """What a run's output depends on; the export is named by its stage key, not by where the cache lives."""
    import torch

    return {
        "script": trainer.sources(),
        "nproc": trainer.nproc,
        "export": request.export_dir.name,
        "env": request.env,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def run_stage(cache: StageCache, trainer: ExternalTrainer, request: ExternalRequest, *, threads: int) -> Path:
    """Run the script once; ``<dir>/run`` is its working directory and holds its output and ``result.json``.

    ``threads`` becomes ``OMP_NUM_THREADS`` unless the environment or ``--env`` sets it (not part of the key: it
    changes the speed, not the result).
    """

    def build(tmp: Path) -> None:
        run = tmp / RUN_DIR
        run.mkdir()
        env = {"OMP_NUM_THREADS": str(threads), **os.environ, **request.env, **export_paths(request.export_dir)}
        command = trainer.command()
        with open(run / STDOUT_NAME, "wb") as out, open(run / STDERR_NAME, "wb") as err:
            code = subprocess.run(command, cwd=run, env=env, stdout=out, stderr=err, check=False).returncode
        if code != 0:
            raise ExternalRunError(_failure(cache, run, request.label, f"exited with status {code}", command))
        facts = _facts(run)
        score = facts.score
        if score is None:
            what = (
                "printed no final val_loss/val_bpb line (such as final_int8_zlib_roundtrip_exact val_loss:X val_bpb:Y)"
            )
            raise ExternalRunError(_failure(cache, run, request.label, what, command))
        if not (math.isfinite(score.val_bpb) and math.isfinite(score.val_loss)):
            what = f"scored {score.label} val_loss:{score.val_loss} val_bpb:{score.val_bpb}"
            raise ExternalRunError(_failure(cache, run, request.label, what, command))
        formula, found = byte_formula(facts, trainer.script.read_text(encoding="utf-8", errors="replace"), env)
        result = {
            "score_label": score.label,
            "val_bpb": score.val_bpb,
            "val_loss": score.val_loss,
            "eval_ms": score.eval_ms,
            "byte_formula": formula,
            "byte_formula_from": found,
            "artifact_bytes": facts.total_bytes,
            "code_bytes": facts.code_bytes,
            "steps": facts.steps,
            "iterations": facts.iterations,
            "train_ms": facts.train_ms,
            "stopped_by_clock": facts.stopped_by_clock,
            "val_tokens": facts.val_tokens,
            "world_size": facts.world_size,
            "env": request.env,
            "command": [Path(command[0]).name, *command[1:]],
        }
        write_json(run / RESULT_NAME, result)

    return cache.run("external", run_inputs(trainer, request), build, label=request.label)


def run_stages(
    cache: StageCache, trainer: ExternalTrainer, requests: list[ExternalRequest], *, jobs: int, threads: int
) -> list[Path]:
    """Every request's stage, in order; up to ``jobs`` scripts at once, ``threads // jobs`` threads each (threads
    of this process suffice: the work is in the scripts' processes)."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    per_job = max(1, threads // jobs)
    if jobs == 1 or len(requests) <= 1:
        return [run_stage(cache, trainer, r, threads=per_job) for r in requests]
    with ThreadPoolExecutor(min(jobs, len(requests))) as pool:
        return results_in_order([pool.submit(run_stage, cache, trainer, r, threads=per_job) for r in requests])


def run_result(stage_dir: Path) -> dict:
    return read_json(stage_dir / RUN_DIR / RESULT_NAME)


def _facts(run: Path) -> logs.LogFacts:
    """The stdout's facts; a script that prints its score to stderr (through ``logging``) is read there."""
    facts = logs.parse((run / STDOUT_NAME).read_text(encoding="utf-8", errors="replace"))
    if facts.score is None:
        facts = logs.parse((run / STDERR_NAME).read_text(encoding="utf-8", errors="replace"))
    return facts


def _failure(cache: StageCache, run: Path, label: str, what: str, command: list[str]) -> str:
    """The error message of a failed run, after keeping its output in ``<cache>/failed/<label>``."""
    kept = cache.root / FAILED_DIR / re.sub(r"[^\w.-]+", "_", label)
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(run, kept, ignore=lambda d, names: [n for n in names if n not in (STDOUT_NAME, STDERR_NAME)])
    lines = (run / STDERR_NAME).read_text(encoding="utf-8", errors="replace").splitlines()
    source = "stderr"
    if not lines:
        lines, source = (run / STDOUT_NAME).read_text(encoding="utf-8", errors="replace").splitlines(), "stdout"
    tail = "\n".join(f"  | {line}" for line in lines[-TAIL_LINES:]) or "  (no output)"
    return (
        f"{label}: {' '.join(command)} {what}; the last lines of its {source}:\n{tail}\n(its output is kept in {kept})"
    )


_SIDECAR_SOURCE = re.compile(r"fineweb_val_bytes_|byte_sidecar")
_PIECES_SOURCE = re.compile(r"has_leading_space|build_sentencepiece_luts")


def byte_formula(facts: logs.LogFacts, source: str, env: dict[str, str]) -> tuple[str, str]:
    """How the run counted the bytes under its BPB (a key of ``logs.BYTE_FORMULAS``, or ``unknown``) and what says
    so: the line the script printed, or else its source read with the run's ``CASEOPS_ENABLED``."""
    if facts.byte_formula is not None:
        return facts.byte_formula, "printed by the script"
    if env.get("CASEOPS_ENABLED") == "1" and _SIDECAR_SOURCE.search(source):
        return "sidecar", "the script's source (it reads byte sidecars) with CASEOPS_ENABLED=1"
    if _PIECES_SOURCE.search(source) and not _SIDECAR_SOURCE.search(source):
        return "pieces", "the script's source (per-piece byte tables, no sidecar)"
    return "unknown", "neither printed nor evident from the script's source"
