"""What the command lines share: one ``--section.field`` flag per config field, applied on top of a preset."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any, get_type_hints

from . import runtime
from .config import CODECS, SECTIONS, TTT_MODES, Config
from .presets import PRESETS, preset

ALIASES = {
    "train.max_minutes": "--max-minutes",
    "train.compile": "--compile",
    "train.seed": "--seed",
    "eval.stride": "--stride",
    "eval.ttt": "--ttt",
}
CHOICES = {"quant.codec": CODECS, "eval.ttt": TTT_MODES}


def flat(cfg: Config) -> dict[str, Any]:
    """``{"model.num_layers": 4, ...}``: every field of every section."""
    data = cfg.to_dict()
    return {f"{s}.{k}": v for s in SECTIONS for k, v in data[s].items()}


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field: ``--section.field``; the help shows the meaning and each preset's value."""
    parser.add_argument("--preset", default="baseline", choices=list(PRESETS), help="starting configuration")
    for section in SECTIONS:
        add_section_arguments(parser, section)


def add_section_arguments(parser: argparse.ArgumentParser, section: str) -> None:
    """The ``--section.field`` flags of one section (default None: not given)."""
    presets = {name: make() for name, make in PRESETS.items()}
    section_cls = SECTIONS[section]
    group = parser.add_argument_group(f"{section} settings")
    hints = get_type_hints(section_cls)
    for f in fields(section_cls):
        key = f"{section}.{f.name}"
        kind = hints[f.name]
        values = ", ".join(f"{p} {getattr(getattr(c, section), f.name)}" for p, c in presets.items())
        flags = [f"--{key}"] + ([ALIASES[key]] if key in ALIASES else [])
        extra: dict[str, Any] = {}
        if kind is bool:
            extra = {"type": _parse_bool, "nargs": "?", "const": True, "metavar": "BOOL"}
        else:
            extra = {"type": kind, "metavar": kind.__name__.upper()}
        if key in CHOICES:
            extra["choices"] = CHOICES[key]
        group.add_argument(*flags, dest=key, default=None, help=f"{f.metadata['help']} [{values}]", **extra)


def config_from_args(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    """The preset with every given flag applied, and the dict of flags that were given."""
    changes = {
        f"{s}.{f.name}": getattr(args, f"{s}.{f.name}")
        for s, cls in SECTIONS.items()
        for f in fields(cls)
        if getattr(args, f"{s}.{f.name}") is not None
    }
    return preset(args.preset).override(changes), changes


def guarded(body: Callable[[], int], errors: tuple[type[BaseException], ...]) -> int:
    """``body()``'s exit status; an error of ``errors`` (bad input) is printed as one line and exits 2. The process
    group (under torchrun) is left either way."""
    try:
        return body()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        runtime.teardown()
