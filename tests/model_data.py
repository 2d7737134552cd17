"""Shard directories for the pgolf_model tests, written here so they do not depend on the sharding pipeline.

Documents are encoded with the byte-level tokenizer (``pgolf_data.tokenizer.pure_bytes``): BOS, then one token per
UTF-8 byte, each accounting for one byte; BOS accounts for none. The folder is an official-format one with exact
sidecars in ``bytes/`` and their index (what ``pgolf-data sidecars`` leaves), bound to that tokenizer.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pgolf_data.shards import shard_filename, sidecar_name, write_shard
from pgolf_data.sidecars import write_index
from pgolf_data.tokenizer import artifact as tok_artifact
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.spec import TokenizerSpec


def byte_tokenizer() -> ByteTokenizer:
    return ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260))


def encode_stream(tok, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The shard stream of ``docs``: per document BOS + ids, and the matching byte counts."""
    ids, counts = [], []
    for doc_ids, doc_bytes in tok.encode_with_bytes(docs):
        ids += [np.array([tok.bos_id]), doc_ids]
        counts += [np.array([0]), doc_bytes]
    return np.concatenate(ids).astype(np.int64), np.concatenate(counts).astype(np.int64)


def write_split(
    directory: Path, split: str, tokens: np.ndarray, counts: np.ndarray, shards: int = 1, name: str = "test"
) -> None:
    (directory / "bytes").mkdir(parents=True, exist_ok=True)
    for i, (t, c) in enumerate(zip(np.array_split(tokens, shards), np.array_split(counts, shards))):
        write_shard(directory / shard_filename(name, split, i), t)
        write_shard(directory / sidecar_name(name, split, i), c)


def make_dataset(root: Path, train_docs: list[str], val_docs: list[str], train_shards: int = 2) -> tuple[Path, Path]:
    """``(data_dir, tokenizer_dir)`` with byte-tokenized train and val splits."""
    tok = byte_tokenizer()
    tok_dir = root / "tokenizer"
    if not tok_dir.exists():
        tok_artifact.save(tok, tok_dir, report={})
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_split(data, "train", *encode_stream(tok, train_docs), shards=train_shards)
    write_split(data, "val", *encode_stream(tok, val_docs))
    write_index(data, tok, tok_artifact.to_artifact(tok), {"source": "tests/model_data.py"}, ("val", "train"))
    return data, tok_dir


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the test machine's cores are shared, and oversubscribed torch threads stall each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Words for ``synthetic_docs``: common English words, so the byte stream looks like text.
_WORD_LIST = (
    "the of and to in is was for on that with as by at from his her it an be are this which or had not but have "
    "were they their one all been has more when there who would will also so its out up into only other time new "
    "some could these two may first then do any like my now over such our man me even most made after did many "
    "before must through back years where much your way well down should because each just those people how too "
    "little state good very make world still own see men work long get here between both life being under never"
)
WORDS = _WORD_LIST.split()


def synthetic_docs(n_docs: int, seed: int) -> list[str]:
    """``n_docs`` documents of pseudo-English from a 32-bit linear congruential generator: the same text on every
    machine and Python version, which the committed artifacts of ``tests/fixtures`` were trained and scored on."""
    state = seed

    def draw(k: int) -> int:
        nonlocal state
        state = (1664525 * state + 1013904223) % 2**32
        return (state >> 8) % k

    docs = []
    for _ in range(n_docs):
        word, sentences = draw(len(WORDS)), []
        for _ in range(2 + draw(5)):
            words = []
            for _ in range(4 + draw(9)):
                # Half of the time a word is followed by the next one in the list: something to learn past unigrams.
                word = (word + 1) % len(WORDS) if draw(2) else draw(len(WORDS))
                words.append(WORDS[word])
            sentences.append(" ".join(words).capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


def jsonl_corpus(path: Path, docs: list[str]) -> Path:
    """``docs`` written as a jsonl corpus file (one ``{"text": ...}`` object a line)."""
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


def interrupted_at(run_number: int, recipe, *args, **kwargs) -> None:
    """Call ``recipe(*args, **kwargs)`` with the ``run_number``-th training run (1-based) interrupted, as a user's
    Ctrl-C would: the recipe raises KeyboardInterrupt, and ``trainer.run`` is itself again afterwards."""
    from pgolf_model.training import trainer

    real_run, calls = trainer.run, []

    def interrupted(*a, **kw):
        calls.append(kw["out_dir"])
        if len(calls) == run_number:
            raise KeyboardInterrupt
        return real_run(*a, **kw)

    trainer.run = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            recipe(*args, **kwargs)
    finally:
        trainer.run = real_run


_TOLIST = torch.Tensor.tolist  # bound at import, before any test patches Tensor.tolist to count host syncs


def sdpa_per_document(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=False):
    """A stand-in for FlashAttention's ``flash_attn_varlen_func`` on CPU, eager only: (total, H, D) inputs, each
    document of ``cu_seqlens`` through causal SDPA on its own (grouped-query when k has fewer heads), zero-length
    documents skipped. It reads the bounds on the host where the CUDA kernel reads them on the device: through
    ``_TOLIST``, which a sync counter patching ``Tensor.tolist`` does not see."""
    assert causal and cu_seqlens_q is cu_seqlens_k and cu_seqlens_q.dtype == torch.int32
    bounds = _TOLIST(cu_seqlens_q)
    spans = list(itertools.pairwise(bounds))
    assert bounds[0] == 0 and bounds[-1] == q.size(0) and max(b - a for a, b in spans) <= max_seqlen_q
    gqa = k.size(1) != q.size(1)
    docs = [
        F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v)), is_causal=True, enable_gqa=gqa)
        for a, b in spans
        if b > a
    ]
    return torch.cat(docs, dim=1).transpose(0, 1)
