"""The pieces the built-in model families share: RMSNorm, the baseline's matrix init, the QAT-able block matrix, the
ReLU^2 MLP, the soft-capped output head with its loss, and the parts of a LoRA TTT view (``shallow``, ``Parallel``).

Counted code (``artifact``): a model that uses these carries this file, not the other family's.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .softcap_ce import softcap_cross_entropy


def rms_norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))


def linear_init_(weight: Tensor) -> None:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as ``nn.Linear`` draws it (kaiming_uniform_ with a = sqrt(5), bit for bit):
    the baseline's init of every matrix, which its constructors leave in place."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


class Linear(nn.Linear):
    """A bias-free block matrix. ``weight_quant`` (``lowbit.LowBit``, set by the model for ``model.lowbit``) maps the
    weight on every forward pass; otherwise ``fake_quant`` (set by ``qat.enable``) on the training forward pass."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.fake_quant = None
        self.weight_quant = None

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if self.weight_quant is not None:
            w = self.weight_quant(w)
        elif self.fake_quant is not None and self.training:
            w = self.fake_quant(w)
        return F.linear(x, w)


class MLP(nn.Module):
    """``proj(act(fc(x))^2)`` with ``act`` ReLU, or LeakyReLU(slope) when ``leaky_slope > 0``."""

    def __init__(self, dim: int, hidden: int, leaky_slope: float = 0.0) -> None:
        super().__init__()
        self.fc = Linear(dim, hidden)
        self.proj = Linear(hidden, dim)
        self.leaky_slope = leaky_slope

    @torch.no_grad()
    def reset_parameters(self) -> None:
        linear_init_(self.fc.weight)
        linear_init_(self.proj.weight)
        self.proj.weight.zero_()  # the block starts as the identity (drawn first, as the baseline's RNG stream is)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        # LeakyReLU(0.5)^2 (records from 2026-03-23) keeps a gradient for negative pre-activations.
        h = F.leaky_relu(h, self.leaky_slope) if self.leaky_slope else F.relu(h)
        return self.proj(h.square())


def softcap_logits(x: Tensor, weight: Tensor, cap: float, delta: Tensor | None = None) -> Tensor:
    """``cap * tanh(z / cap)`` in fp32 with ``z = x W^T (+ delta)`` (no cap when ``cap`` is 0): a tanh logit
    soft-cap (Gemma 2). ``delta`` is an addition before the cap (the head's LoRA adapter at test time)."""
    z = F.linear(x, weight.to(x.dtype))
    if delta is not None:
        z = z + delta
    z = z.float()
    return cap * torch.tanh(z / cap) if cap > 0 else z


def lm_loss(x: Tensor, weight: Tensor, targets: Tensor, cap: float, reduction: str = "mean") -> Tensor:
    """Cross-entropy in nats of the soft-capped logits of hidden states ``x`` (B, T, C): a scalar for
    ``reduction="mean"``, (B, T) for ``"none"``."""
    if x.device.type == "cpu":  # chunked (softcap_ce.py); on GPU torch.compile fuses the plain form below
        loss = softcap_cross_entropy(x.flatten(0, 1), weight.to(x.dtype), targets.flatten(), cap, reduction)
    else:
        loss = F.cross_entropy(softcap_logits(x, weight, cap).flatten(0, 1), targets.flatten(), reduction=reduction)
    return loss if reduction != "none" else loss.view_as(targets)


def shallow(module: nn.Module, **children: nn.Module | None) -> nn.Module:
    """A copy of ``module`` sharing its parameters and submodules, with ``children`` replaced: the parts of a view of
    a model (``lora_sites``) whose modules can be wrapped without touching the model."""
    clone = copy.copy(module)
    clone._modules = {**module._modules, **children}
    return clone


class Parallel(nn.Module):
    """``inner(x, ...) + lora(x)``: an adapter beside a module, fed the module's (first) input."""

    def __init__(self, inner: nn.Module, lora: nn.Module) -> None:
        super().__init__()
        self.inner, self.lora = inner, lora

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.inner(x, *args, **kwargs) + self.lora(x)
