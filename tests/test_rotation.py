"""Hadamard rotation before quantization: the matrix against its defining formula, the rotated models against the
original's logits, GPTQ's Hessian in the rotated basis, and the stored rotation's round trip through an artifact and
the per-group codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import one_thread  # noqa: F401 (autouse fixture)
from quant_model import CPU

from pgolf_model import artifact, pergroup
from pgolf_model.config import Config, ConfigError
from pgolf_model.export import gptq, rotation
from pgolf_model.export import weights as export
from pgolf_model.export.ptq import group_members, tensor_groups
from pgolf_model.hadamard import block_size, hadamard, rotate
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.quant import QuantizedState, unrotate

# Float32 logits of the same function computed two ways: the rotation itself is float64 and exact to ~1e-15, the
# remaining difference is float32 summation order through 4 blocks, well under 1e-4 on logits of size ~1-10.
LOGIT_ATOL = 1e-4


def popcount_hadamard(n: int) -> np.ndarray:
    """The definition: ``H[i, j] = (-1)^popcount(i & j) / sqrt(n)``."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.array([[(-1) ** bin(a & b).count("1") for a, b in zip(r, c)] for r, c in zip(i, j)]) / np.sqrt(n)


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_hadamard_matches_its_definition_and_is_its_own_inverse(n):
    h = hadamard(n).numpy()
    np.testing.assert_allclose(h, popcount_hadamard(n), atol=1e-15)
    np.testing.assert_allclose(h @ h, np.eye(n), atol=1e-12)


def test_block_size_is_the_largest_power_of_two_divisor():
    assert [block_size(n) for n in (1, 6, 96, 128, 3072, 7)] == [1, 2, 32, 128, 1024, 1]
    with pytest.raises(ValueError, match="power of two"):
        hadamard(12)
    with pytest.raises(ValueError, match="does not divide"):
        rotate(torch.ones(3, 6), 1, 4)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 6), blocks=st.integers(1, 4), log_block=st.integers(0, 4), dim=st.sampled_from([0, 1]))
def test_rotate_is_a_block_diagonal_product_and_an_involution(rows, blocks, log_block, dim):
    b = 2**log_block
    w = torch.randn(rows, blocks * b, generator=torch.Generator().manual_seed(rows * 31 + blocks)).double()
    w = w if dim == 1 else w.T.contiguous()
    dense = torch.block_diag(*[hadamard(b)] * blocks)
    expected = w @ dense if dim == 1 else dense @ w
    torch.testing.assert_close(rotate(w, dim, b), expected)
    torch.testing.assert_close(rotate(rotate(w, dim, b), dim, b), w)


def rich_config(**model) -> Config:
    """The smoke shape with every part that touches values or the stream: GQA, XSA, value embeddings (with and
    without their projection), BigramHash, SmearGate, the attention gate, lanes and depth recurrence."""
    changes = {
        "model.vocab_size": 64,
        "model.num_layers": 4,
        "model.xsa": True,
        "model.ve_layers": (2, 3),
        "model.bigram_buckets": 32,
        "model.bigram_dim": 16,
        "model.smear_gate": True,
        "model.attn_gate_width": 8,
        "model.parallel_from": 3,
        "model.num_loops": 1,
        "model.loop_start": 1,
        "model.loop_end": 1,
        "model.rope_dims": 8,
    }
    return preset("smoke").override({**changes, **{f"model.{k}": v for k, v in model.items()}})


def random_model(cfg: Config, seed: int = 0) -> GPT:
    """Every parameter random (the zero-initialized projections too), so that no rotated term vanishes."""
    torch.manual_seed(seed)
    model = GPT(cfg.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def tokens(cfg: Config, rows: int = 2, seq: int = 32) -> torch.Tensor:
    return torch.randint(cfg.model.vocab_size, (rows, seq), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("ve_dim", [16, 32])  # 32 = the key/value width: the table is added without a projection
def test_value_rotation_keeps_the_logits(ve_dim):
    cfg = rich_config(ve_dim=ve_dim)
    model = random_model(cfg)
    rotated = rotation.rotate_values(model)
    assert not torch.allclose(rotated.blocks[0].attn.c_v.weight, model.blocks[0].attn.c_v.weight)
    x = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(rotated.logits(x), model.logits(x), atol=LOGIT_ATOL, rtol=0)


def test_rotating_the_mlp_hidden_dimension_does_not_keep_the_logits():
    """PR #2130's OPTROT rotation across the elementwise activation: the control that the logit test can fail."""
    cfg = rich_config()
    model = random_model(cfg)
    broken = rotation.rotate_values(model)
    block = broken.blocks[0].mlp
    hidden = block.fc.weight.size(0)
    block.fc.weight.data = rotate(block.fc.weight.data, 0, block_size(hidden))
    block.proj.weight.data = rotate(block.proj.weight.data, 1, block_size(hidden))
    x = tokens(cfg)
    with torch.no_grad():
        assert (broken.logits(x) - model.logits(x)).abs().max() > 100 * LOGIT_ATOL


@pytest.mark.parametrize("embed_dim", [0, 16])  # 16: a factored embedding, whose up / down sit on the stream
def test_the_stream_rotation_is_exact_in_a_model_whose_stream_multipliers_are_uniform(embed_dim):
    """Where this GPT allows an in-model residual rotation (no SmearGate or gate, every per-channel multiplier of
    the stream equal across channels), rotating exactly the matrices of ``stream_sides`` keeps the logits: the
    list is complete. The rotation needs the uniform multipliers; a trained model's are not, which is why export
    undoes it on dequantization instead."""
    cfg = rich_config(smear_gate=False, attn_gate_width=0, embed_dim=embed_dim)
    model = random_model(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("resid_mix", "skip_weights", "attn_scale", "mlp_scale")):
                p.copy_(p[..., :1].expand_as(p))  # one value per row, the same for every channel
    state = model.state_dict()
    names = [n for n, t in state.items() if t.ndim == 2]
    rotations = rotation.basis_rotations(model, ("residual",), names)
    assert set(rotations) == set(rotation.stream_sides(model))
    rotated = GPT(cfg.model).eval()
    rotated.load_state_dict(rotation.into_basis(state, rotations))
    x = tokens(cfg)
    with torch.no_grad():
        torch.testing.assert_close(rotated.logits(x), model.logits(x), atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("modes", [("input",), ("residual",), ("input", "residual")])
def test_basis_rotations_are_undone_on_dequantization(modes):
    """Quantized in the Hadamard basis at 8 bits, dequantized back: the entries say how, and the result equals the
    dense block-diagonal formula ``H_out (q s) H_in`` and stays close to the float weights."""
    cfg = rich_config()
    model = random_model(cfg)
    state = model.state_dict()
    members = group_members(state, tensor_groups(model), cfg.quant)
    names = [n for ns in members.values() for n in ns]
    rotations = rotation.basis_rotations(model, modes, names)
    assert rotations and set(rotations) <= set(names)
    if "input" in modes:
        assert all(r[1] == block_size(state[n].size(1)) for n, r in rotations.items())
    qs = QuantizedState.quantize(rotation.into_basis(state, rotations), cfg.quant)
    for name, rot in rotations.items():
        qs.entries[name]["rot"] = rot
    back = QuantizedState.from_bytes(qs.to_bytes())
    out = back.dequantize()
    for name, (rb, cb) in rotations.items():
        e = back.entries[name]
        assert e["rot"] == (rb, cb)
        rows, cols = e["shape"]
        left = torch.block_diag(*[hadamard(rb)] * (rows // rb)).float()
        right = torch.block_diag(*[hadamard(cb)] * (cols // cb)).float()
        expected = left @ (torch.from_numpy(e["q"]).float() * torch.from_numpy(e["scale"]).float()[:, None]) @ right
        torch.testing.assert_close(out[name], expected, atol=1e-5, rtol=1e-5)
        assert (out[name] - state[name]).abs().max() < 0.05 * state[name].abs().max()


def test_gptq_error_is_the_same_in_the_rotated_basis():
    """``R H R`` is the right Hessian: the output error of a rotated matrix, measured in the model's basis with H,
    equals the one GPTQ minimized in the rotated basis."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(16, 32, generator=g), torch.randn(256, 32, generator=g)
    h = x.T @ x / len(x)
    w_rot, h_rot = rotate(w, 1, 32), rotate(rotate(h, 0, 32), 1, 32)
    scale = w_rot.abs().amax(1) / 7
    q = gptq.gptq(w_rot, h_rot, scale, 4)
    w_hat_rot = q.float() * scale[:, None]
    assert gptq.hessian_error(w, unrotate(w_hat_rot, (1, 32)), h) == pytest.approx(
        gptq.hessian_error(w_rot, w_hat_rot, h_rot), rel=1e-4
    )


def test_rotate_setting_is_checked():
    with pytest.raises(ConfigError, match=r"quant\.rotate"):
        Config().override({"quant.rotate": ("mlp",)})


@pytest.mark.parametrize("method", ["rtn", "gptq"])
def test_rotated_export_round_trips_through_the_artifact(method, tmp_path):
    """Every rotation on, exported, written and rebuilt from the artifact's own code: its logits are the float
    model's up to int8 error, and the un-rotated export's weights differ (the rotation was applied)."""
    cfg = rich_config().override({"quant.method": method, "quant.calib_seqs": 4, "quant.calib_seq_len": 16})
    model = random_model(cfg)
    plain = export.export_weights(model, cfg, runtime=CPU)
    rot_cfg = cfg.override({"quant.rotate": ("vo", "input", "residual")})
    out = export.export_weights(model, rot_cfg, runtime=CPU)
    assert out.weights != plain.weights
    assert any("rot" in e for e in out.state.entries.values())
    assert pergroup.decompress(pergroup.compress(out.weights, level=1)) == out.weights  # the rotation passes through
    data = artifact.build_compressed(rot_cfg.to_dict(), b"tok", out.compressed, artifact.counted_code())
    path = artifact.write(tmp_path / "model.pga", data)
    rebuilt, _ = artifact.build_model(artifact.read(path))
    x = tokens(cfg)
    with torch.no_grad():
        ref, got = model.logits(x), rebuilt.logits(x)
    assert (got - ref).abs().mean() < 0.05 * ref.abs().mean()
