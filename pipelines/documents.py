"""The documents a comparison runs on: a corpus cut into validation (the first N documents) and training (the rest).

Every spec in a comparison sees exactly these documents; the fingerprint (document counts, UTF-8 bytes and the
``DocsHasher`` sha256 of each part) identifies them in cache keys, so the same text under another path is reused and
an edited corpus is not.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from pgolf_data.corpus import Corpus, CorpusError, DocsHasher, open_corpus


@dataclass
class CorpusSplit:
    source: str
    val_docs: int
    max_docs: int | None = None
    text_field: str = "text"
    _fingerprint: dict | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.val_docs <= 0:
            raise CorpusError(f"val_docs must be a positive number of documents, got {self.val_docs}")
        if self.max_docs is not None and self.max_docs <= self.val_docs:
            raise CorpusError(
                f"max_docs {self.max_docs} leaves no training documents after the first {self.val_docs} (validation)"
            )

    def corpus(self) -> Corpus:
        return open_corpus(self.source, text_field=self.text_field, max_docs=self.max_docs)

    def val(self) -> Iterator[str]:
        return itertools.islice(self.corpus(), self.val_docs)

    def train(self) -> Iterator[str]:
        return itertools.islice(self.corpus(), self.val_docs, None)

    def fingerprint(self) -> dict:
        """Counts, bytes and sha256 of both parts, from one streaming pass (computed once per object)."""
        if self._fingerprint is None:
            corpus = self.corpus()
            hashers = {"val": DocsHasher(), "train": DocsHasher()}
            for i, doc in enumerate(corpus):
                hashers["val" if i < self.val_docs else "train"].update(doc)
            if hashers["train"].docs == 0:
                raise CorpusError(
                    f"corpus {self.source}: {hashers['val'].docs} documents, none left for training after the "
                    f"first {self.val_docs} (validation); lower --val-docs"
                )
            parts = {k: {"docs": h.docs, "bytes": h.bytes, "sha256": h.hexdigest()} for k, h in hashers.items()}
            self._fingerprint = {"val_docs": self.val_docs, **parts, "description": corpus.describe()}
        return self._fingerprint

    def content_key(self) -> dict:
        """The fingerprint without the description: what cache keys depend on."""
        fp = self.fingerprint()
        return {"val": fp["val"], "train": fp["train"]}
