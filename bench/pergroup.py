"""The per-group weight codec against brotli-11, lzma and zstd-22 on one quantized state, side by side, with
ablations of its pieces (row chain, transposition, one stream per group, ZPAQ level and blocks, lrzip).

    python bench/pergroup.py --run RUN_DIR        # trained: RUN/model.pga's weights, else its newest checkpoint
                                                  # quantized with the run's config (GPTQ etc., as train does)
    python bench/pergroup.py --synthetic          # record-shaped weights (record-caseops: 11 x 512, MLP 4x, vocab
                                                  # 8192), t-distributed (nu = 5), the preset's int6/int7 SDClip RTN
    python bench/pergroup.py --quick              # tiny synthetic shapes at ZPAQ level 3: seconds (tests run this)

Every codec gets the same bytes (a serialized ``QuantizedState``, the artifact's ``weights`` part) and must give
them back exactly. Times are wall-clock seconds and CPU seconds (all threads) of this process: ``--workers``
threads for the groups, the baselines single-threaded; on a shared machine the CPU seconds are the steadier measure.
``--lrzip`` also compresses the same group streams with ``lrzip -z -L 9`` (the record's binary, Debian's lrzip) when
it is on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import brotli
import numpy as np
import torch

from pgolf_data.compress import CODEC_IDS
from pgolf_data.compress import compress as pgolf_compress
from pgolf_data.compress import decompress as pgolf_decompress
from pgolf_model import artifact, pergroup
from pgolf_model.config import Config
from pgolf_model.export.ptq import quantize_state, tensor_groups
from pgolf_model.export.weights import export_weights, rules_from_config
from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.runtime import Runtime
from pgolf_model.training import checkpoint

QUICK = {
    "model.num_layers": 3,
    "model.model_dim": 64,
    "model.num_heads": 4,
    "model.num_kv_heads": 2,
    "model.vocab_size": 512,
    "model.parallel_from": 0,
    "model.num_loops": 0,
    "quant.keep_float_max_numel": 1024,
}


# name -> (row label, pergroup.compress options changed from the default)
ABLATIONS = {
    "chain-off": ("no row chain", {"sort_roles": frozenset()}),
    "chain-all": ("chain on every matrix", {"sort_roles": None}),
    "no-transpose": ("not transposed", {"transpose": False}),
    "one-stream": ("one stream for all matrices", {"single_group": True}),
    "one-block": ("one ZPAQ block per group", {"block_bytes": 1 << 40}),
    **{f"level{lv}": (f"level {lv}", {"level": lv}) for lv in range(1, 6)},
}


def synthetic_weights(cfg: Config, seed: int = 0) -> bytes:
    """Every tensor of ``cfg``'s GPT drawn from a t distribution (nu = 5: heavier tails than a Gaussian, like trained
    weights) scaled by 1/sqrt(fan-in), quantized with ``cfg.quant``'s per-group bits and SDClip k by rounding."""
    with torch.device("meta"):
        model = GPT(cfg.model)
    rng = np.random.default_rng(seed)
    state = {}
    for name, t in model.state_dict().items():
        scale = 1.0 / np.sqrt(t.shape[-1]) if t.ndim == 2 else 0.1
        state[name] = torch.from_numpy(np.asarray(rng.standard_t(5, tuple(t.shape)) * scale, dtype=np.float32))
    qs = quantize_state(state, tensor_groups(model), rules_from_config(cfg), cfg.quant, lqer_rank=cfg.quant.lqer_rank)
    return qs.to_bytes()


def trained_weights(run: Path) -> tuple[bytes, str]:
    art = run / "model.pga"
    if art.is_file():
        return artifact.read(art).weights, f"the weights part of {art}"
    try:
        model, cfg, state, _ = checkpoint.newest_model(run)
    except FileNotFoundError:
        raise SystemExit(f"{run}: no model.pga and no checkpoint") from None
    path = state["path"]
    t0 = time.perf_counter()
    out = export_weights(model, cfg, runtime=Runtime(torch.device("cpu")))
    print(f"quantized {path} with its config ({cfg.quant.method}) in {time.perf_counter() - t0:.0f}s")
    return out.weights, f"{path} (step {state['step']}, {state['train_seconds']:.0f}s of training), quantized"


def timed(fn, *args, **kwargs):
    """``(result, wall seconds, CPU seconds of this process, all threads)``: on a shared machine the CPU seconds
    are the steadier measure of the work."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def run_codec(label: str, weights: bytes, enc, dec) -> tuple[dict, bytes]:
    blob, t_enc, c_enc = timed(enc, weights)
    back, t_dec, c_dec = timed(dec, blob)
    if back != weights:
        raise AssertionError(f"{label}: the round trip changed the weights")
    row = {"codec": label, "bytes": len(blob), "compress_s": round(t_enc, 2), "decompress_s": round(t_dec, 2)}
    row |= {"compress_cpu_s": round(c_enc, 2), "decompress_cpu_s": round(c_dec, 2)}
    print(f"  {label:<34}{len(blob):>12,}{t_enc:>9.1f}s {c_enc:>7.1f}s{t_dec:>9.1f}s {c_dec:>7.1f}s", flush=True)
    return row, blob


def lrzip_row(blob: bytes) -> dict | None:
    """The default blob with its groups through ``lrzip -z -L 9`` instead of libzpaq, one group after another."""
    if shutil.which("lrzip") is None:
        print("  lrzip: not on PATH (apt-get install lrzip), skipped")
        return None
    import zpaq

    streams = pergroup._streams(blob, "bench")
    fixed = len(pergroup._FIXED)
    total = len(blob) - sum(map(len, streams[fixed:]))
    seconds = {"compress": [0.0, 0.0], "decompress": [0.0, 0.0]}  # wall, CPU (the lrzip processes)

    def lrzip(step: str, *argv: str) -> None:
        t0, c0 = time.perf_counter(), os.times()
        subprocess.run(["lrzip", "-q", *argv], check=True, capture_output=True)
        c1 = os.times()
        seconds[step][0] += time.perf_counter() - t0
        seconds[step][1] += c1.children_user + c1.children_system - c0.children_user - c0.children_system

    with tempfile.TemporaryDirectory() as tmp:
        for i, stream in enumerate(streams[fixed:]):
            raw = zpaq.decompress(stream)
            src, packed, back = (Path(tmp) / f"g{i}{ext}" for ext in (".bin", ".bin.lrz", ".out"))
            src.write_bytes(raw)
            lrzip("compress", "-z", "-L", "9", "-o", str(packed), str(src))
            lrzip("decompress", "-d", "-f", "-o", str(back), str(packed))
            if back.read_bytes() != raw:
                raise AssertionError("lrzip round trip changed a group")
            total += packed.stat().st_size
    (t_enc, c_enc), (t_dec, c_dec) = seconds["compress"], seconds["decompress"]
    label = "  groups by lrzip -z -L 9"
    print(f"  {label:<34}{total:>12,}{t_enc:>9.1f}s {c_enc:>7.1f}s{t_dec:>9.1f}s {c_dec:>7.1f}s  (groups only)")
    row = {"codec": label.strip(), "bytes": total, "compress_s": round(t_enc, 2), "decompress_s": round(t_dec, 2)}
    return row | {"compress_cpu_s": round(c_enc, 2), "decompress_cpu_s": round(c_dec, 2)}


def breakdown(blob: bytes) -> dict[str, int]:
    """Bytes of each stream of a pergroup blob, groups by role, plus the frame's own header."""
    streams = pergroup._streams(blob, "bench")
    groups = json.loads(brotli.decompress(streams[0]))["groups"]
    sizes = dict(zip([*pergroup._FIXED, *groups], map(len, streams)))
    return {**sizes, "frame": len(blob) - sum(sizes.values())}


def chain_seconds(weights: bytes) -> dict[str, float]:
    """CPU seconds of ``nn_chain`` per sorted role and shape, summed over layers."""
    out: dict[str, float] = {}
    for name, arr in pergroup.state_tensors(weights).items():
        key = pergroup.role(name)[0]
        if arr.dtype == np.int8 and arr.ndim == 2 and key in pergroup.SORT_ROLES:
            label = f"{key} {arr.shape[0]}x{arr.shape[1]}"
            out[label] = out.get(label, 0.0) + timed(pergroup.nn_chain, arr)[2]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a pgolf_model.train run directory")
    source.add_argument("--synthetic", action="store_true", help="record-caseops-shaped synthetic weights")
    source.add_argument("--quick", action="store_true", help="tiny synthetic shapes, ZPAQ level 3 (seconds)")
    parser.add_argument("--preset", default="record-caseops", help="shapes and quant scheme of --synthetic")
    parser.add_argument("--level", type=int, default=pergroup.LEVEL, help="ZPAQ level of the default pergroup row")
    parser.add_argument("--workers", type=int, default=2, help="threads for the groups (the box: 2 cores)")
    parser.add_argument(
        "--ablate",
        default=",".join(ABLATIONS),
        help=f"comma-separated ablations to run, from {', '.join(ABLATIONS)} (empty: none)",
    )
    parser.add_argument("--lrzip", action="store_true", help="also lrzip -z -L 9 on the same group streams")
    parser.add_argument("--json", type=Path, help="write the rows here as JSON")
    args = parser.parse_args(argv)

    if args.run:
        weights, what = trained_weights(args.run)
    else:
        cfg = preset(args.preset)
        cfg = cfg.override(QUICK) if args.quick else cfg
        weights, what = synthetic_weights(cfg), f"synthetic {cfg.preset}" + (" (quick shapes)" if args.quick else "")
    level = 3 if args.quick else args.level
    ints = sum(a.size for n, a in pergroup.state_tensors(weights).items() if a.dtype == np.int8 and a.ndim == 2)
    print(f"{what}: {len(weights):,} serialized bytes, {ints:,} quantized values; {args.workers} worker threads")
    print(f"  {'codec':<34}{'bytes':>12}{'compress wall, CPU':>19}{'decompress wall, CPU':>21}")

    def pg(**options):
        return lambda w: pergroup.compress(w, workers=args.workers, **{"level": level, **options})

    rows = [
        run_codec(
            name, weights, lambda w, n=name: pgolf_compress(w, (n,))[1], partial(pgolf_decompress, CODEC_IDS[name])
        )[0]
        for name in ("zstd", "lzma", "brotli")
    ]
    row, blob = run_codec(f"pergroup (level {level})", weights, pg(), pergroup.decompress)
    rows.append(row)
    streams = breakdown(blob)
    print("    streams: " + ", ".join(f"{k} {v:,}" for k, v in streams.items()), flush=True)
    chosen = [a for a in args.ablate.split(",") if a]
    if unknown := set(chosen) - set(ABLATIONS):
        parser.error(f"unknown ablation(s) {', '.join(sorted(unknown))}; known: {', '.join(ABLATIONS)}")
    for key in chosen:
        label, opts = ABLATIONS[key]
        if opts.get("level", -1) != level:
            rows.append(run_codec(f"  {label}", weights, pg(**opts), pergroup.decompress)[0])
    if args.lrzip and (row := lrzip_row(blob)):
        rows.append(row)

    brotli_bytes = next(r["bytes"] for r in rows if r["codec"] == "brotli")
    print(f"\n  {'vs brotli-11':<34}{'bytes saved':>12}{'saving':>9}")
    for r in rows:
        r["saved_vs_brotli"] = brotli_bytes - r["bytes"]
        r["saving_pct"] = round(100 * r["saved_vs_brotli"] / brotli_bytes, 3)
        print(f"  {r['codec']:<34}{r['saved_vs_brotli']:>12,}{r['saving_pct']:>8.2f}%")
    chains = chain_seconds(weights)
    print(
        "\nrow chain (nn_chain, CPU seconds, summed over layers): "
        + ", ".join(f"{k} {v:.1f}s" for k, v in chains.items())
    )
    if args.json:
        report = {"source": what, "serialized_bytes": len(weights), "values": ints, "workers": args.workers}
        report |= {"rows": rows, "streams": streams, "chain_s": chains}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
