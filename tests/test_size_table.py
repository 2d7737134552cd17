"""bench/size_table.py: on Gaussian rows the measured offset is the Gaussian's differential entropy (2.05 bits) plus
what the codec loses, and the table it writes is one the estimate reads."""

from __future__ import annotations

import math
import runpy
import sys
from pathlib import Path

import pytest
import torch
from model_data import one_thread  # noqa: F401 (autouse fixture)

from pgolf_model.model import GPT
from pgolf_model.presets import preset

GAUSSIAN_ENTROPY = 0.5 * math.log2(2 * math.pi * math.e)  # bits, at unit standard deviation


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import size_table  # bench/size_table.py
    finally:
        sys.path.pop(0)
    return size_table


def test_gaussian_rows_measure_their_entropy_and_the_table_is_readable(bench, tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "GRID", ((6, 12.85), (8, 20.0)))
    monkeypatch.setattr(bench, "CODECS", ("zstd", "brotli"))
    cfg = preset("smoke").override({"model.vocab_size": 512, "model.model_dim": 128})
    torch.manual_seed(0)
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    run = bench.measure(model, keep_float_max_numel=1024)
    points = bench.pooled([run, run])
    for (codec, _, bits, _), (c, spread) in points.items():
        assert spread == 0
        # 8 bits at k 20: 6.4 grid steps per std, fine enough that the entropy is h + x to ~0.01 bit
        assert GAUSSIAN_ENTROPY - 0.05 < c < GAUSSIAN_ENTROPY + (0.15 if codec == "brotli" else 0.3), (codec, bits, c)
    # a Gaussian row of 128 values reaches about sqrt(2 ln 128) std
    assert all(0.75 < k < 1.0 for k in run["clip_k"].values()), run["clip_k"]
    path = tmp_path / "table.py"
    bench.write_table(["gaussian"], bench.as_table(points), run["remainder"], run["clip_k"], path)
    table = runpy.run_path(str(path))
    assert table["RUNS"] == ("gaussian",) and set(table["OFFSETS"]) == {"zstd", "brotli"}
    xs = [x for x, _ in table["OFFSETS"]["brotli"]["mlp"]]
    assert xs == sorted(xs) and len(xs) == 2 and set(table["CLIP_K"]) == {"embed", "attn", "mlp"}
