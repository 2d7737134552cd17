"""BPB and time of each evaluation mode on one artifact, side by side, against non-overlapping windows.

    python bench/ttt_eval.py RUN/model.pga --data DIR [--val-tokens 65536] [--set eval.lora.batch_docs=8 ...]

Modes: non-overlapping windows (the baseline scorer), sliding windows (stride 64), score-first TTT full (its chunks
scored with the same stride), docs (the lora mode's per-document chunk windows at learning rate 0: what the context
alone changes), lora and phased. ``--set`` overrides ``eval.*`` settings for every mode.

Then sorting: LoRA TTT on the first ``--docs`` documents (1,000) with documents sorted by length in one round
(``eval.lora.round_docs 0``) and in stream order (rounds of one batch), side by side: chunk passes, tokens processed,
seconds and BPB (``eval_plan.time_ttt``).
"""

from __future__ import annotations

import argparse
import time

import torch

from pgolf_model import artifact, eval_plan
from pgolf_model.cli import parse_setting
from pgolf_model.config import Config
from pgolf_model.evaluation.byte_counts import load_val
from pgolf_model.evaluation.ttt import evaluate_ttt
from pgolf_model.runtime import Runtime


def parse_sets(items: list[str]) -> dict:
    """``["eval.lora.batch_docs=8", ...]`` as config overrides, each value parsed as its flag would be."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key.startswith("eval."):
            raise SystemExit(f"--set {item}: only eval.* settings apply here")
        out[key] = parse_setting(key, value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact")
    parser.add_argument("--data", required=True)
    parser.add_argument("--val-tokens", type=int, default=65_536)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--set", nargs="*", default=[], help="eval settings, e.g. eval.lora.batch_docs=8")
    parser.add_argument("--modes", default="none,sliding,full,docs,lora,phased")
    parser.add_argument("--docs", type=int, default=1000, help="documents of the sorted vs stream-order comparison")
    args = parser.parse_args()

    art = artifact.read(args.artifact)
    model, cfg = artifact.build_model(art)
    tokens, counts = load_val(args.data)
    bos_id = art.tokenizer().bos_id
    rt = Runtime(torch.device("cpu"))
    given = Config().override(parse_sets(args.set))
    modes = {
        name: given.override(changes).eval
        for name, changes in {
            "none": {},
            "sliding": {"eval.stride": args.stride},
            "full": {"eval.stride": args.stride, "eval.ttt": "full"},
            "docs": {"eval.ttt": "lora", "eval.lora.lr": 0.0},  # document windows, no adaptation
            "lora": {"eval.ttt": "lora"},
            "phased": {"eval.ttt": "phased"},
        }.items()
    }
    threads = torch.get_num_threads()
    print(f"{args.artifact}: {args.val_tokens:,} targets, seq_len {cfg.train.seq_len}, {threads} torch threads")
    print(f"{'mode':<8} {'val_bpb':>9} {'delta':>9} {'seconds':>8} {'x time':>7}")
    base = None
    for name in args.modes.split(","):
        start = time.perf_counter()
        got = evaluate_ttt(
            model, tokens, counts, modes[name], seq_len=cfg.train.seq_len, batch_tokens=cfg.train.device_batch_tokens,
            bos_id=bos_id, runtime=rt, val_tokens=args.val_tokens,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        base = base or (got.bpb, seconds)
        print(f"{name:<8} {got.bpb:9.5f} {got.bpb - base[0]:+9.5f} {seconds:8.1f} {seconds / base[1]:7.1f}")

    lora = cfg.override({**parse_sets(args.set), "eval.ttt": "lora"})
    orders = {"sorted": 0, "stream": lora.eval.lora.batch_docs}
    timed = {
        name: eval_plan.time_ttt(
            model, tokens, counts, lora.override({"eval.lora.round_docs": docs}), bos_id=bos_id, runtime=rt,
            docs=args.docs,
        )
        for name, docs in orders.items()
    }  # fmt: skip
    print(f"\nLoRA TTT on {timed['sorted']['docs']:,} documents: sorted by length vs stream order")
    print(f"{'order':<8} {'passes':>8} {'tokens':>12} {'seconds':>8} {'val_bpb':>9}")
    for name, t in timed.items():
        print(f"{name:<8} {t['passes']:8,} {t['tokens']:12,} {t['seconds']:8.1f} {t['val_bpb']:9.5f}")
    s_, o_ = timed["stream"], timed["sorted"]
    print(f"{'ratio':<8} {s_['passes'] / o_['passes']:8.2f} {s_['tokens'] / o_['tokens']:12.2f} "
          f"{s_['seconds'] / o_['seconds']:8.2f}  (stream order / sorted)")  # fmt: skip


if __name__ == "__main__":
    main()
