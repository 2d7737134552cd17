"""Training any tokenizer kind from a document stream: sample selection, limits and the training report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .base import Tokenizer, TokenizerError
from .spec import TokenizerSpec


@dataclass
class TrainingSample:
    """The documents a trainer sees, after the spec's preprocessing and sample limits."""

    texts: list[str]
    sizes: list[int]  # each text's UTF-8 length
    stats: dict = field(default_factory=dict)


def official_preprocess(text: str) -> str:
    """The challenge trainer's input: NUL replaced by a space, surrounding whitespace stripped."""
    return text.replace("\x00", " ").strip()


def collect_sample(
    docs: Iterable[str], spec: TokenizerSpec, progress: Callable[[int], None] | None = None
) -> TrainingSample:
    """Take documents until ``spec.train_docs`` documents or ``spec.train_bytes`` UTF-8 bytes (whole documents)."""
    texts: list[str] = []
    sizes: list[int] = []
    n_bytes = n_read = n_empty = 0
    for doc in docs:
        if spec.train_docs is not None and len(texts) >= spec.train_docs:
            break
        if spec.train_bytes is not None and n_bytes >= spec.train_bytes:
            break
        n_read += 1
        if spec.preprocess == "official":
            doc = official_preprocess(doc)
        if not doc:
            n_empty += 1
            continue
        try:
            size = len(doc.encode("utf-8"))
        except UnicodeEncodeError as e:  # a lone surrogate: corpus files are checked on reading, lists are not
            raise TokenizerError(
                f"document {n_read - 1}: not valid Unicode text (character {e.start}: {e.reason})"
            ) from None
        texts.append(doc)
        sizes.append(size)
        n_bytes += size
        if progress is not None:
            progress(size)
    if not texts:
        raise TokenizerError(
            f"the corpus gave no non-empty documents to train on ({n_read} read, {n_empty} empty after preprocessing)"
        )
    return TrainingSample(
        texts, sizes, {"docs_read": n_read, "docs_empty": n_empty, "docs": len(texts), "bytes": n_bytes}
    )


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def train(
    spec: TokenizerSpec,
    docs: Iterable[str],
    *,
    num_threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tokenizer, dict]:
    """Train ``spec`` on ``docs``; return the tokenizer and a report of what it was trained on."""
    from . import kind_class

    cls = kind_class(spec.kind)
    cls.check_spec(spec)
    sample = collect_sample(docs, spec, progress)
    start = time.perf_counter()
    tok, trainer_stats = cls.train(spec, sample.texts, num_threads=num_threads or default_threads(), sizes=sample.sizes)
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
        "trained_on": sample.stats,
        "trainer": trainer_stats,
        "train_seconds": round(seconds, 3),
    }
    return tok, report
