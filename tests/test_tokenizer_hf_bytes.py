"""The byte-level BPE (``hf-bpe``) and pure-byte (``bytes``) kinds, checked against independent references."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers

from pgolf_data.tokenizer import SpecError, TokenizerError, TokenizerSpec
from pgolf_data.tokenizer.artifact import from_artifact, load, save, to_artifact
from pgolf_data.tokenizer.hf_bpe import HFByteLevelBPETokenizer
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.training import train

REPO = Path(__file__).resolve().parents[1]
HF_SPEC = REPO / "tokenizers" / "hf_bpe1024.toml"
BYTES_SPEC = REPO / "tokenizers" / "bytes260.toml"
N_TRAIN = 300  # documents the BPE is trained on: enough for 1,024 ids, small enough to train in well under a second
TRICKY = [
    "",
    "▁",
    "▁▁a ▁b",
    "\x00",
    "a\x00b",
    "😀👩‍👩‍👧🏳️‍🌈",
    "e\u0301 \u0301\u0301",
    "<s>x</s><pad><unk>",
    "  leading and trailing  ",
    "\r\n\t\x0b\x0c",
    "ﬁ Ⅸ ½ Å",  # NFKC would change these
    "日本語のテキスト",
    "\uffff\U0010ffff",
]

# Arbitrary Unicode (no lone surrogates: they are not encodable text), with the known troublemakers mixed in.
texts = st.lists(st.one_of(st.text(max_size=24), st.sampled_from(TRICKY)), max_size=12).map("".join)


def gpt2_byte_map() -> dict[str, int]:
    """Byte-level symbol -> byte, written from GPT-2's definition: bytes outside the three printable Latin-1
    ranges are shifted to U+0100 onwards in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    shifted = iter(range(0x100, 0x200))
    return {(chr(b) if b in keep else chr(next(shifted))): b for b in range(256)}


def reference_bpe(texts: list[str], vocab_size: int, min_frequency: int) -> HFTokenizer:
    """A byte-level BPE trained directly with the ``tokenizers`` library, specials at ids 0..3."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


@pytest.fixture(scope="module")
def hf_spec() -> TokenizerSpec:
    return TokenizerSpec.load(HF_SPEC)


@pytest.fixture(scope="module")
def train_texts(dev_sample) -> list[str]:
    return dev_sample[:N_TRAIN]


@pytest.fixture(scope="module")
def hf(hf_spec, train_texts) -> HFByteLevelBPETokenizer:
    tok, report = train(hf_spec, train_texts)
    assert report["vocab_size"] == 1024 and report["lossless"]
    return tok


@pytest.fixture(scope="module")
def reference(hf_spec, train_texts) -> HFTokenizer:
    return reference_bpe(train_texts, hf_spec.vocab_size, hf_spec.options["min_frequency"])


@pytest.fixture(scope="module")
def byte_tok() -> ByteTokenizer:
    tok, _ = train(TokenizerSpec.load(BYTES_SPEC), ["any text"])
    return tok


# ---- round trips and byte counts on arbitrary Unicode


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_hf_roundtrip_and_byte_counts(hf, text):
    ids, counts = hf.encode_with_bytes([text])[0]
    assert ids.dtype == np.int32 and counts.dtype == np.int32 and len(ids) == len(counts)
    assert hf.decode(ids) == text
    assert int(counts.sum()) == len(text.encode("utf-8"))
    assert (ids >= 4).all() and (counts >= 1).all(), "text never yields a special id"


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_bytes_ids_are_utf8_plus_4(byte_tok, text):
    ids, counts = byte_tok.encode_with_bytes([text])[0]
    assert ids.tolist() == [b + 4 for b in text.encode("utf-8")]
    assert counts.tolist() == [1] * len(ids)
    assert byte_tok.decode(ids) == text
    assert byte_tok.decode([1, *ids.tolist(), 2, 0]) == text, "specials decode to nothing"


def test_literal_special_strings_are_plain_text(hf, reference):
    text = "<s>strike</s> <pad><unk>"
    ids = hf.encode(text)
    assert hf.decode(ids) == text and not np.isin(ids, [0, 1, 2, 3]).any()
    # What training with HF special tokens would have done instead: a literal <s> becomes BOS and is lost.
    assert 1 in reference.encode(text).ids


# ---- against the tokenizers library trained directly


def test_ids_match_tokenizers_trained_directly(hf, reference, dev_sample):
    docs = dev_sample[N_TRAIN : N_TRAIN + 400] + TRICKY[:3] + TRICKY[4:7] + TRICKY[8:]
    expected = [e.ids for e in reference.encode_batch(docs, add_special_tokens=False)]
    assert [ids.tolist() for ids in hf.encode_batch(docs)] == expected
    assert hf.vocab_size == reference.get_vocab_size()


def test_byte_counts_are_the_reference_pieces_bytes(hf, reference, dev_sample):
    byte_of = gpt2_byte_map()
    for doc in dev_sample[N_TRAIN : N_TRAIN + 200]:
        pieces = reference.encode(doc, add_special_tokens=False).tokens
        piece_bytes = [bytes(byte_of[c] for c in p) for p in pieces]
        ids, counts = hf.encode_with_bytes([doc])[0]
        assert b"".join(piece_bytes) == doc.encode("utf-8")
        assert counts.tolist() == [len(b) for b in piece_bytes]
        assert [hf.token_bytes(i) for i in ids.tolist()] == piece_bytes


def test_every_dev_doc_round_trips_with_exact_byte_counts(hf, byte_tok, dev_docs):
    lengths = np.array([len(d.encode("utf-8")) for d in dev_docs])
    for tok in (hf, byte_tok):
        encoded = tok.encode_with_bytes(dev_docs)
        sums = np.array([int(counts.sum()) for _, counts in encoded])
        bad = np.flatnonzero(sums != lengths)
        assert bad.size == 0, f"{tok.kind}: byte counts wrong for docs {bad[:10].tolist()}"
        wrong = [i for i, (d, (ids, _)) in enumerate(zip(dev_docs, encoded)) if tok.decode(ids) != d]
        assert wrong == [], f"{tok.kind}: docs {wrong[:10]} do not round trip"


# ---- compact artifact


def test_payload_round_trip_gives_identical_ids(hf, dev_sample, tmp_path):
    data = to_artifact(hf)
    back = from_artifact(data)
    assert isinstance(back, HFByteLevelBPETokenizer) and back.vocab_size == hf.vocab_size
    docs = dev_sample[:500] + TRICKY
    for a, b in zip(hf.encode_batch(docs), back.encode_batch(docs)):
        assert np.array_equal(a, b)
    assert to_artifact(back) == data
    assert len(data) < 4 * 1024, "1,024-id BPE merges should take a few KB"
    save(hf, tmp_path / "tok", {"note": "test"})
    assert to_artifact(load(tmp_path / "tok")) == data


def test_bytes_artifact_is_tiny_and_round_trips(byte_tok):
    data = to_artifact(byte_tok)
    back = from_artifact(data)
    assert isinstance(back, ByteTokenizer) and to_artifact(back) == data
    assert len(data) < 400
    assert back.encode("héllo\x00").tolist() == [b + 4 for b in "héllo\x00".encode()]


def test_merges_spelling_the_same_string_share_one_id():
    """Two merges may build the same string ('ab'+'c' and 'a'+'bc'); the trainer gives it one id, so must we."""
    spec = TokenizerSpec(name="dup", kind="hf-bpe", vocab_size=263)
    sym = {s: 4 + i for i, s in enumerate(sorted(gpt2_byte_map()))}
    ab, abc, bc = 260, 261, 262
    merges = [[sym["a"], sym["b"]], [ab, sym["c"]], [sym["b"], sym["c"]], [sym["a"], bc]]
    tok = HFByteLevelBPETokenizer(spec, np.array(merges))
    assert tok.vocab_size == 263
    assert tok.encode("abc").tolist() == [abc]
    assert tok.encode("bcd").tolist() == [bc, sym["d"]]
    assert from_artifact(to_artifact(tok)).encode_batch(["abc bc ab"])[0].tolist() == tok.encode("abc bc ab").tolist()


# ---- determinism


def test_training_is_deterministic_across_processes_and_threads(hf, hf_spec, train_texts, tmp_path):
    """Same text, same spec: byte-identical artifacts, whatever the hash seeds (new process) or thread count."""
    src = tmp_path / "texts.json"
    src.write_text(json.dumps(train_texts), encoding="utf-8")
    script = (
        "import hashlib, json, sys\n"
        "from pgolf_data.tokenizer import TokenizerSpec\n"
        "from pgolf_data.tokenizer.artifact import to_artifact\n"
        "from pgolf_data.tokenizer.training import train\n"
        "texts = json.load(open(sys.argv[1], encoding='utf-8'))\n"
        "tok, _ = train(TokenizerSpec.load(sys.argv[2]), texts, num_threads=int(sys.argv[3]))\n"
        "print(hashlib.sha256(to_artifact(tok)).hexdigest())\n"
    )
    expected = hashlib.sha256(to_artifact(hf)).hexdigest()
    for threads in ("1", "2"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads, "PYTHONPATH": str(REPO)}
        run = subprocess.run(
            [sys.executable, "-c", script, str(src), str(HF_SPEC), threads],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert run.stdout.strip() == expected, f"artifact differs with {threads} thread(s)"
    again, _ = train(hf_spec, train_texts, num_threads=1)
    assert to_artifact(again) == to_artifact(hf)


# ---- bad input


@pytest.mark.parametrize("vocab", [256, 1024])
def test_bytes_rejects_other_vocab_sizes(vocab):
    with pytest.raises(TokenizerError, match=rf"fixed vocabulary of 260 ids .* got vocab_size {vocab}"):
        train(TokenizerSpec(name="b", kind="bytes", vocab_size=vocab), ["text"])


def test_bytes_rejects_options():
    with pytest.raises(TokenizerError, match="takes no options"):
        train(TokenizerSpec(name="b", kind="bytes", vocab_size=260, options={"min_frequency": 2}), ["text"])


def test_hf_rejects_vocab_below_specials_plus_bytes():
    with pytest.raises(TokenizerError, match=r"vocab_size >= 260 .* got 259"):
        train(TokenizerSpec(name="h", kind="hf-bpe", vocab_size=259), ["text"])


@pytest.mark.parametrize(("vocab", "message"), [(65_537, "outside"), (100, "outside"), ("1024", "integer")])
def test_spec_rejects_bad_vocab(vocab, message):
    with pytest.raises(SpecError, match=message):
        TokenizerSpec(name="h", kind="hf-bpe", vocab_size=vocab)


def test_hf_vocab_larger_than_text_supports():
    with pytest.raises(TokenizerError, match="supports only"):
        train(TokenizerSpec(name="h", kind="hf-bpe", vocab_size=4096), ["a tiny corpus"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit_alphabet": 100}, "unknown hf-bpe option.*limit_alphabet"),
        ({"min_frequency": -1}, "min_frequency must be an integer >= 0, got -1"),
        ({"max_token_length": 0}, "max_token_length must be an integer >= 1, got 0"),
    ],
)
def test_hf_rejects_bad_options(options, message):
    with pytest.raises(TokenizerError, match=message):
        train(TokenizerSpec(name="h", kind="hf-bpe", vocab_size=300, options=options), ["text"])


def test_corrupt_payloads(hf_spec):
    with pytest.raises(TokenizerError, match="header says 3 merges but the blob has 8 bytes"):
        HFByteLevelBPETokenizer.from_payload(hf_spec, {"merges": 3}, bytes(8))
    with pytest.raises(TokenizerError, match="merge 0 joins ids 4 and 300"):
        HFByteLevelBPETokenizer.from_payload(hf_spec, {"merges": 1}, np.array([4, 300], "<u2").tobytes())
    with pytest.raises(TokenizerError, match="expected layout 'byte260'"):
        ByteTokenizer.from_payload(TokenizerSpec.load(BYTES_SPEC), {"layout": "other"}, b"")


def test_decode_and_piece_reject_unknown_ids(hf, byte_tok):
    with pytest.raises(TokenizerError, match=r"token id 1024 is outside the vocabulary \[0, 1024\)"):
        hf.decode([5, 1024])
    with pytest.raises(TokenizerError, match=r"token id -1 is outside the vocabulary \[0, 260\)"):
        byte_tok.decode([-1])
    for tok, bad in ((hf, 1024), (hf, -1), (byte_tok, 260), (byte_tok, -1)):
        with pytest.raises(TokenizerError, match=rf"token id {bad} is outside the vocabulary"):
            tok.piece(bad)
    with pytest.raises(TokenizerError, match=r"token id 1024 is outside the vocabulary"):
        hf.token_bytes(1024)
