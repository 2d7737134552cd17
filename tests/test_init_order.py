"""A seeded GPT starts from the official baseline's initial weights, and ``embed_bf16`` keeps the embedding tables in
bf16 as the baseline and the records do.

The reference is built here from the baseline script's description (records/track_10min_16mb/2026-03-17_NaiveBaseline,
docs/records.md), with torch's own modules: the script seeds torch, constructs its modules in order (the token
``nn.Embedding``; per block the query, key, value and output ``nn.Linear`` of attention, then the MLP's up and down
``nn.Linear``; an untied head's ``nn.Linear`` last), each drawing torch's default init; then re-draws the tied
embedding from N(0, std^2) and zeroes the output projections; then casts the model to bf16 and its matrices back to
fp32, leaving the embedding bf16.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgolf_model.config import ModelConfig
from pgolf_model.model import GPT
from pgolf_model.presets import preset

SMALL = dict(vocab_size=96, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)


def official_initial_state(cfg: ModelConfig, seed: int, cast: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    kv = cfg.num_kv_heads * cfg.model_dim // cfg.num_heads
    d, hidden = cfg.model_dim, cfg.mlp_mult * cfg.model_dim
    embedding = nn.Embedding(cfg.vocab_size, d)
    blocks = []
    for _ in range(cfg.num_layers):
        shapes = {"attn.c_q": (d, d), "attn.c_k": (d, kv), "attn.c_v": (d, kv), "attn.proj": (d, d)}
        shapes |= {"mlp.fc": (d, hidden), "mlp.proj": (hidden, d)}
        blocks.append({name: nn.Linear(i, o, bias=False) for name, (i, o) in shapes.items()})
    head = None if cfg.tie_embeddings else nn.Linear(d, cfg.vocab_size, bias=False)
    with torch.no_grad():
        if head is None:
            embedding.weight.normal_(0.0, cfg.tied_embed_init_std)
        else:
            head.weight.zero_()
        for block in blocks:
            block["attn.proj"].weight.zero_()
            block["mlp.proj"].weight.zero_()
    state = {"tok_emb.weight": embedding.weight.detach()}
    for i, block in enumerate(blocks):
        state |= {f"blocks.{i}.{name}.weight": lin.weight.detach() for name, lin in block.items()}
        state[f"blocks.{i}.attn.q_gain"] = torch.full((cfg.num_heads,), cfg.qk_gain_init)
        state[f"blocks.{i}.attn_scale"] = torch.ones(d)
        state[f"blocks.{i}.mlp_scale"] = torch.ones(d)
        state[f"blocks.{i}.resid_mix"] = torch.stack([torch.ones(d), torch.zeros(d)])
    state["skip_weights"] = torch.ones(cfg.num_layers // 2, d)
    if head is not None:
        state["lm_head.weight"] = head.weight.detach()
    if cast:
        state = {k: v.bfloat16() if k == "tok_emb.weight" else v.bfloat16().float() for k, v in state.items()}
    return state


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("cast", [True, False])
def test_seeded_init_is_the_official_runs(tied, cast):
    cfg = ModelConfig(**SMALL, tie_embeddings=tied, embed_bf16=cast)
    want = official_initial_state(cfg, 1337, cast)
    torch.manual_seed(1337)
    got = GPT(cfg).state_dict()
    assert sorted(got) == sorted(want)
    differ = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    assert differ == []


def test_baseline_preset_keeps_the_embedding_in_bf16_and_trains_on_cpu():
    cfg = preset("baseline").model
    assert cfg.embed_bf16 and cfg.tie_embeddings
    small = ModelConfig(**{**cfg.__dict__, **SMALL})
    model = GPT(small)
    assert model.tok_emb.weight.dtype == torch.bfloat16
    assert {p.dtype for n, p in model.named_parameters() if n != "tok_emb.weight"} == {torch.float32}
    x = torch.randint(0, small.vocab_size, (2, 16))
    loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    assert loss.dtype == torch.float32 and model.tok_emb.weight.grad.dtype == torch.bfloat16


def test_record_parts_draw_after_the_baseline_tensors():
    """Switching on an optional part leaves the baseline tensors' initial values as they were."""
    plain = ModelConfig(**SMALL)
    extra = ModelConfig(**SMALL, bigram_buckets=64, ve_layers=(2,), attn_gate_width=4)
    torch.manual_seed(7)
    a = GPT(plain).state_dict()
    torch.manual_seed(7)
    b = GPT(extra).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# The record presets' tables: the token embedding, BigramHash's and the value embeddings' (record-1.11 has both).
TABLES = dict(bigram_buckets=64, bigram_dim=8, ve_layers=(1, 2), ve_dim=8, smear_gate=True)


@pytest.mark.parametrize("name", ["record-1.11", "record-caseops", "record-latest"])
def test_record_presets_train_their_embedding_tables_in_bf16(name):
    """The records' ``model.bfloat16()`` then ``restore_fp32_params``: tables bf16, every other tensor fp32 holding a
    bf16-rounded initial value."""
    cfg = preset(name).model
    assert cfg.embed_bf16
    model = GPT(ModelConfig(**SMALL, **TABLES, embed_bf16=cfg.embed_bf16, lane0_skip=cfg.lane0_skip))
    tables = {"tok_emb.weight", "bigram.emb.weight", "value_embeds.emb.weight"}
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {n for n, t in dtypes.items() if t == torch.bfloat16} == tables
    rounded = [n for n, p in model.named_parameters() if not torch.equal(p, p.bfloat16().to(p.dtype))]
    assert rounded == []


def test_bf16_tables_compute_as_fp32_tables_holding_the_same_values_without_autocast():
    """On a CPU (no autocast) a bf16 table's rows are widened exactly: the model equals its fp32 twin, logits and
    gradients, so ``embed_bf16`` changes the stored values (and the optimizer's arithmetic on them), not the math."""
    cfg = ModelConfig(**SMALL, **TABLES, embed_bf16=True)
    torch.manual_seed(3)
    half = GPT(cfg)
    twin = GPT(ModelConfig(**{**cfg.__dict__, "embed_bf16": False}))
    twin.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    with torch.no_grad():  # non-zero tables and projections, so that every table reaches the loss
        for m in (half, twin):
            torch.manual_seed(4)
            for p in (m.bigram.emb.weight, m.bigram.proj.weight, m.value_embeds.emb.weight):
                p.copy_(torch.randn_like(p.float()).bfloat16().to(p.dtype))
    x = torch.randint(0, cfg.vocab_size, (2, 12))
    assert torch.equal(half.logits(x), twin.logits(x))
    for m in (half, twin):
        m(x[:, :-1], x[:, 1:]).backward()
    for (name, a), b in zip(half.named_parameters(), twin.parameters()):
        assert a.grad.dtype == a.dtype, name
        if a.dtype == torch.float32:
            assert torch.equal(a.grad, b.grad), name
        else:  # a table's gradient is accumulated in bf16 (the tied one from the head's and the lookup's parts)
            assert torch.allclose(a.grad.float(), b.grad, rtol=1e-2, atol=1e-2 * b.grad.abs().max().item()), name


def test_bf16_tables_under_autocast_keep_the_stream_in_bf16():
    """Under bf16 autocast (CUDA's training path; CPU autocast here) the rows stay bf16, so x0 is bf16 and the loss is
    the fp32 model's to bf16 precision."""
    cfg = ModelConfig(**SMALL, **TABLES, embed_bf16=True)
    torch.manual_seed(5)
    model = GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 12))
    exact = model(x[:, :-1], x[:, 1:]).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.embed(x).dtype == torch.bfloat16
        loss = model(x[:, :-1], x[:, 1:])
    assert loss.dtype == torch.float32 and abs(loss.item() - exact) < 0.02 * exact
