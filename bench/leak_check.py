"""``submit --check``'s two leak checks side by side on the same shards: whole-document sha256 and sampled n-grams.

    python bench/leak_check.py [--corpus SRC] [--val-docs N] [--tokenizer bytes260|sp1024] [--repeats R]

Shards the corpus (the development corpus by default: 12,023 web documents, the first ``--val-docs`` for val) with
the tokenizer (byte-level by default; sp1024 is trained on the documents first), then times, alternating, the
sha256 of every document of both splits (``check._doc_hashes``) and the near-duplicate check's sketch and train
stream (``overlap.overlap``); the fastest of ``--repeats`` counts (the machine is shared). Prints the ratio and the
near-duplicates found (the sha256 check finds none of them: they are not byte-identical).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pgolf_data.corpus import open_corpus
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.shards import ShardSet
from pgolf_data.tokenizer import training
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.spec import TokenizerSpec, resolve_spec
from pgolf_model.submission import overlap
from pgolf_model.submission.check import _bytes_per_token, _doc_hashes

REPO = Path(__file__).resolve().parents[1]
DEV_CORPUS = REPO.parent / "shared" / "data" / "web_dev.jsonl.zst"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(DEV_CORPUS) if DEV_CORPUS.is_file() else "default")
    parser.add_argument("--val-docs", type=int, default=1000)
    parser.add_argument("--tokenizer", choices=("bytes260", "sp1024"), default="bytes260")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    docs = list(open_corpus(args.corpus))
    if args.tokenizer == "bytes260":
        tok = ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260))
    else:
        tok, _ = training.train(resolve_spec("sp1024"), docs[:2000], num_threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        write_shards(docs, tok, Path(tmp), ShardConfig(val_docs=args.val_docs, workers=1), progress=False)
        val, train = ShardSet.open(tmp, "val"), ShardSet.open(tmp, "train")
        n = overlap.ngram_length(_bytes_per_token(val, tok.bos_id, tok))
        fns = {
            "sha256 documents": lambda: (_doc_hashes(val, tok.bos_id), _doc_hashes(train, tok.bos_id)),
            f"sampled {n}-grams": lambda: overlap.overlap(val, train, tok.bos_id, n=n),
        }
        best = dict.fromkeys(fns, float("inf"))
        results = {}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                results[name] = fn()
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"{args.corpus}: {val.num_tokens:,} val and {train.num_tokens:,} train tokens ({args.tokenizer})")
        base = best["sha256 documents"]
        for name, seconds in best.items():
            rate = train.num_tokens / seconds / 1e6
            print(f"  {name:<18} {seconds:8.3f} s  {seconds / base:6.1f}x  {rate:6.1f} M train tokens/s")
        found = results[f"sampled {n}-grams"]
        near = found.near_duplicates()
        exact = set(results["sha256 documents"][0]) & set(results["sha256 documents"][1])
        print(f"  near-duplicates: {len(near)} of {len(found.share)} val documents; byte-identical: {len(exact)}")
        print(f"  shares >= 0.2: {int(np.sum(np.nan_to_num(found.share) >= 0.2))}")


if __name__ == "__main__":
    main()
