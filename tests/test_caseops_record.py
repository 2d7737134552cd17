"""Record-exact CaseOps: the ``lossless_caps_caseops_v1`` transform, the ``caseops_v1_sp8192`` spec and the record's
sidecar, each against the independent re-implementation of the record's export in ``caseops_reference.py``."""

from __future__ import annotations

import json
from pathlib import Path

import caseops_reference as reference
import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data.corpus import open_corpus
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.shards import ShardSet
from pgolf_data.tokenizer import SpecError, TokenizerSpec, training
from pgolf_data.tokenizer.artifact import from_artifact, to_artifact
from pgolf_data.tokenizer.caseops import PGOLF, RECORD, transform
from pgolf_data.tokenizer.caseops_bpe import CaseOpsSentencePieceTokenizer
from pgolf_data.tokenizer.record_sidecar import acting_operator_offsets, record_encode_with_bytes
from pgolf_data.tokenizer.sentencepiece_bpe import trainer_kwargs

SPEC = Path(__file__).resolve().parents[1] / "tokenizers" / "caseops_v1_sp8192.toml"
RECORD_CASE = transform(RECORD)
T, A, C, E = reference.TITLE, reference.ALLCAPS, reference.CAPNEXT, reference.ESC

# Non-ASCII capitals, the operator characters, SentencePiece's ▁, NFKC-changed characters (ligature, fullwidth,
# circled, superscript, NBSP, ideographic space, Kelvin, zero-width space) and whitespace runs.
TRICKY = ["Ø", "É", "ÉCOLE", "Straße", "İ", "ΣΑΣ", "Жук", T, A, C, E, "▁", "▁▁", "ﬁ", "Ａ", "ＡＢ", "①", "²", "\u00a0",
          "\u3000", "\u212a", "\u200b", "  ", "   ", "\t\t", "\n\n", " \n ", "\r\n", "\x00", "I", "NASA", "iPhone",
          "McDonald", "x", "A1B", "<s>", "<0x41>"]  # fmt: skip
tricky_text = st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=6)), max_size=25).map("".join)
ascii_mix = st.text(alphabet=st.sampled_from("aAbBzZ \n.1" + T + E + "▁É"), max_size=40)


# -- the transform --------------------------------------------------------------------------------------------------

CASES = [
    ("The NASA Launch", f"{T}the {A}nasa {T}launch"),
    ("iPhone OpenAI I", f"i{C}phone {T}open{C}a{C}i {T}i"),
    ("ÉCOLE École", f"É{A}cole École"),  # non-ASCII capitals are not letters: they end the word and keep case
    ("Øst ØST øST", f"Øst Ø{A}st ø{A}st"),
    ("éB aÉb", f"é{T}b aÉb"),
    ("STRAßE Жук", f"{A}straß{T}e Жук"),
    (f"a{T}b {E}X", f"a{E}{T}b {E}{E}{T}x"),  # operator characters in the input are escaped
    ("▁Ab  \u3000 Ｃd", f"▁{T}ab  \u3000 Ｃd"),  # fullwidth letters are not ASCII; NFKC happens later
]


@pytest.mark.parametrize(("text", "encoded"), CASES)
def test_record_transform_cases(text, encoded):
    assert RECORD_CASE.encode(text) == encoded == reference.encode(text)
    assert RECORD_CASE.decode(encoded) == text == reference.decode(encoded)


def test_pgolf_transform_differs_only_on_non_ascii_letters():
    pgolf = transform(PGOLF)
    assert pgolf.encode("ÉCOLE Øst") == f"{A}école {T}øst" != RECORD_CASE.encode("ÉCOLE Øst")
    assert pgolf.encode("сWitch") == f"с{C}witch" != RECORD_CASE.encode("сWitch") == f"с{T}witch"  # Cyrillic с
    assert pgolf.encode("The NASA iPhone") == RECORD_CASE.encode("The NASA iPhone")
    assert pgolf.fingerprint != RECORD_CASE.fingerprint


@given(st.one_of(tricky_text, ascii_mix))
@settings(max_examples=500)
def test_record_transform_equals_the_reference_and_round_trips(text):
    encoded = RECORD_CASE.encode(text)
    assert encoded == reference.encode(text)
    assert RECORD_CASE.decode(encoded) == text
    assert reference.decode(encoded) == text  # the record's strict decoder accepts every stream we write


@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60))
@settings(max_examples=300)
def test_record_transform_round_trips_any_unicode(text):
    assert RECORD_CASE.decode(RECORD_CASE.encode(text)) == text
    assert RECORD_CASE.encode(text) == reference.encode(text)


def test_record_transform_on_dev_docs(dev_sample):
    """(bench/caseops_record.py checks every development document, with the record's own model.)"""
    pgolf = transform(PGOLF)
    differ = 0
    for doc in dev_sample:
        encoded = RECORD_CASE.encode(doc)
        assert encoded == reference.encode(doc), doc[:200]
        assert RECORD_CASE.decode(encoded) == doc
        if pgolf.encode(doc) != encoded:
            differ += 1
            # then some pgolf word with a capital holds a non-ASCII letter (a capital, or as in "сWitch" a lowercase)
            assert any(c in pgolf.letters and not c.isascii() for c in doc), doc[:200]
    assert differ < 0.05 * len(dev_sample)


@pytest.mark.parametrize(
    ("text", "acting"),
    [("", []), (f"{T}a", [0]), (f"{E}{T}", [0]), (f"{E}{E}{A}x", [0, 6]), (f"é{E}{E}{E}{C}", [2, 8])],
)
def test_acting_operator_offsets(text, acting):
    assert acting_operator_offsets(text).tolist() == acting


# -- the spec: the record's trainer -----------------------------------------------------------------------------------


def test_spec_gives_the_record_trainer_options():
    spec = TokenizerSpec.load(SPEC)
    assert spec.kind == "caseops-sp" and spec.vocab_size == 8192 and spec.options["case_transform"] == RECORD
    assert spec.preprocess == "official" and spec.long_docs == "drop"
    kwargs = trainer_kwargs(CaseOpsSentencePieceTokenizer.inner_spec(spec))
    assert kwargs == reference.trainer_options(8192)


def test_unknown_case_transform_is_a_spec_error(dev_sample):
    spec = TokenizerSpec(name="x", kind="caseops-sp", vocab_size=600, options={"case_transform": "ascii"})
    with pytest.raises(SpecError, match="case_transform 'ascii' is not one of pgolf, lossless_caps_caseops_v1"):
        training.train(spec, dev_sample[:50], num_threads=1)


@pytest.fixture(scope="module")
def record_small(dev_sample):
    """The spec at vocab 1024 trained by pgolf, and SentencePiece with the model trained the record's way."""
    spec = TokenizerSpec.load(SPEC).with_overrides(vocab_size=1024)
    tok, _ = training.train(spec, dev_sample, num_threads=2)
    return tok, spm.SentencePieceProcessor(model_proto=reference.train_model(dev_sample, 1024))


def test_trained_model_is_the_record_trainers_model(record_small):
    tok, sp = record_small
    assert isinstance(tok, CaseOpsSentencePieceTokenizer) and tok.case.name == RECORD and not tok.lossless
    assert tok.inner.model_proto() == sp.serialized_model_proto()
    layout = [sp.id_to_piece(i) for i in range(264)]
    assert layout[:8] == ["<pad>", "<s>", "</s>", "<unk>", T, A, C, E]
    assert layout[8:] == [f"<0x{b:02X}>" for b in range(256)]
    assert tok.special_ids == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}


def shard(tok, docs: list[str], tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """What ``pgolf-data shard`` writes for ``docs`` (one val document, the rest train, sidecars for both)."""
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    out = tmp_path / "shards"
    config = ShardConfig(val_docs=1, train_sidecars=True, workers=1)
    write_shards(open_corpus(str(corpus)), tok, out, config, progress=False)
    splits = [ShardSet.open(out, split) for split in ("val", "train")]
    tokens = np.concatenate([s.read(0, s.num_tokens) for s in splits])
    return tokens, np.concatenate([s.read(0, s.num_tokens, sidecar=True) for s in splits])


def test_shard_tokens_equal_the_record_export(record_small, dev_docs, tmp_path):
    """``pgolf-data shard`` with the record's tokenizer writes the record export's tokens, byte for byte."""
    tok, sp = record_small
    docs = dev_docs[:600]
    tokens, sidecar = shard(tok, docs, tmp_path)
    want_tokens, _ = reference.export(sp, docs)
    assert np.array_equal(tokens, want_tokens)
    starts = np.flatnonzero(tokens == tok.bos_id)
    assert np.add.reduceat(sidecar.astype(np.int64), starts).tolist() == [len(d.encode("utf-8")) for d in docs]


def test_export_for_the_records_writes_their_export_byte_for_byte(record_small, dev_docs, tmp_path):
    """``pgolf-data shard`` then ``pgolf-data export --for caseops-record``: the records' globs find the tokens and the
    sidecar their own export writes for these documents, and the tokenizer under the name their defaults use."""
    import glob

    from pgolf_data.official_export import export_folder

    tok, sp = record_small
    docs = ["  Leading and trailing  ", *dev_docs[:300]]
    write_shards(docs, tok, tmp_path / "shards", ShardConfig(val_docs=120, shard_tokens=20_000, workers=1))
    result = export_folder(tmp_path / "shards", "caseops-record", tmp_path / "out", corpus=docs)
    out = tmp_path / "out"

    def stream(pattern: str, keep=lambda name: True) -> np.ndarray:
        files = [p for p in sorted(glob.glob(str(out / pattern))) if keep(Path(p).name)]
        return np.concatenate([np.fromfile(p, dtype="<u2", offset=1024) for p in files])

    want_tokens, want_sidecar = reference.export(sp, docs[:120])
    assert np.array_equal(stream("fineweb_val_*.bin", lambda name: "_bytes_" not in name), want_tokens)
    assert np.array_equal(stream("fineweb_val_bytes_*.bin"), want_sidecar)
    assert (
        out / "fineweb_1024_bpe_lossless_caps_caseops_v1_reserved.model"
    ).read_bytes() == sp.serialized_model_proto()
    assert result.env["CASEOPS_ENABLED"] == "1" and result.sidecar_diff["bytes"] >= 4  # the first document's spaces


# -- the record's sidecar ---------------------------------------------------------------------------------------------


def test_record_sidecar_equals_the_reference_on_dev_docs(record_small, dev_sample):
    tok, sp = record_small
    docs = dev_sample[:800]
    for doc, (ids, counts), (exact_ids, exact) in zip(
        docs, record_encode_with_bytes(tok, docs), tok.encode_with_bytes(docs)
    ):
        found = reference.pieces(sp, reference.encode(doc))
        assert ids.tolist() == exact_ids.tolist() == [i for i, _ in found]
        assert counts.tolist() == reference.surface_counts([s for _, s in found])
        assert int(exact.sum()) == len(doc.encode("utf-8"))  # pgolf's own sidecar keeps every byte
        missing = int(exact.sum() - counts.sum())  # the record's leaves out what SentencePiece drops at the ends
        assert 0 <= missing <= reference.edge_bytes(doc), doc[:100]


@given(tricky_text)
@settings(max_examples=200, deadline=None)
def test_record_sidecar_equals_the_reference_on_tricky_text(record_small, text):
    tok, sp = record_small
    [(ids, counts)] = record_encode_with_bytes(tok, [text])
    found = reference.pieces(sp, reference.encode(text))
    assert ids.tolist() == [i for i, _ in found]
    assert counts.tolist() == reference.surface_counts([s for _, s in found])


def test_record_sidecar_examples(record_small):
    tok, _ = record_small
    [(_, counts)] = record_encode_with_bytes(tok, ["  Hello  World  "])
    [(_, exact)] = tok.encode_with_bytes(["  Hello  World  "])
    assert int(counts.sum()) == 12 and int(exact.sum()) == 16  # the outer whitespace is stripped, the inner counted
    [(ids, counts)] = record_encode_with_bytes(tok, [f"{E}{T}X"])  # literal ESC, literal TITLE, a capital
    assert ids[:4].tolist() == [7, 7, 7, 4] and counts.tolist()[:4] == [0, 3, 0, 3]
    [(ids, counts)] = record_encode_with_bytes(tok, [" \n  "])  # SentencePiece strips it all: no pieces, no bytes
    assert ids.size == counts.size == 0


def test_artifact_keeps_the_transform(record_small):
    tok, _ = record_small
    loaded = from_artifact(to_artifact(tok))
    assert loaded.case.name == RECORD and loaded.case.encode("ÉCOLE") == f"É{A}cole"
    assert loaded.encode("ÉCOLE").tolist() == tok.encode("ÉCOLE").tolist()
    header, _ = tok.payload()
    assert header["case_table"] == RECORD_CASE.fingerprint
