"""Quantization gap with and without Hadamard rotation (``quant.rotate``), side by side on one trained model.

    python bench/rotation.py [--preset tiny] [--steps 400] [--threads 2] [--sdclip-k 0]
    python bench/rotation.py --run RUN_DIR --data SHARD_DIR     # a model trained by pgolf_model.train

Without ``--run`` it trains the preset on the development corpus (byte-level tokens, vocab 260; ``bench/quant.py``).
Then for each rotation (none, vo, input, residual, all three) and each width (int6, int5, int4), RTN and GPTQ: the gap
``BPB(dequantized) - BPB(float)`` on the same validation targets, and the zstd-22 bytes of the integers. The
rotations go through the exporter's own steps (``export.rotation``: the function-preserving copy, the basis, the
rotated Hessians, ``ptq.quantize_state``, ``QuantizedState.dequantize``); the calibration sequences are sampled once
from the float model, which every rotated model computes exactly.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from quant import CPU, add_model_args, trained_model  # bench/quant.py (run as a script, bench/ is on sys.path)

from pgolf_data.compress import compress
from pgolf_model.evaluation.byte_counts import load_val
from pgolf_model.evaluation.scoring import score
from pgolf_model.export import calibration, rotation
from pgolf_model.export.ptq import GROUPS, GroupRule, group_members, quantize_state, tensor_groups
from pgolf_model.model import GPT

VARIANTS = {
    "none": (),
    "vo": ("vo",),
    "input": ("input",),
    "residual": ("residual",),
    "all": ("vo", "input", "residual"),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser, steps=400)
    parser.add_argument("--calib-seqs", type=int, default=32)
    parser.add_argument("--calib-len", type=int, default=128)
    parser.add_argument("--sdclip-k", type=float, default=0.0, help="SDClip k of every group (0: clip quantile)")
    parser.add_argument("--bits", type=int, nargs="+", default=[6, 5, 4])
    args = parser.parse_args(argv)
    if args.run and not args.data:
        parser.error("--run needs --data")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, cfg, data = trained_model(args)
    tokens, counts = load_val(data)

    def bpb(m: GPT) -> float:
        return score(
            m,
            tokens,
            counts,
            seq_len=cfg.train.seq_len,
            batch_tokens=cfg.train.device_batch_tokens,
            runtime=CPU,
            val_tokens=args.val_tokens,
        ).bpb

    base = bpb(model)
    calib = calibration.generate(model, args.calib_seqs, args.calib_len, batch_size=args.calib_seqs, seed=0)
    results: dict[tuple[str, int, str], tuple[float, int]] = {}
    for variant, modes in VARIANTS.items():
        net = rotation.function_preserving(model, modes)
        groups = tensor_groups(net)
        state = {k: v.detach() for k, v in net.state_dict().items()}
        names = [n for ns in group_members(state, groups, cfg.quant).values() for n in ns]
        rotations = rotation.basis_rotations(net, modes, names)
        hessians = calibration.collect_hessians(net, calib, batch_size=args.calib_seqs)
        hessians = rotation.hessians_into_basis(hessians, rotations)
        state = rotation.into_basis(state, rotations)
        for bits in args.bits:
            rules = {g: GroupRule(bits, args.sdclip_k) for g in GROUPS}
            for method, h in (("rtn", None), ("gptq", hessians)):
                qs = quantize_state(state, groups, rules, cfg.quant, hessians=h, rotations=rotations)
                q = GPT(cfg.model)
                q.load_state_dict(qs.dequantize())
                ints = np.concatenate([qs.entries[n]["q"].reshape(-1) for n in names])
                results[variant, bits, method] = (bpb(q.eval()) - base, len(compress(ints.tobytes(), ("zstd",))[1]))
                print(f"  {variant:>8} int{bits} {method:>4}: gap {results[variant, bits, method][0]:+.4f}", flush=True)

    clip = f"SDClip k={args.sdclip_k}" if args.sdclip_k else f"clip quantile {cfg.quant.clip_quantile}"
    print(f"\n{cfg.preset}, {clip}; float val_bpb {base:.4f} on {args.val_tokens:,} targets")
    print("quantization gap BPB(quantized) - BPB(float) [zstd-22 bytes of the integers]; Δ = rotated - none")
    head = "| rotation | " + " | ".join(f"int{b} RTN | int{b} GPTQ" for b in args.bits) + " |"
    print(head + "\n|" + "---|" * (1 + 2 * len(args.bits)))
    for variant in VARIANTS:
        cells = []
        for bits in args.bits:
            for method in ("rtn", "gptq"):
                gap, size = results[variant, bits, method]
                delta = "" if variant == "none" else f" (Δ {gap - results['none', bits, method][0]:+.4f})"
                cells.append(f"{gap:+.4f}{delta} [{size:,}]")
        print(f"| {variant} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
