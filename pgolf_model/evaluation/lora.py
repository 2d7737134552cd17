"""Per-document LoRA adapters for test-time training, on a view of the model that gives each virtual layer its own.

As records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611 (``BatchedTTTLoRA``; doc
LoRA TTT from 2026-04-10_VarLenAttn, PR #1530): one adapter per batch row (each row is a different document), on the
query, key and value projections, on the attention output and on the MLP output as parallel paths from the same normed
input (``module(n) + lora(n)``), and on the pre-soft-cap logits. An adapter adds ``(alpha / rank) B A x`` with
``A ~ U(+-1/sqrt(in))`` and ``B = 0``, so a fresh adapter leaves the model unchanged.

Adapters are per virtual layer, as the record's: with depth recurrence a block that runs three times gets three sets
(17 slots for 11 blocks looping 3..5 three times). The model's ``lora_sites`` hook (the model interface,
pgolf_model.registry) gives a *view* of it, a shallow copy with one block per virtual layer sharing the real block's
parameters, and where in the view each target sits; ``DocLoRA`` wraps those modules of the view. The model itself is
never modified, and the view sees its weights change in place (the phases' global SGD).
"""

from __future__ import annotations

import math
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LoRATarget
from ..layers import Parallel


class BatchedLoRA(nn.Module):
    """``bsz`` independent rank-``rank`` adapters ``in_features -> out_features``; row b of the input uses adapter b."""

    def __init__(self, bsz: int, in_features: int, out_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.scale = alpha / rank  # PR #1767: scaled by alpha/rank, so the rank does not change the step size
        self.bound = 1.0 / math.sqrt(in_features)
        self.A = nn.Parameter(torch.zeros(bsz, rank, in_features))
        self.B = nn.Parameter(torch.zeros(bsz, out_features, rank))

    def draw(self, rows: int, generator: torch.Generator) -> Tensor:
        """``rows`` starting values of A, ``U(+-1/sqrt(in))``; ``generator`` is a CPU generator, so draws match on
        any device."""
        a = torch.empty(rows, *self.A.shape[1:]).uniform_(-self.bound, self.bound, generator=generator)
        return a.to(self.A.device)

    @torch.no_grad()
    def load(self, start: Tensor, rows: Tensor) -> None:
        """Row b starts from ``start[rows[b]]``; B is zeroed (a fresh adapter's output is 0)."""
        self.A.copy_(start[rows])
        self.B.zero_()

    def forward(self, x: Tensor) -> Tensor:  # x: (bsz, T, in) -> (bsz, T, out)
        return (x @ self.A.mT.to(x.dtype)) @ self.B.mT.to(x.dtype) * self.scale


class DocLoRA(nn.Module):
    """All adapters of one batch of documents for a model with the ``lora_sites`` hook; ``targets`` picks among q, k,
    v, o, mlp (head always)."""

    TARGETS = get_args(LoRATarget)

    def __init__(self, model, bsz: int, rank: int, alpha: float, targets: tuple[str, ...]) -> None:
        super().__init__()
        unknown = sorted(set(targets) - set(self.TARGETS))
        if unknown:
            raise ValueError(f"unknown LoRA target(s) {', '.join(unknown)}; known: {', '.join(self.TARGETS)}")
        if not hasattr(model, "lora_sites"):
            raise ValueError(f"{type(model).__name__} has no LoRA TTT hooks (lora_sites): use eval.ttt none or full")
        self.bsz, self.targets = bsz, tuple(t for t in self.TARGETS if t in targets)
        view, sites, head = model.lora_sites()
        self.slots = nn.ModuleList()
        for layer in sites:
            # A layer adapts the targets it has (an attention-free GPT block: mlp only); each must exist somewhere.
            loras = {t: BatchedLoRA(bsz, *layer[t][2:], rank, alpha) for t in self.targets if t in layer}
            for t, lora in loras.items():
                parent, name = layer[t][:2]
                setattr(parent, name, Parallel(getattr(parent, name), lora))
            self.slots.append(nn.ModuleDict(loras))
        missing = [t for t in self.targets if not any(t in layer for layer in sites)]
        if missing:
            raise ValueError(f"{type(model).__name__} has no LoRA site for {', '.join(missing)}")
        self.head = BatchedLoRA(bsz, *head, rank, alpha)
        self.to(next(model.parameters()).device)
        # Not a submodule: the view holds the model's parameters, which are not the adapters'.
        self.__dict__["view"] = view

    def adapters(self) -> list[BatchedLoRA]:
        return [m for m in self.modules() if isinstance(m, BatchedLoRA)]

    def draw(self, rows: int, generator: torch.Generator) -> list[Tensor]:
        """Starting values of A for ``rows`` rows, one tensor per adapter (``load`` reads them)."""
        return [m.draw(rows, generator) for m in self.adapters()]

    def load(self, starts: list[Tensor], rows: list[int]) -> None:
        """Start a batch: row b's adapters from row ``rows[b]`` of ``starts``, B zeroed."""
        rows_t = torch.tensor(rows, device=self.head.A.device)
        for m, start in zip(self.adapters(), starts):
            m.load(start, rows_t)

    @torch.no_grad()
    def keep(self, starts: list[Tensor], n: int) -> None:
        """The trained A of rows ``0..n-1`` become those rows of ``starts`` (the warm start)."""
        for m, start in zip(self.adapters(), starts):
            start[:n].copy_(m.A[:n])

    def logits(self, x: Tensor) -> Tensor:
        """Logits (bsz, T, V) in fp32 of the model with these adapters (and the head adapter before the soft-cap)."""
        h = self.view.hidden(x)
        return self.view.head(h, self.head(h))

    def nll(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-token NLL (bsz, T) of ``logits``."""
        return F.cross_entropy(self.logits(x).flatten(0, 1), y.flatten(), reduction="none").view_as(y)
