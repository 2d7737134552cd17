"""From trained weights to the artifact's compressed ``weights`` part, within the byte budget.

Steps, as the records run them after training (docs/records.md): the optional Hadamard rotations (``rotation``) ->
self-generated calibration tokens (when GPTQ or the bit allocation needs them) -> Hessians (GPTQ; or given, collected
by the trainer on training tokens inside its clock: ``quant.calib_source train``) -> bit width per
tensor group (fixed by the config, or chosen to fit the budget by ``allocation``) -> GPTQ or round-to-nearest per
matrix -> LQER -> serialize -> compress (the config's codec, or the smallest of zstd-22/lzma/brotli/pergroup
with ``codec = best``; the codec id is recorded in the artifact). Under torchrun the calibration tokens and Hessians
come from every rank (``shared_calibration``, each rank generating and collecting on its share) before rank 0
alone quantizes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from torch import Tensor, nn

from .. import lowbit
from ..artifact import codec_for, compress_weights, weights_codec_name
from ..config import Config
from ..quant import QuantizedState
from ..runtime import Runtime
from . import allocation, calibration, rotation
from .allocation import PlanRow
from .ptq import GROUPS, GroupRule, group_members, lowbit_matrices, quantize_state, tensor_groups


@dataclass
class Export:
    state: QuantizedState
    weights: bytes  # serialized, uncompressed
    compressed: tuple[int, bytes]  # (codec id, bytes): the artifact's weights part
    plan: list[PlanRow]
    seconds: dict[str, float] = field(default_factory=dict)

    def table(self, budget: int | None = None) -> str:
        """The plan; ``budget``: the bytes the allocation fitted the weights part into, if it ran."""
        head = f"quantization plan ({f'fit to {budget:,} bytes' if budget is not None else 'fixed widths'}):"
        codec = weights_codec_name(self.compressed[0])
        return head + "\n" + allocation.format_plan(self.plan, len(self.compressed[1]), codec, budget)


def rules_from_config(cfg: Config) -> dict[str, GroupRule]:
    q = cfg.quant
    return {g: GroupRule(q.bits_of(g), q.sdclip_k_of(g)) for g in GROUPS}


def coding_roles(model: nn.Module) -> dict[str, tuple[str, int]]:
    """``{name: (role, layer)}`` of the model's matrices, by which the per-group codec joins one role's layers: as
    the model declares them (``tensor_roles``, the model interface; layer 0 outside the layers)."""
    return {name: (r.role, r.layer or 0) for name, r in model.tensor_roles().items()}


def calibration_hessians(
    model: nn.Module, cfg: Config, tokens: Tensor, *, runtime: Runtime, reduce: bool = False
) -> dict[str, Tensor]:
    """GPTQ Hessians of ``model`` on calibration ``tokens``, of the (function-preserving) rotated model the export
    quantizes; ``export_weights`` takes them into each matrix's basis. ``reduce``: ``tokens`` is this rank's share,
    and the Hessians are all ranks' (``calibration.collect_hessians``; every rank calls this)."""
    rotated = rotation.function_preserving(model, cfg.quant.rotate)
    q = cfg.quant
    return calibration.collect_hessians(rotated, tokens, batch_size=q.calib_batch, runtime=runtime, reduce=reduce)


@dataclass
class Calibration:
    tokens: Tensor | None  # the self-generated calibration tokens, when the export needs them
    hessians: dict[str, Tensor] | None
    seconds: dict[str, float]


def shared_calibration(
    model: nn.Module,
    cfg: Config,
    *,
    runtime: Runtime,
    seed: int | None = None,
    hessians: dict[str, Tensor] | None = None,
) -> Calibration:
    """What ``export_weights`` would compute from the model itself, with every rank doing its share (every rank calls
    this): the self-generated tokens (for GPTQ without ``hessians``, or the allocation), all-gathered, and GPTQ's
    Hessians on them (``quant.calib_source self``, unless given), all-reduced. Pass both to ``export_weights``."""
    q = cfg.quant
    seed = cfg.train.seed if seed is None else seed
    own_hessians = q.method == "gptq" and q.calib_source == "self" and hessians is None
    if not (own_hessians or q.allocate):
        return Calibration(None, hessians, {})
    rotated = rotation.function_preserving(model, q.rotate)  # what export_weights generates with
    t0 = time.perf_counter()
    length = q.calib_seq_len or cfg.train.seq_len
    tokens, share = calibration.generate_shared(
        rotated, q.calib_seqs, length, batch_size=q.calib_batch, seed=seed, runtime=runtime
    )
    seconds = {"calibration": time.perf_counter() - t0}
    if own_hessians:
        t0 = time.perf_counter()
        hessians = calibration.collect_hessians(rotated, share, batch_size=q.calib_batch, runtime=runtime, reduce=True)
        seconds["hessians"] = time.perf_counter() - t0
    return Calibration(tokens, hessians, seconds)


def export_weights(
    model: nn.Module,
    cfg: Config,
    *,
    runtime: Runtime,
    weights_budget: int | None = None,
    seed: int | None = None,
    hessians: dict[str, Tensor] | None = None,
    tokens: Tensor | None = None,
) -> Export:
    """Quantize and compress ``model``'s weights as ``cfg.quant`` says; ``weights_budget`` (bytes of the compressed
    weights part) is required when ``cfg.quant.allocate`` is on. ``hessians`` (``calibration_hessians``): GPTQ's,
    collected already; required with ``quant.calib_source train``, where the trainer collects them on its clock.
    ``tokens``: the self-generated calibration tokens, generated already (``shared_calibration``)."""
    q = cfg.quant
    if q.allocate and weights_budget is None:
        raise ValueError("quant.allocate needs the byte budget left for the weights")
    if q.method == "gptq" and q.calib_source == "train" and hessians is None:
        raise ValueError(
            "quant.calib_source train: the Hessians come from training tokens inside the training clock "
            "(the trainer collects them, train.calib_reserve_s); none were given"
        )
    seed = cfg.train.seed if seed is None else seed
    seconds: dict[str, float] = {}
    model = rotation.function_preserving(model, q.rotate)
    lowbits = lowbit_matrices(model)  # stored as trained, outside the tensor groups (no widths, GPTQ or rotation)
    groups = {n: g for n, g in tensor_groups(model).items() if n not in lowbits}
    rules = rules_from_config(cfg)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    roles = coding_roles(model)
    quantized = [n for names in group_members(state, groups, q).values() for n in names]
    rotations = rotation.basis_rotations(model, q.rotate, quantized)

    if tokens is None and ((q.method == "gptq" and hessians is None) or q.allocate):
        t0 = time.perf_counter()
        length = q.calib_seq_len or cfg.train.seq_len
        tokens = calibration.generate(model, q.calib_seqs, length, batch_size=q.calib_batch, seed=seed, runtime=runtime)
        seconds["calibration"] = time.perf_counter() - t0
    if q.method == "gptq":
        t0 = time.perf_counter()
        if hessians is None:
            hessians = calibration.collect_hessians(model, tokens, batch_size=q.calib_batch, runtime=runtime)
        hessians = rotation.hessians_into_basis(hessians, rotations)
        seconds["hessians"] = time.perf_counter() - t0
    state = rotation.into_basis(state, rotations)

    cache: dict = {}
    built: dict[tuple, tuple[QuantizedState, bytes, tuple[int, bytes]]] = {}

    def build(bits: dict[str, int]) -> tuple[QuantizedState, bytes, tuple[int, bytes]]:
        key = tuple(sorted(bits.items()))
        if key not in built:
            chosen = {g: replace(r, bits=bits.get(g, r.bits)) for g, r in rules.items()}
            qs = quantize_state(
                state,
                groups,
                chosen,
                q,
                hessians=hessians,
                lqer_rank=q.lqer_rank,
                cache=cache,
                rotations=rotations,
                lowbits=lowbits,
            )
            blob = qs.to_bytes()
            built[key] = (qs, blob, compress_weights(blob, codec_for(q.codec), roles))
        return built[key]

    t0 = time.perf_counter()
    costs: dict[tuple[str, int], float] = {}
    if q.allocate:
        options = allocation.group_options(
            model,
            groups,
            rules,
            q,
            tokens=tokens,
            batch_size=q.calib_batch,
            runtime=runtime,
            hessians=hessians,
            cache=cache,
            rotations=rotations,
        )
        costs = {(g, o.bits): o.cost for g, opts in options.items() for o in opts}
        bits, _ = allocation.allocate(options, weights_budget, lambda b: len(build(b)[2][1]))
    else:
        bits = {g: r.bits for g, r in rules.items()}
    qs, blob, compressed = build(bits)
    seconds["quantize"] = time.perf_counter() - t0

    plan = [
        PlanRow(
            group=g,
            bits=bits[g],
            tensors=len(names),
            params=sum(state[n].numel() for n in names),
            bytes=allocation.entropy_bytes(np.concatenate([qs.entries[n]["q"].reshape(-1) for n in names])),
            cost=costs.get((g, bits[g])),
        )
        for g, names in group_members(state, groups, q).items()
    ]
    for kind in sorted({lb.kind for lb in lowbits.values()}):
        names = [n for n, lb in lowbits.items() if lb.kind == kind]
        packed = sum(lowbit.packed_size(state[n].numel(), kind) for n in names)
        params = sum(state[n].numel() for n in names)
        plan.append(
            PlanRow(
                group=kind,
                bits=2 if kind == "ternary" else 1,
                tensors=len(names),
                params=params,
                bytes=packed,
                cost=None,
            )
        )
    return Export(qs, blob, compressed, plan, seconds)
