"""``pgolf-data shard``, ``verify``, ``inspect``, ``sidecars`` (exact sidecars for an official folder) and ``export``
(a pgolf folder as an official script reads it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_args import add_command, add_corpus_args
from .cli_scale import add_scale_args, shard_with_datatrove
from .corpus import DEFAULT_SOURCE, open_corpus
from .inspect_shard import describe
from .journal import JOURNAL_NAME, Journal
from .manifest import SPLITS, Manifest
from .official_export import TARGETS, export_folder
from .sharding import ShardConfig, refuse_inputs_inside, write_shards
from .shards import MAX_SHARD_TOKENS
from .sidecars import add_sidecars
from .tokenizer import artifact, interop
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
    p.add_argument("directory", metavar="DIR", help="shard directory (pgolf's with manifest.json, or an official one)")
    p.add_argument(
        "--tokenizer",
        metavar="T",
        help="for a folder without a manifest: the tokenizer (directory, tokenizer.pgt or .model) to check ids and "
        "BOS with",
    )
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

    p = add_command(sub, "sidecars", cmd_sidecars)
    p.add_argument("directory", metavar="DIR", help="an official shard folder (fineweb_{val,train}_NNNNNN.bin)")
    p.add_argument(
        "--tokenizer",
        required=True,
        metavar="T",
        help="the tokenizer: directory, tokenizer.pgt or SentencePiece .model",
    )
    add_corpus_args(p, default=None, corpus_help="the corpus the folder was exported from (docs_selected.jsonl)")
    p.set_defaults(max_docs=None)
    p.add_argument("--train", action="store_true", help="also add sidecars for the train split (default: val only)")
    p.add_argument("--workers", type=int, metavar="N", default=default_threads(), help="encoder processes")
    p.add_argument("--force", action="store_true", help="redo sidecars this command added before")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add_command(sub, "export", cmd_export)
    p.add_argument("directory", metavar="SHARD_DIR", help="a pgolf shard folder (holding manifest.json)")
    p.add_argument("--for", dest="target", required=True, choices=list(TARGETS), help="the script that will read it")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (DATA_PATH of the script)")
    add_corpus_args(
        p,
        default=None,
        corpus_help="for caseops-record: the corpus the shards were made from, to compute the records' sidecar "
        "(default: the source the manifest records)",
        max_docs=False,
    )
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out (never other files)")

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
    a shard, the last of a split shorter), byte sidecars OUT/bytes/<name>_{val,train}_NNNNNN.bin (UTF-8 bytes of the
    original text per token, for exact bits per byte; in bytes/ so that no official glob reads them as tokens), a copy
    of the tokenizer and manifest.json, written last. The first --val-docs documents are the validation split, the
    rest train. Output is byte-identical for any --workers.
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
    """check a shard directory against its manifest (and the corpus), or an official folder as far as it can be

    Check every claim of DIR/manifest.json: file list, tokenizer sha256, every header (magic, version, count against
    size) and sha256, sidecar counts, the official cut, token ids, BOS at every document and sidecar sums. With
    --corpus also each document's sidecar sum against its UTF-8 length, the document count, the corpus sha256, and
    every document re-encoded against its stored tokens and byte counts (--sample-docs N: N a split); without it, a
    decode round trip on a sample of documents. A folder without a manifest (an official one) gets what can be
    checked: headers and sizes, the cut, sidecars parallel to their shards, and with --tokenizer the id range, BOS and
    the sidecars' 0 on BOS (with pgolf's bytes/sidecars.json every claim it makes); notes say what could not be
    checked. Lists every failure with file, offset, expected and found; exits 1 when any check fails.
    """
    corpus = open_corpus(args.corpus, text_field=args.text_field) if args.corpus else None
    tokenizer = interop.artifact_bytes(args.tokenizer) if args.tokenizer else None
    report = verify(args.directory, corpus=corpus, sample_docs=args.sample_docs, tokenizer=tokenizer)
    print(report.format())
    return 0 if report.ok else 1


def cmd_sidecars(args: argparse.Namespace) -> int:
    """add exact byte sidecars to an official shard folder, once re-encoding the corpus reproduces its tokens

    Re-encode the corpus DIR was exported from (docs_selected.jsonl for the challenge's folders) with --tokenizer, in
    parallel as pgolf-data shard does, check that every token equals the folder's (refused otherwise, naming the first
    differing document, token and file offset, with nothing written), and write each token shard's exact sidecar as
    DIR/bytes/<shard name>, then DIR/bytes/sidecars.json (last), which binds the folder to the tokenizer. The folder's
    own files are not touched, so official scripts read it as before; pgolf_model.train and evaluate then score it
    with both numbers (val_bpb exact, val_bpb_official).
    """
    if not args.corpus:
        raise ValueError("--corpus is required: the documents the folder was exported from, in order")
    data = interop.artifact_bytes(args.tokenizer)
    corpus = open_corpus(args.corpus, text_field=args.text_field)
    index = add_sidecars(
        args.directory, data, corpus, train=args.train, workers=args.workers, force=args.force,
        progress=not args.quiet, log=lambda m: print(m, file=sys.stderr),
    )  # fmt: skip
    for split, entry in index.splits.items():
        print(f"{split:<5} {entry.docs:>12,} docs {entry.tokens:>15,} tokens {entry.bytes:>15,} bytes: sidecars match")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """write a pgolf shard folder as the folder an official script reads as it is, and the env vars to run it

    --for baseline: the token shards as fineweb_{train,val}_NNNNNN.bin (hard links; copies across filesystems), no
    sidecars (the baseline's unfiltered globs would read them as tokens) and the tokenizer as fineweb_<V>_bpe.model.
    --for caseops-record: the same shards, fineweb_val_bytes_NNNNNN.bin beside them with the CaseOps records' own
    byte counts (computed from --corpus, byte-identical to the records' export; pgolf's exact sidecar keeps whitespace
    SentencePiece strips at document ends, the records' does not: the difference is printed) and the tokenizer as
    fineweb_<V>_bpe_lossless_caps_caseops_v1_reserved.model. Prints DATA_PATH, TOKENIZER_PATH and VOCAB_SIZE.
    """
    corpus = None
    if TARGETS[args.target].record_sidecars:
        source = args.corpus or Manifest.load(args.directory).corpus.get("source", {}).get("source")
        if not source:
            raise ValueError("--corpus is required: the manifest records no corpus source")
        corpus = open_corpus(source, text_field=args.text_field)
    result = export_folder(
        args.directory, args.target, args.out, corpus=corpus, force=args.force, log=lambda m: print(m, file=sys.stderr)
    )
    if result.sidecar_diff is not None:
        d = result.sidecar_diff
        print(
            f"records' sidecar: differs from pgolf's exact one in {d['docs']:,} documents ({d['tokens']:,} tokens), "
            f"by {d['bytes']:,} of {d['total_bytes']:,} bytes (whitespace SentencePiece strips at document ends)",
            file=sys.stderr,
        )
    print(result.command())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """show a shard's or sidecar's header, token count, first tokens decoded, byte totals

    Describe FILE: a token shard (header, token count, id range, documents, first tokens as ids, pieces and text), a
    byte sidecar (header, byte totals), or a shard directory / manifest.json (a summary).
    """
    tok = artifact.load(args.tokenizer) if args.tokenizer else None
    for line in describe(args.path, tokenizer=tok, count=args.tokens):
        print(line)
    return 0
