"""Bit allocation: the entropy estimate, the greedy plan against brute force, the real-size loop, and the measured
options of a trained model."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_data import one_thread  # noqa: F401 (autouse fixture)
from quant_model import CPU, train_small

from pgolf_data.compress import compress
from pgolf_model.export import allocation, calibration
from pgolf_model.export.allocation import AllocationError, Option
from pgolf_model.export.ptq import GroupRule, tensor_groups


def test_entropy_bytes():
    assert allocation.entropy_bytes(np.arange(256).repeat(4)) == pytest.approx(1024.0)  # 8 bits each
    assert allocation.entropy_bytes(np.zeros(1000, dtype=np.int8)) == 0.0
    assert allocation.entropy_bytes(np.array([0, 1] * 400)) == pytest.approx(100.0)  # 1 bit each


def test_entropy_tracks_the_real_compressors():
    values = np.clip(np.round(np.random.default_rng(0).standard_normal(200_000) * 6), -31, 31).astype(np.int8)
    estimate = allocation.entropy_bytes(values)
    for codec in ("zstd", "lzma", "brotli"):
        real = len(compress(values.tobytes(), (codec,))[1])
        assert 0.97 < real / estimate < 1.06, codec


def options(table: dict[str, list[tuple[int, float, float]]]) -> dict[str, list[Option]]:
    return {g: [Option(b, size, cost) for b, size, cost in rows] for g, rows in table.items()}


EXAMPLE = options(
    {
        # Embedding: expensive to squeeze. MLP: cheap. Attention: in between.
        "embed": [(8, 100, 0.0), (7, 90, 0.05), (6, 80, 0.2), (5, 70, 0.5)],
        "attn": [(8, 200, 0.0), (7, 170, 0.01), (6, 140, 0.03), (5, 110, 0.1)],
        "mlp": [(8, 400, 0.0), (7, 340, 0.005), (6, 280, 0.02), (5, 220, 0.08)],
    }
)


def plan_bytes(opts, bits):
    return sum({o.bits: o for o in opts[g]}[b].bytes for g, b in bits.items())


def test_everything_at_eight_bits_when_it_fits():
    assert allocation.greedy(EXAMPLE, 700) == {"embed": 8, "attn": 8, "mlp": 8}


def test_the_cheapest_loss_per_byte_goes_first():
    # 60 bytes over: mlp 8->7 saves 60 for 0.005 (0.00008/byte), the best rate.
    assert allocation.greedy(EXAMPLE, 640) == {"embed": 8, "attn": 8, "mlp": 7}
    # 30 more: mlp 7->6 (0.015 for 60 bytes) beats attn 8->7 (0.01 for 30) and embed 8->7 (0.05 for 10) per byte.
    assert allocation.greedy(EXAMPLE, 610) == {"embed": 8, "attn": 8, "mlp": 6}


def test_impossible_budget_is_an_error():
    with pytest.raises(AllocationError, match=r"embed int5, attn int5, mlp int5\) need an estimated 400 bytes"):
        allocation.greedy(EXAMPLE, 399)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50), min_size=6, max_size=6),
    costs=st.lists(st.floats(0, 1), min_size=6, max_size=6),
    budget=st.integers(100, 400),
)
def test_greedy_fits_and_is_near_the_brute_force_optimum(sizes, costs, budget):
    # Two groups, widths 5..8; sizes grow and costs shrink with the width, in arbitrary steps.
    opts = {}
    for g, (s, c) in enumerate(((sizes[:3], costs[:3]), (sizes[3:], costs[3:]))):
        size, cost = 60.0 + 40 * g, 0.0
        rows = [(8, size, cost)]
        for bits, ds, dc in zip((7, 6, 5), s, c):
            size, cost = size - ds, cost + dc
            rows.append((bits, size, cost))
        opts[f"g{g}"] = rows
    opts = options(opts)
    feasible = [
        dict(zip(opts, combo))
        for combo in itertools.product(range(5, 9), repeat=2)
        if plan_bytes(opts, dict(zip(opts, combo))) <= budget
    ]
    if not feasible:
        with pytest.raises(AllocationError):
            allocation.greedy(opts, budget)
        return
    bits = allocation.greedy(opts, budget)
    assert plan_bytes(opts, bits) <= budget
    cost = lambda b: sum({o.bits: o for o in opts[g]}[w].cost for g, w in b.items())  # noqa: E731
    best = min(cost(b) for b in feasible)
    # Greedy is optimal when nothing needs lowering, and never worse than lowering everything to int5.
    if plan_bytes(opts, {"g0": 8, "g1": 8}) <= budget:
        assert cost(bits) == 0.0
    assert best <= cost(bits) <= cost({"g0": 5, "g1": 5}) + 1e-12


def test_allocate_charges_the_real_overhead():
    seen = []

    def measure(bits):  # the real size is the estimate plus 35 bytes of scales and headers
        seen.append(dict(bits))
        return int(plan_bytes(EXAMPLE, bits)) + 35

    bits, real = allocation.allocate(EXAMPLE, 640, measure)
    assert real <= 640 and real == plan_bytes(EXAMPLE, bits) + 35
    assert seen[0] == {"embed": 8, "attn": 8, "mlp": 7} and len(seen) == 2  # 675 > 640: charged 35, planned again


def test_allocate_gives_up_when_nothing_fits():
    with pytest.raises(AllocationError):
        allocation.allocate(EXAMPLE, 500, lambda bits: 10**6)


# ---------------------------------------------------------------------------------------------------------------------
# Measured options of a trained model


@pytest.fixture(scope="module")
def trained(dev_docs):
    return train_small(dev_docs, steps=150)


def test_group_options_of_a_trained_model(trained):
    model, cfg = trained.model, trained.cfg
    tokens = calibration.generate(model, 16, cfg.train.seq_len, batch_size=16, seed=0, runtime=CPU)
    rules = {g: GroupRule(8) for g in ("embed", "attn", "mlp", "other")}
    opts = allocation.group_options(
        model, tensor_groups(model), rules, cfg.quant, tokens=tokens, batch_size=16, runtime=CPU
    )
    assert set(opts) == {"embed", "attn", "mlp"}
    for group, rows in opts.items():
        by_bits = {o.bits: o for o in rows}
        assert sorted(by_bits) == [5, 6, 7, 8]
        sizes = [by_bits[b].bytes for b in (5, 6, 7, 8)]
        assert sizes == sorted(sizes) and sizes[0] < 0.8 * sizes[-1], (group, sizes)
        assert by_bits[5].cost > by_bits[8].cost and by_bits[5].cost > 0, (group, rows)
