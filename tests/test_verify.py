"""``verify`` and ``inspect``: a clean shard directory passes; each kind of damage is reported with file and offset."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from pgolf_data.cli import main
from pgolf_data.manifest import Manifest
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.shards import HEADER_BYTES, ShardFormatError, ShardSet
from pgolf_data.tokenizer import artifact, training
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.spec import TokenizerSpec, resolve_spec
from pgolf_data.verify import VerifyReport, verify

VAL_DOCS = 20


@pytest.fixture(scope="module")
def docs(dev_docs) -> list[str]:
    return ["", "é and 日本", "emoji 🎉", *dev_docs[:60]]


@pytest.fixture(scope="module")
def built(tmp_path_factory, docs) -> Path:
    out = tmp_path_factory.mktemp("built") / "shards"
    tok = ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260))
    write_shards(docs, tok, out, ShardConfig(val_docs=VAL_DOCS, shard_tokens=8_000, workers=1, train_sidecars=True))
    return out


@pytest.fixture
def shards(built, tmp_path) -> Path:
    """A private copy of the built directory, to damage."""
    return Path(shutil.copytree(built, tmp_path / "shards"))


def poke(path: Path, position: int, value: int) -> None:
    """Set the uint16 at token ``position`` of a shard or sidecar file."""
    data = bytearray(path.read_bytes())
    data[HEADER_BYTES + 2 * position : HEADER_BYTES + 2 * position + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def failures(report, check: str) -> list[str]:
    return [str(f) for f in report.failures if f.check == check]


def test_a_clean_directory_passes_every_check(shards, docs):
    report = verify(shards, corpus=docs)
    assert report.ok, report.format()
    text = report.format()
    for check in ("files", "tokenizer", "ids val", "bos train", "sidecar val", "corpus", "round-trip train"):
        assert f"ok     {check}" in text
    assert text.endswith(": OK")
    assert verify(shards).ok


def test_a_truncated_shard_is_reported_and_refused_by_the_reader(shards):
    path = shards / "fineweb_val_000001.bin"
    path.write_bytes(path.read_bytes()[:-7])
    report = verify(shards)
    assert failures(report, "header") == [
        f"{path}: header says 8000 tokens, so 17024 bytes, but the file has 17017 bytes"
    ]
    assert any("sha256" in f for f in failures(report, "sha256"))
    assert not [p for p in report.passed if p.startswith("bos val")], "content checks skip an unreadable split"
    assert any(p.startswith("bos train") for p in report.passed), "the other split is still checked"
    with pytest.raises(ShardFormatError, match=r"fineweb_val_000001\.bin: header says 8000 tokens"):
        ShardSet.open(shards, "val")


def test_a_token_outside_the_vocabulary_is_located(shards):
    path = shards / "fineweb_train_000002.bin"
    poke(path, 123, 1000)
    report = verify(shards)
    assert failures(report, "ids") == [f"{path}: offset {HEADER_BYTES + 246}: token id 1000 >= vocab_size 260"]
    assert failures(report, "sha256")[0].startswith(f"{path}: sha256 ")


def test_a_stray_bos_breaks_the_document_count(shards):
    path = shards / "fineweb_train_000000.bin"
    tokens = np.fromfile(path, dtype="<u2", offset=HEADER_BYTES)
    position = int(np.flatnonzero(tokens != 1)[10])
    poke(path, position, 1)
    manifest = Manifest.load(shards)
    report = verify(shards)
    train = manifest.splits["train"]
    assert f"train: {train.docs + 1} documents (BOS tokens), manifest says {train.docs}" in failures(report, "bos")
    assert f"{path}: {train.shards[0].docs + 1} documents start here, manifest says {train.shards[0].docs}" in failures(
        report, "bos"
    )


def test_a_changed_sidecar_value_is_caught_per_document_with_the_corpus(shards, docs):
    """Move one byte of credit from val document 1 to document 2: totals stay, per-document sums do not."""
    path = shards / "bytes" / "fineweb_val_000000.bin"
    split = ShardSet.open(shards, "val")
    start = int(split.doc_starts(1)[2])
    before, after = split.read(start - 1, start + 2, sidecar=True)[[0, 2]]
    poke(path, start - 1, int(before) - 1)  # the last token of document 1
    poke(path, start + 1, int(after) + 1)  # the first token of document 2, after its BOS
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"][0]["bytes_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (shards / "manifest.json").write_text(json.dumps(manifest))

    assert verify(shards, sample_docs=0).ok, "without the corpus the totals still agree"
    report = verify(shards, corpus=docs, sample_docs=0)
    n1, n2 = len(docs[1].encode()), len(docs[2].encode())
    assert failures(report, "doc-bytes") == [
        f"val document 1: sidecar bytes sum to {n1 - 1}, the document has {n1} UTF-8 bytes",
        f"val document 2: sidecar bytes sum to {n2 + 1}, the document has {n2} UTF-8 bytes",
    ]
    report = verify(shards, sample_docs=VAL_DOCS)
    assert "val document 1" in failures(report, "round-trip")[0], "re-encoding the decoded text disagrees"


def test_sidecar_damage_is_reported(shards):
    side = shards / "bytes" / "fineweb_train_000001.bin"
    poke(side, 0, 9)
    report = verify(shards)
    assert any(f.startswith(f"{side}: sha256") for f in failures(report, "sha256"))
    assert any("values sum to" in f for f in failures(report, "sidecar"))
    side.write_bytes(side.read_bytes()[:2000])
    report = verify(shards)
    assert failures(report, "header") == [
        f"{side}: header says 8000 tokens, so 17024 bytes, but the file has 2000 bytes"
    ]


def test_missing_extra_and_leftover_files_are_listed(shards):
    (shards / "fineweb_train_000003.bin").unlink()
    (shards / "fineweb_val_000009.bin").write_bytes(b"")
    (shards / "fineweb_train_000004.bin.tmp").write_bytes(b"")
    report = verify(shards)
    assert failures(report, "files")[:3] == [
        f"{shards / 'fineweb_train_000004.bin.tmp'}: temporary file left by an interrupted run",
        f"{shards / 'fineweb_val_000009.bin'}: shard file not listed in the manifest",
        f"{shards / 'fineweb_train_000003.bin'}: listed in the manifest but missing",
    ]


def test_a_missing_or_broken_manifest_is_a_failure(shards):
    (shards / "manifest.json").write_text("{not json")
    assert "not valid JSON" in failures(verify(shards), "manifest")[0]
    (shards / "manifest.json").unlink()  # what is left is pgolf's (tokenizer.pgt), not an official folder
    found = failures(verify(shards), "folder")[0]
    assert re.search(r"unfinished pgolf shard folder \(tokenizer\.pgt, .*; no manifest\.json\): resume it first", found)


def test_the_official_cut_is_checked(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["config"]["shard_tokens"] = 9_000
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert f"{shards / 'fineweb_val_000000.bin'}: 8000 tokens; a shard holds exactly 9000" in failures(
        verify(shards), "cut"
    )


def test_a_different_corpus_is_caught(shards, docs):
    changed = list(docs)
    changed[VAL_DOCS] = "X" + docs[VAL_DOCS][1:]  # same length: only the hash and the round trip can tell
    report = verify(shards, corpus=changed)
    assert failures(report, "corpus")[0].startswith("corpus: documents sha256 ")
    assert failures(report, "round-trip")[0].startswith(f"train document 0 ({shards / 'fineweb_train_000000.bin'}")
    assert "decoded text differs at character 0: expected 'X" in failures(report, "round-trip")[-1]

    report = verify(shards, corpus=docs[:-1])
    assert f"train: the corpus has {len(docs) - VAL_DOCS - 1} train documents, the manifest {len(docs) - VAL_DOCS}" in (
        failures(report, "corpus")
    )


def test_a_lossy_tokenizer_is_said_to_be_lossy(tmp_path, docs, dev_sample):
    tok, _ = training.train(resolve_spec("sp1024"), dev_sample[:500], num_threads=1)
    write_shards(docs, tok, tmp_path, ShardConfig(val_docs=VAL_DOCS, shard_tokens=5_000, workers=1))
    report = verify(tmp_path, corpus=docs)
    assert report.ok, report.format()
    assert any("is lossy" in note for note in report.notes)
    assert any("re-encode of the corpus text" in p for p in report.passed)


def test_cli_verify_exit_codes_and_inspect(shards, capsys):
    assert main(["verify", str(shards)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(": OK")
    poke(shards / "fineweb_val_000000.bin", 3, 999)
    assert main(["verify", str(shards)]) == 1
    assert "FAILED ids (1):" in capsys.readouterr().out

    assert main(["inspect", str(shards / "fineweb_train_000000.bin"), "-n", "6"]) == 0
    out = capsys.readouterr().out
    assert "8,000 tokens" in out and "first 6" in out and "pieces     '<s>'" in out
    assert main(["inspect", str(shards / "bytes" / "fineweb_val_000000.bin")]) == 0
    manifest = Manifest.load(shards)
    assert f"{manifest.splits['val'].shards[0].bytes:,} bytes over 8,000 tokens" in capsys.readouterr().out
    assert main(["inspect", str(shards)]) == 0
    assert "with byte sidecars" in capsys.readouterr().out

    (shards / "fineweb_val_000000.bin").write_bytes(b"\x00" * 10)
    assert main(["inspect", str(shards / "fineweb_val_000000.bin")]) == 2
    assert "shorter than the 1024-byte header" in capsys.readouterr().err


def test_cli_shard_writes_what_verify_accepts(tmp_path, docs, capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    artifact.save(ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260)), tmp_path / "tok", {})
    args = ["shard", "--tokenizer", str(tmp_path / "tok"), "--corpus", str(corpus), "--out", str(tmp_path / "out")]
    args += ["--val-docs", "10", "--shard-tokens", "20000", "--workers", "2", "--name", "dev", "--quiet"]
    assert main(args) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "out" / "dev_val_000000.bin").is_file()
    assert main(["verify", str(tmp_path / "out"), "--corpus", str(corpus)]) == 0
    assert main(args) == 2
    assert "--resume to continue an interrupted run or --force" in capsys.readouterr().err
    assert main([*args, "--max-docs", "10"]) == 2
    assert "leaves no train documents" in capsys.readouterr().err


def test_failures_beyond_the_cap_are_counted_not_kept(shards, docs, monkeypatch):
    monkeypatch.setattr("pgolf_data.verify.KEEP_PER_CHECK", 3)
    report = verify(shards, corpus=[d + "!" for d in docs], sample_docs=0)
    assert len(failures(report, "doc-bytes")) == 3
    assert report.counts["doc-bytes"] == len(docs)
    text = report.format(limit=2)
    assert f"FAILED doc-bytes ({len(docs)}):" in text and f"... and {len(docs) - 2} more" in text


def test_a_check_passes_only_when_its_block_finishes_without_a_failure(tmp_path):
    report = VerifyReport(tmp_path)
    with report.check("clean", "nothing wrong"):
        pass
    with report.check("late") as check:
        check.description = "described at the end"
    with report.check("failing", "one failure"):
        report.fail("failing", tmp_path, "bad")
    with pytest.raises(RuntimeError), report.check("raising", "stopped half way"):
        raise RuntimeError("interrupted")
    assert report.passed == ["clean: nothing wrong", "late: described at the end"]
    assert report.counts == {"failing": 1} and not report.ok


def test_with_the_corpus_every_document_is_re_encoded(shards, docs):
    """One token id changed inside a train document, the manifest's sha256 rewritten to match: only re-encoding
    that document finds it, and with the corpus every document is re-encoded."""
    split = ShardSet.open(shards, "train")
    starts = split.doc_starts(1)
    index = len(starts) // 2 + 1  # not a document an even sample of a few would take
    position = int(starts[index]) + 3
    shard = next(i for i, offset in enumerate(split.offsets[1:]) if position < offset)
    path = split.token_files[shard]
    local = position - int(split.offsets[shard])
    token = int(np.asarray(split.tokens(shard))[local])
    poke(path, local, token + 1 if token != 259 else token - 1)
    manifest = json.loads((shards / "manifest.json").read_text())
    entry = manifest["splits"]["train"]["shards"][shard]
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (shards / "manifest.json").write_text(json.dumps(manifest))

    n_train = len(starts)
    sampled = verify(shards, corpus=docs, sample_docs=3)
    assert sampled.ok and f"ok     round-trip train: 3 of {n_train} documents" in sampled.format()
    report = verify(shards, corpus=docs)
    found = failures(report, "round-trip")
    assert found and all(f.startswith(f"train document {index} ") for f in found), found
    assert f"ok     round-trip val: {VAL_DOCS} of {VAL_DOCS} documents" in report.format()
