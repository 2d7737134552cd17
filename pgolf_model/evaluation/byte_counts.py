"""What each scored token counts in bytes: the validation split's sidecars, or the official scorer's rule.

Two byte counts (docs/bpb.md):
- ``exact``: pgolf's byte sidecar, i.e. the UTF-8 bytes of the original document text each token accounts for;
- ``official``: what the official eval counts. For a SentencePiece vocabulary that is the challenge scorer's per-piece
  formula: a normal piece counts the UTF-8 length of its text with a leading ``▁`` counted as one byte unless the
  previous token is a control token (BOS), a byte-fallback piece counts 1, control/unknown/unused pieces 0. The CaseOps
  records replace that formula with their byte sidecar (the formula knows nothing of the transform), so for a CaseOps
  tokenizer the official count is the sidecar.

``val_bytes`` loads the validation stream with both, as the shard folder allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgolf_data.shards import ShardFormatError, ShardSet

FORMULA = "SentencePiece piece formula"


@dataclass(frozen=True)
class ValBytes:
    """The validation tokens (int64) and what each counts in bytes for each number, where it can be known."""

    tokens: np.ndarray
    exact: np.ndarray | None  # pgolf's sidecar: every original byte
    official: np.ndarray | None  # the official eval's count (module docstring)
    official_rule: str = ""


def load_val(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The validation tokens (int64) and their sidecar byte counts (None when the shards have no sidecars)."""
    shards = ShardSet.open(data_dir, "val")
    n = shards.num_tokens
    tokens = shards.read(0, n).astype(np.int64)
    return tokens, (shards.read(0, n, sidecar=True).astype(np.int64) if shards.has_bytes else None)


def val_bytes(data_dir: str | Path, tokenizer, *, exact_sidecars: bool) -> ValBytes:
    """The val split of ``data_dir`` with its exact bytes (its sidecars, when ``exact_sidecars``: pgolf's) and the
    official ones for ``tokenizer`` (a SentencePiece-based one; other kinds have no official count)."""
    tokens, sidecar = load_val(data_dir)
    exact = sidecar if exact_sidecars else None
    official, rule = None, ""
    if tokenizer.kind == "caseops-sp" and sidecar is not None:
        whose = "pgolf's" if exact_sidecars else "the records'"
        official, rule = sidecar, f"byte sidecar ({whose}), as the CaseOps records score"
    elif tokenizer.kind == "sentencepiece":
        official, rule = official_byte_counts(tokens, official_byte_tables(sentencepiece_processor(tokenizer))), FORMULA
    if exact is None and official is None:
        raise ShardFormatError(
            f"{data_dir}: the val split has no exact byte sidecars and no official byte count exists for a "
            f"{tokenizer.kind} tokenizer; add them with pgolf-data sidecars --tokenizer T --corpus SRC {data_dir}"
        )
    return ValBytes(tokens, exact, official, rule)


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
