"""Self-generated calibration with the GPT's KV cache (``GPT.decode``) vs rerunning the prefix per token, side by side.

    python bench/calib_gen.py [--dim 128] [--seqs 4] [--len 256] [--threads 1]

The ``record-caseops`` preset's GPT (every switch it has: 11 blocks looped to 17 virtual layers, lanes, XSA, skip
gates, SmearGate, document masking, vocab 8192) at a small width, with randomized weights so every part contributes,
samples ``--seqs`` sequences of ``--len`` tokens in one batch as ``calibration.generate`` does (first token uniform,
temperature 0.8). Each step is timed both ways in turn, on the same prefix: the new token through ``decode`` on the
cache, and the whole prefix through ``logits`` (what ``generate`` does for a model without the hook); the cached
logits pick the next token. Interleaving the steps exposes both to the same load on a shared machine. It prints both
totals (wall and this process's CPU seconds), tokens/s, the ratios, and the largest difference of the two logits.
"""

from __future__ import annotations

import argparse
import time

import torch

from pgolf_model.export.calibration import TEMPERATURE
from pgolf_model.model import GPT
from pgolf_model.presets import preset


def timed(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, torch.tensor([time.perf_counter() - t0, time.process_time() - c0], dtype=torch.float64)


@torch.no_grad()
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
    model = GPT(cfg).eval()
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    virtual = len(model.encoder_layers + model.decoder_layers + model.lane_layers)
    print(f"record-caseops GPT at dim {args.dim}: {virtual} virtual layers, vocab {cfg.vocab_size}")
    print(f"{args.seqs} x {args.len} tokens in one batch, {args.threads} thread(s)")

    seqs = torch.randint(cfg.vocab_size, (args.seqs, 1), generator=g)
    state, cached, rerun, diff = None, torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), 0.0
    for _ in range(args.len - 1):
        (logits, state), seconds = timed(model.decode, seqs[:, -1:], state)
        cached += seconds
        full, seconds = timed(lambda idx: model.logits(idx)[:, -1], seqs)
        rerun += seconds
        diff = max(diff, (full - logits).abs().max().item())
        probs = torch.softmax(logits.float() / TEMPERATURE, dim=-1).double()
        seqs = torch.cat((seqs, torch.multinomial(probs, 1, generator=g)), dim=1)
    new = args.seqs * (args.len - 1)
    for name, (wall, cpu) in (("KV cache (decode)", cached.tolist()), ("rerun the prefix", rerun.tolist())):
        rates = f"{new / wall:9.1f} tokens/s {new / cpu:9.1f} tokens/CPU-s"
        print(f"{name:>18}: {wall:8.2f} s wall {cpu:8.2f} s CPU {rates}")
    ratio = rerun / cached
    print(f"rerun / KV cache: {ratio[0]:.2f}x wall, {ratio[1]:.2f}x CPU; largest logit difference {diff:.1e}")


if __name__ == "__main__":
    main()
