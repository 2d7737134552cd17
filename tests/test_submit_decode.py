"""``submit --check --val-text``: the byte accounting against the original val documents and their decode-and-compare,
for the lossy sp1024 (which decoding alone cannot certify) and a lossless tokenizer, and the failures each must name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from model_data import byte_tokenizer

from pgolf_data.manifest import TOKENIZER_NAME
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.shards import HEADER_BYTES, ShardSet, load_shard
from pgolf_data.tokenizer.artifact import from_artifact
from pgolf_model.runtime import Runtime
from pgolf_model.submission.check import check_folder

RT = Runtime(torch.device("cpu"))
VAL_DOCS = 30
RULES = ("byte accounting", "decode and compare")


@pytest.fixture(scope="module")
def docs(dev_docs):
    return [d for d in dict.fromkeys(dev_docs) if d.strip()][:120]


def write_corpus(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sp_shards(tmp_path_factory, sp1024, docs):
    root = tmp_path_factory.mktemp("decode")
    write_shards(docs, from_artifact(sp1024), root / "shards", ShardConfig(val_docs=VAL_DOCS, workers=1))
    return root / "shards", write_corpus(root / "corpus.jsonl", docs)


def lines(data: Path, val_text: Path | None, tmp_path: Path) -> dict[str, str]:
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    report = check_folder(records, data=data, val_text=str(val_text) if val_text else None, rt=RT)
    return {line.rule: str(line) for line in report.lines if line.rule in RULES}


def test_normalize_is_what_decoding_gives_back(sp1024, docs):
    tok = from_artifact(sp1024)
    assert not tok.lossless
    changed = 0
    for text in docs:
        assert tok.decode(tok.encode(text)) == tok.normalize(text)
        changed += tok.normalize(text) != text
    assert changed > 0  # the dev documents do need normalizing: decoding alone cannot give their bytes
    assert tok.normalize("\ufb01ne  day") == "fine day"  # NFKC folds the ligature; runs of spaces collapse
    assert byte_tokenizer().normalize("\ufb01ne  day") == "\ufb01ne  day"


def test_a_lossy_tokenizer_is_certified_against_the_original_documents(sp_shards, tmp_path):
    data, corpus = sp_shards
    without = lines(data, None, tmp_path)
    assert without["byte accounting"].startswith("CANNOT") and "lossy" in without["byte accounting"]
    assert without["decode and compare"].startswith("CANNOT") and "--val-text" in without["decode and compare"]
    found = lines(data, corpus, tmp_path)
    assert found["byte accounting"].startswith("PASS") and f"all {VAL_DOCS} val documents" in found["byte accounting"]
    assert "sidecar sum = original bytes" in found["byte accounting"]
    assert found["decode and compare"].startswith("PASS") and "as sp1024 normalizes it" in found["decode and compare"]


def val_files(data: Path):
    val = ShardSet.open(data, "val")
    return val.token_files[0], val.byte_files[0]


def bump(path: Path, position: int, delta: int = 1) -> None:
    raw = bytearray(path.read_bytes())
    at = HEADER_BYTES + 2 * position
    value = int.from_bytes(raw[at : at + 2], "little")
    raw[at : at + 2] = (value + delta).to_bytes(2, "little")
    path.write_bytes(bytes(raw))


def doc_position(data: Path, doc: int, inside: int) -> int:
    """The stream position ``inside`` tokens after val document ``doc``'s BOS."""
    bos = from_artifact((data / TOKENIZER_NAME).read_bytes()).bos_id
    return int(np.flatnonzero(np.asarray(load_shard(val_files(data)[0])) == bos)[doc]) + inside


def test_a_sidecar_off_by_one_fails_against_the_original_bytes(sp_shards, tmp_path):
    data, corpus = sp_shards
    bad = Path(shutil.copytree(data, tmp_path / "bad"))
    bump(val_files(bad)[1], doc_position(bad, 5, 3))
    found = lines(bad, corpus, tmp_path)
    assert found["byte accounting"].startswith("FAIL") and "first: document 5" in found["byte accounting"]
    assert "its original text has" in found["byte accounting"]
    assert found["decode and compare"].startswith("PASS")  # the tokens are intact


def test_a_changed_token_fails_decode_and_compare_naming_the_document(sp_shards, tmp_path):
    data, corpus = sp_shards
    bad = Path(shutil.copytree(data, tmp_path / "bad"))
    bump(val_files(bad)[0], doc_position(bad, 7, 4))
    found = lines(bad, corpus, tmp_path)
    assert found["decode and compare"].startswith("FAIL")
    assert "val document 7 is not the tokenizer's encoding of its original: first difference at token 3" in str(
        found["decode and compare"]
    )


def test_originals_that_are_not_the_val_documents_fail(sp_shards, docs, tmp_path):
    data, _ = sp_shards
    other = [*docs[:4], docs[4].replace(" ", "  ", 1) + " extra words", *docs[5:]]
    found = lines(data, write_corpus(tmp_path / "other.jsonl", other), tmp_path)
    assert found["byte accounting"].startswith("FAIL") and "first: document 4" in found["byte accounting"]
    assert found["decode and compare"].startswith("FAIL") and "val document 4" in found["decode and compare"]
    short = lines(data, write_corpus(tmp_path / "short.jsonl", docs[:10]), tmp_path)
    assert all(v.startswith("FAIL") and f"{VAL_DOCS} val documents in the shards, 10" in v for v in short.values())


def test_a_lossless_tokenizer_decodes_to_the_original_itself(docs, tmp_path):
    root = tmp_path / "bytes"
    write_shards(docs, byte_tokenizer(), root, ShardConfig(val_docs=VAL_DOCS, workers=1))
    found = lines(root, write_corpus(tmp_path / "corpus.jsonl", docs), tmp_path)
    line = found["decode and compare"]
    assert line.startswith("PASS") and "decode to the original text" in line
    bad = Path(shutil.copytree(root, tmp_path / "bad"))
    bump(val_files(bad)[0], doc_position(bad, 2, 1), delta=1)
    assert "val document 2" in lines(bad, tmp_path / "corpus.jsonl", tmp_path)["decode and compare"]
