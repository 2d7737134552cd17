"""Tokenizers in the files other tools read and write: SentencePiece ``.model``, HF ``tokenizer.json``, and the
challenge's pure-byte JSON.

- *export* (``export_tokenizer``): ``sentencepiece`` and ``caseops-sp`` give the SentencePiece model proto exactly
  as the artifact holds it (a model pgolf trained has no ``model_prefix`` path and no thread count, so it is the
  official export's ``.model`` but for the path string); ``hf-bpe`` and ``caseops-hf-bpe`` give a ``tokenizer.json``
  (hf_bpe.py; the CaseOps operators as added tokens, the transform left to the reader); ``bytes`` gives the
  official pure-byte JSON (pure_bytes.py).
- *import* (``import_tokenizer``): the format is told from the content, not the file name. A SentencePiece model
  whose user-defined pieces include the four CaseOps operators (the 2026-04-18 record's layout: ids 4..7 after
  pad/BOS/EOS/unk) becomes a ``caseops-sp`` tokenizer with the record's transform, any other one a ``sentencepiece``
  tokenizer; the model bytes are kept as they are, so ``export(import(x)) == x``. A ``.model`` cannot say which
  CaseOps alphabet it was trained with, so a pgolf-variant CaseOps model needs ``case_transform="pgolf"`` on import.

``write_export`` and ``write_import`` add the file handling of the CLI: atomic writes, and an existing output is
replaced only with ``force`` and only when it is pgolf's kind of file (a tokenizer file, a tokenizer directory).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

from ..manifest import write_atomic
from . import artifact, sp_model
from .base import Tokenizer, TokenizerError
from .caseops import OPERATORS, PGOLF, RECORD, TRANSFORMS
from .caseops_bpe import TRANSFORM_OPTION, CaseOpsHFBPETokenizer, CaseOpsSentencePieceTokenizer
from .hf_bpe import HFByteLevelBPETokenizer, read_tokenizer_json
from .pure_bytes import OFFICIAL_JSON_NAME, VOCAB_SIZE, ByteTokenizer, check_official_json, official_json
from .sentencepiece_bpe import SentencePieceTokenizer
from .spec import SpecError, TokenizerSpec

SENTENCEPIECE_MODEL = "sentencepiece-model"
HF_TOKENIZER_JSON = "hf-tokenizer-json"
PURE_BYTE_JSON = "pure-byte-json"
SUFFIXES = {SENTENCEPIECE_MODEL: ".model", HF_TOKENIZER_JSON: ".json", PURE_BYTE_JSON: ".json"}
AUTO = "auto"  # case_transform on import: the record's for a .model, pgolf's for a tokenizer.json


# -- export ------------------------------------------------------------------------------------------------------


def export_model_proto(tok: Tokenizer) -> bytes:
    """The SentencePiece ``.model`` bytes of a ``sentencepiece`` or ``caseops-sp`` tokenizer."""
    if isinstance(tok, CaseOpsSentencePieceTokenizer):
        return tok.inner.model_proto()
    if isinstance(tok, SentencePieceTokenizer):
        return tok.model_proto()
    raise TokenizerError(f"a {tok.kind} tokenizer has no SentencePiece model")


def export_tokenizer(tok: Tokenizer) -> tuple[str, bytes]:
    """``(format, file bytes)``: the file other tools read for this tokenizer (see the module docstring)."""
    if isinstance(tok, (SentencePieceTokenizer, CaseOpsSentencePieceTokenizer)):
        return SENTENCEPIECE_MODEL, export_model_proto(tok)
    if isinstance(tok, CaseOpsHFBPETokenizer):
        return HF_TOKENIZER_JSON, tok.inner.tokenizer_json(list(OPERATORS.values())).encode("utf-8")
    if isinstance(tok, HFByteLevelBPETokenizer):
        return HF_TOKENIZER_JSON, tok.tokenizer_json().encode("utf-8")
    if isinstance(tok, ByteTokenizer):
        return PURE_BYTE_JSON, official_json().encode("utf-8")
    raise TokenizerError(f"no export format for tokenizer kind {tok.kind!r}")


def export_note(tok: Tokenizer) -> str | None:
    """What the exported file does not carry, for the user to know."""
    if tok.caseops:
        case = tok.case.name
        note = (
            f"the file holds the BPE only: apply the {case} CaseOps transform (pgolf_data.tokenizer.caseops) to text "
            "before encoding and its inverse after decoding"
        )
        if case == PGOLF and tok.kind == "caseops-sp":
            note += f"; import this .model back with --case-transform {PGOLF} (a .model does not name its transform)"
        return note
    return None


# -- import ------------------------------------------------------------------------------------------------------


def detect_format(data: bytes, where: str) -> tuple[str, object]:
    """``(format, parsed JSON or None)`` of a tokenizer file's bytes."""
    head = data.lstrip()[:1]
    if head == b"{":
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"{where}: starts like JSON but is not valid JSON ({e})") from None
        if isinstance(obj, dict) and obj.get("tokenizer_type") == "pure_byte":
            return PURE_BYTE_JSON, obj
        if isinstance(obj, dict) and "model" in obj:
            return HF_TOKENIZER_JSON, obj
        keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise TokenizerError(f"{where}: JSON but neither a tokenizer.json (no 'model') nor a pure-byte file: {keys}")
    if data[:1] == b"\x0a":  # a ModelProto starts with its first piece (field 1, length-delimited)
        return SENTENCEPIECE_MODEL, None
    raise TokenizerError(
        f"{where}: neither a SentencePiece .model (a model proto starts with byte 0x0A, this file with "
        f"{data[:1].hex() or 'nothing: it is empty'}) nor a tokenizer.json / pure-byte JSON file"
    )


def import_tokenizer(data: bytes, *, name: str, where: str, case_transform: str = AUTO) -> Tokenizer:
    """The pgolf tokenizer a file's bytes describe (see the module docstring)."""
    if case_transform not in (AUTO, *TRANSFORMS):
        raise TokenizerError(f"case_transform {case_transform!r} is not one of {AUTO}, {', '.join(TRANSFORMS)}")
    fmt, obj = detect_format(data, where)
    # The spec goes into the artifact: name the file by its name and content, not by where it was on this machine.
    origin = f"imported from {Path(where).name} ({fmt}, sha256 {hashlib.sha256(data).hexdigest()[:16]})"
    try:
        if fmt == SENTENCEPIECE_MODEL:
            return _import_model(data, name, where, origin, RECORD if case_transform == AUTO else case_transform)
        if fmt == HF_TOKENIZER_JSON:
            return _import_hf(obj, name, where, origin, PGOLF if case_transform == AUTO else case_transform)
        check_official_json(obj, where)
        return ByteTokenizer(_spec(name, "bytes", VOCAB_SIZE, origin, {}))
    except TokenizerError:
        raise
    except SpecError as e:
        raise TokenizerError(f"{where}: {e}") from None
    except (AttributeError, TypeError, KeyError, ValueError) as e:  # a structurally malformed file
        raise TokenizerError(f"{where}: malformed {fmt} file: {type(e).__name__}: {e}") from None


def _spec(name: str, kind: str, vocab_size: int, origin: str, options: dict) -> TokenizerSpec:
    return TokenizerSpec(name=name, kind=kind, vocab_size=vocab_size, description=origin, options=options)


def _import_model(data: bytes, name: str, where: str, origin: str, case_transform: str) -> Tokenizer:
    try:
        pieces, _ = sp_model.split_model(data)
    except (TokenizerError, UnicodeDecodeError, IndexError, struct.error) as e:
        raise TokenizerError(f"{where}: corrupt SentencePiece model: {e}") from None
    user_defined = {p.text for p in pieces if p.type == sp_model.USER_DEFINED}
    caseops = set(OPERATORS.values()) <= user_defined
    options = {TRANSFORM_OPTION: case_transform} if caseops else {}
    spec = _spec(name, "caseops-sp" if caseops else "sentencepiece", len(pieces), origin, options)
    inner_spec = CaseOpsSentencePieceTokenizer.inner_spec(spec) if caseops else spec
    try:
        inner = SentencePieceTokenizer(inner_spec, data)  # SentencePiece itself checks the rest of the proto
    except TokenizerError as e:
        raise TokenizerError(f"{where}: {e}") from None
    if "bos" not in inner.special_ids:
        raise TokenizerError(f"{where}: the model has no BOS piece, and every document of a shard starts with BOS")
    sp_model.compact(data)  # fails now, not at save, if the artifact cannot rebuild these exact bytes
    return CaseOpsSentencePieceTokenizer(spec, inner) if caseops else inner


def _import_hf(obj: object, name: str, where: str, origin: str, case_transform: str) -> Tokenizer:
    _, extra = read_tokenizer_json(obj, where)
    if extra and extra != list(OPERATORS.values()):
        raise TokenizerError(
            f"{where}: added tokens {extra[:8]} after the vocabulary; pgolf's layout has none, or the four CaseOps "
            "operators"
        )
    vocab_size = len(obj["model"]["vocab"]) + len(extra)
    if not extra:
        return HFByteLevelBPETokenizer.from_tokenizer_json(_spec(name, "hf-bpe", vocab_size, origin, {}), obj, where)
    spec = _spec(name, "caseops-hf-bpe", vocab_size, origin, {TRANSFORM_OPTION: case_transform})
    inner = HFByteLevelBPETokenizer.from_tokenizer_json(CaseOpsHFBPETokenizer.inner_spec(spec), obj, where)
    return CaseOpsHFBPETokenizer(spec, inner)


def source_info(data: bytes, path: Path, fmt: str) -> dict:
    return {"file": str(path), "format": fmt, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# -- files -------------------------------------------------------------------------------------------------------


def write_export(
    tokenizer: str | os.PathLike, out: str | os.PathLike, *, force: bool = False
) -> tuple[Tokenizer, str, Path]:
    """Export the tokenizer at ``tokenizer`` (a directory or its artifact) to the file ``out``; returns the tokenizer,
    the format and the file."""
    tok = artifact.load(tokenizer)
    fmt, data = export_tokenizer(tok)
    out = Path(out)
    if out.suffix != SUFFIXES[fmt]:
        raise ValueError(f"{out}: a {fmt} file is named *{SUFFIXES[fmt]} (e.g. {_example_name(fmt, tok)})")
    _check_replaceable_file(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, data)
    return tok, fmt, out


def _example_name(fmt: str, tok: Tokenizer) -> str:
    if fmt == PURE_BYTE_JSON:
        return OFFICIAL_JSON_NAME
    if fmt == SENTENCEPIECE_MODEL:
        return f"fineweb_{tok.vocab_size}_bpe.model"  # the challenge's naming, data/tokenizers/fineweb_<V>_bpe.model
    return "tokenizer.json"


def _check_replaceable_file(out: Path, force: bool) -> None:
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise FileExistsError(f"output file {out} exists; pass --force to replace it")
    if out.is_symlink() or not out.is_file():
        raise FileExistsError(f"refusing to replace {out}: it is not a regular file")
    try:
        detect_format(out.read_bytes(), str(out))
    except TokenizerError:
        raise FileExistsError(
            f"refusing to replace {out}: it is not a tokenizer file (.model, tokenizer.json, pure-byte JSON), "
            "so --force would overwrite a file pgolf did not write"
        ) from None


def write_import(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    force: bool = False,
    name: str | None = None,
    case_transform: str = AUTO,
) -> tuple[Tokenizer, Path]:
    """Import the file ``path`` into the tokenizer directory ``out_dir``; returns the tokenizer and its artifact."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    out_dir = Path(out_dir)
    artifact.check_output_dir(out_dir, force)  # before any work; save checks again
    data = path.read_bytes()
    tok = import_tokenizer(data, name=name or path.stem, where=str(path), case_transform=case_transform)
    fmt, _ = detect_format(data, str(path))
    report = {
        "spec": tok.spec.to_dict(),
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "lossless": tok.lossless,
        "special_ids": tok.special_ids,
        "imported_from": source_info(data, path, fmt),
    }
    if tok.caseops:
        report["caseops"] = {"case_transform": tok.case.name, "operator_ids": tok.operator_ids}
    return tok, artifact.save(tok, out_dir, report, force=force)


def artifact_bytes(path: str | os.PathLike) -> bytes:
    """The artifact of the tokenizer at ``path``: a pgolf tokenizer directory or ``tokenizer.pgt`` as it is, or a
    file other tools write (``.model``, ``tokenizer.json``, pure-byte JSON) imported as ``import_tokenizer`` does, so
    that ``--tokenizer`` takes the challenge's ``.model`` directly."""
    path = Path(path)
    if path.is_dir():
        return artifact.artifact_path(path).read_bytes()
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer artifact at {path}")
    data = path.read_bytes()
    if data[: len(artifact.MAGIC)] == artifact.MAGIC:
        return data
    return artifact.to_artifact(import_tokenizer(data, name=path.stem, where=str(path)))
