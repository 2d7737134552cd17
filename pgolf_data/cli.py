"""``pgolf-data``: Corpora to tokenizers to official-format shards with exact-BPB byte sidecars.

Each subcommand is registered by a small module (cli_tokenizer, cli_shards); the library does the work.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__, cli_shards, cli_tokenizer

EPILOG = """\
Typical flow:
  pgolf-data train-tokenizer --spec sp1024_lossless --corpus default --out runs/tok
  pgolf-data tokenizer-info runs/tok
  pgolf-data shard --tokenizer runs/tok --corpus default --out runs/shards --val-docs 40
  pgolf-data verify runs/shards --corpus default
  pgolf-data export-tokenizer runs/tok --out runs/fineweb_1024_bpe.model     # TOKENIZER_PATH for train_gpt.py
  pgolf-data import-tokenizer fineweb_8192_bpe.model --out runs/tok_official
  pgolf-data export runs/shards --for baseline --out runs/official           # a folder train_gpt.py reads as is
  pgolf-data sidecars --tokenizer fineweb_1024_bpe.model --corpus docs_selected.jsonl data/datasets/fineweb10B_sp1024
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgolf-data",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pgolf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_tokenizer.register(sub)
    cli_shards.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"pgolf-data {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine, not the input: a full disk, a file size limit, permissions
        print(f"pgolf-data {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        # Every command writes its output atomically; one that keeps partial work (shard) says what it kept.
        print(f"pgolf-data {args.command}: interrupted; {e or 'no partial output was kept'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
