"""pgolf's data path as datatrove pipeline steps (``pip install -e '.[scale]'``).

Three stages, each a datatrove pipeline that an executor (local, Slurm, Ray) runs as numbered tasks:

- count (only where a later task needs it): ``CountSlices`` counts the documents of task ``r``'s slices;
- encode: ``ReadSlices`` -> ``Tokenize`` -> ``WritePartial``; task ``r`` reads its slices (slices.py), encodes them
  through pgolf's tokenizer interface with the shard writer's own checks (``sharding.encode_documents``) and writes
  its partial (partials.py);
- merge (one task): ``MergeShards`` cuts the partials into the official shard set (merge.py).

Steps hold only small settings and the work directory's path, so the executors can pickle them (Slurm and Ray run
them on other machines: the work directory must then be on a shared filesystem). Documents travel as datatrove
``Document``s whose id is their corpus index; ``Tokenize`` adds their tokens, sidecar values and UTF-8 bytes to
the metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from ..corpus import Corpus
from ..sharding import ShardConfig, encode_documents
from ..tokenizer.artifact import from_artifact
from .merge import already_merged, check_records, merge_partials, remove_partials
from .partials import PartialWriter, peak_rss_bytes
from .slices import count_slice, read_task
from .workdir import WorkDir


class CountSlices(PipelineStep):
    """Count stage: the documents (and jsonl lines) of each of task ``rank``'s slices, saved for the later tasks."""

    name = "🧮 pgolf count"
    type = "📖 - READER"

    def __init__(self, work_dir: str, run_sha256: str) -> None:
        super().__init__()
        self.work_dir, self.run_sha256 = work_dir, run_sha256

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        work = WorkDir(Path(self.work_dir))
        plan = work.load_plan()
        if not plan.needs_count(rank):
            return
        counts = [count_slice(s) for s in plan.tasks[rank]]
        self.stat_update("documents", value=sum(c.docs for c in counts))
        work.save_counts(rank, counts, self.run_sha256)


class ReadSlices(PipelineStep):
    """Encode stage, first step: task ``rank``'s documents in corpus order, read by the corpus' own parsers."""

    name = "📚 pgolf slices"
    type = "📖 - READER"

    def __init__(self, work_dir: str, run_sha256: str, text_field: str, max_docs: int | None) -> None:
        super().__init__()
        self.work_dir, self.run_sha256, self.text_field, self.max_docs = work_dir, run_sha256, text_field, max_docs

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        slices, start = WorkDir(Path(self.work_dir)).task(rank, self.run_sha256)
        for index, text in read_task(slices, start, self.text_field, self.max_docs):
            self.stat_update("documents")
            yield Document(text=text, id=str(index))


class Tokenize(PipelineStep):
    """Encode stage: ids and exact byte counts through pgolf's tokenizer, batch by batch.

    Batches hold about ``config.batch_bytes`` of text and never straddle the validation/train boundary;
    ``sharding.encode_documents`` checks every id, BOS placement and each document's byte sum, as in
    ``pgolf-data shard``. Sidecar values are computed only for the documents that get a sidecar.
    """

    name = "🔢 pgolf tokenize"
    type = "🔢 - TOKENIZER"

    def __init__(self, work_dir: str, config: ShardConfig, threads: int = 1) -> None:
        super().__init__()
        self.work_dir, self.config, self.threads = work_dir, config, threads

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        before = os.environ.get("RAYON_NUM_THREADS")
        os.environ["RAYON_NUM_THREADS"] = str(self.threads)  # HF tokenizers size their pool from it on first use
        try:
            tok = from_artifact(WorkDir(Path(self.work_dir)).load_tokenizer())
            tok.set_threads(self.threads)
            yield from self._batches(tok, data)
        finally:  # a task may run in the caller's own process (one local worker)
            if before is None:
                os.environ.pop("RAYON_NUM_THREADS", None)
            else:
                os.environ["RAYON_NUM_THREADS"] = before

    def _batches(self, tok, data: DocumentsPipeline) -> DocumentsPipeline:
        batch: list[Document] = []
        sizes: list[int] = []
        pending = 0
        for doc in data:
            index = int(doc.id)
            if batch and (index == self.config.val_docs or pending >= self.config.batch_bytes):
                yield from self._encode(tok, batch, sizes)
                batch, sizes, pending = [], [], 0
            doc.metadata["utf8"] = _utf8(index, doc.text)
            batch.append(doc)
            sizes.append(len(doc.metadata["utf8"]))
            pending += sizes[-1]
        if batch:
            yield from self._encode(tok, batch, sizes)

    def _encode(self, tok, batch: list[Document], sizes: list[int]) -> DocumentsPipeline:
        first = int(batch[0].id)
        with_bytes = self.config.sidecars(self.config.split_of(first))
        with self.track_time(unit="batch"):
            encoded = encode_documents(tok, [d.text for d in batch], np.array(sizes), first, with_bytes)
        ends = np.cumsum(encoded.doc_tokens)
        self.stat_update("tokens", value=int(ends[-1]))
        for doc, start, end in zip(batch, ends - encoded.doc_tokens, ends):
            doc.metadata["tokens"] = encoded.tokens[start:end]
            doc.metadata["byte_counts"] = None if encoded.counts is None else encoded.counts[start:end]
            yield doc


def _utf8(index: int, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:  # the message of sharding's reader, which refuses the same documents
        raise ValueError(f"document {index}: not valid Unicode text (character {e.start}: {e.reason})") from None


class WritePartial(PipelineStep):
    """Encode stage, last step: task ``rank``'s documents into its partial (partials.py), its record last."""

    name = "🧩 pgolf partial"
    type = "💽 - WRITER"

    def __init__(self, work_dir: str, run_sha256: str) -> None:
        super().__init__()
        self.work_dir, self.run_sha256 = work_dir, run_sha256

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> None:
        work = WorkDir(Path(self.work_dir))
        _, start = work.task(rank, self.run_sha256)
        writer = PartialWriter(work.partials, rank, start.first_doc, self.run_sha256)
        try:
            for doc in data:
                expected = start.first_doc + writer.docs
                if int(doc.id) != expected:
                    raise ValueError(f"task {rank}: document {doc.id} arrived where document {expected} belongs")
                writer.add(doc.metadata["tokens"], doc.metadata["byte_counts"], doc.metadata["utf8"])
        except BaseException:
            writer.abort()
            raise
        record = writer.commit()
        self.stat_update("documents", value=record.docs)
        self.stat_update("text_bytes", value=record.text_bytes, unit="task")
        self.stat_update("peak_rss_bytes", value=record.peak_rss_bytes, unit="task")


class MergeShards(PipelineStep):
    """Merge stage (one task): the official shard set from every task's partial, by the shard writer."""

    name = "🗃 pgolf merge"
    type = "🔢 - TOKENIZER"

    def __init__(
        self,
        work_dir: str,
        run_sha256: str,
        tasks: int,
        corpus: Corpus,
        config: ShardConfig,
        out_dir: str,
        *,
        threads: int = 1,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.work_dir, self.run_sha256, self.tasks, self.corpus = work_dir, run_sha256, tasks, corpus
        self.config, self.out_dir, self.threads, self.progress = config, out_dir, threads, progress

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        if world_size != 1:
            raise ValueError(f"the merge runs as one task, not {world_size}")
        work, out_dir = WorkDir(Path(self.work_dir)), Path(self.out_dir)
        if already_merged(out_dir):  # finished, but stopped before datatrove marked it complete
            return
        from datatrove.utils.logging import logger

        records = check_records(work.partials, self.tasks, self.run_sha256)
        manifest = merge_partials(
            work.partials,
            records,
            self.corpus,
            work.load_tokenizer(),
            out_dir,
            self.config,
            run_sha256=self.run_sha256,
            threads=self.threads,
            progress=self.progress,
            log=logger.info,
        )
        remove_partials(work.partials)
        for split, entry in manifest.splits.items():
            self.stat_update(f"{split}_tokens", value=entry.tokens)
        self.stat_update("peak_rss_bytes", value=peak_rss_bytes(), unit="task")
