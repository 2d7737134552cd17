"""Self-generated calibration with the GPT's KV cache (``GPT.decode``) vs rerunning the prefix per token, side by side.

    python bench/calib_gen.py [--dim 128] [--seqs 4] [--len 256] [--threads 1]

The ``record-caseops`` preset's GPT (every switch it has: 11 blocks looped to 17 virtual layers, lanes, XSA, skip
gates, SmearGate, document masking, vocab 8192) at a small width, with randomized weights so every part contributes,
samples ``--seqs`` sequences of ``--len`` tokens in one batch through ``calibration.generate``: once with its
``decode`` hook, once through a wrapper without it. It prints both times (wall and this process's CPU seconds: the
test machine's cores are shared, and CPU time is what neighbours disturb least), tokens/s, the ratios, and whether
the two sampled the same tokens.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from pgolf_model.export import calibration
from pgolf_model.model import GPT
from pgolf_model.presets import preset


class Rerun(nn.Module):
    """The same model without its ``decode`` hook: ``generate`` reruns the whole prefix for every new token."""

    def __init__(self, inner: GPT) -> None:
        super().__init__()
        self.inner = inner

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner.logits(idx)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=128, help="model_dim (8 heads)")
    parser.add_argument("--seqs", type=int, default=4, help="sequences, generated as one batch")
    parser.add_argument("--len", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = preset("record-caseops").override({"model.model_dim": args.dim}).model
    torch.manual_seed(0)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    tokens = args.seqs * args.len
    virtual = len(model.encoder_layers + model.decoder_layers + model.lane_layers)
    print(f"record-caseops GPT at dim {args.dim}: {virtual} virtual layers, vocab {cfg.vocab_size}")
    print(f"{args.seqs} x {args.len} tokens in one batch, {args.threads} thread(s)")
    out, seconds = {}, {}
    for name, net in (("KV cache (decode)", model), ("rerun the prefix", Rerun(model))):
        t0, c0 = time.perf_counter(), time.process_time()
        out[name] = calibration.generate(net, args.seqs, args.len, batch_size=args.seqs, seed=0)
        seconds[name] = time.perf_counter() - t0, time.process_time() - c0
        wall, cpu = seconds[name]
        print(f"{name:>18}: {wall:8.2f} s wall {cpu:8.2f} s CPU  {tokens / cpu:9.1f} tokens/CPU-s")
    (cached_wall, cached_cpu), (rerun_wall, rerun_cpu) = seconds.values()
    print(f"rerun / KV cache: {rerun_cpu / cached_cpu:.2f}x CPU time, {rerun_wall / cached_wall:.2f}x wall")
    print(f"same tokens sampled: {torch.equal(*out.values())}")


if __name__ == "__main__":
    main()
