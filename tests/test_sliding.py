"""Sliding-window evaluation: the windows tile the targets, each target's NLL equals a brute-force forward pass over
exactly its window's context (stride = seq_len: non-overlapping windows), and rank slices add up."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import byte_tokenizer, encode_stream

from pgolf_model.config import ModelConfig
from pgolf_model.evaluation.scoring import score, windows
from pgolf_model.model import GPT
from pgolf_model.runtime import Runtime

CPU = Runtime(torch.device("cpu"))


@pytest.fixture(scope="module")
def stream(dev_sample):
    tokens, counts = encode_stream(byte_tokenizer(), dev_sample[:40])
    return tokens, counts


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=260, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    with torch.no_grad():
        for p in m.parameters():  # away from the identity-at-init, so that context matters
            p += 0.05 * torch.randn_like(p)
    return m


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 500), st.integers(1, 64), st.data())
def test_windows_tile_the_targets_once_in_order(n, seq_len, data):
    stride = data.draw(st.integers(1, seq_len))
    wins = windows(n, seq_len, stride)
    assert wins[0].first_scored == 0 and wins[-1].end == n
    for prev, w in itertools.pairwise(wins):
        assert w.first_scored == prev.end  # scored runs are consecutive: each target once
        assert w.start == prev.start + stride
        assert w.end - w.first_scored <= stride
        assert w.first_scored - w.start >= seq_len - stride  # at least seq_len - stride tokens of context
    assert all(0 < w.width <= seq_len and w.start <= w.first_scored < w.end for w in wins)
    assert len(wins) == 1 + max(0, math.ceil((n - seq_len) / stride))


def test_bad_strides_are_errors():
    for stride in (0, 65):
        with pytest.raises(ValueError, match=f"stride {stride}"):
            windows(100, 64, stride)


def brute_force_nll(model, tokens: np.ndarray, seq_len: int, stride: int) -> np.ndarray:
    """Each target j alone: its context starts at the first window start (a multiple of stride) that covers it."""
    n = len(tokens) - 1
    out = np.empty(n)
    with torch.no_grad():
        for j in range(n):
            start = max(0, math.ceil((j - seq_len + 1) / stride)) * stride
            x = torch.from_numpy(tokens[start : j + 1])[None]
            y = torch.from_numpy(tokens[start + 1 : j + 2])[None]
            out[j] = model(x, y, reduction="none")[0, -1].item()
    return out


@pytest.mark.parametrize("seq_len, stride, batch_tokens", [(48, 16, 96), (48, 48, 480), (40, 7, 40), (300, 1, 300)])
def test_each_target_is_scored_with_exactly_its_windows_context(model, stream, seq_len, stride, batch_tokens):
    tokens, counts = stream[0][:257], stream[1][:257]
    got = score(
        model, tokens, counts, seq_len=seq_len, stride=stride, batch_tokens=batch_tokens, runtime=CPU, keep_nll=True
    )
    want = brute_force_nll(model, tokens, seq_len, stride)
    assert not np.isnan(got.nll).any()
    np.testing.assert_allclose(got.nll, want, rtol=1e-5, atol=1e-5)
    assert got.tokens == len(tokens) - 1 and got.bytes == counts[1:].sum()
    assert got.nll_nats == pytest.approx(want.sum(), rel=1e-6)
    assert got.bpb == pytest.approx(want.sum() / math.log(2) / counts[1:].sum(), rel=1e-6)


def test_val_tokens_scores_that_prefix(model, stream):
    tokens, counts = stream
    whole = score(
        model, tokens[:301], counts[:301], seq_len=64, stride=16, batch_tokens=256, runtime=CPU, keep_nll=True
    )
    prefix = score(
        model, tokens, counts, seq_len=64, stride=16, batch_tokens=256, runtime=CPU, val_tokens=300, keep_nll=True
    )
    assert (prefix.tokens, prefix.bytes) == (300, counts[1:301].sum())
    np.testing.assert_array_equal(prefix.nll, whole.nll)


@pytest.mark.parametrize("world", [2, 3, 7])
def test_rank_slices_add_up_to_the_single_process_result(model, stream, world):
    tokens, counts = stream[0][:3000], stream[1][:3000]
    kw = dict(seq_len=128, stride=32, batch_tokens=512)
    single = score(model, tokens, counts, runtime=CPU, keep_nll=True, **kw)
    parts = [
        score(
            model, tokens, counts, runtime=Runtime(torch.device("cpu"), rank=r, world_size=world), keep_nll=True, **kw
        )
        for r in range(world)
    ]
    assert sum(p.tokens for p in parts) == single.tokens == len(tokens) - 1
    assert sum(p.bytes for p in parts) == single.bytes
    assert sum(p.nll_nats for p in parts) == pytest.approx(single.nll_nats, rel=1e-9)
    merged = np.nansum([p.nll for p in parts], axis=0)
    assert (sum(~np.isnan(p.nll) for p in parts) == 1).all()  # every target on exactly one rank
    np.testing.assert_array_equal(merged, single.nll)


def test_mismatched_inputs_are_errors(model, stream):
    tokens, counts = stream
    with pytest.raises(ValueError, match="byte counts for"):
        score(model, tokens, counts[:-1], seq_len=64, stride=8, batch_tokens=64, runtime=CPU)
    with pytest.raises(ValueError, match="fewer than 2 tokens"):
        score(model, tokens[:1], counts[:1], seq_len=64, stride=8, batch_tokens=64, runtime=CPU)
