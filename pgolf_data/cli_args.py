"""Argument groups shared by several ``pgolf-data`` subcommands."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable

from .corpus import DEFAULT_SOURCE

CORPUS_HELP = (
    "document source: a .jsonl[.gz|.zst], .parquet or .txt file, a directory, hf:NAME[:SPLIT], or 'default' "
    "(the embedded corpus, no network needed)"
)


def add_corpus_args(
    p: argparse.ArgumentParser,
    *,
    default: str | None = DEFAULT_SOURCE,
    corpus_help: str | None = None,
    max_docs: bool = True,
) -> None:
    """``--corpus``, ``--text-field`` and (unless ``max_docs`` is False) ``--max-docs``."""
    p.add_argument(
        "--corpus",
        default=default,
        metavar="SRC",
        help=corpus_help or CORPUS_HELP + (f"; default: {default}" if default else ""),
    )
    p.add_argument(
        "--text-field", default="text", metavar="FIELD", help="JSON/parquet field holding the text (default: text)"
    )
    if max_docs:
        p.add_argument("--max-docs", type=int, metavar="N", help="read only the first N documents of the corpus")


def add_command(
    sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """The subcommand ``name`` that runs ``func``; ``func``'s docstring is its help: the first line is the summary in
    ``pgolf-data --help``, the paragraph after it the description in ``pgolf-data NAME --help``."""
    summary, _, description = inspect.cleandoc(func.__doc__ or name).partition("\n\n")
    p = sub.add_parser(name, help=summary, description=description.strip() or summary)
    p.set_defaults(func=func)
    return p
