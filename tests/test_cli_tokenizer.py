"""``pgolf-data train-tokenizer`` / ``tokenizer-info`` end to end, and every bad-input case of the data foundation."""

from __future__ import annotations

import json
import re

import pytest

from pgolf_data import cli
from pgolf_data.tokenizer import artifact


@pytest.fixture
def small_corpus(tmp_path, dev_sample):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in dev_sample[:400]), encoding="utf-8")
    return path


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_info(tmp_path, small_corpus, capsys):
    out_dir = tmp_path / "tok"
    code, _, err = run(
        capsys,
        "train-tokenizer",
        "--kind",
        "sentencepiece",
        "--vocab",
        "512",
        "--corpus",
        str(small_corpus),
        "--out",
        str(out_dir),
    )
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.json", "tokenizer.pgt"]
    report = json.loads((out_dir / "report.json").read_text())
    assert report["vocab_size"] == 512 and report["lossless"] is True
    assert report["trained_on"]["docs"] == 400
    assert report["trainer"]["bytes_dropped"] == 0  # long documents are chunked, not silently skipped
    assert report["artifact"]["bytes"] == (out_dir / "tokenizer.pgt").stat().st_size
    assert report["sample"]["byte_counts_exact"] and report["sample"]["roundtrip_docs"] == report["sample"]["docs"]

    code, out, _ = run(capsys, "tokenizer-info", str(out_dir), "--sample-docs", "50")
    assert code == 0
    assert "sentencepiece" in out and "512" in out and "lossless       yes" in out and "tokens/byte" in out
    assert f"{report['artifact']['bytes']:,} bytes" in out


def test_val_docs_are_not_trained_on(tmp_path, small_corpus, capsys):
    out_dir = tmp_path / "tok"
    code, _, err = run(
        capsys,
        "train-tokenizer",
        "--kind",
        "bytes",
        "--corpus",
        str(small_corpus),
        "--val-docs",
        "100",
        "--out",
        str(out_dir),
    )
    assert code == 0, err
    report = artifact.load_report(out_dir)
    assert report["trained_on"]["docs"] == 300 and report["skipped_val_docs"] == 100
    assert report["sample"]["docs"] == 100  # measured on the held-out validation documents


def test_existing_output_is_refused_unless_forced(tmp_path, small_corpus, capsys):
    out_dir = tmp_path / "tok"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    code, _, err = run(
        capsys, "train-tokenizer", "--kind", "bytes", "--corpus", str(small_corpus), "--out", str(out_dir)
    )
    assert code == 2 and "exists; pass --force" in err
    assert (out_dir / "keep.txt").read_text() == "mine"
    # --force replaces a tokenizer directory, never one holding files pgolf did not write.
    code, _, err = run(
        capsys, "train-tokenizer", "--kind", "bytes", "--corpus", str(small_corpus), "--out", str(out_dir), "--force"
    )
    assert code == 2 and "not a pgolf tokenizer directory" in err
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    (out_dir / "keep.txt").unlink()
    for _ in range(2):
        args = ["--kind", "bytes", "--corpus", str(small_corpus), "--out", str(out_dir), "--force"]
        code, _, err = run(capsys, "train-tokenizer", *args)
        assert code == 0, err
        assert sorted(p.name for p in out_dir.iterdir()) == ["report.json", "tokenizer.pgt"]


def test_an_existing_output_is_refused_before_training(tmp_path, small_corpus, capsys, monkeypatch):
    from pgolf_data.tokenizer import training

    out_dir = tmp_path / "tok"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")

    def never(*args, **kwargs):
        raise AssertionError("trained although --out cannot be written")

    monkeypatch.setattr(training, "train", never)
    for force in ([], ["--force"]):
        args = ["--kind", "sentencepiece", "--corpus", str(small_corpus), "--out", str(out_dir), *force]
        code, _, err = run(capsys, "train-tokenizer", *args)
        assert code == 2 and ("exists; pass --force" in err or "not a pgolf tokenizer directory" in err), err


def test_crash_while_saving_leaves_nothing_half_written(tmp_path, small_corpus, capsys, monkeypatch):
    out_dir = tmp_path / "tok"
    out_dir.mkdir()
    (out_dir / "report.json").write_text("previous tokenizer")
    real_replace = artifact.os.replace
    crashed = []

    def crash_on_install(src, dst):
        if str(dst) == str(out_dir) and not crashed:  # the first install of the new directory fails
            crashed.append(src)
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(artifact.os, "replace", crash_on_install)
    code, _, _ = run(
        capsys, "train-tokenizer", "--kind", "bytes", "--corpus", str(small_corpus), "--out", str(out_dir), "--force"
    )
    assert code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl", "tok"]  # no temporary directory left
    assert [p.name for p in out_dir.iterdir()] == ["report.json"]  # the previous output is restored
    assert (out_dir / "report.json").read_text() == "previous tokenizer"


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["--kind", "bytes"], "no such file or directory"),
        ('{"text": "fine"}\n{"text": oops}\n', ["--kind", "bytes"], r"docs\.jsonl:2: malformed JSON"),
        ('{"body": "x"}\n', ["--kind", "bytes"], r"docs\.jsonl:1: no field 'text'"),
        ('{"text": "ok"}\n', ["--kind", "bytes", "--text-field", "body"], r"no field 'body'"),
        ('{"text": ""}\n{"text": ""}\n', ["--kind", "bytes"], "no non-empty documents"),
        ('{"text": "tiny corpus"}\n', ["--kind", "sentencepiece", "--vocab", "4096"], "supports only"),
        ('{"text": "x"}\n', ["--kind", "sentencepiece", "--vocab", "70000"], r"outside \[256, 65536\]"),
        ('{"text": "x"}\n', ["--kind", "sentencepiece", "--vocab", "100"], r"outside \[256, 65536\]"),
        (
            '{"text": "x"}\n',
            ["--kind", "sentencepiece", "--vocab", "256"],
            r"vocab_size 256 leaves no room for characters: SentencePiece reserves 260 pieces \(4 special ids",
        ),
        (
            json.dumps({"text": "".join(chr(0x4E00 + i) for i in range(100))}) + "\n",
            ["--kind", "sentencepiece", "--vocab", "300"],
            r"vocab_size 300 is too small for this text: SentencePiece needs at least 360 pieces here .* use a "
            r"vocab_size in 360\.\.65536",
        ),
        (
            '{"text": "a"}\n\n{"text": "b \\udc80"}\n',
            ["--kind", "bytes"],
            r"docs\.jsonl:3: document 1: field 'text' holds a lone surrogate U\+DC80 at character 2",
        ),
        ('{"text": "x"}\n', ["--spec", "no_such_spec"], "no spec 'no_such_spec'"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, content, args, message):
    corpus = tmp_path / "docs.jsonl"
    if content is not None:
        corpus.write_text(content, encoding="utf-8")
    out_dir = tmp_path / "tok"
    code, _, err = run(capsys, "train-tokenizer", *args, "--corpus", str(corpus), "--out", str(out_dir))
    assert code == 2
    assert "pgolf-data train-tokenizer: error: " in err
    assert re.search(message, err), err
    assert not out_dir.exists()


def test_non_utf8_corpus(tmp_path, capsys):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    code, _, err = run(
        capsys, "train-tokenizer", "--kind", "bytes", "--corpus", str(corpus), "--out", str(tmp_path / "t")
    )
    assert code == 2 and "docs.jsonl:2: invalid UTF-8" in err


def test_cli_training_is_deterministic(tmp_path, small_corpus, capsys):
    for name in ("a", "b"):
        code, _, err = run(
            capsys,
            "train-tokenizer",
            "--spec",
            "sp1024_lossless",
            "--vocab",
            "600",
            "--corpus",
            str(small_corpus),
            "--out",
            str(tmp_path / name),
        )
        assert code == 0, err
    assert (tmp_path / "a" / "tokenizer.pgt").read_bytes() == (tmp_path / "b" / "tokenizer.pgt").read_bytes()


def test_help_texts(capsys):
    for argv in (["--help"], ["train-tokenizer", "--help"], ["tokenizer-info", "--help"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--val-docs" in out and "--train-bytes" in out and "embedded corpus" in out
