"""The training clock against a fake host clock: a step's device work shows only at the next synchronization, as on
a GPU. Against brute force over the true times: the run stops at the last step that fits the limit at a steady
pace, past the limit by no more than the bound in clock.py's docstring when the pace changes, and two ranks timed
differently derive the same seconds, fraction and projected end at every step (threads for ranks, the check
point's collective a barrier). Then for real: two gloo ranks under torchrun, one slower, stop at the same step with
the same learning rate and layer order at every step and the same final weights."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from model_data import make_dataset, one_thread, synthetic_docs  # noqa: F401 (autouse fixture)

from pgolf_model.config import TrainConfig
from pgolf_model.runtime import Runtime
from pgolf_model.training import clock as clock_module
from pgolf_model.training.clock import Clock

REPO = Path(__file__).resolve().parents[1]
RT = Runtime(torch.device("cpu"))
HOST_SHARE = 0.1  # of a step's time spent on the host queueing it; the rest runs on the device, waited for at syncs


class FakeTime:
    """Per-thread fake ``time.perf_counter`` and device: a step queues device work that a sync waits for."""

    def __init__(self) -> None:
        self.local = threading.local()

    def state(self):
        if not hasattr(self.local, "now"):
            self.local.now, self.local.queued = 0.0, 0.0
        return self.local

    def perf_counter(self) -> float:
        return self.state().now

    def run_step(self, seconds: float) -> None:
        s = self.state()
        s.now += HOST_SHARE * seconds
        s.queued += (1 - HOST_SHARE) * seconds

    def synchronize(self, rt=None) -> None:
        s = self.state()
        s.now, s.queued = s.now + s.queued, 0.0

    def idle(self, seconds: float) -> None:
        """Host time outside the steps (a validation at a check point): not training time."""
        self.synchronize()
        self.state().now += seconds


@pytest.fixture
def fake(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(clock_module.time, "perf_counter", fake.perf_counter)
    monkeypatch.setattr(Runtime, "synchronize", fake.synchronize)
    return fake


def train(fake: FakeTime, cfg: TrainConfig, duration, *, idle_at: frozenset[int] = frozenset()) -> tuple[Clock, list]:
    """The trainer's loop around the clock: step, check point when due, stop when out of time. ``duration(i)``: the
    true seconds of step ``i``; ``idle_at``: steps after whose check point the host idles (excluded time). Returns
    the clock and per step ``(step, seconds, fraction, projected_steps, true seconds)``."""
    clock, true, seen = Clock(), 0.0, []
    while clock.step < cfg.iterations:
        with clock.timed_step():
            fake.run_step(duration(clock.step))
            true += duration(clock.step)
        if clock.due(cfg):
            clock.check(RT, cfg, signalled=False)
            if clock.step in idle_at:
                fake.idle(5.0)
        seen.append((clock.step, clock.seconds, clock.fraction(cfg), clock.projected_steps(cfg), true))
        if clock.out_of_time(cfg):
            break
    return clock, seen


def last_fit(duration, limit: float) -> int:
    """Brute force: the last step count whose true time is within ``limit``."""
    n, t = 0, 0.0
    while t + duration(n) <= limit:
        t += duration(n)
        n += 1
    return n


def test_a_steady_pace_stops_at_the_last_step_that_fits_with_exact_seconds(fake):
    cfg = TrainConfig(max_minutes=1.0, iterations=10_000, log_every=0, val_every=0, clock_every=10)
    clock, seen = train(fake, cfg, lambda i: 0.7, idle_at=frozenset({10, 30}))
    assert clock.step == last_fit(lambda i: 0.7, 60.0) == 85
    for step, seconds, fraction, projected, true in seen:
        assert seconds == pytest.approx(true) and fraction == pytest.approx(true / 60.0)  # validations excluded
        assert projected == (10_000 if step == 0 else 85)  # known from the first check point (after step 1) on
    assert clock.out_of_time(cfg) and 60.0 - 0.7 < clock.seconds <= 60.0


def test_no_limit_stops_at_iterations_and_projects_them(fake):
    cfg = TrainConfig(max_minutes=0.0, iterations=37, log_every=0, val_every=0, clock_every=10)
    clock, seen = train(fake, cfg, lambda i: 0.5)
    assert clock.step == 37 and {s[3] for s in seen} == {37} and not clock.out_of_time(cfg)
    assert clock.seconds == pytest.approx(37 * 0.5) and seen[5][2] == 6 / 37


@pytest.mark.parametrize("slow_from", [40, 95, 110, 114, 117])
@pytest.mark.parametrize("every", [1, 10, 25, 100])
def test_a_slower_phase_stops_at_the_last_step_that_fits_or_one_later(fake, slow_from, every):
    """0.5 s steps, 0.8 s from ``slow_from`` (depth recurrence switching on; the last fitting step is 90 to 118): the
    pace lags the change, but check points halve the steps to the projected end, and the end is measured. A slower
    phase that began a few steps before the end can cost one step past the limit: at most its excess, 0.3 s."""
    cfg = TrainConfig(max_minutes=1.0, iterations=10_000, log_every=0, val_every=0, clock_every=every)

    def duration(i: int) -> float:
        return 0.5 if i < slow_from else 0.8

    clock, seen = train(fake, cfg, duration)
    fit, true = last_fit(duration, 60.0), seen[-1][4]
    assert clock.seconds == pytest.approx(true)  # measured at the stop, not projected
    assert clock.step == fit if slow_from <= 110 else clock.step in (fit, fit + 1)
    assert 60.0 - 0.8 < true <= 60.0 + (0.8 - 0.5) + 1e-9


@pytest.mark.parametrize("stall_at", [100, 114, 115, 116])
def test_a_stall_overruns_the_limit_by_at_most_its_excess_over_the_pace(fake, stall_at):
    """One 6 s step among 0.5 s ones (a recompile on the clock) near the end: nothing can see it coming, so the run
    may end past the limit, by at most that step's excess over the pace (clock.py's bound)."""
    cfg = TrainConfig(max_minutes=1.0, iterations=10_000, log_every=0, val_every=0, clock_every=10)

    def duration(i: int) -> float:
        return 6.0 if i == stall_at else 0.5

    clock, seen = train(fake, cfg, duration)
    true = seen[-1][4]
    assert clock.seconds == pytest.approx(true) and 60.0 - 0.5 < true <= 60.0 + (6.0 - 0.5)


def test_the_check_points(fake):
    cfg = TrainConfig(max_minutes=0.0, iterations=30, log_every=12, val_every=25, checkpoint_every=7, clock_every=10)
    clock, due = Clock(), []
    for _ in range(30):
        with clock.timed_step():
            pass
        if clock.due(cfg):
            due.append(clock.step)
    assert due == [1, 7, 10, 12, 14, 20, 21, 24, 25, 28, 30]
    resumed, due = Clock(step=13, seconds=5.0), []
    for _ in range(3):
        with resumed.timed_step():
            pass
        due.append(resumed.due(cfg))
    assert due == [True, False, False]  # step 14 is also the first of this process: the pace starts there


def test_a_signal_on_any_rank_is_agreed_at_the_check_point(fake, monkeypatch):
    cfg = TrainConfig(max_minutes=0.0, iterations=30, log_every=0, val_every=0, clock_every=10)
    clock = Clock()
    with clock.timed_step():
        fake.run_step(1.0)
    assert not clock.check(RT, cfg, signalled=False) and clock.check(RT, cfg, signalled=True)
    monkeypatch.setattr(clock_module, "_max_over_ranks", lambda values, rt: [values[0], 1.0])  # another rank's
    assert clock.check(RT, cfg, signalled=False)


def test_two_ranks_timed_differently_agree_at_every_step(fake, monkeypatch):
    """Rank 1's steps take 0.6-0.9 s, rank 0's 0.5 s, with jitter; each rank's check point takes the max over both
    (a barrier stands in for the collective). Every derived quantity is the same on both ranks at every step, and
    the seconds are the slower rank's."""
    cfg = TrainConfig(max_minutes=1.0, iterations=10_000, log_every=0, val_every=0, clock_every=7)
    box, barrier = [0.0, 0.0], threading.Barrier(2)

    def max_over_ranks(values, rt):
        rank = int(threading.current_thread().name)
        box[rank] = values[0]
        barrier.wait()
        agreed = max(box)
        barrier.wait()
        return [agreed, values[1]]

    monkeypatch.setattr(clock_module, "_max_over_ranks", max_over_ranks)
    runs: dict[int, list] = {}

    def rank(r: int) -> None:
        def duration(i: int) -> float:
            return 0.5 if r == 0 else 0.6 + 0.3 * abs(math.sin(i))

        runs[r] = train(fake, cfg, duration)[1]

    threads = [threading.Thread(target=rank, args=(r,), name=str(r)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    a, b = ([s[:4] for s in runs[r]] for r in (0, 1))
    assert a == b and len(a) < 10_000  # steps, seconds, fractions and projections: equal floats, and the same stop
    assert runs[1][-1][1] == pytest.approx(runs[1][-1][4])  # the slower rank's time is the clock's
    assert runs[0][-1][1] > runs[0][-1][4] + 5.0


@pytest.mark.slow
def test_two_ranks_one_slower_stop_together_with_the_same_lr_and_weights(tmp_path):
    """Rank 1 sleeps 30 ms before each step (``fixtures/slow_rank/train.py``), which rank 0 spends waiting inside the
    step's all-reduce: the ranks time their steps differently, but the warm-down (projected from the clock), depth
    recurrence (from half of the time) and late QAT (from the lr scale) follow the agreed clock on both."""
    data, tok = make_dataset(tmp_path, synthetic_docs(300, 1), synthetic_docs(10, 2))
    steps = tmp_path / "steps"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PGOLF_TEST_STEPS": str(steps)}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541"]
    argv += [str(REPO / "tests" / "fixtures" / "slow_rank" / "train.py"), "--preset", "smoke", "--no-progress"]
    argv += ["--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "run"), "--max-minutes", "0.1"]
    flags = {
        "train.iterations": 100_000, "train.val_every": 0, "train.val_tokens": 512, "train.log_every": 25,
        "model.num_loops": 1, "model.loop_start": 1, "model.loop_end": 1, "train.loop_after": 0.5,
        "train.qat_threshold": 0.3,
    }  # fmt: skip
    argv += [f for key, value in flags.items() for f in (f"--{key}", str(value))]
    done = subprocess.run(argv, cwd=REPO, env={**env, "PGOLF_TEST_SLEEP": "0.03"}, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [[json.loads(line) for line in Path(f"{steps}.{r}").read_text().splitlines()] for r in (0, 1)]
    assert ranks[0][-1] == ranks[1][-1], "the same final weights"
    zero, one = ([(s["step"], s["lr_scale"], s["looping"], s["s"]) for s in r[:-1]] for r in ranks)
    assert zero == one, "step by step: the same lr scale, layer order and seconds"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by_clock"] and summary["steps"] == zero[-1][0] and summary["steps"] > 10
    assert {looping for _, _, looping, _ in zero} == {False, True} and min(lr for _, lr, _, _ in zero) < 0.3
