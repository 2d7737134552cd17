"""Exact bits per byte of a model artifact on a validation split, from the artifact alone.

    python -m pgolf_model.evaluate RUN/model.pga --data DIR [--val-tokens N] [--bytes official] [--stride 64]
        [--ttt lora --eval.lora_batch_docs 16]

also under ``torchrun``. The model is rebuilt from the artifact's config and weights by the code of its model family
(the config's ``model.arch``): a built-in family's (gpt, ssd) is the artifact's own counted code (``--host-code``:
the installed pgolf_model's); a plugin's is the installed plugin (the package that registered it under the
entry-point group ``pgolf.models``), and where it is not installed, the plugin code the artifact carries runs only
with ``--trust-artifact-code``. How the
stream is scored is the ``eval`` section of the config (the artifact's own unless flags say otherwise): windows every
``--stride`` tokens and score-first test-time training with ``--ttt full|lora|phased`` (on a copy of the model),
every ``eval.*`` field a flag. The scoring is ``pgolf_model.evaluation``; this module is its command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import get_args

from . import artifact, runtime
from .cli import add_section_arguments, command_parser, guarded
from .config import Config
from .evaluation.byte_counts import ByteMode, byte_counts, load_val
from .evaluation.ttt import evaluate_ttt


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.evaluate", __doc__)
    parser.add_argument("artifact", help="model artifact written by pgolf_model.train (e.g. runs/X/model.pga)")
    parser.add_argument("--data", required=True, help="shard directory with the val split (and its byte sidecars)")
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
    parser.add_argument(
        "--trust-artifact-code",
        action="store_true",
        help="a plugin's model whose package is not installed here: run the code the artifact carries (arbitrary "
        "Python, only for artifacts you trust)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_section_arguments(parser, "eval")
    args = parser.parse_args(argv)
    if args.val_tokens < 0 or args.batch_tokens < 0:
        parser.error(f"--val-tokens {args.val_tokens} and --batch-tokens {args.batch_tokens} must be >= 0")
    return guarded(lambda: evaluate(args), (ValueError, FileNotFoundError))


def evaluate(args: argparse.Namespace) -> int:
    rt = runtime.setup(args.device)
    art = artifact.read(args.artifact)
    model, cfg = artifact.build_model(
        art, device=rt.device, embedded_code=not args.host_code, trust_code=args.trust_artifact_code
    )
    tok = art.tokenizer()
    tokens, sidecar = load_val(args.data)
    counts = byte_counts(args.bytes, tokens, sidecar, tok, args.data)
    given = {k: v for k, v in vars(args).items() if k.startswith("eval.") and v is not None}
    how = Config.from_dict({"eval": art.config.get("eval", {})}, where=f"{art.path}: config").override(given).eval
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
