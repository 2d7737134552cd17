"""Train a model (``--model.arch``) on token shards and write its budgeted artifact.

    python -m pgolf_model.train --data DIR --tokenizer DIR --preset tiny [--model.num_layers 6 ...]
    python -m pgolf_model.train --data DIR --tokenizer DIR --preset tiny --model.arch ssd [--model.state_dim 16 ...]
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
``RUN`` holds one run: a new run needs an empty one, ``--resume`` continues the run there with its settings, and
``--force`` starts over, deleting only what a run writes (log.jsonl, summary.json, model.pga, checkpoints/).
Ctrl-C (or SIGTERM) stops after the current step (under torchrun: at the clock's next check point, at most
``--train.clock_every`` steps on) with a checkpoint, exit status 130 (143). Under torchrun, a rank that
loses its peers (one died) says so in one line and exits 1; the last checkpoint stays intact for ``--resume auto``.
The work is ``pgolf_model.training.trainer``; this module is its command line.

``--model.arch`` picks the model family: ``gpt`` (default), ``ssd``, or a plugin's: a package that registers its
model class under the entry-point group ``pgolf.models`` (``[project.entry-points."pgolf.models"] NAME =
"package.module:Class"``) trains with ``--model.arch NAME``, and its config dataclass's fields become the
``--model.*`` flags (``--model.arch NAME --help`` lists them). The artifact records the family and carries the
plugin's counted source files.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime

from pgolf_data.folder import FolderError
from pgolf_data.shards import ShardFormatError
from pgolf_data.tokenizer import TokenizerError
from pgolf_data.tokenizer.artifact import from_artifact
from pgolf_data.tokenizer.interop import artifact_bytes

from . import runtime
from .artifact import ArtifactError, BudgetError
from .cli import add_config_arguments, arch_from_argv, command_parser, config_from_args, guarded
from .config import ConfigError
from .presets import bind_tokenizer
from .training import checkpoint
from .training.checkpoint import CheckpointError
from .training.run_dir import RunDirError
from .training.stop import PeerLost
from .training.trainer import run

# Bad input, reported as one line: wrong config values, paths, shards, folder, tokenizer or checkpoint, a run
# directory that cannot be used as asked, or a model over the budget.
USER_ERRORS = (
    ConfigError,
    BudgetError,
    ShardFormatError,
    FolderError,
    TokenizerError,
    ArtifactError,
    CheckpointError,
    RunDirError,
    FileNotFoundError,
)


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
    parser.add_argument("--out", help="run directory, empty or new (default: runs/<preset>-<time>)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", help="continue the run in --out: 'auto' (its newest checkpoint) or that checkpoint's path"
    )
    again.add_argument(
        "--force", action="store_true", help="start over in a non-empty --out, deleting only the files a run writes"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or console lines")
    add_config_arguments(parser, arch_from_argv(argv))
    args = parser.parse_args(argv)
    if args.resume == "auto" and not args.out:
        parser.error("--resume auto needs --out (the run directory to resume)")

    def train() -> int:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: one line, not a silent death
        cfg, given = config_from_args(args)
        cfg = bind_tokenizer(cfg, from_artifact(artifact_bytes(args.tokenizer), where=args.tokenizer), keep=given)
        rt = runtime.setup(args.device)
        out = args.out or rt.broadcast(f"runs/{cfg.preset}-{datetime.now():%Y%m%d-%H%M%S}")
        try:
            run(
                cfg, data=args.data, tokenizer=args.tokenizer, out_dir=out, resume=args.resume, force=args.force,
                rt=rt, progress=not args.no_progress,
            )  # fmt: skip
        except PeerLost as e:
            # The process group is broken: leaving it cleanly can hang or abort, and torchrun is about to stop this
            # rank anyway. Say what happened and go.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"error: {e}", file=sys.stderr, flush=True)
            os._exit(1)
        except KeyboardInterrupt as e:
            if getattr(e, "checkpoint", None) is not None or not rt.is_main:
                raise
            latest = checkpoint.latest(out)
            saved = f"the last checkpoint is {latest}" if latest else "no checkpoint was saved"
            raise KeyboardInterrupt(f"outside the training loop: {saved}") from None
        return 0

    return guarded(train, USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
