"""A seeded GPT starts from the official baseline's initial weights, and ``embed_bf16`` keeps the embedding in bf16.

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
