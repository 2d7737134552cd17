"""Block-diagonal Walsh-Hadamard rotations of a tensor's dimension (QuaRot, https://arxiv.org/abs/2404.00456).

The normalized Sylvester matrix ``H_n`` (n a power of two) is symmetric and orthogonal, so it is its own inverse: the
same call rotates a matrix into the Hadamard basis and back. A dimension of size ``d`` is rotated in blocks of
``block_size(d)``, the largest power of two dividing ``d`` (a head, the stream, an MLP hidden layer), so no padding is
ever stored. Rotating spreads an outlier weight over its block, which flattens the per-row distribution that one
quantization scale has to cover (docs/records.md, Hadamard rotation).

This module is part of the artifact's counted code: ``quant.QuantizedState.dequantize`` undoes the rotation of a
matrix that was quantized in the Hadamard basis.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def block_size(n: int) -> int:
    """The Hadamard block for a dimension of size ``n``: the largest power of two that divides it (1 = no rotation)."""
    if n < 1:
        raise ValueError(f"dimension of size {n}: must be positive")
    return n & -n


@functools.cache
def _sylvester(n: int) -> Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.size(0) < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h / h.size(0) ** 0.5


def hadamard(n: int) -> Tensor:
    """The normalized ``n x n`` Walsh-Hadamard matrix (float64; ``n`` a power of two): ``H = H^T = H^-1``."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size {n}: must be a power of two")
    return _sylvester(n)


def rotate(w: Tensor, dim: int, block: int) -> Tensor:
    """``w`` with dimension ``dim`` multiplied, block by block of ``block`` entries, by ``H_block`` (its own inverse).

    Computed in float64 and returned in ``w``'s dtype, so that rotating twice gives ``w`` back to float rounding.
    """
    size = w.size(dim)
    if block < 1 or size % block:
        raise ValueError(f"Hadamard block {block} does not divide dimension {dim} of shape {tuple(w.shape)}")
    if block == 1:
        return w
    moved = w.movedim(dim, -1).double()
    out = (moved.reshape(*moved.shape[:-1], size // block, block) @ hadamard(block).to(w.device)).reshape(moved.shape)
    return out.movedim(-1, dim).to(w.dtype)
