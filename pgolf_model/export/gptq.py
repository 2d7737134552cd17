"""GPTQ: per-row integer quantization of one matrix that compensates each column's rounding error.

GPTQ (Frantar et al. 2022, https://arxiv.org/abs/2210.17323) quantizes the columns of ``W`` (rows = outputs,
columns = inputs) one at a time and pushes each column's rounding error onto the columns not yet quantized, so
that the layer's output ``W x`` changes as little as possible over the calibration inputs, measured by the Hessian
``H = E[x x^T]``. As in the Parameter Golf records (docs/records.md, GPTQ; ``gptq_quantize_weight`` of the 2026-04-27
record): dead inputs (``H_jj = 0``) get weight 0, the diagonal is damped by ``0.01 * mean(diag H)``, columns go in
descending ``diag H`` order ("act-order"), errors propagate through the upper Cholesky factor of ``H^-1`` within
blocks of 128 columns and then once per block to everything after it. The per-row scale (``quant.row_scales``:
clip quantile or SDClip) is fixed before GPTQ starts, so the stored format is the same as for round-to-nearest.

SDClip (2026-04-05 record): ``scale_row = k * std(row) / qmax`` with no search. The compressed size of the integers
is about ``b - log2 k + const`` bits per value, so ``k`` trades size for rounding error monotonically.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..quant import qmax

GPTQ_BLOCK = 128  # columns per error-propagation block (the records' value)
GPTQ_DAMP = 0.01  # diagonal damping as a fraction of mean(diag H) (the records' value)


def gptq(
    w: Tensor,
    hessian: Tensor,
    scale: Tensor,
    bits: int,
    *,
    block_size: int = GPTQ_BLOCK,
    damp: float = GPTQ_DAMP,
    act_order: bool = True,
    protect: tuple[list[int], int, Tensor, int] | None = None,
) -> Tensor:
    """GPTQ integers (int8, same shape as ``w``) on the fixed row ``scale``, for inputs with second moment ``hessian``.

    With ``hessian`` a multiple of the identity nothing propagates and the result equals ``quant.round_to_nearest``.
    ``protect = (starts, size, scale_hi, bits_hi)``: columns ``start .. start + size - 1`` of each start go on the row
    scales ``scale_hi`` at ``bits_hi`` inside the same solve (AWQ-lite, PR #1908), so the other columns absorb their
    smaller errors too.
    """
    rows, cols = w.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"Hessian of shape {tuple(hessian.shape)} for a matrix with {cols} columns")
    if scale.shape != (rows,):
        raise ValueError(f"{tuple(scale.shape)} scales for a matrix with {rows} rows")
    top = qmax(bits)
    device = w.device
    W = w.detach().to(torch.float32).clone()
    H = hessian.detach().to(device=device, dtype=torch.float64).clone()
    s = scale.to(device=device, dtype=torch.float32)[:, None]

    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H.diagonal().add_(damp * torch.diagonal(H).mean())
    diag = torch.diagonal(H)
    perm = torch.argsort(diag, descending=True, stable=True) if act_order else torch.arange(cols, device=device)
    W, H = W[:, perm], H[perm][:, perm]
    # U: upper Cholesky factor of H^-1 (the paper's step 3): row j carries column j's error onto the later columns.
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).to(torch.float32)
    hi = torch.zeros(cols, dtype=torch.bool)
    if protect is not None:
        starts, size, scale_hi, bits_hi = protect
        for a in starts:
            hi[a : a + size] = True
        s_hi, top_hi = scale_hi.to(device=device, dtype=torch.float32)[:, None], qmax(bits_hi)
    hi = hi[perm.cpu()].tolist()

    Q = torch.zeros(rows, cols, dtype=torch.int8, device=device)
    for start in range(0, cols, block_size):
        end = min(start + block_size, cols)
        Wb, Ub = W[:, start:end].clone(), U[start:end, start:end]
        errors = torch.zeros_like(Wb)
        for j in range(end - start):
            sj, tj = (s_hi, top_hi) if hi[start + j] else (s, top)
            q = torch.clamp(torch.round(Wb[:, j : j + 1] / sj), -tj, tj)
            Q[:, start + j] = q[:, 0].to(torch.int8)
            err = (Wb[:, j : j + 1] - q * sj) / Ub[j, j]
            Wb[:, j:] -= err * Ub[j : j + 1, j:]
            errors[:, j : j + 1] = err
        W[:, end:] -= errors @ U[start:end, end:]
    return Q[:, torch.argsort(perm)]


def hessian_error(w: Tensor, w_hat: Tensor, hessian: Tensor) -> float:
    """``trace((W - W_hat) H (W - W_hat)^T)``: the summed squared output error over inputs with second moment H."""
    e = (w.detach().float() - w_hat.float()).double()
    return float(torch.einsum("ij,jk,ik->", e, hessian.double().to(e.device), e))
