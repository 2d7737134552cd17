"""Tokenizer kinds behind one interface (``base.Tokenizer``), their specs, training and compact artifacts.

- ``base``: the interface; ``spec``: the TOML specs of ``tokenizers/``; ``training``: training any kind from a document
  stream; ``artifact``: the compact ``tokenizer.pgt``; ``metrics``: tokens per byte and round-trip checks on a sample;
- the kinds: ``sentencepiece_bpe`` (with ``sp_model``, SentencePiece's ``.model`` read and stored compactly),
  ``hf_bpe`` (HF byte-level BPE), ``pure_bytes`` (byte260), ``caseops_bpe`` (CaseOps around either BPE, with the
  transform itself in ``caseops``).

Kinds are imported lazily so that, e.g., reading shards never imports SentencePiece.
"""

from __future__ import annotations

import importlib

from .base import Tokenizer, TokenizerError
from .spec import KINDS, SpecError, TokenizerSpec

_KIND_CLASSES = {
    "sentencepiece": ("sentencepiece_bpe", "SentencePieceTokenizer"),
    "hf-bpe": ("hf_bpe", "HFByteLevelBPETokenizer"),
    "bytes": ("pure_bytes", "ByteTokenizer"),
    "caseops-sp": ("caseops_bpe", "CaseOpsSentencePieceTokenizer"),
    "caseops-hf-bpe": ("caseops_bpe", "CaseOpsHFBPETokenizer"),
}
assert set(_KIND_CLASSES) == set(KINDS), "every spec kind needs a class"


def kind_class(kind: str) -> type[Tokenizer]:
    if kind not in _KIND_CLASSES:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; known: {', '.join(_KIND_CLASSES)}")
    module, name = _KIND_CLASSES[kind]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = ["KINDS", "SpecError", "Tokenizer", "TokenizerError", "TokenizerSpec", "kind_class"]
