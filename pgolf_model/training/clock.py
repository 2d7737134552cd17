"""The training clock: optimizer steps and training seconds (validation excluded), and the marks that the pace and
the throughput are measured from."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..config import TrainConfig
from ..runtime import Runtime


@dataclass(frozen=True)
class Mark:
    step: int
    seconds: float


@dataclass
class Clock:
    step: int = 0
    seconds: float = 0.0
    start: Mark = field(init=False)  # where this process began (a resumed run starts late): the pace is measured since
    last_log: Mark = field(init=False)  # the last logged step: the throughput is measured since

    def __post_init__(self) -> None:
        self.start = self.last_log = Mark(self.step, self.seconds)

    @contextlib.contextmanager
    def timed_step(self, rt: Runtime) -> Iterator[None]:
        """Time one optimizer step (device work included) and count it."""
        rt.synchronize()
        t0 = time.perf_counter()
        yield
        rt.synchronize()
        self.seconds += time.perf_counter() - t0
        self.step += 1

    def projected_steps(self, cfg: TrainConfig) -> int:
        """The step at which training ends: ``cfg.iterations``, or earlier where the clock runs out at this pace."""
        limit_s = cfg.limit_seconds
        if not limit_s or self.step <= self.start.step:
            return cfg.iterations
        pace = (self.seconds - self.start.seconds) / (self.step - self.start.step)
        return min(cfg.iterations, self.step + int((limit_s - self.seconds) / pace))

    def fraction(self, cfg: TrainConfig) -> float:
        """How far training is: by the clock under a time limit (as the records schedule depth recurrence), else by
        steps."""
        if cfg.max_minutes:
            return max(self.seconds / cfg.limit_seconds, self.step / cfg.iterations)
        return self.step / cfg.iterations

    def out_of_time(self, cfg: TrainConfig) -> bool:
        return bool(cfg.max_minutes) and self.seconds >= cfg.limit_seconds

    def tokens_per_s(self, batch_tokens: int) -> float:
        """Training tokens per second since the last log, which this call moves here."""
        dt = self.seconds - self.last_log.seconds
        rate = (self.step - self.last_log.step) * batch_tokens / dt if dt > 0 else math.nan
        self.last_log = Mark(self.step, self.seconds)
        return rate
