"""CaseOps tokenizers: a BPE over case-transformed text whose four operators are reserved, never-merged tokens.

encode = the case transform (caseops.py), then the inner BPE; decode = the inner decode, then the inverse transform.
The spec option ``case_transform`` picks the transform: ``"pgolf"`` (the default) or the record's
``"lossless_caps_caseops_v1"`` (caseops.py says how they differ). Two kinds:

- ``caseops-sp``: SentencePiece BPE with the operators as ``user_defined_symbols``, as in the 2026-04-18 record, so
  ids 4..7 are TITLE, ALLCAPS, CAPNEXT, ESC (after pad/BOS/EOS/unk) and SentencePiece never merges across them;
- ``caseops-hf-bpe``: the HF byte-level BPE over the text between operators, with the operators as the last four
  ids. (The hf-bpe kind stores only merges, and its GPT-2 pre-split would glue an operator to neighbouring
  punctuation, so the text is cut at the operators instead.)

Byte counts refer to the original text. The inner tokenizer counts bytes of the transformed text, in which an
operator character has 3 bytes and every other character the UTF-8 length of the original character it stands for
(a lowercased letter has its capital's length: caseops.py keeps only equal-length pairs). So a token's original
count is its inner count, less 3 for operator tokens (so 0 for a lossless inner tokenizer; a lossy one may have
attributed bytes it normalized away to the operator), except the token after an operator ESC: that is an operator
character of the original text and keeps its 3 bytes. Per document the counts sum to ``len(text.encode("utf-8"))``,
with one table lookup per token and a Python step only per ESC (rare in real text).
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import ClassVar

import numpy as np

from .base import Tokenizer, TokenizerError
from .caseops import ESC, OPERATORS, PGOLF, TRANSFORMS, CaseTransform, transform
from .hf_bpe import HFByteLevelBPETokenizer
from .sentencepiece_bpe import SentencePieceTokenizer
from .spec import SpecError, TokenizerSpec

OPERATOR_SPLIT = re.compile(f"([{''.join(OPERATORS.values())}])")
OPERATOR_BYTES = 3  # UTF-8 length of each operator character (private use area U+E001..U+E004)
assert all(len(op.encode("utf-8")) == OPERATOR_BYTES for op in OPERATORS.values())
TRANSFORM_OPTION = "case_transform"  # the spec option naming the transform; the inner trainer never sees it


def case_transform_of(spec: TokenizerSpec) -> CaseTransform:
    """The transform a CaseOps spec asks for."""
    name = spec.options.get(TRANSFORM_OPTION, PGOLF)
    if name not in TRANSFORMS:
        raise SpecError(f"spec {spec.name!r}: {TRANSFORM_OPTION} {name!r} is not one of {', '.join(TRANSFORMS)}")
    return transform(name)


def _inner_options(spec: TokenizerSpec) -> dict:
    return {k: v for k, v in spec.options.items() if k != TRANSFORM_OPTION}


class _CaseOpsTokenizer(Tokenizer):
    """The transform and the byte-count correction around an inner tokenizer; subclasses say how operators map."""

    inner_class: ClassVar[type[Tokenizer]]

    def __init__(self, spec: TokenizerSpec, inner: Tokenizer, operator_ids: dict[str, int]) -> None:
        super().__init__(spec)
        self.inner = inner
        self.case = case_transform_of(spec)
        self.operator_ids = operator_ids  # name -> id, e.g. for the operator share in tokenizer-info
        self._is_operator = np.zeros(self.vocab_size, dtype=bool)
        self._is_operator[list(operator_ids.values())] = True
        self._names = {i: f"<{name.upper()}>" for name, i in operator_ids.items()}

    @staticmethod
    @abstractmethod
    def inner_spec(spec: TokenizerSpec) -> TokenizerSpec:
        """The spec of the inner tokenizer, derived from the CaseOps spec."""

    @staticmethod
    def _training_texts(transformed: Iterable[str]) -> Iterable[str]:
        """What the inner trainer sees of the transformed documents."""
        return transformed

    @abstractmethod
    def _encode_transformed(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Ids and byte counts of transformed texts, counting bytes of the transformed text."""

    def _encode_transformed_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Ids alone; a kind whose inner tokenizer pays for byte counts (a lossy SentencePiece) skips them here."""
        return [ids for ids, _ in self._encode_transformed(texts)]

    @abstractmethod
    def _decode_transformed(self, ids: np.ndarray) -> str: ...

    @property
    def special_ids(self) -> dict[str, int]:
        return self.inner.special_ids

    @property
    def lossless(self) -> bool:
        return self.inner.lossless  # the transform itself is exact

    @property
    def caseops(self) -> bool:
        return True

    def set_threads(self, num_threads: int) -> None:
        self.inner.set_threads(num_threads)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encode = self.case.encode
        return self._encode_transformed_ids([encode(t) for t in texts])

    def encode_with_bytes(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        encode = self.case.encode
        transformed = [encode(t) for t in texts]
        encoded = self._encode_transformed(transformed)
        return [(ids, self._original_counts(ids, counts, ESC in t)) for t, (ids, counts) in zip(transformed, encoded)]

    def _original_counts(self, ids: np.ndarray, counts: np.ndarray, escaped: bool) -> np.ndarray:
        out = (counts - OPERATOR_BYTES * self._is_operator[ids]).astype(np.int32)
        if escaped:
            literal = escaped_positions(ids, self.operator_ids["esc"])
            out[literal] = counts[literal]
        return out

    def _decode(self, ids: np.ndarray) -> str:
        return self.case.decode(self._decode_transformed(ids))

    def _piece(self, token_id: int) -> str:
        return self._names.get(token_id) or self.inner.piece(token_id)

    @classmethod
    def check_spec(cls, spec: TokenizerSpec) -> None:
        case_transform_of(spec)
        cls.inner_class.check_spec(cls.inner_spec(spec))

    @classmethod
    def train(
        cls, spec: TokenizerSpec, texts: Iterable[str], *, num_threads: int, sizes: Sequence[int] | None = None
    ) -> tuple[_CaseOpsTokenizer, dict]:
        cls.check_spec(spec)
        case = case_transform_of(spec)
        counted = {"chars": 0, "operators": 0}

        def transformed() -> Iterator[str]:
            for text in texts:
                text = case.encode(text)
                counted["chars"] += len(text)
                counted["operators"] += sum(text.count(op) for op in OPERATORS.values())
                yield text

        inner_texts = cls._training_texts(transformed())
        if not cls.inner_class.streams_training:
            inner_texts = list(inner_texts)
        inner, stats = cls.inner_class.train(cls.inner_spec(spec), inner_texts, num_threads=num_threads)
        stats = {
            **stats,
            "caseops": {
                "case_transform": case.name,
                "case_table": case.fingerprint,
                "operator_char_share": counted["operators"] / max(counted["chars"], 1),
            },
        }
        return cls(spec, inner), stats

    def payload(self) -> tuple[dict, bytes]:
        header, blob = self.inner.payload()
        return {**header, "case_table": self.case.fingerprint}, blob

    @classmethod
    def from_payload(cls, spec: TokenizerSpec, header: dict, blob: bytes) -> _CaseOpsTokenizer:
        header = dict(header)
        table = header.pop("case_table", None)
        case = case_transform_of(spec)
        if table != case.fingerprint:
            raise TokenizerError(
                f"CaseOps tokenizer {spec.name!r} was built with case-pair table {table!r}, but this Python's "
                f"Unicode data gives {case.fingerprint!r} for the {case.name} transform: its transform would differ"
            )
        return cls(spec, cls.inner_class.from_payload(cls.inner_spec(spec), header, blob))


def escaped_positions(ids: np.ndarray, esc_id: int) -> list[int]:
    """Positions of literal operator characters: the token after each ESC that is not itself escaped."""
    out: list[int] = []
    literal = -1
    for p in np.flatnonzero(ids == esc_id).tolist():
        if p != literal:  # an operator ESC (the one at ``literal`` is an escaped ESC character)
            literal = p + 1
            out.append(literal)
    return out


class CaseOpsSentencePieceTokenizer(_CaseOpsTokenizer):
    kind = "caseops-sp"
    inner_class = SentencePieceTokenizer

    def __init__(self, spec: TokenizerSpec, inner: SentencePieceTokenizer) -> None:
        ids = {}
        for name, op in OPERATORS.items():
            encoded = inner.encode(op).tolist()
            if len(encoded) != 1 or inner.piece(encoded[0]) != op:
                raise TokenizerError(
                    f"spec {spec.name!r}: the SentencePiece model has no reserved piece for the {name} operator "
                    f"(U+{ord(op):04X} encodes to {encoded})"
                )
            ids[name] = encoded[0]
        super().__init__(spec, inner, ids)

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    @staticmethod
    def inner_spec(spec: TokenizerSpec) -> TokenizerSpec:
        if "user_defined_symbols" in spec.options:
            raise SpecError(f"spec {spec.name!r}: caseops-sp reserves user_defined_symbols for its four operators")
        options = {**_inner_options(spec), "user_defined_symbols": list(OPERATORS.values())}
        return replace(spec, kind="sentencepiece", options=options)

    def _encode_transformed(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.inner.encode_with_bytes(texts)

    def _encode_transformed_ids(self, texts: list[str]) -> list[np.ndarray]:
        return self.inner.encode_batch(texts)

    def _decode_transformed(self, ids: np.ndarray) -> str:
        return self.inner.decode(ids)


class CaseOpsHFBPETokenizer(_CaseOpsTokenizer):
    kind = "caseops-hf-bpe"
    inner_class = HFByteLevelBPETokenizer
    streams_training = True

    def __init__(self, spec: TokenizerSpec, inner: HFByteLevelBPETokenizer) -> None:
        n = inner.vocab_size
        super().__init__(spec, inner, {name: n + k for k, name in enumerate(OPERATORS)})
        self._operator_id = {op: np.array([n + k], dtype=np.int32) for k, op in enumerate(OPERATORS.values())}
        self._raw = [inner.token_bytes(i) for i in range(n)] + [op.encode("utf-8") for op in OPERATORS.values()]

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size + len(OPERATORS)

    @staticmethod
    def inner_spec(spec: TokenizerSpec) -> TokenizerSpec:
        return replace(spec, kind="hf-bpe", vocab_size=spec.vocab_size - len(OPERATORS), options=_inner_options(spec))

    @staticmethod
    def _training_texts(transformed: Iterable[str]) -> Iterator[str]:
        return (s for t in transformed for s in OPERATOR_SPLIT.split(t)[0::2] if s)

    def _encode_transformed(self, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        split = [OPERATOR_SPLIT.split(t) for t in texts]  # [segment, operator, segment, ..., segment]
        segments = iter(self.inner.encode_with_bytes([s for parts in split for s in parts[0::2]]))
        operator_bytes = np.array([OPERATOR_BYTES], dtype=np.int32)
        out = []
        for parts in split:
            first_ids, first_counts = next(segments)
            ids, counts = [first_ids], [first_counts]
            for op in parts[1::2]:
                seg_ids, seg_counts = next(segments)
                ids += [self._operator_id[op], seg_ids]
                counts += [operator_bytes, seg_counts]
            out.append((np.concatenate(ids), np.concatenate(counts)))
        return out

    def _decode_transformed(self, ids: np.ndarray) -> str:
        raw = self._raw
        return b"".join([raw[i] for i in ids.tolist()]).decode("utf-8", errors="replace")
