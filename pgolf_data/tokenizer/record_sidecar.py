"""The byte sidecar the challenge's record exports write, beside pgolf's own exact one.

The CaseOps records' export (``download_hf_docs_and_tokenize.py`` of 2026-04-18_PR1626_CaseOps_Taper, reused by every
later CaseOps record) counts, for each piece SentencePiece emits for the transformed text, the original UTF-8 bytes
of the piece's *surface*: the span of the transformed input that SentencePiece aligned the piece to. It runs the
inverse transform's state machine across the pieces, so an operator counts 0, an escaped operator character its 3
bytes, and every other character its UTF-8 length (a lowercased ASCII letter stands for its capital, 1 byte). That is
the span's length less 3 bytes per *acting* operator inside it, which is how it is computed here: one vectorized
subtraction per document instead of a Python step per character.

Where this differs from pgolf's sidecar (``Tokenizer.encode_with_bytes``, which keeps every original byte): input
that lies in no piece's span is not counted. SentencePiece's spans tile the input from the first piece's start to the
last piece's end, so what is left out is what the normalizer drops at either end: leading and trailing whitespace
under ``remove_extra_whitespaces`` (the record's default) and characters ``nmt_nfkc`` deletes there (U+FFFD, U+FEFF,
U+200B, control characters). Inside the text a dropped character's bytes are in the next piece's span, the piece
pgolf gives them to as well. On the development corpus, 19 of 12,023 documents differ, by 81 bytes of 16.6 MB
(bench/caseops_record.py). A text with no pieces at all (only whitespace) gets an empty sidecar.

The same rule without operators is the record export's sidecar for a plain SentencePiece tokenizer; the pure-byte
tokenizer counts 1 per token there too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .base import Tokenizer, TokenizerError
from .caseops import ESC, OPERATORS
from .caseops_bpe import OPERATOR_BYTES, CaseOpsSentencePieceTokenizer
from .sentencepiece_bpe import SentencePieceTokenizer

# Each match holds exactly one acting operator, at its start: ESC with the operator character it makes literal, or a
# lone operator. Operator characters are 3-byte sequences EE 80 8x, so a plain character class cannot hold them.
_OP = b"(?:" + b"|".join(re.escape(op.encode("utf-8")) for op in OPERATORS.values()) + b")"
_ACTING_OPERATOR = re.compile(re.escape(ESC.encode("utf-8")) + _OP + b"|" + _OP)


def acting_operator_offsets(transformed: str) -> np.ndarray:
    """UTF-8 byte offsets of the operator characters of ``transformed`` that act as operators (not escaped ones)."""
    raw = transformed.encode("utf-8")
    return np.fromiter((m.start() for m in _ACTING_OPERATOR.finditer(raw)), dtype=np.int64)


def record_encode_with_bytes(tok: Tokenizer, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(ids, counts)`` per text, int32, no BOS: what the record's export writes for it as tokens and sidecar.

    ``tok``: a ``sentencepiece`` or ``caseops-sp`` tokenizer (the ids are SentencePiece's own, see
    ``SentencePieceTokenizer.spans``: for a lossy model, and so for the records' models, they are ``encode_batch``'s),
    or ``bytes`` (one byte each).
    """
    if tok.kind == "bytes":
        return tok.encode_with_bytes(texts)
    if isinstance(tok, CaseOpsSentencePieceTokenizer):
        sp, encode = tok.inner, tok.case.encode
        texts = [encode(t) for t in texts]
    elif isinstance(tok, SentencePieceTokenizer):
        sp = tok
    else:
        raise TokenizerError(
            f"the record's sidecar is defined for SentencePiece-based and pure-byte tokenizers, not kind {tok.kind!r}"
        )
    out = []
    for text, (ids, begins, ends) in zip(texts, sp.spans(texts)):
        counts = ends - begins
        if sp is not tok and any(op in text for op in OPERATORS.values()):
            ops = acting_operator_offsets(text)
            counts -= OPERATOR_BYTES * (np.searchsorted(ops, ends) - np.searchsorted(ops, begins))
        out.append((ids.astype(np.int32), counts.astype(np.int32)))
    return out
