"""Validation documents that occur in the training shards with small edits: token n-gram overlap.

The whole-document sha256 of ``check.check_leak`` misses a validation document that reached training with a word
changed, a prefix cut or a different line ending (challenge issue #2127: 80% of val documents in training, many of them
re-crawled variants). Here every val document keeps a fixed sample of its token n-grams: the ``SAMPLES`` smallest of
its n-grams' 64-bit hashes, a bottom-k MinHash sketch, so each document gets the same number of probes whatever its
length and the same n-gram is chosen wherever it occurs. An n-gram is ``NGRAM`` = 13 tokens (the length of the GPT-3
and Llama contamination studies), or enough tokens to span ``NGRAM_BYTES`` for a tokenizer with short tokens (32 for
a byte-level one: 13 bytes match across unrelated pages). The train split is then streamed chunk by chunk, every
n-gram hashed and looked up in the sorted sketch; memory is the sketch (16 bytes per sample) plus one chunk.

A val document is a near-duplicate when at least ``DOC_SHARE`` of its sampled n-grams occur in training: one changed
word in a 200-token document removes at most 13 of its ~190 n-grams, while unrelated pages share only boilerplate.
Web text has some near-duplicates of its own (template pages, syndicated articles: 3 of the dev corpus's first 1,000
documents against the rest, ``bench/leak_check.py``), so the check fails above ``DOCS_LIMIT`` of the val documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pgolf_data.shards import ShardSet

NGRAM = 13
NGRAM_BYTES = 32  # an n-gram spans at least this many bytes: 13 sp1024 tokens; byte-level tokenizers need 32 ids
SAMPLES = 32  # sampled n-grams per val document
DOC_SHARE = 0.5  # a val document whose sampled n-grams occur in training at least this often is a near-duplicate
DOCS_LIMIT = 0.01  # FAIL above this share of near-duplicate val documents (web text has a few: 0.3% of the dev corpus)
CHUNK = 1 << 22  # train tokens hashed at a time
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants (splitmix64) for the polynomial hash and its mixing
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFT = np.uint64(40)  # the prefilter's table: one byte for each of the 2**24 values of a hash's top bits


def ngram_length(bytes_per_token: float | None) -> int:
    """Tokens per n-gram: ``NGRAM``, or more for a tokenizer whose tokens are short (a byte-level one: 32)."""
    if not bytes_per_token:
        return NGRAM
    return max(NGRAM, math.ceil(NGRAM_BYTES / bytes_per_token))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: the hashes' order becomes random, so a bottom-k sample is a uniform one."""
    h = h ^ (h >> np.uint64(30))
    h *= _MIX1
    h ^= h >> np.uint64(27)
    h *= _MIX2
    return h ^ (h >> np.uint64(31))


def ngram_hashes(tokens: np.ndarray, n: int = NGRAM) -> np.ndarray:
    """64-bit hash of each window ``tokens[i : i + n]`` (``len - n + 1`` of them): the polynomial
    ``sum_j (t[i+j] + 1) * M**(n-1-j)`` mod 2**64, built by doubling (windows of 1, 2, 4, ... tokens joined as
    ``H[a+b][i] = H[a][i] * M**b + H[b][i+a]``) in O(log n) array passes rather than n, then mixed."""
    if len(tokens) < n:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        power = {1: tokens.astype(np.uint64) + np.uint64(1)}  # window length -> hashes of every such window
        w = 1
        while 2 * w <= n:
            h = power[w]
            power[2 * w] = h[: len(h) - w] * (_MULT ** np.uint64(w)) + h[w:]
            w *= 2
        out, length = None, 0
        for w in sorted(power, reverse=True):  # n's binary digits, longest window first
            if n - length >= w:
                h = power[w]
                out = h if out is None else out[: len(out) - w] * (_MULT ** np.uint64(w)) + h[length:]
                length += w
        return _mix(out[: len(tokens) - n + 1])


@dataclass(frozen=True)
class Sketch:
    """The sampled n-grams of the val documents: ``hashes`` sorted and unique, ``doc[i]`` / ``hash_of[i]`` entry i's
    document and the index of its hash in ``hashes`` (entries in document order); ``per_doc`` samples of each
    document (0: shorter than n)."""

    hashes: np.ndarray
    doc: np.ndarray
    hash_of: np.ndarray
    per_doc: np.ndarray


def _bottom(doc: np.ndarray, h: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest distinct hashes of each document, sorted by (document, hash)."""
    order = np.lexsort((h, doc))
    doc, h = doc[order], h[order]
    distinct = np.r_[True, (doc[1:] != doc[:-1]) | (h[1:] != h[:-1])] if len(h) else np.zeros(0, dtype=bool)
    doc, h = doc[distinct], h[distinct]
    group = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]]) if len(doc) else np.zeros(0, dtype=np.int64)
    rank = np.arange(len(doc)) - np.repeat(group, np.diff(np.r_[group, len(doc)]))
    return doc[rank < k], h[rank < k]


def sketch(val: ShardSet, bos_id: int, samples: int = SAMPLES, n: int = NGRAM) -> Sketch:
    """The bottom-``samples`` distinct n-gram hashes of each val document (its n-grams holding no BOS), streamed
    chunk by chunk; a document cut by a chunk boundary keeps the bottom of both parts' candidates."""
    docs, found = [], []
    carry, bos_before = np.zeros(0, dtype=np.uint16), 0  # BOS tokens before the window
    for _, chunk, _ in val.chunks(CHUNK):
        tokens = np.concatenate([carry, chunk])
        seen = bos_before + np.concatenate([[0], np.cumsum(tokens == bos_id, dtype=np.int64)])
        h = ngram_hashes(tokens, n)
        inside = (seen[n : n + len(h)] - seen[: len(h)] == 0) & (seen[1 : len(h) + 1] > 0)
        doc, h = _bottom(seen[1 : len(h) + 1][inside] - 1, h[inside], samples)  # window i follows BOS seen[i+1]
        docs.append(doc)
        found.append(h)
        keep = min(len(tokens), n - 1)
        carry, bos_before = tokens[len(tokens) - keep :], int(seen[len(tokens) - keep])
    n_docs = int(seen[-1]) if docs else 0
    doc, h = _bottom(np.concatenate(docs or [np.zeros(0, np.int64)]), np.concatenate(found or [np.zeros(0, np.uint64)]),
                     samples)  # fmt: skip
    hashes, hash_of = np.unique(h, return_inverse=True)
    return Sketch(hashes, doc, hash_of.ravel(), np.bincount(doc, minlength=n_docs))


@dataclass(frozen=True)
class Overlap:
    """Per val document: the share of its sampled n-grams found in training (NaN: too short to sample), and where the
    first found one of each occurs (train shard index and token offset in it, -1 when none)."""

    share: np.ndarray
    shard: np.ndarray
    offset: np.ndarray

    def near_duplicates(self, threshold: float = DOC_SHARE) -> np.ndarray:
        return np.flatnonzero(np.nan_to_num(self.share, nan=0.0) >= threshold)


def overlap(val: ShardSet, train: ShardSet, bos_id: int, samples: int = SAMPLES, n: int = NGRAM) -> Overlap:
    """Stream ``train`` once and find which sampled val n-grams occur in it (``Overlap``)."""
    sk = sketch(val, bos_id, samples, n)
    first = np.full(len(sk.hashes), -1, dtype=np.int64)  # global train position of each hash's first occurrence
    if len(sk.hashes):
        table = np.zeros(1 << (64 - int(_SHIFT)), dtype=bool)  # which top bits the sketch's hashes have
        table[sk.hashes >> _SHIFT] = True
        carry = np.zeros(0, dtype=np.uint16)
        for start, tokens, _ in train.chunks(CHUNK):
            window = np.concatenate([carry, tokens])
            h = ngram_hashes(window, n)
            maybe = np.flatnonzero(table[h >> _SHIFT])  # most train n-grams stop at the table
            at = np.searchsorted(sk.hashes, h[maybe]).clip(max=len(sk.hashes) - 1)
            equal = sk.hashes[at] == h[maybe]
            hit, at = maybe[equal], at[equal]
            fresh = first[at] < 0
            idx, pos = np.unique(at[fresh], return_index=True)  # the first position of each newly found hash
            first[idx] = hit[fresh][pos] + start - len(carry)
            carry = window[len(window) - (n - 1) :] if len(window) >= n - 1 else window
    found = first[sk.hash_of] >= 0
    hits = np.bincount(sk.doc, weights=found, minlength=len(sk.per_doc))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(sk.per_doc > 0, hits / np.maximum(sk.per_doc, 1), np.nan)
    where = np.full(len(sk.per_doc), -1, dtype=np.int64)
    hit_entries = np.flatnonzero(found)
    docs, firsts = np.unique(sk.doc[hit_entries], return_index=True)  # entries are in document order
    where[docs] = first[sk.hash_of[hit_entries[firsts]]]
    offsets = train.offsets
    shard = np.where(where >= 0, np.searchsorted(offsets, where, side="right") - 1, -1)
    offset = np.where(where >= 0, where - offsets[shard.clip(min=0)], -1)
    return Overlap(share, shard, offset)
