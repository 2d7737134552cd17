"""Training any tokenizer kind from a document stream: sample selection, limits and the training report.

Two samples, both after the spec's preprocessing, empty documents skipped:

- ``first`` (the default, and what the challenge's trainer does): the corpus' first documents, up to the spec's
  ``train_docs`` / ``train_bytes``. Kinds that train from an iterator (the HF kinds: ``streams_training``) get the
  documents as they are read, so the corpus is never held in memory; the others get them as a list.
- ``hash``: a deterministic sample of the whole corpus within those budgets, drawn in one streaming pass
  (sampling.py), for a corpus larger than memory whose first documents would not represent it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from .base import Tokenizer, TokenizerError
from .sampling import hash_sample
from .spec import TokenizerSpec

SampleMethod = Literal["first", "hash"]


@dataclass
class TrainingSample:
    """The documents a trainer sees, after the spec's preprocessing and sample limits."""

    texts: list[str]
    sizes: list[int]  # each text's UTF-8 length
    stats: dict = field(default_factory=dict)


def official_preprocess(text: str) -> str:
    """The challenge trainer's input: NUL replaced by a space, surrounding whitespace stripped."""
    return text.replace("\x00", " ").strip()


def _prepared(
    docs: Iterable[str], spec: TokenizerSpec, stats: dict, progress: Callable[[int], None] | None, *, limits: bool
) -> Iterator[tuple[str, int]]:
    """``(text, UTF-8 size)`` of each document after the spec's preprocessing, empty ones skipped, counted in
    ``stats``; with ``limits``, until ``spec.train_docs`` documents or ``spec.train_bytes`` bytes (whole documents)."""
    for doc in docs:
        if limits and spec.train_docs is not None and stats["docs"] >= spec.train_docs:
            break
        if limits and spec.train_bytes is not None and stats["bytes"] >= spec.train_bytes:
            break
        stats["docs_read"] += 1
        if spec.preprocess == "official":
            doc = official_preprocess(doc)
        if not doc:
            stats["docs_empty"] += 1
            continue
        try:
            size = len(doc.encode("utf-8"))
        except UnicodeEncodeError as e:  # a lone surrogate: corpus files are checked on reading, lists are not
            raise TokenizerError(
                f"document {stats['docs_read'] - 1}: not valid Unicode text (character {e.start}: {e.reason})"
            ) from None
        stats["docs"] += 1
        stats["bytes"] += size
        if progress is not None:
            progress(size)
        yield doc, size


def _new_stats() -> dict:
    return {"docs_read": 0, "docs_empty": 0, "docs": 0, "bytes": 0}


def _check_not_empty(stats: dict) -> None:
    if not stats["docs"]:
        raise TokenizerError(
            f"the corpus gave no non-empty documents to train on ({stats['docs_read']} read, {stats['docs_empty']} "
            "empty after preprocessing)"
        )


def collect_sample(
    docs: Iterable[str], spec: TokenizerSpec, progress: Callable[[int], None] | None = None
) -> TrainingSample:
    """Take documents until ``spec.train_docs`` documents or ``spec.train_bytes`` UTF-8 bytes (whole documents)."""
    stats = _new_stats()
    texts, sizes = [], []
    for text, size in _prepared(docs, spec, stats, progress, limits=True):
        texts.append(text)
        sizes.append(size)
    _check_not_empty(stats)
    return TrainingSample(texts, sizes, stats)


class StreamedSample:
    """``collect_sample``'s documents, handed out as they are read (once); ``stats`` fill in as they go."""

    def __init__(self, docs: Iterable[str], spec: TokenizerSpec, progress: Callable[[int], None] | None) -> None:
        self.stats = _new_stats()
        self._texts = (text for text, _ in _prepared(docs, spec, self.stats, progress, limits=True))

    def __iter__(self) -> Iterator[str]:
        return self._texts


def collect_hash_sample(
    docs: Iterable[str], spec: TokenizerSpec, seed: int = 0, progress: Callable[[int], None] | None = None
) -> TrainingSample:
    """A hash sample of the whole corpus within ``spec.train_bytes`` / ``spec.train_docs`` (sampling.py)."""
    if spec.train_bytes is None and spec.train_docs is None:
        raise TokenizerError("a hash sample needs a budget: --train-bytes and/or --train-docs (or the spec's)")
    seen = _new_stats()
    drawn = hash_sample(_prepared(docs, spec, seen, progress, limits=False), spec.train_bytes, spec.train_docs, seed)
    stats = {
        "docs_read": seen["docs_read"],
        "docs_empty": seen["docs_empty"],
        "docs": len(drawn.texts),
        "bytes": sum(drawn.sizes),
        "sample": "hash",
        "sample_seed": seed,
        "sample_of_docs": seen["docs"],
        "sample_of_bytes": seen["bytes"],
        "sample_share": round(drawn.share, 6),
        "sample_too_large": drawn.too_large,
    }
    _check_not_empty(stats)
    return TrainingSample(drawn.texts, drawn.sizes, stats)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def train(
    spec: TokenizerSpec,
    docs: Iterable[str],
    *,
    num_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    sample: SampleMethod = "first",
    seed: int = 0,
) -> tuple[Tokenizer, dict]:
    """Train ``spec`` on ``docs``; return the tokenizer and a report of what it was trained on.

    ``sample``: "first" or "hash" (module docstring); ``seed`` keys the hash sample.
    """
    from . import kind_class

    cls = kind_class(spec.kind)
    cls.check_spec(spec)
    threads = num_threads or default_threads()
    if sample == "hash" or not cls.streams_training:
        chosen = (
            collect_hash_sample(docs, spec, seed, progress)
            if sample == "hash"
            else collect_sample(docs, spec, progress)
        )
        start = time.perf_counter()
        tok, trainer_stats = cls.train(spec, chosen.texts, num_threads=threads, sizes=chosen.sizes)
        stats = chosen.stats
    else:  # the trainer reads the documents as they stream: the seconds include reading them
        streamed = StreamedSample(docs, spec, progress)
        start = time.perf_counter()
        tok, trainer_stats = cls.train(spec, streamed, num_threads=threads)
        stats = streamed.stats
        _check_not_empty(stats)
    seconds = time.perf_counter() - start
    if tok.vocab_size < spec.vocab_size:
        raise TokenizerError(
            f"the training text supports only {tok.vocab_size} tokens, fewer than vocab_size {spec.vocab_size}: "
            f"use more text (--train-docs/--train-bytes, a larger corpus) or a smaller --vocab"
        )
    report = {
        "spec": spec.to_dict(),
        "kind": spec.kind,
        "vocab_size": tok.vocab_size,
        "lossless": tok.lossless,
        "trained_on": stats,
        "trainer": trainer_stats,
        "train_seconds": round(seconds, 3),
    }
    return tok, report
