"""LQER: a low-rank correction of the quantization error of the worst-quantized matrices.

For a quantized matrix the error ``E = W - Q s`` is approximated by its top singular directions,
``E ~ (U_r S_r)(V_r^T) = A B``, and the corrected weight is ``Q s + A_hat B_hat``. The 2026-04-27 record
(docs/records.md, LQER) applies it to the 3 matrices with the largest ``||E||_F``, rank 4, with ``A`` on the
asymmetric INT2 grid ``[-2, 1]`` under one scale ``max|A| / 1.5`` and ``B`` on the INT4 grid ``[-8, 7]`` in groups of
64 consecutive (row-major) values, each group scaled by its ``max|B| / 7.5``. The factors cost a few kilobytes.

The factors are stored with the matrix in the ``quant`` format; the dequantization side (``quant.lqer_correction``)
is part of the artifact's counted code.
"""

from __future__ import annotations

import torch
from torch import Tensor

RANK = 4
TOP = 3
GROUP = 64
A_LEVELS = (-2, 1)  # INT2, asymmetric
B_LEVELS = (-8, 7)  # INT4


def factors(error: Tensor, rank: int = RANK, group: int = GROUP) -> dict:
    """Quantized rank-``rank`` factors of ``error`` as numpy arrays: ``{"rank", "group", "a_q", "a_scale", "b_q",
    "b_scale"}`` (the ``lqer`` item of a ``quant.QuantizedState`` entry)."""
    if error.ndim != 2:
        raise ValueError(f"LQER needs a matrix error, got shape {tuple(error.shape)}")
    if rank < 1 or group < 1:
        raise ValueError(f"LQER rank {rank} and group {group} must be positive")
    rank = min(rank, *error.shape)
    U, S, Vh = torch.linalg.svd(error.detach().double(), full_matrices=False)
    A, B = (U[:, :rank] * S[:rank]).float(), Vh[:rank].float()

    a_lo, a_hi = A_LEVELS
    a_scale = (A.abs().amax() / (a_hi + 0.5)).to(torch.float16).reshape(1)
    a_scale = torch.where(a_scale > 0, a_scale, torch.ones_like(a_scale))
    a_q = torch.clamp(torch.round(A / a_scale.float()), a_lo, a_hi).to(torch.int8)

    b_lo, b_hi = B_LEVELS
    flat = B.reshape(-1)
    pad = -flat.numel() % group
    groups = torch.cat((flat, flat.new_zeros(pad))).view(-1, group)
    b_scale = (groups.abs().amax(dim=1) / (b_hi + 0.5)).to(torch.float16)
    b_scale = torch.where(b_scale > 0, b_scale, torch.ones_like(b_scale))
    b_q = torch.clamp(torch.round(groups / b_scale.float()[:, None]), b_lo, b_hi).to(torch.int8)
    b_q = b_q.reshape(-1)[: flat.numel()].view_as(B)
    arrays = {"a_q": a_q, "a_scale": a_scale, "b_q": b_q, "b_scale": b_scale}
    return {"rank": rank, "group": group, **{k: v.numpy() for k, v in arrays.items()}}
