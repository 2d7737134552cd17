"""Exact bits per byte of a model artifact on a validation split, from the artifact alone.

    python -m pgolf_model.evaluate RUN/model.pga --data DIR [--val-tokens N] [--bytes official] [--stride 64]
        [--ttt lora --eval.lora_batch_docs 16]
    python -m pgolf_model.evaluate RUN/model.pga --plan [--data DIR]

also under ``torchrun``. The model is rebuilt from the artifact's own counted code, config and weights. How the
stream is scored is the ``eval`` section of the config (the artifact's own unless flags say otherwise): windows every
``--stride`` tokens and score-first test-time training with ``--ttt full|lora|phased`` (on a copy of the model),
every ``eval.*`` field a flag. The scoring is ``pgolf_model.evaluation``; this module is its command line.
``--plan`` scores nothing: it prints the evaluation's passes, tokens and 8xH100 time estimate (``eval_plan``) for
the documents of ``--data`` (only their lengths are read), or without it for the 1.0611 record's validation
documents, and warns when the estimate exceeds the 600 s clock.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import get_args

from . import artifact, eval_plan, runtime
from .cli import add_section_arguments, command_parser, guarded
from .config import Config
from .evaluation.byte_counts import ByteMode, byte_counts, load_val
from .evaluation.ttt import evaluate_ttt, find_docs


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.evaluate", __doc__)
    parser.add_argument("artifact", help="model artifact written by pgolf_model.train (e.g. runs/X/model.pga)")
    parser.add_argument("--data", help="shard directory with the val split (and its byte sidecars)")
    parser.add_argument(
        "--plan", action="store_true", help="print passes, tokens and the 8xH100 time estimate instead of scoring"
    )
    parser.add_argument("--val-tokens", type=int, default=0, help="score only the first N targets (0 = all)")
    parser.add_argument(
        "--bytes", choices=get_args(ByteMode), default="exact", help="byte count: sidecars, or the official formula"
    )
    parser.add_argument("--batch-tokens", type=int, default=0, help="tokens per forward pass (0 = training's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--host-code",
        action="store_true",
        help="build the model from the installed pgolf_model instead of the artifact's own counted code",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_section_arguments(parser, "eval")
    args = parser.parse_args(argv)
    if args.val_tokens < 0 or args.batch_tokens < 0:
        parser.error(f"--val-tokens {args.val_tokens} and --batch-tokens {args.batch_tokens} must be >= 0")
    if not args.data and not args.plan:
        parser.error("--data is required (except with --plan)")
    return guarded(lambda: print_plan(args) if args.plan else evaluate(args), (ValueError, FileNotFoundError))


def _eval_config(art, args: argparse.Namespace):
    given = {k: v for k, v in vars(args).items() if k.startswith("eval.") and v is not None}
    return Config.from_dict({"eval": art.config.get("eval", {})}, where=f"{art.path}: config").override(given).eval


def print_plan(args: argparse.Namespace) -> int:
    art = artifact.read(args.artifact)
    cfg = replace(Config.from_dict(art.config, where=f"{art.path}: config"), eval=_eval_config(art, args))
    if args.data:
        tokens, _ = load_val(args.data)
        if args.val_tokens:
            tokens = tokens[: args.val_tokens + 1]
        bos = art.tokenizer().bos_id
        lengths = [n for _, n in find_docs(tokens, bos)] if bos is not None else [len(tokens)]
        source = f"{args.data}"
    else:
        lengths = eval_plan.record_lengths_in_stream_order()
        source = "the 1.0611 record's validation set (lengths from its logs, in a seeded order)"
    print("\n".join(eval_plan.plan(cfg, lengths).lines(source)))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    rt = runtime.setup(args.device)
    art = artifact.read(args.artifact)
    model, cfg = artifact.build_model(art, device=rt.device, embedded_code=not args.host_code)
    tok = art.tokenizer()
    tokens, sidecar = load_val(args.data)
    counts = byte_counts(args.bytes, tokens, sidecar, tok, args.data)
    how = _eval_config(art, args)
    seq_len = how.seq_len or cfg.train.seq_len
    start = time.perf_counter()
    result = evaluate_ttt(
        model, tokens, counts, how, seq_len=seq_len, batch_tokens=args.batch_tokens or cfg.train.device_batch_tokens,
        bos_id=tok.bos_id, runtime=rt, val_tokens=args.val_tokens,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if rt.is_main:
        out = {
            **result.to_dict(),
            "stride": how.stride or seq_len if how.ttt in ("none", "full") else None,  # lora/phased: per-doc chunks
            "ttt": how.ttt,
            "bytes_mode": args.bytes,
            "artifact_bytes": art.total_bytes,
            "eval_seconds": round(seconds, 2),
        }
        if args.json:
            print(json.dumps(out))
        else:
            print(
                f"val_bpb {result.bpb:.6f}  val_loss {result.loss:.6f}  targets {result.tokens:,}  "
                f"bytes {result.bytes:,} ({args.bytes})  stride {out['stride'] or '-'}  ttt {how.ttt}  "
                f"artifact {art.total_bytes:,} B  {seconds:.1f}s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
