"""The training loader: the official token layout, disjoint rank slices, seeded shuffling, resumability."""

from __future__ import annotations

import numpy as np
import pytest

from pgolf_data.shards import ShardSet, shard_filename, write_shard
from pgolf_model.training.data import TokenStream, TrainLoader


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory):
    """1,000 tokens 0..999 (mod 65536) cut into three uneven train shards."""
    d = tmp_path_factory.mktemp("stream")
    tokens = np.arange(1000)
    for i, part in enumerate(np.split(tokens, [137, 600])):
        write_shard(d / shard_filename("s", "train", i), part)
    return d


def loader(stream_dir, **kw) -> TrainLoader:
    args = dict(seq_len=8, device_batch_tokens=32, grad_accum=1, rank=0, world_size=1)
    return TrainLoader(ShardSet.open(stream_dir, "train"), **{**args, **kw})


def test_stream_reads_across_shards_and_wraps(stream_dir):
    s = TokenStream(ShardSet.open(stream_dir, "train"))
    assert s.total == 1000
    assert s.read(130, 20).tolist() == list(range(130, 150))  # crosses the 137 boundary
    assert s.read(990, 20).tolist() == list(range(990, 1000)) + list(range(10))  # wraps
    assert s.read(2130, 5).tolist() == list(range(130, 135))


def test_sequential_layout_is_the_official_one(stream_dir):
    # Official: each (micro) step takes world * (D + 1) consecutive tokens; rank r gets the r-th span of D + 1;
    # x = span[:-1].view(-1, L), y = span[1:].view(-1, L).
    ld = loader(stream_dir, world_size=2, grad_accum=3, rank=1)
    D, step, micro = 32, 4, 2
    k = (step * 3 + micro) * 2 + 1
    span = np.arange(k * (D + 1), (k + 1) * (D + 1)) % 1000
    x, y = ld.batch(step, micro)
    assert x.tolist() == span[:-1].reshape(-1, 8).tolist()
    assert y.tolist() == span[1:].reshape(-1, 8).tolist()


def test_ranks_with_one_micro_step_read_what_one_rank_reads_with_accumulation(stream_dir):
    one = loader(stream_dir, grad_accum=2)
    two = [loader(stream_dir, world_size=2, rank=r) for r in (0, 1)]
    for step in range(5):
        for r in (0, 1):
            assert one.batch(step, r)[0].tolist() == two[r].batch(step, 0)[0].tolist()
    a, b = (ld.tokens(3, 0) for ld in two)
    assert not set(a[:, :-1].ravel()) & set(b[:, :-1].ravel()), "rank slices overlap"


def test_shuffle_is_seeded_and_covers_every_window_once_per_epoch(stream_dir):
    ld = loader(stream_dir, shuffle=True, seed=7)
    windows = ld.num_windows
    assert windows == 999 // 8
    rows = np.concatenate([ld.tokens(step, 0) for step in range(-(-windows // 4))])[:windows]
    starts = sorted(int(r[0]) for r in rows)
    assert starts == [8 * w for w in range(windows)]
    assert all((r == np.arange(r[0], r[0] + 9) % 1000).all() for r in rows)
    again = loader(stream_dir, shuffle=True, seed=7)
    other = loader(stream_dir, shuffle=True, seed=8)
    assert np.array_equal(again.tokens(11, 0), ld.tokens(11, 0))
    assert not np.array_equal(other.tokens(0, 0), ld.tokens(0, 0))


def test_batch_is_a_function_of_the_step(stream_dir):
    ld = loader(stream_dir, shuffle=True, seed=1)
    late = ld.tokens(40, 0)  # epoch > 0 first
    ld.tokens(0, 0)
    fresh = loader(stream_dir, shuffle=True, seed=1)
    assert np.array_equal(fresh.tokens(40, 0), late)


def test_too_short_split_is_an_error(tmp_path):
    write_shard(tmp_path / shard_filename("s", "train", 0), np.array([1]))
    with pytest.raises(ValueError, match="1 tokens, need >= 2"):
        TokenStream(ShardSet.open(tmp_path, "train"))
