"""Soft-capped cross-entropy, computed in row chunks so the (tokens x vocab) logits never exist whole.

``loss = logsumexp(s) - s[target]`` with ``s = cap * tanh(z / cap)`` and ``z = h @ W^T``. Written out, that is about
ten passes over a tokens x vocab fp32 tensor forward and backward (matmul, divide, tanh, multiply, log-softmax,
gather, and their gradients). At vocab 8192 on CPU those passes, not the matmuls, were measured at half of a
``tiny``-sized training step; on a GPU the whole tensor is 98,304 x 8,192 x 4 bytes = 3 GiB per step of the records.
The records fuse the same computation on GPU (fused softcap-CE, PR #1787; docs/records.md); here each chunk of rows
(``chunk_rows``: small on CPU, to stay in cache; large on CUDA, to fill the GPU) makes its logits, loss and gradient
together:

- forward with gradients (a scalar loss): per chunk, ``p = softmax(s) - onehot(target)`` gives
  ``dL/dz = p * (1 - tanh^2)``, so ``dL/dh = dL/dz @ W`` and ``dL/dW += dL/dz^T @ h`` are formed right away and kept
  for ``backward``, which only scales them by the incoming gradient;
- forward without gradients (evaluation): per-row losses, chunk by chunk.

A per-row loss that needs gradients (some TTT paths) keeps the plain formulation: its rows are weighted by the
caller after the fact, which precomputed gradients cannot follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows per chunk: 256 x 8192 vocab x 4 bytes = 8 MiB of logits. 64 to 2048 rows were tried; 128-256 were fastest.
CHUNK_ROWS = 256
# On CUDA a chunk must fill the GPU: 8192 rows x 8192 vocab x 4 bytes = 256 MiB of logits, 12 chunks for the records'
# 98,304 tokens per GPU where the whole would be 3 GiB (and as much again for its gradient).
CUDA_CHUNK_ROWS = 8192


def chunk_rows(device: torch.device) -> int:
    return CUDA_CHUNK_ROWS if device.type == "cuda" else CHUNK_ROWS


def _chunk_logits(h: Tensor, weight: Tensor, cap: float) -> tuple[Tensor, Tensor | None]:
    """The soft-capped fp32 logits of rows ``h`` and ``tanh(z / cap)`` (None without a cap)."""
    z = (h @ weight.t()).float()
    if cap <= 0:
        return z, None
    t = z.div_(cap).tanh_()
    return t * cap, t


def _chunk_losses(s: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    lse = torch.logsumexp(s, dim=1)
    return lse - s.gather(1, targets[:, None]).squeeze(1), lse


class _SoftcapCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, targets: Tensor, cap: float, mean: bool) -> Tensor:
        n = h.size(0)
        total = torch.zeros((), dtype=torch.float64, device=h.device)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        scale = 1.0 / n if mean else 1.0
        size = chunk_rows(h.device)
        rows = torch.arange(size, device=h.device)
        for lo in range(0, n, size):
            hc, yc = h[lo : lo + size], targets[lo : lo + size]
            s, t = _chunk_logits(hc, weight, cap)
            losses, lse = _chunk_losses(s, yc)
            total += losses.sum(dtype=torch.float64)
            p = s.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
            p[rows[: len(yc)], yc] -= 1.0
            if t is not None:
                p.mul_(t.mul_(t).neg_().add_(1.0))  # d tanh: 1 - tanh^2
            p.mul_(scale)
            grad_h[lo : lo + size] = (p @ weight.float()).to(h.dtype)
            grad_w.addmm_(p.t(), hc.float())
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return (total * scale).to(torch.float32)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None


def softcap_cross_entropy(h: Tensor, weight: Tensor, targets: Tensor, cap: float, reduction: str = "mean") -> Tensor:
    """Cross-entropy in nats of ``cap * tanh(h @ weight^T / cap)`` (no cap when ``cap <= 0``) against ``targets``.

    ``h`` is (N, D), ``weight`` (V, D), ``targets`` (N,); ``reduction`` is ``mean``, ``sum`` or ``none``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    if grad and reduction != "none":
        return _SoftcapCE.apply(h, weight, targets, cap, reduction == "mean")
    if grad:
        z = F.linear(h, weight).float()
        s = cap * torch.tanh(z / cap) if cap > 0 else z
        return F.cross_entropy(s, targets, reduction="none")
    size = chunk_rows(h.device)
    chunks = range(0, h.size(0), size)
    losses = torch.cat(
        [_chunk_losses(_chunk_logits(h[i : i + size], weight, cap)[0], targets[i : i + size])[0] for i in chunks]
    )
    return losses if reduction == "none" else losses.mean() if reduction == "mean" else losses.sum()
