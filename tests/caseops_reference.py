"""The CaseOps record's export pipeline, re-implemented from its description to test pgolf against.

Written from the description of the 2026-04-18 record (PR #1626, ``lossless_caps_caseops_v1``; the digest's CaseOps
section): the transform as a scan over ASCII words, its inverse as the record's strict decoder state machine, the
SentencePiece trainer options, and the byte sidecar computed the record's way, from each piece's ``surface`` (parsed
here from SentencePiece's serialized ``SentencePieceText``) with the decoder run across pieces. Nothing is shared with
``pgolf_data``: no regular expressions, no tables, one character at a time.
"""

from __future__ import annotations

import io
import unicodedata

import numpy as np
import sentencepiece as spm

TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
CONTROLS = (TITLE, ALLCAPS, CAPNEXT, ESC)


def _letter(c: str) -> bool:
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _capital(c: str) -> bool:
    return "A" <= c <= "Z"


def _lower(c: str) -> str:
    return chr(ord(c) + 32) if _capital(c) else c


def encode(text: str) -> str:
    """``lossless_caps_caseops_v1``: each maximal run of ASCII letters by its capitalization class."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in CONTROLS:
            out += [ESC, c]
            i += 1
        elif not _letter(c):
            out.append(c)
            i += 1
        else:
            j = i
            while j < len(text) and _letter(text[j]):
                j += 1
            word, i = text[i:j], j
            caps = [_capital(ch) for ch in word]
            low = "".join(_lower(ch) for ch in word)
            if not any(caps):
                out.append(word)
            elif len(word) >= 2 and all(caps):
                out += [ALLCAPS, low]
            elif caps[0] and len(word) >= 2 and not any(caps[1:]):
                out += [TITLE, low]
            else:  # mixed case, a lone capital included
                if caps[0]:
                    out.append(TITLE)
                out.append(low[0])
                for ch, lo in zip(word[1:], low[1:]):
                    if _capital(ch):
                        out.append(CAPNEXT)
                    out.append(lo)
    return "".join(out)


class MarkerError(ValueError):
    """A transformed stream the record's decoder rejects."""


class Decoder:
    """The record's decoder, one character at a time: ``feed`` returns the original text the character stands for."""

    def __init__(self) -> None:
        self.escape = False
        self.mode: str | None = None  # TITLE or ALLCAPS waiting for a word to start
        self.capnext = False
        self.allcaps = False
        self.in_word = False

    def feed(self, c: str) -> str:
        if self.escape:
            if self.mode is not None and not _letter(c):
                raise MarkerError("an escaped character cannot take a pending word mode")
            self.escape = False
            self.in_word = _letter(c)
            self.allcaps = self.allcaps and self.in_word
            return c
        if c == ESC:
            self.escape = True
            return ""
        if c in (TITLE, ALLCAPS):
            if self.mode is not None or self.in_word or self.capnext:
                raise MarkerError(f"word marker U+{ord(c):04X} inside a word or after another marker")
            self.mode = c
            return ""
        if c == CAPNEXT:
            if self.capnext:
                raise MarkerError("two CAPNEXT in a row")
            self.capnext = True
            return ""
        if _letter(c):
            if not self.in_word:
                up = self.mode is not None or self.capnext
                self.allcaps = self.mode == ALLCAPS
                self.mode = None
                self.in_word = True
            else:
                if self.mode is not None:
                    raise MarkerError("a word marker inside a word")
                up = self.allcaps or self.capnext
            self.capnext = False
            return c.upper() if up else c
        if self.mode is not None or self.capnext:
            raise MarkerError(f"a marker before {c!r}, which is not a letter")
        self.in_word = self.allcaps = False
        return c

    def finish(self) -> None:
        if self.escape or self.mode is not None or self.capnext:
            raise MarkerError("a dangling marker at the end")


def decode(stream: str) -> str:
    d = Decoder()
    out = "".join(d.feed(c) for c in stream)
    d.finish()
    return out


def surface_counts(surfaces: list[str]) -> list[int]:
    """Original UTF-8 bytes per piece: what the decoder, run across all pieces, emits for each piece's surface."""
    d = Decoder()
    counts = [sum(len(d.feed(c).encode("utf-8")) for c in surface) for surface in surfaces]
    d.finish()
    return counts


# -- SentencePiece --------------------------------------------------------------------------------------------------


def trainer_options(vocab_size: int) -> dict:
    """The record's trainer call: the challenge's options plus the operators as user-defined symbols."""
    return {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "character_coverage": 0.999,
        "byte_fallback": True,
        "split_digits": True,
        "normalization_rule_name": "nmt_nfkc",
        "add_dummy_prefix": False,
        "pad_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "unk_id": 3,
        "hard_vocab_limit": False,
        "user_defined_symbols": list(CONTROLS),
    }


def training_text(docs: list[str]) -> list[str]:
    """The record's trainer input: NUL as a space, stripped, empty documents skipped, then transformed."""
    cleaned = (d.replace("\x00", " ").strip() for d in docs)
    return [encode(d) for d in cleaned if d]


def train_model(docs: list[str], vocab_size: int, **overrides) -> bytes:
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_text(docs)),
        model_writer=out,
        minloglevel=2,
        **{**trainer_options(vocab_size), **overrides},
    )
    return out.getvalue()


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def _fields(buf: bytes):
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        if key & 7 == 0:
            value, pos = _varint(buf, pos)
        elif key & 7 == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unexpected wire type {key & 7}")
        yield key >> 3, value


def pieces(sp: spm.SentencePieceProcessor, text: str) -> list[tuple[int, str]]:
    """``(id, surface)`` of each piece, from the serialized SentencePieceText (pieces: field 2; id 2, surface 3)."""
    out = []
    for number, value in _fields(sp.encode(text, out_type="serialized_proto")):
        if number == 2:
            piece = dict(_fields(value))
            out.append((piece.get(2, 0), piece.get(3, b"").decode("utf-8")))
    return out


def export(sp: spm.SentencePieceProcessor, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The record export's token stream and byte sidecar for ``docs``: BOS, then each document's pieces."""
    tokens: list[int] = []
    sidecar: list[int] = []
    transformed = [encode(d) for d in docs]
    for text, ids in zip(transformed, sp.encode(transformed, out_type=int)):
        found = pieces(sp, text)
        assert [i for i, _ in found] == ids
        tokens += [sp.bos_id(), *ids]
        sidecar += [0, *surface_counts([s for _, s in found])]
    return np.array(tokens, dtype=np.uint16), np.array(sidecar, dtype=np.uint16)


def _droppable(c: str) -> bool:
    return c.isspace() or c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cf")


def edge_bytes(text: str) -> int:
    """UTF-8 bytes of the runs of whitespace, control, format and replacement characters at either end: the most
    that SentencePiece's normalizer can drop outside every piece's span."""
    stripped = text
    while stripped and _droppable(stripped[0]):
        stripped = stripped[1:]
    while stripped and _droppable(stripped[-1]):
        stripped = stripped[:-1]
    return len(text.encode("utf-8")) - len(stripped.encode("utf-8"))
