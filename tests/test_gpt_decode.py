"""``GPT.decode`` with a KV cache: feeding a sequence through it a token at a time, or in chunks, gives the logits
of the whole sequence's forward pass at every position, for each of the GPT's switches (and together)."""

from __future__ import annotations

import pytest
import torch
from model_data import one_thread  # noqa: F401 (autouse fixture)
from test_fidelity_switches import perturb
from test_record_switches import BASE

from pgolf_model.config import ModelConfig, QuantConfig
from pgolf_model.export import calibration
from pgolf_model.model import GPT
from pgolf_model.training import qat

BOS = 1
RECORD = dict(
    smear_gate=True, bigram_buckets=32, bigram_dim=8, ve_layers=(2, 3), ve_dim=8, parallel_from=3, lane0_skip=True,
    loop_start=1, loop_end=2, num_loops=1, skip_gates=True, xsa=True, rope_dims=4, attn_gate_width=8, ln_scale=True,
    doc_masked=True, asym_softcap=True, mlp_leaky_slope=0.5, ortho_init=True, qk_gain_init=4.0,
)  # fmt: skip
SWITCHES = {
    "plain": {},
    "record": RECORD,
    "record-unlooped": {**RECORD, "num_loops": 0, "loop_start": 0, "loop_end": 0, "lane0_skip": False},
    "factored-yarn-ternary": dict(embed_dim=16, yarn_factor=4.0, lowbit="ternary", lowbit_group=16),
    "attention-free-blocks": dict(attn_layers=(2, 3), xsa_last=1, ve_layers=(3,), ve_dim=8, smear_gate=True),
    "doc-masked-gqa-untied": dict(
        doc_masked=True, num_kv_heads=1, bigram_buckets=16, bigram_dim=4, tie_embeddings=False
    ),
}


def build(switches: dict) -> GPT:
    torch.manual_seed(0)
    model = perturb(GPT(ModelConfig(**{**BASE, "bos_id": BOS, **switches})))
    return model.eval()


def sample(shape=(3, 24), seed: int = 0) -> torch.Tensor:
    """Random tokens with BOS inside the rows (and opening one), so documents start mid-row."""
    idx = torch.randint(2, BASE["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))
    idx[0, 0] = idx[0, 9] = idx[1, 5] = idx[1, 6] = idx[2, 17] = BOS
    return idx


def fed(model: GPT, idx: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """The logits of ``idx`` fed through ``decode_logits`` in pieces of the given lengths, concatenated."""
    state, out, start = None, [], 0
    for n in chunks:
        logits, state = model.decode_logits(idx[:, start : start + n], state)
        out.append(logits)
        start += n
    assert start == idx.size(1)
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("name", list(SWITCHES))
@torch.no_grad()
def test_decoding_gives_the_full_forwards_logits(name):
    model, idx = build(SWITCHES[name]), sample()
    full = model.logits(idx)
    state = None
    for t in range(idx.size(1)):  # a token at a time through the hook calibration uses
        last, state = model.decode(idx[:, t : t + 1], state)
        torch.testing.assert_close(last, full[:, t], atol=1e-5, rtol=1e-5)
    assert state.length == idx.size(1)
    assert all(c.length == idx.size(1) for c, b in zip(state.layers, virtual_blocks(model)) if b.attn is not None)
    torch.testing.assert_close(fed(model, idx, [5, 1, 3, 8, 7]), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fed(model, idx, [24]), full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_fake_quantized_blocks_decode_as_their_forward():
    """Late QAT's fake-quantized Linear layers (``training/qat.py``, on in training mode) just run in the cached path
    too."""
    model, idx = build(RECORD).train(), sample()
    unquantized = model.logits(idx)
    assert qat.enable(model, QuantConfig(bits=4, keep_float_max_numel=0)) > 0
    assert not torch.allclose(model.logits(idx), unquantized, atol=1e-3)
    torch.testing.assert_close(fed(model, idx, [1] * 7 + [17]), model.logits(idx), atol=1e-5, rtol=1e-5)


def virtual_blocks(model: GPT) -> list:
    return [model.blocks[i] for i in model.encoder_layers + model.decoder_layers + model.lane_layers]


def test_a_looped_block_has_a_cache_per_pass():
    model = build(RECORD)
    _, state = model.decode(sample()[:, :4])
    order = model.encoder_layers + model.decoder_layers + model.lane_layers
    assert len(order) > model.cfg.num_layers and len(state.layers) == len(order)
    passes = [c for c, i in zip(state.layers, order) if i == model.cfg.loop_start]
    assert len(passes) == 2 and not torch.equal(passes[0].k, passes[1].k)


@pytest.mark.parametrize("name", ["record", "doc-masked-gqa-untied"])
def test_documents_never_read_each_other_through_the_cache(name):
    """With doc_masked, a document after a BOS decodes the same after two different cached prefixes (that end in the
    same token, which BigramHash reads at the BOS)."""
    model = build(SWITCHES[name])
    g = torch.Generator().manual_seed(3)
    doc = torch.randint(2, BASE["vocab_size"], (1, 8), generator=g)
    prefixes = torch.randint(2, BASE["vocab_size"], (2, 11), generator=g)
    doc[0, 0], prefixes[:, -1] = BOS, 7
    with torch.no_grad():
        a, b = (model.decode_logits(doc, model.decode_logits(p[None])[1])[0] for p in prefixes)
        without_masks = build({**SWITCHES[name], "doc_masked": False})
        c, d = (without_masks.decode_logits(doc, without_masks.decode_logits(p[None])[1])[0] for p in prefixes)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(c, d, atol=1e-3)  # the prefix does reach the document when it is not masked


def test_generation_with_the_cache_samples_what_rerunning_the_prefix_samples():
    model = build(RECORD)

    class Rerun(torch.nn.Module):  # the same model without its decode hook
        def __init__(self, inner: GPT) -> None:
            super().__init__()
            self.inner = inner

        def logits(self, idx):
            return self.inner.logits(idx)

    cached = calibration.generate(model, 3, 20, batch_size=2, seed=5)
    assert torch.equal(cached, calibration.generate(Rerun(model), 3, 20, batch_size=2, seed=5))
