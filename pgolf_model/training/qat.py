"""Late quantization-aware training: fake-quantized block matrices with a straight-through estimator.

The March records (2026-03-19 .. 03-25; docs/records.md, late QAT) switch it on once the learning-rate multiplier of the
warm-down falls below 0.15: from then on every forward pass of training uses each matrix rounded to its export grid
(per-row int6 there), while the gradient flows to the float weight as if the rounding were the identity. The last
few hundred steps then settle on weights that lose little when exported.

The rounding here is the export's own (``quant.row_scales`` + ``quant.round_to_nearest`` with the matrix's group
bits and clip rule from ``QuantConfig``), so a weight that QAT trained is exported to exactly the values the last
training steps saw (with ``quant.method = rtn``; GPTQ rounds the same grid differently).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import QuantConfig
from ..export.ptq import tensor_groups
from ..quant import dequantize_rows, round_to_nearest, row_scales, tensor_format


@dataclass(frozen=True)
class FakeQuant:
    """``w -> w + (Q(w) - w).detach()``: the forward value is the export's dequantized ``Q(w)``, the gradient is 1."""

    bits: int
    clip_quantile: float
    sdclip_k: float
    sdclip_correction: int = 0

    def quantized(self, w: Tensor) -> Tensor:
        with torch.no_grad():
            scale = row_scales(
                w, self.bits, clip_quantile=self.clip_quantile, sdclip_k=self.sdclip_k,
                sdclip_correction=self.sdclip_correction,
            )  # fmt: skip
            return dequantize_rows(round_to_nearest(w, scale, self.bits), scale).to(w.dtype)

    def __call__(self, w: Tensor) -> Tensor:
        return w + (self.quantized(w) - w).detach()


def block_rules(model: nn.Module, cfg: QuantConfig) -> dict[str, FakeQuant]:
    """``{module name: FakeQuant}`` for every block matrix that export quantizes, with its group's bits and clip
    (ternary / binary matrices are quantized on every pass already: ``lowbit``)."""
    groups = tensor_groups(model)
    rules = {}
    for name, module in model.named_modules():
        if hasattr(module, "fake_quant") and getattr(module, "weight_quant", None) is None:
            group = groups[f"{name}.weight"]
            if tensor_format(tuple(module.weight.shape), cfg) == "int":
                k = cfg.sdclip_k_of(group)
                rules[name] = FakeQuant(cfg.bits_of(group), cfg.clip_quantile, k, cfg.sdclip_correction)
    return rules


def enable(model: nn.Module, cfg: QuantConfig) -> int:
    """Switch fake quantization on for ``model``'s block matrices; returns how many matrices it covers."""
    rules = block_rules(model, cfg)
    for name, module in model.named_modules():
        if name in rules:
            module.fake_quant = rules[name]
    return len(rules)


def disable(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "fake_quant") and getattr(module, "weight_quant", None) is None:
            module.fake_quant = None


def enabled(model: nn.Module) -> bool:
    return any(getattr(m, "fake_quant", None) is not None for m in model.modules())
