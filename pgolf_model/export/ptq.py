"""Post-training quantization of a model: per tensor group a bit width and a clip rule, GPTQ or round-to-nearest,
then the optional LQER correction, into a ``quant.QuantizedState``.

Tensor groups (what the records set bits and SDClip ``k`` for; docs/records.md, mixed int-k): ``embed`` (embedding
tables and the untied output head), ``attn`` and ``mlp`` (the blocks' sequence-mixing and MLP matrices), ``other``
(any other matrix), as the model declares them (``tensor_roles``, pgolf_model.registry). Tensors with at most
``keep_float_max_numel`` elements stay float16, as in ``quant``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .. import lowbit
from ..config import QuantConfig
from ..lowbit import LowBit
from ..quant import QuantizedState, dequantize_int, round_to_nearest, row_scales, tensor_format
from . import awq, gptq, lqer

GROUPS = ("embed", "attn", "mlp", "other")


@dataclass(frozen=True)
class GroupRule:
    bits: int
    sdclip_k: float = 0.0  # > 0: SDClip scale k * std(row) / qmax; 0: clip at the row's clip_quantile of |w|


def tensor_groups(model: nn.Module) -> dict[str, str]:
    """``{state-dict name: group}`` for every matrix of ``model``, from its ``tensor_roles``."""
    groups = {name: role.group for name, role in model.tensor_roles().items()}
    bad = {name: g for name, g in groups.items() if g not in GROUPS}
    if bad:
        raise ValueError(f"{type(model).__name__}.tensor_roles: unknown group(s) {bad}; known: {', '.join(GROUPS)}")
    return groups


def is_attention_gate(name: str, shape: tuple[int, ...]) -> bool:
    """The sparse attention gate of a block (``blocks.<i>.attn.gate``, heads x gate width)."""
    return name.endswith(".attn.gate") and len(shape) == 2


def lowbit_matrices(model: nn.Module) -> dict[str, LowBit]:
    """``{state-dict name: LowBit}`` of the matrices ``model`` runs ternary or binary (``model.lowbit``)."""
    return {f"{name}.weight": m.weight_quant for name, m in model.named_modules() if getattr(m, "weight_quant", None)}


def group_members(state: dict[str, Tensor], groups: dict[str, str], cfg: QuantConfig) -> dict[str, list[str]]:
    """``{group: names}`` of the matrices that are quantized (the rest stay float16), in state order."""
    members: dict[str, list[str]] = {}
    for name, t in state.items():
        if name in groups and tensor_format(tuple(t.shape), cfg) == "int":
            members.setdefault(groups[name], []).append(name)
    return members


def quantize_matrix(
    w: Tensor,
    rule: GroupRule,
    *,
    clip_quantile: float,
    hessian: Tensor | None = None,
    sdclip_correction: int = 0,
    awq: tuple | None = None,
) -> tuple[Tensor, Tensor]:
    """``(q int8, scale float16)`` for one matrix: GPTQ when a Hessian is given, else round-to-nearest. ``awq =
    (starts, size, bits)``: those column groups at ``bits`` inside GPTQ, on the clip rule's row scales at ``bits``
    (``awq_scale``)."""
    scale = row_scales(
        w, rule.bits, clip_quantile=clip_quantile, sdclip_k=rule.sdclip_k, sdclip_correction=sdclip_correction
    )
    if hessian is None:
        return round_to_nearest(w, scale, rule.bits), scale
    protect = None
    if awq is not None:
        starts, size, bits = awq
        protect = (starts, size, awq_scale(w, bits, rule, clip_quantile), bits)
    return gptq.gptq(w, hessian, scale, rule.bits, protect=protect), scale


def awq_scale(w: Tensor, bits: int, rule: GroupRule, clip_quantile: float) -> Tensor:
    """The row scales of an AWQ-lite group: the group rule's clip at ``bits`` (the record: SDClip k std / 127)."""
    return row_scales(w, bits, clip_quantile=clip_quantile, sdclip_k=rule.sdclip_k)


def quantize_named(
    name: str,
    t: Tensor,
    rule: GroupRule,
    cfg: QuantConfig,
    *,
    hessian: Tensor | None,
    cache: dict | None,
    awq: tuple | None = None,
) -> tuple[Tensor, Tensor]:
    """``quantize_matrix`` on the CPU result side, memoized in ``cache`` under ``(name, bits, k, awq)``."""
    key = (name, rule.bits, rule.sdclip_k, awq and (tuple(awq[0]), *awq[1:]))
    if cache is not None and key in cache:
        return cache[key]
    q, scale = quantize_matrix(
        t.detach().float(),
        rule,
        clip_quantile=cfg.clip_quantile,
        hessian=hessian,
        sdclip_correction=cfg.sdclip_correction,
        awq=awq,
    )
    out = (q.cpu(), scale.cpu())
    if cache is not None:
        cache[key] = out
    return out


def quantize_state(
    state: dict[str, Tensor],
    groups: dict[str, str],
    rules: dict[str, GroupRule],
    cfg: QuantConfig,
    *,
    hessians: dict[str, Tensor] | None = None,
    lqer_rank: int = 0,
    lqer_top: int = lqer.TOP,
    cache: dict | None = None,
    rotations: dict[str, tuple[int, int]] | None = None,
    lowbits: dict[str, LowBit] | None = None,
) -> QuantizedState:
    """Quantize ``state`` (a ``state_dict``) tensor by tensor; see the module docstring.

    A matrix with a Hessian in ``hessians`` is GPTQ'd, any other one rounded to nearest. With ``lqer_rank > 0`` the
    ``lqer_top`` quantized matrices with the largest error ``||W - Q s||_F`` get a rank-``lqer_rank`` correction.
    ``cache`` (a dict the caller keeps) memoizes ``(name, bits, k) -> (q, scale)`` across calls. ``rotations``
    (``rotation.basis_rotations``) marks the matrices that ``state`` holds in a Hadamard basis. ``lowbits``
    (``lowbit_matrices``) are stored with the ternary / binary levels their model trained with. With
    ``cfg.awq_groups`` (and Hessians) the most salient column groups are quantized finer (``awq``).
    """
    entries: dict[str, dict] = {}
    errors: dict[str, Tensor] = {}
    chosen = {}
    if cfg.awq_groups and hessians:
        widths = {n: rules[groups[n]].bits for n in hessians if n in groups and n in state}
        widths = {n: b for n, b in widths.items() if tensor_format(tuple(state[n].shape), cfg) == "int"}
        top, size, hi = cfg.awq_groups, cfg.awq_group_size, cfg.awq_bits
        chosen = awq.select_groups(state, hessians, widths, top=top, size=size, hi_bits=hi)
    for name, t in state.items():
        if not t.is_floating_point():
            raise ValueError(f"state tensor {name} has dtype {t.dtype}; only float tensors are stored")
        shape = tuple(t.shape)
        if lowbits and name in lowbits:
            kind, group = lowbits[name].kind, lowbits[name].group
            q, scale = lowbit.levels(t.cpu(), kind, group)
            entries[name] = {"shape": shape, "format": kind, "group": group, "q": q.numpy()}
            entries[name]["scale"] = scale.half().numpy()
            continue
        if cfg.gate_int8 and is_attention_gate(name, shape):
            # The 1.0611 record's int8 per-row attention gate (its _quantize_gate_int8_row): scale max|w| / 127.
            scale = row_scales(t, 8)
            q = round_to_nearest(t, scale, 8)
            entries[name] = {"shape": shape, "format": "int", "bits": 8, "q": q.numpy(), "scale": scale.numpy()}
            continue
        if tensor_format(shape, cfg) != "int":
            entries[name] = {"shape": shape, "format": "float16", "value": t.detach().cpu().half().numpy()}
            continue
        if name not in groups:
            raise ValueError(f"matrix {name} {shape} belongs to no tensor group")
        rule = rules[groups[name]]
        h = hessians.get(name) if hessians is not None else None
        group = (chosen[name], cfg.awq_group_size, cfg.awq_bits) if name in chosen else None
        q, scale = quantize_named(name, t, rule, cfg, hessian=h, cache=cache, awq=group)
        entries[name] = {"shape": shape, "format": "int", "bits": rule.bits, "q": q.numpy(), "scale": scale.numpy()}
        if group is not None:
            entries[name]["awq"] = (cfg.awq_group_size, cfg.awq_bits, *chosen[name])
            hi_scale = awq_scale(t.detach().float().cpu(), cfg.awq_bits, rule, cfg.clip_quantile)
            entries[name]["awq_scale"] = hi_scale.numpy()
        if rotations and name in rotations:
            entries[name]["rot"] = rotations[name]
        if lqer_rank > 0:
            errors[name] = t.detach().float().cpu() - dequantize_int(entries[name])
    if lqer_rank > 0:
        worst = sorted(errors, key=lambda n: -float(errors[n].norm()))[:lqer_top]
        for name in worst:
            entries[name]["lqer"] = lqer.factors(errors[name], lqer_rank)
    return QuantizedState(entries)
