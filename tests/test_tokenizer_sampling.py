"""Training on corpora larger than memory: the hash sample against a brute-force reference, and HF kinds that train
from the documents as they stream, with the same artifacts as from a list."""

from __future__ import annotations

import json
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data.cli import main
from pgolf_data.tokenizer import TokenizerError, artifact, training
from pgolf_data.tokenizer.sampling import hash_sample, priority, sample_key
from pgolf_data.tokenizer.spec import resolve_spec, spec_for_kind


def reference_sample(docs: list[str], max_bytes, max_docs, seed: int) -> list[str]:
    """Sort every document that could fit by (priority, position); keep the longest prefix within both budgets."""
    key = sample_key(seed)
    sizes = [len(d.encode()) for d in docs]
    order = sorted(
        (i for i in range(len(docs)) if max_bytes is None or sizes[i] <= max_bytes),
        key=lambda i: (priority(docs[i], key), i),
    )
    kept, total = [], 0
    for i in order:
        if (max_bytes is not None and total + sizes[i] > max_bytes) or (max_docs is not None and len(kept) == max_docs):
            break
        kept.append(i)
        total += sizes[i]
    return [docs[i] for i in sorted(kept)]


def pairs(docs: list[str]):
    return ((d, len(d.encode())) for d in docs)


@settings(max_examples=200, deadline=None)
@given(
    docs=st.lists(st.text(min_size=1, max_size=40), max_size=60),
    max_bytes=st.one_of(st.none(), st.integers(1, 600)),
    max_docs=st.one_of(st.none(), st.integers(0, 30)),
    seed=st.integers(0, 3),
)
def test_the_streaming_sample_is_the_bottom_k_of_all_documents(docs, max_bytes, max_docs, seed):
    if max_bytes is None and max_docs is None:
        max_docs = 10
    drawn = hash_sample(pairs(docs), max_bytes, max_docs, seed)
    assert drawn.texts == reference_sample(docs, max_bytes, max_docs, seed)
    assert drawn.sizes == [len(d.encode()) for d in drawn.texts]
    assert max_bytes is None or sum(drawn.sizes) <= max_bytes


def test_the_sample_does_not_depend_on_the_order_of_the_corpus(dev_docs):
    docs = list(dict.fromkeys(dev_docs[:3000]))  # distinct texts: a duplicate's tie is broken by position
    budget = sum(len(d.encode()) for d in docs) // 4
    first = hash_sample(pairs(docs), budget, None, seed=7)
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    again = hash_sample(pairs(shuffled), budget, None, seed=7)
    assert sorted(first.texts) == sorted(again.texts)
    assert first.texts == [d for d in docs if d in set(first.texts)], "kept documents stay in corpus order"
    assert sum(first.sizes) > 0.95 * budget, "the budget is used up to less than one document"
    assert hash_sample(pairs(docs), budget, None, seed=8).texts != first.texts
    assert 0.15 < first.share < 0.35, "each document had about the budget's share of a chance"


def test_a_document_larger_than_the_budget_is_skipped_not_blocking():
    docs = ["x" * 1000, *[f"small {i}" for i in range(50)]]
    drawn = hash_sample(pairs(docs), 100, None)
    assert drawn.too_large == 1 and drawn.texts and sum(drawn.sizes) <= 100


def test_train_with_a_hash_sample_reports_it(dev_sample):
    spec = spec_for_kind("hf-bpe", 300).with_overrides(train_bytes=200_000)
    tok, report = training.train(spec, dev_sample, num_threads=1, sample="hash", seed=3)
    trained = report["trained_on"]
    assert trained["sample"] == "hash" and trained["sample_seed"] == 3
    assert trained["docs_read"] == len(dev_sample) and trained["sample_of_docs"] == len([d for d in dev_sample if d])
    assert 0 < trained["bytes"] <= 200_000 < trained["sample_of_bytes"]
    again, _ = training.train(spec, dev_sample, num_threads=1, sample="hash", seed=3)
    assert artifact.to_artifact(again) == artifact.to_artifact(tok)
    with pytest.raises(TokenizerError, match="needs a budget"):
        training.train(spec_for_kind("hf-bpe", 300), dev_sample, sample="hash")


@pytest.mark.parametrize("name", ["hf_bpe1024", "caseops_hf_bpe1024"])
def test_hf_kinds_train_from_a_stream_as_from_a_list(dev_sample, name):
    spec = resolve_spec(name)
    listed, listed_report = training.train(spec, list(dev_sample[:800]), num_threads=2)
    streamed, report = training.train(spec, iter(dev_sample[:800]), num_threads=2)
    assert artifact.to_artifact(streamed) == artifact.to_artifact(listed)
    assert report["trained_on"] == listed_report["trained_on"] and report["trained_on"]["docs"] > 100


def test_a_streamed_corpus_is_never_held_in_memory(dev_docs):
    """Python-side peak memory while an HF tokenizer trains on ~8 MB of generated text stays far below 8 MB."""
    base = [d for d in dev_docs[:400] if d]
    total = 8_000_000

    def documents():
        made, i = 0, 0
        while made < total:
            doc = f"{base[i % len(base)]} {i}"
            made += len(doc)
            i += 1
            yield doc

    spec = spec_for_kind("hf-bpe", 300)
    tracemalloc.start()
    try:
        training.train(spec, documents(), num_threads=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < total / 4, f"peak {peak:,} bytes of Python objects for {total:,} bytes of text"


def test_cli_hash_sample(tmp_path, dev_sample):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in dev_sample[:600]), encoding="utf-8")
    out = tmp_path / "tok"
    args = ["train-tokenizer", "--kind", "hf-bpe", "--vocab", "300", "--corpus", str(corpus), "--out", str(out)]
    assert main([*args, "--train-sample", "hash", "--train-bytes", "150000", "--train-seed", "5"]) == 0
    trained = json.loads((out / "report.json").read_text())["trained_on"]
    assert trained["sample"] == "hash" and trained["sample_seed"] == 5 and trained["bytes"] <= 150_000
