"""The budget estimate's table, measured on trained weights: compressed bits per quantized value by codec, tensor
group and quantization step, written to ``pgolf_model/export/size_table.py``.

    python bench/size_table.py RUN_DIR [RUN_DIR ...]       # each run's newest checkpoint (EMA weights if kept)
    python bench/size_table.py RUN_DIR ... --print-only    # the measurements, without rewriting the table

SDClip quantizes with the step ``k * std(row) / qmax``, so the quantized values of a row are its standardized
weights on a grid of ``qmax / k`` points per standard deviation: their entropy is about ``x + h``, ``x = log2(qmax /
k)`` and ``h`` the differential entropy of the standardized weights (2.05 bits for a Gaussian; docs/records.md,
SDClip: "H(q) ~ b - log2 k + const"). For every run, group (embed, attn, mlp) and grid point (bits, k) this rounds
the group's matrices to nearest, compresses them with each codec (the per-group codec: its group streams only, the
permutations are counted exactly by the estimate) and stores the offset ``c = bits per value - x``; the table holds
the offsets averaged over the runs, weighted by their values, with the spread between runs. It also measures what
each codec makes of the rest of the weights part (fp16 row scales and float tensors) and, for the clip-quantile rule
(``sdclip_k = 0``), the effective ``k`` of trained rows (the clip over the row's std) relative to ``sqrt(2 ln
cols)``, so that it carries over to wider rows.
"""

from __future__ import annotations

import argparse
import math
import pprint
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pgolf_data.compress import CODEC_IDS
from pgolf_data.compress import compress as byte_compress
from pgolf_model import pergroup
from pgolf_model.config import QuantConfig
from pgolf_model.export.ptq import tensor_groups
from pgolf_model.export.weights import coding_roles
from pgolf_model.model import GPT
from pgolf_model.quant import qmax, round_to_nearest, row_scales, tensor_format
from pgolf_model.training import checkpoint

GRID = ((5, 10.0), (6, 10.0), (6, 12.85), (6, 15.0), (7, 12.85), (7, 15.0), (8, 15.0), (8, 20.0))
CODECS = (*CODEC_IDS, "pergroup")
GROUPS = ("embed", "attn", "mlp")
TABLE = Path(__file__).resolve().parents[1] / "pgolf_model" / "export" / "size_table.py"


def trained_model(run: Path) -> tuple[GPT, str]:
    """The run's newest weights (its EMA's where kept, as the export reads them)."""
    try:
        model, cfg, state, missing = checkpoint.newest_model(run, ema=True, strict=False)
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None
    if any(model.state_dict()[name].ndim == 2 for name in missing):  # every matrix the table measures must load
        raise SystemExit(f"{state['path']}: matrices missing from the checkpoint: {missing}")
    shape = f"{cfg.model.num_layers}x{cfg.model.model_dim}, vocab {cfg.model.vocab_size}"
    return model, f"{cfg.preset} {shape}, step {state['step']} ({run.name})"


def compressed_bits(codec: str, tensors: dict[str, np.ndarray], roles: dict) -> int:
    if codec != "pergroup":
        return 8 * len(byte_compress(b"".join(t.tobytes() for t in tensors.values()), (codec,))[1])
    streams = pergroup._streams(pergroup.encode(tensors, roles=roles), "size table")
    return 8 * sum(len(s) for s in streams[len(pergroup._FIXED) :])


def measure(model: GPT, keep_float_max_numel: int) -> dict:
    cfg = QuantConfig(keep_float_max_numel=keep_float_max_numel)
    state = {k: v.detach().float() for k, v in model.state_dict().items()}
    groups, roles = tensor_groups(model), coding_roles(model)
    members = {g: [n for n, grp in groups.items() if grp == g and tensor_format(tuple(state[n].shape), cfg) == "int"]
               for g in GROUPS}  # fmt: skip
    offsets = {}  # (codec, group, bits, k) -> (c, values)
    for g, names in members.items():
        values = sum(state[n].numel() for n in names)
        for bits, k in GRID if names else ():
            q = {n: round_to_nearest(state[n], row_scales(state[n], bits, sdclip_k=k), bits).numpy() for n in names}
            x = math.log2(qmax(bits) / k)
            for codec in CODECS:
                offsets[codec, g, bits, k] = (compressed_bits(codec, q, roles) / values - x, values)
    rest = b"".join(
        row_scales(t, 6, sdclip_k=12.85).to(torch.float16).numpy().tobytes()
        if tensor_format(tuple(t.shape), cfg) == "int"
        else t.to(torch.float16).numpy().tobytes()
        for t in state.values()
    )
    remainder = {c: len(byte_compress(rest, (c,))[1]) / len(rest) for c in CODEC_IDS}
    remainder["pergroup"] = len(pergroup._zpaq().compress(rest, level=pergroup.LEVEL, threads=1)) / len(rest)
    clip_k = {}
    for g, names in members.items():  # the rule's clip over the row's std, over a Gaussian row's sqrt(2 ln cols) max
        ratios = [
            row_scales(t, 8, clip_quantile=cfg.clip_quantile)
            * qmax(8)
            / t.std(1, correction=0).clamp_min(1e-12)
            / math.sqrt(2 * math.log(t.shape[1]))
            for t in (state[n] for n in names)
        ]
        if ratios:
            clip_k[g] = float(torch.cat(ratios).median())
    return {"offsets": offsets, "remainder": remainder, "clip_k": clip_k}


def pooled(runs: list[dict]) -> dict:
    """``{(codec, group, bits, k): (c, spread)}``: ``c`` averaged over the runs (weighted by values), and its spread
    (largest minus smallest) between them."""
    out = {}
    for key in {key for r in runs for key in r["offsets"]}:
        got = [r["offsets"][key] for r in runs if key in r["offsets"]]
        c = sum(c * n for c, n in got) / sum(n for _, n in got)
        out[key] = (c, max(c for c, _ in got) - min(c for c, _ in got))
    return out


def as_table(points: dict) -> dict:
    """``{codec: {group: ((x, c), ...)}}``, x ascending."""
    table: dict = {codec: {} for codec in CODECS}
    for (codec, g, bits, k), (c, _) in sorted(
        points.items(), key=lambda item: math.log2(qmax(item[0][2]) / item[0][3])
    ):
        table[codec].setdefault(g, []).append((round(math.log2(qmax(bits) / k), 4), round(c, 4)))
    return {codec: {g: tuple(sorted(v)) for g, v in sorted(by_group.items())} for codec, by_group in table.items()}


def write_table(runs: list[str], table: dict, remainder: dict, clip_k: dict, path: Path = TABLE) -> None:
    text = f'''"""Compressed bits per quantized value of trained weights: the budget estimate's table (estimate.py).

Generated by ``python bench/size_table.py`` (its docstring says what is measured); do not edit by hand. Offsets
``c`` at ``x = log2(qmax / k)``: a group's SDClip values take ``x + c`` bits each with that codec.
"""

RUNS = {pprint.pformat(tuple(runs), width=116)}

# codec -> group -> ((x, c), ...), x ascending
OFFSETS = {pprint.pformat(table, width=116, sort_dicts=False)}

# compressed / raw bytes of the fp16 row scales and float tensors, by codec
REMAINDER = {pprint.pformat(remainder, width=116)}

# the clip-quantile rule's effective k by group, over sqrt(2 ln cols) (a Gaussian row's expected maximum): the
# median over trained rows of clip / std at the default clip_quantile
CLIP_K = {pprint.pformat(clip_k, width=116)}
'''
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(tmp)], check=False)  # the repo's style, if here
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run directories (with checkpoints/)")
    parser.add_argument("--keep-float-max-numel", type=int, default=4096, help="smaller tensors stay float16")
    parser.add_argument("--print-only", action="store_true", help="print the measurements, keep the table")
    args = parser.parse_args(argv)
    labels, runs = [], []
    for run in args.runs:
        t0 = time.perf_counter()
        model, label = trained_model(run)
        runs.append(measure(model, args.keep_float_max_numel))
        labels.append(label)
        print(f"measured {label} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    points = pooled(runs)
    print(f"{'codec':<9}{'group':<7}{'bits':>5}{'k':>7}{'x':>7}{'c':>8}{'spread':>8}{'bits/value':>12}")
    for (codec, g, bits, k), (c, spread) in sorted(points.items()):
        x = math.log2(qmax(bits) / k)
        print(f"{codec:<9}{g:<7}{bits:>5}{k:>7.2f}{x:>7.3f}{c:>8.3f}{spread:>8.3f}{x + c:>12.3f}")
    for codec in CODECS:
        gain = [c - points[("brotli", *key[1:])][0] for key, (c, _) in points.items() if key[0] == codec]
        print(f"{codec}: {np.mean(gain):+.4f} bits per value against brotli, averaged over the grid")
    remainder = {c: round(float(np.mean([r["remainder"][c] for r in runs])), 4) for c in CODECS}
    clip_k = {g: round(float(np.mean([r["clip_k"][g] for r in runs if g in r["clip_k"]])), 3) for g in GROUPS}
    print(f"remainder ratio {remainder}; clip-quantile k {clip_k}")
    if not args.print_only:
        write_table(labels, as_table(points), remainder, clip_k)
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
