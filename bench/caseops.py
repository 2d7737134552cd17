"""CaseOps vs plain lossless SentencePiece, side by side: tokens per original byte and encode throughput.

For each vocabulary size, trains ``tokenizers/sp{V}_lossless.toml`` and ``tokenizers/caseops_sp{V}.toml`` on the
same documents (all but the first ``--eval-docs``), then on the held-out first documents measures tokens per
original byte and times, in one run, plain encode, the bare transform, and CaseOps encode (transform + BPE).
The issue's budget: the transform may cost at most 25% of plain encode time. "op share" is the share of CaseOps
tokens that are operators, "▁+op share" the share that are a lone space piece right before an operator.

    python bench/caseops.py [--corpus PATH] [--vocab 1024 8192] [--eval-docs 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pgolf_data.corpus import open_corpus
from pgolf_data.tokenizer import TokenizerSpec, training
from pgolf_data.tokenizer.caseops import encode_case

REPO = Path(__file__).resolve().parents[1]
DEV_CORPUS = REPO.parent / "shared" / "data" / "web_dev.jsonl.zst"


def best_seconds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` runs of each function, run in turn so that machine load hits all of them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def compare(vocab: int, train_docs: list[str], eval_docs: list[str], repeats: int) -> dict:
    plain_spec = TokenizerSpec.load(REPO / "tokenizers" / f"sp{vocab}_lossless.toml")
    caseops_spec = TokenizerSpec.load(REPO / "tokenizers" / f"caseops_sp{vocab}.toml")
    plain, _ = training.train(plain_spec, train_docs)
    caseops, _ = training.train(caseops_spec, train_docs)
    n_bytes = sum(len(d.encode("utf-8")) for d in eval_docs)

    plain_tokens = sum(len(ids) for ids in plain.encode_batch(eval_docs))
    caseops_ids = caseops.encode_batch(eval_docs)
    caseops_tokens = sum(len(ids) for ids in caseops_ids)
    ops = np.array(list(caseops.operator_ids.values()))
    is_op = [np.isin(ids, ops) for ids in caseops_ids]
    operator_tokens = sum(int(m.sum()) for m in is_op)
    # The record's layout puts the operator between a space and its word, so "▁The" becomes "▁", TITLE, "the".
    space = caseops.inner.encode(" ")[0]
    space_before_op = sum(int(((ids[:-1] == space) & m[1:]).sum()) for ids, m in zip(caseops_ids, is_op))

    t = best_seconds(
        {
            "plain": lambda: plain.encode_batch(eval_docs),
            "transform": lambda: [encode_case(d) for d in eval_docs],
            "caseops": lambda: caseops.encode_batch(eval_docs),
        },
        repeats,
    )
    t_plain, t_transform, t_caseops = t["plain"], t["transform"], t["caseops"]
    return {
        "vocab": vocab,
        "plain_tpb": plain_tokens / n_bytes,
        "caseops_tpb": caseops_tokens / n_bytes,
        "operator_share": operator_tokens / caseops_tokens,
        "space_share": space_before_op / caseops_tokens,
        "plain_mbps": n_bytes / 1e6 / t_plain,
        "transform_mbps": n_bytes / 1e6 / t_transform,
        "caseops_mbps": n_bytes / 1e6 / t_caseops,
        "transform_vs_plain": t_transform / t_plain,
        "transform_share": t_transform / t_caseops,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(DEV_CORPUS) if DEV_CORPUS.is_file() else "default")
    parser.add_argument("--vocab", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--eval-docs", type=int, default=2000, help="held-out first documents to measure on")
    parser.add_argument("--repeats", type=int, default=5, help="timing runs per measurement (the fastest counts)")
    args = parser.parse_args(argv)

    docs = list(open_corpus(args.corpus))
    eval_docs, train_docs = docs[: args.eval_docs], docs[args.eval_docs :]
    if not train_docs:
        parser.error(f"the corpus has {len(docs)} documents, not more than --eval-docs {args.eval_docs}")
    mb = sum(len(d.encode("utf-8")) for d in eval_docs) / 1e6
    print(f"corpus {args.corpus}: train on {len(train_docs)} docs, measure on the first {len(eval_docs)} ({mb:.1f} MB)")
    print(
        f"{'vocab':>6} | {'plain tok/B':>11} | {'caseops tok/B':>13} | {'caseops/plain':>13} | {'op share':>8} | "
        f"{'▁+op share':>10} | "
        f"{'plain MB/s':>10} | {'transform MB/s':>14} | {'caseops MB/s':>12} | {'transform/plain':>15} | "
        f"{'transform share':>15}"
    )
    for vocab in args.vocab:
        r = compare(vocab, train_docs, eval_docs, args.repeats)
        print(
            f"{vocab:>6} | {r['plain_tpb']:>11.4f} | {r['caseops_tpb']:>13.4f} | "
            f"{r['caseops_tpb'] / r['plain_tpb']:>13.4f} | {r['operator_share']:>8.2%} | {r['space_share']:>10.2%} | "
            f"{r['plain_mbps']:>10.2f} | "
            f"{r['transform_mbps']:>14.1f} | {r['caseops_mbps']:>12.2f} | {r['transform_vs_plain']:>15.1%} | "
            f"{r['transform_share']:>15.1%}"
        )


if __name__ == "__main__":
    main()
