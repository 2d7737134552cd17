"""The main job end to end on one CPU, no network: tokenizer -> shards -> tiny GPT -> artifact -> exact BPB.

    python -m pipelines.quickstart [--corpus default] [--spec sp1024_lossless] [--minutes 3] [--out runs/quickstart]

Each stage writes a directory under ``--out`` and is skipped when that directory is already complete (pass
``--fresh`` to redo every stage: each replaces only what it writes). The corpus defaults to the embedded one (the
Python reference manual and the standard library's docstrings, ~2 MB), so this runs on a machine with nothing but
pgolf installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pgolf_data.corpus import open_corpus
from pgolf_data.manifest import MANIFEST_NAME, Manifest
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.tokenizer import artifact, training
from pgolf_data.tokenizer.metrics import measure
from pgolf_data.tokenizer.spec import resolve_spec
from pgolf_model.cli import command_parser
from pgolf_model.presets import PRESETS, bind_tokenizer, preset
from pgolf_model.training.trainer import run

from .recipe import guarded


def say(message: str) -> None:
    print(f"[quickstart] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m pipelines.quickstart", __doc__)
    parser.add_argument("--corpus", default="default", help="document source (default: the embedded corpus)")
    parser.add_argument(
        "--spec", default="sp1024_lossless", help="tokenizer spec name or path (default sp1024_lossless)"
    )
    parser.add_argument("--val-docs", type=int, default=40, help="first N documents are validation (default 40)")
    parser.add_argument(
        "--preset", default="tiny", choices=list(PRESETS), help="model preset (default tiny: minutes on 2 CPU cores)"
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="training wall-clock limit (default 3)")
    parser.add_argument("--out", default="runs/quickstart", help="output directory (default runs/quickstart)")
    parser.add_argument("--fresh", action="store_true", help="redo every stage instead of reusing finished ones")
    args = parser.parse_args(argv)
    out = Path(args.out)
    return guarded(lambda: quickstart(args, out), out)


def quickstart(args: argparse.Namespace, out: Path) -> None:
    corpus = open_corpus(args.corpus)
    spec = resolve_spec(args.spec)

    tok_dir = out / "tokenizer"
    if args.fresh or not (tok_dir / artifact.ARTIFACT_NAME).is_file():
        say(f"1/3 training tokenizer {spec.name} on {args.corpus} (validation documents held out)")
        docs = (d for i, d in enumerate(corpus) if i >= args.val_docs)
        tok, report = training.train(spec, docs)
        val = [d for i, d in zip(range(args.val_docs), corpus)]
        report.update(corpus=corpus.describe(), skipped_val_docs=args.val_docs, sample=measure(tok, val))
        artifact.save(tok, tok_dir, report, force=True)
    report = artifact.load_report(tok_dir)
    sample = report["sample"]
    say(
        f"tokenizer: {report['kind']} vocab {report['vocab_size']}, {report['artifact']['bytes']:,} artifact bytes, "
        f"{sample['tokens_per_byte']:.3f} tokens/byte on validation text, lossless={report['lossless']}"
    )

    shard_dir = out / "shards"
    if args.fresh or not (shard_dir / MANIFEST_NAME).is_file():
        say(f"2/3 sharding {args.corpus} ({args.val_docs} validation documents, byte sidecars on both splits)")
        config = ShardConfig(name="quickstart", val_docs=args.val_docs, train_sidecars=True)
        write_shards(corpus, artifact.load(tok_dir), shard_dir, config, mode="force", progress=True, log=say)
    splits = Manifest.load(shard_dir).splits
    say(
        "shards: "
        + ", ".join(f"{s} {v.docs:,} docs / {v.tokens:,} tokens / {v.bytes:,} bytes" for s, v in splits.items())
    )

    say(f"3/3 training the {args.preset} preset for at most {args.minutes} minutes")
    cfg = bind_tokenizer(preset(args.preset).override({"train.max_minutes": args.minutes}), artifact.load(tok_dir))
    summary = run(cfg, data=shard_dir, tokenizer=tok_dir, out_dir=out / "model", force=True)  # a rerun retrains
    official = summary.get("artifact_val_bpb_official")
    print(
        f"val_bpb {summary['artifact_val_bpb']:.4f} (exact, from the artifact alone; "
        f"{summary['val_bpb']:.4f} before quantization)"
        + ("" if official is None else f", val_bpb_official {official:.4f} (the leaderboard's byte rule)")
        + f", {summary['steps']} steps in {summary['train_seconds']:.0f}s"
    )


if __name__ == "__main__":  # the shard writer's worker processes are spawned: keep module import side-effect free
    sys.exit(main())
