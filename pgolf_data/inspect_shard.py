"""``pgolf-data inspect``: what one shard, sidecar or shard directory (pgolf's or official) holds, in a few lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest
from .shards import (
    HEADER_WORDS,
    SIDECAR_DIR,
    ShardFormatError,
    ShardSet,
    load_shard,
    parse_shard_filename,
    read_header,
)
from .tokenizer.artifact import from_artifact
from .tokenizer.base import Tokenizer


def is_sidecar(path: Path) -> bool:
    """Whether a shard file is a byte sidecar: in a ``bytes/`` folder, or named ``*_bytes_*`` beside the tokens."""
    parsed = parse_shard_filename(path.name)
    return parsed is not None and (parsed[2] or path.parent.name == SIDECAR_DIR)


def find_tokenizer(path: Path) -> Tokenizer | None:
    """The ``tokenizer.pgt`` the shard writer copies beside the shards, if there is one."""
    folder = path if path.is_dir() else path.parent
    if folder.name == SIDECAR_DIR:
        folder = folder.parent
    artifact = folder / TOKENIZER_NAME
    return from_artifact(artifact.read_bytes(), where=str(artifact)) if artifact.is_file() else None


def describe(path: str | Path, *, tokenizer: Tokenizer | None = None, count: int = 16) -> list[str]:
    """Lines describing ``path``: a shard directory (or its manifest.json), a token shard or a byte sidecar."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir() and not (path / MANIFEST_NAME).exists():
        return describe_official(path)
    if path.is_dir() or path.name == MANIFEST_NAME:
        return describe_manifest(Manifest.load(path if path.is_dir() else path.parent))
    return describe_shard(path, tokenizer=tokenizer or find_tokenizer(path), count=count)


def describe_manifest(m: Manifest) -> list[str]:
    t = m.tokenizer
    lines = [
        f"name       {m.name} (pgolf {m.pgolf_version})",
        f"tokenizer  {t.get('name')} ({t.get('kind')}, vocab {t['vocab_size']}, BOS {t['bos_id']}, "
        f"{'lossless' if t['lossless'] else 'lossy'}), artifact sha256 {t['artifact'].get('sha256')}",
        f"corpus     {m.corpus.get('source', {}).get('source')}: {m.corpus.get('docs'):,} documents, "
        f"sha256 {m.corpus.get('docs_sha256')}",
        f"config     {', '.join(f'{k}={v}' for k, v in m.config.items())}",
    ]
    for split, entry in m.splits.items():
        sidecars = "with byte sidecars" if entry.sidecars else "no sidecars"
        lines.append(
            f"{split:<10} {entry.docs:,} docs, {entry.tokens:,} tokens, {entry.bytes:,} bytes "
            f"({entry.tokens / max(entry.bytes, 1):.4f} tokens/byte) in {len(entry.shards)} shards, {sidecars}"
        )
    return lines


def describe_official(directory: Path) -> list[str]:
    """A folder without a manifest: what each split holds, and where its sidecars are."""
    lines = [f"folder     {directory}: no {MANIFEST_NAME} (an official folder, or an unfinished pgolf one)"]
    for split in ("val", "train"):
        try:
            shards = ShardSet.open(directory, split)  # type: ignore[arg-type]
        except ShardFormatError as e:
            lines.append(f"{split:<10} {e}")
            continue
        where = {"bytes/": f"sidecars in {SIDECAR_DIR}/", "beside": "sidecars beside the tokens (the records' layout)"}
        lines.append(
            f"{split:<10} {shards.num_tokens:,} tokens in {len(shards.counts)} shards "
            f"({shards.name}_{split}_NNNNNN.bin), {where.get(shards.sidecar_layout or '', 'no sidecars')}"
        )
    return lines


def describe_shard(path: Path, *, tokenizer: Tokenizer | None, count: int) -> list[str]:
    parsed = parse_shard_filename(path.name)
    kind = "file" if parsed is None else f"{'byte sidecar' if is_sidecar(path) else 'token shard'}, split {parsed[1]}"
    lines = [f"file       {path} ({kind}, {path.stat().st_size:,} bytes)"]
    try:
        n = read_header(path)
    except ShardFormatError as e:
        with open(path, "rb") as f:
            head = f.read(16)
        raw = np.frombuffer(head[: len(head) // 4 * 4], dtype="<i4")
        raise ShardFormatError(f"{e}; first header words: {raw.tolist()}") from None
    lines.append(f"header     magic 20240520, version 1, {n:,} tokens, {HEADER_WORDS - 3} reserved words zero: valid")
    values = np.asarray(load_shard(path))
    head = values[:count].tolist()
    if is_sidecar(path):
        lines.append(
            f"bytes      {int(values.sum(dtype=np.int64)):,} bytes over {n:,} tokens "
            f"({values.sum(dtype=np.int64) / max(n, 1):.3f} bytes/token), max {int(values.max(initial=0))}, "
            f"{int(np.count_nonzero(values == 0)):,} zero-byte tokens (BOS, operators)"
        )
        lines.append(f"first {len(head):<4} {head}")
        return lines
    lines.append(f"ids        min {int(values.min(initial=0))}, max {int(values.max(initial=0))}")
    if tokenizer is None:
        lines.append(f"first {len(head):<4} {head}")
        lines.append(f"(no tokenizer: pass --tokenizer, or keep {TOKENIZER_NAME} beside the shards, to decode)")
        return lines
    docs = int(np.count_nonzero(values == tokenizer.bos_id))
    lines.append(f"documents  {docs:,} start here (BOS {tokenizer.bos_id})")
    lines.append(f"first {len(head):<4} {head}")
    lines.append(f"pieces     {' '.join(repr(tokenizer.piece(i)) for i in head)}")
    lines.append(f"text       {tokenizer.decode(values[:count])!r}")
    return lines
