"""CaseOps: the transform against a character-by-character reference, its bijection, and the CaseOps tokenizer."""

from __future__ import annotations

import string
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data.tokenizer import SpecError, TokenizerError, TokenizerSpec, training
from pgolf_data.tokenizer.artifact import from_artifact, to_artifact
from pgolf_data.tokenizer.caseops import (
    ALLCAPS,
    CAPNEXT,
    ESC,
    OPERATORS,
    TITLE,
    case_pairs,
    decode_case,
    encode_case,
    table_fingerprint,
)
from pgolf_data.tokenizer.caseops_bpe import CaseOpsSentencePieceTokenizer, escaped_positions
from pgolf_data.tokenizer.metrics import measure

T, A, C, E = TITLE, ALLCAPS, CAPNEXT, ESC


def reference_encode(text: str, letters: dict[str, str]) -> str:
    """The transform as a plain scan over words; ``letters`` maps every letter to its lowercase form."""
    out, i = [], 0
    while i < len(text):
        if text[i] in OPERATORS.values():
            out += [ESC, text[i]]
            i += 1
            continue
        j = i
        while j < len(text) and text[j] in letters:
            j += 1
        if j == i:
            out.append(text[i])
            i += 1
            continue
        word = text[i:j]
        capital = [letters[c] != c for c in word]
        if len(word) >= 2 and all(capital):
            out += [ALLCAPS, *(letters[c] for c in word)]
        else:
            for k, c in enumerate(word):
                if capital[k]:
                    out.append(TITLE if k == 0 else CAPNEXT)
                out.append(letters[c])
        i = j
    return "".join(out)


PAIRS = case_pairs()
UNICODE_LETTERS = {**{lo: lo for lo in PAIRS.values()}, **PAIRS}
ASCII_LETTERS = {c: c.lower() for c in string.ascii_letters}  # the official record's letters

# Characters where case mapping goes wrong in some way, plus operators, to make dense random tests.
HARD = "İıIißẞǅǄǆΣσςΐſ\u212akK\u212bÅåÉéE\u0301\u0307ǰŉﬁᾳᾼ\u2126ΩωµΜ𐐀𐐨Ꭰꭰ\u2581 \n1_'-" + "".join(OPERATORS.values())
hard_text = st.text(alphabet=st.sampled_from(HARD + "aAbBzZ"), max_size=40)
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60)  # lone surrogates too


def test_safe_pairs():
    assert len(PAIRS) == 607
    assert table_fingerprint() == "61d41bf180003c5e", "the case-pair table changed; stored CaseOps tokenizers break"
    for upper, lower in PAIRS.items():
        assert upper.lower() == lower and lower.upper() == upper and upper != lower
        assert len(upper.encode()) == len(lower.encode()) and max(ord(upper), ord(lower)) < 0x2000
        assert "Cn" not in (unicodedata.ucd_3_2_0.category(upper), unicodedata.ucd_3_2_0.category(lower))
    assert {"A": "a", "É": "é", "Σ": "σ", "Ж": "ж", "Ǆ": "ǆ", "Ա": "ա"}.items() <= PAIRS.items()
    # Complete: every Unicode 3.2 lowercase letter whose capital maps back, within bounds and at equal length.
    for lower in map(chr, range(0x2000)):
        upper = lower.upper()
        if len(upper) == 1 and upper != lower and ord(upper) < 0x2000 and upper.lower() == lower:
            old = "Cn" in (unicodedata.ucd_3_2_0.category(upper), unicodedata.ucd_3_2_0.category(lower))
            assert PAIRS.get(upper) == lower or len(upper.encode()) != len(lower.encode()) or old, lower
    # Each fails a condition: two-character mapping, no inverse, different byte length, newer than Unicode 3.2.
    unsafe = "İıßẞǅςſ\u212a\u212b\u2126µⱥᲐᏸ\u1c89\u1c8a"
    assert not set(unsafe) & (set(PAIRS) | set(PAIRS.values()))


HARD_CASES = [
    ("", ""),
    ("the cat", "the cat"),
    ("The NASA Launch", f"{T}the {A}nasa {T}launch"),  # the record's README examples
    ("iPhone OpenAI", f"i{C}phone {T}open{C}a{C}i"),
    ("I am A.", f"{T}i am {T}a."),  # one capital letter is TITLE, never ALLCAPS
    ("McDonald's HELLOworld aBC", f"{T}mc{C}donald's {T}h{C}e{C}l{C}l{C}oworld a{C}b{C}c"),
    ("ABC1DEF x_Y", f"{A}abc1{A}def x_{T}y"),  # digits and punctuation end words
    ("İstanbul ıI", f"İstanbul ı{T}i"),  # Turkish İ and ı are not safe pairs: they pass through and end words
    ("STRAßE straße", f"{A}straß{T}e straße"),  # ß upper-cases to SS
    ("ǅemal ǄEMAL", f"ǅemal {A}ǆemal"),  # a titlecase digraph passes through
    ("ΟΔΟΣ Οδός ς", f"{A}οδοσ {T}οδός ς"),  # Σ lowercases to σ per character, never to the final ς
    ("ÉCOLE École", f"{A}école {T}école"),  # the record would give É{A}cole: non-ASCII letters are ours
    ("E\u0301COLE", f"{T}e\u0301{A}cole"),  # a combining mark ends the word
    ("Kelvin \u212a 5\u212b", f"{T}kelvin \u212a 5\u212b"),  # Kelvin, Angstrom: lower to k, å
    ("ꭰᎠ Ᏸᏸ ᲐᲑ", "ꭰᎠ Ᏸᏸ ᲐᲑ"),  # Cherokee and Georgian pairs are newer than Unicode 3.2
    ("ⅫⒶＡ𐐀", "ⅫⒶＡ𐐀"),  # paired forms above U+2000 are not letters
    (f"a{T}b {ESC}{A}X", f"a{E}{T}b {E}{ESC}{E}{A}{T}x"),  # operator characters already in the text are escaped
    ("\u2581Ab\x00", f"\u2581{T}ab\x00"),
]


@pytest.mark.parametrize(("text", "encoded"), HARD_CASES)
def test_hard_cases(text, encoded):
    assert encode_case(text) == encoded
    assert encode_case(text) == reference_encode(text, UNICODE_LETTERS)
    assert decode_case(encoded) == text


@given(any_text)
@settings(max_examples=500)
def test_bijection_on_any_text(text):
    encoded = encode_case(text)
    assert decode_case(encoded) == text
    assert encode_case(decode_case(encoded)) == encoded


@given(hard_text)
@settings(max_examples=1000)
def test_matches_reference_on_hard_text(text):
    encoded = encode_case(text)
    assert encoded == reference_encode(text, UNICODE_LETTERS)
    assert decode_case(encoded) == text


@given(st.text(alphabet=st.characters(max_codepoint=0x7F, exclude_categories=()), max_size=60))
def test_matches_official_semantics_on_ascii(text):
    assert encode_case(text) == reference_encode(text, ASCII_LETTERS)


@pytest.mark.parametrize(
    ("stream", "decoded"),
    [
        (f"{T}", ""),
        (f"{T} a{A}", " a"),
        (f"{C}1{A}.", "1."),
        (f"ab{E}", "ab"),
        (f"{E}x{T}{T}y", "xY"),
        (f"{A}aBc{C}D", "ABCD"),
    ],
)
def test_decode_is_lenient_on_streams_encode_cannot_produce(stream, decoded):
    assert decode_case(stream) == decoded


def test_dev_corpus_round_trip(dev_docs):
    assert all(decode_case(encode_case(doc)) == doc for doc in dev_docs)


def test_dev_corpus_matches_official_where_capitals_are_ascii(dev_sample):
    """Identical to the record's ASCII-only transform on every document whose capitalized words are all ASCII."""
    same = 0
    for doc in dev_sample:
        ours = encode_case(doc)
        if ours == reference_encode(doc, ASCII_LETTERS):
            same += 1
        else:  # then some word with a capital must contain a non-ASCII letter
            assert any(not w.isascii() for w in _capitalized_words(doc)), doc[:200]
    assert same >= 0.95 * len(dev_sample)


def _capitalized_words(text: str) -> list[str]:
    words, word = [], ""
    for c in text + " ":
        if c in UNICODE_LETTERS:
            word += c
            continue
        if any(ch in PAIRS for ch in word):
            words.append(word)
        word = ""
    return words


# -- the CaseOps tokenizers ----------------------------------------------------------------------------------------

SPECS = Path(__file__).resolve().parents[1] / "tokenizers"


@pytest.fixture(scope="module")
def caseops_sp(dev_sample):
    tok, _ = training.train(TokenizerSpec.load(SPECS / "caseops_sp1024.toml"), dev_sample, num_threads=2)
    return tok


@pytest.fixture(scope="module")
def caseops_hf(dev_sample):
    tok, _ = training.train(TokenizerSpec.load(SPECS / "caseops_hf_bpe1024.toml"), dev_sample, num_threads=2)
    return tok


@pytest.fixture(params=["caseops_sp", "caseops_hf"])
def caseops_tok(request):
    return request.getfixturevalue(request.param)


def _check_docs(tok, docs):
    for doc, (ids, counts) in zip(docs, tok.encode_with_bytes(docs)):
        assert ids.dtype == counts.dtype == np.int32 and len(ids) == len(counts)
        assert (counts >= 0).all()
        assert int(counts.sum()) == len(doc.encode("utf-8")), doc[:200]
        assert tok.decode(ids) == doc, doc[:200]


def test_sp_dev_corpus_round_trip_and_byte_counts(caseops_sp, dev_docs):
    _check_docs(caseops_sp, dev_docs)


@pytest.mark.slow
def test_hf_dev_corpus_round_trip_and_byte_counts(caseops_hf, dev_docs):
    _check_docs(caseops_hf, dev_docs)


def test_operators_are_reserved_and_never_merged(caseops_tok):
    ops = caseops_tok.operator_ids
    assert set(ops) == set(OPERATORS) and caseops_tok.caseops and caseops_tok.lossless
    if caseops_tok.kind == "caseops-sp":  # the record's layout: pad, BOS, EOS, unk, then the operators
        assert ops == {"title": 4, "allcaps": 5, "capnext": 6, "esc": 7}
    for name, op in OPERATORS.items():
        assert caseops_tok.encode(op).tolist() == [ops["esc"], ops[name]]
        assert caseops_tok.piece(ops[name]) == f"<{name.upper()}>"
    for i in set(range(caseops_tok.vocab_size)) - set(ops.values()):
        assert not set(caseops_tok.inner.piece(i)) & set(OPERATORS.values()), (i, caseops_tok.inner.piece(i))


def test_ids_outside_the_vocabulary_are_refused_by_decode_and_piece(caseops_tok):
    n = caseops_tok.vocab_size
    caseops_tok.decode([0, n - 1]), caseops_tok.piece(n - 1)  # the first and last ids are valid
    for bad in (n, -1):
        message = rf"token id {bad} is outside the vocabulary \[0, {n}\)"
        with pytest.raises(TokenizerError, match=message):
            caseops_tok.decode([5, bad])
        with pytest.raises(TokenizerError, match=message):
            caseops_tok.piece(bad)


@given(st.text(alphabet=st.sampled_from(HARD + "aAbBzZeEtThH.  "), max_size=40))
@settings(max_examples=150, deadline=None)
def test_byte_counts_match_decoded_prefixes(caseops_sp, caseops_hf, text):
    """At every token boundary where the decoded prefix is a prefix of the text, the counts so far equal its bytes."""
    for tok in (caseops_sp, caseops_hf):
        [(ids, counts)] = tok.encode_with_bytes([text])
        assert tok.decode(ids) == text
        total = np.concatenate([[0], np.cumsum(counts)])
        for k in range(len(ids) + 1):
            prefix = tok.decode(ids[:k])
            if text.startswith(prefix):
                assert total[k] == len(prefix.encode("utf-8")), (ids[:k], counts[:k])


def test_byte_counts_of_operators_and_escapes(caseops_sp):
    text = f"{ESC}{TITLE}Ab"  # a literal ESC, a literal TITLE, then a title word
    [(ids, counts)] = caseops_sp.encode_with_bytes([text])
    ops = caseops_sp.operator_ids
    assert ids[:5].tolist() == [ops["esc"], ops["esc"], ops["esc"], ops["title"], ops["title"]]
    assert counts.tolist()[:5] == [0, 3, 0, 3, 0] and int(counts.sum()) == len(text.encode())


@pytest.mark.parametrize(
    ("positions", "escaped"),
    [([], []), ([0], [1]), ([0, 1], [1]), ([0, 1, 2], [1, 3]), ([2, 5, 6, 7, 9], [3, 6, 8, 10])],
)
def test_escaped_positions(positions, escaped):
    ids = np.zeros(12, dtype=np.int32)
    ids[positions] = 7
    assert escaped_positions(ids, 7) == escaped


def test_artifact_round_trip(caseops_tok, dev_sample):
    data = to_artifact(caseops_tok)
    loaded = from_artifact(data)
    assert type(loaded) is type(caseops_tok) and loaded.caseops and loaded.operator_ids == caseops_tok.operator_ids
    docs = [*dev_sample[:200], "".join(HARD)]
    for a, b in zip(loaded.encode_with_bytes(docs), caseops_tok.encode_with_bytes(docs)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_artifact_with_another_case_table_is_refused(caseops_sp):
    header, blob = caseops_sp.payload()
    with pytest.raises(TokenizerError, match="case-pair table 'ffff'"):
        type(caseops_sp).from_payload(caseops_sp.spec, {**header, "case_table": "ffff"}, blob)


def test_spec_may_not_set_user_defined_symbols(dev_sample):
    spec = TokenizerSpec(name="x", kind="caseops-sp", vocab_size=300, options={"user_defined_symbols": ["<x>"]})
    with pytest.raises(SpecError, match="reserves user_defined_symbols"):
        training.train(spec, dev_sample[:50], num_threads=1)


def test_sentencepiece_model_without_operators_is_refused(dev_sample):
    plain, _ = training.train(TokenizerSpec(name="p", kind="sentencepiece", vocab_size=600), dev_sample[:100])
    with pytest.raises(TokenizerError, match="no reserved piece for the title operator"):
        CaseOpsSentencePieceTokenizer(TokenizerSpec(name="c", kind="caseops-sp", vocab_size=600), plain)


def test_metrics_report_operator_share(caseops_sp, dev_sample):
    report = measure(caseops_sp, dev_sample[:300])
    assert report["byte_counts_exact"] and report["roundtrip_docs"] == 300
    assert 0.02 < report["operator_share"] < 0.2


def test_lossy_inner_tokenizer_still_counts_original_bytes(dev_sample):
    """With the record's own options (nmt_nfkc, whitespace collapsing) the text is not recoverable, but counts are."""
    docs = dev_sample[:400]
    tok, _ = training.train(TokenizerSpec(name="record", kind="caseops-sp", vocab_size=1024), docs, num_threads=2)
    assert not tok.lossless and tok.operator_ids == {"title": 4, "allcaps": 5, "capnext": 6, "esc": 7}
    for doc, (_, counts) in zip(docs, tok.encode_with_bytes(docs)):
        assert (counts >= 0).all() and int(counts.sum()) == len(doc.encode("utf-8"))
