"""SentencePiece BPE, the challenge's tokenizer family, trained in memory and stored compactly (see sp_model.py).

Defaults are the challenge's trainer options (docs/challenge.md); a spec's ``options`` override them. Two spec shapes
matter:

- *official* (``sp1024``): ``nmt_nfkc`` normalization and whitespace collapsing, so the text is not recoverable
  (lossy). Byte counts come from the original-text span SentencePiece aligns to each token.
- *lossless*: identity normalization, no whitespace removal, no dummy prefix, byte fallback. ``decode(encode(t)) == t``
  for every string: SentencePiece writes spaces as its meta symbol ``▁`` (U+2581), so a literal ``▁`` in the text
  would come back as a space; it is encoded as the byte-fallback ids of its UTF-8 bytes E2 96 81 instead, which
  decode to ``▁``. Each token's original byte count is then a per-id table lookup.

SentencePiece's trainer silently skips every sentence longer than ``max_sentence_length`` bytes (4,192 by default;
53% of the development corpus's bytes). ``spec.long_docs`` decides: ``"chunk"`` cuts long documents at line ends,
then spaces, then characters, so every byte is trained on; ``"drop"`` skips them as the official trainer does, and
the trainer statistics count what was skipped.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import sentencepiece as spm

from ..shards import VOCAB_LIMIT
from . import sp_model
from .base import TextError, Tokenizer, TokenizerError
from .spec import SpecError, TokenizerSpec
from .training import default_threads

# The challenge's trainer options, from its data/download_hf_docs_and_tokenize.py (docs/challenge.md).
OFFICIAL_OPTIONS: dict[str, Any] = {
    "model_type": "bpe",
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
}
DEFAULT_MAX_SENTENCE_LENGTH = 4192  # SentencePiece's own default, in UTF-8 bytes
# Set by pgolf itself: where the text comes from and goes, and the vocabulary (the spec's vocab_size).
RESERVED_OPTIONS = ("input", "model_prefix", "sentence_iterator", "model_writer", "num_threads", "vocab_size")
META = "\u2581"  # SentencePiece's whitespace symbol
# SentencePiece's refusal of a vocabulary smaller than its reserved pieces plus the text's characters.
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")
# Sentence sampling (input_sentence_size > 0) draws from SentencePiece's process-wide generator: pin its seed.
RANDOM_SEED = 20240520


def trainer_kwargs(spec: TokenizerSpec) -> dict[str, Any]:
    """``SentencePieceTrainer.train`` options for ``spec`` (all but input, output, threads), e.g. for benchmarks."""
    reserved = sorted(set(spec.options) & set(RESERVED_OPTIONS))
    if reserved:
        raise SpecError(f"spec {spec.name!r}: option(s) {', '.join(reserved)} are set by pgolf, not by the spec")
    kwargs = {**OFFICIAL_OPTIONS, **spec.options, "vocab_size": spec.vocab_size}
    if str(kwargs["model_type"]).lower() != "bpe":
        raise SpecError(f"spec {spec.name!r}: model_type {kwargs['model_type']!r}; the sentencepiece kind is BPE only")
    limit = kwargs.get("max_sentence_length", DEFAULT_MAX_SENTENCE_LENGTH)
    if not isinstance(limit, int) or limit < 4:
        raise SpecError(f"spec {spec.name!r}: max_sentence_length {limit!r} must be an integer >= 4 (one character)")
    if kwargs.get("bos_id", 1) < 0:
        raise SpecError(f"spec {spec.name!r}: bos_id must be >= 0: every document in a shard starts with BOS")
    reserved = reserved_pieces(kwargs)
    if spec.vocab_size <= reserved:
        raise SpecError(
            f"spec {spec.name!r}: vocab_size {spec.vocab_size} leaves no room for characters: SentencePiece reserves "
            f"{reserved} pieces ({_reserved_parts(kwargs)}) and adds every character that covers character_coverage "
            f"{kwargs.get('character_coverage', 0.9995)} of the text (dozens for English): use a vocab_size of at "
            f"least {reserved} + those characters"
        )
    return kwargs


def _listed(value: Any) -> list[str]:
    """A SentencePiece list option, given as a list or as comma-separated text."""
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value or ())


def _reserved_counts(kwargs: dict[str, Any]) -> dict[str, int]:
    defaults = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}  # SentencePiece's own
    return {
        "special ids": sum(kwargs.get(key, default) >= 0 for key, default in defaults.items()),
        "control symbols": len(_listed(kwargs.get("control_symbols"))),
        "user-defined symbols": len(_listed(kwargs.get("user_defined_symbols"))),
        "byte pieces": 256 if kwargs.get("byte_fallback") else 0,
    }


def reserved_pieces(kwargs: dict[str, Any]) -> int:
    """The pieces SentencePiece places before any character: special ids, control and user-defined symbols, and the
    256 byte pieces of byte fallback. A vocabulary needs these plus the characters of the text."""
    return sum(_reserved_counts(kwargs).values())


def _reserved_parts(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{n} {what}" for what, n in _reserved_counts(kwargs).items() if n)


def split_long(text: str, limit: int) -> list[str]:
    """Consecutive pieces of ``text``, each at most ``limit`` UTF-8 bytes, cut at line ends, then spaces, then chars.

    Lines (each with its newline) are packed greedily into pieces; a line longer than ``limit`` is cut into words
    (each with its leading space) packed the same way, and a word longer than ``limit`` at the last character
    boundary that fits. So ``"".join(split_long(t, n)) == t`` and there are few pieces.
    """
    return _split_encoded(text, text.encode("utf-8"), limit) if text else []


def _split_encoded(text: str, raw: bytes, limit: int) -> list[str]:
    if len(raw) <= limit:
        return [text]
    ends = _piece_ends(raw, limit)
    return [raw[a:b].decode("utf-8") for a, b in zip([0, *ends], ends)]


def _piece_ends(raw: bytes, limit: int) -> list[int]:
    """The byte offsets where ``split_long``'s pieces of ``raw`` end.

    Found on the UTF-8 bytes with C-level ``find``/``rfind`` inside each piece's window instead of a Python loop over
    every line: newline and space bytes never occur inside a multi-byte character, so cutting there cuts the text.
    Greedy packing takes the last unit end within ``limit`` bytes of the piece start.
    """
    out: list[int] = []
    pos, size = 0, len(raw)
    while size - pos > limit:
        cut = raw.rfind(b"\n", pos, pos + limit) + 1  # a line ends after its newline
        if cut > pos:
            out.append(cut)
        else:  # the line starting here is longer than limit: cut it into words
            cut = raw.find(b"\n", pos) + 1 or size
            out += _word_ends(raw, pos, cut, limit)
        pos = cut
    return [*out, size] if pos < size else out


def _word_ends(raw: bytes, pos: int, stop: int, limit: int) -> list[int]:
    out: list[int] = []
    while stop - pos > limit:
        cut = raw.rfind(b" ", pos + 1, pos + limit + 1)  # a word starts at its space, so it ends before the next one
        if cut > pos:
            out.append(cut)
        else:  # a word longer than limit: cut it at the last character boundary that fits
            cut = raw.find(b" ", pos + 1, stop)
            cut = stop if cut < 0 else cut
            out += _char_ends(raw, pos, cut, limit)
        pos = cut
    return [*out, stop] if pos < stop else out


def _char_ends(raw: bytes, pos: int, stop: int, limit: int) -> list[int]:
    out = []
    while pos < stop:
        end = min(pos + limit, stop)
        while end < stop and raw[end] & 0xC0 == 0x80:  # never cut inside a character
            end -= 1
        out.append(end)
        pos = end
    return out


def training_sentences(
    texts: Sequence[str], limit: int, long_docs: str, sizes: Sequence[int] | None = None
) -> tuple[list[str], dict]:
    """What SentencePiece is given: ``texts`` with long documents chunked or dropped, and the counts of each.

    ``sizes``: the texts' UTF-8 lengths if known; then only the long documents that are chunked are encoded.
    """
    if sizes is None:
        sizes = [len(t.encode("utf-8")) for t in texts]
    elif len(sizes) != len(texts):
        raise ValueError(f"{len(sizes)} sizes for {len(texts)} texts")
    sentences: list[str] = []
    n_bytes = chunked = dropped = dropped_bytes = 0
    for text, size in zip(texts, sizes):
        if size <= limit:
            sentences.append(text)
        elif long_docs == "drop":
            dropped += 1
            dropped_bytes += size
            continue
        else:
            sentences += _split_encoded(text, text.encode("utf-8"), limit)
            chunked += 1
        n_bytes += size
    stats = {
        "docs": len(texts),
        "sentences": len(sentences),
        "bytes_trained": n_bytes,
        "docs_chunked": chunked,
        "docs_dropped": dropped,
        "bytes_dropped": dropped_bytes,
        "max_sentence_length": limit,
        "long_docs": long_docs,
    }
    return sentences, stats


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece BPE model (``model_proto()`` is a valid ``.model`` file) behind pgolf's interface.

    ``encode_with_bytes`` counts bytes of the original text:

    - lossless models: byte-fallback pieces 1, other pieces their UTF-8 length with each ``▁`` one space byte,
      specials 0 (exact: the pieces spell the text);
    - lossy models: SentencePiece aligns every normalized byte to an original byte offset; token ``i`` accounts for
      the original bytes from the end of token ``i-1`` to its own end. So bytes the normalizer dropped before or
      inside the text (leading whitespace, zero-width characters) go to the next token, trailing ones to the last
      token, and the bytes of a character split into byte-fallback pieces go to its last piece. A non-empty text
      that encodes to no tokens at all (only whitespace) has nowhere to put its bytes and raises ``TokenizerError``.
    """

    kind = "sentencepiece"

    def __init__(self, spec: TokenizerSpec, model: bytes) -> None:
        super().__init__(spec)
        self._model = model
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model)
        except RuntimeError as e:
            raise TokenizerError(f"spec {spec.name!r}: SentencePiece rejects the model: {e}") from None
        s = sp_model.Settings.of(model)
        self._lossless = (
            s.normalization == "identity"
            and s.charsmap_bytes == 0
            and not s.add_dummy_prefix
            and not s.remove_extra_whitespaces
            and s.escape_whitespaces
            and s.byte_fallback
            and s.denormalizer_charsmap_bytes == 0
        )
        self._threads = default_threads()
        self._meta_ids = np.array([self._sp.piece_to_id(f"<0x{b:02X}>") for b in META.encode()], dtype=np.int32)
        if self._lossless and not all(self._sp.is_byte(int(i)) for i in self._meta_ids):
            raise TokenizerError(f"spec {spec.name!r}: byte-fallback model lacks the pieces <0xE2> <0x96> <0x81>")

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalized bytes per id (-1: an unknown piece covers a variable span); original bytes per id (lossless).

        Built on first use: only ``encode_with_bytes`` needs them, and a whole vocabulary's piece strings are the
        bulk of constructing a tokenizer, which training does once to write the artifact.
        """
        ids = list(range(self._sp.get_piece_size()))
        pieces = self._sp.id_to_piece(ids)
        is_byte = np.array(self._sp.is_byte(ids), dtype=bool)
        is_special = np.array(self._sp.is_control(ids), dtype=bool) | np.array(self._sp.is_unused(ids), dtype=bool)
        is_unk = np.array(self._sp.is_unknown(ids), dtype=bool)
        utf8 = np.array([len(p.encode("utf-8")) for p in pieces], dtype=np.int64)
        metas = np.array([p.count(META) for p in pieces], dtype=np.int64)
        normalized_len = np.where(is_byte, 1, np.where(is_special, 0, np.where(is_unk, -1, utf8)))
        byte_table = np.where(is_byte, 1, np.where(is_special | is_unk, 0, utf8 - 2 * metas)).astype(np.int32)
        return normalized_len, byte_table

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def special_ids(self) -> dict[str, int]:
        ids = {"bos": self._sp.bos_id(), "eos": self._sp.eos_id(), "pad": self._sp.pad_id(), "unk": self._sp.unk_id()}
        return {name: i for name, i in ids.items() if i >= 0}

    @property
    def lossless(self) -> bool:
        return self._lossless

    def set_threads(self, num_threads: int) -> None:
        self._threads = max(1, num_threads)

    def normalize(self, text: str) -> str:
        """SentencePiece's own normalizer (NFKC, whitespace, dummy prefix for the official models), its ``▁`` as the
        space that decoding gives back."""
        return text if self._lossless else self._sp.normalize(text).replace(META, " ")

    def model_proto(self) -> bytes:
        """The model as a SentencePiece ``.model`` file (trained here: without the trainer's thread count)."""
        return self._model

    def spans(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """SentencePiece's own encoding of each text: ``(ids, begins, ends)``, int64, where ``raw[begin:end]`` is the
        UTF-8 input each piece was aligned to (its ``surface``). Unlike ``encode_batch`` a literal ``▁`` is not
        special-cased: these are the ids an official script gets from the same model."""
        results = self._sp.encode(
            [t.encode("utf-8") for t in texts], out_type="offset_mapping", return_bytes=True, num_threads=self._threads
        )
        out = []
        for r in results:
            offsets = np.array(r["offsets"], dtype=np.int64).reshape(-1, 2)
            out.append((np.array(r["ids"], dtype=np.int64), offsets[:, 0], offsets[:, 1]))
        return out

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        texts = list(texts)
        if not self._lossless or not any(META in t for t in texts):
            return self._encode(texts)
        # Encode the text between literal ▁ and put the ▁'s own UTF-8 bytes between the parts.
        parts, counts = [], []
        for t in texts:
            split = t.split(META)
            parts += split
            counts.append(len(split))
        encoded = self._encode(parts)
        out, i = [], 0
        for n in counts:
            if n == 1:
                out.append(encoded[i])
            else:
                chunks = [encoded[i]]
                for part in encoded[i + 1 : i + n]:
                    chunks += [self._meta_ids, part]
                out.append(np.concatenate(chunks))
            i += n
        return out

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        return self._sp.encode(texts, out_type="numpy", num_threads=self._threads)

    def encode_with_bytes(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        texts = list(texts)
        encoded = self.encode_batch(texts)
        if self._lossless:
            byte_table = self._tables[1]
            return [(ids, byte_table[ids]) for ids in encoded]
        raw = [t.encode("utf-8") for t in texts]
        normalized = self._sp.normalize(raw, with_offsets=True)
        return [
            (ids, self._lossy_counts(i, r, ids, norm, offsets))
            for i, (r, ids, (norm, offsets)) in enumerate(zip(raw, encoded, normalized))
        ]

    def _lossy_counts(self, index: int, raw: bytes, ids: np.ndarray, norm: bytes, offsets: list[int]) -> np.ndarray:
        if len(ids) == 0:
            if raw:
                raise TextError(
                    index,
                    f"{len(raw)} bytes, starting {raw[:40]!r}, encode to no tokens under the lossy tokenizer "
                    f"{self.spec.name!r}, so they cannot be attributed to any token",
                )
            return np.zeros(0, dtype=np.int32)
        lengths = self._tables[0][ids]
        ends_norm = np.cumsum(lengths)
        if (lengths < 0).any() or ends_norm[-1] != len(norm):
            # An unknown piece spans a whole character of unknown length: take SentencePiece's own spans instead.
            spans = self._sp.encode(raw, out_type="offset_mapping", return_bytes=True)["offsets"]
            ends = np.array([end for _, end in spans], dtype=np.int64)
        else:
            ends = np.asarray(offsets, dtype=np.int64)[ends_norm]
        counts = np.diff(ends, prepend=0)
        counts[-1] += len(raw) - ends[-1]
        if (counts < 0).any():
            raise TextError(index, f"SentencePiece reported non-monotonic offsets {ends.tolist()[:20]}")
        return counts.astype(np.int32)

    def _decode(self, ids: np.ndarray) -> str:
        return self._sp.decode(ids.tolist())

    def _piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    @classmethod
    def check_spec(cls, spec: TokenizerSpec) -> None:
        trainer_kwargs(spec)

    @classmethod
    def train(
        cls, spec: TokenizerSpec, texts: list[str], *, num_threads: int, sizes: Sequence[int] | None = None
    ) -> tuple[SentencePieceTokenizer, dict]:
        kwargs = trainer_kwargs(spec)
        limit = kwargs.get("max_sentence_length", DEFAULT_MAX_SENTENCE_LENGTH)
        sentences, stats = training_sentences(texts, limit, spec.long_docs, sizes)
        if not sentences:
            raise TokenizerError(
                f"spec {spec.name!r}: every document is longer than max_sentence_length {limit} bytes and "
                f"long_docs is 'drop', so nothing is left to train on; use long_docs = 'chunk'"
            )
        out = io.BytesIO()
        spm.set_random_generator_seed(RANDOM_SEED)
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=out,
                num_threads=num_threads,
                **{"minloglevel": 2, **kwargs},
            )
        except RuntimeError as e:
            if m := _TOO_SMALL.search(str(e)):
                required = int(m[2])
                raise TokenizerError(
                    f"spec {spec.name!r}: vocab_size {spec.vocab_size} is too small for this text: SentencePiece needs "
                    f"at least {required} pieces here ({_reserved_parts(kwargs)}, and "
                    f"{required - reserved_pieces(kwargs)} characters covering character_coverage "
                    f"{kwargs.get('character_coverage', 0.9995)} of the text); use a vocab_size in "
                    f"{required}..{VOCAB_LIMIT}"
                ) from None
            raise TokenizerError(f"spec {spec.name!r}: SentencePiece training failed: {e}") from None
        return cls(spec, sp_model.canonical_model(out.getvalue())), stats

    def payload(self) -> tuple[dict, bytes]:
        return sp_model.compact(self._model)

    @classmethod
    def from_payload(cls, spec: TokenizerSpec, header: dict, blob: bytes) -> SentencePieceTokenizer:
        return cls(spec, sp_model.expand(header, blob))
