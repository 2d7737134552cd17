"""Per-document LoRA adapters for test-time training, attached to a model by wrapping the modules its ``lora_sites``
hook names (the model interface, pgolf_model.registry).

As records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611 (``BatchedTTTLoRA``; doc
LoRA TTT from 2026-04-10_VarLenAttn, PR #1530): one adapter per batch row (each row is a different document), on each
block's query, key and value projections, on the attention output and on the MLP output as parallel paths from the
same normed input (``module(n) + lora(n)``), and on the pre-soft-cap logits. An adapter adds ``(alpha / rank) B A x``
with ``A ~ U(+-1/sqrt(in))`` and ``B = 0``, so a fresh adapter leaves the model unchanged. Adapters are per physical
block: a block that appears twice in the layer sequence (depth recurrence) shares its adapters, where the record has
one per virtual layer. ``GPT.lora_sites`` says which module each target wraps; another family names its own.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LoRATarget


class BatchedLoRA(nn.Module):
    """``bsz`` independent rank-``rank`` adapters ``in_features -> out_features``; row b of the input uses adapter b."""

    def __init__(
        self, bsz: int, in_features: int, out_features: int, rank: int, alpha: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.scale = alpha / rank  # PR #1767: scaled by alpha/rank, so the rank does not change the step size
        self.bound = 1.0 / math.sqrt(in_features)
        self.A = nn.Parameter(torch.empty(bsz, rank, in_features))
        self.B = nn.Parameter(torch.zeros(bsz, out_features, rank))
        self.reset(keep_a=False, generator=generator)

    @torch.no_grad()
    def reset(self, keep_a: bool, generator: torch.Generator) -> None:
        """Zero B (the adapter's output); redraw A unless ``keep_a`` (the record's warm start: A keeps the feature
        directions learned on earlier documents). ``generator`` is a CPU generator, so draws match on any device."""
        if not keep_a:
            a = torch.empty(self.A.shape).uniform_(-self.bound, self.bound, generator=generator)
            self.A.copy_(a)
        self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:  # x: (bsz, T, in) -> (bsz, T, out)
        return (x @ self.A.mT.to(x.dtype)) @ self.B.mT.to(x.dtype) * self.scale


class Parallel(nn.Module):
    """``inner(x, ...) + lora(x)``: an adapter beside a module, fed the module's (first) input."""

    def __init__(self, inner: nn.Module, lora: BatchedLoRA) -> None:
        super().__init__()
        self.inner, self.lora = inner, lora

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.inner(x, *args, **kwargs) + self.lora(x)


class DocLoRA(nn.Module):
    """All adapters of one batch of documents for a model with the ``lora_sites`` hook; ``targets`` picks among q, k,
    v, o, mlp (head always)."""

    TARGETS = get_args(LoRATarget)

    def __init__(
        self, model, bsz: int, rank: int, alpha: float, targets: tuple[str, ...], generator: torch.Generator
    ) -> None:
        super().__init__()
        unknown = sorted(set(targets) - set(self.TARGETS))
        if unknown:
            raise ValueError(f"unknown LoRA target(s) {', '.join(unknown)}; known: {', '.join(self.TARGETS)}")
        if not hasattr(model, "lora_sites"):
            raise ValueError(f"{type(model).__name__} has no LoRA TTT hooks (lora_sites): use eval.ttt none or full")
        self.bsz, self.targets = bsz, tuple(t for t in self.TARGETS if t in targets)
        sites, head = model.lora_sites()
        self.blocks = nn.ModuleList()
        for i, layer in enumerate(sites):
            missing = [t for t in self.targets if t not in layer]
            if missing:
                raise ValueError(f"{type(model).__name__} layer {i} has no LoRA site for {', '.join(missing)}")
            loras = {t: BatchedLoRA(bsz, *layer[t][2:], rank, alpha, generator) for t in self.targets}
            self.blocks.append(nn.ModuleDict(loras))
        self.head = BatchedLoRA(bsz, *head, rank, alpha, generator)
        self.to(next(model.parameters()).device)

    def reset(self, keep_a: bool, generator: torch.Generator) -> None:
        for m in self.modules():
            if isinstance(m, BatchedLoRA):
                m.reset(keep_a, generator)

    @contextlib.contextmanager
    def attached(self, model) -> Iterator[None]:
        """Wrap ``model``'s modules with these adapters for the duration; the model is restored afterwards."""
        saved = []
        for layer, loras in zip(model.lora_sites()[0], self.blocks):
            for target in self.targets:
                parent, name = layer[target][:2]
                saved.append((parent, name, getattr(parent, name)))
                setattr(parent, name, Parallel(getattr(parent, name), loras[target]))
        try:
            yield
        finally:
            for parent, name, inner in reversed(saved):
                setattr(parent, name, inner)

    def nll(self, model, x: Tensor, y: Tensor) -> Tensor:
        """Per-token NLL (bsz, T) of the model with these adapters attached (and the head adapter before the cap)."""
        with self.attached(model):
            h = model.hidden(x)
        logits = model.head(h, self.head(h))
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
