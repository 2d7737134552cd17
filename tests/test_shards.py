"""The shard format and the memory-mapped reader, against files written here with ``struct`` from the format text."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf_data.shards import (
    MAX_SHARD_TOKENS,
    ShardFormatError,
    ShardSet,
    load_shard,
    parse_shard_filename,
    read_header,
    shard_filename,
    write_shard,
)

BOS = 1


def reference_file(path: Path, values: list[int], *, magic: int = 20240520, version: int = 1, count=None) -> None:
    """256 little-endian int32 header words (magic, version, count, zeros), then little-endian uint16 values."""
    n = len(values) if count is None else count
    path.write_bytes(struct.pack("<256i", magic, version, n, *([0] * 253)) + struct.pack(f"<{len(values)}H", *values))


def write_split(directory: Path, split: str, streams: list[list[int]], sidecars: list[list[int]] | None) -> None:
    for i, values in enumerate(streams):
        reference_file(directory / f"ds_{split}_{i:06d}.bin", values)
        if sidecars is not None:
            reference_file(directory / f"ds_{split}_bytes_{i:06d}.bin", sidecars[i])


def test_write_shard_matches_the_format_description(tmp_path):
    values = [0, 1, 65535, 300, 7]
    write_shard(tmp_path / "a.bin", np.array(values))
    reference_file(tmp_path / "b.bin", values)
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    assert read_header(tmp_path / "a.bin") == 5
    assert load_shard(tmp_path / "a.bin").tolist() == values
    assert not list(tmp_path.glob("*.tmp"))
    assert MAX_SHARD_TOKENS == 10**8


def test_write_shard_refuses_values_outside_uint16(tmp_path):
    with pytest.raises(ShardFormatError, match="outside uint16"):
        write_shard(tmp_path / "a.bin", np.array([1, 65536]))
    assert not (tmp_path / "a.bin").exists()


def test_file_names_round_trip():
    assert shard_filename("fineweb", "val", 3) == "fineweb_val_000003.bin"
    assert shard_filename("fineweb", "train", 12, sidecar=True) == "fineweb_train_bytes_000012.bin"
    assert parse_shard_filename("fineweb_train_bytes_000012.bin") == ("fineweb", "train", True, 12)
    assert parse_shard_filename("fine_web_val_000001.bin") == ("fine_web", "val", False, 1)
    assert parse_shard_filename("manifest.json") is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-2]), "header says 4 tokens, so 1032 bytes, but the file has 1030"),
        (lambda p: p.write_bytes(p.read_bytes() + b"\0\0"), "but the file has 1034 bytes"),
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "shorter than the 1024-byte header"),
        (lambda p: reference_file(p, [1, 2, 3, 4], magic=20240521), "offset 0: magic 20240521, expected 20240520"),
        (lambda p: reference_file(p, [1, 2, 3, 4], version=2), "offset 4: version 2, expected 1"),
        (
            lambda p: p.write_bytes(p.read_bytes()[:20] + b"\1" + p.read_bytes()[21:]),
            "offset 20: reserved header word 5",
        ),
    ],
)
def test_damaged_files_are_refused_with_the_reason(tmp_path, damage, message):
    path = tmp_path / "ds_val_000000.bin"
    reference_file(path, [1, 2, 3, 4])
    damage(path)
    with pytest.raises(ShardFormatError, match=message):
        load_shard(path)
    with pytest.raises(ShardFormatError, match=r"ds_val_000000\.bin"):
        ShardSet.open(tmp_path, "val")  # at open, before any token is read


def test_reader_refuses_a_truncated_sidecar_and_mismatched_counts(tmp_path):
    write_split(tmp_path, "val", [[1, 5, 6], [7, 1, 8]], [[0, 1, 1], [1, 0, 1]])
    side = tmp_path / "ds_val_bytes_000001.bin"
    side.write_bytes(side.read_bytes()[:-2])
    with pytest.raises(ShardFormatError, match=r"ds_val_bytes_000001\.bin: header says 3 tokens"):
        ShardSet.open(tmp_path, "val")
    reference_file(side, [1, 0])
    with pytest.raises(
        ShardFormatError, match=r"ds_val_bytes_000001\.bin: 2 entries, but its shard ds_val_000001\.bin has 3"
    ):
        ShardSet.open(tmp_path, "val")


def test_reader_refuses_gaps_and_ambiguity(tmp_path):
    with pytest.raises(FileNotFoundError):
        ShardSet.open(tmp_path / "nope", "val")
    write_split(tmp_path, "val", [[1, 2], [1, 3], [1, 4]], None)
    (tmp_path / "ds_val_000001.bin").unlink()
    with pytest.raises(ShardFormatError, match=r"missing indices \[1\]"):
        ShardSet.open(tmp_path, "val")
    reference_file(tmp_path / "other_val_000000.bin", [1])
    with pytest.raises(ShardFormatError, match="expected one set of val shards, found: ds, other"):
        ShardSet.open(tmp_path, "val")
    assert ShardSet.open(tmp_path, "val", name="other").num_tokens == 1


def test_a_split_that_does_not_start_with_bos_is_an_error(tmp_path):
    write_split(tmp_path, "train", [[5, 1, 6]], [[1, 0, 1]])
    shards = ShardSet.open(tmp_path, "train")
    with pytest.raises(ShardFormatError, match="offset 1024: the split starts with token 5, not BOS 1"):
        shards.doc_starts(BOS)
    with pytest.raises(ShardFormatError, match="not BOS 1"):
        shards.doc_byte_sums(BOS)


@st.composite
def split_streams(draw):
    """Documents (BOS + ids, byte counts) concatenated and cut into shards at arbitrary points."""
    docs = draw(st.lists(st.lists(st.integers(2, 65535), max_size=12), min_size=1, max_size=12))
    tokens, counts = [], []
    for doc in docs:
        tokens += [BOS, *doc]
        counts += [0, *[(t % 5) for t in doc]]
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(tokens) - 1)), max_size=4, unique=True)))
    bounds = [0, *[c for c in cuts if c < len(tokens)], len(tokens)]
    pieces = [(tokens[a:b], counts[a:b]) for a, b in itertools.pairwise(bounds)]
    return docs, tokens, counts, pieces


@settings(max_examples=60, deadline=None)
@given(data=split_streams(), window=st.tuples(st.integers(0, 200), st.integers(0, 200)))
def test_reader_matches_brute_force(tmp_path_factory, data, window):
    docs, tokens, counts, pieces = data
    directory = tmp_path_factory.mktemp("split")
    write_split(directory, "val", [p[0] for p in pieces], [p[1] for p in pieces])
    shards = ShardSet.open(directory, "val")
    assert shards.num_tokens == len(tokens)
    assert shards.offsets.tolist() == np.cumsum([0] + [len(p[0]) for p in pieces]).tolist()
    lo, hi = sorted(min(w, len(tokens)) for w in window)
    assert shards.read(lo, hi).tolist() == tokens[lo:hi]
    assert shards.read(lo, hi, sidecar=True).tolist() == counts[lo:hi]
    starts, position = [], 0
    for doc in docs:
        starts.append(position)
        position += 1 + len(doc)
    assert shards.doc_starts(BOS).tolist() == starts
    assert shards.doc_byte_sums(BOS).tolist() == [sum(t % 5 for t in doc) for doc in docs]
    chunked = [c for _, c, _ in shards.chunks(chunk_tokens=3)]
    assert np.concatenate(chunked).tolist() == tokens


def test_read_outside_the_split_is_an_index_error(tmp_path):
    write_split(tmp_path, "val", [[1, 2, 3]], None)
    shards = ShardSet.open(tmp_path, "val")
    with pytest.raises(IndexError, match=r"range \[2, 4\) outside the val split's 3 tokens"):
        shards.read(2, 4)
    with pytest.raises(ShardFormatError, match="no byte sidecars"):
        shards.read(0, 1, sidecar=True)
