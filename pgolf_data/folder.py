"""What a shard folder is, before anything trains or scores on it (docs/formats.md, shard folders).

- **pgolf's** (``manifest.json``): its shards are bound to the tokenizer whose artifact sha256 the manifest records,
  and its sidecars are pgolf's exact ones.
- **official** (no manifest and none of pgolf's files: the challenge's export, a records' CaseOps folder with its
  ``fineweb_val_bytes_*.bin`` beside the tokens): bound to no tokenizer; scored with the official byte rule. When
  ``pgolf-data sidecars`` has added exact sidecars, ``bytes/sidecars.json`` (written last) binds them and the shards
  to the tokenizer that reproduced the tokens.
- **unfinished pgolf** (no manifest, but a resume journal, ``.tmp`` files, ``tokenizer.pgt`` or sidecars in
  ``bytes/`` without their index): refused, so that a half-written folder never trains or scores.

``check_ids`` range-checks every token of a split over the memory maps, one vectorized maximum per shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .journal import JOURNAL_NAME
from .manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest, ManifestError, ShardEntry, SplitEntry, write_atomic
from .shards import HEADER_BYTES, SIDECAR_DIR, ShardFormatError, ShardSet

SIDECAR_INDEX = f"{SIDECAR_DIR}/sidecars.json"
INDEX_FORMAT = "pgolf-sidecars"


class FolderError(ValueError):
    """A shard folder that must not be used as it is; the message says why and what to do."""


class TokenizerMismatchError(FolderError):
    """The tokenizer given is not the one the shards were written with; the message names both sha256."""


@dataclass(frozen=True)
class SidecarIndex:
    """``bytes/sidecars.json``: the exact sidecars ``pgolf-data sidecars`` added to an official folder."""

    tokenizer: dict[str, Any]  # name, kind, vocab_size, bos_id, sha256 of the artifact
    corpus: dict[str, Any]  # source, docs (re-encoded), docs_sha256
    splits: dict[str, SplitEntry]

    def to_json(self) -> str:
        data = {"format": INDEX_FORMAT, "format_version": 1, **asdict(self)}
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def write(self, directory: Path) -> None:
        write_atomic(directory / SIDECAR_INDEX, self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, directory: Path) -> SidecarIndex:
        path = directory / SIDECAR_INDEX
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("format") != INDEX_FORMAT:
                raise ValueError(f"format is not {INDEX_FORMAT!r}")
            splits = {
                split: SplitEntry(**{**entry, "shards": tuple(ShardEntry(**s) for s in entry["shards"])})
                for split, entry in data["splits"].items()
            }
            return cls(data["tokenizer"], data["corpus"], splits)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise FolderError(f"{path}: unreadable sidecar index ({e}); rerun pgolf-data sidecars --force") from None


@dataclass(frozen=True)
class ShardFolder:
    directory: Path
    manifest: Manifest | None
    index: SidecarIndex | None

    @property
    def official(self) -> bool:
        return self.manifest is None

    @property
    def tokenizer_sha256(self) -> str | None:
        """The sha256 of the tokenizer artifact the shards are bound to; None for an official folder alone."""
        if self.manifest is not None:
            return self.manifest.tokenizer["artifact"].get("sha256")
        return self.index.tokenizer["sha256"] if self.index is not None else None

    @property
    def exact_sidecars(self) -> bool:
        """Whether the val split's sidecars are pgolf's exact ones (not absent, not the records')."""
        source = self.manifest or self.index
        return source is not None and "val" in source.splits and source.splits["val"].sidecars

    def describe(self) -> str:
        if self.manifest is not None:
            return f"pgolf shard folder ({MANIFEST_NAME})"
        if self.index is not None:
            return f"official shard folder with pgolf's exact sidecars ({SIDECAR_INDEX})"
        return "official shard folder (no manifest)"

    def bind(self, artifact: bytes, where: str) -> None:
        """Refuse a tokenizer (its artifact bytes, read from ``where``) other than the one the shards are bound to."""
        claimed = self.tokenizer_sha256
        given = hashlib.sha256(artifact).hexdigest()
        if claimed is None or given == claimed:
            return
        if self.manifest is not None:
            source, hint = (
                MANIFEST_NAME,
                f"pass the tokenizer they were written with: {self.directory / TOKENIZER_NAME}",
            )
        else:
            source, hint = SIDECAR_INDEX, "pass the tokenizer that reproduced them (or redo pgolf-data sidecars)"
        raise TokenizerMismatchError(
            f"tokenizer mismatch: {where} has artifact sha256 {given}, but the shards in {self.directory} are bound "
            f"to sha256 {claimed} ({source}); {hint}"
        )


def open_folder(directory: str | os.PathLike) -> ShardFolder:
    """Classify ``directory`` (module docstring); refuses an unfinished pgolf folder and missing listed files."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"shard directory {directory} does not exist")
    if (directory / MANIFEST_NAME).is_file():
        try:
            manifest = Manifest.load(directory)
        except ManifestError as e:
            raise FolderError(str(e)) from None
        listed = [f for entry in manifest.splits.values() for s in entry.shards for f in (s.file, s.bytes_file) if f]
        _check_listed(directory, listed, MANIFEST_NAME)
        return ShardFolder(directory, manifest, None)
    traces = unfinished_traces(directory)
    if traces:
        shown = ", ".join(traces[:4]) + (", ..." if len(traces) > 4 else "")
        raise FolderError(
            f"{directory} is an unfinished pgolf shard folder ({shown}; no {MANIFEST_NAME}): resume it first "
            "(pgolf-data shard --resume with the same --tokenizer, --corpus and --out), or finish "
            "pgolf-data sidecars on it"
        )
    index = SidecarIndex.load(directory) if (directory / SIDECAR_INDEX).is_file() else None
    if index is not None:
        listed = [f for entry in index.splits.values() for s in entry.shards for f in (s.file, s.bytes_file) if f]
        _check_listed(directory, listed, SIDECAR_INDEX)
    return ShardFolder(directory, None, index)


def unfinished_traces(directory: Path) -> list[str]:
    """pgolf's files in a folder without a manifest that say a run did not finish (module docstring)."""
    traces = [name for name in (JOURNAL_NAME, TOKENIZER_NAME) if (directory / name).exists()]
    traces += sorted(p.name for p in directory.glob("*.tmp"))
    sidecars = directory / SIDECAR_DIR
    if sidecars.is_dir() and not (directory / SIDECAR_INDEX).is_file():
        traces += sorted(f"{SIDECAR_DIR}/{p.name}" for p in sidecars.iterdir())
    elif sidecars.is_dir():
        traces += sorted(f"{SIDECAR_DIR}/{p.name}" for p in sidecars.glob("*.tmp"))
    return traces


def _check_listed(directory: Path, files: list[str], source: str) -> None:
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
        raise FolderError(f"{directory}: {len(missing)} file(s) listed in {source} are missing ({shown})")


def check_ids(shards: ShardSet, vocab_size: int) -> None:
    """Raise ``ShardFormatError`` naming the file, offset and value of the first id ``>= vocab_size`` in ``shards``.

    One maximum per shard over its memory map (a vectorized pass at memory speed); only a shard that fails is
    searched for the position."""
    for i, path in enumerate(shards.token_files):
        tokens = shards.tokens(i)
        if tokens.size and int(tokens.max()) >= vocab_size:
            p = int(np.argmax(tokens >= vocab_size))
            raise ShardFormatError(
                f"{path}: offset {HEADER_BYTES + 2 * p}: token id {int(tokens[p])} is outside the tokenizer's "
                f"vocabulary of {vocab_size}"
            )
