"""Token-only n-gram tilt (PR #2130/#2135): the hints against a streaming reference written as the record's tables
are (one dictionary update per token), causality, a distribution that sums to 1, each target scored once, and the
tilted BPB against the formula applied by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_model.config import Config, ConfigError, ModelConfig, NgramTilt
from pgolf_model.evaluation import ngram_tilt
from pgolf_model.evaluation.ngram_tilt import TokenTilt, token_hints
from pgolf_model.evaluation.scoring import score
from pgolf_model.evaluation.ttt import evaluate_ttt
from pgolf_model.model import GPT
from pgolf_model.runtime import Runtime

CPU = Runtime(torch.device("cpu"))


def reference_hints(tokens, order: int, threshold: float) -> list[int]:
    """The record's online tables: per context, the total and a streaming top (replaced when a count passes it),
    read before the target is pushed."""
    ctx_table: dict[tuple, list] = {}  # context -> [total, top token, top count]
    pairs: dict[tuple, int] = {}
    hints = []
    for j in range(len(tokens) - 1):
        ctx = tuple(tokens[j - order + 2 : j + 1]) if j >= order - 2 else None
        entry = ctx_table.get(ctx) if ctx is not None else None
        ok = entry is not None and np.float32(entry[2]) / np.float32(entry[0]) >= np.float32(threshold)
        hints.append(entry[1] if ok else -1)
        if ctx is None:
            continue
        y = int(tokens[j + 1])
        pairs[ctx, y] = pairs.get((ctx, y), 0) + 1
        entry = ctx_table.setdefault(ctx, [0, y, 0])
        entry[0] += 1
        if pairs[ctx, y] > entry[2]:
            entry[1], entry[2] = y, pairs[ctx, y]
    return hints


def repetitive(seed: int, n: int, vocab: int) -> np.ndarray:
    """Random tokens with copied spans, so that long contexts repeat and the gate opens."""
    rng = np.random.default_rng(seed)
    out = list(rng.integers(0, vocab, 20))
    while len(out) < n:
        if rng.random() < 0.6:
            a = int(rng.integers(0, len(out) - 5))
            out += out[a : a + int(rng.integers(3, 30))]
        else:
            out += list(rng.integers(0, vocab, int(rng.integers(1, 6))))
    return np.array(out[:n], dtype=np.int64)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 400),
    vocab=st.integers(2, 12),
    order=st.integers(2, 7),
    threshold=st.sampled_from([0.3, 0.5, 0.8, 1.0]),
)
def test_hints_match_the_streaming_tables(seed, n, vocab, order, threshold):
    tokens = repetitive(seed, n, vocab)
    got = token_hints(tokens, order, threshold).tolist()
    assert got == reference_hints(tokens.tolist(), order, threshold)


def test_the_gate_opens_on_repeated_spans_and_a_fresh_context_is_silent():
    tokens = repetitive(3, 3000, 50)
    hints = token_hints(tokens, 5, 0.8)
    assert 0.05 < (hints >= 0).float().mean() < 0.95
    assert (hints[:3] == -1).all()  # contexts still incomplete
    hits = hints >= 0
    assert (hints[hits] == torch.from_numpy(tokens[1:].astype(np.int64))[hits]).float().mean() > 0.5


@pytest.mark.parametrize("order", [2, 4, 16])
def test_changing_a_token_moves_no_earlier_hint(order):
    a = repetitive(1, 2000, 20)
    for p in (30, 700, 1500):
        b = a.copy()
        b[p:] = repetitive(2, 2000 - p, 20)
        ha, hb = token_hints(a, order, 0.5), token_hints(b, order, 0.5)
        # Target j is stream position j + 1: targets 0..p-2 read positions 0..p-1 only.
        assert torch.equal(ha[: p - 1], hb[: p - 1])


def test_the_tilted_distribution_sums_to_one_and_follows_the_formula():
    torch.manual_seed(0)
    vocab, boost = 11, 2.625
    logits = torch.randn(3, 5, vocab) * 3
    hints = torch.randint(-1, vocab, (3, 5))
    tilt = TokenTilt(hints.flatten(), boost)
    # Every possible target: the tilted probabilities over the vocabulary.
    probs = torch.stack(
        [torch.exp(-tilt.nll(logits, torch.full((3, 5), a), hints)) for a in range(vocab)], dim=-1
    ).double()
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 5, dtype=torch.float64), rtol=0, atol=1e-5)
    q = torch.softmax(logits.double(), -1)
    want = q * torch.where(
        (torch.arange(vocab) == hints[..., None]) & (hints[..., None] >= 0), math.exp(boost), 1.0
    )  # p(a) = q(a) e^{boost [a = h]} / Z
    torch.testing.assert_close(probs, want / want.sum(-1, keepdim=True), rtol=1e-4, atol=1e-6)


def _model() -> GPT:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=20, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    with torch.no_grad():
        for p in m.parameters():
            p += 0.05 * torch.randn_like(p)
    return m.eval()


@pytest.mark.parametrize("stride", [16, 6])
def test_tilted_bpb_is_the_formula_over_each_target_once(stride):
    tokens = repetitive(5, 301, 20)
    counts = np.ones(len(tokens), dtype=np.int64)
    counts[::7] = 3
    cfg = NgramTilt(boost=2.0, order=4, threshold=0.5)
    model = _model()
    got = score(model, tokens, counts, seq_len=16, batch_tokens=48, runtime=CPU, stride=stride, keep_nll=True, tilt=cfg)
    plain = score(model, tokens, counts, seq_len=16, batch_tokens=48, runtime=CPU, stride=stride, keep_nll=True)
    assert not np.isnan(got.nll).any() and got.tokens == len(tokens) - 1
    # By hand: each target's model distribution from its own NLL column is unavailable, so score the hint as a
    # target of the same windows (plain scoring with the hints as targets gives -log q_h), then the formula.
    hints = token_hints(tokens, 4, 0.5).numpy()
    as_targets = np.concatenate([[tokens[0]], np.where(hints >= 0, hints, tokens[1:])]).astype(np.int64)
    nll_h = _hint_nll(model, tokens, as_targets, stride)
    y = tokens[1:].astype(np.int64)
    want = np.where(hints >= 0, plain.nll - 2.0 * (y == hints) + np.log1p(np.exp(-nll_h) * math.expm1(2.0)), plain.nll)
    np.testing.assert_allclose(got.nll, want, rtol=1e-5, atol=1e-5)
    assert (hints >= 0).sum() > 20 and not np.allclose(got.nll, plain.nll)
    assert got.bpb == pytest.approx(want.sum() / math.log(2) / counts[1:].sum(), rel=1e-6)


def _hint_nll(model, tokens, targets, stride) -> np.ndarray:
    """-log q(target j) with target j's context exactly as the scorer's windows give it (by hand, one window per
    scored run)."""
    from pgolf_model.evaluation.scoring import windows

    out = np.full(len(tokens) - 1, np.nan)
    with torch.no_grad():
        for w in windows(len(tokens) - 1, 16, stride):
            x = torch.from_numpy(tokens[w.start : w.end].astype(np.int64))[None]
            logp = torch.log_softmax(model.logits(x)[0].double(), -1).numpy()
            for j in range(w.first_scored, w.end):
                out[j] = -logp[j - w.start, targets[j + 1]]
    return out


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_ttt_scores_are_tilted_where_a_hint_fires_only(mode):
    """Against the same run untilted: unchanged where no hint fires, lower where the hint is the target, higher
    where it is not (the adapters' loss stays untilted, so the runs see the same updates)."""
    tokens = repetitive(9, 400, 20)
    tokens[::37] = 1  # documents
    counts = np.ones(len(tokens), dtype=np.int64)
    tilt = NgramTilt(boost=2.0, order=3, threshold=0.5)
    settings = {"eval.ttt": mode, "eval.lora.chunk_tokens": 8, "eval.lora.batch_docs": 3, "eval.lora.rank": 4}
    settings |= {"eval.full.chunk_tokens": 64, "eval.full.batch_seqs": 2, "eval.stride": 8}
    base = Config().override(settings)
    kw = dict(seq_len=16, batch_tokens=48, bos_id=1, runtime=CPU, keep_nll=True)
    plain = evaluate_ttt(_model(), tokens, counts, base.eval, **kw)
    on = base.override({"eval.tilt.boost": 2.0, "eval.tilt.order": 3, "eval.tilt.threshold": 0.5})
    tilted = evaluate_ttt(_model(), tokens, counts, on.eval, **kw)
    hints = token_hints(tokens, tilt.order, tilt.threshold).numpy()
    assert not np.isnan(tilted.nll).any()
    np.testing.assert_allclose(tilted.nll[hints < 0], plain.nll[hints < 0], rtol=1e-5, atol=1e-6)
    hit, miss = (hints >= 0) & (hints == tokens[1:]), (hints >= 0) & (hints != tokens[1:])
    assert hit.sum() > 5 and miss.sum() > 5
    assert (tilted.nll[hit] < plain.nll[hit]).all() and (tilted.nll[miss] > plain.nll[miss]).all()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("tilt.order", 1, "order"), ("tilt.threshold", 0.0, "threshold"), ("tilt.boost", -1.0, "boost")],
)
def test_bad_tilt_settings_are_errors(key, value, match):
    with pytest.raises(ConfigError, match=match):
        Config().override({f"eval.{key}": value})


def test_the_chunked_passes_carry_their_state_across_chunk_edges(monkeypatch):
    tokens = repetitive(11, 3000, 6)
    want = token_hints(tokens, 3, 0.5).tolist()
    assert want == reference_hints(tokens.tolist(), 3, 0.5)
    for chunk in (1, 7, 64, 1000):
        monkeypatch.setattr(ngram_tilt, "CHUNK", chunk)
        assert token_hints(tokens, 3, 0.5).tolist() == want
