"""Train a model (``--model.arch``) on token shards and write its budgeted artifact.

    python -m pgolf_model.train --data DIR --tokenizer DIR --preset tiny [--model.num_layers 6 ...]
    python -m pgolf_model.train --data DIR --tokenizer DIR --preset tiny --model.arch ssd [--model.state_dim 16 ...]
    torchrun --nproc_per_node=8 -m pgolf_model.train --data DIR --tokenizer DIR --preset baseline

Runs on CPU, one GPU, or under torchrun (NCCL on GPUs, gloo on CPUs). Before training, a config whose artifact
cannot fit the 16,000,000-byte budget is refused. Training stops at ``train.iterations`` or when ``--max-minutes``
of training time (validation excluded) have passed, then validates on the whole val split, quantizes, writes
``RUN/model.pga`` and scores the model rebuilt from that file alone. ``RUN/log.jsonl`` gets one JSON record per
logged step, validation and result; ``RUN/checkpoints/`` the resumable checkpoints (``--resume auto``).
The work is ``pgolf_model.training.trainer``; this module is its command line.

``--model.arch`` picks the model family: ``gpt`` (default), ``ssd``, or a plugin's: a package that registers its
model class under the entry-point group ``pgolf.models`` (``[project.entry-points."pgolf.models"] NAME =
"package.module:Class"``) trains with ``--model.arch NAME``, and its config dataclass's fields become the
``--model.*`` flags (``--model.arch NAME --help`` lists them). The artifact records the family and carries the
plugin's counted source files.
"""

from __future__ import annotations

import sys
from datetime import datetime

from pgolf_data.shards import ShardFormatError
from pgolf_data.tokenizer import TokenizerError
from pgolf_data.tokenizer.artifact import load as load_tokenizer

from . import runtime
from .artifact import BudgetError
from .cli import add_config_arguments, arch_from_argv, command_parser, config_from_args, guarded
from .config import ConfigError
from .presets import bind_tokenizer
from .training.trainer import run

# Bad input, reported as one line: wrong config values, paths, shards or tokenizer, or a model over the budget.
USER_ERRORS = (ConfigError, BudgetError, ShardFormatError, TokenizerError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.train", __doc__)
    parser.add_argument("--data", required=True, help="shard directory (train and val splits, val byte sidecars)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory or tokenizer.pgt file")
    parser.add_argument("--out", help="run directory (default: runs/<preset>-<time>)")
    parser.add_argument("--resume", help="checkpoint to continue from, or 'auto' for the newest in --out")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or console lines")
    add_config_arguments(parser, arch_from_argv(argv))
    args = parser.parse_args(argv)
    if args.resume == "auto" and not args.out:
        parser.error("--resume auto needs --out (the run directory to resume)")

    def train() -> int:
        cfg, given = config_from_args(args)
        cfg = bind_tokenizer(cfg, load_tokenizer(args.tokenizer), keep=given)
        rt = runtime.setup(args.device)
        out = args.out or rt.broadcast(f"runs/{cfg.preset}-{datetime.now():%Y%m%d-%H%M%S}")
        progress = not args.no_progress
        run(cfg, data=args.data, tokenizer=args.tokenizer, out_dir=out, resume=args.resume, rt=rt, progress=progress)
        return 0

    return guarded(train, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
