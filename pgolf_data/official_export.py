"""``pgolf-data export``: a pgolf shard folder as the folder an official script reads as it is.

The challenge's scripts find their data by globs in ``DATA_PATH`` and their tokenizer at ``TOKENIZER_PATH``
(docs/formats.md, official folders):

- ``baseline`` (the repository's ``train_gpt.py``): ``fineweb_train_*.bin`` and ``fineweb_val_*.bin``, unfiltered,
  so the folder holds token shards only; the tokenizer is ``fineweb_<V>_bpe.model``; BPB by the SentencePiece formula.
- ``caseops-record`` (the CaseOps records from 2026-04-18_PR1626_CaseOps_Taper on, ``CASEOPS_ENABLED=1``): the same
  token globs (the val one filtered for ``_bytes_``) and ``fineweb_val_bytes_*.bin`` beside the tokens, holding *the
  records'* byte counts (``tokenizer/record_sidecar.py``), so the record's script reproduces its own BPB; the
  tokenizer is ``fineweb_<V>_bpe_lossless_caps_caseops_v1_reserved.model``. The records' counts leave out whitespace
  SentencePiece strips at a document's ends, which pgolf's sidecar keeps; the export reports where they differ.

Token shards are hard links to the pgolf files (copies across filesystems), so the export costs one link per file
whatever the shard size; only the records' sidecar is computed, from the val documents of the corpus, whose
re-encoding must reproduce the folder's val tokens.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .folder import FolderError, open_folder
from .manifest import TOKENIZER_NAME, write_atomic
from .shards import ShardSet, shard_filename, write_shard
from .tokenizer.artifact import from_artifact
from .tokenizer.base import Tokenizer
from .tokenizer.interop import export_model_proto
from .tokenizer.record_sidecar import record_encode_with_bytes

OFFICIAL_NAME = "fineweb"  # the prefix every official script globs for
BATCH_DOCS = 512  # val documents per record-sidecar encode call


@dataclass(frozen=True)
class Target:
    script: str
    model_name: str  # {vocab}: the vocabulary size
    kinds: tuple[str, ...]  # tokenizer kinds the script scores right
    record_sidecars: bool
    env: dict[str, str] = field(default_factory=dict)


TARGETS = {
    "baseline": Target("the baseline train_gpt.py", "fineweb_{vocab}_bpe.model", ("sentencepiece",), False),
    "caseops-record": Target(
        "the CaseOps records' train_gpt.py",
        "fineweb_{vocab}_bpe_lossless_caps_caseops_v1_reserved.model",
        ("caseops-sp", "sentencepiece"),
        True,
        {"CASEOPS_ENABLED": "1"},
    ),
}


@dataclass
class Export:
    out: Path
    env: dict[str, str]
    linked: int = 0
    copied: int = 0
    sidecar_diff: dict[str, int] | None = None  # pgolf's sidecar against the records': docs, tokens, bytes

    def command(self) -> str:
        """The line that runs the script on the export."""
        return (
            " ".join(f"{k}={v}" for k, v in self.env.items()) + " torchrun --standalone --nproc_per_node=8 train_gpt.py"
        )


def export_folder(
    shard_dir: str | os.PathLike,
    target: str,
    out: str | os.PathLike,
    *,
    corpus: Iterable[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Export:
    """Write the folder ``target``'s script reads (module docstring) to ``out``; ``corpus`` (the documents the
    shards were made from) is needed for ``caseops-record``'s sidecars."""
    if target not in TARGETS:
        raise ValueError(f"--for {target!r}: expected one of {', '.join(TARGETS)}")
    spec, log = TARGETS[target], log or (lambda message: None)
    shard_dir, out = Path(shard_dir), Path(out)
    folder = open_folder(shard_dir)
    if folder.manifest is None:
        raise FolderError(f"{shard_dir} has no manifest: it is an official folder already, not a pgolf one")
    tok = from_artifact((shard_dir / TOKENIZER_NAME).read_bytes(), where=str(shard_dir / TOKENIZER_NAME))
    folder.bind((shard_dir / TOKENIZER_NAME).read_bytes(), str(shard_dir / TOKENIZER_NAME))
    if tok.kind not in spec.kinds:
        raise ValueError(
            f"{spec.script} scores a {' or '.join(spec.kinds)} tokenizer right, not this {tok.kind} one"
            + ("; use --for caseops-record, whose script reads byte sidecars" if tok.caseops else "")
        )
    if spec.record_sidecars and corpus is None:
        raise ValueError(f"--for {target} writes the records' byte counts, computed from the corpus: pass --corpus")
    _check_output(out, force)
    out.mkdir(parents=True, exist_ok=True)
    model = out / spec.model_name.format(vocab=tok.vocab_size)
    write_atomic(model, export_model_proto(tok))
    result = Export(out, {"DATA_PATH": str(out.resolve()), "TOKENIZER_PATH": str(model.resolve())})
    result.env["VOCAB_SIZE"] = str(tok.vocab_size)
    result.env.update(spec.env)
    for split in ("train", "val"):
        shards = ShardSet.open(shard_dir, split, name=folder.manifest.name)  # type: ignore[arg-type]
        for i, path in enumerate(shards.token_files):
            linked = _link(path, out / shard_filename(OFFICIAL_NAME, split, i))
            result.linked, result.copied = result.linked + linked, result.copied + (not linked)
    if spec.record_sidecars:
        val = ShardSet.open(shard_dir, "val", name=folder.manifest.name)
        result.sidecar_diff = _record_sidecars(tok, val, corpus, out)  # type: ignore[arg-type]
    log(f"{result.linked} shard(s) hard-linked, {result.copied} copied into {out}")
    return result


def _record_sidecars(tok: Tokenizer, val: ShardSet, corpus: Iterable[str], out: Path) -> dict[str, int]:
    """Write the records' sidecars of the val split beside the tokens, cut like them, after checking that the
    corpus re-encodes to the folder's tokens; return how pgolf's sidecar differs from them."""
    starts = val.doc_starts(tok.bos_id)
    ends = np.append(starts[1:], val.num_tokens)
    record = np.zeros(val.num_tokens, dtype=np.int64)
    docs = iter(corpus)
    for lo in range(0, len(starts), BATCH_DOCS):
        texts = [next(docs, None) for _ in range(min(BATCH_DOCS, len(starts) - lo))]
        if any(t is None for t in texts):
            raise ValueError(f"the corpus has fewer documents than the val split's {len(starts):,}")
        for k, (ids, counts) in enumerate(record_encode_with_bytes(tok, texts)):
            d = lo + k
            a, b = int(starts[d]) + 1, int(ends[d])
            stored = val.read(a, b)
            if len(ids) != b - a or not np.array_equal(ids, stored):
                raise ValueError(
                    f"val document {d}: the corpus re-encodes to {len(ids)} tokens that differ from the folder's "
                    f"{b - a} ({val.token_files[0].parent}): not the corpus these shards were made from"
                )
            record[a:b] = counts
    exact = val.read(0, val.num_tokens, sidecar=True).astype(np.int64)
    differs = exact != record
    doc_of = np.searchsorted(starts, np.flatnonzero(differs), side="right") - 1
    for i, (lo, hi) in enumerate(zip(val.offsets[:-1], val.offsets[1:])):
        write_shard(out / shard_filename(OFFICIAL_NAME, "val", i, sidecar=True), record[lo:hi])
    return {
        "docs": int(np.unique(doc_of).size),
        "tokens": int(differs.sum()),
        "bytes": int(exact.sum() - record.sum()),
        "total_bytes": int(exact.sum()),
    }


def _link(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` at ``dst``, or copy it (atomically) where links are impossible; True when linked."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
        return True
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return False


def _check_output(out: Path, force: bool) -> None:
    """An existing ``out`` is replaced only with ``force`` and only when it holds nothing but an export's files."""
    if not out.exists():
        return
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else [out.name]
    if not names:
        return
    if not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace an earlier export")
    foreign = [n for n in names if not (n.startswith(f"{OFFICIAL_NAME}_") and n.endswith((".bin", ".model")))]
    if not out.is_dir() or foreign:
        raise FileExistsError(
            f"refusing to replace {out}: it holds {', '.join(foreign[:3]) or out.name}, which an export does not write"
        )
    for n in names:
        (out / n).unlink()
