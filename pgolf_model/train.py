"""Train a GPT on token shards and write its budgeted artifact.

    python -m pgolf_model.train --data DIR --tokenizer DIR --preset tiny [--model.num_layers 6 ...]
    torchrun --nproc_per_node=8 -m pgolf_model.train --data DIR --tokenizer DIR --preset baseline

Runs on CPU, one GPU, or under torchrun (NCCL on GPUs, gloo on CPUs). Before training, a config whose artifact
cannot fit the 16,000,000-byte budget is refused, and so are shards written with another tokenizer, an unfinished
shard folder and token ids outside the vocabulary in any shard. ``--data`` may be an official folder (the
challenge's export) with ``--tokenizer`` its ``.model``: it is then scored with the official byte rule, labelled
``val_bpb_official`` wherever printed; pgolf-data sidecars adds the exact sidecars that give ``val_bpb`` too.
Training stops at ``train.iterations`` or when ``--max-minutes`` of training time (validation excluded) have passed,
then validates on the whole val split, quantizes, writes ``RUN/model.pga`` and scores the model rebuilt from that
file alone. ``RUN/log.jsonl`` gets one JSON record per
logged step, validation and result; ``RUN/checkpoints/`` the resumable checkpoints (``--resume auto``).
The work is ``pgolf_model.training.trainer``; this module is its command line.
"""

from __future__ import annotations

import sys
from datetime import datetime

from pgolf_data.folder import FolderError
from pgolf_data.shards import ShardFormatError
from pgolf_data.tokenizer import TokenizerError
from pgolf_data.tokenizer.artifact import from_artifact
from pgolf_data.tokenizer.interop import artifact_bytes

from . import runtime
from .artifact import BudgetError
from .cli import add_config_arguments, command_parser, config_from_args, guarded
from .config import ConfigError
from .presets import bind_tokenizer
from .training.trainer import run

# Bad input, reported as one line: wrong config values, paths, shards, folder or tokenizer, or a model over budget.
USER_ERRORS = (ConfigError, BudgetError, ShardFormatError, FolderError, TokenizerError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.train", __doc__)
    parser.add_argument(
        "--data",
        required=True,
        help="shard directory: pgolf's (manifest, sidecars), or an official one (scored by the official byte rule)",
    )
    parser.add_argument(
        "--tokenizer",
        required=True,
        help="tokenizer directory, tokenizer.pgt, or a SentencePiece .model (imported; the artifact embeds it)",
    )
    parser.add_argument("--out", help="run directory (default: runs/<preset>-<time>)")
    parser.add_argument("--resume", help="checkpoint to continue from, or 'auto' for the newest in --out")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or console lines")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.resume == "auto" and not args.out:
        parser.error("--resume auto needs --out (the run directory to resume)")

    def train() -> int:
        cfg, given = config_from_args(args)
        cfg = bind_tokenizer(cfg, from_artifact(artifact_bytes(args.tokenizer), where=args.tokenizer), keep=given)
        rt = runtime.setup(args.device)
        out = args.out or rt.broadcast(f"runs/{cfg.preset}-{datetime.now():%Y%m%d-%H%M%S}")
        progress = not args.no_progress
        run(cfg, data=args.data, tokenizer=args.tokenizer, out_dir=out, resume=args.resume, rt=rt, progress=progress)
        return 0

    return guarded(train, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
