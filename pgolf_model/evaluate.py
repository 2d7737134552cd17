"""Bits per byte of a model artifact on a validation split, from the artifact alone.

    python -m pgolf_model.evaluate RUN/model.pga --data DIR [--val-tokens N] [--stride 64]
        [--ttt lora --eval.lora_batch_docs 16]
    python -m pgolf_model.evaluate RUN/model.pga --plan [--data DIR]

also under ``torchrun``. The model is rebuilt from the artifact's config and weights by the code of its model family
(the config's ``model.arch``: gpt, ssd, or a plugin's registered under the entry-point group ``pgolf.models``), which
must be the installed code (compared by sha256): an artifact carrying other code, or a plugin's not installed here, is
refused unless ``--trust-artifact-code`` (run the artifact's Python) or ``--host-code`` (build it with the installed
code). How the stream is scored is the ``eval`` section of the config (the artifact's own unless flags say otherwise):
windows every ``--stride`` tokens and score-first test-time training with ``--ttt full|lora|phased`` (on a copy of the
model), every ``eval.*`` field a flag. A SentencePiece-based tokenizer gets both numbers: ``val_bpb`` (exact: the
sidecars' original bytes, every target) and ``val_bpb_official`` (the official eval's byte rule over the targets it
scores); an official shard folder without pgolf's sidecars gets the official one only, and the output says so. The
folder must be bound to the artifact's tokenizer (or official). The scoring is ``pgolf_model.evaluation``; this module
is its command line.
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

from pgolf_data.folder import check_ids, open_folder
from pgolf_data.shards import ShardSet

from . import artifact, eval_plan, runtime
from .cli import add_section_arguments, command_parser, guarded
from .config import Config
from .evaluation.byte_counts import load_val, val_bytes
from .evaluation.ttt import evaluate_ttt, find_docs


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pgolf_model.evaluate", __doc__)
    parser.add_argument("artifact", help="model artifact written by pgolf_model.train (e.g. runs/X/model.pga)")
    parser.add_argument("--data", help="shard directory with the val split: pgolf's, or an official one")
    parser.add_argument(
        "--plan", action="store_true", help="print passes, tokens and the 8xH100 time estimate instead of scoring"
    )
    parser.add_argument("--val-tokens", type=int, default=0, help="score only the first N targets (0 = all)")
    parser.add_argument("--batch-tokens", type=int, default=0, help="tokens per forward pass (0 = training's)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    code = parser.add_mutually_exclusive_group()
    code.add_argument(
        "--trust-artifact-code",
        action="store_true",
        help="run the artifact's own model code when it differs from the installed code, or its plugin is not "
        "installed (it is Python: trust its author)",
    )
    code.add_argument(
        "--host-code",
        action="store_true",
        help="build the model with the installed code (pgolf's, or the installed plugin's) whatever the artifact "
        "holds (its weights must fit that model)",
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
    if art.unverified_note and rt.is_main:
        print(f"note: {art.unverified_note}", file=sys.stderr)
    tok = art.tokenizer()
    folder = open_folder(args.data)
    folder.bind(art.tokenizer_bytes, f"the tokenizer of {art.path}")
    check_ids(ShardSet.open(args.data, "val"), tok.vocab_size)
    val = val_bytes(args.data, tok, exact_sidecars=folder.exact_sidecars)
    code = "artifact" if args.trust_artifact_code else "host" if args.host_code else "auto"
    model, cfg = artifact.build_model(art, device=rt.device, code=code)
    how = _eval_config(art, args)
    seq_len = how.seq_len or cfg.train.seq_len
    start = time.perf_counter()
    result = evaluate_ttt(
        model, val.tokens, val.exact, how, seq_len=seq_len,
        batch_tokens=args.batch_tokens or cfg.train.device_batch_tokens, bos_id=tok.bos_id, runtime=rt,
        val_tokens=args.val_tokens, official=val.official, official_rule=val.official_rule,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if rt.is_main:
        out = {
            **result.to_dict(),
            "stride": how.stride or seq_len if how.ttt in ("none", "full") else None,  # lora/phased: per-doc chunks
            "ttt": how.ttt,
            "data": folder.describe(),
            "official_rule": val.official_rule or None,
            "artifact_bytes": art.total_bytes,
            "eval_seconds": round(seconds, 2),
        }
        if args.json:
            print(json.dumps(out))
        else:
            print(
                f"{result.line()}  val_loss {result.loss:.6f}  stride {out['stride'] or '-'}  ttt {how.ttt}  "
                f"artifact {art.total_bytes:,} B  {seconds:.1f}s  ({folder.describe()})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
