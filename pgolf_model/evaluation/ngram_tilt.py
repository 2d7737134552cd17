"""Token-only n-gram tilt: a causal n-gram expert over the validation stream boosts one hinted token per target.

As the 1.0565 record (PR #2135 on PR #2130, origin PR #1145, merged precedent PR #1514; docs/records.md, n-gram
tilt), its token channel only (the word channels gate on the target itself, which breaks causality). For target
``j`` (stream position ``j + 1``) the context is the ``order - 1`` tokens ending at position ``j``; over the earlier
targets with the same context, the expert knows ``total`` (how many) and, as a streaming argmax (a token replaces
the top only when its count passes the top count), the top next token and its count. The hint is that token where
``top / total >= threshold`` and the context is complete. The model's distribution ``q`` is then tilted and
renormalized over the whole vocabulary: ``p(a) = q(a) exp(boost [a = h]) / Z`` with ``Z = 1 + q_h (e^boost - 1)``,
so ``NLL' = NLL - boost [y = h] + log1p(q_h (e^boost - 1))``.

The record keeps its tables in open-addressing hash tables filled by a C loop (about 8.5 GB of host memory per rank
at its table sizes). Here the same statistics come from sorts over the whole stream at once, on the evaluation
device: grouped by context, each target's count of earlier (context, token) pairs is a rank within a sorted run, and
the streaming top is a running maximum within each context group. The memory is a few 8-byte arrays of the stream's
length (about 3 GB on the 47.85M-target validation set), freed before scoring; contexts are compared by a 64-bit
hash (a collision can only merge two contexts' counts, which still only reads earlier targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import NgramTilt

# Odd 63-bit multipliers of the context hash, one per context position (drawn once from a fixed seed).
_MULTIPLIERS = np.random.default_rng(0x9E3779B9).integers(1, 2**62, size=64, dtype=np.int64) * 2 + 1


def _runs(first: Tensor) -> Tensor:
    """Each element's rank within its run, for a sorted array whose run starts are ``first``."""
    pos = torch.arange(first.numel(), device=first.device)
    return pos - torch.cummax(torch.where(first, pos, 0), dim=0).values


def _starts(*sorted_keys: Tensor) -> Tensor:
    """Where a run of equal keys (all of ``sorted_keys`` equal) starts."""
    first = torch.zeros(sorted_keys[0].numel(), dtype=torch.bool, device=sorted_keys[0].device)
    first[0] = True
    for k in sorted_keys:
        first[1:] |= k[1:] != k[:-1]
    return first


def token_hints(tokens: np.ndarray, order: int, threshold: float, device: torch.device | str = "cpu") -> Tensor:
    """The hinted token of each target ``0 .. len(tokens) - 2`` (int64), ``-1`` where the expert stays silent."""
    if order < 2:
        raise ValueError(f"n-gram order {order}: must be >= 2 (at least one token of context)")
    if order - 1 > len(_MULTIPLIERS):
        raise ValueError(f"n-gram order {order}: at most {len(_MULTIPLIERS) + 1}")
    n = len(tokens) - 1
    if n < order:
        return torch.full((max(n, 0),), -1, dtype=torch.int64, device=device)
    tok = torch.from_numpy(tokens.astype(np.int64)).to(device)
    y = tok[1:]
    # ctx[j]: hash of tokens j - order + 2 .. j (complete from j = order - 2 on); int64 products wrap, as intended.
    ctx = torch.zeros(n, dtype=torch.int64, device=device)
    for k in range(order - 1):
        ctx[k:] ^= (tok[: n - k] + 1) * int(_MULTIPLIERS[k])
    # Pair counts: in (context, token, position) order each event's count of its pair so far is its rank + 1.
    by_tok = torch.sort(y, stable=True).indices
    pair_order = by_tok[torch.sort(ctx[by_tok], stable=True).indices]
    count = torch.empty(n, dtype=torch.int64, device=device)
    count[pair_order] = _runs(_starts(ctx[pair_order], y[pair_order])) + 1
    del by_tok, pair_order
    # In (context, position) order: the streaming top is the running max of the pair counts within each group.
    order_ = torch.sort(ctx, stable=True).indices
    first = _starts(ctx[order_])
    total_before = _runs(first)
    group = torch.cumsum(first, 0)
    c = count[order_]
    top_count = torch.cummax(c + group * (n + 1), dim=0).values - group * (n + 1)  # after each event
    prev_top = torch.cat((top_count.new_zeros(1), top_count[:-1]))
    prev_top[first] = 0
    pos = torch.arange(n, device=device)
    record = c > prev_top  # the event made its token the top (the group's first event always does)
    top_at = torch.cummax(torch.where(record, pos, 0), dim=0).values
    top_tok = y[order_][top_at]
    # The hint for an event is the group's state after the event before it.
    hint_tok = torch.cat((top_tok.new_zeros(1), top_tok[:-1]))
    hint_count = torch.cat((top_count.new_zeros(1), top_count[:-1]))
    gate = ~first & (hint_count.float() / total_before.clamp(min=1).float() >= threshold)  # float32, as the record
    gate &= order_ >= order - 2  # the context is complete
    hints = torch.full((n,), -1, dtype=torch.int64, device=device)
    hints[order_[gate]] = hint_tok[gate]
    return hints


@dataclass(frozen=True)
class TokenTilt:
    """The hints of a stream's targets and the boost; scorers call ``nll`` in place of the model's cross-entropy."""

    hints: Tensor  # (targets,) int64 hinted token, -1 = none
    boost: float

    def columns(self, offsets: list[int], firsts: list[int], width: int) -> Tensor:
        """Hints (rows, width) of a batch whose row r has target ``firsts[r]`` at column ``offsets[r]`` (as
        ``Tally.add_runs``); -1 outside the stream."""
        base = torch.tensor([f - o for f, o in zip(firsts, offsets)], device=self.hints.device)
        idx = base[:, None] + torch.arange(width, device=self.hints.device)
        inside = (idx >= 0) & (idx < self.hints.numel())
        return torch.where(inside, self.hints[idx.clamp(0, self.hints.numel() - 1)], -1)

    def nll(self, logits: Tensor, y: Tensor, hints: Tensor) -> Tensor:
        """Per-target NLL (rows, width) of the tilted, renormalized distribution (fp32 logits (rows, width, V))."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(-1, y[..., None]).squeeze(-1)
        hints = hints.to(y.device)
        log_qh = logp.gather(-1, hints.clamp(min=0)[..., None]).squeeze(-1)
        log_z = torch.log1p(log_qh.exp() * np.expm1(self.boost))
        tilted = nll - self.boost * (y == hints) + log_z
        return torch.where(hints >= 0, tilted, nll)


def make_tilt(tokens: np.ndarray, cfg: NgramTilt | None, device) -> TokenTilt | None:
    """The tilt of the targets of ``tokens`` (the whole scored stream, so inside the evaluation's clock), or None
    when off."""
    if cfg is None or not cfg.boost:
        return None
    return TokenTilt(token_hints(tokens, cfg.order, cfg.threshold, device), cfg.boost)
