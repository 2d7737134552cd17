"""SentencePiece BPE kind: official-spec parity with SentencePiece itself, lossless round trips (incl. a literal ▁),
exact original-byte counts, long-document handling, determinism and the compact artifact."""

from __future__ import annotations

import io
import re
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data.tokenizer import SpecError, TokenizerError, TokenizerSpec, sp_model
from pgolf_data.tokenizer.artifact import from_artifact, to_artifact
from pgolf_data.tokenizer.sentencepiece_bpe import SentencePieceTokenizer, split_long, training_sentences
from pgolf_data.tokenizer.training import train

SPECS = Path(__file__).resolve().parents[1] / "tokenizers"
LIMIT = 4192  # SentencePiece's default max_sentence_length

# Characters that stress SentencePiece: its meta symbol ▁, its unknown-char mark ▅, whitespace runs, control
# characters, piece-like literals, an emoji, a combining mark, NFKC-changed characters, zero-width space.
TRICKY = ["▁", "▁▁", "▅", " ", "  ", "\n", "\r\n", "\t", "\x00", "<s>", "</s>", "<unk>", "<0x41>", "😀", "e\u0301",
          "ﬁ", "①", "Ａ", "\u200b", "\u00a0", "日本"]  # fmt: skip
any_text = st.lists(
    st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(TRICKY), st.text(max_size=8)), max_size=40
).map("".join)


def load_spec(file: str, /, options: dict | None = None, **changes) -> TokenizerSpec:
    spec = TokenizerSpec.load(SPECS / f"{file}.toml")
    return spec.with_overrides(options={**spec.options, **(options or {})}, **changes)


@pytest.fixture(scope="module")
def lossless(dev_sample) -> SentencePieceTokenizer:
    return train(load_spec("sp1024_lossless"), dev_sample)[0]


@pytest.fixture(scope="module")
def official(dev_sample):
    return train(load_spec("sp1024"), dev_sample)


def spm_processor(tok: SentencePieceTokenizer) -> spm.SentencePieceProcessor:
    return _processor(tok.model_proto())


@lru_cache(maxsize=8)
def _processor(model: bytes) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=model)


def piece_bytes(sp: spm.SentencePieceProcessor, token_id: int) -> bytes:
    """The original bytes a lossless piece spells, from its printable form (independent of the id tables)."""
    piece = sp.id_to_piece(token_id)
    if sp.is_byte(token_id):
        assert re.fullmatch(r"<0x[0-9A-F]{2}>", piece)
        return bytes([int(piece[3:5], 16)])
    assert not sp.is_control(token_id) and not sp.is_unknown(token_id)
    return piece.replace("▁", " ").encode("utf-8")


def reference_lossy_counts(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """The documented rule, applied to the spans SentencePiece itself reports."""
    raw = text.encode("utf-8")
    spans = sp.encode(raw, out_type="offset_mapping", return_bytes=True)["offsets"]
    counts, prev = [], 0
    for _, end in spans:
        counts.append(end - prev)
        prev = end
    counts[-1] += len(raw) - prev
    return counts


# -- specs -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sp1024", "sp1024_lossless", "sp4096", "sp8192", "sp8192_lossless"])
def test_specs_load(name):
    spec = load_spec(name)
    assert spec.name == name and spec.kind == "sentencepiece" and spec.description
    assert spec.vocab_size == int(re.search(r"\d+", name).group())
    assert ("lossless" in name) == (spec.options.get("normalization_rule_name") == "identity")


# -- official spec = SentencePiece with the official options ---------------------------------------------------------


def test_sp1024_gives_the_same_ids_as_sentencepiece_trained_directly(official, dev_sample):
    tok, report = official
    # The challenge's trainer input (docs/challenge.md): each doc with NUL -> space, stripped, empties skipped.
    texts = [d.replace("\x00", " ").strip() for d in dev_sample]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in texts if t]),
        model_writer=out,
        model_type="bpe",
        vocab_size=1024,
        character_coverage=0.999,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=False,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    ref = spm.SentencePieceProcessor(model_proto=out.getvalue())
    assert ref.get_piece_size() == tok.vocab_size == 1024
    assert [ref.id_to_piece(i) for i in range(1024)] == [tok.piece(i) for i in range(1024)]
    want = ref.encode(dev_sample)
    got = tok.encode_batch(dev_sample)
    assert all(list(g) == w for g, w in zip(got, want))
    long_docs = [t for t in texts if len(t.encode()) > LIMIT]
    assert report["trainer"]["docs_dropped"] == len(long_docs) > 0
    assert report["trainer"]["bytes_dropped"] == sum(len(t.encode()) for t in long_docs)
    assert not tok.lossless and tok.special_ids == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}


# -- lossless round trips and byte counts ----------------------------------------------------------------------------


def check_lossless(tok: SentencePieceTokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    [(ids2, counts)] = tok.encode_with_bytes([text])
    assert list(ids2) == list(ids) and counts.dtype == np.int32 and len(counts) == len(ids)
    sp = spm_processor(tok)
    spelled = [piece_bytes(sp, int(i)) for i in ids]
    assert b"".join(spelled) == text.encode("utf-8")
    assert counts.tolist() == [len(b) for b in spelled]


@pytest.mark.parametrize("text", [*TRICKY, "", "a▁b", "▁start", "end▁", "x ▁ y", " lead", "trail  ", "1234567"])
def test_lossless_round_trips_tricky_text(lossless, text):
    assert lossless.lossless
    check_lossless(lossless, text)


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_lossless_round_trips_any_unicode(lossless, text):
    check_lossless(lossless, text)


def test_literal_meta_symbol_is_its_utf8_bytes(lossless):
    ids = lossless.encode("a▁b").tolist()
    assert [lossless.piece(i) for i in ids] == ["a", "<0xE2>", "<0x96>", "<0x81>", "b"]


def test_lossless_byte_counts_are_exact_on_dev_docs(lossless, dev_sample):
    encoded = lossless.encode_with_bytes(dev_sample)
    ids = lossless.encode_batch(dev_sample)
    sp = spm_processor(lossless)
    is_byte = np.array(sp.is_byte(list(range(lossless.vocab_size))))
    for text, (got_ids, counts), want_ids in zip(dev_sample, encoded, ids):
        assert np.array_equal(got_ids, want_ids)
        assert int(counts.sum()) == len(text.encode("utf-8"))
        assert lossless.decode(got_ids) == text
        # A piece that is not a byte counts its characters' bytes with ▁ as one space.
        pieces = [sp.id_to_piece(int(i)) for i in got_ids[~is_byte[got_ids]]]
        assert counts[~is_byte[got_ids]].tolist() == [len(p.replace("▁", " ").encode()) for p in pieces]
        assert (counts[is_byte[got_ids]] == 1).all()


# -- lossy byte counts -----------------------------------------------------------------------------------------------


def test_lossy_byte_counts_follow_sentencepiece_spans_on_dev_docs(official, dev_sample):
    tok = official[0]
    sp = spm_processor(tok)
    for text, (_, counts) in zip(dev_sample, tok.encode_with_bytes(dev_sample)):
        assert int(counts.sum()) == len(text.encode("utf-8"))
        assert counts.tolist() == reference_lossy_counts(sp, text)
        assert (counts >= 0).all()


@pytest.mark.parametrize("text", ["  a   b  ", "ﬁne ① Ａ", "日本語 \u200b\u200bz", "\x00a\tb\r\nc", "a▁b", "x\u0301y"])
def test_lossy_byte_counts_on_normalized_text(official, text):
    tok = official[0]
    [(_, counts)] = tok.encode_with_bytes([text])
    assert int(counts.sum()) == len(text.encode("utf-8"))
    assert counts.tolist() == reference_lossy_counts(spm_processor(tok), text)


@settings(max_examples=150, deadline=None)
@given(any_text)
def test_lossy_byte_counts_sum_exactly_on_any_unicode(official, text):
    tok = official[0]
    if len(tok.encode(text)) == 0 and text:
        with pytest.raises(TokenizerError, match="encode to no tokens"):
            tok.encode_with_bytes([text])
        return
    [(_, counts)] = tok.encode_with_bytes([text])
    assert int(counts.sum()) == len(text.encode("utf-8")) and (counts >= 0).all()


def test_unknown_pieces_without_byte_fallback_count_exactly(dev_sample):
    spec = load_spec("sp1024", name="sp1024_nofallback", options={"byte_fallback": False})
    tok = train(spec, dev_sample[:500])[0]
    texts = ["日本語のテキスト and 한국어 😀😀", "plain ascii", " ﬁ ✓ ∑ "]
    assert any(tok.special_ids["unk"] in tok.encode(t) for t in texts)
    sp = spm_processor(tok)
    for text, (_, counts) in zip(texts, tok.encode_with_bytes(texts)):
        assert counts.tolist() == reference_lossy_counts(sp, text)
        assert int(counts.sum()) == len(text.encode())


def test_whitespace_only_text_is_refused_by_a_lossy_tokenizer(official):
    tok = official[0]
    with pytest.raises(TokenizerError, match=r"text 1: 3 bytes.*no tokens"):
        tok.encode_with_bytes(["fine", "   "])


@pytest.mark.parametrize("fixture", ["lossless", "official"])
def test_empty_text_gives_empty_arrays(fixture, request):
    tok = request.getfixturevalue(fixture)
    tok = tok[0] if isinstance(tok, tuple) else tok
    [(ids, counts)] = tok.encode_with_bytes([""])
    assert ids.shape == counts.shape == (0,)
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""


def test_decode_refuses_ids_outside_the_vocabulary(lossless):
    with pytest.raises(TokenizerError, match="token id 1024 is outside"):
        lossless.decode([5, 1024])


# -- long documents --------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", " ", "\n", "é", "😀", " w"]), max_size=60).map("".join), st.integers(4, 30))
def test_split_long_covers_the_text_in_pieces_within_the_limit(text, limit):
    pieces = split_long(text, limit)
    assert "".join(pieces) == text
    assert all(0 < len(p.encode()) <= limit for p in pieces)


def reference_split_long(text: str, limit: int, level: int = 0) -> list[str]:
    """The greedy rule written on strings, recursively (split_long works on the UTF-8 bytes, iteratively)."""
    if len(text.encode()) <= limit:
        return [text] if text else []
    if level == 2:
        raw, out = text.encode(), []
        while raw:
            k = limit
            while k < len(raw) and raw[k] & 0xC0 == 0x80:
                k -= 1
            out.append(raw[:k].decode())
            raw = raw[k:]
        return out
    units = re.split("(?<=\n)", text) if level == 0 else re.split("(?= )", text)
    out, current = [], ""
    for unit in units:
        if current and len((current + unit).encode()) > limit:
            out.append(current)
            current = ""
        if len(unit.encode()) > limit:
            out += reference_split_long(unit, limit, level + 1)
        else:
            current += unit
    return [*out, current] if current else out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "bb", " ", "  ", "\n", "\n\n", "é", "😀", " w", "\r\n", "▁"]), max_size=80).map(
        "".join
    ),
    st.integers(4, 30),
)
def test_split_long_matches_the_reference_rule(text, limit):
    assert split_long(text, limit) == reference_split_long(text, limit)


def test_split_long_matches_the_reference_rule_on_dev_docs(dev_sample):
    for limit in (LIMIT, 300, 7):
        for text in dev_sample[:200]:
            assert split_long(text, limit) == reference_split_long(text, limit)


def test_split_long_prefers_line_ends_then_spaces_then_characters():
    assert split_long("aaaa\nbbbb\ncccc", 10) == ["aaaa\nbbbb\n", "cccc"]
    assert split_long("aaa bbb ccc", 8) == ["aaa bbb", " ccc"]
    assert split_long("x\n" + "aaa bbb ccc", 8) == ["x\n", "aaa bbb", " ccc"]
    assert split_long("éééé", 5) == ["éé", "éé"]
    assert split_long("short", 5) == ["short"]


def test_chunk_mode_trains_on_every_byte(lossless, dev_sample):
    _, report = train(load_spec("sp1024_lossless"), dev_sample[:300])
    stats = report["trainer"]
    long_docs = [d for d in dev_sample[:300] if len(d.encode()) > LIMIT]
    assert stats["docs_chunked"] == len(long_docs) > 0
    assert stats["bytes_trained"] == sum(len(d.encode()) for d in dev_sample[:300])
    assert stats["docs_dropped"] == stats["bytes_dropped"] == 0
    assert stats["sentences"] > stats["docs"]


@pytest.mark.parametrize("long_docs", ["chunk", "drop"])
def test_known_sizes_give_the_same_sentences_and_counts(dev_sample, long_docs):
    texts = dev_sample[:300]
    sizes = [len(t.encode()) for t in texts]
    assert training_sentences(texts, LIMIT, long_docs, sizes) == training_sentences(texts, LIMIT, long_docs)
    with pytest.raises(ValueError, match="299 sizes for 300 texts"):
        training_sentences(texts, LIMIT, long_docs, sizes[:-1])


def test_drop_mode_with_only_long_docs_is_an_error():
    with pytest.raises(TokenizerError, match="nothing is left to train on"):
        train(load_spec("sp1024"), ["word " * 1000])


# -- determinism and the compact artifact ----------------------------------------------------------------------------


def test_training_is_deterministic_across_runs_and_thread_counts(dev_sample):
    spec = load_spec("sp1024_lossless")
    a = train(spec, dev_sample[:400], num_threads=1)[0]
    b = train(spec, dev_sample[:400], num_threads=2)[0]
    assert a.model_proto() == b.model_proto()
    assert to_artifact(a) == to_artifact(b)


@pytest.mark.parametrize("fixture", ["lossless", "official"])
def test_artifact_round_trip_rebuilds_the_model_exactly(fixture, request, dev_sample):
    tok = request.getfixturevalue(fixture)
    tok = tok[0] if isinstance(tok, tuple) else tok
    data = to_artifact(tok)
    back = from_artifact(data)
    assert isinstance(back, SentencePieceTokenizer) and back.spec == tok.spec
    assert back.model_proto() == tok.model_proto()
    assert back.lossless == tok.lossless
    assert all(np.array_equal(a, b) for a, b in zip(tok.encode_batch(dev_sample), back.encode_batch(dev_sample)))
    assert len(data) * 4 <= len(tok.model_proto())


@pytest.fixture(scope="module")
def reloaded(lossless, official):
    return [(tok, from_artifact(to_artifact(tok))) for tok in (lossless, official[0])]


@settings(max_examples=100, deadline=None)
@given(any_text)
def test_artifact_round_trip_encodes_any_text_identically(reloaded, text):
    for tok, back in reloaded:
        assert np.array_equal(back.encode(text), tok.encode(text))
        assert back.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_official_payload_leaves_out_the_normalization_table(official):
    tok = official[0]
    header, blob = tok.payload()
    assert set(header["charsmaps"]) == {"3"} and len(blob) < 10_000
    header["charsmaps"]["3"] = "0" * 64
    with pytest.raises(TokenizerError, match="'nmt_nfkc' normalization table with sha256 0000"):
        SentencePieceTokenizer.from_payload(tok.spec, header, blob)


def test_corrupt_payloads_are_refused(lossless):
    header, blob = lossless.payload()
    with pytest.raises(TokenizerError, match="truncated"):
        SentencePieceTokenizer.from_payload(lossless.spec, header, blob[:-9])
    with pytest.raises(TokenizerError, match="trailing bytes"):
        SentencePieceTokenizer.from_payload(lossless.spec, header, blob + b"\0")
    with pytest.raises(TokenizerError, match="lacks a valid field"):
        SentencePieceTokenizer.from_payload(lossless.spec, {}, blob)


def test_payloads_with_bad_or_cyclic_parts_are_refused(lossless):
    header, blob = lossless.payload()
    n, template = header["pieces"], int.from_bytes(blob[:4], "little")
    codes = blob[4 + template : 4 + template + n]
    first_pair = next(i for i, c in enumerate(codes) if c >> 4 == sp_model.FORM_PAIR)
    lefts = 4 + template + n  # the first pair's left part, a uint16

    def with_first_left(part: int) -> bytes:
        return blob[:lefts] + part.to_bytes(2, "little") + blob[lefts + 2 :]

    with pytest.raises(TokenizerError, match=f"piece {first_pair} refers to bad parts {n}, "):
        SentencePieceTokenizer.from_payload(lossless.spec, header, with_first_left(n))
    with pytest.raises(TokenizerError, match=f"piece {first_pair} refers to bad parts {first_pair}, "):
        SentencePieceTokenizer.from_payload(lossless.spec, header, with_first_left(first_pair))  # itself: a cycle


def test_compact_encoding_survives_unusual_scores_and_pieces(lossless):
    pieces, rest = sp_model.split_model(lossless.model_proto())
    pieces[300] = sp_model.Piece(pieces[300].text, 0.5, pieces[300].type)
    pieces.append(sp_model.Piece("zzz-not-splittable\u2603", -3.0, sp_model.USER_DEFINED))
    pieces.append(sp_model.Piece("\u2603" * 50, -4.0, None))  # 150 bytes: two-byte lengths in the piece's fields
    model = sp_model.join_model(pieces, rest)
    assert sp_model.split_model(model) == (pieces, rest)
    header, blob = sp_model.compact(model)
    assert sp_model.expand(header, blob) == model
    # The long piece's field, by hand: 0A len(0A len text 15 score), no type field (NORMAL); varint lengths 158, 150.
    body = b"\x0a\x96\x01" + "\u2603".encode() * 50 + b"\x15" + struct.pack("<f", -4.0)
    assert model.endswith(b"\x0a\x9e\x01" + body + b"".join(f.raw for f in rest))


@pytest.mark.parametrize("name", ["sp8192", "sp8192_lossless"])
def test_8192_artifact_is_at_most_a_quarter_of_the_model_file(name, dev_docs):
    tok = train(load_spec(name), dev_docs)[0]
    assert tok.vocab_size == 8192
    data = to_artifact(tok)
    assert len(data) * 4 <= len(tok.model_proto()), (len(data), len(tok.model_proto()))
    assert np.array_equal(from_artifact(data).encode(dev_docs[7]), tok.encode(dev_docs[7]))


# -- errors ----------------------------------------------------------------------------------------------------------


def test_vocab_larger_than_the_corpus_supports_is_an_error():
    with pytest.raises(TokenizerError, match=r"supports only .* fewer than vocab_size 8192"):
        train(load_spec("sp8192_lossless"), ["hello world"] * 3)
    spec = load_spec("sp8192_lossless", options={"hard_vocab_limit": True})
    with pytest.raises(TokenizerError, match=r"SentencePiece training failed: .*Vocabulary size too high"):
        train(spec, ["hello world"] * 3)


def test_vocab_above_uint16_is_a_spec_error():
    with pytest.raises(SpecError, match="65537 is outside"):
        load_spec("sp1024", vocab_size=65_537)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"vocab_size": 10}, SpecError, "vocab_size are set by pgolf"),
        ({"model_type": "unigram"}, SpecError, "BPE only"),
        ({"max_sentence_length": 2}, SpecError, "max_sentence_length 2"),
        ({"bos_id": -1}, SpecError, "bos_id"),
        ({"no_such_option": 1}, TokenizerError, "no_such_option"),
    ],
)
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        train(load_spec("sp1024", options=options), ["hello world, hello there"] * 50)


def test_set_threads_keeps_the_ids(lossless, dev_sample):
    want = lossless.encode_batch(dev_sample[:200])
    lossless.set_threads(1)
    try:
        got = lossless.encode_batch(dev_sample[:200])
    finally:
        lossless.set_threads(2)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
