"""The merge: the tasks' partials, in task order, cut into the official shards by the shard writer itself.

``sharding.write_encoded`` does the cut, headers, sidecars, manifest and resume journal exactly as for
``pgolf-data shard``; the merge only feeds it: batches of consecutive documents read from the partials (never
across the validation/train boundary), each with its tokens, sidecar values, UTF-8 lengths and the corpus hash
before it, which the partials' hash records give without reading the corpus again. Since the documents, their
tokens and their order are the same, so are the bytes, for any number of tasks.

Before anything is written every task must have finished (a record of this run, files of the recorded sizes) and
the documents must follow one another from task to task; each partial's sha256 is checked against its record
before it is read, on other threads while the partials before it are merged. A challenge file's own sha256 (its
source manifest's ``docs_sha256``) is computed in a thread meanwhile, as the corpus reader computes it while
streaming.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import Corpus, DocsHasher, describe_after_read
from ..journal import ResumePoint
from ..manifest import MANIFEST_NAME, Manifest
from ..sharding import Batch, EncodedBatch, ShardConfig, shard_tokenizer, write_encoded
from .partials import PartialReader, PartialRecord, check_all, check_partial

BATCH_DOCS = 1 << 14  # documents per batch handed to the writer: bounds the merge's memory


class _RecordTexts(Sequence[str]):
    """The texts of a batch, decoded from its hash records only when asked (the writer needs a few of them, to
    hash the documents before a shard boundary)."""

    def __init__(self, records: memoryview, offsets: np.ndarray) -> None:
        self.records, self.offsets = records, offsets  # offsets: where each record starts, then the end

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        start, end = int(self.offsets[i]) + 8, int(self.offsets[i + 1])
        return bytes(self.records[start:end]).decode("utf-8")


def merge_partials(
    partials_dir: Path,
    records: list[PartialRecord],
    corpus: Corpus,
    tokenizer: bytes,
    out_dir: Path,
    config: ShardConfig,
    *,
    run_sha256: str,
    threads: int = 1,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Write the official shard set of ``corpus`` to ``out_dir`` from the partials of ``records`` (every task's, in
    order, from ``check_records``); resumes an interrupted merge from its journal.

    Each partial's sha256 is checked on ``threads`` threads while the partials before it are merged, and it is read
    only once its check passed; a failed check stops the merge there (the shards already written are right, and
    ``--resume`` redoes that task, then continues the merge).
    """
    tok, artifact = shard_tokenizer(tokenizer)
    docs = sum(r.docs for r in records)
    exhausted = config.max_docs is None or docs < config.max_docs
    source = corpus.describe()
    # A fresh Corpus: describe_after_read records what one pass of its reader would have found.
    reread = Corpus(corpus.source, text_field=corpus.text_field, max_docs=corpus.max_docs)
    describing, checking = ThreadPoolExecutor(1), ThreadPoolExecutor(max(1, threads))
    try:
        final = describing.submit(describe_after_read, reread, exhausted=exhausted)
        checks = {r.rank: checking.submit(check_partial, partials_dir, r.rank, run_sha256) for r in records if r.docs}

        def feed(writer: Any, hasher: DocsHasher, start: ResumePoint, bar: Any) -> None:
            for batch, encoded in _batches(partials_dir, records, checks, hasher, config, start):
                writer.write(batch, encoded)
                bar.advance(len(batch.texts), int(batch.doc_bytes.sum()), encoded.tokens.size)

        return write_encoded(
            feed,
            tok,
            artifact,
            source,
            out_dir,
            config,
            final_source=final.result,
            mode="resume",
            progress=progress,
            log=log,
        )
    finally:
        checking.shutdown(cancel_futures=True)
        describing.shutdown()


def check_records(partials_dir: Path, tasks: int, run_sha256: str) -> list[PartialRecord]:
    """Every task's record, once each task finished (a record of this run, files of the recorded sizes) and the
    tasks' documents follow one another; their sha256 is ``merge_partials``' to check."""
    problems = check_all(partials_dir, list(range(tasks)), run_sha256, threads=1, deep=False)
    if problems:
        listed = "; ".join(f"task {rank}: {problem}" for rank, problem in sorted(problems.items()))
        raise ValueError(f"cannot merge: {listed}; run again with --resume to redo these tasks")
    records = [PartialRecord.load(partials_dir, rank) for rank in range(tasks)]
    expected = 0
    for record in records:
        if record.docs and record.first_doc != expected:
            raise ValueError(
                f"cannot merge: task {record.rank} starts at document {record.first_doc}, but the tasks before it "
                f"hold {expected} documents"
            )
        expected += record.docs
    return records


def _batches(
    partials_dir: Path,
    records: list[PartialRecord],
    checks: dict[int, Future[str | None]],
    hasher: DocsHasher,
    config: ShardConfig,
    start: ResumePoint,
) -> Iterator[tuple[Batch, EncodedBatch]]:
    """The partials' documents from ``start.next_doc`` on, in batches, each document hashed into ``hasher``; the
    documents before it (written by an interrupted merge) are only hashed, and checked against its journal."""
    checked = start.next_doc == 0
    for record in (r for r in records if r.docs):
        problem = checks[record.rank].result()
        if problem:
            raise ValueError(f"cannot merge: task {record.rank}: {problem}; run again with --resume to redo it")
        reader = PartialReader(partials_dir, record)
        try:
            while hasher.docs < start.next_doc and reader.done < record.docs:
                n = min(BATCH_DOCS, record.docs - reader.done, start.next_doc - hasher.docs)
                index, records_view = reader.skip(n)
                hasher.update_records(records_view, n, int(index[:, 1].sum()))
            if not checked and hasher.docs == start.next_doc:
                _check_prefix(hasher, start)
                checked = True
            while checked and reader.done < record.docs:
                yield _batch(reader, hasher, config)
        finally:
            reader.close()
    if not checked:
        _check_prefix(hasher, start)


def _batch(reader: PartialReader, hasher: DocsHasher, config: ShardConfig) -> tuple[Batch, EncodedBatch]:
    """The next documents of ``reader``, at most ``BATCH_DOCS``, never across the validation/train boundary."""
    first = reader.record.first_doc + reader.done
    n = min(BATCH_DOCS, reader.record.docs - reader.done)
    if first < config.val_docs:
        n = min(n, config.val_docs - first)
    index, tokens, counts, records_view = reader.read(n)
    split = config.split_of(first)
    if config.sidecars(split) and counts is None:
        raise ValueError(f"partial {reader.record.rank}: document {first} has no sidecar values")
    offsets = np.concatenate([[0], np.cumsum(index[:, 1] + 8)])
    batch = Batch(first, split, _RecordTexts(records_view, offsets), index[:, 1], hasher.copy())
    hasher.update_records(records_view, n, int(index[:, 1].sum()))
    return batch, EncodedBatch(tokens, counts if config.sidecars(split) else None, index[:, 0])


def _check_prefix(hasher: DocsHasher, start: ResumePoint) -> None:
    """The documents hashed so far must be those an interrupted merge had written (its journal's resume point)."""
    if hasher.docs != start.next_doc or hasher.hexdigest() != start.prefix_sha256:
        raise ValueError(
            f"cannot resume the merge: the partials' first {hasher.docs} documents hash to {hasher.hexdigest()}, "
            f"but the interrupted merge had reached document {start.next_doc} with hash {start.prefix_sha256}; "
            "use --force to start over"
        )


def already_merged(out_dir: Path) -> bool:
    return (out_dir / MANIFEST_NAME).is_file()


def remove_partials(partials_dir: Path) -> None:
    """Delete the partials once the shard set is complete: the manifest's files hold everything in them."""
    shutil.rmtree(partials_dir, ignore_errors=True)
