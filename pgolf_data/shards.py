"""The shard format: official token shards and their byte sidecars (docs/formats.md).

A shard is 256 little-endian int32 header words -- ``[0]`` magic 20240520, ``[1]`` version 1, ``[2]`` token count,
the rest zero -- followed by that many little-endian uint16 values. Token shards hold token ids (every document
starts with BOS, no EOS); byte sidecars hold, per token, the number of UTF-8 bytes of the original document text that
token accounts for. Token shards are ``<name>_{val,train}_NNNNNN.bin``; each sidecar is ``bytes/<its shard's name>``,
in a sub-folder so that no official loader's glob (``fineweb_val_*.bin``, ``fineweb_train_*.bin``) can read a sidecar
as tokens. Readers also accept sidecars beside the tokens as ``<name>_{val,train}_bytes_NNNNNN.bin``: pgolf's earlier
layout and the CaseOps records' (docs/formats.md, byte sidecar).

This module is the format and the memory-mapped reader; the parallel writer pipeline lives in ``sharding.py``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_WORDS = 256
HEADER_BYTES = HEADER_WORDS * 4
MAX_SHARD_TOKENS = 10**8
TOKEN_DTYPE = np.dtype("<u2")
MAX_VALUE = int(np.iinfo(TOKEN_DTYPE).max)  # the largest id or byte count a shard can hold
VOCAB_LIMIT = MAX_VALUE + 1  # ids 0..MAX_VALUE: the most a tokenizer may have for these shards (65,536)

Split = Literal["val", "train"]
SIDECAR_DIR = "bytes"  # the sub-folder of a shard folder that holds its sidecars
SidecarLayout = Literal["bytes/", "beside"]
_NAME_RE = re.compile(r"^(?P<name>.+)_(?P<split>val|train)(?P<bytes>_bytes)?_(?P<index>\d{6})\.bin$")


class ShardFormatError(ValueError):
    """A shard or sidecar whose header, size or contents disagree with the format."""


def shard_filename(name: str, split: Split, index: int, *, sidecar: bool = False) -> str:
    """A token shard's file name; ``sidecar``: the name of a sidecar *beside* the tokens (the records' layout)."""
    return f"{name}_{split}{'_bytes' if sidecar else ''}_{index:06d}.bin"


def sidecar_name(name: str, split: Split, index: int) -> str:
    """A sidecar's path relative to its shard folder: ``bytes/`` and the token shard's own name."""
    return f"{SIDECAR_DIR}/{shard_filename(name, split, index)}"


def parse_shard_filename(filename: str) -> tuple[str, Split, bool, int] | None:
    """``(name, split, is_sidecar, index)`` for a shard file name, None for anything else."""
    m = _NAME_RE.match(filename)
    if m is None:
        return None
    return m["name"], m["split"], m["bytes"] is not None, int(m["index"])  # type: ignore[return-value]


def make_header(num_tokens: int) -> bytes:
    if not 0 <= num_tokens < 2**31:
        raise ShardFormatError(f"token count {num_tokens} does not fit the int32 header")
    header = np.zeros(HEADER_WORDS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, num_tokens
    return header.tobytes()


def read_header(path: str | os.PathLike) -> int:
    """Validate the header of ``path`` against its size and return the token count."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardFormatError(f"{path}: {size} bytes, shorter than the {HEADER_BYTES}-byte header")
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(HEADER_BYTES), dtype="<i4")
    if header[0] != MAGIC:
        raise ShardFormatError(f"{path}: offset 0: magic {int(header[0])}, expected {MAGIC}")
    if header[1] != VERSION:
        raise ShardFormatError(f"{path}: offset 4: version {int(header[1])}, expected {VERSION}")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if count < 0 or size != expected:
        raise ShardFormatError(
            f"{path}: header says {count} tokens, so {expected} bytes, but the file has {size} bytes"
        )
    if np.any(header[3:]):
        bad = int(np.flatnonzero(header[3:])[0]) + 3
        raise ShardFormatError(f"{path}: offset {4 * bad}: reserved header word {bad} is {int(header[bad])}, not 0")
    return count


def write_shard(path: str | os.PathLike, values: np.ndarray) -> None:
    """Write one shard atomically: a temporary name, fsync, then rename, so no half-written file looks complete."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > MAX_VALUE):
        raise ShardFormatError(f"{path}: values outside uint16 (min {values.min()}, max {values.max()})")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(make_header(values.size))
        f.write(values.astype(TOKEN_DTYPE, copy=False).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_shard(path: str | os.PathLike) -> np.memmap:
    """Memory-map the uint16 payload of a validated shard or sidecar."""
    count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)  # np.memmap refuses empty maps
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ShardSet:
    """The shards of one split in a directory, in index order, with their sidecars where present.

    Opening validates every header against its file size and every sidecar's count against its shard, so a truncated
    file is an error here, never a short or garbage read later. Tokens and byte counts are memory-mapped. The split is
    one token stream cut into shards (a document may straddle two); positions below are global positions in that
    stream, and a document runs from one BOS to the next (``doc_starts``).
    """

    directory: Path
    name: str
    split: Split
    token_files: tuple[Path, ...]
    byte_files: tuple[Path, ...] | None
    counts: tuple[int, ...]  # tokens per shard, as validated at open
    sidecar_layout: SidecarLayout | None = None  # where the sidecars were found

    @classmethod
    def open(cls, directory: str | os.PathLike, split: Split, *, name: str | None = None) -> ShardSet:
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"shard directory {directory} does not exist")
        tokens, beside = _scan(directory, split)
        in_folder, _ = _scan(directory / SIDECAR_DIR, split)
        if name is None:
            if len(tokens) != 1:
                found = ", ".join(sorted(tokens)) or "none"
                raise ShardFormatError(f"{directory}: expected one set of {split} shards, found: {found}")
            name = next(iter(tokens))
        if name not in tokens:
            raise ShardFormatError(f"{directory}: no {split} shards named {name}_{split}_NNNNNN.bin")
        token_map = tokens[name]
        _check_contiguous(directory, token_map, f"{name}_{split}")
        token_files = tuple(token_map[i] for i in sorted(token_map))
        counts = tuple(read_header(p) for p in token_files)
        # pgolf's bytes/ first: a records' folder may keep its own sidecars beside the tokens for the records' script.
        layout: SidecarLayout | None = "bytes/" if name in in_folder else "beside" if name in beside else None
        byte_files = None
        if layout is not None:
            side_map = (in_folder if layout == "bytes/" else beside)[name]
            if sorted(side_map) != sorted(token_map):
                raise ShardFormatError(
                    f"{directory}: sidecar indices {sorted(side_map)} differ from shard indices {sorted(token_map)}"
                )
            byte_files = tuple(side_map[i] for i in sorted(side_map))
            for shard, sidecar, n_tok in zip(token_files, byte_files, counts):
                n_bytes = read_header(sidecar)
                if n_bytes != n_tok:
                    raise ShardFormatError(
                        f"{sidecar}: {n_bytes} entries, but its shard {shard.name} has {n_tok} tokens"
                    )
        return cls(directory, name, split, token_files, byte_files, counts, layout)

    @property
    def has_bytes(self) -> bool:
        return self.byte_files is not None

    @property
    def num_tokens(self) -> int:
        return sum(self.counts)

    @property
    def offsets(self) -> np.ndarray:
        """Global position of each shard's first token, plus the total: shard i holds ``[offsets[i], offsets[i+1])``."""
        return np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])

    def tokens(self, index: int) -> np.ndarray:
        return load_shard(self.token_files[index])

    def byte_counts(self, index: int) -> np.ndarray:
        if self.byte_files is None:
            raise ShardFormatError(f"{self.directory}: no byte sidecars for the {self.split} split")
        return load_shard(self.byte_files[index])

    def read(self, start: int, stop: int, *, sidecar: bool = False) -> np.ndarray:
        """Tokens (or sidecar byte counts) at global positions ``[start, stop)``, copied across shard boundaries."""
        total = self.num_tokens
        if not 0 <= start <= stop <= total:
            raise IndexError(f"range [{start}, {stop}) outside the {self.split} split's {total} tokens")
        load = self.byte_counts if sidecar else self.tokens
        offsets = self.offsets
        parts = []
        first = int(np.searchsorted(offsets, start, side="right")) - 1
        for i in range(first, len(self.counts)):
            if offsets[i] >= stop:
                break
            lo, hi = max(start, offsets[i]) - offsets[i], min(stop, offsets[i + 1]) - offsets[i]
            parts.append(load(i)[lo:hi])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=TOKEN_DTYPE)

    def chunks(self, chunk_tokens: int = 1 << 24) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """``(global start, tokens, byte counts or None)`` in stream order, at most ``chunk_tokens`` at a time."""
        position = 0
        for i, count in enumerate(self.counts):
            tokens = self.tokens(i)
            counts = self.byte_counts(i) if self.has_bytes else None
            for lo in range(0, count, chunk_tokens):
                hi = min(lo + chunk_tokens, count)
                yield position + lo, tokens[lo:hi], None if counts is None else counts[lo:hi]
            position += count

    def doc_starts(self, bos_id: int) -> np.ndarray:
        """Global positions of the documents' BOS tokens (int64); document i is ``[starts[i], starts[i+1])``.

        Raises ShardFormatError when the split does not begin with BOS (tokens that belong to no document).
        """
        found = []
        for start, tokens, _ in self.chunks():
            if start == 0 and tokens[0] != bos_id:
                raise ShardFormatError(
                    f"{self.token_files[0]}: offset {HEADER_BYTES}: the split starts with token {int(tokens[0])}, "
                    f"not BOS {bos_id}"
                )
            found.append(np.flatnonzero(tokens == bos_id) + start)
        return np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)

    def doc_byte_sums(self, bos_id: int) -> np.ndarray:
        """Sidecar bytes summed per document (int64), streaming shard by shard; equals each document's UTF-8 length."""
        sums: list[np.ndarray] = []
        open_doc: int | None = None  # running sum of the document that continues into the next chunk
        for _start, tokens, counts in self.chunks():
            if counts is None:
                raise ShardFormatError(f"{self.directory}: no byte sidecars for the {self.split} split")
            starts = np.flatnonzero(tokens == bos_id)
            head = int(starts[0]) if starts.size else tokens.size
            if open_doc is None:
                if head:
                    raise ShardFormatError(
                        f"{self.token_files[0]}: offset {HEADER_BYTES}: the split starts with token {int(tokens[0])}, "
                        f"not BOS {bos_id}"
                    )
            else:
                open_doc += int(counts[:head].sum(dtype=np.int64))
            if starts.size:
                if open_doc is not None:
                    sums.append(np.array([open_doc], dtype=np.int64))
                segments = np.add.reduceat(counts, starts, dtype=np.int64)
                sums.append(segments[:-1])
                open_doc = int(segments[-1])
        if open_doc is not None:
            sums.append(np.array([open_doc], dtype=np.int64))
        return np.concatenate(sums) if sums else np.zeros(0, dtype=np.int64)


def _scan(directory: Path, split: Split) -> tuple[dict[str, dict[int, Path]], dict[str, dict[int, Path]]]:
    """The ``split``'s token shards and sidecars named ``*_bytes_*`` in ``directory``, by shard name and index."""
    tokens: dict[str, dict[int, Path]] = {}
    beside: dict[str, dict[int, Path]] = {}
    if not directory.is_dir():
        return tokens, beside
    for entry in sorted(directory.iterdir()):
        parsed = parse_shard_filename(entry.name)
        if parsed is None or parsed[1] != split:
            continue
        shard_name, _, is_sidecar, index = parsed
        (beside if is_sidecar else tokens).setdefault(shard_name, {})[index] = entry
    return tokens, beside


def doc_starts(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Positions of BOS tokens: every document starts at one."""
    return np.flatnonzero(np.asarray(tokens) == bos_id)


def _check_contiguous(directory: Path, index_map: dict[int, Path], stem: str) -> None:
    expected = list(range(len(index_map)))
    if sorted(index_map) != expected:
        missing = sorted(set(range(max(index_map) + 1)) - set(index_map))
        raise ShardFormatError(f"{directory}: {stem} shards are not numbered 0..N-1; missing indices {missing}")
