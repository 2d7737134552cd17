"""Training-step throughput at a preset: eager vs ``torch.compile``, measured side by side in one run.

    python bench/train_step.py [--preset tiny] [--steps 20] [--threads 2] [--data SHARD_DIR]

Both models are built from the same seed and stepped in alternating rounds (eager step, compiled step, ...), so a
load change on a shared machine hits both alike; the report gives medians and the compiled/eager ratio. With
``--data`` the batches come from the real loader and its share of the step time is reported too (the loader must
not stall the step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.training.optim import build_optimizers


def make_step(model, optimizers, compiled: bool):
    net = torch.compile(model) if compiled else model

    def step(x, y):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        net(x, y).backward()
        for opt in optimizers:
            opt.step()

    return step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps per mode (compilation happens here)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--data", help="shard directory: time the real loader too")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    rows = cfg.train.device_batch_tokens // cfg.train.seq_len
    tokens_per_step = rows * cfg.train.seq_len

    loader = None
    if args.data:
        from pgolf_data.shards import ShardSet
        from pgolf_model.training.data import TrainLoader

        loader = TrainLoader(
            ShardSet.open(args.data, "train"),
            seq_len=cfg.train.seq_len,
            device_batch_tokens=cfg.train.device_batch_tokens,
            grad_accum=1,
        )

    steps = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(cfg.train.seed)
        model = GPT(cfg.model)
        steps[mode] = make_step(model, build_optimizers(model, cfg.optim), compiled=mode == "compiled")

    gen = torch.Generator().manual_seed(0)

    def batch(i: int):
        if loader is not None:
            return loader.batch(i, 0)
        data = torch.randint(0, cfg.model.vocab_size, (rows, cfg.train.seq_len + 1), generator=gen)
        return data[:, :-1], data[:, 1:]

    start = time.perf_counter()
    for i in range(args.warmup):
        steps["eager"](*batch(i))
    eager_warm = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.warmup):
        steps["compiled"](*batch(i))
    compile_warm = time.perf_counter() - start

    times: dict[str, list[float]] = {"eager": [], "compiled": [], "loader": []}
    for i in range(args.steps):
        t = time.perf_counter()
        x, y = batch(args.warmup + i)
        times["loader"].append(time.perf_counter() - t)
        for mode in ("eager", "compiled"):
            t = time.perf_counter()
            steps[mode](x, y)
            times[mode].append(time.perf_counter() - t)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"preset {args.preset}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{tokens_per_step:,} tokens/step, {torch.get_num_threads()} thread(s), {args.steps} steps per mode"
    )
    print(f"  warm-up ({args.warmup} steps): eager {eager_warm:.1f}s, compiled {compile_warm:.1f}s (incl. compile)")
    for mode in ("eager", "compiled"):
        print(f"  {mode:<9} {1000 * med[mode]:8.1f} ms/step  {tokens_per_step / med[mode]:>10,.0f} tok/s")
    print(f"  compiled / eager tokens/s: {med['eager'] / med['compiled']:.2f}x")
    source = "real loader" if loader is not None else "random tokens (no --data)"
    print(
        f"  batch building ({source}): {1000 * med['loader']:.2f} ms = "
        f"{100 * med['loader'] / med['eager']:.2f}% of an eager step"
    )


if __name__ == "__main__":
    main()
