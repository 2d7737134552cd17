"""Ternary and binary block matrices: quantization-aware training from step 0, and their packed storage.

After the 2026-03-24 ternary record (records/track_10min_16mb/2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_
NeoMuon, 1.1570; BitNet b1.58, https://arxiv.org/abs/2402.17764) and the non-record binary run beside it
(records/track_non_record_16mb/2026-03-24_106M_Binary_Asymmetric_UNet_FP8_15L_8192BPE_YaRN_NeoMuon_Smear, 1.1239);
docs/records.md, ternary and binary weights:

- ``ternary``: each group of ``group`` consecutive weights of the flattened matrix (128 in the record: along the input
  dimension) has the scale ``s = mean |w|`` (at least 1e-8) and the levels ``q = clamp(round(w / s), -1, 1)``;
- ``binary``: ``q = +1 where w >= 0, else -1``, with the same absmean scale.

Every forward pass, in training and evaluation, uses ``q s``; the gradient reaches the float weight as if the
rounding were the identity (straight-through estimator). The stored matrix is ``q`` packed (five trits per byte,
``sum (q_i + 1) 3^i`` for i < 5, or eight signs per byte) with one float16 scale per group. A reloaded model runs the
same quantizer on the dequantized weights, so the ternary dequantization is ``q s / mean |q|`` over the group (the
record's "shrinkage fix"): its absmean is ``s`` again and rounding gives back ``q``, where ``q s`` itself would have
its zeros shrink the scale by ``mean |q|``. Binary levels have ``mean |q| = 1`` and need no fix.

This module is part of the artifact's counted code; it imports only numpy and torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

KINDS = ("ternary", "binary")
TRITS_PER_BYTE = 5  # 3^5 = 243 <= 256
MIN_SCALE = 1e-8  # the record's clamp of an all-zero group's scale


def _groups(w: Tensor, group: int) -> Tensor:
    if w.numel() % group:
        raise ValueError(f"a matrix of shape {tuple(w.shape)} does not split into groups of {group} weights")
    return w.reshape(-1, group)


def levels(w: Tensor, kind: str, group: int) -> tuple[Tensor, Tensor]:
    """``(q int8 like w, s float32 per group)`` with ``w ~ q s`` (see the module docstring)."""
    g = _groups(w.detach().float(), group)
    s = g.abs().mean(1, keepdim=True).clamp(min=MIN_SCALE)
    if kind == "ternary":
        q = torch.clamp(torch.round(g / s), -1, 1)
    elif kind == "binary":
        q = torch.where(g >= 0, 1.0, -1.0)
    else:
        raise ValueError(f"low-bit kind {kind!r}: must be one of {', '.join(KINDS)}")
    return q.to(torch.int8).reshape(w.shape), s.squeeze(1)


def dequantize(q: Tensor, scale: Tensor, kind: str, group: int) -> Tensor:
    """The float matrix a reloaded model quantizes back to ``q`` and ``scale`` (ternary: ``q s / mean |q|``)."""
    g = _groups(q.float(), group)
    w = g * scale.float()[:, None]
    if kind == "ternary":
        w = w / g.abs().mean(1, keepdim=True).clamp(min=1.0 / group)  # an all-zero group stays zero
    return w.reshape(q.shape)


@dataclass(frozen=True)
class LowBit:
    """``w -> w + (q s - w).detach()``: the block matrix's weight on every forward pass (``model.Linear``)."""

    kind: str
    group: int

    def __call__(self, w: Tensor) -> Tensor:
        q, s = levels(w, self.kind, self.group)
        w_q = (_groups(q.to(w.dtype), self.group) * s.to(w.dtype)[:, None]).reshape(w.shape)
        return w + (w_q - w).detach()


def pack(q: np.ndarray, kind: str) -> np.ndarray:
    """``q`` (int8 levels) as uint8: five base-3 digits per byte (ternary) or eight signs per byte (binary)."""
    flat = q.reshape(-1).astype(np.int64)
    if kind == "binary":
        return np.packbits(flat > 0, bitorder="little")
    digits = np.zeros(-(-flat.size // TRITS_PER_BYTE) * TRITS_PER_BYTE, dtype=np.int64)
    digits[: flat.size] = flat + 1
    return (digits.reshape(-1, TRITS_PER_BYTE) @ 3 ** np.arange(TRITS_PER_BYTE)).astype(np.uint8)


def unpack(data: np.ndarray, kind: str, n: int) -> np.ndarray:
    """The first ``n`` int8 levels of ``pack``'s output; a byte no packing writes raises ValueError."""
    if kind == "binary":
        return np.where(np.unpackbits(data, count=n, bitorder="little") > 0, 1, -1).astype(np.int8)
    if data.size and int(data.max()) >= 3**TRITS_PER_BYTE:
        raise ValueError(f"packed trits: byte {int(data.max())} is over 3^5 - 1 = 242")
    digits = (data.astype(np.int64)[:, None] // 3 ** np.arange(TRITS_PER_BYTE)) % 3
    return (digits.reshape(-1)[:n] - 1).astype(np.int8)


def packed_size(n: int, kind: str) -> int:
    """Bytes of ``n`` packed levels."""
    return -(-n // 8) if kind == "binary" else -(-n // TRITS_PER_BYTE)
