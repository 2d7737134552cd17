"""Shared fixtures: the development corpus in ../shared/data when present, the embedded default otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
WEB_DEV = SHARED_DATA / "web_dev.jsonl.zst"


def _read_web_dev() -> list[str]:
    import zstandard

    with open(WEB_DEV, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [json.loads(line)["text"] for line in raw.decode("utf-8").splitlines()]


@pytest.fixture(scope="session")
def dev_docs() -> list[str]:
    """Every document of the development corpus (12,023 web docs), or the embedded default corpus without it."""
    if WEB_DEV.is_file():
        return _read_web_dev()
    from pgolf_data.corpus import open_corpus

    return list(open_corpus("default"))


@pytest.fixture(scope="session")
def dev_sample(dev_docs) -> list[str]:
    """A 2,000-document slice (a few MB) for tests that train tokenizers."""
    return dev_docs[:2000]


@pytest.fixture(scope="session")
def sp1024(dev_sample) -> bytes:
    """The challenge's official sp1024 spec (nmt_nfkc: lossy), trained on the development sample: its artifact."""
    from pgolf_data.tokenizer import artifact, training
    from pgolf_data.tokenizer.spec import resolve_spec

    tok, _ = training.train(resolve_spec("sp1024"), dev_sample, num_threads=1)
    return artifact.to_artifact(tok)


@pytest.fixture(scope="session")
def bytes260() -> bytes:
    """The byte260 tokenizer's artifact."""
    from pgolf_data.tokenizer import artifact
    from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
    from pgolf_data.tokenizer.spec import TokenizerSpec

    return artifact.to_artifact(ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260)))
