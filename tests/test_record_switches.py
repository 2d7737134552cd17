"""The record-stack switches of ModelConfig / OptimConfig / TrainConfig: each against an independent computation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pgolf_model.config import ConfigError, ModelConfig
from pgolf_model.model import GPT, rms_norm

BASE = dict(vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2)


def build(seed: int = 0, **switches) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(**BASE, **switches))


def perturb(model: GPT, seed: int = 1) -> GPT:
    """Give the zero-initialized output projections weights, so every block contributes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            for lin in (block.attn.proj, block.mlp.proj):
                lin.weight.copy_(0.1 * torch.randn(lin.weight.shape, generator=g))
    return model


def tokens(seed: int = 0, shape=(2, 16)) -> torch.Tensor:
    return torch.randint(0, BASE["vocab_size"], shape, generator=torch.Generator().manual_seed(seed))


def logits_of(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(idx)


def copy_weights(src: GPT, dst: GPT) -> GPT:
    """Load src's tensors into dst (dst may have extra parameters, which keep their init)."""
    _, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected
    return dst


@pytest.mark.parametrize(
    "switch",
    [dict(mlp_leaky_slope=0.5), dict(rope_dims=4), dict(ln_scale=True), dict(xsa=True)],
)
def test_switch_changes_output(switch):
    off = perturb(build())
    on = copy_weights(off, GPT(ModelConfig(**BASE, **switch)))
    idx = tokens()
    assert not torch.allclose(logits_of(off, idx), logits_of(on, idx), atol=1e-5)


def test_defaults_are_off():
    model = build()
    assert (model.smear, model.bigram, model.value_embeds, model.lm_head) == (None, None, None, None)
    assert all(b.lanes is None and b.attn.gate is None and not b.attn.xsa for b in model.blocks)
    assert (model.encoder_layers, model.decoder_layers, model.lane_layers) == ([0, 1], [2, 3], [])


def test_leaky_relu_squared_mlp():
    model = build(mlp_leaky_slope=0.5)
    mlp = model.blocks[0].mlp
    x = torch.randn(3, 32)
    h = x @ mlp.fc.weight.T
    expected = (torch.where(h > 0, h, 0.5 * h) ** 2) @ mlp.proj.weight.T
    torch.testing.assert_close(mlp(x), expected)


def test_partial_rope_leaves_tail_dims_alone():
    model = build(rope_dims=4)
    rot = model.blocks[0].attn.rotary
    x = torch.randn(1, 2, 10, 8)
    y = rot(x)
    torch.testing.assert_close(y[..., 4:], x[..., 4:])
    # Position 0 is not rotated at all; later positions are (norm-preserving) rotations of the first 4 dims.
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])
    assert not torch.allclose(y[:, :, 3, :4], x[:, :, 3, :4])
    torch.testing.assert_close(y[..., :4].norm(dim=-1), x[..., :4].norm(dim=-1))


def test_ln_scale_divides_inputs_by_sqrt_depth():
    model = build(ln_scale=True)
    x = torch.randn(2, 5, 32)
    for i, block in enumerate(model.blocks):
        torch.testing.assert_close(block.norm(x), rms_norm(x) / (i + 1) ** 0.5)


def test_xsa_output_is_orthogonal_to_own_value():
    model = build(xsa=True)
    attn = model.blocks[0].attn
    captured = {}
    attn.proj.register_forward_hook(lambda mod, inp, out: captured.setdefault("y", inp[0]))
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        attn(x)
        v = attn.c_v(x).view(2, 7, 2, 8)
    y = captured["y"].view(2, 7, 4, 8)
    for h in range(4):
        own_v = v[:, :, h // 2]  # heads 0,1 share KV group 0; heads 2,3 group 1
        dots = (y[:, :, h] * own_v).sum(-1)
        assert dots.abs().max() < 1e-5
    # ... and it is the projection of the plain attention output (not, say, zero).
    plain = GPT(ModelConfig(**BASE))
    plain.load_state_dict(model.state_dict())
    captured.clear()
    plain.blocks[0].attn.proj.register_forward_hook(lambda mod, inp, out: captured.setdefault("y", inp[0]))
    with torch.no_grad():
        plain.blocks[0].attn(x)
    y_plain = captured["y"].view(2, 7, 4, 8)
    for h in range(4):
        v_hat = F.normalize(v[:, :, h // 2], dim=-1)
        expected = y_plain[:, :, h] - (y_plain[:, :, h] * v_hat).sum(-1, keepdim=True) * v_hat
        torch.testing.assert_close(y[:, :, h], expected, atol=1e-6, rtol=1e-5)


def test_attn_gate_halves_heads_at_init_and_follows_weights():
    off = perturb(build())
    on = copy_weights(off, GPT(ModelConfig(**BASE, attn_gate_width=3)))
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        # sigmoid(0) = 1/2 on every head at init; the zero-init W_o still makes the whole model start the same.
        torch.testing.assert_close(on.blocks[1].attn(x), 0.5 * off.blocks[1].attn(x))
        gate = on.blocks[1].attn.gate
        gate[2, 0] = 40.0  # head 2 reads x[..., 0]: fully open where x0 > 0, shut where x0 < 0
        y = on.blocks[1].attn(x)
    assert not torch.allclose(y, 0.5 * off.blocks[1].attn(x))
    assert on.blocks[1].attn.gate.shape == (4, 3)
    assert "blocks.1.attn.gate" in [n for n, _ in on.param_groups()["scalar"]]


def test_smear_gate_is_identity_at_init_and_blocked_at_bos():
    off = perturb(build())
    on = copy_weights(off, GPT(ModelConfig(**BASE, smear_gate=True, bos_id=1)))
    idx = tokens()
    idx[0, 5] = 1
    torch.testing.assert_close(logits_of(on, idx), logits_of(off, idx))
    with torch.no_grad():
        on.smear.lam.fill_(0.7)
        on.smear.weight.fill_(0.3)
        e = off.tok_emb(idx)
        got = on.embed(idx)
    gate = torch.sigmoid(e[:, :, :12] @ torch.full((12,), 0.3))
    expected = e.clone()
    for b in range(idx.size(0)):
        for t in range(1, idx.size(1)):
            if idx[b, t] != 1:
                expected[b, t] = e[b, t] + 0.7 * gate[b, t] * e[b, t - 1]
    torch.testing.assert_close(got, rms_norm(expected))
    torch.testing.assert_close(got[0, 5], rms_norm(e[0, 5]))


def test_parallel_residual_lanes_match_hand_computation():
    model = perturb(build(parallel_from=3))
    assert [b.lanes is not None for b in model.blocks] == [False, False, False, True]
    assert (model.decoder_layers, model.lane_layers) == ([2], [3])
    with torch.no_grad():
        model.blocks[3].lanes.decay.copy_(torch.tensor([1.1, 0.9]))
        model.blocks[3].lanes.mix.copy_(torch.tensor([[1.0, 0.5], [0.25, 2.0]]))
        idx = tokens()
        x0 = model.embed(idx)
        x = model.blocks[0](x0, x0)
        s0 = x
        x = model.blocks[1](x, x0)
        s1 = x
        x = model.blocks[2](x + model.skip_weights[0] * s1, x0)
        x = x + model.skip_weights[1] * s0
        blk = model.blocks[3]
        a = blk.attn_scale * blk.attn(rms_norm(blk.resid_mix[0] * x + blk.resid_mix[1] * x0))
        m = blk.mlp_scale * blk.mlp(rms_norm(x))
        lane0 = 1.1 * x + 1.0 * a + 0.5 * m
        lane1 = 0.9 * x + 0.25 * a + 2.0 * m
        expected = rms_norm(0.5 * (lane0 + lane1))
        torch.testing.assert_close(model.hidden(idx), expected)
    with pytest.raises(ConfigError, match="parallel_from"):
        ModelConfig(**BASE, parallel_from=1)


def test_depth_recurrence_runs_named_layers():
    cfg = dict(BASE, num_layers=11)
    model = GPT(ModelConfig(**cfg, loop_start=3, loop_end=5, num_loops=2))
    # The 1.0611 record's virtual order (its log's "layer_loop:enabled ... encoder:[...] decoder:[...]"): 17
    # layers, 8 skip connections.
    assert model.encoder_layers == [0, 1, 2, 3, 4, 5, 3, 4]
    assert model.decoder_layers == [5, 3, 4, 5, 6, 7, 8, 9, 10]
    assert model.skip_weights.shape[0] == 8
    calls: list[int] = []
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda mod, args, i=i: calls.append(i))
    with torch.no_grad():
        model.logits(tokens())
    assert calls == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]
    model.set_looping(False)
    assert model.encoder_layers == [0, 1, 2, 3, 4] and model.decoder_layers == [5, 6, 7, 8, 9, 10]
    calls.clear()
    with torch.no_grad():
        model.logits(tokens())
    assert calls == list(range(11))
    with pytest.raises(ConfigError, match="loop_end"):
        ModelConfig(**cfg, loop_start=4, loop_end=11, num_loops=1)
    with pytest.raises(ConfigError, match="parallel_from = 8"):
        ModelConfig(**cfg, loop_start=3, loop_end=8, num_loops=1, parallel_from=8)
    # The record's combination runs, with every switch on: lanes start at block 8, after the loops.
    full = ModelConfig(**cfg, loop_start=3, loop_end=5, num_loops=2, parallel_from=8, xsa=True, rope_dims=4)
    full = dataclasses.replace(full, ln_scale=True, smear_gate=True, attn_gate_width=12, mlp_leaky_slope=0.5)
    with torch.no_grad():
        assert torch.isfinite(GPT(full)(tokens(), tokens(1))).item()


def test_bigram_hash_embedding():
    off = perturb(build())
    on = copy_weights(off, GPT(ModelConfig(**BASE, bigram_buckets=16, bigram_dim=8)))
    idx = tokens()
    torch.testing.assert_close(logits_of(on, idx), logits_of(off, idx))  # zero-initialized table
    with torch.no_grad():
        on.bigram.emb.weight.normal_()
        got = on.embed(idx)
    for b in range(idx.size(0)):
        for t in range(idx.size(1)):
            bucket = 15 if t == 0 else ((36313 * int(idx[b, t])) ^ (27191 * int(idx[b, t - 1]))) % 15
            row = on.bigram.emb.weight[bucket] @ on.bigram.proj.weight.T
            expected = rms_norm(off.tok_emb.weight[idx[b, t]] + 0.05 * row)
            torch.testing.assert_close(got[b, t], expected.detach())
    assert not torch.allclose(logits_of(on, idx), logits_of(off, idx))


@pytest.mark.parametrize(
    "bad",
    [
        dict(rope_dims=3),
        dict(rope_dims=10),
        dict(mlp_leaky_slope=-1.0),
        dict(attn_gate_width=33),
        dict(bos_id=64),
        dict(ve_layers=(4,)),
        dict(ve_layers=(1, 1)),
        dict(ve_layers=("a",)),
        dict(ve_dim=0),
    ],
)
def test_bad_switch_values_are_rejected(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        ModelConfig(**BASE, **bad)


VE = dict(ve_layers=(1, 3), ve_dim=8)  # KV width 2 x 8 = 16, so the table is projected


def test_value_embeddings_are_the_shared_table_times_each_layer_scale():
    model = build(**VE)
    with torch.no_grad():
        model.value_embeds.layer_scales.copy_(torch.tensor([0.5, -2.0]))
        model.value_embeds.scale.fill_(0.3)
        idx = tokens()
        ves = model.value_embeds(idx)
    ve = model.value_embeds
    table = ve.emb.weight.detach()[idx] @ ve.proj.weight.detach().T  # (B, T, 16)
    assert sorted(ves) == [1, 3]
    torch.testing.assert_close(ves[1], 0.3 * 0.5 * table)
    torch.testing.assert_close(ves[3], 0.3 * -2.0 * table)


@pytest.mark.parametrize("xsa", [False, True])
def test_value_embedding_is_added_to_the_values(xsa):
    # Attention is linear in v: adding ve = x M^T to the values is attention with c_v's weight plus M.
    model = build(xsa=xsa, **VE)
    attn = model.blocks[1].attn
    x, m = torch.randn(2, 6, 32), 0.3 * torch.randn(16, 32)
    with torch.no_grad():
        y = attn(x, ve=F.linear(x, m))
        attn.c_v.weight += m
        expected = attn(x)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-5)


def test_value_embeddings_reach_only_the_listed_blocks_on_every_pass():
    model = perturb(build(num_loops=1, loop_start=1, loop_end=2, **VE))
    seen = []
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_pre_hook(
            lambda mod, args, kwargs, i=i: seen.append((i, kwargs.get("ve") is not None)), with_kwargs=True
        )
    logits_of(model, tokens())
    assert seen == [(0, False), (1, True), (2, False), (1, True), (2, False), (3, True)]
    # Zero layer scales switch VE off: the model is the plain one with the same weights.
    with torch.no_grad():
        model.value_embeds.layer_scales.zero_()
    plain = GPT(ModelConfig(**BASE, num_loops=1, loop_start=1, loop_end=2))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("value_embeds.")})
    idx = tokens()
    torch.testing.assert_close(logits_of(model, idx), logits_of(plain, idx))


def test_value_embedding_init_and_groups_as_the_record():
    ve = build(**VE).value_embeds
    assert abs(float(ve.emb.weight.detach().std()) - 0.01) < 0.002
    assert float(ve.scale.detach()) == pytest.approx(0.1)
    w = ve.proj.weight.detach()  # (16, 8), orthogonal columns
    torch.testing.assert_close(w.T @ w, torch.eye(8), atol=1e-5, rtol=0)
    assert ve.layer_scales.tolist() == [1.0, 1.0]
    groups = {g: [n for n, _ in ps] for g, ps in build(**VE).param_groups().items()}
    assert "value_embeds.emb.weight" in groups["embed"]
    assert {"value_embeds.proj.weight", "value_embeds.scale", "value_embeds.layer_scales"} <= set(groups["scalar"])
    bigram = {g: [n for n, _ in ps] for g, ps in build(bigram_buckets=16, bigram_dim=8).param_groups().items()}
    assert "bigram.emb.weight" in bigram["embed"] and "bigram.proj.weight" in bigram["scalar"]
    # No projection when the table already has the KV width (the record's ``proj = None`` case).
    assert build(ve_layers=(2,), ve_dim=16).value_embeds.proj is None


def test_value_embeddings_quantize_export_and_reload():
    from pgolf_model.config import QuantConfig
    from pgolf_model.export.ptq import GroupRule, quantize_state, tensor_groups

    model = build(**VE)
    groups = tensor_groups(model)
    assert groups["value_embeds.emb.weight"] == "embed" and groups["value_embeds.proj.weight"] == "other"
    cfg = QuantConfig(keep_float_max_numel=100)
    rules = {g: GroupRule(6) for g in ("embed", "attn", "mlp", "other")}
    state = quantize_state(model.state_dict(), groups, rules, cfg)
    entries = state.entries
    assert entries["value_embeds.emb.weight"]["format"] == entries["value_embeds.proj.weight"]["format"] == "int"
    rebuilt = GPT(ModelConfig(**BASE, **VE))
    rebuilt.load_state_dict(state.dequantize())  # strict: every VE tensor is in the artifact's weights
    torch.testing.assert_close(rebuilt.value_embeds.emb.weight, model.value_embeds.emb.weight, atol=0.01, rtol=0)


def test_switches_round_trip_through_dict():
    cfg = ModelConfig(**BASE, xsa=True, rope_dims=4, num_loops=1, loop_end=1)
    assert ModelConfig(**dataclasses.asdict(cfg)) == cfg


# ---------------------------------------------------------------------------------------------------------------------
# Optimizer and training switches


def _svd_polynomial(G: torch.Tensor, coeffs) -> torch.Tensor:
    """Newton-Schulz done on the singular values: each step maps s -> a s + b s^3 + c s^5."""
    U, S, Vh = torch.linalg.svd(G / G.norm(), full_matrices=False)
    for a, b, c in coeffs:
        S = a * S + b * S**3 + c * S**5
    return U @ torch.diag(S) @ Vh


@pytest.mark.parametrize("kind", ["fixed", "polar_express"])
def test_newton_schulz_coefficients_match_svd_polynomial(kind):
    from pgolf_model.training.optim import NS_COEFFICIENTS, POLAR_EXPRESS, newton_schulz

    G = torch.randn(12, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    coeffs = [NS_COEFFICIENTS] * 5 if kind == "fixed" else POLAR_EXPRESS
    got = newton_schulz(G, 5, dtype=torch.float64, eps=0.0, coeffs=kind)
    torch.testing.assert_close(got, _svd_polynomial(G, coeffs))
    torch.testing.assert_close(newton_schulz(G.T, 5, dtype=torch.float64, eps=0.0, coeffs=kind), got.T)


def test_polar_express_is_closer_to_orthogonal():
    from pgolf_model.training.optim import newton_schulz

    G = torch.randn(32, 64, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    errs = {}
    for kind in ("fixed", "polar_express"):
        s = torch.linalg.svdvals(newton_schulz(G, 5, dtype=torch.float64, coeffs=kind))
        errs[kind] = (s - 1).abs().max().item()
    assert errs["polar_express"] < errs["fixed"]
    with pytest.raises(ConfigError, match="muon_ns_coeffs"):
        from pgolf_model.config import OptimConfig

        OptimConfig(muon_ns_coeffs="quintic")


def _muon_update(grad: torch.Tensor, **kw) -> torch.Tensor:
    from pgolf_model.training.optim import Muon

    p = torch.nn.Parameter(torch.zeros_like(grad))
    opt = Muon([p], lr=1.0, momentum=0.9, ns_steps=5, ns_dtype=torch.float64, **kw)
    p.grad = grad.clone()
    opt.step()
    return -p.detach()


def test_muoneq_r_normalizes_rows_before_orthogonalizing():
    g = torch.randn(6, 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    g = g * torch.arange(1, 7, dtype=torch.float64)[:, None]  # rows of very different norms
    rows_normed = g / g.norm(dim=1, keepdim=True)
    # On the first step u = (1 + mu) g; NS is scale-invariant, so MuonEq-R on g = plain Muon on row-normed g.
    torch.testing.assert_close(_muon_update(g, row_norm=True), _muon_update(rows_normed))
    assert not torch.allclose(_muon_update(g, row_norm=True), _muon_update(g))


def test_weight_ema_is_the_hand_computed_average():
    from pgolf_model.training.optim import WeightEMA

    model = torch.nn.Linear(3, 2)
    history = [model.weight.detach().clone()]
    ema = WeightEMA(model, decay=0.9)
    for step in range(4):
        with torch.no_grad():
            model.weight.add_(float(step + 1))
        history.append(model.weight.detach().clone())
        ema.update(model)
    # e_0 = w_0; e_k = 0.9 e_{k-1} + 0.1 w_k, unrolled: 0.9^4 w_0 + sum_k 0.1 * 0.9^(4-k) w_k.
    expected = 0.9**4 * history[0] + sum(0.1 * 0.9 ** (4 - k) * history[k] for k in range(1, 5))
    ema.copy_to(model)
    torch.testing.assert_close(model.weight.detach(), expected)
    with pytest.raises(ValueError, match="decay"):
        WeightEMA(model, decay=1.0)


def test_training_turns_looping_on_late_and_exports_the_ema(tmp_path, dev_sample, monkeypatch):
    from model_data import make_dataset

    from pgolf_model.presets import preset
    from pgolf_model.training import optim
    from pgolf_model.training.trainer import run

    data, tok = make_dataset(tmp_path / "ds", dev_sample[100:160], dev_sample[:10])
    looping: list[bool] = []
    ema_calls = {"update": 0, "copy_to": 0}
    set_looping, update, copy_to = GPT.set_looping, optim.WeightEMA.update, optim.WeightEMA.copy_to

    def record_looping(self, on):
        looping.append(on)
        set_looping(self, on)

    def count(name, fn):
        def wrapped(self, model):
            ema_calls[name] += 1
            fn(self, model)

        return wrapped

    monkeypatch.setattr(GPT, "set_looping", record_looping)
    monkeypatch.setattr(optim.WeightEMA, "update", count("update", update))
    monkeypatch.setattr(optim.WeightEMA, "copy_to", count("copy_to", copy_to))
    cfg = preset("smoke").override(
        {
            "model.vocab_size": 260,
            "model.num_loops": 1,
            "model.loop_end": 0,
            "train.iterations": 8,
            "train.val_every": 0,
            "train.ema_decay": 0.9,
            "train.loop_after": 0.5,
        }
    )
    summary = run(cfg, data=data, tokenizer=tok, out_dir=tmp_path / "run", progress=False)
    # Models are built with looping on; then steps 0..3 run without it, steps 4..7 and the final eval with it.
    first = looping.index(False)
    assert all(looping[:first]) and looping[first : first + 9] == [False] * 4 + [True] * 5
    assert ema_calls == {"update": 8, "copy_to": 1}
    assert abs(summary["artifact_val_bpb"] - summary["val_bpb"]) < 0.05


def test_record_1_11_parameter_count_by_hand():
    from pgolf_model.model import count_parameters
    from pgolf_model.presets import preset

    d, layers = 512, 11
    attn = 2 * d * d + 2 * d * 256 + 8  # q, o; k, v (4 KV heads x 64); q_gain
    block = attn + 2 * d * 3 * d + 4 * d  # MLP 3x; attn/mlp scales, resid_mix (2 rows)
    embed = 1024 * d + 3072 * 112 + 112 * d + 1 + 13  # tied table, bigram table + projection + scale; SmearGate
    ve = 1024 * 128 + 128 * 256 + 1 + 2  # VE table, projection to the KV width, scale, 2 layer scales
    assert count_parameters(preset("record-1.11").model) == layers * block + embed + ve + 5 * d  # 5 U-Net skips
