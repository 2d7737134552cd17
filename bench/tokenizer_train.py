"""pgolf's tokenizer training against the bare trainers, and encode throughput per kind, measured side by side.

    python bench/tokenizer_train.py [--corpus SRC] [--train-bytes N] [--repeats R]

"pgolf" = ``training.train(spec, docs)`` + building the compact artifact: sample selection, long-document chunking,
the trainer, canonicalization and the artifact. "direct" = the SentencePiece / ``tokenizers`` trainer called with the
same options on the same text (the already chunked sentences: the text pgolf trains on) and its own model written
out. Runs alternate and the fastest of ``--repeats`` counts, because this machine is noisy. Target: overhead <= 10%.
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
from pathlib import Path

import sentencepiece as spm
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers

from pgolf_data.corpus import open_corpus
from pgolf_data.tokenizer import artifact, training
from pgolf_data.tokenizer.hf_bpe import HFByteLevelBPETokenizer
from pgolf_data.tokenizer.sentencepiece_bpe import DEFAULT_MAX_SENTENCE_LENGTH, trainer_kwargs, training_sentences
from pgolf_data.tokenizer.spec import resolve_spec

DEV_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "web_dev.jsonl.zst"


def take_bytes(docs, limit: int) -> list[str]:
    out, n = [], 0
    for d in docs:
        if n >= limit:
            break
        out.append(d)
        n += len(d.encode())
    return out


def ours(spec, docs, threads):
    tok, _ = training.train(spec, docs, num_threads=threads)
    artifact.to_artifact(tok)
    return tok


def direct_sentencepiece(spec, docs, threads):
    kwargs = trainer_kwargs(spec)
    limit = kwargs.get("max_sentence_length", DEFAULT_MAX_SENTENCE_LENGTH)
    sentences, _ = training_sentences(docs, limit, spec.long_docs)
    out = io.BytesIO()

    def run():
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=out, num_threads=threads, minloglevel=2, **kwargs
        )
        return out.getvalue()

    return run


def direct_hf(spec, docs, threads):
    options = HFByteLevelBPETokenizer.trainer_options(spec)

    def run():
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size - 4, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **options
        )
        hf.train_from_iterator(docs, trainer, length=len(docs))
        return hf.to_str()

    return run


def best_of(fns: dict, repeats: int) -> dict[str, float]:
    times = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():  # alternate, so drift on the machine hits both sides alike
            start = time.perf_counter()
            fn()
            times[name] = min(times[name], time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(DEV_CORPUS) if DEV_CORPUS.is_file() else "default")
    parser.add_argument("--train-bytes", type=int, default=0, help="training text (default 0: the whole corpus)")
    parser.add_argument("--encode-bytes", type=int, default=4_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=training.default_threads())
    parser.add_argument("--specs", nargs="+", default=["sp1024", "sp1024_lossless", "sp8192_lossless", "hf_bpe1024"])
    args = parser.parse_args()

    corpus = list(open_corpus(args.corpus))
    docs = take_bytes(corpus, args.train_bytes) if args.train_bytes else corpus
    held_out = take_bytes(itertools.islice(corpus, len(docs), None), args.encode_bytes) or take_bytes(
        docs, args.encode_bytes
    )
    mb_train = sum(len(d.encode()) for d in docs) / 1e6
    mb_enc = sum(len(d.encode()) for d in held_out) / 1e6
    print(f"corpus {args.corpus}: training on {len(docs)} docs ({mb_train:.1f} MB), {args.threads} threads")
    print(f"{'spec':<18}{'pgolf s':>10}{'direct s':>10}{'ratio':>8}{'overhead':>10}")
    trained = {}
    for name in args.specs:
        spec = resolve_spec(name)
        direct = (direct_hf if spec.kind == "hf-bpe" else direct_sentencepiece)(spec, docs, args.threads)
        times = best_of(
            {"pgolf": lambda s=spec: trained.__setitem__(s.name, ours(s, docs, args.threads)), "direct": direct},
            args.repeats,
        )
        ratio = times["pgolf"] / times["direct"]
        print(f"{name:<18}{times['pgolf']:>10.2f}{times['direct']:>10.2f}{ratio:>8.3f}{100 * (ratio - 1):>9.1f}%")

    where = "held-out" if args.train_bytes else "training (the whole corpus was trained on)"
    print(f"\nencode throughput on {len(held_out)} {where} docs ({mb_enc:.1f} MB), all cores")
    print(f"{'tokenizer':<18}{'ids MB/s':>10}{'ids+bytes MB/s':>16}{'tokens/byte':>13}")
    for kind_spec in ("bytes260", "caseops_sp1024"):
        spec = resolve_spec(kind_spec)
        trained[spec.name] = training.train(spec, docs, num_threads=args.threads)[0]
    for name, tok in trained.items():
        times = best_of(
            {"ids": lambda t=tok: t.encode_batch(held_out), "bytes": lambda t=tok: t.encode_with_bytes(held_out)},
            args.repeats,
        )
        n_tokens = sum(len(ids) for ids in tok.encode_batch(held_out))
        print(
            f"{name:<18}{mb_enc / times['ids']:>10.2f}{mb_enc / times['bytes']:>16.2f}"
            f"{n_tokens / (mb_enc * 1e6):>13.4f}"
        )


if __name__ == "__main__":
    main()
