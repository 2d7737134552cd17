"""What a tokenizer does to a text sample: tokens per byte, round-trip exactness, operator share, throughput."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .base import Tokenizer


def measure(tok: Tokenizer, docs: Sequence[str]) -> dict:
    """Encode ``docs`` once (timed), check byte counts and the decode round trip on each."""
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    start = time.perf_counter()
    encoded = tok.encode_with_bytes(docs)
    seconds = time.perf_counter() - start
    n_tokens = sum(len(ids) for ids, _ in encoded)
    byte_sums_ok = all(int(counts.sum()) == len(d.encode("utf-8")) for d, (_, counts) in zip(docs, encoded))
    roundtrip = sum(tok.decode(ids) == d for d, (ids, _) in zip(docs, encoded))
    out = {
        "docs": len(docs),
        "bytes": n_bytes,
        "tokens": n_tokens,
        "tokens_per_byte": n_tokens / n_bytes if n_bytes else float("nan"),
        "bytes_per_token": n_bytes / n_tokens if n_tokens else float("nan"),
        "byte_counts_exact": byte_sums_ok,
        "roundtrip_docs": roundtrip,
        "encode_mb_per_s": n_bytes / 1e6 / seconds if seconds > 0 else float("inf"),
    }
    operator_ids = getattr(tok, "operator_ids", None)
    if operator_ids:
        ops = np.fromiter(operator_ids.values(), dtype=np.int64)
        n_ops = sum(int(np.isin(ids, ops).sum()) for ids, _ in encoded)
        out["operator_tokens"] = n_ops
        out["operator_share"] = n_ops / n_tokens if n_tokens else 0.0
    return out
