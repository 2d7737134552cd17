"""Resumable training checkpoints: ``<run>/checkpoints/step_NNNNNN.pt``, written atomically, the newest few kept.

A checkpoint holds the config as JSON text, the tokenizer artifact's sha256, the step, the training clock, the model,
every optimizer state and the weight EMA (or None): tensors, numbers and strings only, so it loads with
``torch.load(weights_only=True)``, which runs no code from the file. The data order is a function of the step
(``data.TrainLoader``), so nothing else is needed to continue exactly where a run stopped.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from .. import registry
from ..config import Config

_NAME = re.compile(r"^step_(\d{6,})\.pt$")
REQUIRED = ("step", "train_seconds", "model", "optimizers")


class CheckpointError(ValueError):
    """A file that is not a loadable pgolf checkpoint; the message names it."""


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def save(run_dir: str | os.PathLike, step: int, state: dict, keep: int) -> Path:
    """Write ``state`` (its ``config`` a dict) as the checkpoint of ``step``; delete all but the ``keep`` newest."""
    directory = checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:06d}.pt"
    tmp = path.with_name(path.name + ".tmp")
    try:
        try:
            torch.save({**state, "config": json.dumps(state["config"], sort_keys=True)}, tmp)
        except RuntimeError as e:  # torch's file writer reports a failed write (a full disk) so
            raise OSError(f"could not write {path}: {e}") from None
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for _, old in sorted(checkpoints(run_dir))[:-keep]:
        old.unlink()
    return path


def checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in the run directory, unordered."""
    directory = checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    return [(int(m[1]), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]


def latest(run_dir: str | os.PathLike) -> Path | None:
    found = sorted(checkpoints(run_dir))
    return found[-1][1] if found else None


# torch wraps what its restricted unpickler refused in paragraphs of advice; the refusal itself follows this label.
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n\n|$)", re.S)


def _load_failure(e: Exception) -> str:
    """The one line of ``torch.load``'s error that says what was wrong with the file."""
    text = str(e).strip()
    if m := _UNPICKLER_REASON.search(text):
        return f"{' '.join(m[1].split())}; weights_only=True loads only tensors, numbers and strings"
    return text.splitlines()[0] if text else type(e).__name__


def load(path: str | os.PathLike) -> dict:
    """The checkpoint at ``path``, its ``config`` a dict again; CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or holding objects weights_only refuses: all the same here
        raise CheckpointError(f"{path}: not a loadable pgolf checkpoint ({_load_failure(e)})") from None
    missing = [key for key in ("config", *REQUIRED) if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a pgolf checkpoint (missing {', '.join(missing)})")
    if isinstance(state["config"], str):  # older checkpoints hold the config as a dict
        state["config"] = json.loads(state["config"])
    return state


def newest_model(
    run_dir: str | os.PathLike, *, ema: bool = False, strict: bool = True
) -> tuple[nn.Module, Config, dict, list[str]]:
    """The model of the run's newest checkpoint, in eval mode: ``(model, config, checkpoint state, missing names)``;
    its EMA's weights with ``ema`` where the run kept one. ``strict=False`` loads what matches (a checkpoint from
    before a model change may name small tensors otherwise) and lists what it lacked; FileNotFoundError without
    a checkpoint."""
    path = latest(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {checkpoint_dir(run_dir)}")
    state = load(path)
    cfg = registry.config_from_dict(state["config"], where=str(path))
    model = registry.build(cfg)
    weights = state["ema"] if ema and state.get("ema") else state["model"]
    missing = model.load_state_dict(weights, strict=strict).missing_keys
    state["path"] = path
    return model.eval(), cfg, state, missing
