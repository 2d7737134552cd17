"""Seed statistics and the challenge's significance test for a BPB difference between two tokenizers.

The challenge accepts a new record when it beats the old one "by at least 0.005 nats" and the run logs show "at
p < 0.01 that they achieved the required 0.005-nat improvement" (openai/parameter-golf README, submission rules).
Here the unit is nats per byte (BPB x ln 2, a per-byte quantity independent of the tokenizer), and the test is
Welch's unequal-variance t-test of H0: mean(reference) - mean(candidate) <= 0.005 against the one-sided alternative
that the improvement is larger. The plain two-sided Welch p-value for "the means differ" is reported next to it.

The rule as the maintainers apply it since PR #1902 is looser: a one-sided Welch test of any improvement (no
margin) at p < 0.25 against the previous record (docs/challenge.md). Every verdict states both. A reference given as
one published number (no seeds) is tested with the one-sample t-test of the candidate's seeds against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LN2 = math.log(2)
MARGIN_NATS = 0.005  # per byte: the challenge's required improvement
ALPHA = 0.01
FRONTIER_ALPHA = 0.25  # PR #1902: one-sided Welch, no margin


@dataclass(frozen=True)
class Summary:
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1 in the denominator); NaN for one value."""
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan


@dataclass(frozen=True)
class Comparison:
    reference: str
    candidate: str
    delta_bpb: float  # mean(candidate) - mean(reference): negative means the candidate is better
    p_two_sided: float  # Welch, H0: equal means
    p_candidate_better: float  # Welch one-sided, H0: reference - candidate <= margin (in nats per byte)
    p_reference_better: float  # the same with the roles swapped
    p_candidate_ahead: float = math.nan  # Welch one-sided, H0: reference - candidate <= 0 (PR #1902's test)
    margin_nats: float = MARGIN_NATS
    alpha: float = ALPHA

    @property
    def delta_nats(self) -> float:
        return self.delta_bpb * LN2

    @property
    def verdict(self) -> str:
        """The README rule's verdict, then PR #1902's."""
        return f"{self.margin_verdict}; {self.frontier_verdict}"

    @property
    def frontier_verdict(self) -> str:
        p = self.p_candidate_ahead
        if math.isnan(p):
            return "PR #1902 rule (one-sided Welch p < 0.25): no verdict (too few seeds or no spread)"
        outcome = "passes" if p < FRONTIER_ALPHA else "fails"
        return f"PR #1902 rule: {self.candidate} ahead of {self.reference} at one-sided Welch p = {p:.3g}: {outcome}"

    @property
    def margin_verdict(self) -> str:
        m = f"{self.margin_nats:g} nats/byte"
        if math.isnan(self.p_candidate_better):
            return (
                f"no verdict: the test needs at least 2 seeds per tokenizer and some seed-to-seed spread "
                f"(a difference of {self.delta_nats:+.4f} nats/byte was measured)"
            )
        for winner, loser, p in (
            (self.candidate, self.reference, self.p_candidate_better),
            (self.reference, self.candidate, self.p_reference_better),
        ):
            if p < self.alpha:
                return f"{winner} beats {loser} by at least {m} at p = {p:.3g} < {self.alpha:g}: significant"
        better = self.candidate if self.delta_bpb < 0 else self.reference
        p = min(self.p_candidate_better, self.p_reference_better)
        return (
            f"not significant: {better} is ahead by {abs(self.delta_nats):.4f} nats/byte, but an improvement of at "
            f"least {m} is not shown at p < {self.alpha:g} (p = {p:.3g})"
        )


def to_nats(bpb: list[float] | tuple[float, ...]) -> np.ndarray:
    return np.asarray(bpb, dtype=np.float64) * LN2


def margin_p_value(better: list[float], worse: list[float], margin_nats: float = MARGIN_NATS) -> float:
    """One-sided Welch p-value of H0: mean(worse) - mean(better) <= margin, from BPB values (NaN if undefined)."""
    a, b = to_nats(worse) - margin_nats, to_nats(better)
    if len(a) == 1 and len(b) > 1 and np.ptp(b) > 0:  # a published number: the candidate's seeds against it
        return float(stats.ttest_1samp(b, a[0], alternative="less").pvalue)
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)


def compare(
    reference: str,
    reference_bpb: list[float],
    candidate: str,
    candidate_bpb: list[float],
    *,
    margin_nats: float = MARGIN_NATS,
    alpha: float = ALPHA,
) -> Comparison:
    ref, cand = list(reference_bpb), list(candidate_bpb)
    testable = len(ref) > 1 and len(cand) > 1 and (np.ptp(ref) > 0 or np.ptp(cand) > 0)
    two_sided = float(stats.ttest_ind(ref, cand, equal_var=False).pvalue) if testable else math.nan
    return Comparison(
        reference=reference,
        candidate=candidate,
        delta_bpb=float(np.mean(cand) - np.mean(ref)),
        p_two_sided=two_sided,
        p_candidate_better=margin_p_value(cand, ref, margin_nats),
        p_reference_better=margin_p_value(ref, cand, margin_nats),
        p_candidate_ahead=margin_p_value(cand, ref, 0.0),
        margin_nats=margin_nats,
        alpha=alpha,
    )
