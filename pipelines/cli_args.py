"""The flags the model-training recipes (``tokenizer_ab``, ``ablate``) share: preset, compute budget, seeds, cache
and parallelism."""

from __future__ import annotations

import argparse
from pathlib import Path

from pgolf_data.tokenizer.training import default_threads
from pgolf_model.presets import PRESETS

from .model_stages import BUDGET_MODES


def add_training_args(parser: argparse.ArgumentParser, *, seeds: int, per: str) -> None:
    """``--preset``, ``--budget-mode``/``--budget-value``, ``--seeds``/``--first-seed``, ``--cache``, ``--threads``
    and ``--jobs``; ``seeds`` is the default number of runs per ``per`` (e.g. "spec")."""
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model preset (default tiny)")
    parser.add_argument("--budget-mode", default="steps", choices=BUDGET_MODES, help="what every run gets the same of")
    parser.add_argument("--budget-value", type=float, help="steps, tokens or minutes (default: the preset's)")
    parser.add_argument("--seeds", type=int, default=seeds, help=f"training runs per {per} (default {seeds})")
    parser.add_argument("--first-seed", type=int, default=1337, help="seeds are FIRST, FIRST+1, ... (default 1337)")
    parser.add_argument("--cache", type=Path, help="stage cache directory (default OUT/cache)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="threads and worker processes")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once, THREADS // JOBS threads each")
