"""Per-row quantization error bounds and the deterministic weights serialization."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import one_thread  # noqa: F401 (autouse fixture)

from pgolf_model.config import QuantConfig
from pgolf_model.quant import QuantizedState, dequantize_rows, quantize_rows, tensor_format


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    cols=st.integers(1, 40),
    bits=st.integers(2, 8),
    seed=st.integers(0, 2**16),
    scale=st.floats(1e-3, 1e3),
)
def test_rounding_error_is_at_most_half_a_step(rows, cols, bits, seed, scale):
    w = torch.from_numpy(np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)) * scale
    q, s = quantize_rows(w, bits, clip_quantile=1.0)
    qmax = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and s.dtype == torch.float16
    assert q.abs().max() <= qmax
    err = (dequantize_rows(q, s) - w).abs()
    step = s.float()[:, None]
    # Half a step, plus the float16 rounding of the scale times the largest level (it can shrink the top level): a
    # relative 2^-11 for normal float16 scales, an absolute 2^-25 (half the spacing) for subnormal ones (< 2^-14).
    scale_rounding = torch.clamp(step * 2**-11, min=2**-25)
    assert (err <= step / 2 + qmax * scale_rounding + 1e-6 * scale).all()


def test_clipping_caps_outliers_at_the_row_quantile():
    w = torch.zeros(2, 1000)
    w[0, :] = torch.linspace(-1, 1, 1000)
    w[0, 0] = -50.0  # one outlier
    q, s = quantize_rows(w, 8, clip_quantile=0.99)
    deq = dequantize_rows(q, s)
    assert deq[0].abs().max() < 1.0  # the outlier was clipped to the 99% quantile
    assert (deq[1] == 0).all() and s[1] == 1  # an all-zero row keeps scale 1 and zeros


def test_format_threshold():
    cfg = QuantConfig(keep_float_max_numel=100)
    assert tensor_format((10, 10), cfg) == "float16"
    assert tensor_format((10, 11), cfg) == "int"
    assert tensor_format((1000,), cfg) == "float16"  # vectors are never quantized per row


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "emb": torch.randn(50, 16, generator=g),
        "gain": torch.randn(16, generator=g),
        "mlp": torch.randn(16, 64, generator=g) * 0.02,
        "mix": torch.randn(2, 16, generator=g),
    }


def test_serialization_round_trips_and_is_deterministic():
    cfg = QuantConfig(bits=6, keep_float_max_numel=100)
    qs = QuantizedState.quantize(_state(), cfg)
    data = qs.to_bytes()
    assert QuantizedState.quantize(_state(), cfg).to_bytes() == data
    back = QuantizedState.from_bytes(data)
    assert back.to_bytes() == data
    assert list(back.entries) == list(_state())  # order kept
    out = back.dequantize()
    for name, t in _state().items():
        assert out[name].shape == t.shape and out[name].dtype == torch.float32
    assert [back.entries[n]["format"] for n in out] == ["int", "float16", "int", "float16"]
    assert back.entries["emb"]["bits"] == 6 and np.abs(back.entries["emb"]["q"]).max() <= 31
    assert torch.equal(out["gain"], _state()["gain"].half().float())


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: b"XXXX" + d[4:], "not quantized weights"),
        (lambda d: d[:-3], "payload ends at byte"),
        (lambda d: d + b"\0", "1 bytes after the last tensor"),
    ],
)
def test_corrupt_weights_are_errors(mutate, message):
    data = QuantizedState.quantize(_state(), QuantConfig(keep_float_max_numel=100)).to_bytes()
    with pytest.raises(ValueError, match=message):
        QuantizedState.from_bytes(mutate(data), where="w")


def test_integer_state_tensors_are_refused():
    with pytest.raises(ValueError, match=r"state tensor step has dtype torch\.int64"):
        QuantizedState.quantize({"step": torch.tensor([3])}, QuantConfig())
