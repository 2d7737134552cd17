"""SentencePiece's ``.model`` file (a ``ModelProto``) read at the wire level, and its compact encoding.

The ``sentencepiece`` wheel's ``*_pb2`` modules need the ``protobuf`` package, which pgolf does not install, so this
module reads and writes the few fields it needs straight from the protobuf wire format (varints, length-delimited
fields, little-endian float32). Field numbers are those of ``sentencepiece_model.proto``.

The compact encoding is what the tokenizer artifact stores instead of the ``.model`` file:

- a *template*: the model minus its pieces (the trainer and normalizer specs, ~50 bytes), with each precompiled
  normalization charsmap of a built-in rule left out. That table is most of an official ``.model`` (240 KB of the
  370 KB ``nmt_nfkc`` 8192 model); it is regenerated from the installed library on load and checked by sha256;
- one code byte per piece: its type field and how its string is stored: *implied* (the k-th byte-fallback piece is
  ``<0xKK>``), a *pair* (the concatenation of two other pieces' strings, as two uint16 ids: every piece a BPE merge
  made is one), or *literal* UTF-8 (the initial characters);
- scores only where they differ from what SentencePiece's BPE trainer writes (0 for specials and bytes, ``-k`` for
  the k-th normal piece).

``compact`` checks that ``expand`` rebuilds the model byte for byte, so a model this encoding cannot represent
fails when it is saved, not when it is loaded.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import numpy as np
import sentencepiece as spm

from .base import TokenizerError

# Wire types, and field numbers from sentencepiece_model.proto.
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MODEL_PIECES, MODEL_TRAINER, MODEL_NORMALIZER, MODEL_DENORMALIZER = 1, 2, 3, 5
PIECE_TEXT, PIECE_SCORE, PIECE_TYPE = 1, 2, 3
TRAINER_NUM_THREADS, TRAINER_BYTE_FALLBACK = 16, 35
NORM_NAME, NORM_CHARSMAP, NORM_ADD_DUMMY_PREFIX, NORM_REMOVE_EXTRA_WHITESPACES, NORM_ESCAPE_WHITESPACES = 1, 2, 3, 4, 5
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

FORM_IMPLIED, FORM_PAIR, FORM_LITERAL = 0, 1, 2


class Field(NamedTuple):  # a NamedTuple: a model has ~30,000 fields, and tuples are cheap to build
    number: int
    wire: int
    value: int | bytes
    raw: bytes  # the whole encoded field, key included, so unparsed fields are written back verbatim


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TokenizerError("truncated varint in SentencePiece model")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


_ONE_BYTE = [bytes([b]) for b in range(0x80)]
_F32 = struct.Struct("<f")


def varint(n: int) -> bytes:
    if 0 <= n < 0x80:  # every key and most lengths: skip the general encoder
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_fields(buf: bytes) -> list[Field]:
    fields, pos, end = [], 0, len(buf)
    while pos < end:
        start = pos
        key = buf[pos]
        if key < 0x80:  # single-byte varints (every key and most lengths) skip the general decoder
            pos += 1
        else:
            key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == LENGTH:
            size = buf[pos] if pos < end else 0x80
            if size < 0x80:
                pos += 1
            else:
                size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise TokenizerError(f"unsupported protobuf wire type {wire} (field {number}) in SentencePiece model")
        if pos > len(buf):
            raise TokenizerError(f"truncated field {number} in SentencePiece model")
        fields.append(Field(number, wire, value, buf[start:pos]))
    return fields


def length_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LENGTH) + varint(len(payload)) + payload


class Piece(NamedTuple):
    text: str
    score: float  # float32; compared by bit pattern, so -0.0 (the first merge's score) stays distinct from 0.0
    type: int | None  # None when the field is absent, which means NORMAL


def _encode_piece(text: bytes, score: bytes, piece_type: int | None) -> bytes:
    out = b"\x0a" + varint(len(text)) + text + b"\x15" + score  # keys: 0A text, 15 score (fixed32), 18 type (varint)
    return out if piece_type is None else out + b"\x18" + varint(piece_type)


def _parse_pieces(payloads: list[bytes]) -> tuple[list[str], list[int | None], bytes]:
    """Each piece's text and type (None: absent, i.e. NORMAL), and all their float32 scores packed in order."""
    texts, types, scores = [], [], []
    for buf in payloads:
        # In place, the layout the C++ writer uses for short pieces: 0A len text 15 f32 [18 type] (one-byte len, type).
        size = len(buf)
        n = buf[1] if size >= 7 else 0x80
        if (
            n < 0x80
            and buf[0] == 0x0A
            and (size == n + 7 or (size == n + 9 and buf[-2] == 0x18 and buf[-1] < 0x80))
            and buf[n + 2] == 0x15
        ):
            texts.append(buf[2 : n + 2].decode("utf-8"))
            types.append(None if size == n + 7 else buf[-1])
            scores.append(buf[n + 3 : n + 7])
        else:
            piece = _parse_piece(buf)
            texts.append(piece.text)
            types.append(piece.type)
            scores.append(_F32.pack(piece.score))
    return texts, types, b"".join(scores)


def _parse_piece(buf: bytes) -> Piece:
    """Any field layout of one piece (text, score and an optional type, in that order)."""
    fields = read_fields(buf)
    layout = [(f.number, f.wire) for f in fields]
    if layout not in ([(PIECE_TEXT, LENGTH), (PIECE_SCORE, FIXED32)], [(1, LENGTH), (2, FIXED32), (3, VARINT)]):
        raise TokenizerError(f"unsupported SentencePiece piece layout {layout}")
    piece_type = fields[2].value if len(fields) == 3 else None
    return Piece(fields[0].value.decode("utf-8"), struct.unpack("<f", fields[1].value)[0], piece_type)


def _piece_fields(model: bytes) -> tuple[list[bytes], int]:
    """The payloads of the leading piece fields (key 0A: field 1, length-delimited) and the offset where they end.

    A model is thousands of pieces and a few specs; walking the pieces without building a ``Field`` for each is what
    lets the spec readers below skip them cheaply.
    """
    payloads, pos, end = [], 0, len(model)
    while pos < end and model[pos] == 0x0A:
        if pos + 1 < end and model[pos + 1] < 0x80:
            size, start = model[pos + 1], pos + 2
        else:
            size, start = _read_varint(model, pos + 1)
        pos = start + size
        if pos > end:
            raise TokenizerError(f"truncated field {MODEL_PIECES} in SentencePiece model")
        payloads.append(model[start:pos])
    return payloads, pos


def _spec_part(model: bytes) -> list[Field]:
    """The top-level fields after the pieces (the trainer and normalizer specs)."""
    return read_fields(model[_piece_fields(model)[1] :])


def _read_model(model: bytes) -> tuple[list[str], list[int | None], bytes, list[Field]]:
    """The pieces' texts, types and packed scores, and the other top-level fields (specs), in file order."""
    payloads, end = _piece_fields(model)
    rest = read_fields(model[end:])
    if any(f.number == MODEL_PIECES and f.wire == LENGTH for f in rest):
        raise TokenizerError("SentencePiece model has pieces after its specs; pgolf expects C++ field order")
    return (*_parse_pieces(payloads), rest)


def split_model(model: bytes) -> tuple[list[Piece], list[Field]]:
    """The pieces and the other top-level fields (specs), in file order; pieces must come first, as C++ writes them."""
    texts, types, scores, rest = _read_model(model)
    return [Piece(*p) for p in zip(texts, struct.unpack(f"<{len(texts)}f", scores), types)], rest


def _pack_scores(scores: list[float]) -> bytes:
    return struct.pack(f"<{len(scores)}f", *scores)


def join_model(pieces: list[Piece], rest: list[Field]) -> bytes:
    return _join([p.text for p in pieces], [p.type for p in pieces], _pack_scores([p.score for p in pieces]), rest)


def _join(texts: list[str], types: list[int | None], scores: bytes, rest: list[Field]) -> bytes:
    """The model file from each piece's text and type, their float32 scores packed in order, and the spec fields."""
    out = []
    for i, (text, piece_type) in enumerate(zip(texts, types)):
        raw, score = text.encode("utf-8"), scores[4 * i : 4 * i + 4]
        if piece_type is None and len(raw) + 7 < 0x80:  # most pieces: the whole field in one step, lengths one byte
            out.append(b"\x0a%c\x0a%c%b\x15%b" % (len(raw) + 7, len(raw), raw, score))
        else:
            body = _encode_piece(raw, score, piece_type)
            out.append(b"\x0a" + varint(len(body)) + body)  # the piece's own field: key 0A (field 1, length)
    return b"".join(out) + b"".join(f.raw for f in rest)


def canonical_model(model: bytes) -> bytes:
    """The model without the trainer's thread count, so the same corpus and spec give the same bytes on any machine."""
    end = _piece_fields(model)[1]
    out = [model[:end]]
    for field in read_fields(model[end:]):
        if field.number == MODEL_TRAINER:
            spec = b"".join(f.raw for f in read_fields(field.value) if f.number != TRAINER_NUM_THREADS)
            out.append(length_field(MODEL_TRAINER, spec))
        else:
            out.append(field.raw)
    return b"".join(out)


def _spec_fields(top: list[Field], number: int) -> dict[int, int | bytes]:
    specs = [f.value for f in top if f.number == number and f.wire == LENGTH]
    return {f.number: f.value for f in read_fields(specs[0])} if specs else {}


@dataclass(frozen=True)
class Settings:
    """The parts of a model's specs that decide whether it is lossless (proto defaults where a field is absent)."""

    normalization: str
    charsmap_bytes: int
    add_dummy_prefix: bool
    remove_extra_whitespaces: bool
    escape_whitespaces: bool
    byte_fallback: bool
    denormalizer_charsmap_bytes: int

    @classmethod
    def of(cls, model: bytes) -> Settings:
        top = _spec_part(model)
        norm = _spec_fields(top, MODEL_NORMALIZER)
        denorm = _spec_fields(top, MODEL_DENORMALIZER)
        trainer = _spec_fields(top, MODEL_TRAINER)
        return cls(
            normalization=norm.get(NORM_NAME, b"").decode("utf-8"),
            charsmap_bytes=len(norm.get(NORM_CHARSMAP, b"")),
            add_dummy_prefix=bool(norm.get(NORM_ADD_DUMMY_PREFIX, 1)),
            remove_extra_whitespaces=bool(norm.get(NORM_REMOVE_EXTRA_WHITESPACES, 1)),
            escape_whitespaces=bool(norm.get(NORM_ESCAPE_WHITESPACES, 1)),
            byte_fallback=bool(trainer.get(TRAINER_BYTE_FALLBACK, 0)),
            denormalizer_charsmap_bytes=len(denorm.get(NORM_CHARSMAP, b"")),
        )


@cache
def builtin_charsmap(rule_name: str) -> bytes | None:
    """The precompiled charsmap the installed SentencePiece builds for a built-in rule; None for an unknown rule."""
    try:
        spec = spm.SentencePieceNormalizer(rule_name=rule_name).serialized_normalizer_spec()
    except (RuntimeError, ValueError, OSError):
        return None
    return next((f.value for f in read_fields(spec) if f.number == NORM_CHARSMAP), b"")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _strip_charsmaps(rest: list[Field]) -> tuple[list[Field], dict[str, str]]:
    """Empty every normalizer charsmap that the library regenerates from the rule name; return their sha256 by field."""
    out, stripped = [], {}
    for field in rest:
        if field.number in (MODEL_NORMALIZER, MODEL_DENORMALIZER) and field.wire == LENGTH:
            sub = read_fields(field.value)
            values = {f.number: f.value for f in sub}
            charsmap, name = values.get(NORM_CHARSMAP, b""), values.get(NORM_NAME, b"").decode("utf-8")
            if charsmap and builtin_charsmap(name) == charsmap:
                stripped[str(field.number)] = _sha256(charsmap)
                body = b"".join(length_field(NORM_CHARSMAP, b"") if f.number == NORM_CHARSMAP else f.raw for f in sub)
                field = Field(field.number, LENGTH, body, length_field(field.number, body))
        out.append(field)
    return out, stripped


def _restore_charsmaps(rest: list[Field], stripped: dict[str, str]) -> list[Field]:
    out = []
    for field in rest:
        if str(field.number) in stripped:
            sub = read_fields(field.value)
            name = next((f.value for f in sub if f.number == NORM_NAME), b"").decode("utf-8")
            charsmap = builtin_charsmap(name)
            want = stripped[str(field.number)]
            if charsmap is None or _sha256(charsmap) != want:
                got = "no such rule" if charsmap is None else f"sha256 {_sha256(charsmap)}"
                raise TokenizerError(
                    f"the artifact needs SentencePiece's {name!r} normalization table with sha256 {want}, but "
                    f"sentencepiece {spm.__version__} gives {got}; install the version the tokenizer was trained with"
                )
            body = b"".join(length_field(NORM_CHARSMAP, charsmap) if f.number == NORM_CHARSMAP else f.raw for f in sub)
            field = Field(field.number, LENGTH, body, length_field(field.number, body))
        out.append(field)
    return out


def _predicted_scores(types: list[int | None]) -> list[float]:
    """SentencePiece's BPE trainer: normal pieces (merges, then characters) score -0, -1, -2, ...; the others 0."""
    scores, k = [], 0
    for t in types:
        if t in (None, NORMAL):
            scores.append(-float(k))
            k += 1
        else:
            scores.append(0.0)
    return scores


def _longest_split(text: str, index: dict[str, int]) -> int | None:
    """The longest left part of ``text`` whose remainder is also a piece; any split rebuilds the same string."""
    for k in range(len(text) - 1, 0, -1):
        if text[:k] in index and text[k:] in index:
            return k
    return None


def compact(model: bytes) -> tuple[dict, bytes]:
    """``(header, blob)`` from which ``expand`` rebuilds ``model`` byte for byte."""
    texts, types, scores, rest = _read_model(model)
    if len(texts) > 1 << 16:
        raise TokenizerError(f"SentencePiece model has {len(texts)} pieces; pgolf ids are uint16")
    template, stripped = _strip_charsmaps(rest)
    index = {text: i for i, text in enumerate(texts)}
    codes, lefts, rights, literals = [], [], [], bytearray()
    n_bytes = 0
    for text, piece_type in zip(texts, types):
        if piece_type == BYTE and text == f"<0x{n_bytes:02X}>":
            form = FORM_IMPLIED
        else:
            split = _longest_split(text, index)
            form = FORM_LITERAL if split is None else FORM_PAIR
            if split is None:
                literals += varint(len(text.encode("utf-8"))) + text.encode("utf-8")
            else:
                lefts.append(index[text[:split]])
                rights.append(index[text[split:]])
        n_bytes += piece_type == BYTE
        codes.append(form << 4 | (piece_type or 0))
    predicted = _pack_scores(_predicted_scores(types))
    exceptions = np.flatnonzero(np.frombuffer(scores, "<u4") != np.frombuffer(predicted, "<u4")).tolist()
    template_bytes = b"".join(f.raw for f in template)
    blob = b"".join(
        [
            struct.pack("<I", len(template_bytes)),
            template_bytes,
            bytes(codes),
            np.asarray(lefts, dtype="<u2").tobytes(),
            np.asarray(rights, dtype="<u2").tobytes(),
            struct.pack("<I", len(literals)),
            bytes(literals),
            struct.pack("<I", len(exceptions)),
            b"".join(struct.pack("<I", i) + scores[4 * i : 4 * i + 4] for i in exceptions),
        ]
    )
    header = {"pieces": len(texts), "charsmaps": stripped}
    if expand(header, blob) != model:
        raise TokenizerError("the compact SentencePiece encoding does not rebuild this model exactly")
    return header, blob


class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = blob, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.blob):
            raise TokenizerError(f"SentencePiece payload truncated: wanted {n} bytes at offset {self.pos}")
        self.pos += n
        return self.blob[self.pos - n : self.pos]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]


def expand(header: dict, blob: bytes) -> bytes:
    """The ``.model`` bytes that ``compact`` encoded."""
    try:
        n, stripped = int(header["pieces"]), dict(header["charsmaps"])
    except (KeyError, TypeError, ValueError) as e:
        raise TokenizerError(f"SentencePiece payload header lacks a valid field: {e}") from None
    r = _Reader(blob)
    template = read_fields(r.take(r.u32()))
    codes = r.take(n)
    forms, types = [c >> 4 for c in codes], [c & 0xF or None for c in codes]
    n_pairs = forms.count(FORM_PAIR)
    lefts = np.frombuffer(r.take(2 * n_pairs), dtype="<u2").tolist()
    rights = np.frombuffer(r.take(2 * n_pairs), dtype="<u2").tolist()
    literals = _Reader(r.take(r.u32()))
    texts: list[str | None] = [None] * n
    pair_ids = []
    n_bytes = 0
    for i, (form, t) in enumerate(zip(forms, types)):
        if form == FORM_IMPLIED:
            texts[i] = f"<0x{n_bytes:02X}>"
        elif form == FORM_LITERAL:
            size, literals.pos = _read_varint(literals.blob, literals.pos)
            texts[i] = literals.take(size).decode("utf-8")
        elif form == FORM_PAIR:
            pair_ids.append(i)
        else:
            raise TokenizerError(f"SentencePiece payload: piece {i} has unknown form {form}")
        n_bytes += t == BYTE
    pairs = dict(zip(pair_ids, zip(lefts, rights)))
    for i, (left, right) in pairs.items():
        if left >= n or right >= n:
            raise TokenizerError(f"SentencePiece payload: piece {i} refers to bad parts {left}, {right}")
    for i, (left, right) in pairs.items():
        a, b = texts[left], texts[right]
        texts[i] = a + b if a is not None and b is not None else _resolve(i, texts, pairs)
    scores = bytearray(_pack_scores(_predicted_scores(types)))
    for _ in range(r.u32()):
        i, score = r.u32(), r.take(4)
        if i >= n:
            raise TokenizerError(f"SentencePiece payload: score exception for piece {i} of {n}")
        scores[4 * i : 4 * i + 4] = score
    if r.pos != len(blob):
        raise TokenizerError(f"SentencePiece payload has {len(blob) - r.pos} trailing bytes")
    return _join(texts, types, bytes(scores), _restore_charsmaps(template, stripped))


def _resolve(i: int, texts: list[str | None], pairs: dict[int, tuple[int, int]]) -> str:
    """Piece ``i``'s text, resolving the concatenations it depends on depth first (a part may come later in id order:
    the split is the longest, not the merge's own); parts are strictly shorter, so a cycle means corruption."""
    stack = [i]
    while stack:
        j = stack[-1]
        left, right = pairs[j]
        a, b = texts[left], texts[right]
        if a is not None and b is not None:
            texts[j] = a + b
            stack.pop()
        elif len(stack) > len(texts):
            raise TokenizerError(f"SentencePiece payload: piece {j} refers to bad parts {left}, {right}")
        else:
            stack += [k for k in (left, right) if texts[k] is None]
    return texts[i]
