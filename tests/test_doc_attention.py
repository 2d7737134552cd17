"""Document-masked attention (``model.doc_masked``): the mask path and the varlen path (FlashAttention's interface,
here a per-document reference kernel registered as a custom op) agree with each other and with attention run on
each document alone; a doc-masked GPT scores a packed window as it scores each of its documents alone; the varlen
path compiles as one graph; training, scoring and the phased global SGD all go through it. The training loader's
document bounds, found on the host, are each document's start; the varlen path given them needs no device sync,
scores as the mask path and as each document alone, and compiles as one graph for every count of documents."""

from __future__ import annotations

import functools
import itertools
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import one_thread, sdpa_per_document  # noqa: F401 (autouse fixture)
from torch._dynamo.utils import counters

from pgolf_data.shards import ShardSet, shard_filename, write_shard
from pgolf_model import attention
from pgolf_model import model as model_module
from pgolf_model.config import ModelConfig, SGDPhase
from pgolf_model.evaluation import ttt
from pgolf_model.model import GPT
from pgolf_model.runtime import Runtime
from pgolf_model.training.data import TrainLoader, document_bounds
from pgolf_model.training.trainer import compile_for_training

BOS = 1


@torch.library.custom_op("pgolf_test::varlen_attention", mutates_args=())
def reference_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    causal: bool,
) -> torch.Tensor:
    """flash_attn_varlen_func's contract, written as a loop: (total, H, D) inputs, each segment of cu_seqlens its
    own causal attention, grouped-query when k has fewer heads."""
    assert causal and torch.equal(cu_seqlens_q, cu_seqlens_k) and cu_seqlens_q.dtype == torch.int32
    out = torch.empty_like(q)
    bounds = cu_seqlens_q.tolist()
    assert bounds[0] == 0 and bounds[-1] == q.size(0) and bounds == sorted(bounds)
    assert max(b - a for a, b in itertools.pairwise(bounds)) <= max_seqlen_q
    rep = q.size(1) // k.size(1)
    for lo, hi in itertools.pairwise(bounds):
        qs, ks, vs = (t[lo:hi].transpose(0, 1) for t in (q, k, v))  # (heads, n, D)
        ks, vs = ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0)
        scores = (qs @ ks.transpose(1, 2)) / q.size(-1) ** 0.5
        scores = scores.masked_fill(~torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril(), float("-inf"))
        out[lo:hi] = (scores.softmax(-1) @ vs).transpose(0, 1)
    return out


@reference_varlen.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal):
    return torch.empty_like(q)


@pytest.fixture
def varlen(monkeypatch):
    """The model's varlen path on CPU, through the reference kernel."""
    monkeypatch.setattr(attention, "VARLEN", reference_varlen)
    monkeypatch.setattr(model_module, "use_varlen", lambda device: True)


def with_bos(shape: tuple[int, int], starts: list[int], seed: int = 0, vocab: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(2, vocab, shape, generator=gen)
    idx.view(-1)[torch.tensor(starts, dtype=torch.long)] = BOS
    return idx


def spans(row: torch.Tensor) -> list[tuple[int, int]]:
    """The documents of one row as (start, end): cut before each BOS (a window's first tokens before any BOS are a
    document too)."""
    cuts = [0, *[int(i) for i in torch.nonzero(row == BOS).flatten() if i > 0], len(row)]
    return list(itertools.pairwise(cuts))


def per_document(idx: torch.Tensor, fn) -> torch.Tensor:
    """``fn`` on each document of each row alone, concatenated back along the row."""
    return torch.stack([torch.cat([fn(row[a:b][None])[0] for a, b in spans(row)]) for row in idx])


@pytest.mark.parametrize("bounds_from", ["device", "host"])
@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 3),
    T=st.integers(1, 24),
    heads=st.sampled_from([(4, 4), (4, 2), (2, 1)]),
    data=st.data(),
)
def test_mask_and_varlen_paths_equal_each_document_alone(bounds_from, rows, T, heads, data):
    """Any count of documents, to one per token. The varlen path finds the document bounds on the device (through
    the reference kernel, a custom op) or is given the loader's from the host (through the per-document SDPA
    stand-in for FlashAttention, with nothing looked for on the device)."""
    H, Hkv = heads
    starts = data.draw(st.lists(st.integers(0, rows * T - 1), max_size=rows * T, unique=True))
    idx = with_bos((rows, T), starts)
    gen = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(rows, h, T, 8, generator=gen) for h in (H, Hkv, Hkv))
    mask_path = attention.causal_attention(q, k, v, attention.documents(idx, BOS, varlen=False))
    with pytest.MonkeyPatch.context() as m:
        if bounds_from == "device":
            m.setattr(attention, "VARLEN", reference_varlen)
            docs = attention.documents(idx, BOS, varlen=True)
        else:
            bounds = torch.from_numpy(document_bounds(idx.numpy(), BOS))
            m.setattr(attention, "VARLEN", sdpa_per_document)
            m.setattr(torch, "nonzero", None)
            docs = attention.documents(idx, BOS, True, bounds)
        varlen_path = attention.causal_attention(q, k, v, docs)
    torch.testing.assert_close(varlen_path, mask_path, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mask_path, attention_alone(q, k, v, idx), atol=1e-5, rtol=1e-5)


def attention_alone(q, k, v, idx) -> torch.Tensor:
    """Each document's slice of q, k, v (B, H, T, D) through plain causal attention, by ``spans``' per-row cuts."""
    out = torch.zeros_like(q)
    for r in range(idx.size(0)):
        for a, b in spans(idx[r]):
            qs, ks, vs = (t[r : r + 1, :, a:b] for t in (q, k, v))
            out[r, :, a:b] = F.scaled_dot_product_attention(
                qs, ks, vs, is_causal=True, enable_gqa=k.size(1) < q.size(1)
            )[0]
    return out


def test_cu_seqlens_mark_every_bos_and_every_row_start():
    idx = with_bos((2, 6), [0, 3, 6 + 4])
    docs = attention.documents(idx, BOS, varlen=True)
    assert docs.cu_seqlens.tolist() == [0, 3, 6, 10, 12] and docs.max_seqlen == 6 and docs.mask is None


# Every switch that reads another token: attention, SmearGate and BigramHash (both BOS-fixed), and the rest.
DOC_CFG = dict(
    vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2, bos_id=BOS, doc_masked=True,
    mlp_leaky_slope=0.5, rope_dims=4, ln_scale=True, xsa=True, attn_gate_width=4, smear_gate=True,
    bigram_buckets=32, bigram_dim=8, ve_layers=(3,), ve_dim=8, parallel_from=3, num_loops=1, loop_start=1,
    loop_end=1,
)  # fmt: skip


def doc_model(**changes) -> GPT:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**DOC_CFG, **changes}))
    with torch.no_grad():  # the zero-initialized projections and gates would hide any leak
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("path", ["mask", "varlen"])
def test_a_packed_window_scores_as_its_documents_alone(path, request):
    if path == "varlen":
        request.getfixturevalue("varlen")
    model = doc_model()
    idx = with_bos((2, 40), [0, 7, 8, 23, 40 + 15, 40 + 16])
    with torch.no_grad():
        packed = model.logits(idx)
        alone = per_document(idx, model.logits)
        torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-4)
        leaky = doc_model(doc_masked=False).logits(idx)
    assert not torch.allclose(leaky, alone, atol=1e-3)  # without the mask, the documents do read each other


def test_the_varlen_path_compiles_as_one_graph(varlen, monkeypatch):
    monkeypatch.setattr(logging.getLogger("torch.__trace"), "propagate", False)
    torch._dynamo.reset()
    counters.clear()
    model = doc_model()
    idx = with_bos((2, 32), [0, 5, 32 + 20])
    other = with_bos((2, 32), [3, 4, 32 + 1, 32 + 30], seed=1)  # another number of documents: the same graph
    # Off by default (compile_for_training turns it on), and put back afterwards.
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False), torch.no_grad():
        compiled = compile_for_training(model, backend="aot_eager")
        torch.testing.assert_close(compiled(idx, idx, reduction="none"), model(idx, idx, reduction="none"))
        with torch._dynamo.config.patch(error_on_recompile=True):
            torch.testing.assert_close(compiled(other, other, reduction="none"), model(other, other, reduction="none"))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch._dynamo.reset()


def test_training_scoring_and_the_global_sgd_use_the_mask(monkeypatch):
    calls = []
    real = model_module.documents
    monkeypatch.setattr(model_module, "documents", functools.partial(lambda f, *a: calls.append(1) or f(*a), real))
    model = doc_model().train()
    idx = with_bos((2, 16), [0, 9])
    model(idx, idx).backward()
    assert len(calls) == 1
    with torch.no_grad():
        model.eval()(idx, idx, reduction="none")
    assert len(calls) == 2
    tokens = np.asarray(with_bos((1, 200), [0, 50, 120]).flatten())
    sgd = SGDPhase(chunk_tokens=64, batch_seqs=2)
    ttt._global_sgd(model, tokens, sgd, seq_len=32, rt=Runtime(torch.device("cpu")))
    assert len(calls) > 2


# --- the training loader's document bounds ------------------------------------------------------------------------


@pytest.fixture
def bos_loader(tmp_path) -> TrainLoader:
    """Batches of 2 x 32 inputs, in order, over 3,000 tokens with documents of 1 to ~60 tokens and a run of BOS."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 64, 3000)
    tokens[rng.random(3000) < 0.08] = BOS
    tokens[1000:1040] = BOS  # one-token documents, back to back
    write_shard(tmp_path / shard_filename("s", "train", 0), tokens)
    return TrainLoader(ShardSet.open(tmp_path, "train"), seq_len=32, device_batch_tokens=64, grad_accum=1)


def test_the_loaders_bounds_are_each_documents_start(bos_loader):
    counts = set()
    for step in range(3000 // 65):  # the whole stream
        for seq_len in (32, 8):  # a shorter training length too (progressive context): more rows, more starts
            x, y, bounds = bos_loader.batch_and_documents(step, 0, BOS, seq_len)
            plain_x, plain_y = bos_loader.batch(step, 0, seq_len)
            assert torch.equal(x, plain_x) and torch.equal(y, plain_y) and bounds.dtype == torch.int32
            rows, T = x.shape
            expected = [r * T + a for r in range(rows) for a, _ in spans(x[r])] + [rows * T]
            assert bounds.tolist() == expected
            assert torch.equal(bounds, attention.documents(x, BOS, varlen=True).cu_seqlens)  # the device's
            counts.add(len(expected))
    assert len(counts) > 10 and max(counts) > 40  # from a few documents per batch to the 40 one-token ones


@pytest.mark.parametrize("starts", [[], list(range(80)), [0, 7, 8, 23, 40 + 15, 40 + 16]])
def test_a_model_given_the_loaders_bounds_scores_as_with_the_mask(varlen, starts, monkeypatch):
    """No document but the rows' (no BOS), one per token, and a few: the per-document SDPA stand-in for
    FlashAttention, the model's loss per token as on the mask path."""
    monkeypatch.setattr(attention, "VARLEN", sdpa_per_document)
    model = doc_model()
    idx = with_bos((2, 40), starts)
    bounds = torch.from_numpy(document_bounds(idx.numpy(), BOS))
    with torch.no_grad():
        with monkeypatch.context() as m:
            m.setattr(torch, "nonzero", None)  # given the bounds, nothing looks for them on the device
            given = model(idx, idx, reduction="none", cu_seqlens=bounds)
        monkeypatch.setattr(model_module, "use_varlen", lambda device: False)
        masked = model(idx, idx, reduction="none")
    torch.testing.assert_close(given, masked, atol=1e-5, rtol=1e-5)


def test_the_loaders_bounds_compile_as_one_graph_for_every_count(varlen, bos_loader, monkeypatch):
    """The bounds' length is a dynamic input (the loader marks it): batches with other counts of documents reuse
    the graph, and the graph has no data-dependent op (Dynamo may not capture one here)."""
    monkeypatch.setattr(logging.getLogger("torch.__trace"), "propagate", False)
    torch._dynamo.reset()
    counters.clear()
    model = doc_model()
    batches = [bos_loader.batch_and_documents(step, 0, BOS) for step in (0, 1, 2, 15)]  # 15: the run of BOS
    assert len({len(bounds) for _, _, bounds in batches}) == 3
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=False), torch.no_grad():
        compiled = torch.compile(model, fullgraph=True, dynamic=False, backend="aot_eager")  # as compile_for_training
        for i, (x, y, bounds) in enumerate(batches):
            with torch._dynamo.config.patch(error_on_recompile=i > 0):
                got = compiled(x, y, reduction="none", cu_seqlens=bounds)
            torch.testing.assert_close(got, model(x, y, reduction="none", cu_seqlens=bounds))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch._dynamo.reset()
