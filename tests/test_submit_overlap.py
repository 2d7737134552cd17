"""``submit --check``'s near-duplicate leak check (``submission.overlap``): the n-gram hashes and the per-document
sample against brute force, and a val document that reached training with one word changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import byte_tokenizer, encode_stream, make_dataset, write_split

from pgolf_data.shards import ShardSet
from pgolf_model.runtime import Runtime
from pgolf_model.submission import overlap
from pgolf_model.submission.check import Report, check_near_duplicates

RT = Runtime(torch.device("cpu"))
MASK = (1 << 64) - 1


def reference_hash(window) -> int:
    """The polynomial hash of one window and splitmix64's finalizer, in Python integers."""
    h = 0
    for t in window:
        h = (h * int(overlap._MULT) + int(t) + 1) & MASK
    h ^= h >> 30
    h = (h * int(overlap._MIX1)) & MASK
    h ^= h >> 27
    h = (h * int(overlap._MIX2)) & MASK
    return h ^ (h >> 31)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 65535), min_size=0, max_size=80), st.integers(1, 40))
def test_ngram_hashes_match_a_window_by_window_reference(tokens, n):
    got = overlap.ngram_hashes(np.array(tokens, dtype=np.uint16), n)
    expected = [reference_hash(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    assert got.tolist() == expected


def write_val(directory: Path, docs: list[np.ndarray], bos: int) -> ShardSet:
    stream = np.concatenate([np.r_[bos, d] for d in docs]).astype(np.int64)
    write_split(directory, "val", stream, np.ones_like(stream), shards=3)
    return ShardSet.open(directory, "val")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(2, 40), max_size=60), min_size=1, max_size=8), st.integers(1, 6))
def test_sketch_is_each_documents_bottom_k_across_chunk_and_shard_boundaries(tmp_path_factory, docs, samples):
    directory = tmp_path_factory.mktemp("sketch")
    val = write_val(directory, [np.array(d, dtype=np.int64) for d in docs], bos=1)
    n = 3
    original = overlap.CHUNK
    overlap.CHUNK = 7  # many chunk boundaries inside documents
    try:
        sk = overlap.sketch(val, 1, samples, n)
    finally:
        overlap.CHUNK = original
    for i, d in enumerate(docs):
        expected = sorted({reference_hash(d[j : j + n]) for j in range(len(d) - n + 1)})[:samples]
        assert sorted(sk.hashes[sk.hash_of[sk.doc == i]].tolist()) == expected
        assert sk.per_doc[i] == len(expected)


@pytest.fixture(scope="module")
def docs(dev_docs):
    return [d for d in dict.fromkeys(dev_docs) if len(d) > 400][:240]


def edited(doc: str) -> str:
    """``doc`` with one word replaced and its first line dropped: a re-crawled copy, no longer byte-identical."""
    words = doc.split(" ")
    words[len(words) // 2] = "zebra"
    text = " ".join(words)
    return text[text.index("\n") + 1 :] if "\n" in text[: len(text) // 4] else text[20:]


def run_check(data: Path) -> str:
    report = Report(data)
    check_near_duplicates(data, byte_tokenizer().bos_id, byte_tokenizer(), report)
    (line,) = report.lines
    return str(line)


def brute_shares(val_docs: list[str], train_docs: list[str], n: int = 32) -> np.ndarray:
    """Per val document, the share of all its n-byte substrings (the byte tokenizer's n-grams) found in training."""
    seen = {t[i : i + n] for t in (d.encode() for d in train_docs) for i in range(len(t) - n + 1)}
    out = []
    for v in (d.encode() for d in val_docs):
        grams = {v[i : i + n] for i in range(len(v) - n + 1)}
        out.append(len(grams & seen) / len(grams))
    return np.array(out)


def test_a_lightly_edited_val_document_in_train_fails_and_is_located(docs, tmp_path):
    val_docs, train_docs = docs[:40], docs[40:]
    data, _ = make_dataset(tmp_path / "clean", train_docs, val_docs)
    val, train = ShardSet.open(data, "val"), ShardSet.open(data, "train")
    found = overlap.overlap(val, train, byte_tokenizer().bos_id, n=32)
    truth = brute_shares(val_docs, train_docs)
    flagged = set(found.near_duplicates().tolist())
    assert {int(i) for i in np.flatnonzero(truth >= 0.8)} <= flagged  # the sample agrees with every n-gram
    assert not flagged & {int(i) for i in np.flatnonzero(truth <= 0.2)}
    clean = run_check(data)
    assert f"{len(flagged)} of 40 val documents" in clean and "32-token n-grams" in clean  # byte ids: 32 of them
    assert clean.startswith("PASS" if len(flagged) <= 0.01 * 40 else "FAIL")
    target = next(i for i in range(40) if truth[i] == 0)  # a val document no train document shares text with
    leaky = Path(shutil.copytree(data, tmp_path / "leaky"))
    for p in leaky.rglob("*_train_*"):
        p.unlink()
    tok = byte_tokenizer()
    train_docs = [*docs[40:140], edited(docs[target]), *docs[140:]]
    write_split(leaky, "train", *encode_stream(tok, train_docs), shards=2)
    line = run_check(leaky)
    assert line.startswith("FAIL") and f"{len(flagged) + 1} of 40 val documents" in line
    shards = ShardSet.open(leaky, "train")
    found = overlap.overlap(ShardSet.open(leaky, "val"), shards, tok.bos_id, n=32)
    assert found.share[target] >= 0.8
    # Where the copy is: the sampled n-gram found first lies inside train document 100, the edited copy.
    stream, _ = encode_stream(tok, train_docs)
    starts = np.flatnonzero(stream == tok.bos_id)
    position = int(shards.offsets[found.shard[target]]) + int(found.offset[target])
    assert starts[100] < position < starts[101]
    if target in sorted(flagged | {target})[:3]:  # the line names the first three (the dev corpus: it alone)
        assert f"e.g. val document {target} (" in line and f"near token {found.offset[target]} of " in line
