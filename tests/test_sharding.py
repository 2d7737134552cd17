"""The shard writer: compatibility with the challenge's export, worker-count independence, crash safety, resume."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from pgolf_data.journal import JOURNAL_NAME, Journal
from pgolf_data.manifest import Manifest
from pgolf_data.sharding import ShardConfig, _ShardFile, encode_documents, write_shards
from pgolf_data.shards import ShardSet
from pgolf_data.tokenizer import artifact, training
from pgolf_data.tokenizer.pure_bytes import ByteTokenizer
from pgolf_data.tokenizer.spec import TokenizerSpec, resolve_spec

REPO = Path(__file__).resolve().parents[1]
EDGE_DOCS = [
    "",
    "é",
    "日本語のテキスト、句読点。",
    "emoji 🎉🎉 and a combining e\u0301",
    "tab\tand  double  spaces\r\nand CRLF",
    "ＦＵＬＬＷＩＤＴＨ and ﬁ ligature",  # NFKC changes these: the lossy sp1024 must still count original bytes
    "a literal \u2581 lower one eighth block",
]


@pytest.fixture(scope="module")
def docs(dev_docs) -> list[str]:
    """Real documents with edge cases on both sides of the validation boundary (val_docs=40)."""
    return [*EDGE_DOCS[:4], *dev_docs[:36], *EDGE_DOCS[4:], *dev_docs[36:200]]


@pytest.fixture(scope="module")
def sp1024(dev_sample) -> bytes:
    """The challenge's official sp1024 spec (nmt_nfkc: lossy), trained on the development sample."""
    tok, _ = training.train(resolve_spec("sp1024"), dev_sample, num_threads=1)
    return artifact.to_artifact(tok)


@pytest.fixture(scope="module")
def bytes260() -> bytes:
    return artifact.to_artifact(ByteTokenizer(TokenizerSpec(name="bytes260", kind="bytes", vocab_size=260)))


def files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` by its relative path (sidecars are in ``bytes/``)."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# --- the challenge's export procedure, written here from its description -----------------------------------------


def challenge_export(encode, bos: int, docs: list[str], val_docs: int, shard_tokens: int, out: Path) -> None:
    """Every document is BOS + its ids (no EOS) in one stream per split; the first ``val_docs`` documents are the
    validation split; the stream is cut into files of exactly ``shard_tokens`` tokens, the last shorter, and the
    switch to train closes the open file. A file is 256 little-endian int32 (magic 20240520, version 1, count, zeros)
    followed by the tokens as little-endian uint16."""
    out.mkdir()
    state = {"split": "val", "buffer": [], "val": 0, "train": 0}

    def flush() -> None:
        buffer = state["buffer"]
        if not buffer:
            return
        name = f"fineweb_{state['split']}_{state[state['split']]:06d}.bin"
        header = struct.pack("<256i", 20240520, 1, len(buffer), *([0] * 253))
        (out / name).write_bytes(header + struct.pack(f"<{len(buffer)}H", *buffer))
        state[state["split"]] += 1
        state["buffer"] = []

    for i, doc in enumerate(docs):
        split = "val" if i < val_docs else "train"
        if split != state["split"]:
            flush()
            state["split"] = split
        for token in [bos, *encode(doc)]:
            state["buffer"].append(int(token))
            if len(state["buffer"]) == shard_tokens:
                flush()
    flush()


def test_sp1024_shards_equal_the_challenge_export_byte_for_byte(tmp_path, docs, sp1024):
    tok = artifact.from_artifact(sp1024)
    sp = spm.SentencePieceProcessor(model_proto=tok.model_proto())
    challenge_export(lambda d: sp.encode(d, out_type=int), sp.bos_id(), docs, 40, 5_000, tmp_path / "reference")
    manifest = write_shards(docs, sp1024, tmp_path / "pgolf", ShardConfig(val_docs=40, shard_tokens=5_000, workers=2))

    reference = files(tmp_path / "reference")
    ours = {k: v for k, v in files(tmp_path / "pgolf").items() if "/" not in k and k.endswith(".bin")}
    assert len(reference) >= 6, "the test should cover several shards per split"
    assert ours == reference
    assert sorted(p.name for p in (tmp_path / "pgolf" / "bytes").iterdir()) == [
        n for n in sorted(reference) if "_val_" in n
    ], "validation sidecars always (in bytes/, named like their shards), train sidecars only on request"
    assert manifest.splits["val"].docs == 40 and manifest.splits["train"].docs == len(docs) - 40


def test_defaults_are_the_challenges():
    config = ShardConfig()
    assert (config.name, config.val_docs, config.shard_tokens, config.train_sidecars) == (
        "fineweb",
        50_000,
        10**8,
        False,
    )


def test_output_is_byte_identical_for_any_number_of_workers(tmp_path, docs, sp1024):
    runs = {}
    for workers in (1, 2):
        config = ShardConfig(val_docs=40, shard_tokens=3_000, train_sidecars=True, workers=workers, batch_bytes=20_000)
        write_shards(docs, sp1024, tmp_path / str(workers), config)
        runs[workers] = files(tmp_path / str(workers))
    assert runs[1] == runs[2]
    assert len(runs[1]) > 10


def test_sidecars_sum_to_each_documents_utf8_length(tmp_path, docs, sp1024):
    manifest = write_shards(docs, sp1024, tmp_path, ShardConfig(val_docs=40, shard_tokens=2_000, train_sidecars=True))
    assert not manifest.tokenizer["lossless"], "the official sp1024 normalizes (NFKC, whitespace)"
    for split, part in (("val", docs[:40]), ("train", docs[40:])):
        shards = ShardSet.open(tmp_path, split)
        assert shards.doc_byte_sums(manifest.bos_id).tolist() == [len(d.encode("utf-8")) for d in part]
        assert len(shards.doc_starts(manifest.bos_id)) == len(part)


def test_manifest_records_what_was_written(tmp_path, docs, bytes260):
    config = ShardConfig(name="web", val_docs=40, shard_tokens=10_000, workers=1)
    manifest = write_shards(docs, bytes260, tmp_path, config)
    assert Manifest.load(tmp_path) == manifest
    assert manifest.tokenizer["artifact"]["sha256"] == hashlib.sha256(bytes260).hexdigest()
    assert (tmp_path / "tokenizer.pgt").read_bytes() == bytes260
    h = hashlib.sha256()
    for d in docs:
        h.update(len(d.encode()).to_bytes(8, "little") + d.encode())
    assert manifest.corpus["docs_sha256"] == h.hexdigest()
    assert manifest.corpus["docs"] == len(docs)
    for split, part in (("val", docs[:40]), ("train", docs[40:])):
        entry = manifest.splits[split]
        text_bytes = sum(len(d.encode()) for d in part)
        assert (entry.docs, entry.bytes, entry.tokens) == (len(part), text_bytes, text_bytes + len(part))
        for shard in entry.shards:
            assert hashlib.sha256((tmp_path / shard.file).read_bytes()).hexdigest() == shard.sha256
        assert sum(s.docs for s in entry.shards) == len(part)
    assert all(s.bytes_file is None for s in manifest.splits["train"].shards)
    assert manifest.pgolf_version and manifest.config["shard_tokens"] == 10_000
    assert not (tmp_path / JOURNAL_NAME).exists()


# --- crash safety and resume -------------------------------------------------------------------------------------


def interrupt_at_commit(monkeypatch, n: int) -> None:
    """Ctrl-C arriving while the n-th shard file is being completed."""
    calls = {"n": 0}
    real = _ShardFile.commit

    def commit(self):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(_ShardFile, "commit", commit)


@pytest.mark.parametrize("crash_at", [1, 4, 9, 17])
def test_resume_after_an_interrupt_equals_an_uninterrupted_run(tmp_path, monkeypatch, docs, bytes260, crash_at):
    config = ShardConfig(val_docs=40, shard_tokens=15_000, workers=1, batch_bytes=30_000)
    write_shards(docs, bytes260, tmp_path / "whole", config)
    expected = files(tmp_path / "whole")
    commits = sum(1 for name in expected if name.endswith(".bin"))
    assert commits > 17

    with monkeypatch.context() as m:
        interrupt_at_commit(m, crash_at)
        with pytest.raises(KeyboardInterrupt):
            write_shards(docs, bytes260, tmp_path / "run", config)
    if crash_at == 1:  # no shard was complete: nothing to resume is kept, and a new run starts cleanly
        assert not (tmp_path / "run").exists()
        write_shards(docs, bytes260, tmp_path / "run", config)
        assert files(tmp_path / "run") == expected
        return
    left = files(tmp_path / "run")
    assert "manifest.json" not in left and JOURNAL_NAME in left
    assert not [n for n in left if n.endswith(".tmp")], "an interrupted run removes its temporary files"
    with pytest.raises(FileExistsError, match="--resume"):
        write_shards(docs, bytes260, tmp_path / "run", config)

    write_shards(docs, bytes260, tmp_path / "run", config, mode="resume")
    assert files(tmp_path / "run") == expected


KILL_SCRIPT = """
import os, signal, sys
from pgolf_data import journal, sharding

def kill_on(cls, name, n):
    real, calls = getattr(cls, name), [0]
    def wrapper(self, *args):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *args)
    setattr(cls, name, wrapper)

if __name__ == "__main__":
    target, n = sys.argv[1], int(sys.argv[2])
    kill_on(sharding._ShardFile if target == "commit" else journal.Journal, target, n)
    from pgolf_data.cli import main
    sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize(("target", "n"), [("commit", 5), ("save", 4)])
def test_a_killed_run_leaves_nothing_complete_and_resumes(tmp_path, docs, bytes260, target, n):
    """SIGKILL while a shard is still a temporary file, or after its rename but before the journal records it."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.pgt").write_bytes(bytes260)
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    args = ["shard", "--tokenizer", str(tmp_path / "tok"), "--corpus", str(corpus), "--val-docs", "40"]
    args += ["--shard-tokens", "15000", "--workers", "1", "--quiet"]
    run = subprocess.run(
        [sys.executable, str(script), target, str(n), *args, "--out", str(tmp_path / "run")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == -9, run.stderr
    left = files(tmp_path / "run")
    assert "manifest.json" not in left
    assert any(name.endswith(".tmp") for name in left) == (target == "commit")

    from pgolf_data.cli import main

    assert main([*args, "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert files(tmp_path / "run") == files(tmp_path / "whole")


def test_resume_rewrites_from_a_damaged_shard(tmp_path, monkeypatch, docs, bytes260):
    config = ShardConfig(val_docs=40, shard_tokens=15_000, workers=1)
    write_shards(docs, bytes260, tmp_path / "whole", config)
    with monkeypatch.context() as m:
        interrupt_at_commit(m, 12)
        with pytest.raises(KeyboardInterrupt):
            write_shards(docs, bytes260, tmp_path / "run", config)
    damaged = tmp_path / "run" / "fineweb_val_000002.bin"
    data = bytearray(damaged.read_bytes())
    data[5000] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (tmp_path / "run" / "fineweb_train_000009.bin.tmp").write_bytes(b"left by a killed run")
    messages = []
    write_shards(docs, bytes260, tmp_path / "run", config, mode="resume", log=messages.append)
    assert files(tmp_path / "run") == files(tmp_path / "whole")
    assert any("fineweb_val_000002.bin: sha256 differs" in m for m in messages), messages
    assert any("removed fineweb_train_000009.bin.tmp" in m for m in messages), messages


def test_resume_refuses_changed_settings_or_corpus(tmp_path, monkeypatch, docs, bytes260):
    config = ShardConfig(val_docs=40, shard_tokens=15_000, workers=1)
    with monkeypatch.context() as m:
        interrupt_at_commit(m, 10)
        with pytest.raises(KeyboardInterrupt):
            write_shards(docs, bytes260, tmp_path, config)
    other = ShardConfig(val_docs=40, shard_tokens=20_000, workers=1)
    with pytest.raises(ValueError, match="shard_tokens: was 15000, now 20000"):
        write_shards(docs, bytes260, tmp_path, other, mode="resume")
    reached = Journal.load(tmp_path / JOURNAL_NAME).resume_point().next_doc
    assert reached > 11, "the interrupted run should have written past the changed document"
    changed = [*docs[:10], docs[10] + "!", *docs[11:]]
    with pytest.raises(ValueError, match=r"the first \d+ documents of the corpus hash to .* the corpus changed"):
        write_shards(changed, bytes260, tmp_path, config, mode="resume")
    with pytest.raises(ValueError, match=f"had reached document {reached}; the corpus changed"):
        write_shards(docs[: reached - 1], bytes260, tmp_path, config, mode="resume")


def test_existing_output_needs_force_and_a_complete_set_is_not_resumed(tmp_path, docs, bytes260):
    config = ShardConfig(val_docs=40, shard_tokens=100_000, workers=1)
    write_shards(docs, bytes260, tmp_path, config)
    first = files(tmp_path)
    with pytest.raises(FileExistsError, match="--force"):
        write_shards(docs, bytes260, tmp_path, config)
    with pytest.raises(FileExistsError, match="nothing to resume"):
        write_shards(docs, bytes260, tmp_path, config, mode="resume")
    (tmp_path / "notes.txt").write_text("not ours")
    write_shards(docs[:100], bytes260, tmp_path, config, mode="force")
    after = files(tmp_path)
    assert after["notes.txt"] == b"not ours", "--force deletes only shard output"
    assert after != first and Manifest.load(tmp_path).corpus["docs"] == 100


# --- bad input ---------------------------------------------------------------------------------------------------


class WideTokenizer(ByteTokenizer):
    @property
    def vocab_size(self) -> int:
        return 70_000


def test_a_vocabulary_over_65536_is_refused_before_anything_is_written(tmp_path, docs):
    tok = WideTokenizer(TokenizerSpec(name="wide", kind="bytes", vocab_size=260))
    with pytest.raises(ValueError, match="70000 ids, more than the 65536"):
        write_shards(docs, tok, tmp_path / "out", ShardConfig(val_docs=1, workers=1))
    assert not (tmp_path / "out").exists()


class BrokenTokenizer(ByteTokenizer):
    """Encodes document text "bos" with a BOS inside, "big" with an id past the vocabulary, "short" with too few
    bytes counted, "huge" with one token worth 70,000 bytes."""

    def encode_with_bytes(self, texts):
        out = super().encode_with_bytes(texts)
        for k, text in enumerate(texts):
            ids, counts = out[k]
            if text == "bos":
                ids[1] = self.bos_id
            elif text == "big":
                ids[0] = 300
            elif text == "short":
                counts[0] = 0
            elif text == "huge":
                counts[0] = 70_000
        return out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bos", "document 12: the tokenizer produced the BOS id 1 inside the document"),
        ("big", "document 12: token id 300 outside the vocabulary of 260"),
        ("short", "document 12: byte counts sum to 4, but the text has 5 UTF-8 bytes"),
        ("huge", "document 12: a token accounts for 70000 bytes, outside uint16"),
    ],
)
def test_bad_tokenizer_output_is_refused_naming_the_document(text, message):
    tok = BrokenTokenizer(TokenizerSpec(name="broken", kind="bytes", vocab_size=260))
    texts = ["fine", text, "also fine"]
    sizes = np.array([len(t.encode()) for t in texts])
    with pytest.raises(ValueError, match=message):
        encode_documents(tok, texts, sizes, 11, with_bytes=True)


def test_a_corpus_without_train_documents_is_an_error(tmp_path, docs, bytes260):
    with pytest.raises(ValueError, match="the corpus has 30 documents, all in the validation split"):
        write_shards(docs[:30], bytes260, tmp_path, ShardConfig(val_docs=40, workers=1))
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ValueError, match="max_docs 40 leaves no train documents"):
        ShardConfig(val_docs=40, max_docs=40)
    with pytest.raises(ValueError, match="shard_tokens must be in"):
        ShardConfig(shard_tokens=10**8 + 1)
    with pytest.raises(ValueError, match="shard name"):
        ShardConfig(name="a/b")


def test_invalid_text_is_refused_naming_the_document(tmp_path, bytes260):
    with pytest.raises(ValueError, match="document 2: not valid Unicode text"):
        write_shards(["a", "b", "lone \ud800 surrogate", "c"], bytes260, tmp_path, ShardConfig(val_docs=1, workers=1))


def test_a_lossy_tokenizers_refusal_names_the_corpus_document(tmp_path, docs, sp1024):
    """The tokenizer numbers the texts of its batch; the error must name the document of the corpus. An error before
    any shard was written leaves nothing that would refuse the corrected rerun."""
    bad = [*docs[:30], "   \n  ", *docs[30:]]  # whitespace only: the lossy sp1024 gives it no token to carry its bytes
    config = ShardConfig(val_docs=40, shard_tokens=10**6, workers=1, batch_bytes=2_000)
    with pytest.raises(ValueError, match=r"^document 30: 6 bytes, starting b'   \\n  ', encode to no tokens"):
        write_shards(bad, sp1024, tmp_path / "out", config)
    assert not (tmp_path / "out").exists(), "no shard written: no journal, no directory"
    write_shards(docs, sp1024, tmp_path / "out", config)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="document 30: "):
        write_shards(bad, sp1024, tmp_path / "kept", config)
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["notes.txt"]


def test_shard_refuses_an_input_inside_its_output_before_removing_anything(tmp_path, bytes260, capsys):
    from pgolf_data.cli import main

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.pgt").write_bytes(bytes260)
    (tok_dir / "report.json").write_text("{}")
    before = files(tok_dir)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(30)))
    args = ["shard", "--tokenizer", str(tok_dir), "--corpus", str(corpus), "--val-docs", "5", "--quiet"]
    assert main([*args, "--out", str(tok_dir), "--force"]) == 2
    err = capsys.readouterr().err
    assert f"the tokenizer {tok_dir / 'tokenizer.pgt'} is inside the output directory {tok_dir}" in err
    assert files(tok_dir) == before
    assert main([*args, "--out", str(tmp_path), "--force"]) == 2
    assert "is inside the output directory" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "shards")]) == 0


def test_ctrl_c_says_what_shard_kept_for_resume(tmp_path, monkeypatch, docs, bytes260, capsys):
    from pgolf_data.cli import main

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.pgt").write_bytes(bytes260)
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / "out"
    args = ["shard", "--tokenizer", str(tok_dir), "--corpus", str(corpus), "--out", str(out), "--quiet"]
    args += ["--val-docs", "40", "--shard-tokens", "15000", "--workers", "1"]
    with monkeypatch.context() as m:
        interrupt_at_commit(m, 7)  # the 4th shard: 3 shards and their 3 sidecars are complete
        assert main(args) == 130
    err = capsys.readouterr().err
    assert f"interrupted; kept 3 complete shard(s) in {out} and resume.json" in err and "--resume" in err
    assert main([*args, "--resume"]) == 0


def test_a_truncated_tokenizer_is_refused_naming_its_file(tmp_path, capsys):
    from pgolf_data.cli import main

    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.pgt").write_bytes(b"PGTK")
    args = ["shard", "--tokenizer", str(tmp_path / "tok"), "--corpus", "default", "--out", str(tmp_path / "out")]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'tok' / 'tokenizer.pgt'}: truncated tokenizer artifact (4 bytes" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
