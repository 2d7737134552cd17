"""A corpus cut into contiguous slices that separate tasks read on their own, in corpus order.

The shard format needs the documents in corpus order (validation is the first N of them), so each task gets a
contiguous run of slices, and task ``r``'s documents come after those of every task before it:

- a plain ``.jsonl`` file is cut at byte offsets; a slice holds the lines that *start* inside its byte range (the
  rule of Hadoop's text splits), so any cut gives every line to exactly one slice without reading the file first;
- a parquet file is cut between row groups, a ``save_to_disk`` dataset and the embedded corpus between rows;
- a compressed file, a text file and a streamed Hugging Face dataset cannot be entered in the middle: each is one
  slice (like Hadoop, pgolf does not split gzip or zstd streams; decompress them or use several files).

Cuts fall at equal shares of the corpus' size (bytes on disk, or rows), so tasks get similar work; a task may get
no slice at all. Where a slice's document count is not known from metadata (jsonl), the ``count`` stage reads it
(``count_slice``) so that every task knows the corpus index of its first document, and the jsonl line number of its
first line for error messages, before it encodes. Nothing here needs datatrove.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ..corpus import (
    Corpus,
    CorpusError,
    directory_files,
    embedded_cached,
    hf_disk_dataset,
    jsonl_texts,
    open_binary,
    open_parquet,
    parquet_texts,
    rows_texts,
)

SliceKind = Literal["jsonl", "text", "parquet", "rows", "default", "hf"]
_COMPRESSED = (".gz", ".zst")


@dataclass(frozen=True)
class Slice:
    """Consecutive documents of one source: ``[start, stop)`` in the kind's unit (``stop`` None: to the end)."""

    kind: SliceKind
    target: str  # file path, dataset folder or name ("" for the embedded corpus)
    start: int = 0  # jsonl: byte offset; parquet: row group; rows, default: row / document index
    stop: int | None = None
    docs: int | None = None  # known without reading it (parquet, rows, default, text); None: to be counted


@dataclass(frozen=True)
class SliceCount:
    docs: int  # documents (a jsonl file's non-blank lines)
    lines: int  # raw lines read, blank ones included (0 for sources without lines)


@dataclass(frozen=True)
class Plan:
    """Each task's slices, in corpus order, and what the plan was made from (to refuse a changed corpus)."""

    tasks: tuple[tuple[Slice, ...], ...]
    inputs: tuple[tuple[str, int, int], ...]  # (path, size, mtime_ns) of every file read

    def needs_count(self, rank: int) -> bool:
        """Whether task ``rank`` must count its documents: a later task needs the count, and metadata lacks it."""
        later = any(self.tasks[rank + 1 :])
        return later and any(s.docs is None for s in self.tasks[rank])

    def to_json(self) -> str:
        return json.dumps({"tasks": [[asdict(s) for s in t] for t in self.tasks], "inputs": self.inputs}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        tasks = tuple(tuple(Slice(**s) for s in t) for t in data["tasks"])
        return cls(tasks, tuple(tuple(i) for i in data["inputs"]))  # type: ignore[misc]


@dataclass(frozen=True)
class TaskStart:
    """Where a task's documents begin: the corpus index of its first one, and the lines of each jsonl file that
    earlier tasks hold (its first line number there is one more)."""

    first_doc: int
    lines_before: dict[str, int]


# --- planning --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    """A source and the places it may be cut: possible cut ``i`` lies ``offsets[i]`` (bytes or rows) into the unit,
    at the kind's position ``positions[i]``; the first is the start, the last the end."""

    kind: SliceKind
    target: str
    offsets: Sequence[int]
    positions: Sequence[int]
    docs_between: Sequence[int] | None  # documents between consecutive possible cuts, when known

    @property
    def size(self) -> int:
        return self.offsets[-1]


def plan_slices(corpus: Corpus, tasks: int) -> Plan:
    """Cut ``corpus`` into slices for ``tasks`` tasks at (about) equal shares of its size.

    Task boundary ``k`` lies at ``k / tasks`` of the total size. Inside a unit, the possible cut nearest to it
    starts a slice of task ``k``, unless that is the unit's start or end: a unit's first slice belongs to the task
    that holds its start, so a unit that cannot be cut stays whole there.
    """
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    units, inputs = _units(corpus)
    total = sum(u.size for u in units) or 1
    assigned: list[list[Slice]] = [[] for _ in range(tasks)]
    base = 0
    for unit in units:
        owner = {0: base * tasks // total}  # cut index -> the task of the slice starting there
        for k in range(owner[0] + 1, tasks):
            local = k * total / tasks - base
            if local >= unit.size:
                break
            i = bisect.bisect_left(unit.offsets, local)
            nearest = i if i == 0 or unit.offsets[i] - local <= local - unit.offsets[i - 1] else i - 1
            if 0 < nearest < len(unit.offsets) - 1:
                owner[nearest] = k
        cuts = [*sorted(owner), len(unit.offsets) - 1]
        for a, b in itertools.pairwise(cuts):
            docs = None if unit.docs_between is None else sum(unit.docs_between[a:b])
            stop = None if b == len(unit.offsets) - 1 else unit.positions[b]
            assigned[owner[a]].append(Slice(unit.kind, unit.target, unit.positions[a], stop, docs))
        base += unit.size
    return Plan(tuple(tuple(t) for t in assigned), tuple(inputs))


def _units(corpus: Corpus) -> tuple[list[_Unit], list[tuple[str, int, int]]]:
    """The corpus' sources in reading order; paths absolute, since tasks may run in another directory."""
    kind, target = corpus.kind, corpus.target
    if kind not in ("default", "hf"):
        target = os.path.abspath(target)
    if kind == "default":
        sizes = [len(d.encode("utf-8")) for d in embedded_cached()]
        offsets = list(itertools.accumulate(sizes, initial=0))
        return [_Unit("default", "", offsets, range(len(offsets)), [1] * len(sizes))], []
    if kind == "hf":
        return [_Unit("hf", target, [0, 1], [0, 0], None)], []
    if kind == "hf-disk":
        n = len(hf_disk_dataset(target))
        return [_Unit("rows", target, range(n + 1), range(n + 1), [1] * n)], []
    files = directory_files(Path(target)) if kind == "directory" else [(kind, Path(target))]
    units = [_file_unit(k, p, corpus.text_field) for k, p in files]
    return units, [_stat(p) for _, p in files]


def _file_unit(kind: str, path: Path, text_field: str) -> _Unit:
    size = path.stat().st_size
    if kind in ("jsonl", "challenge"):
        if path.name.lower().endswith(_COMPRESSED):
            return _Unit("jsonl", str(path), [0, size], [0, 0], None)
        return _Unit("jsonl", str(path), range(size + 1), range(size + 1), None)
    if kind == "text":
        return _Unit("text", str(path), [0, size], [0, 0], [1])
    if kind == "parquet":
        meta = open_parquet(path, text_field).metadata
        groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
        offsets = list(itertools.accumulate((g.total_byte_size for g in groups), initial=0))
        return _Unit("parquet", str(path), offsets, range(len(groups) + 1), [g.num_rows for g in groups])
    raise CorpusError(f"{path}: cannot slice a corpus file of kind {kind}")


def _stat(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def task_start(plan: Plan, counts: dict[int, list[SliceCount]], rank: int) -> TaskStart:
    """Where task ``rank``'s documents start, from the known document counts of the slices before it and ``counts``
    (per earlier task, per slice). A task without slices reads nothing: its start is 0."""
    doc, lines = 0, {}
    if not plan.tasks[rank]:
        return TaskStart(0, {})
    for r, slices in enumerate(plan.tasks[:rank]):
        for i, s in enumerate(slices):
            count = counts[r][i] if r in counts else None
            if s.docs is None and count is None:
                raise ValueError(f"task {rank}: slice {i} of task {r} ({s.target}) has no document count")
            doc += s.docs if s.docs is not None else count.docs  # type: ignore[union-attr]
            if s.kind == "jsonl" and count is not None:
                lines[s.target] = lines.get(s.target, 0) + count.lines
    return TaskStart(doc, lines)


# --- reading ---------------------------------------------------------------------------------------------------


def slice_lines(path: Path, start: int, stop: int | None) -> Iterator[bytes]:
    """The raw lines of a jsonl file that start at a byte offset in ``[start, stop)`` (a compressed file: all)."""
    if start == 0 and stop is None:
        with open_binary(path) as f:
            yield from f
        return
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the line running through ``start`` began in the previous slice
        position = f.tell()
        for line in f:
            if stop is not None and position >= stop:
                return
            yield line
            position += len(line)


def count_slice(s: Slice) -> SliceCount:
    """How many documents (and raw lines) a slice holds, reading as little as its kind allows."""
    if s.docs is not None:
        return SliceCount(s.docs, 0)
    if s.kind != "jsonl":  # only a streamed dataset has no count, and it is always the corpus' only slice
        raise ValueError(f"cannot count the documents of a {s.kind} slice ({s.target})")
    docs = lines = 0
    for raw in slice_lines(Path(s.target), s.start, s.stop):
        lines += 1
        docs += bool(raw.strip())  # the jsonl reader skips blank lines
    return SliceCount(docs, lines)


def read_slice(s: Slice, text_field: str, first_line: int) -> Iterator[str]:
    """The documents of a slice, read and checked by the corpus' own parsers (the same texts and errors)."""
    if s.kind == "jsonl":
        yield from jsonl_texts(
            slice_lines(Path(s.target), s.start, s.stop), Path(s.target), text_field, first_line=first_line
        )
    elif s.kind == "parquet":
        groups = range(s.start, s.stop if s.stop is not None else _row_groups(s.target, text_field))
        if groups:
            yield from parquet_texts(Path(s.target), text_field, groups)
    elif s.kind == "rows":
        ds = hf_disk_dataset(s.target)
        stop = len(ds) if s.stop is None else s.stop
        for lo in range(s.start, stop, 4096):
            rows = ds.select(range(lo, min(lo + 4096, stop)))
            yield from rows_texts(rows, text_field, s.target, first_row=lo)
    elif s.kind == "default":
        yield from embedded_cached()[s.start : s.stop]
    else:  # "text", "hf": read whole by the corpus
        yield from Corpus(s.target if s.kind == "text" else f"hf:{s.target}", text_field=text_field)


def _row_groups(target: str, text_field: str) -> int:
    return open_parquet(Path(target), text_field).metadata.num_row_groups


def read_task(
    slices: Sequence[Slice], start: TaskStart, text_field: str, max_docs: int | None
) -> Iterator[tuple[int, str]]:
    """``(corpus index, text)`` of a task's documents, in order, stopping before index ``max_docs``.

    A task holds at most one slice of each file (``plan_slices`` cuts a file only at task boundaries), so a jsonl
    slice's first line is the one after the lines earlier tasks hold.
    """
    index = start.first_doc
    for s in slices:
        for text in read_slice(s, text_field, start.lines_before.get(s.target, 0) + 1):
            if max_docs is not None and index >= max_docs:
                return
            yield index, text
            index += 1


def files_changed(plan: Plan) -> list[str]:
    """The input files whose size or modification time differ from the plan's record (or that are gone)."""
    changed = []
    for path, size, mtime in plan.inputs:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            changed.append(f"{path} (missing)")
            continue
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            changed.append(path)
    return changed
