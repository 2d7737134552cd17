"""Partial shards: what one encode task wrote, for the merge to cut into the official shards.

Task ``r`` writes five files named ``NNNNN.<part>`` (``NNNNN`` = ``r``, five digits as datatrove's own) in the
partials folder, all little-endian:

- ``tokens``: uint16, for each of its documents BOS then the document's ids (the shard stream of its documents);
- ``bytes``: uint16, the byte sidecar values of the documents that get a sidecar (every validation document, and
  the train ones with ``train_sidecars``); they are the first ``sidecar_docs`` of the task's documents, since
  validation comes first;
- ``index``: int64 pairs, per document its tokens (BOS included) and its UTF-8 length;
- ``text``: the documents as the corpus hash reads them (``corpus.DocsHasher.record``), so the merge computes the
  manifest's ``docs_sha256`` without reading the corpus again;
- ``json``: the record: where the documents start, how many there are, each file's size and sha256, the run it
  belongs to, the task's peak memory. It is written last, after the others were flushed and renamed from ``.tmp``
  names, so a partial without its record is unfinished, and the merge refuses a file that differs from its record.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..corpus import DocsHasher
from ..manifest import write_atomic
from ..shards import TOKEN_DTYPE, file_sha256

PARTS = ("tokens", "bytes", "index", "text")
INDEX_DTYPE = np.dtype("<i8")


def partial_path(directory: Path, rank: int, part: str) -> Path:
    return directory / f"{rank:05d}.{part}"


@dataclass(frozen=True)
class PartialRecord:
    rank: int
    run_sha256: str  # the run settings this partial was written under (job.RunSettings.sha256)
    first_doc: int  # corpus index of its first document
    docs: int
    tokens: int
    sidecar_docs: int  # its first sidecar_docs documents have sidecar values in ``bytes``
    sidecar_tokens: int
    text_bytes: int  # UTF-8 bytes of its documents
    files: dict[str, dict[str, int | str]]  # part -> {"size", "sha256"}
    peak_rss_bytes: int  # of the process that ran the task, at its end
    seconds: float

    @classmethod
    def load(cls, directory: Path, rank: int) -> PartialRecord:
        return cls(**json.loads(partial_path(directory, rank, "json").read_text(encoding="utf-8")))

    def save(self, directory: Path) -> None:
        data = json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"
        write_atomic(partial_path(directory, self.rank, "json"), data.encode())


def check_partial(directory: Path, rank: int, run_sha256: str, *, deep: bool = True) -> str | None:
    """What is wrong with task ``rank``'s partial, or None when its files are as its record says (sizes, and with
    ``deep`` their sha256)."""
    try:
        record = PartialRecord.load(directory, rank)
    except FileNotFoundError:
        return "no record (the task did not finish)"
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        return f"unreadable record ({e})"
    if record.run_sha256 != run_sha256:
        return "written by a run with other settings"
    for part in PARTS:
        path, expected = partial_path(directory, rank, part), record.files[part]
        if not path.is_file():
            return f"{path.name} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{path.name} has {path.stat().st_size} bytes, its record says {expected['size']}"
        if deep and file_sha256(path) != expected["sha256"]:
            return f"{path.name}: sha256 differs from its record"
    return None


def remove_partial(directory: Path, rank: int) -> None:
    for part in (*PARTS, "json"):
        for path in (partial_path(directory, rank, part), partial_path(directory, rank, part + ".tmp")):
            path.unlink(missing_ok=True)


class _HashedFile:
    """A file streamed to ``<path>.tmp`` and hashed as it goes; ``commit`` flushes it and renames it into place."""

    def __init__(self, path: Path) -> None:
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self._file: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 -- closed by commit or abort
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._file.write(data)
        self._hash.update(data)
        self.size += memoryview(data).nbytes

    def commit(self) -> dict[str, int | str]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        return {"size": self.size, "sha256": self._hash.hexdigest()}

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


class PartialWriter:
    """Appends encoded documents to task ``rank``'s partial; ``commit`` renames the files and writes the record."""

    def __init__(self, directory: Path, rank: int, first_doc: int, run_sha256: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.rank, self.first_doc, self.run_sha256 = directory, rank, first_doc, run_sha256
        self.files = {part: _HashedFile(partial_path(directory, rank, part)) for part in PARTS}
        self.docs = self.tokens = self.sidecar_docs = self.sidecar_tokens = self.text_bytes = 0
        self._start = time.perf_counter()

    def add(self, tokens: np.ndarray, counts: np.ndarray | None, utf8: bytes) -> None:
        """One document: BOS + ids, its sidecar values (None: no sidecar), its UTF-8 text."""
        if counts is not None and self.sidecar_docs != self.docs:
            raise ValueError(f"task {self.rank}: a sidecar after documents without one (validation must come first)")
        self.files["tokens"].write(memoryview(np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)))
        if counts is not None:
            self.files["bytes"].write(memoryview(np.ascontiguousarray(counts, dtype=TOKEN_DTYPE)))
            self.sidecar_docs += 1
            self.sidecar_tokens += len(counts)
        self.files["index"].write(np.array([len(tokens), len(utf8)], dtype=INDEX_DTYPE).tobytes())
        self.files["text"].write(DocsHasher.record(utf8))
        self.docs += 1
        self.tokens += len(tokens)
        self.text_bytes += len(utf8)

    def commit(self) -> PartialRecord:
        files = {part: f.commit() for part, f in self.files.items()}
        record = PartialRecord(
            rank=self.rank,
            run_sha256=self.run_sha256,
            first_doc=self.first_doc,
            docs=self.docs,
            tokens=self.tokens,
            sidecar_docs=self.sidecar_docs,
            sidecar_tokens=self.sidecar_tokens,
            text_bytes=self.text_bytes,
            files=files,
            peak_rss_bytes=peak_rss_bytes(),
            seconds=round(time.perf_counter() - self._start, 3),
        )
        record.save(self.directory)
        return record

    def abort(self) -> None:
        for f in self.files.values():
            f.abort()


def peak_rss_bytes() -> int:
    """The peak resident memory of this process (``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PartialReader:
    """Reads a partial's documents front to back, ``n`` at a time."""

    def __init__(self, directory: Path, record: PartialRecord) -> None:
        self.record = record
        self._files = {part: open(partial_path(directory, record.rank, part), "rb") for part in PARTS}  # noqa: SIM115
        self.done = 0  # documents read so far

    def read(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, memoryview]:
        """The next ``n`` documents: index rows (tokens, UTF-8 bytes), tokens, sidecar values (None when these
        documents have none; all or none of them must), hash records."""
        index = np.fromfile(self._files["index"], dtype=INDEX_DTYPE, count=2 * n).reshape(-1, 2)
        if len(index) != n:
            raise ValueError(f"partial {self.record.rank}: {self.done + len(index)} documents, expected more")
        tokens_n = int(index[:, 0].sum())
        tokens = np.fromfile(self._files["tokens"], dtype=TOKEN_DTYPE, count=tokens_n)
        counts = None
        if self.done < self.record.sidecar_docs:
            if self.done + n > self.record.sidecar_docs:
                raise ValueError(f"partial {self.record.rank}: a read across the end of its sidecar documents")
            counts = np.fromfile(self._files["bytes"], dtype=TOKEN_DTYPE, count=tokens_n)
        records = memoryview(self._files["text"].read(8 * n + int(index[:, 1].sum())))
        self.done += n
        return index, tokens, counts, records

    def skip(self, n: int) -> tuple[np.ndarray, memoryview]:
        """Pass over the next ``n`` documents, returning only their index rows and hash records (a resumed merge
        hashes the documents already in the shards)."""
        index = np.fromfile(self._files["index"], dtype=INDEX_DTYPE, count=2 * n).reshape(-1, 2)
        records = memoryview(self._files["text"].read(8 * n + int(index[:, 1].sum())))
        with_sidecar = max(0, min(self.done + n, self.record.sidecar_docs) - self.done)
        self._files["tokens"].seek(2 * int(index[:, 0].sum()), os.SEEK_CUR)
        self._files["bytes"].seek(2 * int(index[:with_sidecar, 0].sum()), os.SEEK_CUR)
        self.done += n
        return index, records

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def check_all(directory: Path, ranks: list[int], run_sha256: str, threads: int, *, deep: bool = True) -> dict[int, str]:
    """Check the partials of ``ranks`` (``check_partial``) on ``threads`` threads; return each problem by rank."""
    from concurrent.futures import ThreadPoolExecutor

    def one(rank: int) -> tuple[int, str | None]:
        return rank, check_partial(directory, rank, run_sha256, deep=deep)

    with ThreadPoolExecutor(max(1, threads)) as pool:  # hashlib releases the GIL on large buffers
        return {rank: problem for rank, problem in pool.map(one, ranks) if problem}
