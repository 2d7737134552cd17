"""The one interface every tokenizer kind implements.

Ids never include BOS: the shard writer prepends it. ``encode_with_bytes`` is the contract that makes BPB exact:
for every document the byte counts sum to ``len(text.encode("utf-8"))`` of the *original* text, for lossless and
lossy kinds alike (a lossy kind attributes the original bytes of each span it consumed, see docs/bpb.md).

``decode`` and ``piece`` are template methods: the base class refuses ids outside the vocabulary, then calls the
kind's ``_decode`` / ``_piece``, which only ever see valid ids.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np

from .spec import TokenizerSpec


class TokenizerError(ValueError):
    """Bad tokenizer input, spec or artifact; the message names the offending value."""


class TextError(TokenizerError):
    """One text of a batch the tokenizer cannot handle; ``index`` is its position in the batch, so that a caller
    encoding documents can name the document instead (``sharding.encode_documents``)."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(f"text {index}: {detail}")
        self.index, self.detail = index, detail


class Tokenizer(ABC):
    kind: ClassVar[str]
    # Whether ``train`` takes its texts as an iterable it reads once (so a corpus need not fit in memory).
    streams_training: ClassVar[bool] = False

    def __init__(self, spec: TokenizerSpec) -> None:
        self.spec = spec

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def special_ids(self) -> dict[str, int]:
        """Named special ids, at least ``bos``."""

    @property
    def bos_id(self) -> int:
        return self.special_ids["bos"]

    @property
    @abstractmethod
    def lossless(self) -> bool:
        """True when ``decode(encode(text)) == text`` for every string."""

    def normalize(self, text: str) -> str | None:
        """``text`` as the tokenizer normalizes it before encoding: what ``decode(encode(text))`` gives back unless a
        piece is unknown (``submit --check``'s decode-and-compare). The text itself for a lossless tokenizer; None
        where the kind cannot say."""
        return text if self.lossless else None

    @property
    def caseops(self) -> bool:
        return False

    @abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids (int32, no BOS) per text."""

    @abstractmethod
    def encode_with_bytes(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(ids, byte_counts)`` per text; both int32 of equal length, counts summing to the text's UTF-8 length."""

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids``; an id outside the vocabulary raises ``TokenizerError``."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        self.check_ids(ids)
        return self._decode(ids)

    @abstractmethod
    def _decode(self, ids: np.ndarray) -> str:
        """The kind's decoding of int64 ids already checked to be inside the vocabulary."""

    def check_ids(self, ids: np.ndarray) -> None:
        """Raise ``TokenizerError`` naming the first id of ``ids`` outside ``[0, vocab_size)``."""
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bad.any():
            raise TokenizerError(f"token id {int(ids[bad][0])} is outside the vocabulary [0, {self.vocab_size})")

    def set_threads(self, num_threads: int) -> None:
        """Cap the threads one encode call may use (a no-op for kinds that encode on one thread).

        The shard writer gives each worker process one thread, so that N workers use N cores.
        """
        return None

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def piece(self, token_id: int) -> str:
        """A printable form of one token, for inspection; an id outside the vocabulary raises ``TokenizerError``."""
        self.check_ids(np.array([token_id], dtype=np.int64))
        return self._piece(token_id)

    def _piece(self, token_id: int) -> str:
        """The kind's printable form of a valid id: its decoded text unless the kind knows better."""
        return self._decode(np.array([token_id], dtype=np.int64))

    @classmethod
    @abstractmethod
    def check_spec(cls, spec: TokenizerSpec) -> object:
        """Raise on a spec this kind cannot train, so bad specs fail before any corpus is read."""

    @classmethod
    @abstractmethod
    def train(
        cls, spec: TokenizerSpec, texts: Iterable[str], *, num_threads: int, sizes: Sequence[int] | None = None
    ) -> tuple[Tokenizer, dict]:
        """Train on ``texts``; return the tokenizer and trainer statistics (what it was actually trained on).

        ``texts`` is a list, or for a kind with ``streams_training`` any iterable, which it reads once.
        ``sizes``: each text's UTF-8 length when the caller has measured them already (``collect_sample`` has): a
        kind that needs them takes these instead of encoding the whole corpus a second time.
        """

    @abstractmethod
    def payload(self) -> tuple[dict, bytes]:
        """Everything needed to rebuild this tokenizer: a JSON-able header and one binary blob (see artifact.py)."""

    @classmethod
    @abstractmethod
    def from_payload(cls, spec: TokenizerSpec, header: dict, blob: bytes) -> Tokenizer: ...
