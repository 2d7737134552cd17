"""The cached stages a tokenizer comparison is made of: tokenizer training and sharding.

Each function takes a ``StageCache``, computes the stage's inputs (everything its output depends on) and returns the
stage directory, building it only when no complete one exists. Model training and evaluation stages live in
``pipelines.model_stages``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

from pgolf_data.sharding import ShardConfig, write_shards
from pgolf_data.tokenizer import Tokenizer, TokenizerSpec, artifact, training

from .cache import StageCache, read_json, source_hash
from .documents import CorpusSplit

TOKENIZER_DIR = "tokenizer"
SHARD_DIR = "shards"
SHARD_NAME = "data"


def _library_versions(*names: str) -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in names}


def tokenizer_inputs(spec: TokenizerSpec, split: CorpusSplit) -> dict:
    """Trained on the training part only: a tokenizer never sees the validation documents it is scored on."""
    return {
        "spec": spec.to_dict(),
        "docs": split.content_key()["train"],
        "code": source_hash("pgolf_data.tokenizer", "pgolf_data.compress"),
        "libraries": _library_versions("sentencepiece", "tokenizers", "zstandard", "brotli"),
    }


def tokenizer_stage(cache: StageCache, spec: TokenizerSpec, split: CorpusSplit, *, threads: int) -> Path:
    """The stage directory; the trained tokenizer is ``<dir>/tokenizer`` (``tokenizer.pgt`` + ``report.json``)."""

    def build(tmp: Path) -> None:
        tok, report = training.train(spec, split.train(), num_threads=threads)
        artifact.save(tok, tmp / TOKENIZER_DIR, report)

    return cache.run("tokenizer", tokenizer_inputs(spec, split), build, label=spec.name)


def stage_tokenizer(stage_dir: Path) -> tuple[Tokenizer, int]:
    """A tokenizer stage's tokenizer and its artifact's length in bytes (what an artifact budget counts)."""
    path = stage_dir / TOKENIZER_DIR / artifact.ARTIFACT_NAME
    return artifact.load(path), path.stat().st_size


def tokenizer_sha256(stage_dir: Path) -> str:
    return read_json(stage_dir / TOKENIZER_DIR / artifact.REPORT_NAME)["artifact"]["sha256"]


def shard_stage(cache: StageCache, tokenizer_dir: Path, split: CorpusSplit, *, workers: int, label: str = "") -> Path:
    """Validation and training shards (validation sidecars) of the split's documents; ``<dir>/shards``."""
    data = (tokenizer_dir / TOKENIZER_DIR / artifact.ARTIFACT_NAME).read_bytes()
    config = ShardConfig(name=SHARD_NAME, val_docs=split.val_docs, max_docs=split.max_docs, workers=workers)
    inputs = {
        "tokenizer_sha256": hashlib.sha256(data).hexdigest(),
        "docs": split.content_key(),
        "settings": config.output_settings(),
        "code": source_hash("pgolf_data.sharding", "pgolf_data.shards", "pgolf_data.manifest", "pgolf_data.tokenizer"),
    }

    def build(tmp: Path) -> None:
        write_shards(split.corpus(), data, tmp / SHARD_DIR, config)

    return cache.run("shards", inputs, build, label=label)
