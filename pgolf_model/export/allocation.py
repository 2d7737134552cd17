"""Budget-driven bit allocation: the bit width of each tensor group that fits the weights into the bytes left.

Every group starts at ``MAX_BITS``. While the estimated compressed weights are over the budget, the group whose next
step down costs the least loss per byte saved goes down one bit, never below ``MIN_BITS`` (the width range of the
records: int5 MLP in 2026-03-20, int6 attention/MLP and int7/int8 embeddings since). Per group and width:

- *bytes*: the order-0 entropy of the group's quantized integers, in bytes. zstd-22, lzma and brotli all land within
  a few percent of it on quantized weights, and it costs no compression run per candidate;
- *cost*: the increase of the mean loss (nats per token) on the self-generated calibration tokens when only that
  group is quantized to that width, the rest left in float. Costs are assumed to add up across groups.

The integers are the ones the final artifact stores (GPTQ'd when the run uses GPTQ). The plan is then serialized and
compressed for real; if it is still over budget (scales, float tensors, LQER factors and the compressor's overhead
are outside the estimate), the gap is charged against the budget and the plan is redone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from ..config import QuantConfig
from ..quant import unrotate
from ..runtime import Runtime
from .ptq import GroupRule, group_members, quantize_named
from .rotation import into_basis

MIN_BITS, MAX_BITS = 5, 8
MAX_ROUNDS = 4  # plan, compress, charge the gap: converges in 1-2 rounds in practice


class AllocationError(ValueError):
    """No choice of widths fits the budget; the message gives the smallest estimate reached."""


@dataclass(frozen=True)
class Option:
    """One tensor group at one bit width."""

    bits: int
    bytes: float  # estimated compressed bytes of the group's integers
    cost: float  # calibration loss increase (nats/token) with only this group quantized at this width


def entropy_bytes(values: np.ndarray) -> float:
    """Order-0 entropy of ``values`` in bytes: what an ideal memoryless coder needs for them."""
    _, counts = np.unique(np.asarray(values).reshape(-1), return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum() / 8)


def greedy(options: dict[str, list[Option]], budget: float) -> dict[str, int]:
    """``{group: bits}`` with estimated bytes <= ``budget``, lowering first where loss per byte saved is smallest.

    ``options[group]`` lists the group's widths (any order). Ties go to the group listed first.
    """
    by_bits = {g: {o.bits: o for o in opts} for g, opts in options.items()}
    choice = {g: max(opts) for g, opts in by_bits.items()}

    def total() -> float:
        return sum(by_bits[g][b].bytes for g, b in choice.items())

    while total() > budget:
        best, best_rate = None, None
        for g, b in choice.items():
            lower = [x for x in by_bits[g] if x < b]
            if not lower:
                continue
            nxt = by_bits[g][max(lower)]
            saved = by_bits[g][b].bytes - nxt.bytes
            rate = (nxt.cost - by_bits[g][b].cost) / saved if saved > 0 else float("inf")
            if best_rate is None or rate < best_rate:
                best, best_rate = g, rate
        if best is None:
            widths = ", ".join(f"{g} int{b}" for g, b in choice.items())
            raise AllocationError(
                f"even the narrowest widths ({widths}) need an estimated {total():,.0f} bytes for the quantized "
                f"weights; {budget:,.0f} are left"
            )
        choice[best] = max(x for x in by_bits[best] if x < choice[best])
    return choice


@dataclass(frozen=True)
class PlanRow:
    group: str
    bits: int
    tensors: int
    params: int
    bytes: float  # estimated compressed bytes of the integers
    cost: float | None  # calibration loss increase, when the allocation measured it


def format_plan(rows: list[PlanRow], total_bytes: int, codec: str, budget: int | None = None) -> str:
    """The plan as an aligned table, then the real compressed size of all weights (against the budget if any)."""
    lines = [f"  {'group':<8}{'bits':>5}{'tensors':>9}{'params':>13}{'est. bytes':>13}{'calib loss +':>14}"]
    for r in rows:
        cost = "-" if r.cost is None else f"{r.cost:.5f}"
        lines.append(f"  {r.group:<8}{'int' + str(r.bits):>5}{r.tensors:>9}{r.params:>13,}{r.bytes:>13,.0f}{cost:>14}")
    within = f", budget {budget:,}" if budget is not None else ""
    lines.append(f"  weights part: {total_bytes:,} bytes with {codec} (integers, scales, LQER, float tensors){within}")
    return "\n".join(lines)


def allocate(
    options: dict[str, list[Option]], budget: int, measure: Callable[[dict[str, int]], int]
) -> tuple[dict[str, int], int]:
    """Fit by estimate, then by ``measure(bits) -> real compressed bytes``; returns ``(bits, real bytes)``.

    Each round charges the gap between the real size and the estimate to the budget and plans again.
    """
    charge = 0.0
    for _ in range(MAX_ROUNDS):
        bits = greedy(options, budget - charge)
        real = measure(bits)
        if real <= budget:
            return bits, real
        estimate = sum({o.bits: o for o in options[g]}[b].bytes for g, b in bits.items())
        charge = max(charge + 1.0, real - estimate)
    raise AllocationError(f"no plan within {MAX_ROUNDS} rounds fits {budget:,} bytes (last: {real:,} with {bits})")


@torch.no_grad()
def calibration_loss(
    model: nn.Module,
    tokens: Tensor,
    *,
    batch_size: int,
    runtime: Runtime,
    overrides: dict[str, Tensor] | None = None,
) -> float:
    """Mean next-token loss (nats) of ``model`` on ``tokens`` (rows of a batch), with some weights replaced."""
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for first in range(0, tokens.size(0), batch_size):
        seq = tokens[first : first + batch_size].to(runtime.device)
        with runtime.autocast():
            loss = torch.func.functional_call(model, overrides or {}, (seq[:, :-1], seq[:, 1:]), {"reduction": "none"})
        total += float(loss.double().sum())
        count += loss.numel()
    model.train(was_training)
    return total / count


def group_options(
    model: nn.Module,
    groups: dict[str, str],
    rules: dict[str, GroupRule],
    cfg: QuantConfig,
    *,
    tokens: Tensor,
    batch_size: int,
    runtime: Runtime,
    hessians: dict[str, Tensor] | None = None,
    cache: dict | None = None,
    widths: Iterable[int] = range(MIN_BITS, MAX_BITS + 1),
    rotations: dict[str, tuple[int, int]] | None = None,
) -> dict[str, list[Option]]:
    """Bytes and cost (see the module docstring) of every group with quantized matrices, at every width;
    ``rotations``: the matrices quantized in a Hadamard basis (``rotation.basis_rotations``; Hessians rotated too)."""
    rotations = rotations or {}
    state = into_basis(model.state_dict(), rotations)
    members = group_members(state, groups, cfg)
    base = calibration_loss(model, tokens, batch_size=batch_size, runtime=runtime)
    options: dict[str, list[Option]] = {}
    for group, names in members.items():
        options[group] = []
        for bits in widths:
            rule = replace(rules[group], bits=bits)
            quantized = {
                n: quantize_named(n, state[n], rule, cfg, hessian=(hessians or {}).get(n), cache=cache) for n in names
            }
            size = entropy_bytes(np.concatenate([q.numpy().reshape(-1) for q, _ in quantized.values()]))
            overrides = {
                n: unrotate(q.float() * s.float()[:, None], rotations.get(n)).to(state[n])
                for n, (q, s) in quantized.items()
            }
            loss = calibration_loss(model, tokens, batch_size=batch_size, runtime=runtime, overrides=overrides)
            options[group].append(Option(bits, size, loss - base))
    return options
