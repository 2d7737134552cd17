"""AWQ-lite (PR #1908, records 2026-04-28_PR1855Base_AWQGPTQ_StepMatched; docs/records.md, AWQ-lite): the few
input-column groups whose rounding costs the most get a finer grid inside the same GPTQ solve.

Saliency of input column ``c`` of a matrix ``W`` is ``act_rms[c] * mean_r |W[r, c]|`` (AWQ's activation-aware weight
importance, https://arxiv.org/abs/2306.00978), where ``act_rms[c] = sqrt(E[x_c^2])`` is read off the GPTQ Hessian's
diagonal (``H = E[x x^T]``), so it needs no pass of its own. Each quantized matrix narrower than ``bits`` is cut into
groups of ``size`` columns; the ``top`` groups of highest summed saliency across the whole model are quantized at
``bits`` (the record: one group of 64 columns at int8; in its logs always in the tied embedding) on their own row
scales, the clip rule's at ``bits``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def saliency(w: Tensor, hessian: Tensor) -> Tensor:
    """Per input column: activation RMS times the mean absolute weight."""
    return torch.diagonal(hessian).float().clamp(min=0).sqrt() * w.detach().float().abs().mean(dim=0)


def select_groups(
    state: dict[str, Tensor], hessians: dict[str, Tensor], bits: dict[str, int], *, top: int, size: int, hi_bits: int
) -> dict[str, list[int]]:
    """``{matrix name: [first column, ...]}`` of the ``top`` most salient ``size``-column groups among the matrices
    in ``bits`` (name -> its width) quantized below ``hi_bits`` with a Hessian; ties go to the earlier matrix/group."""
    candidates = []
    for name, b in bits.items():
        if b >= hi_bits or name not in hessians or state[name].size(1) < size:
            continue
        col = saliency(state[name], hessians[name])
        n_groups = col.numel() // size
        scores = col[: n_groups * size].view(n_groups, size).sum(dim=1)
        candidates += [(-float(v), len(candidates) + g, name, g * size) for g, v in enumerate(scores)]
    chosen: dict[str, list[int]] = {}
    for _, _, name, start in sorted(candidates)[:top]:
        chosen.setdefault(name, []).append(start)
    return chosen
