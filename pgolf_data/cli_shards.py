"""``pgolf-data shard``, ``pgolf-data verify`` and ``pgolf-data inspect``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_args import add_command, add_corpus_args
from .cli_scale import add_scale_args, shard_with_datatrove
from .corpus import DEFAULT_SOURCE, open_corpus
from .inspect_shard import describe
from .journal import JOURNAL_NAME, Journal
from .manifest import SPLITS
from .sharding import ShardConfig, refuse_inputs_inside, write_shards
from .shards import MAX_SHARD_TOKENS
from .tokenizer import artifact
from .tokenizer.training import default_threads
from .verify import DEFAULT_SAMPLE_DOCS, verify

DEFAULT_VAL_DOCS = 50_000


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "shard", cmd_shard)
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory (or its tokenizer.pgt)")
    add_corpus_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created if missing)")
    p.add_argument("--name", default="fineweb", help="file name prefix (default: fineweb, as the official files)")
    p.add_argument(
        "--val-docs",
        type=int,
        metavar="N",
        help=f"the first N documents form the validation split (default: {DEFAULT_VAL_DOCS:,} as the challenge, or "
        "the docs_val of a challenge docs_selected.source_manifest.json)",
    )
    p.add_argument(
        "--shard-tokens",
        type=int,
        metavar="N",
        default=MAX_SHARD_TOKENS,
        help=f"tokens per shard; a split's last shard is shorter (default: {MAX_SHARD_TOKENS:,}, as the challenge)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=f"encoder processes (default: all cores, here {default_threads()}); with --engine datatrove, tasks "
        "running at once (default: local, one per core; slurm and ray, no limit)",
    )
    p.add_argument(
        "--train-sidecars",
        action="store_true",
        help="also write byte sidecars for the train split (validation sidecars are always written)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out after its last verified shard (same settings required)",
    )
    again.add_argument("--force", action="store_true", help="delete existing shard output in --out and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_scale_args(p)

    p = add_command(sub, "verify", cmd_verify)
    p.add_argument("directory", metavar="DIR", help="shard directory (holding manifest.json)")
    add_corpus_args(
        p, default=None, corpus_help="the corpus the shards were made from, for the per-document checks", max_docs=False
    )
    p.add_argument(
        "--sample-docs",
        type=int,
        metavar="N",
        help="re-encode only N documents per split, spread over it (default: every document with --corpus, "
        f"{DEFAULT_SAMPLE_DOCS} decoded and re-encoded without it)",
    )

    p = add_command(sub, "inspect", cmd_inspect)
    p.add_argument("path", metavar="FILE", help="a .bin shard or sidecar, a shard directory, or a manifest.json")
    p.add_argument(
        "--tokenizer", metavar="DIR", help="tokenizer to decode with (default: tokenizer.pgt beside the file)"
    )
    p.add_argument(
        "-n", "--tokens", type=int, default=16, metavar="N", help="how many leading tokens to show (default: 16)"
    )


def cmd_shard(args: argparse.Namespace) -> int:
    """encode a corpus into official-format token shards with byte sidecars and a manifest

    Encode a corpus with a trained tokenizer into OUT/<name>_{val,train}_NNNNNN.bin token shards (the challenge's
    format: 256 int32 header words, then uint16 ids; BOS before every document, no EOS; exactly --shard-tokens tokens
    a shard, the last of a split shorter), byte sidecars <name>_{val,train}_bytes_NNNNNN.bin (UTF-8 bytes of the
    original text per token, for exact bits per byte), a copy of the tokenizer and manifest.json, written last. The
    first --val-docs documents are the validation split, the rest train. Output is byte-identical for any --workers.
    """
    tokenizer = artifact.artifact_path(args.tokenizer)
    local = args.corpus != DEFAULT_SOURCE and not args.corpus.startswith("hf:")
    corpus_path = {"corpus": args.corpus} if local else {}
    refuse_inputs_inside(args.out, {"tokenizer": tokenizer, **corpus_path})
    data = tokenizer.read_bytes()
    artifact.from_artifact(data, where=str(tokenizer))  # a bad artifact is refused naming its file, before any work
    corpus = open_corpus(args.corpus, text_field=args.text_field, max_docs=args.max_docs)
    val_docs = args.val_docs if args.val_docs is not None else (corpus.default_val_docs or DEFAULT_VAL_DOCS)
    config = ShardConfig(
        name=args.name,
        val_docs=val_docs,
        shard_tokens=args.shard_tokens,
        max_docs=args.max_docs,
        train_sidecars=args.train_sidecars,
        workers=args.workers or default_threads(),
    )
    mode = "resume" if args.resume else "force" if args.force else "new"
    try:
        if args.engine == "datatrove":
            manifest = shard_with_datatrove(args, corpus, data, config, mode)
            if manifest is None:
                return 0
        else:
            manifest = write_shards(
                corpus,
                data,
                args.out,
                config,
                mode=mode,
                progress=not args.quiet,
                log=lambda m: print(m, file=sys.stderr),
            )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_kept(Path(args.out))) from None
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError as e:  # a full disk: the shards completed before it stay, as after Ctrl-C
        raise OSError(f"{e}; {_kept(Path(args.out))}") from None
    for split in (s for s in SPLITS if s in manifest.splits):
        entry = manifest.splits[split]
        sidecars = " + byte sidecars" if entry.sidecars else ""
        print(
            f"{split:<5} {entry.docs:>12,} docs {entry.tokens:>15,} tokens {entry.bytes:>15,} bytes "
            f"{len(entry.shards):>5} shards{sidecars}"
        )
    print(f"wrote {args.out}/manifest.json")
    return 0


def _kept(out_dir: Path) -> str:
    """What an interrupted ``shard`` leaves in ``out_dir``, and how to go on."""
    journal = out_dir / JOURNAL_NAME
    if not journal.is_file():
        return f"nothing was kept in {out_dir}"
    shards = len(Journal.load(journal).shards)
    return (
        f"kept {shards} complete shard(s) in {out_dir} and {JOURNAL_NAME}, which records them: the same command with "
        "--resume continues after them (--force starts over)"
    )


def cmd_verify(args: argparse.Namespace) -> int:
    """check a shard directory against its manifest (and the corpus): headers, sha256, BOS, byte sums

    Check every claim of DIR/manifest.json: file list, tokenizer sha256, every header (magic, version, count against
    size) and sha256, sidecar counts, the official cut, token ids, BOS at every document and sidecar sums. With
    --corpus also each document's sidecar sum against its UTF-8 length, the document count, the corpus sha256, and
    every document re-encoded against its stored tokens and byte counts (--sample-docs N: N a split); without it, a
    decode round trip on a sample of documents. Lists every failure with file, offset, expected and found; exits 1
    when any check fails.
    """
    corpus = open_corpus(args.corpus, text_field=args.text_field) if args.corpus else None
    report = verify(args.directory, corpus=corpus, sample_docs=args.sample_docs)
    print(report.format())
    return 0 if report.ok else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    """show a shard's or sidecar's header, token count, first tokens decoded, byte totals

    Describe FILE: a token shard (header, token count, id range, documents, first tokens as ids, pieces and text), a
    byte sidecar (header, byte totals), or a shard directory / manifest.json (a summary).
    """
    tok = artifact.load(args.tokenizer) if args.tokenizer else None
    for line in describe(args.path, tokenizer=tok, count=args.tokens):
        print(line)
    return 0
