"""``pgolf-data sidecars``: exact byte sidecars for an official shard folder, once its tokens are proven to be the
corpus encoded by the tokenizer.

The corpus goes through the shard writer's own pipeline (``sharding.encode_corpus``: the same batches, worker
processes and checks), so it is encoded exactly as ``pgolf-data shard`` would encode it. Each batch's tokens must
equal the folder's at the same stream position; their byte counts go to ``bytes/<shard name>``, cut like the token
shards, first in a staging folder (``.bytes.partial/``). The first difference stops the run, names the document and
the token, and removes the staging folder: the folder is left as it was. Only when every token of the chosen splits
matched do the sidecars replace any earlier ones in ``bytes/``, and ``bytes/sidecars.json`` is written last: it binds
the folder to the tokenizer (``folder.py``). A split's documents are counted by its BOS tokens, the validation split's
first; the train split of a partial download may end inside a document, whose tokens present then get their counts.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .folder import SIDECAR_INDEX, FolderError, SidecarIndex, open_folder
from .journal import JOURNAL_NAME
from .manifest import DOCS_SHA256_DEFINITION, MANIFEST_NAME, TOKENIZER_NAME, ShardEntry, SplitEntry
from .sharding import Batch, EncodedBatch, ShardConfig, _ShardFile, encode_corpus
from .shards import HEADER_BYTES, MAX_SHARD_TOKENS, SIDECAR_DIR, ShardSet, Split, file_sha256, parse_shard_filename
from .tokenizer.artifact import from_artifact, to_artifact
from .tokenizer.base import Tokenizer
from .tokenizer.training import default_threads

STAGING = ".bytes.partial"  # the sidecars being written, moved into bytes/ once every token matched


class _Matcher:
    """Compares each encoded batch with the folder's tokens and streams its byte counts into the split's sidecars."""

    def __init__(self, staging: Path, shards: dict[Split, ShardSet], val_docs: int) -> None:
        self.staging, self.shards, self.val_docs = staging, shards, val_docs
        self.position = dict.fromkeys(shards, 0)
        self.file: _ShardFile | None = None
        self.files_done = dict.fromkeys(shards, 0)

    def write(self, batch: Batch, encoded: EncodedBatch) -> None:
        split = batch.split
        shards, start = self.shards[split], self.position[split]
        available = min(encoded.tokens.size, shards.num_tokens - start)
        found = shards.read(start, start + available)
        if not np.array_equal(found, encoded.tokens[:available]):
            p = int(np.argmax(found != encoded.tokens[:available]))
            what = f"the folder holds id {int(found[p])}, re-encoding the corpus gives {int(encoded.tokens[p])}"
            raise ValueError(self._where(batch, encoded, start, p, what))
        if available < encoded.tokens.size and split == "val":
            raise ValueError(self._where(batch, encoded, start, available, "the val split ends before the document"))
        self._write_counts(split, encoded.counts[:available])
        self.position[split] = start + available

    def _where(self, batch: Batch, encoded: EncodedBatch, start: int, p: int, what: str) -> str:
        """The refusal for batch position ``p``: shard file and offset, corpus document, token of the document."""
        doc_starts = np.concatenate([[0], np.cumsum(encoded.doc_tokens)])
        j = int(np.searchsorted(doc_starts, p, side="right")) - 1
        shards = self.shards[batch.split]
        k = min(int(np.searchsorted(shards.offsets, start + p, side="right")) - 1, len(shards.token_files) - 1)
        offset = HEADER_BYTES + 2 * (start + p - int(shards.offsets[k]))
        doc = batch.first_doc + j
        in_split = doc if batch.split == "val" else doc - self.val_docs
        return (
            f"{shards.token_files[k]}: offset {offset}: corpus document {doc} ({batch.split} document {in_split}), "
            f"token {p - int(doc_starts[j])} (its BOS is token 0): {what}. The folder was not made from this corpus "
            "with this tokenizer; no sidecar written"
        )

    def _write_counts(self, split: Split, counts: np.ndarray) -> None:
        shards, done = self.shards[split], 0
        while done < counts.size:
            if self.file is None:
                i = self.files_done[split]
                path = self.staging / shards.token_files[i].name
                self.file = _ShardFile(path, shards.counts[i], sum_values=True)
            take = min(counts.size - done, self.file.full - self.file.tokens)
            self.file.write(counts[done : done + take])
            done += take
            if self.file.tokens == self.file.full:
                self.file.commit()
                self.file = None
                self.files_done[split] += 1

    def abort(self) -> None:
        if self.file is not None:
            self.file.abort()
        shutil.rmtree(self.staging, ignore_errors=True)


def add_sidecars(
    directory: str | os.PathLike,
    tokenizer: Tokenizer | bytes,
    docs: Iterable[str],
    *,
    train: bool = False,
    workers: int | None = None,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> SidecarIndex:
    """Add exact sidecars for the val split (and with ``train`` the train split) to the official folder
    ``directory`` (module docstring); ``docs`` is the corpus it was exported from, in order. ``force`` replaces
    the sidecars this command added before, with any tokenizer."""
    directory, log = Path(directory), log or (lambda message: None)
    artifact = tokenizer if isinstance(tokenizer, bytes) else to_artifact(tokenizer)
    tok = from_artifact(artifact) if isinstance(tokenizer, bytes) else tokenizer
    leftovers = _check_output(directory, artifact, force)
    splits: tuple[Split, ...] = ("val", "train") if train else ("val",)
    shards = {split: ShardSet.open(directory, split) for split in splits}
    starts = {split: s.doc_starts(tok.bos_id) for split, s in shards.items()}  # refuses a split not led by BOS
    val_docs = len(starts["val"])
    config = ShardConfig(
        name=shards["val"].name,
        val_docs=val_docs,
        shard_tokens=MAX_SHARD_TOKENS,
        train_sidecars=train,
        workers=workers or default_threads(),
    )
    staging = directory / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted run's
    staging.mkdir()
    matcher = _Matcher(staging, shards, val_docs)
    try:
        wanted = itertools.islice(docs, sum(len(s) for s in starts.values()))
        hasher = encode_corpus(wanted, artifact, config, matcher, progress=progress)
        for split, s in shards.items():
            if matcher.position[split] != s.num_tokens:
                raise ValueError(
                    f"the corpus ran out after {hasher.docs:,} documents, at token {matcher.position[split]:,} of the "
                    f"{split} split's {s.num_tokens:,}: the folder holds more than this corpus encodes to; no sidecar "
                    "written"
                )
    except BaseException:
        matcher.abort()
        raise
    for p in leftovers:
        p.unlink()
    if leftovers:
        log(f"replaced {len(leftovers)} file(s) of an earlier pgolf-data sidecars run in {directory / SIDECAR_DIR}")
    (directory / SIDECAR_DIR).mkdir(exist_ok=True)
    for p in sorted(staging.iterdir()):
        os.replace(p, directory / SIDECAR_DIR / p.name)
    staging.rmdir()
    describe = getattr(docs, "describe", None)
    corpus = {
        "source": describe() if callable(describe) else {"source": type(docs).__name__},
        "docs": hasher.docs,
        "bytes": hasher.bytes,
        "docs_sha256": hasher.hexdigest(),
        "docs_sha256_definition": DOCS_SHA256_DEFINITION,
    }
    index = write_index(directory, tok, artifact, corpus, splits)
    log(f"wrote {SIDECAR_INDEX}: {', '.join(splits)} sidecars, bound to tokenizer sha256 {index.tokenizer['sha256']}")
    return index


def write_index(
    directory: Path, tok: Tokenizer, artifact: bytes, corpus: dict, splits: tuple[Split, ...]
) -> SidecarIndex:
    """Write ``bytes/sidecars.json`` for the sidecars in place in ``bytes/`` (every file's sha256 and sums from
    disk), binding them and the shards to ``tok`` (its artifact bytes ``artifact``); ``corpus`` describes the
    documents they were computed from."""
    tokenizer = {
        "name": tok.spec.name,
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "sha256": hashlib.sha256(artifact).hexdigest(),
    }
    index = SidecarIndex(tokenizer, corpus, {split: _split_entry(directory, split, tok.bos_id) for split in splits})
    index.write(directory)
    return index


def _split_entry(directory: Path, split: Split, bos: int) -> SplitEntry:
    shards = ShardSet.open(directory, split)
    if shards.sidecar_layout != "bytes/":
        raise ValueError(f"{directory}: the {split} split has no sidecars in {SIDECAR_DIR}/")
    starts = shards.doc_starts(bos)
    per_shard = np.diff(np.searchsorted(starts, shards.offsets))
    entries, total = [], 0
    for i, (path, side, count, docs) in enumerate(zip(shards.token_files, shards.byte_files, shards.counts, per_shard)):
        n_bytes = int(shards.byte_counts(i).sum(dtype=np.int64))
        total += n_bytes
        bytes_file = f"{SIDECAR_DIR}/{side.name}"
        entries.append(
            ShardEntry(path.name, count, file_sha256(path), int(docs), bytes_file, file_sha256(side), n_bytes)
        )
    return SplitEntry(len(starts), shards.num_tokens, total, True, tuple(entries))


def _check_output(directory: Path, artifact: bytes, force: bool) -> list[Path]:
    """Refuse what this command must not touch; return the files of an earlier run of it in ``bytes/`` (an
    interrupted one's, or with ``force`` a finished one's), to replace once the new sidecars are complete: only
    files named like shards, their ``.tmp`` and the index."""
    if (directory / MANIFEST_NAME).is_file():
        raise FolderError(
            f"{directory} is a pgolf shard folder ({MANIFEST_NAME}): its sidecars come from pgolf-data shard "
            "(--train-sidecars for the train split)"
        )
    traces = [n for n in (JOURNAL_NAME, TOKENIZER_NAME) if (directory / n).exists()]
    traces += sorted(p.name for p in directory.glob("*.tmp"))
    if traces:
        raise FolderError(
            f"{directory} is an unfinished pgolf shard folder ({', '.join(traces)}): resume it first "
            "(pgolf-data shard --resume)"
        )
    if (directory / SIDECAR_INDEX).is_file() and not force:
        open_folder(directory).bind(artifact, "the given tokenizer")  # a different tokenizer: both hashes, named
        raise FileExistsError(f"{directory / SIDECAR_INDEX} exists: the folder has its sidecars; --force redoes them")
    folder = directory / SIDECAR_DIR
    ours, theirs = [], []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        name = p.name.removesuffix(".tmp")
        parsed = parse_shard_filename(name)
        mine = p.is_file() and (f"{SIDECAR_DIR}/{name}" == SIDECAR_INDEX or (parsed is not None and not parsed[2]))
        (ours if mine else theirs).append(p)
    if theirs:
        raise FileExistsError(
            f"{folder} holds {', '.join(p.name for p in theirs[:3])}, which pgolf-data sidecars did not write; "
            "move it away first"
        )
    return ours
