"""The merge: the tasks' partials, in task order, cut into the official shards by the shard writer itself.

``sharding.write_encoded`` does the cut, headers, sidecars, manifest and resume journal exactly as for
``pgolf-data shard``; the merge only feeds it: batches of consecutive documents read from the partials (never
across the validation/train boundary), each with its tokens, sidecar values, UTF-8 lengths and the corpus hash
before it, which the partials' hash records give without reading the corpus again. Since the documents, their
tokens and their order are the same, so are the bytes, for any number of tasks.

Before anything is written every partial is checked against its record (sizes, sha256) and the documents must
follow one another from task to task. A challenge file's own sha256 (its source manifest's ``docs_sha256``) is
computed in a thread meanwhile, as the corpus reader computes it while streaming.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import Corpus, DocsHasher, describe_after_read
from ..journal import ResumePoint
from ..manifest import MANIFEST_NAME, Manifest
from ..sharding import Batch, EncodedBatch, ShardConfig, shard_tokenizer, write_encoded
from .partials import PartialReader, PartialRecord, check_all

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
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Write the official shard set of ``corpus`` to ``out_dir`` from the partials of ``records`` (all tasks', in
    order, as checked by ``check_partials``); resumes an interrupted merge from its journal."""
    tok, artifact = shard_tokenizer(tokenizer)
    docs = sum(r.docs for r in records)
    exhausted = config.max_docs is None or docs < config.max_docs
    source = corpus.describe()
    # A fresh Corpus: describe_after_read records what one pass of its reader would have found.
    reread = Corpus(corpus.source, text_field=corpus.text_field, max_docs=corpus.max_docs)
    with ThreadPoolExecutor(1) as pool:
        final = pool.submit(describe_after_read, reread, exhausted=exhausted)

        def feed(writer: Any, hasher: DocsHasher, start: ResumePoint, bar: Any) -> None:
            for batch, encoded in _batches(partials_dir, records, hasher, config, start):
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


def check_partials(partials_dir: Path, tasks: int, run_sha256: str, *, threads: int = 1) -> list[PartialRecord]:
    """Every task's record, once each partial matches its record and the tasks' documents follow one another."""
    problems = check_all(partials_dir, list(range(tasks)), run_sha256, threads)
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
    partials_dir: Path, records: list[PartialRecord], hasher: DocsHasher, config: ShardConfig, start: ResumePoint
) -> Iterator[tuple[Batch, EncodedBatch]]:
    """The partials' documents from ``start.next_doc`` on, in batches, each document hashed into ``hasher``."""
    readers = [PartialReader(partials_dir, r) for r in records if r.docs]
    try:
        _skip_written(readers, hasher, start)
        for reader in readers:
            while reader.done < reader.record.docs:
                first = reader.record.first_doc + reader.done
                n = min(BATCH_DOCS, reader.record.docs - reader.done)
                if first < config.val_docs:
                    n = min(n, config.val_docs - first)  # no batch straddles the split
                index, tokens, counts, records_view = reader.read(n)
                split = config.split_of(first)
                if config.sidecars(split) and counts is None:
                    raise ValueError(f"partial {reader.record.rank}: document {first} has no sidecar values")
                offsets = np.concatenate([[0], np.cumsum(index[:, 1] + 8)])
                batch = Batch(first, split, _RecordTexts(records_view, offsets), index[:, 1], hasher.copy())
                hasher.update_records(records_view, n, int(index[:, 1].sum()))
                yield batch, EncodedBatch(tokens, counts if config.sidecars(split) else None, index[:, 0])
    finally:
        for reader in readers:
            reader.close()


def _skip_written(readers: list[PartialReader], hasher: DocsHasher, start: ResumePoint) -> None:
    """Hash the documents an interrupted merge already wrote and check them against its journal."""
    for reader in readers:
        while hasher.docs < start.next_doc and reader.done < reader.record.docs:
            n = min(BATCH_DOCS, reader.record.docs - reader.done, start.next_doc - hasher.docs)
            index, records_view = reader.skip(n)
            hasher.update_records(records_view, n, int(index[:, 1].sum()))
    if hasher.docs < start.next_doc or hasher.hexdigest() != start.prefix_sha256:
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
