"""``pgolf-data verify``: check every claim of a shard directory's manifest against the files (and the corpus);
without a manifest, check an official folder as far as it can be checked, and say what could not be.

Checks, in order: the manifest and the file list (no leftovers, nothing missing or unlisted); the tokenizer artifact's
sha256; every header (magic, version, count against file size) and sha256; sidecar counts equal to shard counts; the
official cut (every shard but a split's last holds exactly ``shard_tokens``); token ids inside the vocabulary; BOS at
the start of each split and once per document (per-shard document counts as recorded); sidecars giving BOS 0 bytes and
summing to the recorded bytes; with the corpus, each document's sidecar sum against its UTF-8 length, the document
count and the corpus sha256, and every document re-encoded against its stored tokens and byte counts (and, lossless,
decoded back to its text); without the corpus, a decode round trip on a sample of documents.

Every failure is collected with its file, byte offset and expected vs found values; nothing stops at the first.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .corpus import DocsHasher
from .folder import SIDECAR_INDEX, FolderError, open_folder
from .journal import JOURNAL_NAME
from .manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest, ManifestError, ShardEntry, SplitEntry
from .shards import (
    HEADER_BYTES,
    SIDECAR_DIR,
    ShardFormatError,
    ShardSet,
    file_sha256,
    parse_shard_filename,
    read_header,
)
from .tokenizer.artifact import from_artifact
from .tokenizer.base import Tokenizer, TokenizerError


@dataclass(frozen=True)
class Failure:
    check: str
    where: str  # file, with the byte offset when one applies
    message: str  # expected vs found

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class Check:
    """A check under way (``VerifyReport.check``); ``description`` says what it verified, for the list of passes."""

    description: str = ""


KEEP_PER_CHECK = 1000  # failures kept per check; beyond that only counted (a wrong corpus fails every document)


@dataclass
class VerifyReport:
    directory: Path
    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # failures per check, including those not kept
    passed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def fail(self, check: str, where: str | Path, message: str) -> None:
        self.counts[check] = self.counts.get(check, 0) + 1
        if self.counts[check] <= KEEP_PER_CHECK:
            self.failures.append(Failure(check, str(where), message))

    @contextmanager
    def check(self, name: str, description: str = "") -> Iterator[Check]:
        """Run the block as check ``name``: passed when the block records no failure and finishes.

        The block may set the ``description`` of the yielded ``Check`` once it knows what it counted.
        """
        before = self.total
        current = Check(description)
        yield current
        if self.total == before:
            self.passed.append(f"{name}: {current.description}")

    def format(self, limit: int = 20) -> str:
        lines = []
        groups: dict[str, list[Failure]] = {}
        for failure in self.failures:
            groups.setdefault(failure.check, []).append(failure)
        for check, group in groups.items():
            lines.append(f"FAILED {check} ({self.counts[check]}):")
            lines += [f"  {f}" for f in group[:limit]]
            if self.counts[check] > limit:
                lines.append(f"  ... and {self.counts[check] - limit} more")
        lines += [f"ok     {line}" for line in self.passed]
        lines += [f"note   {line}" for line in self.notes]
        verdict = "OK" if self.ok else f"{self.total} failure(s)"
        lines.append(f"{self.directory}: {verdict}")
        return "\n".join(lines)


DEFAULT_SAMPLE_DOCS = 16  # documents per split round-tripped without the corpus (with it: all of them)


def verify(
    directory: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    sample_docs: int | None = None,
    tokenizer: bytes | None = None,
) -> VerifyReport:
    """Verify the shard directory; ``corpus`` (the documents it was made from) enables the per-document checks. A
    directory without a manifest is checked as an official folder (``verify_official``), with the tokenizer whose
    artifact is ``tokenizer`` if given.

    ``sample_docs`` limits the documents re-encoded per split, spread over it; by default every document is with the
    corpus, ``DEFAULT_SAMPLE_DOCS`` without it.
    """
    directory = Path(directory)
    report = VerifyReport(directory)
    if directory.is_dir() and not (directory / MANIFEST_NAME).exists():
        verify_official(directory, report, tokenizer)
        return report
    try:
        manifest = Manifest.load(directory)
    except (FileNotFoundError, ManifestError) as e:
        report.fail("manifest", directory, str(e))
        return report
    _check_files(directory, manifest, report)
    tok = _check_tokenizer(directory, manifest, report)
    readable = {
        split: _check_split_files(directory, manifest, split, entry, report) for split, entry in manifest.splits.items()
    }
    opened = {split: _open_split(directory, manifest, split, report) for split, ok in readable.items() if ok}
    starts: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    for split, shards in opened.items():
        if shards is not None:
            bos, vocab = manifest.bos_id, int(manifest.tokenizer["vocab_size"])
            starts[split], sums[split] = _check_content(shards, bos, vocab, manifest.splits[split], report)
    if sample_docs is None and corpus is None:
        sample_docs = DEFAULT_SAMPLE_DOCS
    samples = {split: _sample(len(s), sample_docs) for split, s in starts.items()}
    checkers = {
        split: _RoundTrip(opened[split], tok, doc_starts, samples[split], report)  # type: ignore[arg-type]
        for split, doc_starts in starts.items()
        if tok is not None
    }
    if corpus is not None:
        _check_corpus(corpus, manifest, sums, checkers, report)
    else:
        for checker in checkers.values():
            checker.without_corpus()
    return report


# --- official folders (no manifest) -----------------------------------------------------------------------------


def verify_official(directory: Path, report: VerifyReport, artifact: bytes | None) -> None:
    """What a folder without a manifest lets be checked: headers and sizes, an even cut, sidecars parallel to their
    shards, and with a tokenizer the id range, BOS at the start of each split and 0 sidecar bytes on every BOS; with
    ``bytes/sidecars.json`` also every claim it makes. The notes say what could not be checked."""
    with report.check("folder") as check:
        try:
            folder = open_folder(directory)
        except FolderError as e:
            report.fail("folder", directory, str(e))
            return
        check.description = folder.describe()
    index = folder.index
    tokenizer = from_artifact(artifact) if artifact is not None else None
    if index is not None and artifact is not None:
        with report.check("tokenizer", f"the given tokenizer is the one {SIDECAR_INDEX} binds"):
            try:
                folder.bind(artifact, "the given tokenizer")
            except FolderError as e:
                report.fail("tokenizer", directory / SIDECAR_INDEX, str(e))
    for split in ("val", "train"):
        try:
            shards = ShardSet.open(directory, split)  # type: ignore[arg-type]
        except ShardFormatError as e:
            report.fail("files", directory, f"{split}: {e}")
            continue
        sidecars = {"bytes/": f", sidecars in {SIDECAR_DIR}/", "beside": ", sidecars beside them (the records' layout)"}
        layout = sidecars.get(shards.sidecar_layout or "", ", no sidecars")
        with report.check(f"files {split}", f"{len(shards.counts)} shards, headers and sizes{layout}"):
            if len(set(shards.counts[:-1])) > 1 or shards.counts[-1] > shards.counts[0]:
                report.fail("cut", directory, f"{split} shards of {sorted(set(shards.counts))} tokens: not one cut")
        entry = index.splits.get(split) if index is not None else None
        if entry is not None:
            _check_index_files(directory, shards, entry, report)
        if tokenizer is not None:
            _check_content(shards, tokenizer.bos_id, tokenizer.vocab_size, entry, report, source=SIDECAR_INDEX)
        else:
            top = max(int(shards.tokens(i).max(initial=0)) for i in range(len(shards.counts)))
            report.notes.append(f"{split}: ids up to {top}; no --tokenizer, so the id range and BOS were not checked")
    if index is None:
        report.notes.append("no manifest: no recorded sha256, document count or corpus hash to check the files against")
        report.notes.append(
            "no exact sidecars: the per-document byte sums cannot be checked; pgolf-data sidecars re-encodes the "
            "corpus, proves it reproduces the tokens, and adds them"
        )


def _check_index_files(directory: Path, shards: ShardSet, entry: SplitEntry, report: VerifyReport) -> None:
    """The token shards and sidecars ``bytes/sidecars.json`` lists: names and sha256."""
    split = shards.split
    with report.check(f"sha256 {split}", f"{len(entry.shards)} shards and their sidecars as {SIDECAR_INDEX} records"):
        if [p.name for p in shards.token_files] != [s.file for s in entry.shards]:
            report.fail("files", directory, f"{split} shards differ from the {len(entry.shards)} {SIDECAR_INDEX} lists")
            return
        for shard in entry.shards:
            for name, sha in ((shard.file, shard.sha256), (shard.bytes_file, shard.bytes_sha256)):
                if name is not None and file_sha256(directory / name) != sha:
                    report.fail("sha256", directory / name, f"sha256 differs from {SIDECAR_INDEX}")


# --- files -----------------------------------------------------------------------------------------------------


def _check_files(directory: Path, manifest: Manifest, report: VerifyReport) -> None:
    listed = {TOKENIZER_NAME, MANIFEST_NAME}
    for entry in manifest.splits.values():
        for shard in entry.shards:
            listed |= {shard.file} | ({shard.bytes_file} if shard.bytes_file else set())
    present = {p.name for p in directory.iterdir()}
    sidecar_dir = directory / SIDECAR_DIR
    if sidecar_dir.is_dir():
        present |= {f"{SIDECAR_DIR}/{p.name}" for p in sidecar_dir.iterdir()}
    with report.check("files", f"{len(listed)} files listed, all present, nothing extra"):
        for name in sorted(present):
            if name.endswith(".tmp"):
                report.fail("files", directory / name, "temporary file left by an interrupted run")
            elif name == JOURNAL_NAME:
                report.fail("files", directory / name, "resume journal of an unfinished run beside a manifest")
            elif parse_shard_filename(name.removeprefix(f"{SIDECAR_DIR}/")) is not None and name not in listed:
                report.fail("files", directory / name, "shard file not listed in the manifest")
        for name in sorted(listed - present):
            report.fail("files", directory / name, "listed in the manifest but missing")


def _check_tokenizer(directory: Path, manifest: Manifest, report: VerifyReport) -> Tokenizer | None:
    path = directory / TOKENIZER_NAME
    if not path.is_file():
        return None  # already reported as missing
    data = path.read_bytes()
    claimed = manifest.tokenizer["artifact"].get("sha256")
    actual = hashlib.sha256(data).hexdigest()
    with report.check("tokenizer") as check:
        if actual != claimed:
            report.fail("tokenizer", path, f"sha256 {actual}, manifest says {claimed}")
            return None
        try:
            tok = from_artifact(data, where=str(path))
        except TokenizerError as e:
            report.fail("tokenizer", path, str(e))
            return None
        for key, value in (("vocab_size", tok.vocab_size), ("bos_id", tok.bos_id), ("lossless", tok.lossless)):
            if manifest.tokenizer[key] != value:
                report.fail("tokenizer", path, f"{key} is {value}, manifest says {manifest.tokenizer[key]}")
        check.description = f"{TOKENIZER_NAME} sha256 and settings match ({tok.kind}, vocab {tok.vocab_size})"
    return tok


def _check_split_files(
    directory: Path, manifest: Manifest, split: str, entry: SplitEntry, report: VerifyReport
) -> bool:
    """Headers, counts, sha256 and the official cut of one split; True when its files are structurally readable."""
    shard_tokens = int(manifest.config["shard_tokens"])
    files = len(entry.shards) * (2 if entry.sidecars else 1)
    with report.check(f"files {split}", f"{files} headers, counts, sha256 and the {shard_tokens}-token cut"):
        last = len(entry.shards) - 1
        readable = [
            _check_shard_files(directory, shard, i == last, shard_tokens, entry.sidecars, report)
            for i, shard in enumerate(entry.shards)
        ]
        total = sum(s.tokens for s in entry.shards)
        if total != entry.tokens:
            report.fail(
                "manifest", MANIFEST_NAME, f"{split}: shards sum to {total} tokens, the split says {entry.tokens}"
            )
    return all(readable)


def _check_shard_files(
    directory: Path, shard: ShardEntry, last: bool, shard_tokens: int, sidecars: bool, report: VerifyReport
) -> bool:
    """One shard and its sidecar against the manifest and the official cut; True when both are structurally readable
    (``sidecars``: whether the split has them)."""
    token_path = directory / shard.file
    count = _listed_file(token_path, shard.sha256, report)
    if count is not None:
        if count != shard.tokens:
            report.fail("header", f"{token_path}: offset 8", f"{count} tokens, manifest says {shard.tokens}")
        if (count != shard_tokens and not last) or count > shard_tokens or count == 0:
            expected = f"exactly {shard_tokens}" if not last else f"1..{shard_tokens}"
            report.fail("cut", token_path, f"{count} tokens; a {'last ' if last else ''}shard holds {expected}")
    if sidecars != (shard.bytes_file is not None):
        report.fail("sidecar", token_path, f"sidecar {'missing' if sidecars else 'unexpected'} for this split")
        return False
    if shard.bytes_file is None:
        return count is not None
    side_path = directory / shard.bytes_file
    side_count = _listed_file(side_path, shard.bytes_sha256, report)
    if count is not None and side_count is not None and side_count != count:
        report.fail("sidecar", f"{side_path}: offset 8", f"{side_count} entries, its shard has {count} tokens")
        return False
    return count is not None and side_count is not None


def _open_split(directory: Path, manifest: Manifest, split: str, report: VerifyReport) -> ShardSet | None:
    """The split's shards as the reader sees them, when they are exactly the listed files."""
    try:
        shards = ShardSet.open(directory, split, name=manifest.name)  # type: ignore[arg-type]
    except ShardFormatError as e:
        report.fail("files", directory, f"{split} shards unreadable as a set: {e}")
        return None
    listed = [s.file for s in manifest.splits[split].shards]
    if [p.name for p in shards.token_files] != listed:
        return None  # unlisted or missing files, already reported
    return shards


def _listed_file(path: Path, claimed_sha256: str | None, report: VerifyReport) -> int | None:
    """Header and sha256 of a file the manifest lists; its token count when the header is valid. A missing file is
    the file list check's to report."""
    if not path.is_file():
        return None
    try:
        count = read_header(path)
    except ShardFormatError as e:
        report.fail("header", path, str(e).removeprefix(f"{path}: "))
        count = None
    actual = file_sha256(path)
    if actual != claimed_sha256:
        report.fail("sha256", path, f"sha256 {actual}, manifest says {claimed_sha256}")
    return count


# --- content ---------------------------------------------------------------------------------------------------


def _location(shards: ShardSet, position: int) -> str:
    """``file: offset N`` of a global token position."""
    offsets = shards.offsets
    i = int(np.searchsorted(offsets, position, side="right")) - 1
    return f"{shards.token_files[i]}: offset {HEADER_BYTES + 2 * (position - int(offsets[i]))}"


def _check_content(
    shards: ShardSet, bos: int, vocab: int, entry: SplitEntry | None, report: VerifyReport, source: str = "manifest"
) -> tuple[np.ndarray, np.ndarray]:
    """Ids, BOS placement and sidecar totals of one split, against ``entry`` (the ``source``'s record of it) where
    there is one; returns document starts and per-document byte sums."""
    split = shards.split
    with report.check(f"ids {split}", f"{shards.num_tokens} tokens inside the vocabulary of {vocab}"):
        for start, tokens, _ in shards.chunks():
            bad = np.flatnonzero(tokens >= vocab)
            if bad.size:
                p = start + int(bad[0])
                report.fail("ids", _location(shards, p), f"token id {int(tokens[bad[0]])} >= vocab_size {vocab}")

    with report.check(f"bos {split}") as check:
        first = shards.read(0, min(1, shards.num_tokens))
        if first.size and first[0] != bos:
            report.fail("bos", _location(shards, 0), f"the split starts with token {int(first[0])}, not BOS {bos}")
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        starts = shards.doc_starts(bos)
        if entry is not None and len(starts) != entry.docs:
            report.fail("bos", split, f"{len(starts)} documents (BOS tokens), {source} says {entry.docs}")
        per_shard = np.diff(np.searchsorted(starts, shards.offsets))
        for path, found, shard in zip(shards.token_files, per_shard, entry.shards if entry else ()):
            if found != shard.docs:
                report.fail("bos", path, f"{found} documents start here, {source} says {shard.docs}")
        check.description = f"{len(starts)} documents, each starting with BOS {bos}"

    sums = np.zeros(0, dtype=np.int64)
    if not shards.has_bytes:
        return starts, sums
    with report.check(f"sidecar {split}") as check:
        offsets = shards.offsets
        for i, path in enumerate(shards.byte_files or ()):
            counts = shards.byte_counts(i)
            local = starts[(starts >= offsets[i]) & (starts < offsets[i + 1])] - offsets[i]
            nonzero = local[counts[local] != 0]
            if nonzero.size:
                offset = HEADER_BYTES + 2 * int(nonzero[0])
                report.fail(
                    "sidecar", f"{path}: offset {offset}", f"BOS counts {int(counts[nonzero[0]])} bytes, expected 0"
                )
            total = int(counts.sum(dtype=np.int64))
            if entry is not None and total != entry.shards[i].bytes:
                report.fail("sidecar", path, f"values sum to {total} bytes, {source} says {entry.shards[i].bytes}")
        sums = shards.doc_byte_sums(bos)
        if entry is not None and int(sums.sum()) != entry.bytes:
            report.fail(
                "sidecar",
                split,
                f"sidecars sum to {int(sums.sum())} bytes, {source} says the documents have {entry.bytes}",
            )
        check.description = f"{len(sums)} documents, {int(sums.sum())} bytes, BOS 0 bytes"
    return starts, sums


def _sample(n_docs: int, k: int | None) -> range | list[int]:
    """``k`` document indices spread evenly over the split, first and last included; all of them for None."""
    if k is None or k >= n_docs:
        return range(n_docs)
    return sorted({int(i) for i in np.linspace(0, n_docs - 1, num=k)}) if k > 0 else []


def _check_corpus(
    corpus: Iterable[str],
    manifest: Manifest,
    sums: dict[str, np.ndarray],
    checkers: dict[str, _RoundTrip],
    report: VerifyReport,
) -> None:
    """Recompute every document's UTF-8 length, the counts and the corpus sha256; hand each document to its split's
    round trip."""
    val_docs = int(manifest.config["val_docs"])
    max_docs = manifest.config.get("max_docs")
    hasher = DocsHasher()
    split_bytes = {"val": 0, "train": 0}
    split_docs = {"val": 0, "train": 0}
    mismatches: dict[str, list[tuple[int, int, int]]] = {"val": [], "train": []}
    with report.check("corpus") as check:
        for i, doc in enumerate(itertools.islice(corpus, max_docs)):
            split = "val" if i < val_docs else "train"
            index = i if split == "val" else i - val_docs
            size = hasher.update(doc)
            split_bytes[split] += size
            split_docs[split] += 1
            if split in sums and index < len(sums[split]) and sums[split][index] != size:
                mismatches[split].append((index, int(sums[split][index]), size))
            if split in checkers:
                checkers[split].add(index, doc)
        for split, entry in manifest.splits.items():
            if split_docs[split] != entry.docs:
                report.fail(
                    "corpus", split, f"the corpus has {split_docs[split]} {split} documents, the manifest {entry.docs}"
                )
            if split_bytes[split] != entry.bytes:
                report.fail(
                    "corpus",
                    split,
                    f"the corpus' {split} documents have {split_bytes[split]} bytes, manifest {entry.bytes}",
                )
            for index, found, expected in mismatches[split]:
                report.fail(
                    "doc-bytes",
                    f"{split} document {index}",
                    f"sidecar bytes sum to {found}, the document has {expected} UTF-8 bytes",
                )
        if hasher.hexdigest() != manifest.corpus.get("docs_sha256"):
            report.fail(
                "corpus",
                "corpus",
                f"documents sha256 {hasher.hexdigest()}, manifest says {manifest.corpus.get('docs_sha256')}",
            )
        checked = sum(len(s) for s in sums.values())
        check.description = f"{hasher.docs} documents and their sha256; {checked} per-document byte sums"
    for checker in checkers.values():
        checker.with_corpus()


class _RoundTrip:
    """One split's documents checked against the tokenizer: the corpus text (when given) must encode to the stored
    tokens and byte counts, and a lossless tokenizer must decode them back to it (without the corpus: to text that
    encodes back to them). Corpus documents arrive one by one (``add``) and are encoded in batches."""

    BATCH_BYTES = 1 << 20  # text per encode call: enough for the tokenizer's threads, little memory

    def __init__(
        self, shards: ShardSet, tok: Tokenizer, starts: np.ndarray, sample: range | list[int], report: VerifyReport
    ) -> None:
        self.shards, self.tok, self.starts, self.report = shards, tok, starts, report
        self.ends = np.append(starts[1:], shards.num_tokens)
        self.wanted = sample if isinstance(sample, range) else set(sample)
        self.sample = sample
        self.batch: list[tuple[int, str]] = []
        self.pending = self.checked = 0
        self.failed = False

    def add(self, index: int, text: str) -> None:
        if index >= len(self.starts) or index not in self.wanted:
            return
        self.batch.append((index, text))
        self.pending += len(text)
        if self.pending >= self.BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.batch:
            return
        before = self.report.total
        encoded = self.tok.encode_with_bytes([text for _, text in self.batch])
        for (index, text), (new_ids, new_counts) in zip(self.batch, encoded):
            ids, counts, where = self._stored(index)
            _compare(new_ids, new_counts, ids, counts, where, "the corpus document", self.report)
            if self.tok.lossless:
                _check_decode(self.tok, ids, text, where, self.report)
        self.failed |= self.report.total != before
        self.checked += len(self.batch)
        self.batch, self.pending = [], 0

    def _stored(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        lo, hi = int(self.starts[index]) + 1, int(self.ends[index])
        counts = self.shards.read(lo, hi, sidecar=True) if self.shards.has_bytes else None
        return (
            self.shards.read(lo, hi),
            counts,
            f"{self.shards.split} document {index} ({_location(self.shards, lo - 1)})",
        )

    def with_corpus(self) -> None:
        self._flush()
        how = "decode == corpus text and re-encode" if self.tok.lossless else "re-encode of the corpus text"
        self._record(f"{self.checked} of {len(self.starts)} documents: {how}")

    def without_corpus(self) -> None:
        """Round-trip the sampled documents from the shards alone: only a lossless tokenizer can."""
        before = self.report.total
        if self.tok.lossless:
            for index in self.sample:
                ids, counts, where = self._stored(index)
                try:
                    decoded = self.tok.decode(ids)
                except TokenizerError as e:
                    self.report.fail("round-trip", where, f"cannot decode: {e}")
                    continue
                new_ids, new_counts = self.tok.encode_with_bytes([decoded])[0]
                _compare(new_ids, new_counts, ids, counts, where, "the decoded text", self.report)
            self.checked = len(self.sample)
        self.failed = self.report.total != before
        how = "decode, then re-encode to the same tokens and bytes" if self.tok.lossless else "nothing (no corpus)"
        self._record(f"{self.checked} of {len(self.starts)} documents: {how}")

    def _record(self, description: str) -> None:
        if not self.tok.lossless:
            note = (
                f"tokenizer {self.tok.spec.name!r} ({self.tok.kind}) is lossy: decoding gives normalized text, not the "
                "original"
            )
            if note not in self.report.notes:
                self.report.notes.append(note)
        if not self.failed:
            self.report.passed.append(f"round-trip {self.shards.split}: {description}")


def _check_decode(tok: Tokenizer, ids: np.ndarray, original: str, where: str, report: VerifyReport) -> None:
    try:
        decoded = tok.decode(ids)
    except TokenizerError as e:
        report.fail("round-trip", where, f"cannot decode: {e}")
        return
    if decoded != original:
        c = next((k for k, (a, b) in enumerate(zip(decoded, original)) if a != b), min(len(decoded), len(original)))
        report.fail(
            "round-trip",
            where,
            f"decoded text differs at character {c}: expected {original[c : c + 20]!r}, found {decoded[c : c + 20]!r}",
        )


def _compare(
    new_ids: np.ndarray,
    new_counts: np.ndarray,
    ids: np.ndarray,
    counts: np.ndarray | None,
    where: str,
    what: str,
    report: VerifyReport,
) -> None:
    if len(new_ids) != len(ids) or not np.array_equal(new_ids, ids):
        k = next((k for k, (a, b) in enumerate(zip(new_ids, ids)) if a != b), min(len(new_ids), len(ids)))
        report.fail(
            "round-trip",
            where,
            f"{what} encodes to {len(new_ids)} tokens, stored {len(ids)}; first difference at token {k}",
        )
    elif counts is not None and not np.array_equal(new_counts, counts):
        k = int(np.flatnonzero(np.asarray(new_counts) != counts)[0])
        report.fail(
            "round-trip",
            where,
            f"byte counts differ at token {k}: {what} gives {int(new_counts[k])}, stored {int(counts[k])}",
        )
