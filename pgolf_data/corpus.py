"""Document sources. Every source yields document strings in a deterministic order.

A source is named by one string (the CLI's ``--corpus``):

- a file: ``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst`` (one JSON object a line, text in ``text_field``), ``.parquet``,
  ``.txt`` / ``.txt.gz`` / ``.txt.zst`` (the whole file is one document);
- the challenge's ``docs_selected.jsonl``: as jsonl, and when ``docs_selected.source_manifest.json`` lies beside it,
  its ``docs_sha256`` is checked against the file's bytes as they stream and its ``docs_val`` becomes the default
  validation size;
- a directory: a ``datasets`` ``save_to_disk`` folder, or the data files in it (sorted by name);
- ``hf:NAME[:SPLIT]``: a Hugging Face ``datasets`` dataset, streamed (a hub name, or a local folder of data files);
- ``default``: the embedded corpus, English text every Python installation carries (the reference documentation in
  ``pydoc_data.topics`` and the standard library's docstrings), so the toolkit runs with no network and no data file.

Validation is always the first N documents, training the rest (the challenge's rule).
"""

from __future__ import annotations

import ast
import functools
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import struct
import sys
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SOURCE = "default"
CHALLENGE_DOCS = "docs_selected.jsonl"
CHALLENGE_SIDECAR = "docs_selected.source_manifest.json"
_JSONL = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
_TEXT = (".txt", ".txt.gz", ".txt.zst")
_PARQUET = (".parquet",)
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class CorpusError(ValueError):
    """Unreadable corpus input; the message names the file, line and value."""


@dataclass
class Corpus:
    """A named document source; iterate it for documents, call ``describe()`` for provenance."""

    source: str
    text_field: str = "text"
    max_docs: int | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_docs is not None and self.max_docs < 0:
            raise CorpusError(f"max_docs must be >= 0, got {self.max_docs}")
        self._kind, self._target = _resolve(self.source)

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def target(self) -> str:
        """What the kind reads: a file or directory path, a dataset name (``""`` for the embedded corpus)."""
        return self._target

    @property
    def default_val_docs(self) -> int | None:
        """The validation size a challenge source manifest declares, if any."""
        if self._kind != "challenge":
            return None
        meta = _challenge_sidecar(self._target)
        return None if meta is None or "docs_val" not in meta else int(meta["docs_val"])

    def __iter__(self) -> Iterator[str]:
        docs = _numbered(_READERS[self._kind](self._target, self.text_field, self))
        if self.max_docs is not None:
            docs = itertools.islice(docs, self.max_docs)
        return iter(docs)

    def describe(self) -> dict:
        out = {"source": self.source, "kind": self._kind, "text_field": self.text_field, "max_docs": self.max_docs}
        if self._kind == "default":
            out["python"] = sys.version.split()[0]  # the embedded text changes with the Python release
        return {**out, **self.info}


class _NotUnicode(CorpusError):
    """A JSON text field that is not Unicode text (a lone surrogate escape); ``_numbered`` adds the document index."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.where, self.detail = where, detail


def _numbered(docs: Iterator[str]) -> Iterator[str]:
    """``docs`` as they are; a ``_NotUnicode`` error from the reader is raised naming the document's corpus index."""
    n = 0
    try:
        for doc in docs:
            yield doc
            n += 1
    except _NotUnicode as e:
        raise CorpusError(f"{e.where}: document {n}: {e.detail}") from None


def open_corpus(source: str | os.PathLike, *, text_field: str = "text", max_docs: int | None = None) -> Corpus:
    return Corpus(str(source), text_field=text_field, max_docs=max_docs)


def split_docs(docs: Iterable[str], num_val_docs: int) -> Iterator[tuple[str, str]]:
    """``("val", doc)`` for the first ``num_val_docs`` documents, ``("train", doc)`` for the rest."""
    for i, doc in enumerate(docs):
        yield ("val" if i < num_val_docs else "train"), doc


class DocsHasher:
    """sha256 over the document list: for each document its UTF-8 length (uint64 LE), then its bytes.

    The length prefix makes the hash depend on the document boundaries, not only on the concatenated text.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.docs = 0
        self.bytes = 0

    def update(self, doc: str) -> int:
        """Add one document; return its UTF-8 length."""
        data = doc.encode("utf-8")
        self._h.update(struct.pack("<Q", len(data)))
        self._h.update(data)
        self.docs += 1
        self.bytes += len(data)
        return len(data)

    @staticmethod
    def record(data: bytes) -> bytes:
        """One document's UTF-8 bytes as the hash reads them: the length, then the bytes."""
        return struct.pack("<Q", len(data)) + data

    def update_records(self, records: bytes | memoryview, docs: int, text_bytes: int) -> None:
        """Add ``docs`` documents of ``text_bytes`` UTF-8 bytes in all, given as their concatenated ``record``s."""
        if len(records) != 8 * docs + text_bytes:
            raise ValueError(f"{len(records)} bytes of records cannot hold {docs} documents of {text_bytes} bytes")
        self._h.update(records)
        self.docs += docs
        self.bytes += text_bytes

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def copy(self) -> DocsHasher:
        """An independent hasher in the same state (the shard writer snapshots the hash of a document prefix)."""
        other = DocsHasher()
        other._h, other.docs, other.bytes = self._h.copy(), self.docs, self.bytes
        return other


def docs_sha256(docs: Iterable[str]) -> str:
    h = DocsHasher()
    for doc in docs:
        h.update(doc)
    return h.hexdigest()


# --- resolving a source string ---------------------------------------------------------------------------------


def _resolve(source: str) -> tuple[str, str]:
    if source == DEFAULT_SOURCE:
        return "default", ""
    if source.startswith("hf:"):
        if not source[3:]:
            raise CorpusError("hf: source needs a dataset name, e.g. hf:HuggingFaceFW/fineweb:train")
        return "hf", source[3:]
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus {source}: no such file or directory (or use 'default' or 'hf:NAME')")
    if path.is_dir():
        if (path / CHALLENGE_DOCS).is_file():
            return "challenge", str(path / CHALLENGE_DOCS)
        if any((path / m).is_file() for m in _HF_MARKERS):
            return "hf-disk", str(path)
        return "directory", str(path)
    name = path.name.lower()
    if path.name == CHALLENGE_DOCS:
        return "challenge", str(path)
    for kind, suffixes in (("jsonl", _JSONL), ("text", _TEXT), ("parquet", _PARQUET)):
        if name.endswith(suffixes):
            return kind, str(path)
    raise CorpusError(
        f"corpus {source}: unknown file type; expected one of {', '.join(_JSONL + _TEXT + _PARQUET)}, a directory, "
        "'hf:NAME' or 'default'"
    )


def open_binary(path: Path) -> io.BufferedIOBase:
    """``path`` opened for reading bytes, decompressed when its name ends in ``.gz`` or ``.zst``."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


# --- readers ---------------------------------------------------------------------------------------------------


def _read_jsonl(target: str, text_field: str, corpus: Corpus, *, hasher: hashlib._Hash | None = None) -> Iterator[str]:
    path = Path(target)
    with open_binary(path) as f:
        yield from jsonl_texts(f, path, text_field, hasher=hasher)


def jsonl_texts(
    lines: Iterable[bytes], path: Path, text_field: str, *, first_line: int = 1, hasher: hashlib._Hash | None = None
) -> Iterator[str]:
    """The texts of JSON Lines ``lines`` (raw, newline included) of ``path``, the first being line ``first_line``.

    Blank lines are skipped; ``hasher`` sees every raw line. Errors name ``path:line``.
    """
    for lineno, raw in enumerate(lines, start=first_line):
        if hasher is not None:
            hasher.update(raw)
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(f"{path}:{lineno}: invalid UTF-8 at byte {e.start} of the line") from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            # Some of json's messages end in "at" ("Invalid control character at"): the column follows once.
            message = e.msg.removesuffix(" at")
            raise CorpusError(f"{path}:{lineno}: malformed JSON: {message} at column {e.colno}") from None
        text = _text_of(obj, text_field, f"{path}:{lineno}")
        if _SURROGATE_ESCAPE.search(raw):
            _check_unicode(text, f"{path}:{lineno}", text_field)
        yield text


# JSON can spell a lone UTF-16 surrogate (``"\ud800"``), which Python keeps in the str but which is no Unicode text:
# it has no UTF-8 encoding, so byte counts and hashes cannot exist. Only lines holding such an escape are checked.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_unicode(text: str, where: str, text_field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _NotUnicode(
            where,
            f"field {text_field!r} holds a lone surrogate U+{ord(text[e.start]):04X} at character {e.start}, which is "
            "not Unicode text (it has no UTF-8 encoding)",
        ) from None


def _text_of(obj: object, text_field: str, where: str) -> str:
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if text_field not in obj:
        fields = ", ".join(sorted(obj)) or "none"
        raise CorpusError(f"{where}: no field {text_field!r} (fields: {fields}); choose one with --text-field")
    text = obj[text_field]
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_field!r} is {type(text).__name__}, not a string")
    return text


def _read_challenge(target: str, text_field: str, corpus: Corpus) -> Iterator[str]:
    """``docs_selected.jsonl``, verified against the ``docs_sha256`` of its source manifest when present."""
    expected = _start_challenge(target, corpus)
    if not expected:
        yield from _read_jsonl(target, text_field, corpus)
        return
    hasher = hashlib.sha256()
    yield from _read_jsonl(target, text_field, corpus, hasher=hasher)
    _finish_challenge(target, corpus, hasher.hexdigest(), expected)


def _start_challenge(target: str, corpus: Corpus) -> str | None:
    """Record the source manifest in ``corpus.info``; return the ``docs_sha256`` it declares, if any."""
    meta = _challenge_sidecar(target)
    expected = None if meta is None else meta.get("docs_sha256")
    corpus.info["source_manifest"] = None if meta is None else str(Path(target).with_name(CHALLENGE_SIDECAR))
    # False until the whole file was read and matched; None when there is nothing to check against.
    corpus.info["docs_sha256_verified"] = False if expected else None
    return expected or None


def _finish_challenge(target: str, corpus: Corpus, actual: str, expected: str) -> None:
    if actual != expected:
        raise CorpusError(
            f"{target}: sha256 {actual} differs from docs_sha256 {expected} in {CHALLENGE_SIDECAR}: "
            "this is not the challenge's document list"
        )
    corpus.info["docs_sha256_verified"] = True


def describe_after_read(corpus: Corpus, *, exhausted: bool) -> dict:
    """``corpus.describe()`` as it reads after one pass of the corpus' own iterator, for a caller that read the
    documents another way (the datatrove engine reads slices of the files in separate tasks).

    ``exhausted``: whether that pass reached the end of the corpus, rather than stopping at ``max_docs``. A challenge
    file is then hashed here, as its reader would have hashed it while streaming.
    """
    if corpus.kind == "challenge":
        expected = _start_challenge(corpus.target, corpus)
        if expected and exhausted:
            from .shards import file_sha256

            _finish_challenge(corpus.target, corpus, file_sha256(corpus.target), expected)
    return corpus.describe()


def _challenge_sidecar(target: str) -> dict | None:
    path = Path(target).with_name(CHALLENGE_SIDECAR)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{path}: unreadable source manifest: {e}") from None


def _read_text(target: str, text_field: str, corpus: Corpus) -> Iterator[str]:
    path = Path(target)
    with open_binary(path) as f:
        raw = f.read()
    try:
        yield raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{path}:{line}: invalid UTF-8 at byte offset {e.start}") from None


def _read_parquet(target: str, text_field: str, corpus: Corpus) -> Iterator[str]:
    yield from parquet_texts(Path(target), text_field)


def open_parquet(path: Path, text_field: str):
    """``pyarrow.parquet.ParquetFile`` of ``path``, checked to be readable and to have the column ``text_field``."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise CorpusError(f"{path}: not a readable parquet file: {e}") from None
    names = pf.schema_arrow.names
    if text_field not in names:
        raise CorpusError(f"{path}: no column {text_field!r} (columns: {', '.join(names)}); use --text-field")
    return pf


def parquet_texts(path: Path, text_field: str, row_groups: Sequence[int] | None = None) -> Iterator[str]:
    """The texts of a parquet file's column ``text_field``: all rows, or those of ``row_groups`` (consecutive).

    Errors name the row, counted from the start of the file.
    """
    pf = open_parquet(path, text_field)
    row = sum(pf.metadata.row_group(g).num_rows for g in range(row_groups[0])) if row_groups else 0
    for batch in pf.iter_batches(batch_size=4096, row_groups=row_groups, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if not isinstance(text, str):
                raise CorpusError(f"{path}: row {row}: column {text_field!r} is {type(text).__name__}, not a string")
            yield text
            row += 1


def _read_directory(target: str, text_field: str, corpus: Corpus) -> Iterator[str]:
    for kind, path in directory_files(Path(target)):
        yield from _READERS[kind](str(path), text_field, corpus)


def directory_files(root: Path) -> list[tuple[str, Path]]:
    """``(kind, path)`` of the corpus files in a directory, in reading order (by name)."""
    files = sorted(p for p in root.iterdir() if p.is_file() and _resolve_file_kind(p) is not None)
    if not files:
        raise CorpusError(f"{root}: no corpus files (jsonl, parquet, txt) in this directory")
    return [(_resolve_file_kind(p), p) for p in files]  # type: ignore[misc]


def _resolve_file_kind(path: Path) -> str | None:
    try:
        return _resolve(str(path))[0]
    except CorpusError:
        return None


def _read_hf(target: str, text_field: str, corpus: Corpus) -> Iterator[str]:
    import datasets

    name, _, split = target.partition(":")
    split = split or "train"
    if Path(name).is_dir() and any((Path(name) / m).is_file() for m in _HF_MARKERS):
        yield from _read_hf_disk(name, text_field, corpus)
        return
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # the datasets library raises many types (network, missing split, bad files)
        raise CorpusError(f"hf:{target}: cannot open dataset {name!r} split {split!r}: {e}") from None
    yield from rows_texts(ds, text_field, f"hf:{target}")


def _read_hf_disk(target: str, text_field: str, corpus: Corpus) -> Iterator[str]:
    yield from rows_texts(hf_disk_dataset(target), text_field, target)


def hf_disk_dataset(target: str):
    """The ``datasets.Dataset`` saved at ``target`` (of a dataset dict, its ``train`` split)."""
    import datasets

    ds = datasets.load_from_disk(target)
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise CorpusError(f"{target}: dataset dict without a 'train' split (splits: {', '.join(ds)})")
        ds = ds["train"]
    return ds


def rows_texts(rows: Iterable[dict], text_field: str, where: str, *, first_row: int = 0) -> Iterator[str]:
    """The ``text_field`` of each row; errors name ``where`` and the row, the first being ``first_row``."""
    for i, row in enumerate(rows, start=first_row):
        yield _text_of(row, text_field, f"{where}: row {i}")


def _read_default(target: str, text_field: str, corpus: Corpus) -> Iterator[str]:
    yield from embedded_cached()


@functools.cache
def embedded_cached() -> tuple[str, ...]:
    """Parsing the standard library takes seconds; the ~2 MB result is kept for the process."""
    return tuple(embedded_documents())


# --- the embedded default corpus -------------------------------------------------------------------------------

_SKIP_PARTS = {"test", "tests", "idlelib", "lib2to3", "turtledemo", "site-packages", "dist-packages", "__pycache__"}
_MIN_DOC_CHARS = 200


def embedded_documents() -> Iterator[str]:
    """The reference manual's topics, then one document per standard-library module made of its docstrings.

    Sources are read as text and parsed with ``ast`` (nothing is imported or executed); order is by topic name and
    module path, so the corpus is identical on every run of the same Python release.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data; the module docstrings remain
        topics = {}
    for key in sorted(topics):
        if len(topics[key]) >= _MIN_DOC_CHARS:
            yield topics[key]
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts) or rel.parts[0].startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue  # a few stdlib files are deliberately invalid (e.g. bad-encoding fixtures)
        nodes = (
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        )
        text = "\n\n".join(d for d in (ast.get_docstring(n, clean=True) for n in nodes) if d)
        if len(text) >= _MIN_DOC_CHARS:
            yield text


_READERS = {
    "default": _read_default,
    "jsonl": _read_jsonl,
    "challenge": _read_challenge,
    "text": _read_text,
    "parquet": _read_parquet,
    "directory": _read_directory,
    "hf": _read_hf,
    "hf-disk": _read_hf_disk,
}
