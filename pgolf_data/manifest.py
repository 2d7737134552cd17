"""``manifest.json``: what a shard directory claims to hold (docs/formats.md); ``pgolf-data verify`` checks it.

The manifest is written last, after every shard and ``tokenizer.pgt`` (a copy of the tokenizer artifact, so the
directory decodes on its own), and is the mark of a complete shard set: a directory without one is an interrupted run.
It has no timestamps, so the same inputs give a byte-identical manifest.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.pgt"
FORMAT = "pgolf-shards"
FORMAT_VERSION = 1
SPLITS = ("val", "train")
DOCS_SHA256_DEFINITION = (
    "sha256 over the documents in corpus order; each document contributes its UTF-8 byte length as an 8-byte "
    "little-endian unsigned integer, then its UTF-8 bytes"
)


class ManifestError(ValueError):
    """A missing, unreadable or malformed manifest; the message names the file and field."""


@dataclass(frozen=True)
class ShardEntry:
    """One token shard and its sidecar (``bytes_*`` are None for a split written without sidecars)."""

    file: str
    tokens: int
    sha256: str
    docs: int  # documents whose BOS lies in this shard
    bytes_file: str | None = None
    bytes_sha256: str | None = None
    bytes: int | None = None  # sum of the sidecar's values


@dataclass(frozen=True)
class SplitEntry:
    docs: int
    tokens: int
    bytes: int  # UTF-8 bytes of the split's documents
    sidecars: bool
    shards: tuple[ShardEntry, ...]


@dataclass(frozen=True)
class Manifest:
    name: str
    pgolf_version: str
    tokenizer: dict[str, Any]  # name, kind, vocab_size, bos_id, lossless, caseops, spec, artifact {file, bytes, sha256}
    corpus: dict[str, Any]  # source (the corpus' own description), docs, docs_sha256, docs_sha256_definition
    config: dict[str, Any]  # val_docs, shard_tokens, max_docs, train_sidecars
    splits: dict[str, SplitEntry]

    @property
    def bos_id(self) -> int:
        return int(self.tokenizer["bos_id"])

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def write(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / MANIFEST_NAME
        write_atomic(path, self.to_json().encode("utf-8"))
        return path

    @classmethod
    def from_dict(cls, data: Any, *, where: str = MANIFEST_NAME) -> Manifest:
        _expect(data, dict, where, "the top level")
        if data.get("format") != FORMAT:
            raise ManifestError(f"{where}: format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: format_version {data.get('format_version')!r}, this pgolf reads {FORMAT_VERSION}"
            )
        for key in ("name", "pgolf_version", "tokenizer", "corpus", "config", "splits"):
            if key not in data:
                raise ManifestError(f"{where}: missing field {key!r}")
        tokenizer = _expect(data["tokenizer"], dict, where, "tokenizer")
        for key in ("bos_id", "vocab_size", "lossless", "artifact"):
            if key not in tokenizer:
                raise ManifestError(f"{where}: missing field tokenizer.{key}")
        splits = _expect(data["splits"], dict, where, "splits")
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise ManifestError(f"{where}: unknown split(s) {', '.join(unknown)}; expected {', '.join(SPLITS)}")
        return cls(
            name=_expect(data["name"], str, where, "name"),
            pgolf_version=_expect(data["pgolf_version"], str, where, "pgolf_version"),
            tokenizer=tokenizer,
            corpus=_expect(data["corpus"], dict, where, "corpus"),
            config=_expect(data["config"], dict, where, "config"),
            splits={split: _split_from(entry, where, f"splits.{split}") for split, entry in splits.items()},
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: not a pgolf shard directory, or an interrupted run (use shard --resume)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path}: not valid JSON: {e}") from None
        return cls.from_dict(data, where=str(path))


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` under a temporary name, fsync, rename: readers see the old file or the whole new one, and a
    failed write (a full disk) leaves neither a new file nor the temporary."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _split_from(data: Any, where: str, field: str) -> SplitEntry:
    _expect(data, dict, where, field)
    try:
        shards = tuple(ShardEntry(**_expect(s, dict, where, f"{field}.shards[]")) for s in data["shards"])
        return SplitEntry(**{**data, "shards": shards})
    except (TypeError, KeyError) as e:
        raise ManifestError(f"{where}: malformed {field}: {e}") from None


def _expect(value: Any, kind: type, where: str, field: str) -> Any:
    if not isinstance(value, kind):
        raise ManifestError(f"{where}: {field} is {type(value).__name__}, expected {kind.__name__}")
    return value
