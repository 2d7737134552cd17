"""Resumable training checkpoints: ``<run>/checkpoints/step_NNNNNN.pt``, written atomically, the newest few kept.

A checkpoint holds the config, the step, the training clock, the model, every optimizer state and the weight EMA (or
None). The data order is a function of the step (``data.TrainLoader``), so nothing else is needed to continue exactly
where a run stopped.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

_NAME = re.compile(r"^step_(\d{6,})\.pt$")


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: str | os.PathLike, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the ``keep`` newest."""
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:06d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in sorted(_checkpoints(directory))[:-keep]:
        old[1].unlink()
    return path


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    return [(int(m[1]), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]


def latest(run_dir: str | os.PathLike) -> Path | None:
    found = sorted(_checkpoints(checkpoint_dir(run_dir)))
    return found[-1][1] if found else None


def load(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    missing = {"config", "step", "train_seconds", "model", "optimizers"} - set(state)
    if missing:
        raise ValueError(f"{path}: not a pgolf checkpoint (missing {', '.join(sorted(missing))})")
    return state
