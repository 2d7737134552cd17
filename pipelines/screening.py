"""Screening: many tokenizer specs compared without training a model.

For each spec: train the tokenizer on the training documents (cached stage), encode the validation documents with
exact byte counts and a sample of the training documents, and report tokens per byte and the unigram and bigram
cross-entropy of the validation stream in bits per original byte (``pipelines.ngram`` states the smoothing). The
n-gram numbers are what a model that only knows token frequencies (or one token of context) would score, so they rank
tokenizers before any GPU time is spent; they are not the BPB a trained model reaches.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pgolf_data.tokenizer import Tokenizer, TokenizerSpec, artifact

from .cache import StageCache, read_json, source_hash, write_json
from .documents import CorpusSplit
from .ngram import Smoothing, bigram_bits, document_stream, unigram_bits
from .stages import TOKENIZER_DIR, tokenizer_sha256, tokenizer_stage

RESULT_NAME = "result.json"
ENCODE_BATCH_DOCS = 512
DEFAULT_SAMPLE_BYTES = 64_000_000


@dataclass(frozen=True)
class ScreenConfig:
    # Training-part text whose token stream gives the n-gram counts; None = all of it. Whole documents are taken
    # until the cap is reached, so the sample is the same text for every spec. The cap bounds time and memory (the
    # bigram counts sort every token pair of the sample) on a full-size corpus.
    sample_bytes: int | None = DEFAULT_SAMPLE_BYTES
    smoothing: Smoothing = field(default_factory=Smoothing)

    def __post_init__(self) -> None:
        if self.sample_bytes is not None and self.sample_bytes <= 0:
            raise ValueError(f"sample_bytes must be a positive number of bytes, got {self.sample_bytes}")


def take_bytes(docs: Iterable[str], limit: int | None) -> Iterator[str]:
    """Whole documents until ``limit`` UTF-8 bytes have been taken (all of them when ``limit`` is None)."""
    taken = 0
    for doc in docs:
        if limit is not None and taken >= limit:
            return
        taken += len(doc.encode("utf-8"))
        yield doc


def batched(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(docs)
    while batch := list(itertools.islice(it, size)):
        yield batch


def _encode_ids(tok: Tokenizer, docs: Iterable[str]) -> tuple[list[np.ndarray], int]:
    """Token ids per document, encoded in batches, and the UTF-8 bytes of those documents."""
    encoded: list[np.ndarray] = []
    n_bytes = 0
    for batch in batched(docs, ENCODE_BATCH_DOCS):
        encoded.extend(tok.encode_batch(batch))
        n_bytes += sum(len(doc.encode("utf-8")) for doc in batch)
    return encoded, n_bytes


def _encode_val(tok: Tokenizer, docs: Iterable[str]) -> tuple[list[np.ndarray], int]:
    """Validation ids and the exact original bytes they cover (sum of the per-token byte counts)."""
    ids: list[np.ndarray] = []
    n_bytes = 0
    for batch in batched(docs, ENCODE_BATCH_DOCS):
        for doc, (doc_ids, counts) in zip(batch, tok.encode_with_bytes(batch)):
            covered = int(counts.sum())
            expected = len(doc.encode("utf-8"))
            if covered != expected:
                raise ValueError(
                    f"tokenizer {tok.spec.name!r}: validation document {len(ids)}: byte counts sum to {covered}, "
                    f"but the document has {expected} UTF-8 bytes"
                )
            ids.append(doc_ids)
            n_bytes += covered
    return ids, n_bytes


def screen_tokenizer(tok: Tokenizer, val_docs: Iterable[str], train_docs: Iterable[str], config: ScreenConfig) -> dict:
    """Tokens per byte and n-gram BPB of one tokenizer (no caching: the computation itself)."""
    start = time.perf_counter()
    val_ids, val_bytes = _encode_val(tok, val_docs)
    train_ids, train_bytes = _encode_ids(tok, take_bytes(train_docs, config.sample_bytes))
    encode_seconds = time.perf_counter() - start
    val_stream = document_stream(val_ids, tok.bos_id)
    train_stream = document_stream(train_ids, tok.bos_id)
    val_tokens = int(sum(len(ids) for ids in val_ids))
    return {
        "val": {
            "docs": len(val_ids),
            "bytes": val_bytes,
            "tokens": val_tokens,  # without BOS, as tokens per byte is usually quoted
            "tokens_per_byte": val_tokens / val_bytes,
            "targets": int(val_stream.size - 1),
        },
        "count_sample": {
            "docs": len(train_ids),
            "bytes": train_bytes,
            "tokens": int(sum(len(ids) for ids in train_ids)),
        },
        "unigram_bpb": unigram_bits(train_stream, val_stream, tok.vocab_size, config.smoothing) / val_bytes,
        "bigram_bpb": bigram_bits(train_stream, val_stream, tok.vocab_size, config.smoothing) / val_bytes,
        "smoothing": asdict(config.smoothing),
        "encode_seconds": round(encode_seconds, 3),
    }


def screen_stage(
    cache: StageCache, tokenizer_dir: Path, split: CorpusSplit, config: ScreenConfig, *, label: str = ""
) -> Path:
    inputs = {
        "tokenizer_sha256": tokenizer_sha256(tokenizer_dir),
        "docs": split.content_key(),
        "sample_bytes": config.sample_bytes,
        "smoothing": asdict(config.smoothing),
        "code": source_hash("pipelines.ngram", "pipelines.screening", "pgolf_data.tokenizer"),
    }

    def build(tmp: Path) -> None:
        tok = artifact.load(tokenizer_dir / TOKENIZER_DIR)
        write_json(tmp / RESULT_NAME, screen_tokenizer(tok, split.val(), split.train(), config))

    return cache.run("screen", inputs, build, label=label)


def screen(
    specs: list[TokenizerSpec],
    split: CorpusSplit,
    cache: StageCache,
    config: ScreenConfig = ScreenConfig(),
    *,
    threads: int = 1,
    log: Callable[[str], None] = lambda message: None,
) -> list[dict]:
    """One row per spec: what it is, its artifact bytes, tokens per byte, unigram and bigram BPB, and timings."""
    rows = []
    for spec in specs:
        start = time.perf_counter()
        tok_dir = tokenizer_stage(cache, spec, split, threads=threads)
        trained = time.perf_counter()
        result = read_json(screen_stage(cache, tok_dir, split, config, label=spec.name) / RESULT_NAME)
        report = artifact.load_report(tok_dir / TOKENIZER_DIR)
        row = {
            "spec": spec.name,
            "kind": spec.kind,
            "vocab_size": report["vocab_size"],
            "lossless": report["lossless"],
            "tokenizer_bytes": report["artifact"]["bytes"],
            "tokenizer_train_seconds": report["train_seconds"],
            **result,
            "seconds": {"tokenizer": round(trained - start, 3), "screen": round(time.perf_counter() - trained, 3)},
        }
        log(
            f"{spec.name}: {row['val']['tokens_per_byte']:.4f} tokens/byte, unigram {row['unigram_bpb']:.4f} BPB, "
            f"bigram {row['bigram_bpb']:.4f} BPB ({row['seconds']['tokenizer'] + row['seconds']['screen']:.1f} s)"
        )
        rows.append(row)
    return rows
