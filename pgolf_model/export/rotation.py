"""Hadamard rotation before quantization (QuaRot / SpinQuant style), only where it preserves the model's function.

``quant.rotate`` lists the rotations (docs/records.md, Hadamard rotation); each is exact in float arithmetic:

- ``vo``: per attention head, the value rows of ``c_v`` and the matching input columns of ``proj`` by the same
  ``H`` (and the value embedding, which is added to the values). Attention mixes values linearly per head and XSA
  only uses inner products and norms within a head, so the rotated model computes the same logits with no extra work
  at run time: the artifact simply holds other weights. This is the one rotation of PR #2130's ``OPTROT`` that is
  an identity; its other one, the MLP hidden dimension across LeakyReLU^2, is not, and cost 3.4 BPB.
- ``input``: every quantized matrix is quantized as ``W H`` (its input dimension in Hadamard blocks) and stored so;
  dequantization multiplies by ``H`` again. That is the rotation of each matrix's input applied online
  (``(x H)(W H)^T = x W^T``), folded into the weights once at load, so evaluation costs nothing more (PR #1224 does
  the same with a searched block size).
- ``residual``: the residual stream in one Hadamard basis, as QuaRot rotates it: the stream side of every matrix
  that reads it (``c_q``, ``c_k``, ``c_v``, ``mlp.fc``, the tied embedding or head, a factored embedding's ``down``)
  or writes it (``attn.proj``, ``mlp.proj``, the BigramHash projection, a factored embedding's ``up``). QuaRot can
  leave the stream rotated because its RMSNorms are weightless after folding; this GPT's norms are weightless too,
  but the stream also passes per-channel multipliers that no matrix can absorb: ``resid_mix`` (stream and x0), the
  U-Net ``skip_weights``, and the SmearGate and attention gate, which read its first channels. ``attn_scale`` /
  ``mlp_scale`` could be folded into the writers' rows, the others cannot, so the rotation is excluded from the
  model and kept to the weights: each matrix is quantized in the rotated basis and rotated back on dequantization,
  as for ``input``. Weight-only quantization sees exactly the matrices a rotated model would hold, so nothing of
  the effect on quantization is lost.

GPTQ sees the rotated problem: a matrix stored as ``P W R`` reads ``R x``, so its Hessian is ``R H R``.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from ..hadamard import block_size, rotate
from ..model import GPT, MLP, CausalSelfAttention


def rotate_values(model: GPT) -> GPT:
    """A copy of ``model`` with every head's values and the matching output-projection columns in a Hadamard basis:
    the same function, other weights (``vo``)."""
    rotated = copy.deepcopy(model)
    block = block_size(model.cfg.head_dim)
    for module in rotated.modules():
        if isinstance(module, CausalSelfAttention):
            module.c_v.weight.data = rotate(module.c_v.weight.data, 0, block)
            module.proj.weight.data = rotate(module.proj.weight.data, 1, block)
    ve = rotated.value_embeds
    if ve is not None:
        if ve.proj is not None:
            ve.proj.weight.data = rotate(ve.proj.weight.data, 0, block)
        else:
            ve.emb.weight.data = rotate(ve.emb.weight.data, 1, block)
    return rotated


def stream_sides(model: GPT) -> dict[str, tuple[bool, bool]]:
    """``{weight name: (rows on the stream, columns on the stream)}`` for the matrices that write or read it."""
    if model.factored is None:
        sides = {"tok_emb.weight": (False, True)}
    else:
        sides = {"factored.up.weight": (True, False), "factored.down.weight": (False, True)}
    if model.lm_head is not None:
        sides["lm_head.weight"] = (False, True)
    if model.bigram is not None:
        sides["bigram.proj.weight"] = (True, False)
    for name, module in model.named_modules():
        if isinstance(module, CausalSelfAttention):
            sides.update({f"{name}.c_{x}.weight": (False, True) for x in "qkv"})
            sides[f"{name}.proj.weight"] = (True, False)
        elif isinstance(module, MLP):
            sides[f"{name}.fc.weight"] = (False, True)
            sides[f"{name}.proj.weight"] = (True, False)
    return sides


def basis_rotations(model: GPT, modes: tuple[str, ...], names: list[str]) -> dict[str, tuple[int, int]]:
    """``{name: (row block, column block)}`` for the quantized matrices ``names`` that ``input`` / ``residual``
    rotate; a block of 1 leaves that side as it is. Matrices neither rotates are left out."""
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    stream = stream_sides(model) if "residual" in modes else {}
    d = block_size(model.cfg.model_dim) if stream else 1
    out = {}
    for name in names:
        cols = shapes[name][1]
        on_rows, on_cols = stream.get(name, (False, False))
        row_block = d if on_rows else 1
        col_block = block_size(cols) if "input" in modes else d if on_cols else 1
        if row_block > 1 or col_block > 1:
            out[name] = (row_block, col_block)
    return out


def into_basis(state: dict[str, Tensor], rotations: dict[str, tuple[int, int]]) -> dict[str, Tensor]:
    """``state`` with each rotated matrix ``W`` replaced by ``P W R`` (the rotation is its own inverse)."""
    return {
        n: rotate(rotate(t, 0, rotations[n][0]), 1, rotations[n][1]) if n in rotations else t for n, t in state.items()
    }


def hessians_into_basis(
    hessians: dict[str, Tensor] | None, rotations: dict[str, tuple[int, int]]
) -> dict[str, Tensor] | None:
    """``R H R`` for each rotated matrix: the second moment of its rotated input ``R x``."""
    if hessians is None:
        return None
    return {
        n: rotate(rotate(h, 0, rotations[n][1]), 1, rotations[n][1]) if n in rotations else h
        for n, h in hessians.items()
    }


def function_preserving(model: nn.Module, modes: tuple[str, ...]) -> nn.Module:
    """The model export quantizes: ``model`` itself, or its ``vo``-rotated copy. A ternary or binary model
    re-quantizes its matrices on every pass, so rotating their weights would change its function: refused. ``vo``
    and ``residual`` are the GPT's (which pairs commute with which norms is its architecture): another family gets
    ``input`` only, a change of the quantization basis that dequantization undoes."""
    gpt_only = [m for m in modes if m in ("vo", "residual")]
    if gpt_only and not isinstance(model, GPT):
        raise ValueError(f"quant.rotate {','.join(gpt_only)} rotates the GPT's layout, not {type(model).__name__}'s")
    if "vo" in modes and model.cfg.lowbit != "none":
        raise ValueError(f"quant.rotate vo rotates c_v and proj, which model.lowbit = {model.cfg.lowbit} quantizes")
    return rotate_values(model) if "vo" in modes else model
