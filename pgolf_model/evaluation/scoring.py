"""Exact bits per byte of a token stream: the result, the windows, the running tally and the scorer.

BPB = (sum over scored targets of NLL in nats) / ln 2 / (sum over the same targets of their bytes) (docs/bpb.md).
Targets are numbered ``j = 0 .. N-2``: target ``j`` is stream position ``j + 1``, predicted from positions ``<= j``,
and accounts for ``byte_counts[j + 1]`` bytes.

Two numbers come out of one pass (docs/bpb.md, both numbers): ``val_bpb``, exact (the sidecars' original bytes,
every target), and, given the official scorer's byte counts, ``val_bpb_official`` over exactly the targets the
official eval scores: it cuts the stream to ``((N - 1) // seq_len) * seq_len`` targets, dropping the last partial
window. Without exact byte counts (an official shard folder) only the official number exists.

Windows of ``seq_len`` inputs start every ``stride`` tokens. The first window scores all its targets; each later one
scores only the targets after the previous window's end, i.e. its last ``stride`` (the stream's last window, which
ends at the stream's end, fewer). So every target is scored exactly once, all but the first ``seq_len`` with at least
``seq_len - stride`` tokens of context. ``stride = seq_len`` gives non-overlapping windows, the baseline's scorer;
smaller strides are sliding-window evaluation (docs/records.md, sliding window: stride 64 took the baseline from
1.2244 to 1.1925 BPB). Unlike the records' code, windows that would only re-score the stream's last targets are not
run. Score-first TTT (``ttt``) scores through the same windows and tally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..config import NgramTilt
from ..runtime import Runtime, all_reduce_sum
from .ngram_tilt import TokenTilt, make_tilt


@dataclass(frozen=True)
class BPBResult:
    nll_nats: float  # summed over scored targets
    tokens: int
    bytes: int
    nll: np.ndarray | None = field(default=None, compare=False, repr=False)  # per target when kept; NaN: other rank
    official: BPBResult | None = None  # the official byte rule over the official targets, when counted
    measure: str = "exact"  # "official": this result is itself the official number (no exact byte counts)
    rule: str = "original bytes, every target"  # how its bytes were counted, for the labels

    @property
    def loss(self) -> float:
        return self.nll_nats / self.tokens

    @property
    def bpb(self) -> float:
        return self.nll_nats / math.log(2) / self.bytes

    @property
    def key(self) -> str:
        return "val_bpb" if self.measure == "exact" else "val_bpb_official"

    def to_dict(self) -> dict:
        """``val_loss``, ``val_bpb``, ``val_tokens``, ``val_bytes`` and the same with ``_official``, as measured."""
        suffix = self.key.removeprefix("val_bpb")
        own = {f"val_loss{suffix}": self.loss, self.key: self.bpb, f"val_tokens{suffix}": self.tokens}
        return {**own, f"val_bytes{suffix}": self.bytes, **(self.official.to_dict() if self.official else {})}

    def line(self) -> str:
        """Every number with its label, for a console line."""
        own = f"{self.key} {self.bpb:.4f} ({self.measure}: {self.rule}, {self.tokens:,} targets)"
        return own + (f"  {self.official.line()}" if self.official else "")


def official_targets(n_tokens: int, seq_len: int) -> int:
    """How many targets of an ``n_tokens`` stream the official eval scores: whole windows of ``seq_len`` only."""
    return (n_tokens - 1) // seq_len * seq_len


def prepare(tokens: np.ndarray, *counts: np.ndarray | None, val_tokens: int = 0) -> tuple[np.ndarray, ...]:
    """The stream to score and its byte counts (``None`` where absent): checked, cut to its first ``val_tokens``
    targets (0: all)."""
    for c in counts:
        if c is not None and len(c) != len(tokens):
            raise ValueError(f"{len(c)} byte counts for {len(tokens)} tokens")
    if val_tokens:
        tokens, counts = tokens[: val_tokens + 1], tuple(None if c is None else c[: val_tokens + 1] for c in counts)
    if len(tokens) < 2:
        raise ValueError("the validation split has fewer than 2 tokens")
    return (tokens, *counts)


@dataclass(frozen=True)
class Window:
    start: int  # first target (= first input position) of the window
    end: int  # one past its last target
    first_scored: int  # the window scores targets first_scored .. end - 1

    @property
    def width(self) -> int:
        return self.end - self.start


def windows(n_targets: int, seq_len: int, stride: int) -> list[Window]:
    """The windows over ``n_targets`` targets; their scored runs tile ``0 .. n_targets - 1`` in order."""
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride {stride}: must be in [1, seq_len = {seq_len}]")
    count = 1 + max(0, math.ceil((n_targets - seq_len) / stride))
    out, prev_end = [], 0
    for k in range(count):
        start = k * stride
        end = min(start + seq_len, n_targets)
        out.append(Window(start, end, prev_end))
        prev_end = end
    return out


def rank_slice(items: list, runtime: Runtime) -> list:
    """This rank's contiguous share of ``items``."""
    n = len(items)
    return items[n * runtime.rank // runtime.world_size : n * (runtime.rank + 1) // runtime.world_size]


class Tally:
    """Sums of NLL, targets and bytes over the scored targets, which are added in runs of consecutive targets.

    ``byte_counts`` (exact, or None) count every target; ``official`` counts only the first ``official_limit``."""

    def __init__(
        self,
        byte_counts: np.ndarray | None,
        n_targets: int,
        device: torch.device,
        keep_nll: bool = False,
        official: np.ndarray | None = None,
        official_limit: int = 0,
        official_rule: str = "",
    ) -> None:
        self.measures = [(c, lim) for c, lim in ((byte_counts, n_targets), (official, official_limit)) if c is not None]
        self.exact, self.official_rule = byte_counts is not None, official_rule
        self.sums = torch.zeros(len(self.measures), dtype=torch.float64, device=device)
        self.tokens = [0] * len(self.measures)
        self.bytes = [0] * len(self.measures)
        self.nll = np.full(n_targets, np.nan) if keep_nll else None

    def add_runs(self, nll: torch.Tensor, offsets: list[int], firsts: list[int], lengths: list[int]) -> None:
        """Row r of ``nll`` (rows, width) scores targets ``firsts[r] ..`` at columns ``offsets[r] ..``, ``lengths[r]``
        of them (0 for a row that scores nothing)."""
        cols = torch.arange(nll.size(1), device=nll.device)[None, :]
        lo = torch.tensor(offsets, device=nll.device)[:, None]
        nll = nll.detach().double()
        for m, (counts, limit) in enumerate(self.measures):
            kept = [max(0, min(n, limit - f)) for f, n in zip(firsts, lengths)]  # a measure's targets end at limit
            hi = lo + torch.tensor(kept, device=nll.device)[:, None]
            self.sums[m] += torch.where((cols >= lo) & (cols < hi), nll, 0.0).sum()
            self.tokens[m] += sum(kept)
            self.bytes[m] += sum(int(counts[f + 1 : f + 1 + n].sum()) for f, n in zip(firsts, kept))
        if self.nll is not None:
            for row, off, f, n in zip(nll.cpu().numpy(), offsets, firsts, lengths):
                assert np.isnan(self.nll[f : f + n]).all(), f"targets {f}..{f + n - 1} scored twice"
                self.nll[f : f + n] = row[off : off + n]

    def result(self, runtime: Runtime) -> BPBResult:
        """Totals over all ranks (a collective: every rank must call it): the exact result with the official one
        attached, or the official one alone."""
        totals = all_reduce_sum([*self.sums.tolist(), *self.tokens, *self.bytes], runtime)
        k = len(self.measures)
        results = []
        for m in range(k):
            nll, tokens, n_bytes = totals[m], int(totals[k + m]), int(totals[2 * k + m])
            if n_bytes <= 0:
                raise ValueError("the scored validation targets account for 0 bytes; are the sidecars empty?")
            if m == 1 or not self.exact:
                results.append(BPBResult(nll, tokens, n_bytes, self.nll, measure="official", rule=self.official_rule))
            else:
                results.append(BPBResult(nll, tokens, n_bytes, self.nll))
        return replace(results[0], official=results[1]) if k == 2 else results[0]


def score_windows(
    model, tokens: np.ndarray, wins: list[Window], tally: Tally, *, rows: int, runtime: Runtime, tilt: TokenTilt | None
) -> None:
    """Score ``wins`` with ``model(x, y, reduction="none")`` (with a ``tilt``: from ``model.logits(x)``), ``rows``
    windows of equal width per forward pass."""
    i = 0
    while i < len(wins):
        j = i + 1
        while j < len(wins) and j - i < rows and wins[j].width == wins[i].width:
            j += 1
        batch = wins[i:j]
        idx = np.array([w.start for w in batch])[:, None] + np.arange(batch[0].width + 1)
        span = torch.from_numpy(tokens[idx]).to(runtime.device)
        offsets, firsts = [w.first_scored - w.start for w in batch], [w.first_scored for w in batch]
        with runtime.autocast():
            if tilt is None:
                nll = model(span[:, :-1], span[:, 1:], reduction="none")
            else:
                nll = tilt.nll(model.logits(span[:, :-1]), span[:, 1:], tilt.columns(offsets, firsts, span.size(1) - 1))
        tally.add_runs(nll, offsets, firsts, [w.end - w.first_scored for w in batch])
        i = j


@torch.no_grad()
def score(
    model,
    tokens: np.ndarray,
    byte_counts: np.ndarray | None,
    *,
    seq_len: int,
    batch_tokens: int,
    runtime: Runtime,
    stride: int = 0,
    val_tokens: int = 0,
    keep_nll: bool = False,
    official: np.ndarray | None = None,
    official_rule: str = "",
    tilt: NgramTilt | None = None,
) -> BPBResult:
    """BPB of targets 1..N-1 of ``tokens`` (or the first ``val_tokens``) in windows every ``stride`` tokens (0:
    ``seq_len``, non-overlapping), split over ranks: exact from ``byte_counts``, and official from ``official``;
    with the n-gram ``tilt`` (if its boost is not 0)."""
    tokens, byte_counts, official = prepare(tokens, byte_counts, official, val_tokens=val_tokens)
    token_tilt = make_tilt(tokens, tilt, runtime.device)
    wins = windows(len(tokens) - 1, seq_len, stride or seq_len)
    tally = make_tally(tokens, byte_counts, official, official_rule, seq_len, runtime.device, keep_nll)
    was_training = model.training
    model.eval()
    rows = max(1, batch_tokens // seq_len)
    score_windows(model, tokens, rank_slice(wins, runtime), tally, rows=rows, runtime=runtime, tilt=token_tilt)
    model.train(was_training)
    return tally.result(runtime)


def make_tally(tokens, byte_counts, official, official_rule: str, seq_len: int, device, keep_nll: bool) -> Tally:
    """The tally of a prepared stream: the official counts end where the official eval's whole windows do."""
    if byte_counts is None and official is None:
        raise ValueError("no byte counts to score with: neither byte sidecars nor the official formula")
    limit = official_targets(len(tokens), seq_len)
    official = official if limit else None  # a stream shorter than one window: the official eval refuses it
    if byte_counts is None and official is None:
        raise ValueError(f"the validation split has {len(tokens)} tokens, fewer than one official window of {seq_len}")
    return Tally(byte_counts, len(tokens) - 1, device, keep_nll, official, limit, official_rule)
