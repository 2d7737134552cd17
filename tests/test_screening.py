"""Screening: n-gram BPB against brute force, the stage cache, and the screening pipeline on a small corpus."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data.corpus import CorpusError
from pgolf_data.tokenizer import TokenizerSpec
from pipelines.cache import StageCache, stage_key
from pipelines.documents import CorpusSplit
from pipelines.ngram import Smoothing, bigram_bits, document_stream, unigram_bits
from pipelines.screening import ScreenConfig, screen, screen_tokenizer
from pipelines.tokenizer_ab import ABSettings, main, run_screen

REPO = Path(__file__).resolve().parents[1]
BYTES = TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260)
# A small lossless BPE that trains in well under a second on a few hundred documents.
BPE = TokenizerSpec(name="bpe300", kind="hf-bpe", vocab_size=300, options={"min_frequency": 2})


# --- n-gram models against a dictionary-based reference ------------------------------------------------------------


def reference_bits(train: list[int], heldout: list[int], vocab: int, alpha: float, d: float) -> tuple[float, float]:
    """Unigram and bigram bits written directly from the formulas, one target at a time."""
    uni = Counter(train[1:])
    n = len(train) - 1
    pairs = Counter(itertools.pairwise(train))
    followers: dict[int, set[int]] = {}
    context: Counter = Counter()
    for (a, b), c in pairs.items():
        followers.setdefault(a, set()).add(b)
        context[a] += c

    def p_uni(b: int) -> float:
        return (uni[b] + alpha) / (n + alpha * vocab)

    u_bits = b_bits = 0.0
    for a, b in itertools.pairwise(heldout):
        u_bits -= math.log2(p_uni(b))
        seen = context[a] > 0
        p = (max(pairs[(a, b)] - d, 0) + d * len(followers[a]) * p_uni(b)) / context[a] if seen else p_uni(b)
        b_bits -= math.log2(p)
    return u_bits, b_bits


@settings(max_examples=60, deadline=None)
@given(
    vocab=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    n_train=st.integers(2, 60),
    n_held=st.integers(2, 40),
    alpha=st.sampled_from([0.5, 1.0, 0.01]),
    d=st.sampled_from([0.75, 1.0, 0.1]),
)
def test_ngram_bits_match_reference(vocab, seed, n_train, n_held, alpha, d):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, vocab, n_train)
    held = rng.integers(0, vocab, n_held)
    sm = Smoothing(unigram_alpha=alpha, bigram_discount=d)
    u_ref, b_ref = reference_bits(train.tolist(), held.tolist(), vocab, alpha, d)
    assert unigram_bits(train, held, vocab, sm) == pytest.approx(u_ref, rel=1e-12, abs=1e-9)
    assert bigram_bits(train, held, vocab, sm) == pytest.approx(b_ref, rel=1e-12, abs=1e-9)


def test_ngram_models_are_distributions():
    """For every context, the probabilities of all next tokens sum to 1 (seen and unseen contexts alike)."""
    rng = np.random.default_rng(7)
    vocab = 9
    train = rng.integers(0, 6, 200)  # tokens 6..8 never occur: unseen contexts and unseen targets
    for a in range(vocab):
        pair = [np.array([a, b]) for b in range(vocab)]
        assert sum(2.0 ** -bigram_bits(train, h, vocab) for h in pair) == pytest.approx(1.0, abs=1e-12)
        assert sum(2.0 ** -unigram_bits(train, h, vocab) for h in pair) == pytest.approx(1.0, abs=1e-12)


def test_document_stream_layout():
    stream = document_stream([np.array([5, 6]), np.array([], dtype=np.int32), np.array([7])], bos_id=1)
    assert stream.tolist() == [1, 5, 6, 1, 1, 7]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"unigram_alpha": 0.0}, "unigram_alpha"), ({"bigram_discount": 1.5}, "bigram_discount")],
)
def test_bad_smoothing_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Smoothing(**kwargs)


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(ValueError, match=r"held-out stream has ids in \[0, 9\], outside \[0, 5\)"):
        unigram_bits(np.array([0, 1, 2]), np.array([0, 9]), 5)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        bigram_bits(np.array([0]), np.array([0, 1]), 5)


# --- the screening computation through a real tokenizer ---------------------------------------------------------------


def test_bytes_tokenizer_screen_equals_byte_counts(dev_docs):
    """With one token per byte, tokens/byte is 1 and the unigram BPB is the byte-frequency cross-entropy."""
    from pgolf_data.tokenizer import kind_class

    tok = kind_class("bytes")(BYTES)
    val, train = dev_docs[:40], dev_docs[40:240]
    out = screen_tokenizer(tok, iter(val), iter(train), ScreenConfig())

    val_bytes = [b + 4 for doc in val for b in [-3, *doc.encode()]]  # BOS (id 1) then byte b -> id b + 4
    train_bytes = [b + 4 for doc in train for b in [-3, *doc.encode()]]
    counts = Counter(train_bytes[1:])
    n, alpha = len(train_bytes) - 1, 0.5
    bits = -sum(math.log2((counts[t] + alpha) / (n + alpha * 260)) for t in val_bytes[1:])
    total = sum(len(doc.encode()) for doc in val)
    assert out["val"] == {
        "docs": 40,
        "bytes": total,
        "tokens": total,
        "tokens_per_byte": 1.0,
        "targets": len(val_bytes) - 1,
    }
    assert out["count_sample"]["bytes"] == sum(len(doc.encode()) for doc in train)
    assert out["unigram_bpb"] == pytest.approx(bits / total, rel=1e-12)
    assert out["bigram_bpb"] < out["unigram_bpb"]  # one token of context helps on English text


def test_sample_bytes_caps_the_count_sample(dev_docs):
    from pgolf_data.tokenizer import kind_class

    tok = kind_class("bytes")(BYTES)
    out = screen_tokenizer(tok, iter(dev_docs[:5]), iter(dev_docs[5:500]), ScreenConfig(sample_bytes=10_000))
    sizes = [len(d.encode()) for d in dev_docs[5:500]]
    whole_docs = next(i for i in range(len(sizes) + 1) if sum(sizes[:i]) >= 10_000)
    assert out["count_sample"]["docs"] == whole_docs
    assert out["count_sample"]["bytes"] == sum(sizes[:whole_docs])
    with pytest.raises(ValueError, match="sample_bytes"):
        ScreenConfig(sample_bytes=0)


# --- cache ---------------------------------------------------------------------------------------------------------


def test_stage_cache_builds_once_and_survives_an_interrupted_build(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "value.txt").write_text("42")

    first = cache.run("demo", {"x": 1}, build)
    again = cache.run("demo", {"x": 1}, build)
    assert first == again and len(calls) == 1 and (first / "value.txt").read_text() == "42"
    assert cache.run("demo", {"x": 2}, build) != first and len(calls) == 2
    assert cache.executions == {"demo": 2}

    def crash(out: Path) -> None:
        (out / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.run("demo", {"x": 3}, crash)
    assert not cache.done("demo", {"x": 3})
    assert not list((tmp_path / "demo").glob(".*.tmp"))  # nothing half-written is left behind
    stale = tmp_path / "demo" / f".{stage_key('demo', {'x': 3})}.abc.tmp"
    stale.mkdir()  # as a killed process (no exception handler ran) would leave it
    path = cache.run("demo", {"x": 3}, build)
    assert not stale.exists() and (path / "value.txt").is_file()
    assert json.loads((path / "inputs.json").read_text())["inputs"] == {"x": 3}


def test_stage_key_is_order_independent_and_input_sensitive():
    assert stage_key("s", {"a": 1, "b": [1, 2]}) == stage_key("s", {"b": [1, 2], "a": 1})
    assert stage_key("s", {"a": 1}) != stage_key("s", {"a": 2}) != stage_key("t", {"a": 2})


# --- the screening pipeline ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, dev_docs) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in dev_docs[:300]), encoding="utf-8")
    return path


def test_screen_caches_every_stage(tmp_path, small_corpus):
    split = CorpusSplit(str(small_corpus), val_docs=50)
    cache = StageCache(tmp_path)
    rows = screen([BYTES, BPE], split, cache, threads=1)
    assert cache.executions == {"tokenizer": 2, "screen": 2}
    assert [r["spec"] for r in rows] == ["bytes260", "bpe300"]
    assert rows[0]["val"]["tokens_per_byte"] == 1.0 and rows[1]["val"]["tokens_per_byte"] < 1.0
    assert rows[0]["val"]["bytes"] == rows[1]["val"]["bytes"] == split.fingerprint()["val"]["bytes"]

    again = StageCache(tmp_path)
    assert screen([BYTES, BPE], split, again, threads=1)[1]["bigram_bpb"] == rows[1]["bigram_bpb"]
    assert again.executions == {}
    bigger = StageCache(tmp_path)
    screen([BYTES, BPE.with_overrides(vocab_size=320, name="bpe320")], split, bigger, threads=1)
    assert bigger.executions == {"tokenizer": 1, "screen": 1}  # only the new spec
    resample = StageCache(tmp_path)
    screen([BYTES], split, resample, ScreenConfig(sample_bytes=20_000), threads=1)
    assert resample.executions == {"screen": 1}  # the tokenizer is reused, the counts are not


def test_screen_cli_writes_report(tmp_path, small_corpus):
    out = tmp_path / "out"
    code = main(
        ["--screen", "--specs", "bytes260", "--corpus", str(small_corpus), "--val-docs", "50", "--out", str(out)]
    )
    assert code == 0
    data = json.loads((out / "screening.json").read_text())
    (row,) = data["specs"]
    md = (out / "screening.md").read_text()
    assert f"| bytes260 | bytes | 260 | yes | {row['tokenizer_bytes']:,} | 1.0000 | {row['unigram_bpb']:.4f} |" in md
    assert (out / "screening.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corpus_without_training_documents_is_refused(tmp_path, small_corpus):
    with pytest.raises(CorpusError, match="none left for training"):
        CorpusSplit(str(small_corpus), val_docs=300).fingerprint()
    with pytest.raises(CorpusError, match="leaves no training documents"):
        CorpusSplit(str(small_corpus), val_docs=50, max_docs=50)
    with pytest.raises(CorpusError, match="val_docs must be a positive"):
        CorpusSplit(str(small_corpus), val_docs=0)
    with pytest.raises(CorpusError, match="none left for training"):
        run_screen(ABSettings(specs=("bytes260",), corpus=str(small_corpus), out=tmp_path, val_docs=1000))


def test_cli_refuses_duplicate_and_unknown_specs(tmp_path, small_corpus, capsys):
    args = ["--screen", "--corpus", str(small_corpus), "--out", str(tmp_path)]
    assert main([*args, "--specs", "bytes260", str(REPO / "tokenizers" / "bytes260.toml")]) == 2
    assert "both named 'bytes260'" in capsys.readouterr().err
    assert main([*args, "--specs", "no_such_spec"]) == 2
    assert "no spec 'no_such_spec'" in capsys.readouterr().err
