"""Unigram and bigram cross-entropy of a held-out token stream, in bits per original byte.

The counts come from a training stream, the score from a held-out stream, both laid out as the shards hold them:
each document is ``[BOS, t1, ..., tn]`` and documents follow each other. Every position after the first is a target
(BOS included, as in the model's exact BPB: predicting where the next document starts costs bits but covers 0
bytes); the denominator is the original UTF-8 bytes of the held-out documents.

Smoothing rules (a held-out token never gets probability 0):

- unigram: additive (Lidstone) smoothing over the full vocabulary, ``p(b) = (c(b) + alpha) / (N + alpha V)``, with
  ``alpha = 0.5`` (the Krichevsky-Trofimov estimator) by default;
- bigram: interpolated absolute discounting (Ney, Essen & Kneser 1994), ``p(b | a) = (max(c(a,b) - D, 0) +
  D n(a) p(b)) / c(a)`` where ``c(a)`` counts bigrams starting with ``a``, ``n(a)`` the distinct tokens seen after
  ``a``, and ``p(b)`` is the smoothed unigram; an unseen context falls back to ``p(b)``. ``D = 0.75`` by default.

A model that beats these numbers has learned more than token frequencies (unigram) or one-token context (bigram);
they are cheap to compute for many tokenizers, which is what screening needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Smoothing:
    unigram_alpha: float = 0.5
    bigram_discount: float = 0.75

    def __post_init__(self) -> None:
        if not self.unigram_alpha > 0:
            raise ValueError(f"unigram_alpha must be > 0 (unseen tokens need probability), got {self.unigram_alpha}")
        if not 0 < self.bigram_discount <= 1:
            raise ValueError(f"bigram_discount must be in (0, 1] (counts stay >= 0), got {self.bigram_discount}")


def document_stream(encoded: list[np.ndarray], bos_id: int) -> np.ndarray:
    """``[BOS, ids...]`` for each document, concatenated (int64)."""
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    out = np.empty(int(lengths.sum()), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    out[starts] = bos_id
    for start, ids in zip(starts, encoded):
        out[start + 1 : start + 1 + len(ids)] = ids
    return out


def unigram_probs(train: np.ndarray, vocab_size: int, alpha: float) -> np.ndarray:
    counts = np.bincount(train[1:], minlength=vocab_size).astype(np.float64)
    return (counts + alpha) / (counts.sum() + alpha * vocab_size)


def unigram_bits(train: np.ndarray, heldout: np.ndarray, vocab_size: int, smoothing: Smoothing = Smoothing()) -> float:
    """Total bits of the held-out targets under the smoothed unigram model of ``train``."""
    _check(train, heldout, vocab_size)
    p = unigram_probs(train, vocab_size, smoothing.unigram_alpha)
    return float(-np.log2(p[heldout[1:]]).sum())


def bigram_bits(train: np.ndarray, heldout: np.ndarray, vocab_size: int, smoothing: Smoothing = Smoothing()) -> float:
    """Total bits of the held-out targets under the interpolated absolutely-discounted bigram model of ``train``."""
    _check(train, heldout, vocab_size)
    d = smoothing.bigram_discount
    p_uni = unigram_probs(train, vocab_size, smoothing.unigram_alpha)
    prev, nxt = train[:-1], train[1:]
    pairs, pair_counts = np.unique(prev * vocab_size + nxt, return_counts=True)
    context_total = np.bincount(prev, minlength=vocab_size).astype(np.float64)
    context_types = np.bincount(pairs // vocab_size, minlength=vocab_size).astype(np.float64)

    a, b = heldout[:-1], heldout[1:]
    keys = a * vocab_size + b
    where = np.minimum(np.searchsorted(pairs, keys), len(pairs) - 1)
    c_ab = np.where(pairs[where] == keys, pair_counts[where], 0).astype(np.float64)
    c_a = context_total[a]
    seen = c_a > 0
    p = p_uni[b].copy()
    p[seen] = (np.maximum(c_ab[seen] - d, 0.0) + d * context_types[a[seen]] * p_uni[b[seen]]) / c_a[seen]
    return float(-np.log2(p).sum())


def _check(train: np.ndarray, heldout: np.ndarray, vocab_size: int) -> None:
    for name, stream in (("training", train), ("held-out", heldout)):
        if stream.size < 2:
            raise ValueError(f"the {name} stream has {stream.size} tokens; at least 2 are needed (one target)")
        if stream.min() < 0 or stream.max() >= vocab_size:
            raise ValueError(
                f"the {name} stream has ids in [{stream.min()}, {stream.max()}], outside [0, {vocab_size})"
            )
