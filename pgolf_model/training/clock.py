"""The training clock: optimizer steps and training seconds (validation excluded), the same on every rank, with no
device synchronization or collective on most steps.

Steps are timed by the host clock alone. A CUDA step returns once its kernels are queued, so one step's host time
says little, but the time from the start of a run of steps to a device synchronization after the last is exact. The
clock synchronizes only at *check points* (``due``): the process's first step (the first pace), every logged,
validated or checkpointed step, every ``train.clock_every`` steps, the last step, and the step the time limit was
projected to end at (with one halfway to it). There each rank measures its training seconds and one collective
agrees on the slowest rank's and on whether any rank has a stop signal pending (``check``). Between check points
every rank derives the seconds from the last agreed seconds plus the agreed pace times the steps since, so the share
of training done (``fraction``), the projected end (``projected_steps``, the learning rate's), depth recurrence,
progressive context and late QAT are the same on every rank by construction, not by each rank's timing.

The limit (``--max-minutes``): each check point projects the end to the last step that fits the limit at the agreed
pace (``stop_at``) and adds a check point halfway there; ``stop_at`` is a check point too, where training stops
unless its own measurement leaves room for another step (then the projection moves on). So training stops at the
first check point from which one more step at the pace would pass the limit, less than one step before it at a
steady pace. It ends past the limit only when the steps since the previous check point ran slower than the agreed
pace, and by at most their excess over it less the room that check point projected: with one step projected left,
that step's excess; with more, nothing unless those steps took about twice the pace (a stall, a recompile). Every
step used to be synchronized, and the run ended less than one step past the limit.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..config import TrainConfig
from ..runtime import Runtime


@dataclass(frozen=True)
class Mark:
    step: int
    seconds: float


@dataclass
class Clock:
    step: int = 0
    seconds: float = 0.0  # agreed at a check point, derived from the pace between them
    start: Mark = field(init=False)  # where this process began (a resumed run starts late)
    last_log: Mark = field(init=False)  # the last logged step: the throughput is measured since
    marks: list[Mark] = field(init=False)  # recent check points, the newest last: the pace is measured over them
    pace: float | None = field(init=False, default=None)  # agreed seconds per step; None before the first check point
    stop_at: int | None = field(init=False, default=None)  # the last step that fits the limit (last check point's)
    halfway: int | None = field(init=False, default=None)  # a check point halfway to stop_at
    _since: float | None = field(init=False, default=None)  # host clock when the steps since the last check began

    def __post_init__(self) -> None:
        self.start = self.last_log = Mark(self.step, self.seconds)
        self.marks = [self.start]

    @contextlib.contextmanager
    def timed_step(self) -> Iterator[None]:
        """Count one optimizer step. The host clock runs from the first step after a check point to the next check
        point (which waits for the device), so what runs between steps counts and what runs at a check point
        (validation, checkpoints, logs) does not."""
        if self._since is None:
            self._since = time.perf_counter()
        yield
        self.step += 1
        if self.pace is not None:
            last = self.marks[-1]
            self.seconds = last.seconds + self.pace * (self.step - last.step)

    def due(self, cfg: TrainConfig) -> bool:
        """Whether the step just counted ends at a check point."""
        s = self.step
        every = (cfg.log_every, cfg.val_every, cfg.checkpoint_every, cfg.clock_every)
        ends = (self.start.step + 1, cfg.iterations, self.stop_at, self.halfway)
        return s in ends or any(n and s % n == 0 for n in every)

    def check(self, rt: Runtime, cfg: TrainConfig, signalled: bool) -> bool:
        """A check point: wait for this rank's device work, agree on the training seconds (the slowest rank's) and
        on a stop signal (any rank's) in one collective, then measure the pace and project the end; whether any rank
        was signalled."""
        rt.synchronize()
        mine = self.marks[-1].seconds + (time.perf_counter() - self._since if self._since is not None else 0.0)
        self._since = None
        self.seconds, anyone = _max_over_ranks([mine, float(signalled)], rt)
        self.marks.append(Mark(self.step, self.seconds))
        # The pace over at least clock_every steps (since the newest check point that far back, else since the start):
        # check points one step apart near the end would otherwise give a one-step pace.
        far = [i for i, m in enumerate(self.marks) if self.step - m.step >= cfg.clock_every]
        self.marks = self.marks[far[-1] :] if far else self.marks
        base = self.marks[0]
        if self.step > base.step:
            self.pace = (self.seconds - base.seconds) / (self.step - base.step)
        if cfg.limit_seconds and self.pace:
            self.stop_at = self.step + max(0, math.floor((cfg.limit_seconds - self.seconds) / self.pace))
            self.halfway = (self.step + self.stop_at + 1) // 2
        return anyone > 0

    def projected_steps(self, cfg: TrainConfig) -> int:
        """The step at which training ends: ``cfg.iterations``, or earlier where the limit falls at the agreed pace
        (as projected at the last check point)."""
        if not cfg.limit_seconds or self.stop_at is None:
            return cfg.iterations
        return min(cfg.iterations, self.stop_at)

    def fraction(self, cfg: TrainConfig) -> float:
        """How far training is: by the clock under a time limit (as the records schedule depth recurrence), else by
        steps."""
        if cfg.max_minutes:
            return max(self.seconds / cfg.limit_seconds, self.step / cfg.iterations)
        return self.step / cfg.iterations

    def out_of_time(self, cfg: TrainConfig) -> bool:
        """Whether the limit is reached: by the seconds, or at the step the last check point said is the last that
        fits."""
        if not cfg.max_minutes:
            return False
        return self.seconds >= cfg.limit_seconds or (self.stop_at is not None and self.step >= self.stop_at)

    def tokens_per_s(self, batch_tokens: int) -> float:
        """Training tokens per second since the last log, which this call moves here."""
        dt = self.seconds - self.last_log.seconds
        rate = (self.step - self.last_log.step) * batch_tokens / dt if dt > 0 else math.nan
        self.last_log = Mark(self.step, self.seconds)
        return rate


def _max_over_ranks(values: list[float], rt: Runtime) -> list[float]:
    """The max of a few numbers over ranks (identity without torch.distributed)."""
    t = torch.tensor(values, dtype=torch.float64, device=rt.device)
    if rt.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()
