"""Corpus slices: the tasks' slices, read one after another, are the corpus' own documents in its order."""

from __future__ import annotations

import gzip
import itertools
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data.corpus import CorpusError, open_corpus
from pgolf_data.scale.slices import (
    Plan,
    Slice,
    count_slice,
    files_changed,
    plan_slices,
    read_task,
    slice_lines,
    task_start,
)

DOCS = ["first document\nwith two lines", "ünïcödé ▁ and emoji 🎉", "", "  spaces kept  ", "last", *map(str, range(40))]


def _jsonl(docs, blank_every: int = 0) -> bytes:
    lines = []
    for i, d in enumerate(docs):
        lines.append(json.dumps({"text": d}, ensure_ascii=i % 2 == 0) + "\n")
        if blank_every and i % blank_every == 0:
            lines.append("   \n")
    return "".join(lines).encode()


def _read_all(corpus, tasks: int) -> list[list[str]]:
    """Every task's documents, counting the slices as the count stage does."""
    plan = plan_slices(corpus, tasks)
    counts = {r: [count_slice(s) for s in plan.tasks[r]] for r in range(tasks) if plan.needs_count(r)}
    out, expected_index = [], 0
    for r in range(tasks):
        docs = []
        start = task_start(plan, counts, r)
        for index, text in read_task(plan.tasks[r], start, corpus.text_field, corpus.max_docs):
            assert index == expected_index
            expected_index += 1
            docs.append(text)
        out.append(docs)
    return out


@pytest.fixture
def sources(tmp_path):
    raw = _jsonl(DOCS, blank_every=3)
    (tmp_path / "a.jsonl").write_bytes(raw)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    pq.write_table(pa.table({"text": DOCS}), tmp_path / "a.parquet", row_group_size=4)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "1.jsonl").write_bytes(_jsonl(DOCS[:10]))
    (mixed / "2.jsonl.gz").write_bytes(gzip.compress(_jsonl(DOCS[10:20])))
    (mixed / "3.txt").write_text("a whole text file\n", encoding="utf-8")
    pq.write_table(pa.table({"text": DOCS[20:]}), mixed / "4.parquet", row_group_size=3)
    return tmp_path


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.zst", "a.parquet", "mixed"])
@pytest.mark.parametrize("tasks", [1, 2, 3, 4, 7, 64])
def test_tasks_read_the_corpus_in_order(sources, name, tasks):
    corpus = open_corpus(sources / name)
    parts = _read_all(corpus, tasks)
    assert [d for part in parts for d in part] == list(corpus)


def test_a_plain_jsonl_file_is_shared_out_and_a_compressed_one_is_not(sources):
    plain = plan_slices(open_corpus(sources / "a.jsonl"), 4)
    assert all(len(t) == 1 for t in plain.tasks)
    zst = plan_slices(open_corpus(sources / "a.jsonl.zst"), 4)
    assert [len(t) for t in zst.tasks] == [1, 0, 0, 0]
    assert not zst.needs_count(0)  # no later task needs to know where task 0 ends


def test_max_docs_stops_every_task_at_the_same_document(sources):
    corpus = open_corpus(sources / "a.jsonl", max_docs=17)
    assert [d for part in _read_all(corpus, 5) for d in part] == list(corpus)


def test_embedded_and_saved_datasets(tmp_path):
    default = open_corpus("default")
    assert [d for part in _read_all(default, 3) for d in part] == list(default)
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(tmp_path / "ds")
    saved = open_corpus(tmp_path / "ds")
    parts = _read_all(saved, 3)
    assert [len(p) > 0 for p in parts] == [True, True, True]
    assert [d for part in parts for d in part] == DOCS


def test_errors_name_the_file_and_the_line_as_the_corpus_reader_does(tmp_path):
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(30)]
    lines[23] = '{"text": broken'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as whole:
        list(open_corpus(path))
    with pytest.raises(CorpusError) as sliced:
        _read_all(open_corpus(path), 4)
    assert str(sliced.value) == str(whole.value)
    assert f"{path}:24:" in str(whole.value)


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.text(max_size=30), max_size=25),
    blank_every=st.integers(0, 4),
    tasks=st.integers(1, 9),
    trailing_newline=st.booleans(),
)
def test_any_cut_of_a_jsonl_file_gives_each_line_to_one_slice(
    tmp_path_factory, docs, blank_every, tasks, trailing_newline
):
    raw = _jsonl(docs, blank_every)
    if not trailing_newline:
        raw = raw.rstrip(b"\n")
    path = tmp_path_factory.mktemp("j") / "c.jsonl"
    path.write_bytes(raw)
    corpus = open_corpus(path)
    assert [d for part in _read_all(corpus, tasks) for d in part] == list(corpus)
    cuts = sorted({0, len(raw), *[len(raw) * k // tasks for k in range(tasks)]})
    pieces = [b"".join(slice_lines(path, a, b if b < len(raw) else None)) for a, b in itertools.pairwise(cuts)]
    assert b"".join(pieces) == raw


def test_a_changed_input_file_is_detected(sources):
    plan = plan_slices(open_corpus(sources / "mixed"), 2)
    assert files_changed(plan) == []
    assert Plan.from_json(plan.to_json()) == plan
    target = sources / "mixed" / "3.txt"
    os.utime(target, ns=(0, 0))
    assert files_changed(plan) == [str(target)]


def test_a_count_is_required_where_a_later_task_depends_on_it(sources):
    plan = plan_slices(open_corpus(sources / "a.jsonl"), 2)
    assert plan.needs_count(0) and not plan.needs_count(1)
    assert task_start(plan, {}, 0).first_doc == 0
    with pytest.raises(ValueError, match="no document count"):
        task_start(plan, {}, 1)
    assert count_slice(Slice("text", "x", docs=1)).docs == 1
