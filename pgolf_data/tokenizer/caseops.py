"""CaseOps: a lossless text transform that moves capitalization out of the letters into four operator characters.

``encode`` lowercases every capital letter and records the case with private-use operators, so ``The``/``the``/``THE``
share one BPE piece; ``decode`` undoes it, and ``decode(encode(s)) == s`` for every string. This is the
``lossless_caps_caseops_v1`` transform of the 2026-04-18 record
(records/track_10min_16mb/2026-04-18_PR1626_CaseOps_Taper, built on PR #1626), rewritten from its description:

- a *word* is a maximal run of letters of the transform's alphabet (below); every other character is copied unchanged;
- an all-lowercase word is copied unchanged;
- a word of two or more letters, all capitals: ``ALLCAPS`` + the lowercased word (``NASA`` -> ``⟨A⟩nasa``);
- otherwise every capital is lowercased and preceded by ``TITLE`` if it starts the word, else by ``CAPNEXT``
  (``The`` -> ``⟨T⟩the``, ``I`` -> ``⟨T⟩i``, ``iPhone`` -> ``i⟨C⟩phone``, ``OpenAI`` -> ``⟨T⟩open⟨C⟩a⟨C⟩i``);
- an operator character already in the input is preceded by ``ESC``.

Two alphabets, the only difference between the two transforms (``transform(name)``):

- ``lossless_caps_caseops_v1``, the record's: ASCII ``[A-Za-z]`` only. Output is the record's character for
  character, so a tokenizer built on it reproduces the record's shards (``tokenizers/caseops_v1_sp8192.toml``).
  Non-ASCII capitals keep their case and end words: ``ÉCOLE`` -> ``É⟨A⟩cole``, ``Øst`` -> ``Øst``.
- ``pgolf`` (the default, and ``encode_case``/``decode_case``): every character of a *safe case pair*, an uppercase
  ``u`` and lowercase ``l``, both below U+2000 and both assigned by Unicode 3.2, with ``u.lower() == l`` and
  ``l.upper() == u`` as single characters of equal UTF-8 length (607 pairs of Latin, Greek, Coptic, Cyrillic and
  Armenian letters). So ``ÉCOLE`` becomes ``⟨A⟩école`` (one operator, and the BPE sees ``école`` as it sees the
  lowercase word), ``Øst`` becomes ``⟨T⟩øst``. Why: capitals outside ASCII are as case-redundant as ASCII ones, and
  leaving them in splits each word's statistics across its case forms. Output equals the record's whenever every
  word containing a capital is pure ASCII (45 of the 12,023 development documents differ). Everything else
  passes through unchanged and ends a word: Turkish ``İ``/``ı`` (``İ.lower()`` is two characters, ``ı.upper()`` is
  ``I``), ``ß`` (upper ``SS``), titlecase digraphs (``ǅ``), final sigma ``ς`` (upper ``Σ`` lowers to ``σ``), the
  Kelvin sign, combining marks, digits and punctuation. Case maps are applied per character from fixed tables,
  never with ``str.lower`` on a whole word, whose final-sigma rule depends on context.

Why these pair conditions: equal byte length makes a lowercased letter stand for exactly as many original bytes as it
has, which keeps per-token byte counts simple (caseops_bpe.py). Unicode 3.2 is the version Python keeps as
``unicodedata.ucd_3_2_0``, and the case-pair stability policy (Unicode 5.0+) never pairs or unpairs two assigned
characters, so the pairs among its characters are the same in every Python, while pairs that later versions add
(Georgian Mtavruli in 11.0, Cyrillic Tje in 16.0) are left out. A transform's ``fingerprint`` goes into every CaseOps
tokenizer to catch a mismatch anyway. U+2000 ends the alphabets; above it paired characters are circled, fullwidth
or Roman-numeral forms.

Speed matters: the transform runs in front of every BPE encode. Both directions use one regular-expression split
(scanned in C) and look up each capitalized word, or each operator's word, in a bounded cache; most words are
lowercase and never reach Python code.

``decode`` accepts any string. On strings ``encode`` cannot produce it is lenient where the record's decoder raises:
an operator with no letter to act on (and a trailing ``ESC``) is dropped, so decoding a sampled token stream never
fails.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
import unicodedata
from collections.abc import Callable

TITLE = "\ue001"  # the next letter, which starts a word, is a capital
ALLCAPS = "\ue002"  # every letter of the following word is a capital
CAPNEXT = "\ue003"  # the next letter, inside a word, is a capital
ESC = "\ue004"  # the next character is literal (an operator character that was in the input)
OPERATORS = {"title": TITLE, "allcaps": ALLCAPS, "capnext": CAPNEXT, "esc": ESC}

PGOLF = "pgolf"
RECORD = "lossless_caps_caseops_v1"  # the record's name for it (its lossless_caps module's v2 rules)
TRANSFORMS = (PGOLF, RECORD)

PAIR_LIMIT = 0x2000  # both letters of a case pair lie below this code point
CACHE_LIMIT = 1 << 16  # entries per word cache before it is emptied (bounds memory on a 10B-token corpus)


def _safe_pairs() -> list[tuple[str, str]]:
    pairs = []
    for cp in range(PAIR_LIMIT):
        upper = chr(cp)
        lower = upper.lower()
        if (
            lower != upper
            and len(lower) == 1
            and ord(lower) < PAIR_LIMIT
            and lower.upper() == upper
            and len(lower.encode("utf-8")) == len(upper.encode("utf-8"))
            and unicodedata.ucd_3_2_0.category(upper) != "Cn"  # both assigned by Unicode 3.2
            and unicodedata.ucd_3_2_0.category(lower) != "Cn"
        ):
            pairs.append((upper, lower))
    return pairs


def _ascii_pairs() -> list[tuple[str, str]]:
    return list(zip(string.ascii_uppercase, string.ascii_lowercase))


def _char_class(chars: str) -> str:
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


class _Cache(dict):
    """A dict that computes missing entries with ``fn`` and empties itself when full."""

    def __init__(self, fn: Callable[[str], str]) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, key: str) -> str:
        if len(self) >= CACHE_LIMIT:
            self.clear()
        value = self[key] = self.fn(key)
        return value


class CaseTransform:
    """The CaseOps transform over one alphabet of case pairs (see the module docstring)."""

    def __init__(self, name: str, pairs: list[tuple[str, str]]) -> None:
        self.name = name
        uppers = "".join(u for u, _ in pairs)
        lowers = "".join(lo for _, lo in pairs)
        cap, letter = _char_class(uppers), _char_class(uppers + lowers)
        self.letters = frozenset(uppers + lowers)
        self.pairs = dict(pairs)  # uppercase -> lowercase
        self.fingerprint = hashlib.sha256(f"{uppers}|{lowers}".encode()).hexdigest()[:16]
        self._lower = str.maketrans(uppers, lowers)  # str.translate tables over this alphabet only
        self._upper = str.maketrans(lowers, uppers)
        # Each pattern starts with a character class so that re scans for candidates in C.
        self._capital_run = re.compile(f"({cap}{letter}*)")  # a capital letter and the rest of its word
        self._operator_run = re.compile(f"([{TITLE}{ALLCAPS}{CAPNEXT}])({letter}*)")  # an operator, letters after
        self._escaped = re.compile(f"{ESC}(.?)", re.DOTALL)  # ESC and the character it protects
        self._operator_char = re.compile(f"[{TITLE}{ALLCAPS}{CAPNEXT}{ESC}]")  # to be escaped in the input
        self._words = _Cache(self._encode_word)
        self._tails = _Cache(self._encode_tail)
        self._first_up = _Cache(lambda w: w[:1].translate(self._upper) + w[1:])
        self._all_up = _Cache(lambda w: w.translate(self._upper))

    def __repr__(self) -> str:
        return f"CaseTransform({self.name!r}, {len(self.pairs)} pairs)"

    def _mark_capitals(self, word: str, first_op: str) -> str:
        """Lowercase ``word``, which starts with a capital: ``first_op`` before it, CAPNEXT before later capitals."""
        low = word.translate(self._lower)
        return first_op + low[0] + "".join([CAPNEXT + lo if c != lo else c for c, lo in zip(word[1:], low[1:])])

    def _encode_word(self, word: str) -> str:
        """A whole word that starts with a capital."""
        if len(word) >= 2 and word.translate(self._upper) == word:  # no lowercase letter in it
            return ALLCAPS + word.translate(self._lower)
        return self._mark_capitals(word, TITLE)

    def _encode_tail(self, tail: str) -> str:
        """The rest of a word from its first capital on, after lowercase letters: every capital is a CAPNEXT."""
        return self._mark_capitals(tail, CAPNEXT)

    def encode(self, text: str) -> str:
        """The CaseOps form of ``text``: lowercase letters plus operators."""
        if TITLE in text or ALLCAPS in text or CAPNEXT in text or ESC in text:
            text = self._operator_char.sub(ESC + r"\g<0>", text)
        parts = self._capital_run.split(text)  # [text, word, text, word, ..., text]
        if len(parts) == 1:
            return text
        letters, words, tails = self.letters, self._words, self._tails
        # A match is a whole word unless the text before it ends in a letter (lowercase, as in "iPhone").
        parts[1::2] = [
            tails[run] if before[-1:] in letters else words[run] for before, run in zip(parts[0::2], parts[1::2])
        ]
        return "".join(parts)

    def _decode_plain(self, text: str) -> str:
        parts = self._operator_run.split(text)  # [text, op, letters, text, op, letters, ..., text]
        if len(parts) == 1:
            return text
        all_up, first_up = self._all_up, self._first_up
        parts[2::3] = [all_up[run] if op == ALLCAPS else first_up[run] for op, run in zip(parts[1::3], parts[2::3])]
        parts[1::3] = [""] * (len(parts) // 3)
        return "".join(parts)

    def decode(self, text: str) -> str:
        """Invert ``encode``: ``decode(encode(s)) == s`` for every string ``s``."""
        if ESC not in text:
            return self._decode_plain(text)
        # Escaped characters are literal: decode the stretches between them on their own.
        parts = self._escaped.split(text)  # [text, literal, text, literal, ..., text]
        parts[0::2] = [self._decode_plain(p) for p in parts[0::2]]
        return "".join(parts)


@functools.cache
def transform(name: str = PGOLF) -> CaseTransform:
    """The transform called ``name``: ``"pgolf"`` or the record's ``"lossless_caps_caseops_v1"``."""
    if name == PGOLF:
        return CaseTransform(PGOLF, _safe_pairs())
    if name == RECORD:
        return CaseTransform(RECORD, _ascii_pairs())
    raise ValueError(f"unknown CaseOps transform {name!r}; known: {', '.join(TRANSFORMS)}")


def encode_case(text: str) -> str:
    """pgolf's CaseOps form of ``text`` (``transform("pgolf").encode``)."""
    return transform(PGOLF).encode(text)


def decode_case(text: str) -> str:
    """Invert ``encode_case``: ``decode_case(encode_case(s)) == s`` for every string ``s``."""
    return transform(PGOLF).decode(text)


def table_fingerprint() -> str:
    """A short hash of pgolf's case-pair table; a tokenizer stores it so a different table is caught at load time."""
    return transform(PGOLF).fingerprint


def case_pairs() -> dict[str, str]:
    """pgolf's safe case pairs, uppercase -> lowercase."""
    return dict(transform(PGOLF).pairs)
