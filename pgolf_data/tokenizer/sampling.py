"""A deterministic sample of a corpus larger than memory, drawn in one streaming pass: hash-based bottom-k.

Each document gets a priority, a keyed 64-bit BLAKE2b hash of its text (``seed`` picks the key); the sample is the
longest run of documents in priority order (ties by corpus position) that fits the byte budget (and the document
budget, if any). One pass keeps that run in a heap: a new document enters if its priority is below the cutoff, and
documents of the highest priority leave while the run is over budget, each lowering the cutoff to its own priority.
Memory is the budget plus one document; a document larger than the whole budget could never fit and is skipped.

Why hash-based rather than a random reservoir: the choice needs no random state and is the same whatever reads the
corpus (one process or many, any order); a document's fate depends only on its text, the seed and the budget, so
the same document is in or out in every corpus where the cutoff falls alike, and duplicates go together. Every
document has the same chance, so the sample's text mirrors the corpus' (a share of bytes in the corpus is, in
expectation, the same share of the sample). The kept documents are handed to the trainer in corpus order.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass

PRIORITY_BITS = 64


def priority(text: str, key: bytes) -> int:
    """A document's place in the sampling order: its keyed 64-bit hash."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8, key=key).digest(), "little")


def sample_key(seed: int) -> bytes:
    return b"pgolf-sample" + seed.to_bytes(8, "little", signed=False)


@dataclass
class HashSample:
    texts: list[str]  # the kept documents, in corpus order
    sizes: list[int]  # their UTF-8 lengths
    seen_docs: int  # documents offered
    seen_bytes: int
    too_large: int  # documents larger than the whole byte budget, skipped
    share: float  # the cutoff as a share of the priority range: the chance a document had to be kept


def hash_sample(
    docs: Iterable[tuple[str, int]], max_bytes: int | None, max_docs: int | None, seed: int = 0
) -> HashSample:
    """The bottom-k sample of ``docs`` (``(text, UTF-8 size)`` pairs) within ``max_bytes`` and ``max_docs``."""
    if max_bytes is None and max_docs is None:
        raise ValueError("a hash sample needs a budget: a number of bytes, of documents, or both")
    key = sample_key(seed)
    heap: list[tuple[int, int, int, str]] = []  # (-priority, -index, size, text): the top is the one to leave
    cutoff: tuple[int, int] | None = None
    kept_bytes = seen_docs = seen_bytes = too_large = 0
    for index, (text, size) in enumerate(docs):
        seen_docs += 1
        seen_bytes += size
        if max_bytes is not None and size > max_bytes:
            too_large += 1
            continue
        rank = (priority(text, key), index)
        if cutoff is not None and rank >= cutoff:
            continue
        heapq.heappush(heap, (-rank[0], -rank[1], size, text))
        kept_bytes += size
        while (max_bytes is not None and kept_bytes > max_bytes) or (max_docs is not None and len(heap) > max_docs):
            p, i, s, _ = heapq.heappop(heap)
            kept_bytes -= s
            cutoff = (-p, -i)
    kept = sorted(heap, key=lambda entry: -entry[1])
    share = 1.0 if cutoff is None else cutoff[0] / 2**PRIORITY_BITS
    return HashSample([e[3] for e in kept], [e[2] for e in kept], seen_docs, seen_bytes, too_large, share)
