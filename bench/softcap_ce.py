"""Chunked soft-capped cross-entropy (``pgolf_model/softcap_ce.py``) vs the plain formulation, side by side.

    python bench/softcap_ce.py [--steps 6] [--threads 1]

For the ``tiny`` shapes at vocab 1024 (4 x 128, the sp1024 model) and vocab 8192 (4 x 48, what the tokenizer A/B
sizes a CaseOps-8192 model to), it times a whole training step (forward, backward, optimizer) and a validation
forward pass over the same batch, once with ``model(x, y)`` (chunked on CPU) and once with
``cross_entropy(model.logits(x), y)`` (the plain formulation), alternating. It prints medians and plain/chunked.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pgolf_model.model import GPT
from pgolf_model.presets import preset
from pgolf_model.training.optim import build_optimizers

SHAPES = {"vocab 1024, 4 x 128": (1024, 128), "vocab 8192, 4 x 48": (8192, 48)}


def plain_loss(model, x, y, reduction="mean"):
    return F.cross_entropy(model.logits(x).flatten(0, 1), y.flatten(), reduction=reduction)


def chunked_loss(model, x, y, reduction="mean"):
    return model(x, y, reduction=reduction).flatten() if reduction == "none" else model(x, y)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="measured rounds per shape")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the A/B runs 1 per job on 2 cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = preset("tiny")
    print(f"{'shape':<22} {'what':<6} {'plain s':>8} {'chunked s':>10} {'plain/chunked':>14}")
    for label, (vocab, dim) in SHAPES.items():
        cfg = base.override({"model.vocab_size": vocab, "model.model_dim": dim})
        torch.manual_seed(0)
        model = GPT(cfg.model)
        optimizers = build_optimizers(model, cfg.optim)
        rows = cfg.train.device_batch_tokens // cfg.train.seq_len
        x = torch.randint(0, vocab, (rows, cfg.train.seq_len))
        y = torch.randint(0, vocab, (rows, cfg.train.seq_len))
        times = {(what, how): [] for what in ("train", "eval") for how in ("plain", "chunked")}
        losses = {}
        for step in range(args.steps + 1):  # the first round warms up and is not timed
            for how, loss_fn in (("plain", plain_loss), ("chunked", chunked_loss)):
                start = time.perf_counter()
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss_fn(model, x, y).backward()
                for opt in optimizers:
                    opt.step()
                if step:
                    times["train", how].append(time.perf_counter() - start)
            for how, loss_fn in (("plain", plain_loss), ("chunked", chunked_loss)):  # same weights for both
                start = time.perf_counter()
                with torch.no_grad():
                    losses[how] = loss_fn(model, x, y, "none").double().sum().item()
                if step:
                    times["eval", how].append(time.perf_counter() - start)
        for what in ("train", "eval"):
            a, b = statistics.median(times[what, "plain"]), statistics.median(times[what, "chunked"])
            print(f"{label:<22} {what:<6} {a:8.3f} {b:10.3f} {a / b:13.2f}x")
        drift = abs(losses["plain"] - losses["chunked"]) / abs(losses["plain"])
        print(f"{label:<22} relative difference of the summed eval loss: {drift:.1e}")


if __name__ == "__main__":
    main()
