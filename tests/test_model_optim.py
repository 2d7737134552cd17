"""Muon (against SVD and a float64 re-implementation), parameter groups, and the schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_data import one_thread  # noqa: F401 (autouse fixture)

from pgolf_model.config import OptimConfig, preset
from pgolf_model.model import GPT
from pgolf_model.optim import Muon, Schedule, build_optimizers, newton_schulz


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
