"""Exact bits per byte of a token stream: the result, the windows, the running tally and the scorer.

BPB = (sum over scored targets of NLL in nats) / ln 2 / (sum over the same targets of their bytes) (docs/bpb.md).
Targets are numbered ``j = 0 .. N-2``: target ``j`` is stream position ``j + 1``, predicted from positions ``<= j``,
and accounts for ``byte_counts[j + 1]`` bytes.

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
from dataclasses import dataclass, field

import numpy as np
import torch

from ..runtime import Runtime, all_reduce_sum


@dataclass(frozen=True)
class BPBResult:
    nll_nats: float  # summed over scored targets
    tokens: int
    bytes: int
    nll: np.ndarray | None = field(default=None, compare=False, repr=False)  # per target when kept; NaN: other rank

    @property
    def loss(self) -> float:
        return self.nll_nats / self.tokens

    @property
    def bpb(self) -> float:
        return self.nll_nats / math.log(2) / self.bytes

    def to_dict(self) -> dict:
        return {"val_loss": self.loss, "val_bpb": self.bpb, "val_tokens": self.tokens, "val_bytes": self.bytes}


def prepare(tokens: np.ndarray, byte_counts: np.ndarray, val_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The stream to score: checked against its byte counts, cut to its first ``val_tokens`` targets (0: all)."""
    if len(byte_counts) != len(tokens):
        raise ValueError(f"{len(byte_counts)} byte counts for {len(tokens)} tokens")
    if val_tokens:
        tokens, byte_counts = tokens[: val_tokens + 1], byte_counts[: val_tokens + 1]
    if len(tokens) < 2:
        raise ValueError("the validation split has fewer than 2 tokens")
    return tokens, byte_counts


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
    """Sums of NLL, targets and bytes over the scored targets, which are added in runs of consecutive targets."""

    def __init__(self, byte_counts: np.ndarray, n_targets: int, device: torch.device, keep_nll: bool = False) -> None:
        self.byte_counts = byte_counts
        self.nll_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.tokens = 0
        self.bytes = 0
        self.nll = np.full(n_targets, np.nan) if keep_nll else None

    def add_runs(self, nll: torch.Tensor, offsets: list[int], firsts: list[int], lengths: list[int]) -> None:
        """Row r of ``nll`` (rows, width) scores targets ``firsts[r] ..`` at columns ``offsets[r] ..``, ``lengths[r]``
        of them (0 for a row that scores nothing)."""
        cols = torch.arange(nll.size(1), device=nll.device)[None, :]
        lo = torch.tensor(offsets, device=nll.device)[:, None]
        hi = lo + torch.tensor(lengths, device=nll.device)[:, None]
        nll = nll.detach().double()
        self.nll_sum += torch.where((cols >= lo) & (cols < hi), nll, 0.0).sum()
        self.tokens += sum(lengths)
        self.bytes += sum(int(self.byte_counts[f + 1 : f + 1 + n].sum()) for f, n in zip(firsts, lengths))
        if self.nll is not None:
            for row, off, f, n in zip(nll.cpu().numpy(), offsets, firsts, lengths):
                assert np.isnan(self.nll[f : f + n]).all(), f"targets {f}..{f + n - 1} scored twice"
                self.nll[f : f + n] = row[off : off + n]

    def result(self, runtime: Runtime) -> BPBResult:
        """Totals over all ranks (a collective: every rank must call it)."""
        nll, tokens, n_bytes = all_reduce_sum([self.nll_sum.item(), self.tokens, self.bytes], runtime)
        if n_bytes <= 0:
            raise ValueError("the scored validation targets account for 0 bytes; are the sidecars empty?")
        return BPBResult(nll, int(tokens), int(n_bytes), nll=self.nll)


def score_windows(model, tokens: np.ndarray, wins: list[Window], tally: Tally, *, rows: int, runtime: Runtime) -> None:
    """Score ``wins`` with ``model(x, y, reduction="none")``, ``rows`` windows of equal width per forward pass."""
    i = 0
    while i < len(wins):
        j = i + 1
        while j < len(wins) and j - i < rows and wins[j].width == wins[i].width:
            j += 1
        batch = wins[i:j]
        idx = np.array([w.start for w in batch])[:, None] + np.arange(batch[0].width + 1)
        span = torch.from_numpy(tokens[idx]).to(runtime.device)
        with runtime.autocast():
            nll = model(span[:, :-1], span[:, 1:], reduction="none")
        offsets = [w.first_scored - w.start for w in batch]
        tally.add_runs(nll, offsets, [w.first_scored for w in batch], [w.end - w.first_scored for w in batch])
        i = j


@torch.no_grad()
def score(
    model,
    tokens: np.ndarray,
    byte_counts: np.ndarray,
    *,
    seq_len: int,
    batch_tokens: int,
    runtime: Runtime,
    stride: int = 0,
    val_tokens: int = 0,
    keep_nll: bool = False,
) -> BPBResult:
    """Exact BPB of targets 1..N-1 of ``tokens`` (or the first ``val_tokens``) in windows every ``stride`` tokens
    (0: ``seq_len``, non-overlapping), split over ranks."""
    tokens, byte_counts = prepare(tokens, byte_counts, val_tokens)
    wins = windows(len(tokens) - 1, seq_len, stride or seq_len)
    tally = Tally(byte_counts, len(tokens) - 1, runtime.device, keep_nll)
    was_training = model.training
    model.eval()
    rows = max(1, batch_tokens // seq_len)
    score_windows(model, tokens, rank_slice(wins, runtime), tally, rows=rows, runtime=runtime)
    model.train(was_training)
    return tally.result(runtime)
