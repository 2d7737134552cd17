"""Corpus sources: every format yields the same documents in the same order; bad input names file and line."""

from __future__ import annotations

import gzip
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from pgolf_data.corpus import CorpusError, DocsHasher, docs_sha256, embedded_documents, open_corpus, split_docs

DOCS = ["first document\nwith two lines", "ünïcödé ▁ and emoji 🎉", "", "  spaces kept  ", "last"]


def _jsonl_bytes(docs, field="text") -> bytes:
    return "".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)).encode()


@pytest.fixture
def corpus_files(tmp_path):
    raw = _jsonl_bytes(DOCS)
    (tmp_path / "a.jsonl").write_bytes(raw)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    pq.write_table(pa.table({"text": DOCS, "id": list(range(len(DOCS)))}), tmp_path / "a.parquet", row_group_size=2)
    return tmp_path


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet"])
def test_formats_yield_same_documents(corpus_files, name):
    assert list(open_corpus(corpus_files / name)) == DOCS


def test_max_docs_and_split(corpus_files):
    assert list(open_corpus(corpus_files / "a.jsonl", max_docs=2)) == DOCS[:2]
    pairs = list(split_docs(open_corpus(corpus_files / "a.jsonl"), 2))
    assert [s for s, _ in pairs] == ["val", "val", "train", "train", "train"]
    assert [d for _, d in pairs] == DOCS


def test_text_file_is_one_document(tmp_path):
    text = "line one\n\nline two ▁\n"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    (tmp_path / "t.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    assert list(open_corpus(tmp_path / "t.txt")) == [text]
    assert list(open_corpus(tmp_path / "t.txt.zst")) == [text]


def test_directory_reads_files_in_name_order(tmp_path):
    (tmp_path / "b.jsonl").write_bytes(_jsonl_bytes(["b1", "b2"]))
    (tmp_path / "a.jsonl").write_bytes(_jsonl_bytes(["a1"]))
    (tmp_path / "notes.md").write_text("ignored")
    assert list(open_corpus(tmp_path)) == ["a1", "b1", "b2"]


def test_text_field_option(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(_jsonl_bytes(["x", "y"], field="content"))
    assert list(open_corpus(tmp_path / "c.jsonl", text_field="content")) == ["x", "y"]


def test_huggingface_datasets_paths(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(saved))
    assert list(open_corpus(saved)) == DOCS  # a save_to_disk folder
    assert list(open_corpus(f"hf:{saved}")) == DOCS
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_bytes(_jsonl_bytes(DOCS))
    # The streaming load_dataset path, the same one a hub name takes, on a local folder of data files.
    assert list(open_corpus(f"hf:{files}:train")) == DOCS


def test_hf_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="cannot open dataset"):
        list(open_corpus(f"hf:{tmp_path / 'nope'}"))


def test_challenge_docs_verify_sha256(tmp_path):
    raw = _jsonl_bytes(DOCS)
    docs = tmp_path / "docs_selected.jsonl"
    docs.write_bytes(raw)
    sidecar = tmp_path / "docs_selected.source_manifest.json"
    sidecar.write_text(json.dumps({"num_docs": 5, "docs_val": 2, "docs_sha256": hashlib.sha256(raw).hexdigest()}))
    corpus = open_corpus(tmp_path)  # the folder holding docs_selected.jsonl
    assert corpus.kind == "challenge" and corpus.default_val_docs == 2
    assert list(corpus) == DOCS
    assert corpus.describe()["docs_sha256_verified"] is True

    sidecar.write_text(json.dumps({"docs_sha256": "0" * 64}))
    with pytest.raises(CorpusError, match="differs from docs_sha256"):
        list(open_corpus(docs))


def test_embedded_default_corpus_is_real_and_deterministic():
    docs = list(open_corpus("default"))
    assert len(docs) > 300
    assert sum(len(d.encode()) for d in docs) > 1_000_000
    assert all(len(d) >= 200 for d in docs)
    assert docs[:20] == list(embedded_documents())[:20]
    text = " ".join(docs[:50])
    assert text.count(" the ") > 100  # English prose, not code


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b'{"text": "ok"}\n{"text": "bad"\n', r"b\.jsonl:2: malformed JSON"),
        (b'{"text": "ok"}\n{"body": "x"}\n', r"b\.jsonl:2: no field 'text' \(fields: body\)"),
        (b'{"text": 3}\n', r"b\.jsonl:1: field 'text' is int"),
        (b'["text"]\n', r"b\.jsonl:1: expected a JSON object"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"b\.jsonl:2: invalid UTF-8 at byte 13 of the line"),
        (b'{"text": "tab\there"}\n', r"b\.jsonl:1: malformed JSON: Invalid control character at column 14$"),
        (b'{"text": "open', r"b\.jsonl:1: malformed JSON: Unterminated string starting at column 10$"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, pattern):
    (tmp_path / "b.jsonl").write_bytes(content)
    with pytest.raises(CorpusError, match=pattern):
        list(open_corpus(tmp_path / "b.jsonl"))


def test_a_lone_surrogate_names_file_line_and_document(tmp_path):
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(6)]
    lines.insert(2, "")  # a blank line: line numbers and document numbers part
    lines[5] = '{"text": "a lone \\ud800 here"}'
    lines.append('{"text": "a pair \\ud83d\\ude00 is fine"}')
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"s\.jsonl:6: document 4: field 'text' holds a lone surrogate U\+D800 at "):
        list(open_corpus(tmp_path / "s.jsonl"))
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n")
    (tmp_path / "dir" / "b.jsonl").write_text(lines[5] + "\n")
    with pytest.raises(CorpusError, match=r"b\.jsonl:1: document 2: "):  # the corpus' index, not the file's
        list(open_corpus(tmp_path / "dir"))
    assert list(open_corpus(tmp_path / "s.jsonl", max_docs=4))[-1] == "doc 3"  # stops before the bad document
    (tmp_path / "p.jsonl").write_text(lines[-1] + "\n")
    assert list(open_corpus(tmp_path / "p.jsonl")) == ["a pair \U0001f600 is fine"]


def test_blank_lines_are_skipped(tmp_path):
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "a"}\n\n{"text": "b"}\n')
    assert list(open_corpus(tmp_path / "b.jsonl")) == ["a", "b"]


def test_bad_sources(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        open_corpus(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CorpusError, match="unknown file type"):
        open_corpus(tmp_path / "x.csv")
    (tmp_path / "bad.txt").write_bytes(b"fine\nbroken \xff here")
    with pytest.raises(CorpusError, match=r"bad\.txt:2: invalid UTF-8 at byte offset 12"):
        list(open_corpus(tmp_path / "bad.txt"))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    with pytest.raises(CorpusError, match=r"no column 'text' \(columns: body\)"):
        list(open_corpus(tmp_path / "p.parquet"))
    (tmp_path / "fake.parquet").write_bytes(b"not parquet")
    with pytest.raises(CorpusError, match="not a readable parquet file"):
        list(open_corpus(tmp_path / "fake.parquet"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="no corpus files"):
        list(open_corpus(empty))


@given(st.lists(st.text(), max_size=5), st.lists(st.text(), max_size=5))
def test_docs_hash_depends_on_boundaries(a, b):
    joined_a, joined_b = "".join(a), "".join(b)
    if joined_a == joined_b and a != b:
        assert docs_sha256(a) != docs_sha256(b)
    h = DocsHasher()
    for d in a:
        h.update(d)
    assert h.hexdigest() == docs_sha256(a)
    assert h.bytes == len(joined_a.encode())
