"""The two built-in model families side by side: BPB of ``ssd`` against the ``tiny`` GPT at the same artifact bytes
and the same training compute, on the development corpus, scored from each artifact alone.

- Bytes: the GPT is the ``tiny`` preset; the SSD (``--preset tiny --model.arch ssd``) is sized by the A/B's own
  sizing (``pipelines.sizing.fit``, varying its width) to the largest model whose estimated artifact is within the
  GPT's estimated artifact.
- Compute: tokens x FLOPs/token equal: both train on batches of the same tokens, the GPT for the preset's steps, the
  SSD for ``steps x F_gpt / F_ssd`` steps (rounded; the schedule's step counts scaled with it), where F is each
  model's ``flops_per_token(seq_len)`` (the matrix products of forward and backward, causal work at its average
  length).

    python bench/model_families.py [--corpus PATH] [--seeds 2] [--jobs 2] [--out runs/families]

Prints each run and a table of the means with the SSD / GPT ratios; every stage is cached under OUT/cache.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from pgolf_data.tokenizer.spec import resolve_spec
from pgolf_model import registry
from pgolf_model.presets import bind_tokenizer, preset
from pipelines import sizing
from pipelines.cache import StageCache
from pipelines.documents import CorpusSplit
from pipelines.model_stages import TrainRequest, apply_compute_budget, run_result, train_stages
from pipelines.stages import shard_stage, stage_tokenizer, tokenizer_stage

REPO = Path(__file__).resolve().parents[1]
DEV_CORPUS = REPO.parent / "shared" / "data" / "web_dev.jsonl.zst"


def flops_per_token(cfg) -> float:
    return registry.build(cfg).flops_per_token(cfg.train.seq_len)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--corpus", default=str(DEV_CORPUS), help="corpus (default: the development corpus)")
    parser.add_argument("--spec", default="sp1024", help="tokenizer spec (default sp1024)")
    parser.add_argument("--val-docs", type=int, default=1000, help="first N documents = validation (default 1000)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once, one torch thread each")
    parser.add_argument("--out", type=Path, default=Path("runs/families"))
    args = parser.parse_args()

    cache = StageCache(args.out / "cache", log=print)
    split = CorpusSplit(args.corpus, args.val_docs)
    spec = resolve_spec(args.spec)
    tok_dir = tokenizer_stage(cache, spec, split, threads=args.jobs)
    shard_dir = shard_stage(cache, tok_dir, split, workers=args.jobs, label=spec.name)
    tok, tok_bytes = stage_tokenizer(tok_dir)

    gpt, _ = apply_compute_budget(bind_tokenizer(preset("tiny"), tok), "steps", None)
    budget = sizing.reference_budget(gpt, tok_bytes)
    ssd = sizing.fit(bind_tokenizer(registry.with_arch(preset("tiny"), "ssd"), tok), tok_bytes, budget).config
    flops = {"gpt": flops_per_token(gpt), "ssd": flops_per_token(ssd)}
    steps = round(gpt.train.iterations * flops["gpt"] / flops["ssd"])
    ssd, _ = apply_compute_budget(ssd, "steps", steps)
    configs = {"gpt": gpt, "ssd": ssd}
    for arch, cfg in configs.items():
        params = sum(p.numel() for p in registry.build(cfg).parameters())
        total = flops[arch] * cfg.train.iterations * cfg.train.batch_tokens
        print(
            f"{arch}: {sizing.shape(cfg)}, {params:,} parameters, {flops[arch]:,.0f} FLOPs/token, "
            f"{cfg.train.iterations} steps x {cfg.train.batch_tokens:,} tokens = {total:.3e} FLOPs"
        )

    seeds = [1337 + i for i in range(args.seeds)]
    requests = [
        TrainRequest(tok_dir, shard_dir, cfg.override({"train.seed": seed}), f"{arch} seed {seed}")
        for arch, cfg in configs.items()
        for seed in seeds
    ]
    stages = train_stages(cache, requests, jobs=args.jobs, threads=args.jobs)
    results: dict[str, list[dict]] = {arch: [] for arch in configs}
    for request, stage in zip(requests, stages):
        r = run_result(stage)
        results[request.label.split()[0]].append(r)
        print(
            f"{request.label}: val_bpb {r['val_bpb']:.4f} (before quantization {r['val_bpb_before_quant']:.4f}), "
            f"artifact {r['artifact_bytes']:,} bytes, {r['steps']} steps in {r['train_seconds']:.0f} s"
        )

    def mean(arch: str, key: str) -> float:
        return statistics.mean(r[key] for r in results[arch])

    rows = (
        ("val_bpb", "BPB (artifact)"),
        ("val_bpb_before_quant", "BPB before quantization"),
        ("artifact_bytes", "artifact bytes"),
        ("params", "parameters"),
        ("train_seconds", "train s"),
    )
    print("\n| | GPT tiny | SSD | SSD / GPT |\n|---|---:|---:|---:|")
    for key, label in rows:
        g, s = mean("gpt", key), mean("ssd", key)
        print(f"| {label} | {g:,.4f} | {s:,.4f} | {s / g:.4f} |")
    compute = {a: flops[a] * configs[a].train.iterations * configs[a].train.batch_tokens for a in configs}
    print(f"| training FLOPs | {compute['gpt']:.4e} | {compute['ssd']:.4e} | {compute['ssd'] / compute['gpt']:.4f} |")
    spread = {
        a: statistics.stdev(r["val_bpb"] for r in rs) if len(rs) > 1 else float("nan") for a, rs in results.items()
    }
    print(f"\nseed std of BPB: GPT {spread['gpt']:.4f}, SSD {spread['ssd']:.4f} ({len(seeds)} seeds each)")


if __name__ == "__main__":
    main()
