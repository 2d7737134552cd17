"""Configs on the command line: every setting as one ``--section.field`` flag over a preset, one-line errors, and the
help layout the package's command lines (and the pipelines') share.

A setting is a leaf of the config's dataclasses, named by its dotted path (``model.num_layers``,
``eval.phased.lr``); ``settings`` lists them and ``flat`` reads a config that way (the ablation's tables use it too).
The model section's settings are the chosen family's (``--model.arch``, ``pgolf_model.registry``), so a command line
reads that flag first (``arch_from_argv``) and then offers that family's ``--model.*`` flags.
Flags parse each value by its annotation: a ``Literal`` gives the flag's choices, a tuple is written comma-separated
(``--model.ve_layers 9,10``), a bool takes true/false (or nothing, for true).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import Field, fields, is_dataclass
from typing import Any, get_args, get_origin

from . import registry, runtime
from .config import DEFAULT_ARCH, SECTIONS, Config, ConfigError, choices, type_hints
from .presets import PRESETS, preset

ALIASES = {
    "train.max_minutes": "--max-minutes",
    "train.compile": "--compile",
    "train.seed": "--seed",
    "eval.stride": "--stride",
    "eval.ttt": "--ttt",
}


def command_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A parser for ``prog`` whose help opens with the first paragraph of ``doc`` (its module docstring) and ends
    with the rest, as written."""
    description, _, epilog = doc.partition("\n\n")
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def settings(sections: dict[str, type] | None = None) -> Iterator[tuple[str, Field, Any, tuple[str, ...]]]:
    """``(dotted key, field, type, helps of the enclosing sections)`` of every setting of ``sections`` (default: the
    GPT's config, ``config.SECTIONS``)."""
    for name, cls in (sections or SECTIONS).items():
        yield from _leaves(cls, f"{name}.")


def _leaves(cls: type, prefix: str) -> Iterator[tuple[str, Field, Any, tuple[str, ...]]]:
    for f in fields(cls):
        kind = type_hints(cls)[f.name]
        if is_dataclass(kind):
            for key, leaf, leaf_kind, helps in _leaves(kind, f"{prefix}{f.name}."):
                yield key, leaf, leaf_kind, (f.metadata.get("help", ""), *helps)
        else:
            yield f"{prefix}{f.name}", f, kind, ()


def flat(cfg: Config) -> dict[str, Any]:
    """``{"model.num_layers": 4, "eval.lora.rank": 80, ...}``: every setting of ``cfg``."""
    out = {}
    for key, *_ in settings(cfg.sections()):
        value: Any = cfg
        for name in key.split("."):
            value = getattr(value, name)
        out[key] = value
    return out


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parser_for(kind: Any) -> Callable[[str], Any]:
    """Text to a value of ``kind``: a tuple is comma-separated items ('' = empty), a bool true/false."""
    if get_origin(kind) is tuple:
        item = parser_for(get_args(kind)[0])
        return lambda text: tuple(item(t.strip()) for t in text.split(",") if t.strip())
    if kind is bool:
        return _parse_bool
    if choices(kind) is not None:
        return str
    return kind


def parse_setting(key: str, text: str, sections: dict[str, type] | None = None) -> Any:
    """The value of setting ``key`` of ``sections`` (default the GPT's config) written as ``text`` (as its flag would
    parse it)."""
    kinds = {k: kind for k, _, kind, _ in settings(sections)}
    if key not in kinds:
        raise argparse.ArgumentTypeError(f"unknown config field {key!r}")
    return parser_for(kinds[key])(text)


ARCH_HELP = (
    "model family: gpt (the record stack's transformer), ssd (a Mamba-2-style state-space LM), or one a package "
    "registers under the entry-point group pgolf.models (README: Model families: bring your own model)"
)


def arch_from_argv(argv: list[str] | None) -> str:
    """The ``--model.arch`` of a command line (before its other flags can be known)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--model.arch", dest="arch", default=DEFAULT_ARCH)
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return known.arch


def add_arch_argument(parser: argparse.ArgumentParser) -> None:
    help = ARCH_HELP + "; the model settings listed are this family's (add --model.arch NAME to --help for another's)"
    parser.add_argument("--model.arch", dest="model.arch", default=DEFAULT_ARCH, metavar="NAME", help=help)


def add_config_arguments(parser: argparse.ArgumentParser, arch: str = DEFAULT_ARCH) -> None:
    """``--preset``, ``--model.arch`` and one flag per setting of family ``arch``; the help shows each setting's
    meaning and value in each preset."""
    parser.add_argument("--preset", default="baseline", choices=list(PRESETS), help="starting configuration")
    add_arch_argument(parser)
    try:
        registry.model_class(arch)
    except ConfigError as e:
        parser.error(str(e))
    for section in SECTIONS:
        add_section_arguments(parser, section, arch)


def add_section_arguments(parser: argparse.ArgumentParser, section: str, arch: str = DEFAULT_ARCH) -> None:
    """The flags of one section's settings (default None: not given), the model section's those of family ``arch``."""
    presets = {name: flat(registry.with_arch(make(), arch)) for name, make in PRESETS.items()}
    sections = {**SECTIONS, "model": registry.model_class(arch).Config}
    group = parser.add_argument_group(f"{section} settings" + (f" (model.arch {arch})" if section == "model" else ""))
    for key, f, kind, helps in _leaves(sections[section], f"{section}."):
        values = ", ".join(f"{p} {_show(values[key])}" for p, values in presets.items())
        flags = [f"--{key}"] + ([ALIASES[key]] if key in ALIASES else [])
        extra: dict[str, Any] = {"type": parser_for(kind), "metavar": _metavar(kind)}
        if kind is bool:
            extra.update(nargs="?", const=True)
        elif get_origin(kind) is not tuple and choices(kind) is not None:
            extra.update(choices=choices(kind), metavar=None)
        text = ": ".join((*filter(None, helps), f.metadata["help"]))
        if get_origin(kind) is tuple and choices(kind) is not None:
            text += f" (from {','.join(choices(kind))})"
        group.add_argument(*flags, dest=key, default=None, help=f"{text} [{values}]", **extra)


def _metavar(kind: Any) -> str:
    if get_origin(kind) is tuple:
        return "A,B,..."
    return "BOOL" if kind is bool else getattr(kind, "__name__", "VALUE").upper()


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def config_from_args(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    """The preset, with the model section of ``--model.arch``, with every given flag applied; and the dict of flags
    that were given."""
    cfg = registry.with_arch(preset(args.preset), getattr(args, "model.arch", DEFAULT_ARCH))
    given = {key: getattr(args, key) for key, *_ in settings(cfg.sections()) if getattr(args, key, None) is not None}
    return cfg.override(given), given


def guarded(body: Callable[[], int], errors: tuple[type[BaseException], ...]) -> int:
    """``body()``'s exit status; an error of ``errors`` (bad input) is printed as one line and exits 2, an OSError (a
    full disk) as one line with exit 1, Ctrl-C exits 130 (or the status the interrupt carries, with its message). The
    process group (under torchrun) is left either way."""
    try:
        return body()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        return getattr(e, "exit_status", 130)
    finally:
        runtime.teardown()
