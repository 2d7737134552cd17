"""Stopping a run between two steps: SIGINT (Ctrl-C) and SIGTERM become a request the training loop honours at the
next check point of its clock (``clock``: at most ``train.clock_every`` steps on; a lone process, after the step in
flight), so that the checkpoint it then saves holds a whole step; a second signal stops at once.

Under torchrun every rank must stop at the same step (a rank that leaves early strands the others in their next
collective), so the ranks agree on the request, any rank's, in the check point's collective before acting on it
(``Trainer.should_stop``).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving ``checkpoint`` at ``step``; exit status 128 + the signal number."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(signum, step, checkpoint)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        saved = f"saved {self.checkpoint}" if self.checkpoint else "rank 0 saved the checkpoint"
        return f"{signal.Signals(self.signum).name} at step {self.step}: {saved}; continue with --resume auto"


class PeerLost(RuntimeError):
    """A collective failed under torchrun: another rank died or hung up, and this one cannot go on."""


class StopRequest:
    """While entered (in the main thread), SIGINT and SIGTERM set ``signum`` instead of stopping the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # asked twice: do not wait for the step to end
            raise KeyboardInterrupt
        self.signum = signum
