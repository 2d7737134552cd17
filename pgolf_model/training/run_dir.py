"""A run directory holds one run: what ``train`` may do with the ``--out`` it is given, decided before any work.

A new run needs an empty (or new) directory. ``--resume`` continues the run already there, from its newest
checkpoint: the checkpoint must be that run's newest (an older one would mix two histories). ``--force`` starts over
in a directory that holds something, deleting only the files a run writes (``RUN_FILES`` and the checkpoints): a
file pgolf did not write is never touched. Nothing is deleted until the run's inputs have been checked (``clear``
comes after ``plan``, once the trainer is built).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint

LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
ARTIFACT_NAME = "model.pga"
RUN_FILES = (LOG_NAME, SUMMARY_NAME, ARTIFACT_NAME)


class RunDirError(ValueError):
    """A run directory that this run may not use as asked; the message says why and what to pass instead."""


@dataclass(frozen=True)
class Plan:
    out_dir: Path
    resume_from: Path | None  # the checkpoint to continue from; None: a new run
    clear: bool  # --force on a directory holding something: delete the run files first


def _entries(out_dir: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in out_dir.iterdir()) if out_dir.is_dir() else []


def _listing(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def plan(out_dir: str | os.PathLike, *, resume: str | None = None, force: bool = False) -> Plan:
    """What this run does with ``out_dir``: RunDirError unless it is allowed (see the module docstring)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"--out {out_dir} is a file, not a run directory")
    if resume is not None and force:
        raise RunDirError("--resume continues the run in --out and --force replaces it: give one of them")
    held = _entries(out_dir)
    if resume is None:
        if held and not force:
            raise RunDirError(
                f"{out_dir} is not empty ({_listing(held)}): a run directory holds one run. Continue it with "
                f"--resume auto, start over with --force (deletes only {', '.join(RUN_FILES)} and checkpoints/), "
                "or choose another --out"
            )
        return Plan(out_dir, None, clear=bool(held))
    newest = checkpoint.latest(out_dir)
    if resume == "auto":
        if newest is None:
            raise RunDirError(f"--resume auto: no checkpoints in {checkpoint.checkpoint_dir(out_dir)}")
        return Plan(out_dir, newest, clear=False)
    path = Path(resume)
    if held and newest is None:
        raise RunDirError(
            f"--resume {path}: {out_dir} already holds files ({_listing(held)}) but no checkpoint of a run; resume "
            "into an empty --out"
        )
    if newest is not None and path.resolve() != newest.resolve():
        raise RunDirError(
            f"--resume {path}: {out_dir} holds a run whose newest checkpoint is {newest}; continuing from another "
            "checkpoint would mix two runs in one directory: resume from the newest (--resume auto) or into a new "
            "--out"
        )
    return Plan(out_dir, path, clear=False)


def clear(out_dir: Path) -> list[Path]:
    """Delete what a run writes in ``out_dir`` (``RUN_FILES``, their temporaries, the checkpoints); return it."""
    removed = []
    for name in RUN_FILES:
        for path in (out_dir / name, out_dir / f"{name}.tmp"):
            if path.is_file():
                path.unlink()
                removed.append(path)
    directory = checkpoint.checkpoint_dir(out_dir)
    if directory.is_dir():
        for _, path in checkpoint.checkpoints(out_dir):
            path.unlink()
            removed.append(path)
        for path in directory.glob("step_*.pt.tmp"):
            path.unlink()
            removed.append(path)
        if not any(directory.iterdir()):
            directory.rmdir()
    return removed
