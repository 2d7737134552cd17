"""The byte budget of an artifact, or the estimate for a config before any training.

    python -m pgolf_model.budget RUN/model.pga                 # each part's bytes and the total against 16,000,000
    python -m pgolf_model.budget --preset baseline --tokenizer DIR [--model.num_layers 11 ...]   # the estimate
    python -m pgolf_model.budget --preset tiny --model.arch ssd --tokenizer DIR     # any model family's estimate

An artifact is read whole: every part's sha256 is checked and every part decoded (a corrupt file is an error, exit 2),
and the table says whether its model code is this pgolf's (``evaluate`` runs it) or not (``evaluate`` refuses it
without ``--trust-artifact-code``); nothing of the artifact runs here. The estimate is ``pgolf_model.export.estimate``:
exact but for the compressed weights, estimated from a Gaussian sample of each matrix width; an estimate over the
limit exits 1.
"""

from __future__ import annotations

import sys

from pgolf_data.tokenizer.artifact import artifact_path, from_artifact

from . import artifact
from .artifact import LIMIT
from .cli import add_config_arguments, arch_from_argv, command_parser, config_from_args, guarded
from .export.estimate import estimate, format_table
from .presets import bind_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.budget", __doc__)
    parser.add_argument("artifact", nargs="?", help="a model artifact; without it, estimate for the config flags")
    parser.add_argument("--tokenizer", help="tokenizer directory or .pgt file (for the estimate)")
    parser.add_argument("--limit", type=int, default=LIMIT, help="byte limit (default: the challenge's)")
    add_config_arguments(parser, arch_from_argv(argv))
    args = parser.parse_args(argv)
    if not args.artifact and not args.tokenizer:
        parser.error("give an artifact, or --tokenizer (and config flags) for an estimate")
    return guarded(
        lambda: artifact_budget(args) if args.artifact else estimate_budget(args), (ValueError, FileNotFoundError)
    )


def artifact_budget(args) -> int:
    art = artifact.read(args.artifact)
    art.tokenizer()  # decoded too: a version-1 file's corrupt tokenizer part is an error here as in evaluate
    print(format_table(art.sizes, args.limit, title=args.artifact))
    foreign = art.foreign_model_code()
    if foreign:
        print(f"  model code differs from this pgolf's ({', '.join(foreign)}): evaluate needs --trust-artifact-code")
    else:
        print("  model code is the installed code (sha256 of each file): evaluate runs it")
    if art.unverified_note:
        print(f"note: {art.unverified_note}", file=sys.stderr)
    return 0 if art.total_bytes <= args.limit else 1


def estimate_budget(args) -> int:
    path = artifact_path(args.tokenizer)
    data = path.read_bytes()
    cfg, given = config_from_args(args)
    cfg = bind_tokenizer(cfg, from_artifact(data, where=str(path)), keep=given)
    sizes = estimate(cfg, len(data))
    print(format_table(sizes, args.limit, title=f"estimate for preset {cfg.preset} (weights estimated)"))
    return 0 if sum(sizes.values()) <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
