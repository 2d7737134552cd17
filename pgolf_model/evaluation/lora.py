"""Per-document LoRA adapters for test-time training, on a view of a GPT that gives each virtual layer its own.

As records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611 (``BatchedTTTLoRA``; doc
LoRA TTT from 2026-04-10_VarLenAttn, PR #1530): one adapter per batch row (each row is a different document), on the
query, key and value projections, on the attention output and on the MLP output as parallel paths from the same normed
input (``module(n) + lora(n)``), and on the pre-soft-cap logits. An adapter adds ``(alpha / rank) B A x`` with
``A ~ U(+-1/sqrt(in))`` and ``B = 0``, so a fresh adapter leaves the model unchanged.

Adapters are per virtual layer, as the record's: with depth recurrence a block that runs three times gets three sets
(17 slots for 11 blocks looping 3..5 three times). The model's forward walks physical block indices, so ``DocLoRA``
runs a *view* of it: a shallow copy whose block list is one wrapped block per virtual slot (sharing the real block's
parameters) and whose layer lists number those slots. The model itself is never modified, and the view sees its
weights change in place (the phases' global SGD).
"""

from __future__ import annotations

import copy
import math
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LoRATarget


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


class Parallel(nn.Module):
    """``inner(x, ...) + lora(x)``: an adapter beside a module, fed the module's (first) input."""

    def __init__(self, inner: nn.Module, lora: BatchedLoRA) -> None:
        super().__init__()
        self.inner, self.lora = inner, lora

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.inner(x, *args, **kwargs) + self.lora(x)


class SlotValues(nn.Module):
    """The model's value embeddings keyed by virtual slot instead of physical block."""

    def __init__(self, inner, order: list[int]) -> None:
        super().__init__()
        self.inner, self.order = inner, order

    def forward(self, idx: Tensor) -> dict[int, Tensor]:
        ves = self.inner(idx)
        return {slot: ves[p] for slot, p in enumerate(self.order) if p in ves}


def _shallow(module: nn.Module, **children: nn.Module | None) -> nn.Module:
    """A copy of ``module`` sharing its parameters and submodules, with ``children`` replaced."""
    clone = copy.copy(module)
    clone._modules = {**module._modules, **children}
    return clone


class DocLoRA(nn.Module):
    """All adapters of one batch of documents for a GPT; ``targets`` picks among q, k, v, o, mlp (head always)."""

    TARGETS = get_args(LoRATarget)

    def __init__(self, model, bsz: int, rank: int, alpha: float, targets: tuple[str, ...]) -> None:
        super().__init__()
        unknown = sorted(set(targets) - set(self.TARGETS))
        if unknown:
            raise ValueError(f"unknown LoRA target(s) {', '.join(unknown)}; known: {', '.join(self.TARGETS)}")
        self.bsz, self.targets = bsz, tuple(t for t in self.TARGETS if t in targets)
        dim, vocab = model.cfg.model_dim, model.cfg.vocab_size
        head_in = model.head_weight.size(1)  # the embedding width: model_dim, or a factored embedding's
        order = [*model.encoder_layers, *model.decoder_layers, *getattr(model, "lane_layers", [])]
        self.slots = nn.ModuleList()
        for p in order:
            attn = model.blocks[p].attn
            shapes = {
                "q": (dim, attn.c_q.out_features),
                "k": (dim, attn.c_k.out_features),
                "v": (dim, attn.c_v.out_features),
                "o": (dim, dim),
                "mlp": (dim, dim),
            }
            self.slots.append(nn.ModuleDict({t: BatchedLoRA(bsz, *shapes[t], rank, alpha) for t in self.targets}))
        self.head = BatchedLoRA(bsz, head_in, vocab, rank, alpha)
        self.to(next(model.parameters()).device)
        # Not a submodule: the view holds the model's parameters, which are not the adapters'.
        self.__dict__["view"] = self._view(model, order)

    def _view(self, model, order: list[int]):
        blocks = []
        for p, loras in zip(order, self.slots):
            block = model.blocks[p]
            attn = _shallow(
                block.attn,
                **{lin: Parallel(getattr(block.attn, lin), loras[t]) for t, lin in (("q", "c_q"), ("k", "c_k"),
                   ("v", "c_v")) if t in loras},
            )  # fmt: skip
            if "o" in loras:
                attn = Parallel(attn, loras["o"])
            mlp = Parallel(block.mlp, loras["mlp"]) if "mlp" in loras else block.mlp
            blocks.append(_shallow(block, attn=attn, mlp=mlp))
        view = _shallow(model, blocks=nn.ModuleList(blocks))
        if getattr(model, "value_embeds", None) is not None:
            view.value_embeds = SlotValues(model.value_embeds, order)
        elif hasattr(model, "value_embeddings"):  # the model code of older artifacts: a method
            view.value_embeddings = SlotValues(model.value_embeddings, order)
        n_enc, n_dec = len(model.encoder_layers), len(model.decoder_layers)
        view.encoder_layers = list(range(n_enc))
        view.decoder_layers = list(range(n_enc, n_enc + n_dec))
        if hasattr(model, "lane_layers"):
            view.lane_layers = list(range(n_enc + n_dec, len(order)))
        return view

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
        """Logits (bsz, T, V) in fp32 of the model with these adapters (and the head adapter before the cap)."""
        h = self.view.hidden(x)
        z = (F.linear(h, self.view.head_weight.to(h.dtype)) + self.head(h)).float()
        if hasattr(self.view, "softcap"):  # as GPT.head, with the head adapter before the cap
            return self.view.softcap(z)
        cap = self.view.cfg.logit_softcap  # the model code of older artifacts
        return cap * torch.tanh(z / cap) if cap > 0 else z

    def nll(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-token NLL (bsz, T) of ``logits``."""
        return F.cross_entropy(self.logits(x).flatten(0, 1), y.flatten(), reduction="none").view_as(y)
