"""The shard writer: a corpus and a tokenizer in, official-format shards, byte sidecars and ``manifest.json`` out.

The pipeline runs one way with bounded memory:

- reader (main process): documents in corpus order, hashed as they stream (``corpus.DocsHasher``), grouped into
  batches of about ``batch_bytes`` of text that never straddle the validation/train boundary;
- encoders (worker processes): a batch becomes one uint16 array holding BOS + ids for each document, and its sidecar;
- writer (main process): results are taken back in submission order and streamed into the current shard's temporary
  file (and its sidecar's, in the ``bytes/`` sub-folder), cut at exactly ``shard_tokens`` tokens (a document may
  straddle two shards); the switch from validation to train closes the open shard. These are the challenge's export
  rules (docs/formats.md).

At most ``2 * workers`` batches are in flight, so memory does not grow with the corpus or the shard size, and since
batches are formed and written in corpus order the files are byte-identical for any number of workers.

Crash safety: a shard is written as ``<file>.tmp`` and renamed when complete; after each rename the resume journal
(``journal.py``) records the shard's sha256 and where the next shard starts. ``manifest.json`` is written last, so a
directory without it is an unfinished run. ``mode="resume"`` re-checks every recorded shard and continues after the
last good one; any run first removes temporary files left by a killed one.

``write_encoded`` is that writer around any feed of encoded batches: ``write_shards`` feeds it from the worker
processes, the datatrove engine's merge (``scale/merge.py``) from the partials its tasks wrote.

Workers are started with "spawn" (a fork of a process holding threads can deadlock), so a script that calls
``write_shards`` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import __version__
from .corpus import DocsHasher
from .journal import JOURNAL_NAME, Journal, ResumePoint, Stats, resume
from .manifest import (
    DOCS_SHA256_DEFINITION,
    MANIFEST_NAME,
    TOKENIZER_NAME,
    Manifest,
    ShardEntry,
    SplitEntry,
    write_atomic,
)
from .shards import (
    MAX_SHARD_TOKENS,
    MAX_VALUE,
    SIDECAR_DIR,
    TOKEN_DTYPE,
    VOCAB_LIMIT,
    Split,
    file_sha256,
    make_header,
    parse_shard_filename,
    shard_filename,
    sidecar_name,
)
from .tokenizer.artifact import from_artifact, to_artifact
from .tokenizer.base import TextError, Tokenizer
from .tokenizer.training import default_threads

Mode = Literal["new", "resume", "force"]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ShardConfig:
    name: str = "fineweb"  # file prefix, as the official fineweb_{val,train}_NNNNNN.bin
    val_docs: int = 50_000  # the first val_docs documents are the validation split, the rest train
    shard_tokens: int = MAX_SHARD_TOKENS  # tokens per shard; a split's last shard is shorter
    max_docs: int | None = None  # read at most this many documents
    train_sidecars: bool = False  # validation sidecars are always written; train ones only on request
    workers: int = field(default_factory=default_threads)  # encoder processes: the usable cores
    batch_bytes: int = 1 << 18  # text per worker task: amortizes inter-process traffic, bounds memory

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(
                f"shard name {self.name!r} must be letters, digits, '-', '_' or '.', starting alphanumeric"
            )
        if self.val_docs < 0:
            raise ValueError(f"val_docs must be >= 0, got {self.val_docs}")
        if not 1 <= self.shard_tokens <= MAX_SHARD_TOKENS:
            raise ValueError(f"shard_tokens must be in [1, {MAX_SHARD_TOKENS}], got {self.shard_tokens}")
        if self.max_docs is not None and self.max_docs <= self.val_docs:
            raise ValueError(
                f"max_docs {self.max_docs} leaves no train documents after the first {self.val_docs} (val_docs)"
            )
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.batch_bytes < 1:
            raise ValueError(f"batch_bytes must be >= 1, got {self.batch_bytes}")

    def sidecars(self, split: Split) -> bool:
        return split == "val" or self.train_sidecars

    def split_of(self, doc: int) -> Split:
        """The split of the document at corpus index ``doc``."""
        return "val" if doc < self.val_docs else "train"

    def output_settings(self) -> dict[str, Any]:
        """The settings that determine the files (workers and batch size do not)."""
        keys = ("val_docs", "shard_tokens", "max_docs", "train_sidecars")
        return {k: getattr(self, k) for k in keys}


# --- encoding (runs in the worker processes) -------------------------------------------------------------------


@dataclass
class EncodedBatch:
    tokens: np.ndarray  # uint16: for each document, BOS then its ids
    counts: np.ndarray | None  # uint16 sidecar parallel to tokens: UTF-8 bytes of the original text per token
    doc_tokens: np.ndarray  # int64 tokens per document, BOS included


def encode_documents(
    tok: Tokenizer, texts: Sequence[str], doc_bytes: np.ndarray, first_doc: int, with_bytes: bool
) -> EncodedBatch:
    """Encode documents into the shard stream, checking what the format relies on.

    Every id must fit the vocabulary, BOS may only start a document (it marks the boundaries), and each document's
    sidecar values must fit uint16 and sum to its UTF-8 length. ``doc_bytes`` are those lengths; ``first_doc``
    numbers the documents in error messages.
    """
    try:
        if with_bytes:
            pairs = tok.encode_with_bytes(texts)
            ids_list, count_list = [ids for ids, _ in pairs], [counts for _, counts in pairs]
        else:
            ids_list, count_list = tok.encode_batch(texts), None
    except TextError as e:  # the tokenizer numbers the batch's texts; the user knows the corpus' documents
        raise ValueError(f"document {first_doc + e.index}: {e.detail}") from None
    if len(ids_list) != len(texts):
        raise ValueError(f"tokenizer returned {len(ids_list)} encodings for {len(texts)} documents")
    doc_tokens = np.fromiter((len(ids) + 1 for ids in ids_list), dtype=np.int64, count=len(ids_list))
    starts = np.concatenate([[0], np.cumsum(doc_tokens)[:-1]])
    ids = _token_stream(tok, ids_list, starts, first_doc)
    counts = None if count_list is None else _sidecar_stream(tok, ids_list, count_list, starts, doc_bytes, first_doc)
    return EncodedBatch(ids.astype(TOKEN_DTYPE), counts, doc_tokens)


def _doc_at(first_doc: int, starts: np.ndarray, position: int) -> int:
    """The corpus index of the document holding batch stream ``position`` (``starts``: where each one begins)."""
    return first_doc + int(np.searchsorted(starts, position, side="right")) - 1


def _token_stream(tok: Tokenizer, ids_list: list[np.ndarray], starts: np.ndarray, first_doc: int) -> np.ndarray:
    """BOS + ids of each document as one int64 stream, every id inside the vocabulary and BOS only at the starts."""
    bos = np.array([tok.bos_id], dtype=np.int64)
    ids = np.concatenate([part for doc in ids_list for part in (bos, doc)]) if ids_list else bos[:0]
    bad = (ids < 0) | (ids >= tok.vocab_size)
    if bad.any():
        p = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"document {_doc_at(first_doc, starts, p)}: token id {int(ids[p])} outside the vocabulary of "
            f"{tok.vocab_size}"
        )
    if np.count_nonzero(ids == tok.bos_id) != len(ids_list):
        inner = np.flatnonzero(ids == tok.bos_id)
        p = int(inner[~np.isin(inner, starts)][0])
        raise ValueError(
            f"document {_doc_at(first_doc, starts, p)}: the tokenizer produced the BOS id {tok.bos_id} inside the "
            "document"
        )
    return ids


def _sidecar_stream(
    tok: Tokenizer,
    ids_list: list[np.ndarray],
    count_list: list[np.ndarray],
    starts: np.ndarray,
    doc_bytes: np.ndarray,
    first_doc: int,
) -> np.ndarray:
    """The sidecar parallel to ``_token_stream`` (0 for each BOS) as uint16: one count per id, each fitting uint16,
    each document's counts summing to its UTF-8 length ``doc_bytes``."""
    for i, (doc_ids, doc_counts) in enumerate(zip(ids_list, count_list)):
        if len(doc_counts) != len(doc_ids):
            raise ValueError(f"document {first_doc + i}: {len(doc_ids)} ids but {len(doc_counts)} byte counts")
    zero = np.zeros(1, dtype=np.int64)
    counts = np.concatenate([part for doc in count_list for part in (zero, doc)]) if count_list else zero[:0]
    if counts.size and (counts.min() < 0 or counts.max() > MAX_VALUE):
        p = int(np.flatnonzero((counts < 0) | (counts > MAX_VALUE))[0])
        raise ValueError(
            f"document {_doc_at(first_doc, starts, p)}: a token accounts for {int(counts[p])} bytes, outside uint16"
        )
    sums = np.add.reduceat(counts, starts) if count_list else zero[:0]
    wrong = np.flatnonzero(sums != doc_bytes)
    if wrong.size:
        i = int(wrong[0])
        raise ValueError(
            f"document {first_doc + i}: byte counts sum to {int(sums[i])}, but the text has {int(doc_bytes[i])} "
            f"UTF-8 bytes (tokenizer kind {tok.kind})"
        )
    return counts.astype(TOKEN_DTYPE)


_worker_tokenizer: Tokenizer | None = None


def _init_worker(artifact: bytes) -> None:
    global _worker_tokenizer
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the writer, which shuts the pool down
    # One encoding thread per worker: the workers are the parallelism (HF tokenizers read this before first use).
    os.environ["RAYON_NUM_THREADS"] = "1"
    _worker_tokenizer = from_artifact(artifact)
    _worker_tokenizer.set_threads(1)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker blocks on its task queue forever if the writer is killed (SIGKILL, OOM): leave when it is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _encode_in_worker(texts: list[str], doc_bytes: np.ndarray, first_doc: int, with_bytes: bool) -> EncodedBatch:
    assert _worker_tokenizer is not None, "worker used before _init_worker"
    return encode_documents(_worker_tokenizer, texts, doc_bytes, first_doc, with_bytes)


# --- reading ---------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Consecutive documents of one split, as the writer takes them (with their ``EncodedBatch``)."""

    first_doc: int
    split: Split
    texts: Sequence[str]
    doc_bytes: np.ndarray  # int64 UTF-8 length per document
    hash_before: DocsHasher  # corpus hash of the documents before this batch


def _read_batches(docs: Iterable[str], hasher: DocsHasher, config: ShardConfig, start: ResumePoint) -> Iterator[Batch]:
    """The batches to encode: the corpus' documents from ``start.next_doc`` on, every document hashed into ``hasher``.

    Steps: number and type-check the documents (``_numbered``), hash the ones the interrupted run already wrote and
    check them against its record (``_skip_written``), group the rest into batches (``_batches``).
    """
    stream = _numbered(docs, config.max_docs)
    _skip_written(stream, hasher, start)
    yield from _batches(stream, hasher, config)


def _numbered(docs: Iterable[str], max_docs: int | None) -> Iterator[tuple[int, str]]:
    """``(corpus index, text)`` for at most ``max_docs`` documents, each checked to be a string."""
    for i, doc in enumerate(itertools.islice(docs, max_docs)):
        if not isinstance(doc, str):
            raise ValueError(f"document {i} is {type(doc).__name__}, not str")
        yield i, doc


def _hash(hasher: DocsHasher, index: int, doc: str) -> int:
    """Add document ``index`` to the corpus hash; return its UTF-8 length."""
    try:
        return hasher.update(doc)
    except UnicodeEncodeError as e:
        raise ValueError(f"document {index}: not valid Unicode text (character {e.start}: {e.reason})") from None


def _skip_written(stream: Iterator[tuple[int, str]], hasher: DocsHasher, start: ResumePoint) -> None:
    """Hash the first ``start.next_doc`` documents, whose tokens are already in the shards, and check that they are
    the documents the interrupted run wrote (the same count and corpus hash)."""
    for i, doc in itertools.islice(stream, start.next_doc):
        _hash(hasher, i, doc)
    if hasher.docs < start.next_doc:
        raise ValueError(
            f"cannot resume: the corpus has {hasher.docs} documents, but the interrupted run had reached document "
            f"{start.next_doc}; the corpus changed (use --force to start over)"
        )
    if hasher.hexdigest() != start.prefix_sha256:
        raise ValueError(
            f"cannot resume: the first {hasher.docs} documents of the corpus hash to {hasher.hexdigest()}, but the "
            f"interrupted run recorded {start.prefix_sha256}; the corpus changed (use --force to start over)"
        )


def _batches(stream: Iterator[tuple[int, str]], hasher: DocsHasher, config: ShardConfig) -> Iterator[Batch]:
    """Consecutive documents in batches of about ``config.batch_bytes`` of text; no batch straddles the split."""
    texts: list[str] = []
    sizes: list[int] = []
    first, hash_before, pending = 0, hasher, 0
    for i, doc in stream:
        if texts and (i == config.val_docs or pending >= config.batch_bytes):
            yield Batch(first, config.split_of(first), texts, np.array(sizes), hash_before)
            texts, sizes, pending = [], [], 0
        if not texts:
            first, hash_before = i, hasher.copy()
        texts.append(doc)
        sizes.append(_hash(hasher, i, doc))
        pending += sizes[-1]
    if texts:
        yield Batch(first, config.split_of(first), texts, np.array(sizes), hash_before)


# --- writing ---------------------------------------------------------------------------------------------------


class _ShardFile:
    """One shard being written: streamed to ``<file>.tmp`` and hashed as it goes, renamed by ``commit``.

    The header is written first for a full shard; a split's shorter last shard gets its header rewritten (and is
    hashed again from disk) at commit.
    """

    def __init__(self, path: Path, full_tokens: int, *, sum_values: bool = False) -> None:
        self.path, self.tmp, self.full, self.sum_values = (
            path,
            path.with_name(path.name + ".tmp"),
            full_tokens,
            sum_values,
        )
        header = make_header(full_tokens)
        self._file = open(self.tmp, "wb")  # noqa: SIM115 -- stays open across writes; commit or abort closes it
        self._file.write(header)
        self._hash = hashlib.sha256(header)
        self.tokens = 0
        self.total = 0  # sum of the values written, when sum_values (sidecars)

    def write(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=TOKEN_DTYPE)
        self._file.write(memoryview(data))
        self._hash.update(memoryview(data))
        self.tokens += data.size
        if self.sum_values:
            self.total += int(data.sum(dtype=np.int64))

    def commit(self) -> str:
        f = self._file
        if self.tokens != self.full:
            f.seek(0)
            f.write(make_header(self.tokens))
        f.flush()
        os.fsync(f.fileno())
        f.close()
        digest = self._hash.hexdigest() if self.tokens == self.full else file_sha256(self.tmp)
        os.replace(self.tmp, self.path)
        return digest

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # after a failed write (a full disk) closing flushes and fails again
            self._file.close()
        self.tmp.unlink(missing_ok=True)


class _Writer:
    """Streams encoded batches into shards of one split after another, recording each completed shard."""

    def __init__(self, out_dir: Path, config: ShardConfig, journal: Journal) -> None:
        self.out_dir, self.config, self.journal = out_dir, config, journal
        point = journal.resume_point()
        self.split: Split = config.split_of(point.next_doc)
        self.index = len(journal.entries(self.split))
        self.stats = _copy_stats(point.stats)
        self.skip = point.offset  # tokens of the first document that the interrupted run already wrote
        self.files: tuple[_ShardFile, _ShardFile | None] | None = None
        self.docs_in_shard = 0

    def write(self, batch: Batch, encoded: EncodedBatch) -> None:
        if batch.split != self.split:
            self.close(ResumePoint(batch.first_doc, 0, batch.hash_before.hexdigest(), _copy_stats(self.stats)))
            self.split, self.index = batch.split, 0
        starts = np.concatenate([[0], np.cumsum(encoded.doc_tokens)])  # batch positions of each BOS, then the end
        byte_starts = np.concatenate([[0], np.cumsum(batch.doc_bytes)])
        before = dict(self.stats[self.split])
        position, end = self.skip, starts[-1]
        if self.skip and self.skip >= starts[1]:
            raise ValueError(
                f"cannot resume: document {batch.first_doc} now has {starts[1]} tokens, but the interrupted run had "
                f"written {self.skip} of them; use --force to start over"
            )
        self.skip = 0
        while position < end:
            if self.files is None:
                self._open()
            token_file, byte_file = self.files  # type: ignore[misc]
            take = int(min(self.config.shard_tokens - token_file.tokens, end - position))
            token_file.write(encoded.tokens[position : position + take])
            if byte_file is not None:
                assert encoded.counts is not None, "sidecar requested but the batch was encoded without byte counts"
                byte_file.write(encoded.counts[position : position + take])
            self.docs_in_shard += int(
                np.searchsorted(starts[:-1], position + take) - np.searchsorted(starts[:-1], position)
            )
            position += take
            if token_file.tokens == self.config.shard_tokens:
                self.close(self._point_at(batch, before, starts, byte_starts, int(position)))
        self.stats[self.split] = _stats_plus(before, len(batch.texts), int(end), int(byte_starts[-1]))

    def _point_at(
        self, batch: Batch, before: dict[str, int], starts: np.ndarray, byte_starts: np.ndarray, position: int
    ) -> ResumePoint:
        """Where the stream continues after a shard that ends at batch ``position``; ``before`` holds the split's
        statistics before the batch, ``starts`` and ``byte_starts`` the batch offsets of each document."""
        j = int(np.searchsorted(starts, position, side="right")) - 1  # the document the next shard starts in
        stats = _copy_stats(self.stats)
        stats[self.split] = _stats_plus(before, j, int(starts[j]), int(byte_starts[j]))
        prefix = batch.hash_before.copy()
        for text in batch.texts[:j]:
            prefix.update(text)
        return ResumePoint(batch.first_doc + j, position - int(starts[j]), prefix.hexdigest(), stats)

    def close(self, point: ResumePoint) -> None:
        """Commit the open shard (if any) and record it with the point where the stream continues."""
        if self.files is None:
            return
        token_file, byte_file = self.files
        sidecar = {}
        if byte_file is not None:
            relative = byte_file.path.relative_to(self.out_dir).as_posix()
            sidecar = {"bytes_file": relative, "bytes_sha256": byte_file.commit(), "bytes": byte_file.total}
        entry = ShardEntry(token_file.path.name, token_file.tokens, token_file.commit(), self.docs_in_shard, **sidecar)
        self.files = None  # only now: an interrupted commit leaves them to abort()
        self.journal.record(self.split, entry, point)
        self.index += 1

    def abort(self) -> None:
        if self.files is not None:
            for f in self.files:
                if f is not None:
                    f.abort()
            self.files = None

    def _open(self) -> None:
        full = self.config.shard_tokens
        token_file = _ShardFile(self.out_dir / shard_filename(self.config.name, self.split, self.index), full)
        byte_file = None
        if self.config.sidecars(self.split):
            (self.out_dir / SIDECAR_DIR).mkdir(exist_ok=True)
            path = self.out_dir / sidecar_name(self.config.name, self.split, self.index)
            byte_file = _ShardFile(path, full, sum_values=True)
        self.files = (token_file, byte_file)
        self.docs_in_shard = 0


def _copy_stats(stats: Stats) -> Stats:
    return {split: dict(values) for split, values in stats.items()}


def _stats_plus(before: dict[str, int], docs: int, tokens: int, text_bytes: int) -> dict[str, int]:
    return {"docs": before["docs"] + docs, "tokens": before["tokens"] + tokens, "bytes": before["bytes"] + text_bytes}


# --- the output directory --------------------------------------------------------------------------------------

_OUR_NAMES = {MANIFEST_NAME, TOKENIZER_NAME, JOURNAL_NAME}


def _ours(name: str) -> bool:
    return name in _OUR_NAMES or parse_shard_filename(name) is not None


def refuse_inputs_inside(out_dir: str | os.PathLike, inputs: dict[str, str | os.PathLike]) -> None:
    """FileExistsError if an input (``{what: path}``) lies inside ``out_dir``: a run deletes and rewrites its files
    there (``tokenizer.pgt`` among them), so the input could be gone before the run ends, or for good after a crash."""
    root = Path(out_dir).resolve()
    for what, path in inputs.items():
        resolved = Path(path).resolve()
        if resolved == root or root in resolved.parents:
            raise FileExistsError(
                f"the {what} {path} is inside the output directory {out_dir}, whose files this run replaces: "
                "shard into another --out"
            )


def our_files(out_dir: Path) -> list[Path]:
    """The files of a shard folder that the writer may have written: its own names at the top, token shards (and
    sidecars beside them, the earlier layout), and the sidecars in ``bytes/``; temporary files of all of these."""
    found = []
    for folder in (out_dir, out_dir / SIDECAR_DIR):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.is_file() and _ours(p.name.removesuffix(".tmp"))]
    return sorted(found)


def remove_temporaries(out_dir: Path) -> list[Path]:
    """Delete the ``.tmp`` files an interrupted run may have left; return them."""
    leftovers = [p for p in our_files(out_dir) if p.name.endswith(".tmp")]
    for p in leftovers:
        p.unlink()
    return leftovers


def _prepare_output(out_dir: Path, fingerprint: dict[str, Any], mode: Mode, log: Callable[[str], None]) -> Journal:
    """Make ``out_dir`` ready for this run; return its journal (the verified shards of the interrupted run when
    resuming, none otherwise). Files of ours that the journal does not vouch for are deleted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in remove_temporaries(out_dir):
        log(f"removed {p.relative_to(out_dir)}, left by an interrupted run")
    ours = our_files(out_dir)
    path = out_dir / JOURNAL_NAME
    if mode == "new" and ours:
        raise FileExistsError(
            f"{out_dir} already holds shard output ({', '.join(p.name for p in ours[:3])}"
            f"{', ...' if len(ours) > 3 else ''}); use --resume to continue an interrupted run or --force to replace it"
        )
    if mode == "resume" and (out_dir / MANIFEST_NAME).exists():
        raise FileExistsError(f"{out_dir} holds a complete shard set ({MANIFEST_NAME}): nothing to resume; use --force")
    resuming = mode == "resume" and path.exists()
    journal = resume(path, fingerprint, log) if resuming else Journal(path, fingerprint, [])
    keep = journal.file_names()
    for p in ours:
        if p.relative_to(out_dir).as_posix() not in keep and p != path:
            p.unlink()  # forced, or written after the last verified record: cannot be trusted
    journal.save()
    if journal.shards:
        point, shards = journal.resume_point(), len(journal.shards)
        log(f"resuming after {shards} verified shards, at document {point.next_doc} (+{point.offset} tokens)")
    return journal


# --- the whole run ---------------------------------------------------------------------------------------------


def write_shards(
    docs: Iterable[str],
    tokenizer: Tokenizer | bytes,
    out_dir: str | os.PathLike,
    config: ShardConfig | None = None,
    *,
    mode: Mode = "new",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """Encode ``docs`` with ``tokenizer`` (an object or its artifact bytes) into shards under ``out_dir``.

    ``mode``: "new" refuses a directory that already holds shard output, "force" replaces it, "resume" continues
    an interrupted run. ``docs`` may have a ``describe()`` method (``corpus.Corpus``), recorded in the manifest.
    """
    config = config or ShardConfig()
    tok, artifact = shard_tokenizer(tokenizer)
    describe = getattr(docs, "describe", None)
    source = describe() if callable(describe) else {"source": type(docs).__name__}

    def feed(writer: _Writer, hasher: DocsHasher, start: ResumePoint, bar: _Progress) -> None:
        _encode_and_write(_read_batches(docs, hasher, config, start), artifact, config, writer, bar)

    final = describe if callable(describe) else None
    return write_encoded(
        feed, tok, artifact, source, out_dir, config, final_source=final, mode=mode, progress=progress, log=log
    )


def shard_tokenizer(tokenizer: Tokenizer | bytes) -> tuple[Tokenizer, bytes]:
    """The tokenizer and its artifact bytes, refused when its ids do not fit uint16 shards."""
    tok = from_artifact(tokenizer) if isinstance(tokenizer, bytes) else tokenizer
    if tok.vocab_size > VOCAB_LIMIT:
        raise ValueError(
            f"tokenizer has {tok.vocab_size} ids, more than the {VOCAB_LIMIT} a uint16 shard can hold; nothing written"
        )
    return tok, tokenizer if isinstance(tokenizer, bytes) else to_artifact(tokenizer)


Feed = Callable[["_Writer", DocsHasher, ResumePoint, "_Progress"], None]


def write_encoded(
    feed: Feed,
    tok: Tokenizer,
    artifact: bytes,
    source: dict[str, Any],
    out_dir: str | os.PathLike,
    config: ShardConfig,
    *,
    final_source: Callable[[], dict[str, Any]] | None = None,
    mode: Mode = "new",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Manifest:
    """The shard writer around ``feed``, which delivers the encoded documents.

    ``feed(writer, hasher, start, bar)`` adds every document of the corpus to ``hasher`` in order, checks that the
    first ``start.next_doc`` of them are the ones the interrupted run wrote, and passes the rest in batches to
    ``writer.write`` (and ``bar.advance``). ``write_shards`` encodes in worker processes; the datatrove engine
    (``scale/merge.py``) reads what its tasks encoded. ``source`` describes the corpus in the resume journal,
    ``final_source()`` (default: ``source``) in the manifest, after the corpus was read.
    """
    log = log or (lambda message: None)
    artifact_sha = hashlib.sha256(artifact).hexdigest()
    fingerprint = {"name": config.name, "tokenizer_sha256": artifact_sha, "corpus": source, **config.output_settings()}
    fingerprint = json.loads(json.dumps(fingerprint))  # as the journal will read it back
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    journal = _prepare_output(out_dir, fingerprint, mode, log)
    start = journal.resume_point()

    hasher = DocsHasher()
    writer = _Writer(out_dir, config, journal)
    bar = _progress(progress, config, start.next_doc)
    try:
        feed(writer, hasher, start, bar)
        if hasher.docs <= config.val_docs:
            raise ValueError(
                f"the corpus has {hasher.docs} documents, all in the validation split (val_docs {config.val_docs}): "
                "no train shards; use a smaller --val-docs"
            )
        writer.close(ResumePoint(hasher.docs, 0, hasher.hexdigest(), _copy_stats(writer.stats)))
    except BaseException:
        writer.abort()
        if not journal.shards:  # nothing to resume: leave nothing that would refuse the corrected rerun
            journal.path.unlink(missing_ok=True)
            if created and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise
    finally:
        bar.close()

    final = final_source() if final_source is not None else source
    manifest = _build_manifest(config, tok, artifact, final, hasher, writer.stats, journal)
    write_atomic(out_dir / TOKENIZER_NAME, artifact)
    manifest.write(out_dir)
    journal.path.unlink()
    return manifest


def encode_corpus(
    docs: Iterable[str], artifact: bytes, config: ShardConfig, consumer: Any, *, progress: bool = False
) -> DocsHasher:
    """The corpus through the writer's own pipeline (the same batches, workers and ``encode_documents`` checks), each
    batch handed to ``consumer.write(batch, encoded)`` in corpus order; returns the hash of the documents read.

    ``pgolf-data sidecars`` consumes it to compare an existing folder's tokens with a fresh encoding."""
    hasher = DocsHasher()
    bar = _progress(progress, config, 0)
    try:
        _encode_and_write(_read_batches(docs, hasher, config, ResumePoint.start()), artifact, config, consumer, bar)
    finally:
        bar.close()
    return hasher


def _encode_and_write(
    batches: Iterable[Batch], artifact: bytes, config: ShardConfig, writer: _Writer, bar: _Progress
) -> None:
    """Encode the batches in worker processes and write the results in batch order, at most ``2 * workers``
    batches in flight; on any error (Ctrl-C included) the queued batches are cancelled and the workers stopped."""
    pool = ProcessPoolExecutor(
        config.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(artifact,)
    )
    pending: deque[tuple[Batch, Future[EncodedBatch]]] = deque()

    def write_next() -> None:
        batch, future = pending.popleft()
        encoded = future.result()
        writer.write(batch, encoded)
        bar.advance(len(batch.texts), int(batch.doc_bytes.sum()), encoded.tokens.size)

    try:
        for batch in batches:
            with_bytes = config.sidecars(batch.split)
            pending.append(
                (batch, pool.submit(_encode_in_worker, batch.texts, batch.doc_bytes, batch.first_doc, with_bytes))
            )
            if len(pending) > 2 * config.workers:
                write_next()
        while pending:
            write_next()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()


def _build_manifest(
    config: ShardConfig,
    tok: Tokenizer,
    artifact: bytes,
    source: dict[str, Any],
    hasher: DocsHasher,
    stats: Stats,
    journal: Journal,
) -> Manifest:
    splits = {}
    for split in ("val", "train"):
        entries = journal.entries(split)
        if entries:
            splits[split] = SplitEntry(**stats[split], sidecars=config.sidecars(split), shards=entries)  # type: ignore[arg-type]
    tokenizer = {
        "name": tok.spec.name,
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "lossless": tok.lossless,
        "caseops": tok.caseops,
        "spec": tok.spec.to_dict(),
        "artifact": {"file": TOKENIZER_NAME, "bytes": len(artifact), "sha256": hashlib.sha256(artifact).hexdigest()},
    }
    corpus = {
        "source": source,
        "docs": hasher.docs,
        "bytes": hasher.bytes,
        "docs_sha256": hasher.hexdigest(),
        "docs_sha256_definition": DOCS_SHA256_DEFINITION,
    }
    return Manifest(config.name, __version__, tokenizer, corpus, config.output_settings(), splits)


class _Progress:
    """A tqdm bar on stderr counting documents, with text MB/s and tokens/s."""

    def __init__(self, bar: Any) -> None:
        self.bar, self.text_bytes, self.tokens = bar, 0, 0

    def advance(self, docs: int, text_bytes: int, tokens: int) -> None:
        if self.bar is None:
            return
        self.text_bytes += text_bytes
        self.tokens += tokens
        elapsed = max(self.bar.format_dict["elapsed"], 1e-9)
        self.bar.set_postfix_str(
            f"{self.text_bytes / elapsed / 1e6:.1f} MB/s, {self.tokens / elapsed / 1e6:.2f} Mtok/s", refresh=False
        )
        self.bar.update(docs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress(enabled: bool, config: ShardConfig, initial: int) -> _Progress:
    if not enabled:
        return _Progress(None)
    from tqdm import tqdm

    return _Progress(tqdm(total=config.max_docs, initial=initial, unit="doc", file=sys.stderr, desc="sharding"))
