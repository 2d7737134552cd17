"""LQER factors: the record's grids and scales, the dequantized product against numpy, that it corrects, and its
storage in the weights format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pgolf_model import quant
from pgolf_model.config import QuantConfig
from pgolf_model.export import lqer, ptq
from pgolf_model.export.ptq import GroupRule
from pgolf_model.quant import QuantizedState


def low_rank(rows: int, cols: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g) * 0.01


@pytest.mark.parametrize("shape", [(40, 30), (7, 100), (130, 9)])
def test_grids_scales_and_shapes(shape):
    f = lqer.factors(low_rank(*shape, 6, seed=0) + 0.001 * torch.randn(shape), rank=4, group=64)
    rows, cols = shape
    assert f["rank"] == 4 and f["group"] == 64
    assert f["a_q"].shape == (rows, 4) and f["b_q"].shape == (4, cols)
    assert f["a_q"].dtype == f["b_q"].dtype == np.int8
    assert f["a_q"].min() >= -2 and f["a_q"].max() <= 1
    assert f["b_q"].min() >= -8 and f["b_q"].max() <= 7
    assert f["a_scale"].shape == (1,) and f["b_scale"].shape == (-(-4 * cols // 64),)
    # Each B group's largest magnitude lands on the grid's edge (7.5 rounds to 8, clamped to 7, or -8).
    flat = np.abs(f["b_q"].reshape(-1))
    for i in range(len(f["b_scale"])):
        assert flat[64 * i : 64 * (i + 1)].max() in (7, 8)


def test_correction_is_the_product_of_the_dequantized_factors():
    f = lqer.factors(low_rank(50, 70, 4, seed=1), rank=3, group=64)
    a = f["a_q"].astype(np.float64) * float(f["a_scale"][0])
    b_flat = f["b_q"].reshape(-1).astype(np.float64)
    scales = f["b_scale"].astype(np.float64)
    b = np.array([v * scales[i // 64] for i, v in enumerate(b_flat)]).reshape(3, 70)
    np.testing.assert_allclose(quant.lqer_correction(f).numpy(), a @ b, rtol=1e-5, atol=1e-9)


def test_correction_removes_most_of_a_low_rank_error():
    error = low_rank(256, 128, 4, seed=2)
    corrected = error - quant.lqer_correction(lqer.factors(error, rank=4))
    # INT2 left factors are coarse; the record accepts that for a few kilobytes.
    assert corrected.norm() < 0.75 * error.norm()  # measured 0.67


def test_rank_is_capped_by_the_shape():
    f = lqer.factors(torch.randn(3, 50), rank=4)
    assert f["rank"] == 3 and f["a_q"].shape == (3, 3)


def test_zero_error_gives_zero_correction():
    f = lqer.factors(torch.zeros(10, 20), rank=2)
    assert torch.equal(quant.lqer_correction(f), torch.zeros(10, 20))


@pytest.mark.parametrize(
    "error, rank, message",
    [(torch.zeros(5), 4, "needs a matrix error"), (torch.zeros(5, 5), 0, "rank 0 and group 64 must be positive")],
)
def test_bad_inputs_are_errors(error, rank, message):
    with pytest.raises(ValueError, match=message):
        lqer.factors(error, rank=rank)


def test_corrected_weights_round_trip_through_the_weights_format():
    g = torch.Generator().manual_seed(5)
    state = {"a": torch.randn(40, 70, generator=g), "b": torch.randn(30, 20, generator=g), "c": torch.randn(9)}
    cfg = QuantConfig(keep_float_max_numel=100)
    groups = {"a": "mlp", "b": "attn"}
    rules = {grp: GroupRule(3) for grp in ("embed", "attn", "mlp", "other")}
    qs = ptq.quantize_state(state, groups, rules, cfg, lqer_rank=4, lqer_top=1)
    assert "lqer" in qs.entries["a"] and "lqer" not in qs.entries["b"]  # "a" has the larger error
    data = qs.to_bytes()
    back = QuantizedState.from_bytes(data)
    assert back.to_bytes() == data
    for key in ("a_q", "a_scale", "b_q", "b_scale"):
        assert np.array_equal(back.entries["a"]["lqer"][key], qs.entries["a"]["lqer"][key])
    out = back.dequantize()
    e = qs.entries["a"]
    plain = torch.from_numpy(e["q"]).float() * torch.from_numpy(e["scale"]).float()[:, None]
    torch.testing.assert_close(out["a"], plain + quant.lqer_correction(e["lqer"]))
    assert (out["a"] - state["a"]).norm() < (plain - state["a"]).norm()
    with pytest.raises(ValueError, match="payload ends at byte"):
        # From the end: 9 float16 values, then the LQER scales (1 + ceil(4 * 70 / 64) float16), then their integers.
        QuantizedState.from_bytes(data[: len(data) - 9 * 2 - 6 * 2 - 5])
