"""The chunked soft-capped cross-entropy against the plain formulation, written out with autograd."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_model import softcap_ce
from pgolf_model.config import ModelConfig
from pgolf_model.model import GPT
from pgolf_model.softcap_ce import softcap_cross_entropy


def plain(h, weight, targets, cap, reduction):
    z = F.linear(h.double(), weight.double())
    s = cap * torch.tanh(z / cap) if cap > 0 else z
    return F.cross_entropy(s, targets, reduction=reduction)


def inputs(rows, dim, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, dim, generator=g).requires_grad_()
    weight = (2 * torch.randn(vocab, dim, generator=g)).requires_grad_()  # large logits: the cap matters
    return h, weight, torch.randint(0, vocab, (rows,), generator=g)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 40),
    dim=st.integers(1, 12),
    vocab=st.integers(2, 50),
    cap=st.sampled_from([0.0, 1.0, 30.0]),
    reduction=st.sampled_from(["mean", "sum"]),
    chunk=st.integers(1, 16),
    seed=st.integers(0, 2**16),
)
def test_loss_and_gradients_match_the_plain_formulation(rows, dim, vocab, cap, reduction, chunk, seed):
    h, weight, targets = inputs(rows, dim, vocab, seed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(softcap_ce, "CHUNK_ROWS", chunk)  # many chunks, and a short last one
        ours = softcap_cross_entropy(h, weight, targets, cap, reduction)
    ref = plain(h, weight, targets, cap, reduction)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    # A non-unit upstream gradient, as from loss scaling or gradient accumulation.
    ours_grads = torch.autograd.grad(0.37 * ours, (h, weight))
    ref_grads = torch.autograd.grad(0.37 * ref, (h, weight))
    for a, b in zip(ours_grads, ref_grads):
        # Entries that sum to almost 0 over rows keep float32 rounding of the larger terms (hypothesis found 1.4e-6
        # at 15 rows, sum reduction, no cap): the absolute floor is the loss's own.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grad", [False, True])
def test_per_row_losses_with_and_without_gradients(grad, monkeypatch):
    monkeypatch.setattr(softcap_ce, "CHUNK_ROWS", 7)
    h, weight, targets = inputs(30, 8, 40, seed=3)
    with torch.set_grad_enabled(grad):
        ours = softcap_cross_entropy(h, weight, targets, 30.0, "none")
    assert ours.shape == (30,) and ours.requires_grad == grad
    torch.testing.assert_close(ours.double(), plain(h, weight, targets, 30.0, "none"), rtol=1e-5, atol=1e-5)


def test_unknown_reduction_is_refused():
    h, weight, targets = inputs(4, 3, 5, seed=0)
    with pytest.raises(ValueError, match="reduction"):
        softcap_cross_entropy(h, weight, targets, 30.0, "max")


def test_model_forward_uses_it_and_matches_its_logits():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    idx, targets = torch.randint(0, 64, (2, 9)), torch.randint(0, 64, (2, 9))
    loss = model(idx, targets)
    ref = F.cross_entropy(model.logits(idx).flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    ours = torch.autograd.grad(loss, list(model.parameters()))
    theirs = torch.autograd.grad(ref, list(model.parameters()))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_cuda_chunks_cap_the_logits_at_a_fixed_number_of_rows(monkeypatch):
    """The device only picks the chunk size: the records' 98,304 rows per GPU make 12 chunks of 8,192 rows, never the
    whole (tokens x vocab) tensor (run here on CPU with the CUDA size)."""
    assert softcap_ce.chunk_rows(torch.device("cuda")) == softcap_ce.CUDA_CHUNK_ROWS == 8192
    assert softcap_ce.chunk_rows(torch.device("cpu")) == softcap_ce.CHUNK_ROWS
    monkeypatch.setattr(softcap_ce, "chunk_rows", lambda device: softcap_ce.CUDA_CHUNK_ROWS)
    seen = []
    real = softcap_ce._chunk_logits
    monkeypatch.setattr(softcap_ce, "_chunk_logits", lambda h, w, cap: seen.append(h.size(0)) or real(h, w, cap))
    h, weight, targets = inputs(20_000, 4, 6, seed=5)
    ours = softcap_cross_entropy(h, weight, targets, 30.0, "mean")
    assert seen == [8192, 8192, 20_000 - 2 * 8192]
    torch.testing.assert_close(ours.double(), plain(h, weight, targets, 30.0, "mean"), rtol=1e-5, atol=1e-5)
