"""Ternary weights against int6 GPTQ at the same artifact bytes, each trained and scored from its artifact.

    python bench/lowbit.py [--preset tiny] [--steps 200] [--jobs 2]

Three runs of ``pgolf_model.train`` on the development corpus (byte tokens, vocab 260; ``bench/quant.py``), the same
steps, data order and seed:

- ``int6 GPTQ``: the preset as it is, int6 GPTQ (16 self-generated calibration sequences of 128 tokens);
- ``ternary, same bytes``: ternary block matrices from step 0, made wider and shallower until the budget estimate of
  its weights (``export.estimate``) is at most the int6 run's: the bytes are equalized by width, since one
  ternary weight costs ~0.22 bytes (1.6 bits + a float16 scale per 128) against ~0.7 for int6 after zstd;
- ``ternary, same shape``: the preset's shape, ternary (fewer bytes: the cost of ternary per parameter).

The table gives each run's parameters, BPB before export (the model as trained: ternary runs always run ternary),
BPB from the artifact, and the artifact's weights bytes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from quant import byte_dataset  # bench/quant.py (run as a script, bench/ is on sys.path)

from pgolf_model.config import Config
from pgolf_model.export import estimate
from pgolf_model.model import count_parameters
from pgolf_model.presets import preset

CALIBRATION = {"quant.calib_seqs": 16, "quant.calib_seq_len": 128, "quant.calib_batch": 16}


def variants(base: Config) -> dict[str, Config]:
    int6 = base.override({"quant.bits": 6, "quant.method": "gptq", **CALIBRATION})
    target = estimate.weights_estimate(int6)
    m = base.model
    same_bytes = None
    # Widths a multiple of the 128-weight group, from twice the preset's; the deepest stack that fits the bytes.
    for dim in (2 * m.model_dim, 3 * m.model_dim):
        for layers in range(m.num_layers, 0, -1):
            cfg = base.override(
                {"model.lowbit": "ternary", "model.model_dim": dim, "model.num_layers": layers, "quant.bits": 6}
            )
            if estimate.weights_estimate(cfg) <= target:
                same_bytes = same_bytes or cfg
                break
    if same_bytes is None:
        raise SystemExit(f"no wider ternary shape fits the int6 run's {target:,} estimated bytes")
    same_shape = base.override({"model.lowbit": "ternary", "quant.bits": 6})
    return {"int6 GPTQ": int6, "ternary, same bytes": same_bytes, "ternary, same shape": same_shape}


def train_one(args: tuple[str, dict, str, str, str]) -> dict:
    from pgolf_model.training.trainer import run

    name, cfg_dict, data, tok, out = args
    torch.set_num_threads(1)
    cfg = Config.from_dict(cfg_dict)
    return {"name": name, **run(cfg, data=data, tokenizer=tok, out_dir=Path(out), progress=False)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2, help="runs trained side by side (one thread each)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="pgolf-bench-lowbit-"))
    data, tok = byte_dataset(root)
    base = preset(args.preset).override(
        {"model.vocab_size": 260, "train.iterations": args.steps, "train.val_every": 0, "train.max_minutes": 0.0}
    )
    runs = variants(base)
    for name, cfg in runs.items():
        m = cfg.model
        print(f"{name}: {m.num_layers} x {m.model_dim}, {count_parameters(m):,} parameters, {m.lowbit}", flush=True)
    jobs = [
        (name, cfg.to_dict(), str(data), str(tok), str(root / f"run{i}")) for i, (name, cfg) in enumerate(runs.items())
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(train_one, jobs))
    (root / "results.json").write_text(json.dumps(results, indent=2, default=str))

    print(
        f"\n{args.preset}, {args.steps} steps, byte tokens, {results[0]['val_targets']:,} validation targets ({root})"
    )
    print("| run | shape | parameters | BPB before export | BPB from the artifact | weights bytes | artifact bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        m = runs[r["name"]].model
        print(
            f"| {r['name']} | {m.num_layers} x {m.model_dim} | {r['params']:,} | {r['val_bpb']:.4f} | "
            f"{r['artifact_val_bpb']:.4f} | {r['artifact_parts']['weights']:,} | {r['artifact_bytes']:,} |"
        )


if __name__ == "__main__":
    main()
