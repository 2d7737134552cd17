"""Ternary and binary block matrices: the quantizer against a per-group reference, the straight-through gradient,
the reload rescale, the packings against their formulas, and a ternary model evaluated from its artifact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import one_thread  # noqa: F401 (autouse fixture)
from quant_model import CPU

from pgolf_model import artifact, lowbit, pergroup
from pgolf_model.config import Config, ConfigError
from pgolf_model.export import weights as export
from pgolf_model.model import GPT, Rotary
from pgolf_model.presets import preset
from pgolf_model.quant import QuantizedState
from pgolf_model.training import qat


def reference_levels(w: np.ndarray, kind: str, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Group by group, as the record's formulas read: s = mean|w| (>= 1e-8); ternary round(w/s) in [-1, 1], binary
    the sign with 0 -> +1."""
    flat, qs, ss = w.reshape(-1), [], []
    for start in range(0, flat.size, group):
        g = flat[start : start + group].astype(np.float64)
        s = max(float(np.mean(np.abs(g))), 1e-8)
        q = np.clip(np.round(g / s), -1, 1) if kind == "ternary" else np.where(g >= 0, 1, -1)
        qs.append(q)
        ss.append(s)
    return np.concatenate(qs).reshape(w.shape).astype(np.int8), np.array(ss)


@pytest.mark.parametrize("kind", lowbit.KINDS)
def test_levels_match_the_per_group_formula(kind):
    w = torch.randn(6, 256, generator=torch.Generator().manual_seed(0))
    w[0, :128] = 0.0  # an all-zero group: the clamped scale
    q, s = lowbit.levels(w, kind, 128)
    q_ref, s_ref = reference_levels(w.numpy(), kind, 128)
    np.testing.assert_array_equal(q.numpy(), q_ref)
    np.testing.assert_allclose(s.numpy(), s_ref, rtol=1e-6)
    if kind == "ternary":
        assert 0.2 < float((q == 0).float().mean()) < 0.5  # ~1/3 zeros on Gaussian weights (the record: 0.335)


@pytest.mark.parametrize("kind", lowbit.KINDS)
def test_straight_through_estimator(kind):
    w = torch.randn(4, 128, requires_grad=True)
    out = lowbit.LowBit(kind, 64)(w)
    q, s = lowbit.levels(w, kind, 64)
    torch.testing.assert_close(out.detach(), (q.float().reshape(-1, 64) * s[:, None]).reshape(4, 128))
    (out * torch.arange(512.0).view(4, 128)).sum().backward()
    torch.testing.assert_close(w.grad, torch.arange(512.0).view(4, 128))  # the rounding passes the gradient as is


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(lowbit.KINDS), sparse=st.floats(0, 0.9))
def test_reload_rescale_gives_back_the_levels_and_scales(seed, kind, sparse):
    """Re-running the quantizer on the dequantized weights (what a reloaded model does) reproduces q and s."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 128, generator=g) * (torch.rand(3, 128, generator=g) > sparse)
    q, s = lowbit.levels(w, kind, 32)
    q2, s2 = lowbit.levels(lowbit.dequantize(q, s, kind, 32), kind, 32)
    torch.testing.assert_close(q2, q)
    nonzero = q.reshape(-1, 32).abs().sum(1) > 0
    torch.testing.assert_close(s2[nonzero], s[nonzero])


def test_without_the_rescale_the_ternary_scale_shrinks():
    w = torch.randn(1, 128, generator=torch.Generator().manual_seed(3))
    q, s = lowbit.levels(w, "ternary", 128)
    _, s_plain = lowbit.levels(q.float() * s, "ternary", 128)
    torch.testing.assert_close(s_plain, s * q.abs().float().mean())  # shrunk by mean|q| < 1
    assert float(q.abs().float().mean()) < 0.8


def test_packings_follow_their_formulas():
    trits = np.array([-1, 0, 1, 1, -1, 1], dtype=np.int8)
    # byte = sum (q_i + 1) 3^i over 5 trits: 0 + 1*3 + 2*9 + 2*27 + 0*81 = 75; the sixth trit alone: 2
    np.testing.assert_array_equal(lowbit.pack(trits, "ternary"), [75, 2])
    signs = np.array([1, -1, -1, 1, 1, 1, 1, 1, -1], dtype=np.int8)
    np.testing.assert_array_equal(lowbit.pack(signs, "binary"), [0b11111001, 0])
    assert lowbit.packed_size(6, "ternary") == 2 and lowbit.packed_size(9, "binary") == 2
    with pytest.raises(ValueError, match="over 3\\^5"):
        lowbit.unpack(np.array([243], dtype=np.uint8), "ternary", 5)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.sampled_from([-1, 0, 1]), min_size=1, max_size=300), binary=st.booleans())
def test_packing_round_trips(values, binary):
    q = np.array(values, dtype=np.int8)
    kind = "ternary"
    if binary:
        q, kind = np.where(q >= 0, 1, -1).astype(np.int8), "binary"
    packed = lowbit.pack(q, kind)
    assert packed.size == lowbit.packed_size(q.size, kind)
    np.testing.assert_array_equal(lowbit.unpack(packed, kind, q.size), q)


def lowbit_config(kind: str) -> Config:
    return preset("smoke").override({"model.vocab_size": 64, "model.lowbit": kind, "model.lowbit_group": 32})


@pytest.mark.parametrize("kind", lowbit.KINDS)
def test_the_model_runs_its_block_matrices_low_bit_in_training_and_evaluation(kind):
    """The same logits as a plain GPT holding ``q s`` in place of every block matrix, in both modes."""
    cfg = lowbit_config(kind)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    state = model.state_dict()
    matrices = export.lowbit_matrices(model)
    assert len(matrices) == 6 * cfg.model.num_layers  # c_q, c_k, c_v, attn.proj, mlp.fc, mlp.proj per block
    for name in matrices:
        q, s = lowbit.levels(state[name], kind, 32)
        state[name] = (q.float().reshape(-1, 32) * s[:, None]).reshape(q.shape)
    plain = GPT(replace(cfg.model, lowbit="none"))
    plain.load_state_dict(state)
    x = torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(1))
    for mode in (True, False):
        model.train(mode)
        plain.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(model.logits(x), plain.logits(x))
    assert qat.enable(model, cfg.quant) == 0  # late QAT leaves the low-bit matrices alone


@pytest.mark.parametrize("kind", lowbit.KINDS)
def test_export_packs_and_the_artifact_evaluates_the_same_model(kind, tmp_path):
    cfg = lowbit_config(kind)
    torch.manual_seed(0)
    model = GPT(cfg.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    out = export.export_weights(model, cfg, runtime=CPU)
    entries = out.state.entries
    low = [n for n, e in entries.items() if e["format"] == kind]
    assert sorted(low) == sorted(export.lowbit_matrices(model))
    assert [r.group for r in out.plan if r.group == kind] == [kind]
    packed = sum(lowbit.packed_size(entries[n]["q"].size, kind) for n in low)
    levels = sum(entries[n]["q"].size for n in low)
    assert packed == (-(-levels // 8) if kind == "binary" else sum(-(-entries[n]["q"].size // 5) for n in low))
    assert QuantizedState.from_bytes(out.weights).to_bytes() == out.weights
    data = artifact.build_compressed(cfg.to_dict(), b"tok", out.compressed, artifact.counted_code())
    rebuilt, _ = artifact.build_model(artifact.read(artifact.write(tmp_path / "m.pga", data)))
    x = torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = model.logits(x), rebuilt.eval().logits(x)
    # The same levels on both sides; only the float16 rounding of the scales and of the float tensors differs.
    assert (got - ref).abs().max() < 2e-2 * ref.abs().max()
    # The per-group codec groups the integer matrices and passes what follows them (the packed levels) through.
    assert pergroup.decompress(pergroup.compress(out.weights)) == out.weights


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="lowbit_group"):
        preset("smoke").override({"model.lowbit": "ternary", "model.lowbit_group": 48})
    with pytest.raises(ConfigError, match="lowbit"):
        Config().override({"model.lowbit": "int2"})
    cfg = lowbit_config("ternary").override({"quant.rotate": ("vo",)})
    with pytest.raises(ValueError, match=r"quant\.rotate vo"):
        export.export_weights(GPT(cfg.model), cfg, runtime=CPU)


def test_yarn_scales_the_slow_rotary_frequencies_by_its_ramp():
    """The record's formula, written per frequency: pair i of d/2 has ramp clamp((2i/d - 1/4) / (3/4), 0, 1) and is
    divided by 1 + ramp (factor - 1)."""
    dim, base, factor = 16, 5000.0, 2.0
    plain, yarn = Rotary(dim, base).inv_freq, Rotary(dim, base, factor).inv_freq
    for i in range(dim // 2):
        ramp = min(max((2 * i / dim - 0.25) / 0.75, 0.0), 1.0)
        assert float(yarn[i]) == pytest.approx(float(plain[i]) / (1 + ramp * (factor - 1)), rel=1e-6)
    assert float(yarn[0]) == float(plain[0]) and float(yarn[-1]) < float(plain[-1])
