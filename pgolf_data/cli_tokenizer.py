"""``pgolf-data train-tokenizer``, ``tokenizer-info``, ``export-tokenizer`` and ``import-tokenizer``."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from tqdm import tqdm

from .cli_args import CORPUS_HELP, add_corpus_args
from .corpus import DEFAULT_SOURCE, open_corpus
from .shards import VOCAB_LIMIT
from .tokenizer import KINDS, artifact, interop, training
from .tokenizer.caseops import PGOLF, RECORD
from .tokenizer.metrics import measure
from .tokenizer.spec import MIN_VOCAB, available_specs, resolve_spec, spec_for_kind


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train a tokenizer from a spec and write its compact artifact",
        description=(
            "Train a tokenizer and write DIR/tokenizer.pgt (the compact artifact whose bytes the model budget counts) "
            "and DIR/report.json (what it was trained on). Specs are TOML files; by name they are looked up in the "
            f"repository's tokenizers/ folder (available: {', '.join(available_specs()) or 'none'}). A corpus larger "
            "than memory: the HF kinds train from the documents as they stream; for SentencePiece, which holds its "
            "input in memory, take --train-sample hash with a --train-bytes budget."
        ),
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--spec", help="spec name (e.g. sp1024) or path to a .toml spec")
    what.add_argument("--kind", choices=KINDS, help="train this kind from its default spec (default: sentencepiece)")
    p.add_argument(
        "--vocab",
        type=int,
        help=f"vocabulary size, at most {VOCAB_LIMIT} (overrides the spec's); at least {MIN_VOCAB}, and for "
        "SentencePiece kinds its 260 reserved pieces plus the characters of the text (345 on the default corpus): a "
        "smaller one is refused naming the least that works",
    )
    add_corpus_args(p)
    p.add_argument(
        "--val-docs",
        type=int,
        default=0,
        help="skip the first N documents (the validation split) so the tokenizer never sees them; default 0 trains "
        "from the first document, as the challenge's own tokenizers did",
    )
    p.add_argument("--train-docs", type=int, help="train on at most this many documents (overrides the spec)")
    p.add_argument("--train-bytes", type=int, help="train on whole documents until this many UTF-8 bytes")
    p.add_argument(
        "--train-sample",
        choices=("first", "hash"),
        default="first",
        help="which documents: first = the corpus' first ones up to --train-docs/--train-bytes (default, as the "
        "challenge); hash = a deterministic sample of the whole corpus within those budgets, drawn in one pass with "
        "memory for the sample only (the documents of lowest keyed hash; for a corpus larger than memory)",
    )
    p.add_argument("--train-seed", type=int, default=0, help="key of the hash sample (default 0)")
    p.add_argument("--threads", type=int, help="trainer threads (default: all cores)")
    p.add_argument(
        "--sample-docs", type=int, default=200, help="documents for the tokens-per-byte report (default 200)"
    )
    p.add_argument("--out", required=True, help="output directory (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_train_tokenizer)

    p = sub.add_parser(
        "tokenizer-info",
        help="describe a trained tokenizer: kind, vocab, artifact bytes, lossless, tokens per byte",
        description="Print a tokenizer's kind, vocabulary, artifact bytes, losslessness and, on a sample of documents, "
        "tokens per byte, exactness of the byte counts and of the decode round trip (CaseOps: operator share).",
    )
    p.add_argument("tokenizer", metavar="DIR", help="tokenizer directory (or its tokenizer.pgt file)")
    add_corpus_args(p, default=None, corpus_help=CORPUS_HELP + "; default: the training corpus")
    p.add_argument("--sample-docs", type=int, default=200, help="documents to measure on (default 200)")
    p.set_defaults(func=cmd_tokenizer_info)

    p = sub.add_parser(
        "export-tokenizer",
        help="write a tokenizer as the file other tools read: .model, tokenizer.json or pure-byte JSON",
        description=(
            "Write the tokenizer in DIR (a tokenizer or shard directory, or a tokenizer.pgt file) as the file the "
            "challenge's scripts and other tools read: SentencePiece and CaseOps-SentencePiece kinds as the "
            "SentencePiece .model (TOKENIZER_PATH of train_gpt.py; the exact model proto pgolf holds), HF kinds as "
            "tokenizer.json, the bytes kind as the challenge's pure-byte JSON. CaseOps files hold the BPE only: the "
            "case transform is applied to text before encoding."
        ),
    )
    p.add_argument("tokenizer", metavar="DIR", help="tokenizer directory, shard directory or tokenizer.pgt file")
    p.add_argument("--out", required=True, metavar="FILE", help="output file (*.model or *.json, by kind)")
    p.add_argument("--force", action="store_true", help="replace an existing tokenizer file (never any other file)")
    p.set_defaults(func=cmd_export_tokenizer)

    p = sub.add_parser(
        "import-tokenizer",
        help="make a pgolf tokenizer directory from a .model, tokenizer.json or pure-byte JSON file",
        description=(
            "Read a SentencePiece .model, an HF tokenizer.json (pgolf's hf-bpe layout) or the challenge's pure-byte "
            "JSON and write DIR/tokenizer.pgt and DIR/report.json, usable by 'pgolf-data shard' and "
            "pgolf_model.train. The format is told from the content. A .model with the four CaseOps operators as "
            "user-defined pieces (the CaseOps records' models, ids 4..7) becomes a CaseOps tokenizer with the "
            f"record's transform ({RECORD}); a SentencePiece model is kept byte for byte, so export-tokenizer "
            "writes the same file back."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the .model / tokenizer.json / pure-byte JSON file")
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (refused if it exists, unless --force)"
    )
    p.add_argument("--name", help="the spec name recorded for the tokenizer (default: the file name without suffix)")
    p.add_argument(
        "--case-transform",
        choices=[interop.AUTO, PGOLF, RECORD],
        default=interop.AUTO,
        help=f"the CaseOps alphabet of a CaseOps file (the file cannot say): default {interop.AUTO} = {RECORD} for a "
        f".model (the record's models), {PGOLF} for a tokenizer.json (only pgolf writes CaseOps ones)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing tokenizer directory (never another one)")
    p.set_defaults(func=cmd_import_tokenizer)


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    spec = resolve_spec(args.spec) if args.spec else spec_for_kind(args.kind or "sentencepiece", args.vocab)
    spec = spec.with_overrides(vocab_size=args.vocab, train_docs=args.train_docs, train_bytes=args.train_bytes)
    if args.val_docs < 0:
        raise ValueError(f"--val-docs must be >= 0, got {args.val_docs}")
    artifact.check_output_dir(Path(args.out), args.force)  # now, not after the training it would throw away
    corpus = open_corpus(args.corpus, text_field=args.text_field, max_docs=args.max_docs)
    print(f"training {spec.kind} tokenizer {spec.name!r} (vocab {spec.vocab_size}) on {args.corpus}", file=sys.stderr)
    docs = itertools.islice(corpus, args.val_docs, None)
    with tqdm(desc="reading corpus", unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar:
        tok, report = training.train(
            spec, docs, num_threads=args.threads, progress=bar.update, sample=args.train_sample, seed=args.train_seed
        )
    report["corpus"] = corpus.describe()
    report["skipped_val_docs"] = args.val_docs
    # Tokens per byte on held-out text when there is a validation split, else on the first training documents.
    sample_from = itertools.islice(corpus, 0, args.val_docs) if args.val_docs else corpus
    sample = list(itertools.islice(sample_from, args.sample_docs))
    report["sample"] = measure(tok, sample) if sample else None
    path = artifact.save(tok, args.out, report, force=args.force)
    print(format_info(artifact.load_report(path), path), file=sys.stderr)
    return 0


def cmd_tokenizer_info(args: argparse.Namespace) -> int:
    path = artifact.artifact_path(args.tokenizer)
    tok = artifact.load(path)
    report = artifact.load_report(path)
    source = args.corpus or report.get("corpus", {}).get("source", DEFAULT_SOURCE)
    corpus = open_corpus(source, text_field=args.text_field, max_docs=args.max_docs)
    sample = list(itertools.islice(corpus, args.sample_docs))
    info = {**report, "artifact": artifact.artifact_info(path.read_bytes()), "sample": measure(tok, sample)}
    info.setdefault("kind", tok.kind)
    info.setdefault("vocab_size", tok.vocab_size)
    info["lossless"] = tok.lossless
    info["sample"]["source"] = source
    print(format_info(info, path))
    return 0


def cmd_export_tokenizer(args: argparse.Namespace) -> int:
    tok, fmt, out = interop.write_export(args.tokenizer, args.out, force=args.force)
    print(f"wrote {out} ({fmt}, {out.stat().st_size:,} bytes)", file=sys.stderr)
    note = interop.export_note(tok)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_import_tokenizer(args: argparse.Namespace) -> int:
    _, path = interop.write_import(
        args.file, args.out, force=args.force, name=args.name, case_transform=args.case_transform
    )
    print(format_info({**artifact.load_report(path), "artifact": artifact.artifact_info(path.read_bytes())}, path))
    return 0


def format_info(info: dict, path) -> str:
    """The human-readable summary that train-tokenizer, tokenizer-info and import-tokenizer print."""
    art = info["artifact"]
    lines = [
        f"tokenizer      {path}",
        f"kind           {info['kind']}" + (f" (spec {info['spec']['name']})" if "spec" in info else ""),
        f"vocab          {info['vocab_size']:,}",
        f"artifact       {art['bytes']:,} bytes ({art['codec']}), sha256 {art['sha256'][:16]}…",
        "lossless       " + ("yes" if info["lossless"] else "no (normalizes text; byte counts refer to the original)"),
    ]
    if info.get("sample") is not None and "docs" in info.get("sample", {}):
        s = info["sample"]
        lines.append(
            f"sample         {s['docs']:,} docs, {s['bytes']:,} bytes -> {s['tokens']:,} tokens: "
            f"{s['tokens_per_byte']:.4f} tokens/byte ({s['bytes_per_token']:.3f} bytes/token), "
            f"{s['encode_mb_per_s']:.1f} MB/s"
        )
        lines.append(
            f"exactness      byte counts {'exact' if s['byte_counts_exact'] else 'WRONG'}; "
            f"decode round trip {s['roundtrip_docs']}/{s['docs']} docs"
        )
        if "operator_share" in s:
            lines.append(f"caseops        {s['operator_tokens']:,} operator tokens = {100 * s['operator_share']:.2f}%")
    for label, key in (("trained on", "trained_on"), ("trainer", "trainer")):
        if info.get(key):
            lines.append(f"{label:<15}" + ", ".join(f"{k} {_fmt(v)}" for k, v in info[key].items()))
    if info.get("imported_from"):
        src = info["imported_from"]
        lines.append(
            f"imported from  {src['file']} ({src['format']}, {src['bytes']:,} bytes, sha256 {src['sha256'][:16]}…)"
        )
    if info.get("caseops"):
        lines.append(
            f"case transform {info['caseops']['case_transform']}, operator ids {info['caseops']['operator_ids']}"
        )
    if "train_seconds" in info:
        lines.append(f"train time     {info['train_seconds']:.1f} s")
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
