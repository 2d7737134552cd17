"""Post-training quantization of a state: tensor groups, RTN identical to ``quant``'s baseline path, GPTQ where a
Hessian is given, per-group rules, LQER on the worst matrices, and the memo cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf_model import quant
from pgolf_model.config import ModelConfig, QuantConfig
from pgolf_model.export import gptq, ptq
from pgolf_model.export.ptq import GroupRule
from pgolf_model.model import GPT
from pgolf_model.quant import QuantizedState


def small_gpt(tie: bool = True) -> GPT:
    torch.manual_seed(0)
    model = GPT(
        ModelConfig(vocab_size=300, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, tie_embeddings=tie)
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # the zero-initialized projections get values too
    return model


def test_tensor_groups():
    groups = ptq.tensor_groups(small_gpt())
    assert groups["tok_emb.weight"] == "embed"
    assert groups["blocks.1.attn.c_q.weight"] == groups["blocks.0.attn.proj.weight"] == "attn"
    assert groups["blocks.0.mlp.fc.weight"] == groups["blocks.1.mlp.proj.weight"] == "mlp"
    assert groups["skip_weights"] == groups["blocks.0.resid_mix"] == "other"
    assert "blocks.0.attn.q_gain" not in groups  # vectors are never quantized per row
    assert ptq.tensor_groups(small_gpt(tie=False))["lm_head.weight"] == "embed"


def uniform(bits: int, k: float = 0.0) -> dict[str, GroupRule]:
    return {g: GroupRule(bits, k) for g in ptq.GROUPS}


@pytest.mark.parametrize("bits", [5, 8])
def test_round_to_nearest_is_the_quant_baseline_byte_for_byte(bits):
    model, cfg = small_gpt(), QuantConfig(bits=bits, keep_float_max_numel=2000)
    state = model.state_dict()
    ours = ptq.quantize_state(state, ptq.tensor_groups(model), uniform(bits), cfg)
    assert ours.to_bytes() == QuantizedState.quantize(state, cfg).to_bytes()


def test_gptq_where_a_hessian_is_given_and_rules_per_group():
    model, cfg = small_gpt(), QuantConfig(keep_float_max_numel=2000)
    state = model.state_dict()
    name = "blocks.0.mlp.fc.weight"
    x = torch.randn(500, 64) @ torch.randn(64, 64)
    hessians = {name: x.T @ x / 500}
    rules = {"embed": GroupRule(8), "attn": GroupRule(6, 13.0), "mlp": GroupRule(5, 11.5), "other": GroupRule(8)}
    qs = ptq.quantize_state(state, ptq.tensor_groups(model), rules, cfg, hessians=hessians)
    e = qs.entries
    assert e["tok_emb.weight"]["bits"] == 8 and e["blocks.1.attn.c_v.weight"]["bits"] == 6
    assert e[name]["bits"] == 5 and e["blocks.1.mlp.proj.weight"]["bits"] == 5
    w = state[name]
    scale = quant.row_scales(w, 5, sdclip_k=11.5)
    assert np.array_equal(e[name]["q"], gptq.gptq(w, hessians[name], scale, 5).numpy())
    assert np.array_equal(e[name]["scale"], scale.numpy())
    other = state["blocks.0.mlp.proj.weight"]  # no Hessian: rounded to nearest
    scale = quant.row_scales(other, 5, sdclip_k=11.5)
    assert np.array_equal(e["blocks.0.mlp.proj.weight"]["q"], quant.round_to_nearest(other, scale, 5).numpy())
    assert e["skip_weights"]["format"] == "float16"  # under keep_float_max_numel


def test_lqer_goes_to_the_worst_matrices():
    model, cfg = small_gpt(), QuantConfig(keep_float_max_numel=2000)
    state = model.state_dict()
    qs = ptq.quantize_state(state, ptq.tensor_groups(model), uniform(3), cfg, lqer_rank=4, lqer_top=2)
    errors = {
        n: float((state[n] - torch.from_numpy(e["q"]).float() * torch.from_numpy(e["scale"]).float()[:, None]).norm())
        for n, e in qs.entries.items()
        if e["format"] == "int"
    }
    worst = sorted(errors, key=errors.get)[-2:]
    assert sorted(n for n, e in qs.entries.items() if "lqer" in e) == sorted(worst)
    entry = qs.entries[worst[-1]]
    assert entry["lqer"]["rank"] == 4 and entry["lqer"]["a_q"].shape == (state[worst[-1]].shape[0], 4)


def test_the_cache_memoizes_per_name_bits_and_k(monkeypatch):
    model, cfg = small_gpt(), QuantConfig(keep_float_max_numel=2000)
    state, groups = model.state_dict(), ptq.tensor_groups(model)
    calls = []
    real = ptq.quantize_matrix
    monkeypatch.setattr(ptq, "quantize_matrix", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache: dict = {}
    a = ptq.quantize_state(state, groups, uniform(6), cfg, cache=cache).to_bytes()
    n = len(calls)
    assert ptq.quantize_state(state, groups, uniform(6), cfg, cache=cache).to_bytes() == a and len(calls) == n
    ptq.quantize_state(state, groups, uniform(6, 12.0), cfg, cache=cache)
    assert len(calls) == 2 * n


def test_bad_states_are_errors():
    model, cfg = small_gpt(), QuantConfig(keep_float_max_numel=2000)
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"matrix tok_emb\.weight \(300, 64\) belongs to no tensor group"):
        ptq.quantize_state(state, {}, uniform(6), cfg)
    with pytest.raises(ValueError, match="only float tensors"):
        ptq.quantize_state({"step": torch.tensor([1])}, {}, uniform(6), cfg)
