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
