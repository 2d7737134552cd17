"""AsymLogit (PR #1923): one learned soft-cap per logit sign. The caps follow the formula, start as the symmetric
cap (the same model at init), and, unlike the shipped version, receive the training loss's gradient (checked
against a finite difference) and move under pgolf's optimizers."""

from __future__ import annotations

import pytest
import torch

from pgolf_model.config import ConfigError, ModelConfig, OptimConfig
from pgolf_model.model import GPT
from pgolf_model.training.optim import build_optimizers

SHAPE = dict(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, logit_softcap=5.0)


def _models():
    torch.manual_seed(0)
    sym = GPT(ModelConfig(**SHAPE))
    torch.manual_seed(0)
    asym = GPT(ModelConfig(**SHAPE, asym_softcap=True))
    with torch.no_grad():  # away from the identity-at-init, with large logits of both signs, so that both caps bite
        for m in (sym, asym):
            torch.manual_seed(1)
            for p in m.parameters():
                if p is not getattr(m, "logit_caps", None):
                    p += 0.05 * torch.randn_like(p)
            m.tok_emb.weight.mul_(400)
    return sym, asym


def test_each_sign_has_its_cap():
    _, m = _models()
    with torch.no_grad():
        m.logit_caps.copy_(torch.tensor([4.0, 9.0]))
    z = torch.tensor([-30.0, -2.0, 0.0, 3.0, 40.0])
    caps = torch.tensor([9.0, 9.0, 4.0, 4.0, 4.0])  # 0 counts as positive
    want = caps * torch.tanh(z / caps)
    torch.testing.assert_close(m.softcap(z), want)


def test_at_init_it_is_the_symmetric_model():
    sym, asym = _models()
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(asym.logits(idx), sym.logits(idx))
    assert asym.forward(idx, idx).item() == pytest.approx(sym.forward(idx, idx).item(), rel=1e-5)


def test_the_caps_get_the_training_gradient_of_a_finite_difference():
    _, m = _models()
    idx, y = torch.randint(0, 64, (2, 2, 16), generator=torch.Generator().manual_seed(2))  # targets of both signs
    loss = m(idx, y)
    (grad,) = torch.autograd.grad(loss, m.logit_caps)
    assert (grad.abs() > 1e-4).all()
    eps = 1e-2  # float32 (the embedding is cast to it): a central difference at a step the loss resolves
    for k in range(2):
        with torch.no_grad():
            m.logit_caps[k] += eps
            up = m(idx, y).item()
            m.logit_caps[k] -= 2 * eps
            down = m(idx, y).item()
            m.logit_caps[k] += eps
        assert grad[k].item() == pytest.approx((up - down) / (2 * eps), rel=2e-3)


def test_the_caps_move_under_the_optimizers():
    _, m = _models()
    assert any(p is m.logit_caps for _, p in m.param_groups()["scalar"])
    opts = build_optimizers(m, OptimConfig())
    idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(3))
    before = m.logit_caps.detach().clone()
    m(idx, idx).backward()
    for o in opts:
        o.step()
    assert (m.logit_caps.detach() != before).all()


def test_asym_softcap_needs_a_cap():
    with pytest.raises(ConfigError, match="asym_softcap"):
        ModelConfig(**{**SHAPE, "logit_softcap": 0.0}, asym_softcap=True)
