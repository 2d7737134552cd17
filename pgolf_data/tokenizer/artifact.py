"""The compact tokenizer artifact: the exact bytes the model budget counts for the tokenizer.

Layout: ``b"PGTK"``, format version (1 byte), codec id (1 byte), then the compressed body. The body is a uint32
length, a canonical JSON header (spec, kind, special ids, kind-specific fields) and the kind's binary blob.
A tokenizer directory holds ``tokenizer.pgt`` (this artifact) and ``report.json`` (how it was trained); only the
artifact is needed to encode and decode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from ..compress import codec_name, compress, decompress
from .base import Tokenizer, TokenizerError
from .spec import TokenizerSpec

MAGIC = b"PGTK"
FORMAT_VERSION = 1
ARTIFACT_NAME = "tokenizer.pgt"
REPORT_NAME = "report.json"


def to_artifact(tok: Tokenizer) -> bytes:
    header, blob = tok.payload()
    header = {"kind": tok.kind, "spec": tok.spec.to_dict(), **header}
    head = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    body = struct.pack("<I", len(head)) + head + blob
    codec, packed = compress(body)
    return MAGIC + bytes([FORMAT_VERSION, codec]) + packed


def from_artifact(data: bytes, *, where: str = "tokenizer artifact") -> Tokenizer:
    from . import kind_class  # the registry imports every kind

    if data[:4] != MAGIC:
        raise TokenizerError(f"{where}: not a pgolf tokenizer artifact (magic {data[:4]!r}, expected {MAGIC!r})")
    if len(data) < 7:
        raise TokenizerError(f"{where}: truncated tokenizer artifact ({len(data)} bytes, no body after the header)")
    if data[4] != FORMAT_VERSION:
        raise TokenizerError(f"{where}: artifact format version {data[4]}, this pgolf reads {FORMAT_VERSION}")
    try:
        body = decompress(data[5], data[6:])
        (head_len,) = struct.unpack_from("<I", body)
        header = json.loads(body[4 : 4 + head_len])
        spec, kind = header.pop("spec"), header.pop("kind")
    except Exception as e:  # any codec or JSON failure means the same thing to the user
        raise TokenizerError(f"{where}: corrupt artifact body: {e}") from None
    return kind_class(kind).from_payload(TokenizerSpec.from_dict(spec, where=where), header, body[4 + head_len :])


def artifact_info(data: bytes) -> dict:
    return {"bytes": len(data), "codec": codec_name(data[5]), "sha256": hashlib.sha256(data).hexdigest()}


def save(tok: Tokenizer, out_dir: str | os.PathLike, report: dict, *, force: bool = False) -> Path:
    """Write ``tokenizer.pgt`` and ``report.json`` into ``out_dir`` atomically.

    Everything is written to a temporary sibling directory first and renamed into place, so a crash never leaves a
    half-written tokenizer. An existing ``out_dir`` is refused unless ``force``, and even then unless it is a
    tokenizer directory (``is_tokenizer_dir``): ``--force`` never deletes files pgolf did not write.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    data = to_artifact(tok)
    report = {**report, "artifact": artifact_info(data)}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    old = tmp.with_name(tmp.name + ".old")
    try:
        (tmp / ARTIFACT_NAME).write_bytes(data)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out_dir.exists():
            os.replace(out_dir, old)  # kept until the new directory is in place, restored on failure
        os.replace(tmp, out_dir)
    except BaseException:
        if old.exists() and not out_dir.exists():
            os.replace(old, out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out_dir / ARTIFACT_NAME


def is_tokenizer_dir(path: str | os.PathLike) -> bool:
    """A directory holding nothing but what ``save`` writes (an empty one included)."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and {p.name for p in path.iterdir()} <= {ARTIFACT_NAME, REPORT_NAME}


def check_output_dir(out_dir: Path, force: bool) -> None:
    """Raise unless ``save`` may write ``out_dir``: it is new, or ``force`` and a tokenizer directory."""
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not force:
        raise FileExistsError(f"output directory {out_dir} exists; pass --force to replace it")
    if not is_tokenizer_dir(out_dir):
        raise FileExistsError(
            f"refusing to replace {out_dir}: it is not a pgolf tokenizer directory (only {ARTIFACT_NAME} and "
            f"{REPORT_NAME}), so --force would delete files pgolf did not write"
        )


def artifact_path(path: str | os.PathLike) -> Path:
    """Accept a tokenizer directory or the artifact file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / ARTIFACT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer artifact at {path}")
    return path


def load(path: str | os.PathLike) -> Tokenizer:
    path = artifact_path(path)
    return from_artifact(path.read_bytes(), where=str(path))


def load_report(path: str | os.PathLike) -> dict:
    report = artifact_path(path).parent / REPORT_NAME
    return json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {}
