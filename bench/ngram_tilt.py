"""The token-only n-gram tilt's cost (PR #2130/#2135), side by side in one run.

1. The hint precompute over a stream of ``--tokens`` synthetic targets (Zipf-distributed ids, vocabulary 8192, with
   copied spans so that contexts repeat): seconds against one ``torch.sort`` of the same length (the unit its sorts
   are made of), seconds per million targets, and the peak memory it adds (resident set, measured in a fresh
   process) per target. Both scale to the 47,851,520 validation targets of the records.
2. Scoring a small model with and without the tilt on the same stream (the tilt reads the logits and gathers the
   hint's probability): the ratio of the two.

    python bench/ngram_tilt.py [--tokens 4000000] [--device cpu]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch

from pgolf_model.config import ModelConfig, NgramTilt
from pgolf_model.evaluation.ngram_tilt import token_hints
from pgolf_model.evaluation.scoring import score
from pgolf_model.model import GPT
from pgolf_model.runtime import Runtime

VAL_TARGETS = 47_851_520  # the records' validation targets (docs/records.md)


def stream(n: int, vocab: int = 8192, seed: int = 0) -> np.ndarray:
    """``n`` Zipf ids with about a third of the stream in copied spans."""
    rng = np.random.default_rng(seed)
    out = np.minimum(rng.zipf(1.2, n), vocab - 1).astype(np.int64)
    for _ in range(n // 300):
        a, b, length = rng.integers(0, n - 64), rng.integers(0, n - 64), int(rng.integers(8, 64))
        out[b : b + length] = out[a : a + length]
    return out


def _precompute(n: int, device: str, conn) -> None:
    tokens = stream(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    hints = token_hints(tokens, 16, 0.8, device)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    torch.sort(torch.from_numpy(tokens).to(device) * 2654435761, stable=True)
    sort_s = time.perf_counter() - t0
    conn.send((seconds, sort_s, peak - before, float((hints >= 0).float().mean())))


def precompute_cost(n: int, device: str) -> tuple[float, float, int, float]:
    """(seconds, seconds of one sort, added peak RSS bytes, gated share) in a fresh process."""
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_precompute, args=(n, device, child))
    proc.start()
    out = parent.recv()
    proc.join()
    return out


def scoring_ratio(device: str, n: int = 16_385) -> tuple[float, float]:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=8192, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2)).to(device)
    tokens = stream(n)
    counts = np.ones(n, dtype=np.int64)
    rt = Runtime(torch.device(device))
    kw = dict(seq_len=256, batch_tokens=4096, runtime=rt)
    best = {"plain": float("inf"), "tilted": float("inf")}
    for _ in range(3):
        for name, tilt in (("plain", None), ("tilted", NgramTilt(boost=2.625))):
            t0 = time.perf_counter()
            score(model, tokens, counts, tilt=tilt, **kw)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best["plain"], best["tilted"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4_000_000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    seconds, sort_s, peak, gated = precompute_cost(args.tokens, args.device)
    print(
        f"hint precompute over {args.tokens:,} targets on {args.device}: {seconds:.2f} s = {seconds / sort_s:.1f}x "
        f"one sort of the stream ({sort_s:.2f} s); {seconds / args.tokens * 1e6:.2f} s per 1M targets; "
        f"peak +{peak / args.tokens:.0f} B per target; gate open at {gated:.1%} of targets"
    )
    scale = VAL_TARGETS / args.tokens
    print(
        f"  at the records' {VAL_TARGETS:,} targets: ~{seconds * scale:.0f} s, ~{peak * scale / 2**30:.1f} GiB "
        "(linear; the sorts are n log n)"
    )
    plain, tilted = scoring_ratio(args.device)
    print(
        f"scoring a 2x128 model, vocabulary 8192, 16,384 targets: tilted / plain = {tilted / plain:.2f}x "
        f"({tilted:.2f} s vs {plain:.2f} s, hints included)"
    )


if __name__ == "__main__":
    main()
