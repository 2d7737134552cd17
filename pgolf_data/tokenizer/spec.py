"""Tokenizer specs: the TOML files under ``tokenizers/`` as a typed dataclass.

A spec names the kind, the vocabulary size and the trainer options; two runs of the same spec on the same corpus
produce byte-identical artifacts. Example::

    name = "sp1024"
    kind = "sentencepiece"
    vocab_size = 1024
    long_docs = "drop"        # what to do with documents longer than max_sentence_length (SentencePiece only)
    preprocess = "official"   # NUL -> space, strip, skip empty: the challenge's trainer input
    [options]                 # passed to the kind's trainer
    normalization_rule_name = "nmt_nfkc"
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ..shards import VOCAB_LIMIT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("sentencepiece", "hf-bpe", "bytes", "caseops-sp", "caseops-hf-bpe")
MIN_VOCAB = 256


class SpecError(ValueError):
    """A spec with a bad field; the message names the file, field and value."""


@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    kind: str
    vocab_size: int
    description: str = ""
    # Documents longer than the trainer's sentence limit: "chunk" splits them at line/space boundaries so every byte
    # is trained on; "drop" reproduces SentencePiece's default of silently skipping them (the official sp1024 spec).
    long_docs: Literal["chunk", "drop"] = "chunk"
    # "official" = the challenge trainer's input (NUL -> space, strip, skip empty docs); "none" = text as is.
    preprocess: Literal["official", "none"] = "none"
    train_docs: int | None = None
    train_bytes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpecError(f"spec {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        check_vocab_size(self.vocab_size, where=f"spec {self.name!r}")
        if self.long_docs not in ("chunk", "drop"):
            raise SpecError(f"spec {self.name!r}: long_docs {self.long_docs!r} must be 'chunk' or 'drop'")
        if self.preprocess not in ("official", "none"):
            raise SpecError(f"spec {self.name!r}: preprocess {self.preprocess!r} must be 'official' or 'none'")
        for key in ("train_docs", "train_bytes"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise SpecError(f"spec {self.name!r}: {key} must be a positive integer, got {value!r}")

    def with_overrides(self, **changes: Any) -> TokenizerSpec:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "spec") -> TokenizerSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("name", "kind", "vocab_size") if k not in data]
        if missing:
            raise SpecError(f"{where}: missing field(s) {', '.join(missing)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TokenizerSpec:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{path}: invalid TOML: {e}") from None
        return cls.from_dict(data, where=str(path))


def check_vocab_size(vocab_size: Any, *, where: str = "vocab") -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise SpecError(f"{where}: vocab_size must be an integer, got {vocab_size!r}")
    if not MIN_VOCAB <= vocab_size <= VOCAB_LIMIT:
        raise SpecError(
            f"{where}: vocab_size {vocab_size} is outside [{MIN_VOCAB}, {VOCAB_LIMIT}]: shards store ids as uint16 "
            f"(at most {VOCAB_LIMIT} ids) and every tokenizer needs the 256 byte values"
        )


SPEC_DIR = Path(__file__).resolve().parents[2] / "tokenizers"
# The spec a bare ``--kind`` starts from (its vocab_size is then overridden by ``--vocab``).
KIND_DEFAULT_SPECS = {
    "sentencepiece": "sp1024_lossless",
    "hf-bpe": "hf_bpe1024",
    "bytes": "bytes260",
    "caseops-sp": "caseops_sp1024",
    "caseops-hf-bpe": "caseops_hf_bpe1024",
}


def available_specs() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml")) if SPEC_DIR.is_dir() else []


def resolve_spec(name_or_path: str) -> TokenizerSpec:
    """A spec from a TOML path, or by name from the repository's ``tokenizers/`` folder."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return TokenizerSpec.load(path)
    candidate = SPEC_DIR / f"{name_or_path}.toml"
    if candidate.is_file():
        return TokenizerSpec.load(candidate)
    known = ", ".join(available_specs()) or f"none found in {SPEC_DIR}"
    raise SpecError(f"no spec {name_or_path!r}: not a file, and not a name in tokenizers/ (known: {known})")


def spec_for_kind(kind: str, vocab_size: int | None) -> TokenizerSpec:
    if kind not in KIND_DEFAULT_SPECS:
        raise SpecError(f"kind {kind!r} is not one of {', '.join(KIND_DEFAULT_SPECS)}")
    spec = resolve_spec(KIND_DEFAULT_SPECS[kind])
    if vocab_size is not None and vocab_size != spec.vocab_size:
        spec = replace(spec, vocab_size=vocab_size, name=f"{kind}{vocab_size}")  # replace() re-validates
    return spec
