"""Causal self-attention kernels: over the whole window, or document-masked (``model.doc_masked``).

Document masking (the 1.0611 record trains, evaluates and runs its global TTT SGD with FlashAttention-3's varlen
kernel over the documents of a packed batch; docs/records.md): a token attends only to the tokens of its own
document, BOS to BOS, so a window of packed documents is scored as if each had been run alone. RoPE is relative, so
a document's position inside the window changes nothing.

``Documents`` describes a batch's documents once per forward pass, for every layer:

- on CUDA with FlashAttention importable (FA3's ``flash_attn_interface``, else flash-attn 2's ``flash_attn``) as
  ``cu_seqlens`` over the flattened batch: the varlen kernel skips the masked blocks altogether. ``max_seqlen`` is
  the window length, an upper bound that only sizes the kernel's grid, so it stays a static int under compile.
  Training passes the bounds the loader found on the host (``training.data.document_bounds``); scoring and TTT
  find them here with ``torch.nonzero``, a host sync and a data-dependent length (``compile_for_training`` lets
  Dynamo capture it);
- elsewhere (CPUs, fp32, no FlashAttention) as a block-diagonal causal boolean mask for
  ``F.scaled_dot_product_attention``: exact, and (B, 1, T, T) bytes of memory.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _load_varlen():
    """FlashAttention's varlen function, FA3 first (the record's); None when neither package imports."""
    for module in ("flash_attn_interface", "flash_attn"):
        try:
            return importlib.import_module(module).flash_attn_varlen_func
        except (ImportError, AttributeError, OSError):  # OSError: a wheel built for another CUDA
            continue
    return None


VARLEN = _load_varlen()


class Documents(NamedTuple):
    """The documents of a (B, T) batch: ``mask`` (B, 1, T, T) for SDPA, or ``cu_seqlens`` for a varlen kernel."""

    mask: Tensor | None
    cu_seqlens: Tensor | None
    max_seqlen: int


def use_varlen(device: torch.device) -> bool:
    """The varlen kernel runs on CUDA in half precision: under the training's (and scoring's) bf16 autocast."""
    return VARLEN is not None and device.type == "cuda" and torch.is_autocast_enabled("cuda")


def document_starts(idx: Tensor, bos_id: int) -> Tensor:
    """(B, T) bool: where a document starts, at each BOS and at each row's first token (a window may open mid-way
    through a document: its first tokens are that document's tail)."""
    starts = idx == bos_id
    starts[:, 0] = True
    return starts


def documents(idx: Tensor, bos_id: int, varlen: bool, cu_seqlens: Tensor | None = None) -> Documents:
    """``idx``'s documents; the varlen path takes ``cu_seqlens`` as given when it is (the mask path needs none)."""
    B, T = idx.shape
    if varlen and cu_seqlens is not None:
        return Documents(None, cu_seqlens, T)
    starts = document_starts(idx, bos_id)
    if varlen:
        flat = torch.nonzero(starts.flatten()).flatten().to(torch.int32)
        end = torch.full((1,), B * T, dtype=torch.int32, device=idx.device)
        return Documents(None, torch.cat((flat, end)), T)
    doc = torch.cumsum(starts, dim=1)  # (B, T): which document of its row each token is in
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    mask = (doc[:, :, None] == doc[:, None, :]) & causal
    return Documents(mask[:, None], None, T)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, docs: Documents | None = None) -> Tensor:
    """Causal attention of ``q`` (B, H, T, D) over ``k``, ``v`` (B, Hkv, T, D) (grouped-query when Hkv < H), within
    each document when ``docs`` is given; (B, H, T, D)."""
    gqa = k.size(1) != q.size(1)
    if docs is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if docs.cu_seqlens is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=docs.mask, enable_gqa=gqa)
    B, H, T, D = q.shape
    flat = [t.transpose(1, 2).reshape(B * T, t.size(1), D) for t in (q, k, v)]  # (total, heads, D)
    cu = docs.cu_seqlens
    y = VARLEN(*flat, cu, cu, docs.max_seqlen, docs.max_seqlen, causal=True)
    y = y[0] if isinstance(y, tuple) else y  # some FA3 builds also return the log-sum-exp
    return y.view(B, T, H, D).transpose(1, 2)
