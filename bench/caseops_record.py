"""Record-exact CaseOps on a real corpus, with a CaseOps record's ``.model``: equality, sidecar differences, speed.

1. Equality, on every document: the tokens ``pgolf-data shard`` writes (``encode_documents``, the workers' code path)
   with the imported model against an independent re-implementation of the record's export pipeline
   (``tests/caseops_reference.py``); the record-style sidecar (``record_encode_with_bytes``) against the
   reference's surface state machine.
2. The two sidecar definitions side by side: documents, tokens and bytes where pgolf's exact sidecar (every original
   byte) and the record's (whitespace SentencePiece strips at either end left out) differ.
3. Speed, measured side by side in one run on the same documents: the record's transform against pgolf's, bare and
   as the whole CaseOps encode in front of the same BPE (the given model).

    git -C MIRROR show HEAD:records/.../fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model > /tmp/rec.model
    python bench/caseops_record.py --model /tmp/rec.model [--corpus PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import sentencepiece as spm

from pgolf_data.corpus import open_corpus
from pgolf_data.sharding import encode_documents
from pgolf_data.tokenizer import interop
from pgolf_data.tokenizer.caseops import PGOLF, RECORD, transform
from pgolf_data.tokenizer.caseops_bpe import CaseOpsSentencePieceTokenizer
from pgolf_data.tokenizer.record_sidecar import record_encode_with_bytes
from pgolf_data.tokenizer.spec import TokenizerSpec

REPO = Path(__file__).resolve().parents[1]
DEV_CORPUS = REPO.parent / "shared" / "data" / "web_dev.jsonl.zst"
sys.path.insert(0, str(REPO / "tests"))  # the reference lives with the tests, which check the library against it
import caseops_reference as reference  # noqa: E402
from caseops import best_seconds  # noqa: E402  (bench/caseops.py: run as a script, bench/ is on sys.path)


def with_transform(tok: CaseOpsSentencePieceTokenizer, name: str) -> CaseOpsSentencePieceTokenizer:
    options = {**tok.spec.options, "case_transform": name}
    return CaseOpsSentencePieceTokenizer(TokenizerSpec(**{**tok.spec.to_dict(), "options": options}), tok.inner)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a CaseOps record's SentencePiece .model")
    parser.add_argument("--corpus", default=str(DEV_CORPUS) if DEV_CORPUS.is_file() else "default")
    parser.add_argument("--repeats", type=int, default=3, help="timing runs per measurement (the fastest counts)")
    args = parser.parse_args(argv)

    data = Path(args.model).read_bytes()
    tok = interop.import_tokenizer(data, name="record", where=args.model)
    assert isinstance(tok, CaseOpsSentencePieceTokenizer) and tok.case.name == RECORD, tok
    assert interop.export_model_proto(tok) == data
    docs = list(open_corpus(args.corpus))
    sizes = np.array([len(d.encode("utf-8")) for d in docs], dtype=np.int64)
    print(f"corpus {args.corpus}: {len(docs):,} docs, {sizes.sum() / 1e6:.1f} MB; model {args.model}")

    # 1. equality with the reference pipeline
    sp = spm.SentencePieceProcessor(model_proto=data)
    ref_tokens, ref_sidecar = reference.export(sp, docs)
    ours = encode_documents(tok, docs, sizes, 0, True)
    record = record_encode_with_bytes(tok, docs)
    record_sidecar = np.concatenate([part for _, c in record for part in ([0], c)]).astype(np.uint16)
    print(f"tokens (pgolf-data shard)     == reference export: {np.array_equal(ours.tokens, ref_tokens)}")
    print(f"record sidecar (library)      == reference export: {np.array_equal(record_sidecar, ref_sidecar)}")
    print(f"{len(ref_tokens):,} tokens; transform == reference on every doc: "
          f"{all(tok.case.encode(d) == reference.encode(d) for d in docs)}")  # fmt: skip

    # 2. pgolf's exact sidecar against the record's
    starts = np.concatenate([[0], np.cumsum(ours.doc_tokens)[:-1]])
    exact_sums = np.add.reduceat(ours.counts.astype(np.int64), starts)
    record_sums = np.add.reduceat(record_sidecar.astype(np.int64), starts)
    per_token = ours.counts != record_sidecar
    docs_any = np.unique(np.searchsorted(starts, np.flatnonzero(per_token), side="right") - 1)
    docs_sum = np.flatnonzero(exact_sums != record_sums)
    edges = np.array([reference.edge_bytes(docs[i]) for i in docs_sum], dtype=np.int64)
    at_ends = int(((exact_sums - record_sums)[docs_sum] <= edges).sum())
    print(f"pgolf sidecar sums == original bytes on every doc: {np.array_equal(exact_sums, sizes)}")
    print(
        f"sidecars differ: {len(docs_any):,} docs ({per_token.sum():,} tokens); totals differ in {len(docs_sum):,} "
        f"docs by {int((exact_sums - record_sums).sum()):,} bytes of {int(sizes.sum()):,} "
        f"({(exact_sums - record_sums).sum() / sizes.sum():.5%}); in {at_ends} of them the missing bytes fit in the "
        "whitespace/control/format/U+FFFD runs at the document's ends"
    )

    # 3. speed, side by side
    pgolf_tok = with_transform(tok, PGOLF)
    t = best_seconds(
        {
            "transform pgolf": lambda: [transform(PGOLF).encode(d) for d in docs],
            "transform record": lambda: [transform(RECORD).encode(d) for d in docs],
            "caseops pgolf": lambda: pgolf_tok.encode_batch(docs),
            "caseops record": lambda: tok.encode_batch(docs),
        },
        args.repeats,
    )
    mb = sizes.sum() / 1e6
    print(f"{'':>16} | {'pgolf MB/s':>10} | {'record MB/s':>11} | {'record/pgolf time':>17}")
    for what in ("transform", "caseops"):
        a, b = t[f"{what} pgolf"], t[f"{what} record"]
        print(f"{what:>16} | {mb / a:>10.2f} | {mb / b:>11.2f} | {b / a:>17.3f}")


if __name__ == "__main__":
    main()
