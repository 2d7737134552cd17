"""What each scored token counts in bytes: the validation split's sidecars, or the challenge scorer's formula.

Two byte counts (docs/bpb.md):
- ``exact``: the byte sidecar, i.e. the UTF-8 bytes of the original document text each token accounts for;
- ``official``: the challenge scorer's per-piece formula for SentencePiece vocabularies: a normal piece counts the
  UTF-8 length of its text with a leading ``▁`` counted as one byte unless the previous token is a control token
  (BOS), a byte-fallback piece counts 1, control/unknown/unused pieces 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from pgolf_data.shards import ShardSet

ByteMode = Literal["exact", "official"]


def load_val(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The validation tokens (int64) and their sidecar byte counts (None when the shards have no sidecars)."""
    shards = ShardSet.open(data_dir, "val")
    n = shards.num_tokens
    tokens = shards.read(0, n).astype(np.int64)
    return tokens, (shards.read(0, n, sidecar=True).astype(np.int64) if shards.has_bytes else None)


def official_byte_tables(sp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(base_bytes, has_leading_space, is_boundary)`` per id from a ``sentencepiece.SentencePieceProcessor``."""
    n = sp.vocab_size()
    base = np.zeros(n, dtype=np.int64)
    leading = np.zeros(n, dtype=bool)
    boundary = np.ones(n, dtype=bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("▁"):
            leading[i], piece = True, piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, leading, boundary


def official_byte_counts(tokens: np.ndarray, tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Bytes of each position's token as a target (position 0 has no predecessor and gets 0)."""
    base, leading, boundary = tables
    if tokens.size and tokens.max() >= len(base):
        raise ValueError(f"token id {int(tokens.max())} is outside the tokenizer's {len(base)} pieces")
    counts = np.zeros(tokens.size, dtype=np.int64)
    tgt, prev = tokens[1:], tokens[:-1]
    counts[1:] = base[tgt] + (leading[tgt] & ~boundary[prev])
    return counts


def sentencepiece_processor(tokenizer):
    """The SentencePiece model of a pgolf tokenizer, for the official byte formula."""
    import sentencepiece as spm

    if not hasattr(tokenizer, "model_proto"):
        raise ValueError(
            f"the official byte formula needs a SentencePiece tokenizer; this one is of kind {tokenizer.kind!r}"
        )
    return spm.SentencePieceProcessor(model_proto=tokenizer.model_proto())


def byte_counts(mode: ByteMode, tokens: np.ndarray, sidecar: np.ndarray | None, tokenizer, where: str) -> np.ndarray:
    """Per-position bytes of ``tokens`` (read from ``where``) in ``mode``: the sidecar, or the official formula."""
    if mode == "official":
        return official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(tokenizer)))
    if sidecar is None:
        raise ValueError(f"{where}: the val shards have no byte sidecars; use --bytes official")
    return sidecar
