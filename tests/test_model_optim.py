"""Muon (against SVD and a float64 re-implementation), parameter groups, and the schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_data import one_thread  # noqa: F401 (autouse fixture)

from pgolf_model.config import OptimConfig
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.training.optim import Muon, Schedule, build_optimizers, newton_schulz, orthogonalize_all


@pytest.mark.parametrize("shape", [(64, 64), (32, 128), (256, 48), (512, 128)])
def test_newton_schulz_output_is_near_orthogonal(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64)
    x = newton_schulz(g.float(), steps=5, dtype=torch.float32).double()
    sv = torch.linalg.svdvals(x)
    # The quintic is tuned to land singular values in about [0.7, 1.2], not exactly on 1 (Muon's reference).
    assert sv.min() > 0.6 and sv.max() < 1.25, (sv.min().item(), sv.max().item())
    u, _, vt = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vt  # the exact orthogonal factor
    cosine = (x * polar).sum() / (x.norm() * polar.norm())
    assert cosine > 0.98, cosine.item()


def test_newton_schulz_bf16_stays_close_to_fp32():
    g = torch.randn(96, 160, generator=torch.Generator().manual_seed(0))
    a = newton_schulz(g, 5, dtype=torch.float32)
    b = newton_schulz(g, 5, dtype=torch.bfloat16).float()
    assert (a - b).norm() / a.norm() < 0.05


def _reference_muon(w, grads, lr, momentum):
    """Muon in float64 numpy: Nesterov momentum, the same quintic, sqrt(max(1, rows/cols)) scaling."""
    a, b, c = 3.4445, -4.7750, 2.0315
    w, buf = w.copy(), np.zeros_like(w)
    for g in grads:
        buf = momentum * buf + g
        u = g + momentum * buf
        x = u / (np.linalg.norm(u) + 1e-7)
        tall = x.shape[0] > x.shape[1]
        x = x.T if tall else x
        for _ in range(5):
            s = x @ x.T
            x = a * x + (b * s + c * s @ s) @ x
        x = x.T if tall else x
        w -= lr * max(1.0, w.shape[0] / w.shape[1]) ** 0.5 * x
    return w


def test_muon_matches_a_float64_reference():
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((48, 16))
    grads = [rng.standard_normal((48, 16)) for _ in range(4)]
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float32))
    opt = Muon([p], lr=0.05, momentum=0.9, ns_steps=5, ns_dtype=torch.float32)
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    expected = _reference_muon(w0, grads, 0.05, 0.9)
    np.testing.assert_allclose(p.detach().numpy(), expected, atol=2e-5)


@pytest.mark.parametrize("shape", [(5, 16, 48), (3, 48, 16), (1, 32, 32)])
def test_a_bank_iterates_as_each_of_its_matrices(shape):
    bank = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for kind in ("fixed", "polar_express"):
        together = newton_schulz(bank, 5, dtype=torch.float32, coeffs=kind)
        alone = torch.stack([newton_schulz(g, 5, dtype=torch.float32, coeffs=kind) for g in bank])
        torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)


def test_banks_change_no_bit_of_the_updates():
    """Training from a seed reproduces its weights bit for bit (test_base_artifacts): the banks must round as the
    matrices alone did, tall ones included."""
    gen = torch.Generator().manual_seed(2)
    updates = [torch.randn(s, generator=gen) for s in [(64, 32), (32, 64), (64, 32), (32, 32), (32, 64)]]
    banked = orthogonalize_all(updates, 5, torch.float32, "polar_express")
    for u, got in zip(updates, banked):
        scale = max(1.0, u.size(0) / u.size(1)) ** 0.5
        assert torch.equal(got, newton_schulz(u, 5, dtype=torch.float32, coeffs="polar_express") * scale)


def test_muon_banks_of_mixed_shapes_match_the_float64_reference():
    """Five matrices in three banks ((48, 16) twice, (16, 48), (32, 32) twice), each stepped as if alone."""
    rng = np.random.default_rng(4)
    shapes = [(48, 16), (16, 48), (32, 32), (32, 32), (48, 16)]
    w0 = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    params = [torch.nn.Parameter(torch.tensor(w, dtype=torch.float32)) for w in w0]
    opt = Muon(params, lr=0.05, momentum=0.9, ns_steps=5, ns_dtype=torch.float32)
    for step in grads:
        for p, g in zip(params, step):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
    for k, p in enumerate(params):
        expected = _reference_muon(w0[k], [step[k] for step in grads], 0.05, 0.9)
        np.testing.assert_allclose(p.detach().numpy(), expected, atol=2e-5)


def test_every_parameter_is_in_exactly_one_optimizer():
    cfg = preset("smoke").model
    for tie in (True, False):
        model = GPT(cfg.__class__(**{**cfg.__dict__, "tie_embeddings": tie}))
        groups = model.param_groups()
        assert all(p.ndim == 2 for _, p in groups["matrix"])
        assert {n for n, _ in groups["matrix"]} == {
            n
            for n, p in model.named_parameters()
            if n.startswith("blocks.")
            and n.endswith(("c_q.weight", "c_k.weight", "c_v.weight", "proj.weight", "fc.weight"))
        }
        seen = [id(p) for opt in build_optimizers(model, OptimConfig()) for g in opt.param_groups for p in g["params"]]
        assert sorted(seen) == sorted(id(p) for p in model.parameters())
        assert len(groups["head"]) == (0 if tie else 1)


def test_schedule_warmup_warmdown_and_momentum():
    s = Schedule(
        OptimConfig(
            lr_warmup_steps=4,
            warmdown_steps=10,
            muon_momentum_start=0.85,
            muon_momentum=0.95,
            muon_momentum_warmup_steps=100,
        )
    )
    assert [s.lr_scale(i, 100) for i in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert s.lr_scale(89, 100) == 1.0
    assert [s.lr_scale(i, 100) for i in (90, 95, 99, 100)] == [1.0, 0.5, pytest.approx(0.1), 0.0]
    assert s.muon_momentum(0) == 0.85 and s.muon_momentum(50) == pytest.approx(0.9) and s.muon_momentum(500) == 0.95


def test_schedule_apply_sets_every_group():
    model = GPT(preset("smoke").model)
    cfg = OptimConfig(warmdown_steps=10, muon_momentum_warmup_steps=0)
    opts = build_optimizers(model, cfg)
    scale = Schedule(cfg).apply(opts, 95, 100)
    assert scale == 0.5
    for opt in opts:
        for g in opt.param_groups:
            assert g["lr"] == g["base_lr"] * 0.5
            if isinstance(opt, Muon):
                assert g["momentum"] == 0.95


# ---------------------------------------------------------------------------------------------------------------------
# Weight decay, the fractional warm-down and the weight-decay taper (docs/records.md)


def _muon_step(w0: torch.Tensor, g: torch.Tensor, **kw) -> torch.Tensor:
    p = torch.nn.Parameter(w0.clone())
    opt = Muon([p], lr=0.05, momentum=0.9, ns_steps=5, ns_dtype=torch.float32, **kw)
    p.grad = g.clone()
    opt.step()
    return p.detach()


def test_muon_weight_decay_shrinks_before_the_update():
    gen = torch.Generator().manual_seed(0)
    w0, g = torch.randn(24, 16, generator=gen), torch.randn(24, 16, generator=gen)
    plain, decayed = _muon_step(w0, g), _muon_step(w0, g, weight_decay=0.5)
    # p <- p (1 - lr wd) - lr u: the update u depends on the gradient only, so the difference is -lr wd p0.
    torch.testing.assert_close(decayed, plain - 0.05 * 0.5 * w0, atol=1e-6, rtol=0)


def test_adam_weight_decay_is_decoupled_per_group():
    model = GPT(preset("smoke").model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)  # no zeros, so decay is visible on every tensor
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = OptimConfig(embed_wd=0.5, scalar_wd=0.25, tied_embed_lr=0.1, scalar_lr=0.2, matrix_lr=0.0)
    adam, _ = build_optimizers(model, cfg)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradient: Adam's own step is 0, only the decay moves the weights
    adam.step()
    groups = {n: g for g, ps in model.param_groups().items() for n, _ in ps}
    for n, p in model.named_parameters():
        factor = {"embed": 1 - 0.1 * 0.5, "scalar": 1 - 0.2 * 0.25, "matrix": 1.0}[groups[n]]
        torch.testing.assert_close(p.detach(), before[n] * factor, msg=n)


def test_weight_decay_off_is_plain_adam():
    torch.manual_seed(0)
    model = GPT(preset("smoke").model)  # default OptimConfig: tied embedding lr 0.05, betas (0.9, 0.95)
    w = model.tok_emb.weight.detach().clone()
    ref_w = torch.nn.Parameter(w.clone())
    reference = torch.optim.Adam([ref_w], lr=0.05, betas=(0.9, 0.95), eps=1e-8)
    adam, _ = build_optimizers(model, OptimConfig())
    for seed in range(3):
        g = torch.randn(w.shape, generator=torch.Generator().manual_seed(seed))
        model.tok_emb.weight.grad, ref_w.grad = g.clone(), g.clone()
        adam.step()
        reference.step()
    torch.testing.assert_close(model.tok_emb.weight.detach(), ref_w.detach())


def test_fractional_warmdown_with_a_floor():
    # The 1.0611 record: multiplier 1 for f < 1 - 0.85, then max((1 - f) / 0.85, 0.1).
    s = Schedule(OptimConfig(warmdown_frac=0.85, min_lr_scale=0.1))
    for step in (0, 10, 14, 15, 50, 80, 91, 95, 100):
        f = step / 100
        expected = 1.0 if f < 1 - 0.85 else max((1 - f) / 0.85, 0.1)
        assert s.lr_scale(step, 100) == pytest.approx(expected), step
    # The floor also holds under the step-count warm-down; without it the default behaviour is unchanged.
    assert Schedule(OptimConfig(warmdown_steps=10, min_lr_scale=0.2)).lr_scale(99, 100) == pytest.approx(0.2)
    assert Schedule(OptimConfig(warmdown_steps=10)).lr_scale(99, 100) == pytest.approx(0.1)


def test_weight_decay_taper_and_apply():
    # The 2026-04-18 record: full Muon weight decay until 70% of training, then linear to 0.5x at the end.
    cfg = OptimConfig(muon_wd=0.1, embed_wd=0.3, wd_taper_start=0.7, wd_taper_final=0.5, muon_momentum_warmup_steps=0)
    s = Schedule(cfg)
    assert [s.wd_scale(i, 100) for i in (0, 70)] == [1.0, 1.0]
    assert [s.wd_scale(i, 100) for i in (85, 100)] == [pytest.approx(0.75), pytest.approx(0.5)]
    assert Schedule(OptimConfig()).wd_scale(100, 100) == 1.0  # off by default
    opts = build_optimizers(GPT(preset("smoke").model), cfg)
    s.apply(opts, 85, 100)
    for opt in opts:
        for g in opt.param_groups:
            if isinstance(opt, Muon):
                assert g["weight_decay"] == pytest.approx(0.075)
            elif g["name"] == "embed":
                assert g["weight_decay"] == 0.3  # Adam's decay does not taper
