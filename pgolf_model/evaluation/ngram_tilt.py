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
the streaming top is a running maximum within each context group. Measured by ``bench/ngram_tilt.py`` (one CPU
thread, 16M targets): 59 bytes per target at the peak (the two stable sorts), so about 2.6 GiB on the records'
47.85M validation targets, freed before scoring, and 2.4 s per million targets (~115 s for all, inside the eval
clock; on the GPU the sorts take a fraction of that). Contexts are compared by a 64-bit hash (a collision can only
merge two contexts' counts, which still only reads earlier targets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import VOCAB_LIMIT, NgramTilt

# Odd 63-bit multipliers of the context hash, one per context position (drawn once from a fixed seed).
_MULTIPLIERS = np.random.default_rng(0x9E3779B9).integers(1, 2**62, size=64, dtype=np.int64) * 2 + 1
VOCAB = VOCAB_LIMIT  # token ids are below it: (group, token) packs into one int64 key
CHUNK = 1 << 20  # events per pass after the sorts (each pass holds ~100 bytes per event)


def _starts(sorted_keys: Tensor) -> Tensor:
    """Where a run of equal keys starts, in a sorted array."""
    first = torch.ones(sorted_keys.numel(), dtype=torch.bool, device=sorted_keys.device)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


def _run_ranks(first: Tensor) -> tuple[Tensor, Tensor]:
    """Each element's run (int32) and its rank within it (int32), for run starts ``first``."""
    run = (torch.cumsum(first, 0, dtype=torch.int64) - 1).to(torch.int32)
    pos = torch.arange(first.numel(), device=first.device, dtype=torch.int32)
    return run, pos - torch.nonzero(first).squeeze(1).to(torch.int32)[run.long()]


def token_hints(tokens: np.ndarray, order: int, threshold: float, device: torch.device | str = "cpu") -> Tensor:
    """The hinted token of each target ``0 .. len(tokens) - 2`` (int32), ``-1`` where the expert stays silent: two
    stable sorts over the stream, then ``CHUNK``-sized passes."""
    if order < 2:
        raise ValueError(f"n-gram order {order}: must be >= 2 (at least one token of context)")
    if order - 1 > len(_MULTIPLIERS):
        raise ValueError(f"n-gram order {order}: at most {len(_MULTIPLIERS) + 1}")
    n = len(tokens) - 1
    hints = torch.full((max(n, 0),), -1, dtype=torch.int32, device=device)
    if n < order:
        return hints
    tok = torch.from_numpy(tokens.astype(np.int64)).to(device)
    # ctx[j]: hash of tokens j - order + 2 .. j (complete from j = order - 2 on); int64 products wrap, as intended.
    ctx = torch.zeros(n, dtype=torch.int64, device=device)
    for k in range(order - 1):
        ctx[k:] ^= (tok[: n - k] + 1) * int(_MULTIPLIERS[k])
    y = tok[1:].to(torch.int32)
    del tok
    # Grouped by context, in stream order within each group: a target's total is its rank in its group.
    sorted_ctx, by_ctx = torch.sort(ctx, stable=True)
    del ctx
    first = _starts(sorted_ctx)
    del sorted_ctx
    group, total = _run_ranks(first)
    ys = y[by_ctx]
    del y
    # Pair counts: sorted again by (group, token), stably, each event's count of its pair so far is its rank + 1.
    sorted_pairs, by_pair = torch.sort(group.long() * VOCAB + ys, stable=True)
    _, pair_rank = _run_ranks(_starts(sorted_pairs))
    del sorted_pairs
    count = torch.empty(n, dtype=torch.int32, device=device)
    count[by_pair] = pair_rank + 1
    del by_pair, pair_rank
    # The streaming top is the running max of the pair counts within each group (offset by the group so that the
    # running max restarts at every group), and its token the last one that raised it; chunk by chunk, carried over.
    carry_max, carry_at, prev_count, prev_tok = None, None, None, None
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        offset = group[a:b].long() * (n + 1)
        c = count[a:b].long() + offset
        running = torch.cummax(c if carry_max is None else torch.cat((carry_max, c)), dim=0).values
        running = running if carry_max is None else running[1:]
        top_count = running - offset
        before = torch.cat((top_count.new_zeros(1) if prev_count is None else prev_count, top_count[:-1]))
        before[first[a:b]] = 0
        pos = torch.arange(a, b, device=device)
        raised = torch.where(c - offset > before, pos, 0)  # the event made its token the top
        at = torch.cummax(raised if carry_at is None else torch.cat((carry_at, raised)), dim=0).values
        at = at if carry_at is None else at[1:]
        top_tok = ys[at]
        # The hint for an event is its group's state after the event before it.
        hint_tok = torch.cat((top_tok.new_zeros(1) if prev_tok is None else prev_tok, top_tok[:-1]))
        t = total[a:b].clamp(min=1).float()
        gate = ~first[a:b] & (before.float() / t >= threshold) & (by_ctx[a:b] >= order - 2)  # float32, as the record
        hints[by_ctx[a:b][gate]] = hint_tok[gate]
        carry_max, carry_at, prev_count, prev_tok = running[-1:], at[-1:], top_count[-1:], top_tok[-1:]
    return hints


@dataclass(frozen=True)
class TokenTilt:
    """The hints of a stream's targets and the boost; scorers call ``nll`` in place of the model's cross-entropy."""

    hints: Tensor  # (targets,) int32 hinted token, -1 = none
    boost: float

    def columns(self, offsets: list[int], firsts: list[int], width: int) -> Tensor:
        """Hints (rows, width) of a batch whose row r has target ``firsts[r]`` at column ``offsets[r]`` (as
        ``Tally.add_runs``); -1 outside the stream."""
        base = torch.tensor([f - o for f, o in zip(firsts, offsets)], device=self.hints.device)
        idx = base[:, None] + torch.arange(width, device=self.hints.device)
        inside = (idx >= 0) & (idx < self.hints.numel())
        return torch.where(inside, self.hints[idx.clamp(0, self.hints.numel() - 1)].long(), -1)

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
