"""Training throughput cost of each record-stack switch on CPU, as a ratio to the same model with every switch off.

Usage: python bench/record_switches.py [--preset tiny] [--steps 6] [--rounds 3]

Each round times every variant once (forward, backward and optimizer step on the preset's device batch), so slow
drift of a shared machine hits all variants alike; the table shows the median tokens/s and the ratio to "off".
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.training import qat
from pgolf_model.training.optim import build_optimizers

VARIANTS = {
    "off": {},
    "leaky_relu2": {"model.mlp_leaky_slope": 0.5},
    "partial_rope": {"model.rope_dims": 8},
    "ln_scale": {"model.ln_scale": True},
    "xsa": {"model.xsa": True},
    "attn_gate": {"model.attn_gate_width": 12},
    "smear_gate": {"model.smear_gate": True},
    "doc_masked": {"model.doc_masked": True},
    "bigram_hash": {"model.bigram_buckets": 2048, "model.bigram_dim": 64},
    "parallel_resid": {"model.parallel_from": -1},  # replaced by the last block index
    "loop_x1": {"model.num_loops": 1, "model.loop_start": 1, "model.loop_end": 1},
    "value_embed": {"model.ve_layers": (1,), "model.ve_dim": 64},
    "late_qat": {"train.qat_threshold": 0.15},  # on for every timed step here
    "muon_wd": {"optim.muon_wd": 0.04},
    "polar_express": {"optim.muon_ns_coeffs": "polar_express"},
    "muoneq_r": {"optim.muon_row_norm": True},
}


def tokens_per_s(cfg, steps: int) -> float:
    torch.manual_seed(0)
    model = GPT(cfg.model)
    opts = build_optimizers(model, cfg.optim)
    if cfg.train.qat_threshold:
        qat.enable(model, cfg.quant)
    seqs = cfg.train.device_batch_tokens // cfg.train.seq_len
    idx = torch.randint(0, cfg.model.vocab_size, (seqs, cfg.train.seq_len + 1))
    x, y = idx[:, :-1], idx[:, 1:]

    def step():
        for o in opts:
            o.zero_grad(set_to_none=True)
        model(x, y).backward()
        for o in opts:
            o.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * cfg.train.device_batch_tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    base = preset(args.preset)
    cfgs = {}
    for name, changes in VARIANTS.items():
        if changes.get("model.parallel_from") == -1:
            changes = {"model.parallel_from": base.model.num_layers - 1}
        cfgs[name] = base.override(changes)
    results: dict[str, list[float]] = {name: [] for name in cfgs}
    for _ in range(args.rounds):
        for name, cfg in cfgs.items():
            results[name].append(tokens_per_s(cfg, args.steps))
    off = statistics.median(results["off"])
    print(f"{args.preset}: {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps")
    print(f"{'variant':<16}{'tokens/s':>12}{'ratio':>8}")
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<16}{med:>12,.0f}{med / off:>8.3f}")


if __name__ == "__main__":
    main()
