"""AWQ-lite (PR #1908): the saliency and the group chosen against brute force, GPTQ with a protected group against
plain GPTQ (the same when the group's grid is the plain one; lower output error on a case where a few inputs carry
large activations), and the stored format's round trip."""

from __future__ import annotations

import pytest
import torch

from pgolf_model.config import Config, ConfigError, QuantConfig
from pgolf_model.export import awq, gptq
from pgolf_model.export.ptq import GroupRule, quantize_state
from pgolf_model.quant import QuantizedState, row_scales


def _hessian(cols: int, loud: slice, gain: float, seed: int = 0) -> torch.Tensor:
    """E[x x^T] of inputs whose channels in ``loud`` are ``gain`` times larger (correlated, as real activations)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, cols, generator=g) + 0.3 * torch.randn(4096, 1, generator=g)
    x[:, loud] *= gain
    return x.T @ x / x.size(0)


def test_saliency_is_activation_rms_times_mean_absolute_weight():
    w = torch.randn(6, 8)
    h = _hessian(8, slice(0, 2), 5.0)
    want = torch.tensor([h[c, c].sqrt() * w[:, c].abs().mean() for c in range(8)])
    torch.testing.assert_close(awq.saliency(w, h), want)


def test_the_most_salient_groups_across_matrices_are_chosen():
    torch.manual_seed(0)
    state = {"a": torch.randn(8, 32), "b": torch.randn(8, 48), "c": torch.randn(8, 32)}
    hess = {
        "a": _hessian(32, slice(0, 0), 1.0),
        "b": _hessian(48, slice(20, 28), 6.0),
        "c": _hessian(32, slice(4, 8), 3),
    }
    bits = {"a": 6, "b": 6, "c": 8}  # c is already at int8: never a candidate
    scores = {
        (n, g): float(awq.saliency(state[n], hess[n])[g : g + 16].sum())
        for n in ("a", "b")
        for g in range(0, state[n].size(1) - 15, 16)
    }
    best = sorted(scores, key=lambda k: -scores[k])[:2]
    got = awq.select_groups(state, hess, bits, top=2, size=16, hi_bits=8)
    assert sorted((n, s) for n, starts in got.items() for s in starts) == sorted(best)
    assert "c" not in got and "b" in got


def test_a_protected_group_on_the_plain_grid_is_plain_gptq():
    torch.manual_seed(1)
    w, h = torch.randn(16, 64), _hessian(64, slice(8, 16), 4.0)
    scale = row_scales(w, 6, sdclip_k=3.0)
    plain = gptq.gptq(w, h, scale, 6)
    assert torch.equal(gptq.gptq(w, h, scale, 6, protect=([0, 32], 16, scale, 6)), plain)


@pytest.mark.parametrize("bits", [4, 6])
def test_awq_lowers_the_output_error_where_a_few_inputs_are_loud(bits):
    torch.manual_seed(2)
    w, h = torch.randn(64, 128) * 0.02, _hessian(128, slice(64, 80), 12.0)
    rule = GroupRule(bits, 3.0)
    cfg = QuantConfig(bits=bits, method="gptq", sdclip_k=3.0, keep_float_max_numel=0)
    groups = {"w": "mlp"}
    state = {"w": w}
    plain = quantize_state(state, groups, {"mlp": rule}, cfg, hessians={"w": h})
    cfg_awq = QuantConfig(
        bits=bits, method="gptq", sdclip_k=3.0, keep_float_max_numel=0, awq_groups=1, awq_group_size=16
    )
    with_awq = quantize_state(state, groups, {"mlp": rule}, cfg_awq, hessians={"w": h})
    assert with_awq.entries["w"]["awq"] == (16, 8, 64)  # the loud inputs' group
    err_plain = gptq.hessian_error(w, plain.dequantize()["w"], h)
    err_awq = gptq.hessian_error(w, with_awq.dequantize()["w"], h)
    assert err_awq < 0.8 * err_plain
    # The other columns are still on the plain grid; the group's integers reach past it.
    q = with_awq.entries["w"]["q"]
    assert abs(q[:, 64:80]).max() > 2 ** (bits - 1) - 1 >= abs(q[:, :64]).max()


def test_an_awq_entry_survives_serialization():
    torch.manual_seed(3)
    w, h = torch.randn(32, 128), _hessian(128, slice(0, 16), 8.0)
    cfg = QuantConfig(bits=5, method="gptq", keep_float_max_numel=0, awq_groups=2, awq_group_size=16, lqer_rank=2)
    qs = quantize_state(
        {"w": w, "v": torch.randn(4, 128)}, {"w": "mlp", "v": "attn"}, {"mlp": GroupRule(5), "attn": GroupRule(5)},
        cfg, hessians={"w": h, "v": _hessian(128, slice(0, 0), 1.0)}, lqer_rank=2, lqer_top=1,
    )  # fmt: skip
    back = QuantizedState.from_bytes(qs.to_bytes())
    assert back.entries["w"]["awq"][:3] == (16, 8, 0)  # the loud inputs' group; the second is w's or v's
    assert sum(len(e.get("awq", ())[2:]) for e in back.entries.values()) == 2
    for name in ("w", "v"):
        torch.testing.assert_close(back.dequantize()[name], qs.dequantize()[name], rtol=0, atol=0)
    assert back.to_bytes() == qs.to_bytes()


def test_awq_needs_gptq():
    with pytest.raises(ConfigError, match="awq_groups"):
        Config().override({"quant.awq_groups": 1})
