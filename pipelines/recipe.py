"""What the model-training recipes (``tokenizer_ab``, ``ablate``) share: their settings (documents, compute budget,
seeds, cache, parallelism) and the flags that set them; and how every recipe's command line ends (``guarded``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from pgolf_data.corpus import DEFAULT_SOURCE
from pgolf_data.tokenizer.training import default_threads
from pgolf_model import registry
from pgolf_model.cli import ARCH_HELP
from pgolf_model.config import DEFAULT_ARCH, Config
from pgolf_model.presets import PRESETS, preset

from .documents import CorpusSplit
from .model_stages import BUDGET_MODES


@dataclass(frozen=True, kw_only=True)
class RecipeSettings:
    out: Path
    corpus: str = DEFAULT_SOURCE
    preset: str = "tiny"
    arch: str = DEFAULT_ARCH  # the model family (--model.arch; pgolf_model.registry)
    budget_mode: str = "steps"  # steps | tokens | wall-clock (pipelines.model_stages.apply_compute_budget)
    budget_value: float | None = None  # steps, tokens or minutes; None = the preset's
    seeds: int = 1
    first_seed: int = 1337
    val_docs: int = 40  # the first this many documents are validation
    max_docs: int | None = None
    text_field: str = "text"
    cache: Path | None = None
    threads: int = field(default_factory=default_threads)
    jobs: int = 1  # trainings at once, threads // jobs torch threads each

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.threads < 1 or self.jobs < 1:
            raise ValueError(f"threads and jobs must be >= 1, got threads {self.threads}, jobs {self.jobs}")

    @classmethod
    def from_args(cls, args: argparse.Namespace, **given):
        """The settings from the parsed flags of the same names, and ``given`` for the others."""
        names = {f.name for f in fields(cls)} - set(given)
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)}, **given)

    @property
    def cache_dir(self) -> Path:
        return self.cache or self.out / "cache"

    def base_config(self) -> Config:
        """The preset with the model section of ``arch``."""
        return registry.with_arch(preset(self.preset), self.arch)

    def seed_list(self) -> list[int]:
        return [self.first_seed + i for i in range(self.seeds)]

    def split(self) -> CorpusSplit:
        return CorpusSplit(self.corpus, self.val_docs, self.max_docs, self.text_field)


def add_training_args(parser: argparse.ArgumentParser, *, seeds: int, per: str) -> None:
    """``--preset``, ``--model.arch``, ``--budget-mode``/``--budget-value``, ``--seeds``/``--first-seed``, ``--cache``,
    ``--threads`` and ``--jobs``; ``seeds`` is the default number of runs per ``per`` (e.g. "spec")."""
    parser.add_argument("--preset", default="tiny", choices=list(PRESETS), help="model preset (default tiny)")
    parser.add_argument("--model.arch", dest="arch", default=DEFAULT_ARCH, metavar="NAME", help=ARCH_HELP)
    parser.add_argument("--budget-mode", default="steps", choices=BUDGET_MODES, help="what every run gets the same of")
    parser.add_argument("--budget-value", type=float, help="steps, tokens or minutes (default: the preset's)")
    parser.add_argument("--seeds", type=int, default=seeds, help=f"training runs per {per} (default {seeds})")
    parser.add_argument("--first-seed", type=int, default=1337, help="seeds are FIRST, FIRST+1, ... (default 1337)")
    parser.add_argument("--cache", type=Path, help="stage cache directory (default OUT/cache)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="threads and worker processes")
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once, THREADS // JOBS threads each")


def guarded(body: Callable[[], object], kept: Path) -> int:
    """Exit status of a recipe's command line running ``body``: 0, or 2 with a one-line error for bad input, or 130 on
    Ctrl-C, saying that the finished stages under ``kept`` stay and are reused by the same command."""
    try:
        body()
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted: the finished stages under {kept} are kept; the same command reuses them and redoes only "
            "the rest",
            file=sys.stderr,
        )
        return 130
    return 0
