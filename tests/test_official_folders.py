"""pgolf's shard folders and the official scripts' both ways: the sidecar layout against each official loader's glob,
``pgolf-data export`` for the baseline and the CaseOps records, official folders as input (``pgolf-data sidecars``,
``verify`` without a manifest, training and scoring them), and shards bound to their tokenizer."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from pgolf_data.cli import main as data_main
from pgolf_data.folder import FolderError, TokenizerMismatchError, check_ids, open_folder
from pgolf_data.official_export import export_folder
from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.shards import HEADER_BYTES, ShardFormatError, ShardSet, shard_filename, write_shard
from pgolf_data.sidecars import add_sidecars
from pgolf_data.tokenizer import artifact, training
from pgolf_data.tokenizer.interop import artifact_bytes, export_model_proto
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.spec import TokenizerSpec, resolve_spec
from pgolf_data.verify import verify

VAL_DOCS = 30
SHARD_TOKENS = 6_000


# --- the official loaders, written from their description (docs/formats.md, official folders) ---------------------


def read_official_shard(path: str) -> np.ndarray:
    """The official loaders' shard read: 256 int32 header words (magic 20240520, version 1, count), the file exactly
    header + 2 * count bytes, then the uint16 tokens."""
    raw = Path(path).read_bytes()
    magic, version, count = struct.unpack_from("<3i", raw)
    assert (magic, version) == (20240520, 1) and len(raw) == 1024 + 2 * count, path
    return np.frombuffer(raw, dtype="<u2", offset=1024)


def baseline_files(data_path: Path) -> dict[str, list[str]]:
    """The baseline train_gpt.py (and every record before 2026-04-18): two unfiltered globs, sorted."""
    return {
        "train": sorted(glob.glob(str(data_path / "fineweb_train_*.bin"))),
        "val": sorted(glob.glob(str(data_path / "fineweb_val_*.bin"))),
    }


def caseops_record_files(data_path: Path) -> dict[str, list[str]]:
    """The CaseOps records: the same train glob, the val glob without names holding ``_bytes_``, and the sidecar
    glob ``fineweb_val_bytes_*.bin``, each sorted."""
    return {
        "train": sorted(glob.glob(str(data_path / "fineweb_train_*.bin"))),
        "val": sorted(p for p in glob.glob(str(data_path / "fineweb_val_*.bin")) if "_bytes_" not in Path(p).name),
        "val_bytes": sorted(glob.glob(str(data_path / "fineweb_val_bytes_*.bin"))),
    }


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docs(dev_docs) -> list[str]:
    return ["  leading and trailing spaces  ", *dev_docs[:200]]


@pytest.fixture(scope="module")
def sp(dev_sample) -> tuple:
    """The challenge's sp1024 options at vocab 400: (tokenizer, artifact bytes)."""
    tok, _ = training.train(resolve_spec("sp1024").with_overrides(vocab_size=400), dev_sample[:300], num_threads=1)
    return tok, artifact.to_artifact(tok)


@pytest.fixture(scope="module")
def pgolf_folder(tmp_path_factory, docs, sp) -> Path:
    """A default pgolf folder (train sidecars too), several shards per split."""
    out = tmp_path_factory.mktemp("pgolf") / "shards"
    config = ShardConfig(val_docs=VAL_DOCS, shard_tokens=SHARD_TOKENS, train_sidecars=True, workers=2)
    write_shards(docs, sp[1], out, config)
    return out


@pytest.fixture
def official(pgolf_folder, tmp_path) -> Path:
    """The same tokens as the challenge's export leaves them: token shards only."""
    out = tmp_path / "official"
    out.mkdir()
    for p in pgolf_folder.glob("fineweb_*.bin"):
        shutil.copyfile(p, out / p.name)
    return out


def tokens_of(files: list[str]) -> np.ndarray:
    return np.concatenate([read_official_shard(f) for f in files])


# --- 1. the sidecar layout against every official glob ----------------------------------------------------------


def test_no_official_glob_reads_a_default_pgolf_folders_sidecar_as_tokens(pgolf_folder):
    splits = {s: ShardSet.open(pgolf_folder, s) for s in ("train", "val")}
    assert all(s.sidecar_layout == "bytes/" and len(s.token_files) >= 2 for s in splits.values())
    for files in (baseline_files(pgolf_folder), caseops_record_files(pgolf_folder)):
        for split in ("train", "val"):
            assert files[split] == [str(p) for p in splits[split].token_files]
            assert np.array_equal(tokens_of(files[split]), splits[split].read(0, splits[split].num_tokens))
    assert caseops_record_files(pgolf_folder)["val_bytes"] == []  # the records' script stops: no sidecar found


def test_readers_accept_the_previous_and_the_records_layout(pgolf_folder, tmp_path):
    want = ShardSet.open(pgolf_folder, "val").read(0, ShardSet.open(pgolf_folder, "val").num_tokens, sidecar=True)
    beside = Path(shutil.copytree(pgolf_folder, tmp_path / "beside"))
    for p in sorted((beside / "bytes").glob("fineweb_val_*.bin")):
        os.replace(p, beside / p.name.replace("_val_", "_val_bytes_"))  # pgolf's earlier names, the records' too
    shutil.rmtree(beside / "bytes")
    val = ShardSet.open(beside, "val")
    assert val.sidecar_layout == "beside" and np.array_equal(val.read(0, val.num_tokens, sidecar=True), want)
    assert caseops_record_files(beside)["val_bytes"] == [str(p) for p in val.byte_files]
    assert baseline_files(beside)["val"] != [str(p) for p in val.token_files]  # why the layout moved


# --- 2. export ---------------------------------------------------------------------------------------------------


def test_export_for_the_baseline_is_read_as_it_is(pgolf_folder, sp, tmp_path, capsys):
    out = tmp_path / "baseline"
    assert data_main(["export", str(pgolf_folder), "--for", "baseline", "--out", str(out)]) == 0
    env = dict(kv.split("=", 1) for kv in capsys.readouterr().out.split() if "=" in kv and kv[0] != "-")
    assert env == {"DATA_PATH": str(out.resolve()), "TOKENIZER_PATH": str((out / "fineweb_400_bpe.model").resolve()),
                   "VOCAB_SIZE": "400"}  # fmt: skip
    assert Path(env["TOKENIZER_PATH"]).read_bytes() == export_model_proto(sp[0])
    files = baseline_files(out)
    for split in ("train", "val"):
        shards = ShardSet.open(pgolf_folder, split)
        assert [Path(f).name for f in files[split]] == [p.name for p in shards.token_files]
        assert all(os.stat(f).st_ino == os.stat(p).st_ino for f, p in zip(files[split], shards.token_files))
    written = [Path(f).name for f in files["train"] + files["val"]] + ["fineweb_400_bpe.model"]
    assert sorted(p.name for p in out.iterdir()) == sorted(written)  # no sidecar: the baseline would read it


def test_export_refuses_what_its_script_would_score_wrong_and_foreign_files(pgolf_folder, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_folder(pgolf_folder, "baseline", out)
    with pytest.raises(FileExistsError, match=r"notes\.txt, which an export does not write"):
        export_folder(pgolf_folder, "baseline", out, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="writes the records' byte counts, computed from the corpus"):
        export_folder(pgolf_folder, "caseops-record", tmp_path / "y")
    byte_dir = tmp_path / "bytes_shards"
    write_shards(["a", "b", "c"], ByteTokenizer(TokenizerSpec("b", "bytes", 260)), byte_dir, ShardConfig(val_docs=1))
    with pytest.raises(ValueError, match="scores a sentencepiece tokenizer right, not this bytes one"):
        export_folder(byte_dir, "baseline", tmp_path / "z")


def test_export_for_the_caseops_records_writes_their_sidecar(pgolf_folder, sp, docs, tmp_path):
    """The records' glob finds tokens and the records' byte counts (here with a plain SentencePiece model: the
    CaseOps model's own equality with the records' export is in test_caseops_record.py)."""
    from pgolf_data.tokenizer.record_sidecar import record_encode_with_bytes

    result = export_folder(pgolf_folder, "caseops-record", tmp_path / "rec", corpus=docs)
    assert result.env["CASEOPS_ENABLED"] == "1" and result.linked == len(list(pgolf_folder.glob("fineweb_*.bin")))
    files = caseops_record_files(tmp_path / "rec")
    val = ShardSet.open(pgolf_folder, "val")
    assert [Path(f).name for f in files["val"]] == [p.name for p in val.token_files]
    assert [read_official_shard(f).size for f in files["val_bytes"]] == list(val.counts)
    want = np.concatenate([part for _, c in record_encode_with_bytes(sp[0], docs[:VAL_DOCS]) for part in ([0], c)])
    assert np.array_equal(tokens_of(files["val_bytes"]), want)
    exact = val.read(0, val.num_tokens, sidecar=True).astype(np.int64)
    doc_of = np.cumsum(val.read(0, val.num_tokens) == sp[0].bos_id) - 1
    differs = exact != want
    assert result.sidecar_diff["bytes"] == exact.sum() - want.sum() >= 4  # at least document 0's outer spaces
    assert result.sidecar_diff["tokens"] == differs.sum()
    assert result.sidecar_diff["docs"] == len(set(doc_of[differs].tolist())) and 0 in doc_of[differs]


# --- 3. official folders as input ----------------------------------------------------------------------------------


def test_sidecars_added_to_an_official_folder_equal_what_shard_writes(official, pgolf_folder, sp, docs, capsys):
    assert data_main(["inspect", str(official)]) == 0
    assert "no manifest.json" in capsys.readouterr().out
    index = add_sidecars(official, sp[1], docs, train=True, workers=2)
    assert data_main(["inspect", str(official)]) == 0 and "sidecars in bytes/" in capsys.readouterr().out
    assert data_main(["inspect", str(official / "bytes" / "fineweb_val_000000.bin")]) == 0
    assert "(byte sidecar, split val" in capsys.readouterr().out
    for p in sorted((pgolf_folder / "bytes").iterdir()):
        assert (official / "bytes" / p.name).read_bytes() == p.read_bytes(), p.name
    folder = open_folder(official)
    assert folder.official and folder.exact_sidecars and folder.tokenizer_sha256 == index.tokenizer["sha256"]
    assert index.splits["val"].docs == VAL_DOCS and index.splits["train"].docs == len(docs) - VAL_DOCS
    assert baseline_files(official)["val"] == [str(p) for p in ShardSet.open(official, "val").token_files]
    report = verify(official, tokenizer=sp[1])
    assert report.ok, report.format()
    assert "sha256 val" in report.format()


def test_sidecars_refuse_a_corpus_that_does_not_reproduce_the_tokens(official, sp, docs):
    before = sorted(p.name for p in official.rglob("*"))
    changed = [*docs[:5], docs[5] + " (edited)", *docs[6:]]
    with pytest.raises(ValueError, match=r"corpus document 5 \(val document 5\), token \d+ .*no sidecar written"):
        add_sidecars(official, sp[1], changed, workers=1)
    with pytest.raises(ValueError, match=r"the corpus ran out after 29 documents"):
        add_sidecars(official, sp[1], docs[:29], workers=1)
    assert sorted(p.name for p in official.rglob("*")) == before


def test_sidecars_on_a_partial_train_download(official, sp, docs):
    """An official train split cut inside a document (a partial download) gets counts for the tokens present."""
    last = sorted(official.glob("fineweb_train_*.bin"))[-1]
    tokens = read_official_shard(str(last))
    write_shard(last, tokens[: tokens.size // 2])
    add_sidecars(official, sp[1], docs, train=True, workers=1)
    train = ShardSet.open(official, "train")
    assert train.sidecar_layout == "bytes/" and train.byte_files[-1].stat().st_size == last.stat().st_size


def test_sidecars_cli_refuses_a_pgolf_folder_and_reruns_only_with_force(official, pgolf_folder, sp, docs, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    tok_dir = tmp_path / "tok"
    artifact.save(sp[0], tok_dir, {})
    base = ["sidecars", "--tokenizer", str(tok_dir), "--corpus", str(corpus), "--workers", "1", "--quiet"]
    assert data_main([*base, str(pgolf_folder)]) == 2
    assert data_main([*base, str(official)]) == 0
    assert data_main([*base, str(official)]) == 2  # already there
    assert data_main([*base, "--force", str(official)]) == 0


def test_verify_checks_a_folder_without_manifest_and_says_what_it_could_not(official, sp):
    report = verify(official)
    assert report.ok, report.format()
    text = report.format()
    assert "no --tokenizer, so the id range and BOS were not checked" in text
    assert "no recorded sha256, document count or corpus hash" in text and "pgolf-data sidecars" in text
    with_tok = verify(official, tokenizer=sp[1])
    assert with_tok.ok and f"ok     bos val: {VAL_DOCS} documents" in with_tok.format()
    tokens = read_official_shard(str(official / "fineweb_val_000001.bin")).copy()
    tokens[3] = 65_000
    write_shard(official / "fineweb_val_000001.bin", tokens)
    bad = verify(official, tokenizer=sp[1])
    assert not bad.ok and "fineweb_val_000001.bin: offset 1030" in bad.format()


def test_train_and_evaluate_an_official_folder_with_its_model_file(official, sp, tmp_path, capsys):
    from pgolf_model import evaluate
    from pgolf_model.presets import smoke
    from pgolf_model.train import main as train_main

    model = tmp_path / "fineweb_400_bpe.model"
    model.write_bytes(export_model_proto(sp[0]))
    out = tmp_path / "run"
    argv = ["--data", str(official), "--tokenizer", str(model), "--preset", "smoke", "--out", str(out)]
    argv += ["--train.iterations", "4", "--train.val_every", "2", "--no-progress"]
    assert smoke().train.seq_len == 64
    assert train_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "val_bpb" not in summary and "artifact_val_bpb" not in summary
    assert summary["artifact_val_bpb_official"] > 0 and summary["data"] == "official shard folder (no manifest)"
    val = ShardSet.open(official, "val")
    assert summary["val_targets_official"] == (val.num_tokens - 1) // 64 * 64
    vals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    vals = [r for r in vals if r["event"] == "val"]
    assert vals and all("val_bpb_official" in r and "val_bpb" not in r for r in vals)
    assert evaluate.main([str(out / "model.pga"), "--data", str(official)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("val_bpb_official ") and "SentencePiece piece formula" in line and "val_bpb " not in line


# --- 4. shards bound to their tokenizer ------------------------------------------------------------------------------


def test_train_refuses_another_tokenizer_with_both_hashes(pgolf_folder, sp, dev_sample, tmp_path):
    from pgolf_model.presets import bind_tokenizer, smoke
    from pgolf_model.training.trainer import load_inputs

    other, _ = training.train(resolve_spec("sp1024").with_overrides(vocab_size=400), dev_sample[:250], num_threads=1)
    other_dir = tmp_path / "other"
    artifact.save(other, other_dir, {})
    cfg = bind_tokenizer(smoke(), other)
    given = artifact_bytes(other_dir)
    with pytest.raises(TokenizerMismatchError) as e:
        load_inputs(cfg, pgolf_folder, other_dir, 16_000_000)
    assert hashlib.sha256(given).hexdigest() in str(e.value) and hashlib.sha256(sp[1]).hexdigest() in str(e.value)
    load_inputs(cfg, pgolf_folder, pgolf_folder, 16_000_000)  # the folder's own tokenizer.pgt is bound


@pytest.mark.parametrize("trace", ["resume.json", "tokenizer.pgt", "fineweb_train_000009.bin.tmp", "bytes/x.bin"])
def test_an_unfinished_pgolf_folder_is_refused(official, trace):
    (official / trace).parent.mkdir(exist_ok=True)
    (official / trace).write_bytes(b"{}")
    with pytest.raises(FolderError, match=r"unfinished pgolf shard folder .*resume it first"):
        open_folder(official)


def test_a_manifest_folder_with_missing_shards_is_refused(pgolf_folder, tmp_path):
    broken = Path(shutil.copytree(pgolf_folder, tmp_path / "broken"))
    (broken / "fineweb_train_000002.bin").unlink()
    with pytest.raises(FolderError, match=r"1 file\(s\) listed in manifest.json are missing"):
        open_folder(broken)


def test_ids_are_checked_in_every_train_shard(official):
    train = ShardSet.open(official, "train")
    check_ids(train, 400)
    path = train.token_files[3]
    tokens = read_official_shard(str(path)).copy()
    tokens[17] = 400
    write_shard(path, tokens)
    with pytest.raises(ShardFormatError, match=rf"{path.name}: offset {HEADER_BYTES + 34}: token id 400 is outside"):
        check_ids(ShardSet.open(official, "train"), 400)
    assert shard_filename("fineweb", "train", 3) == path.name
