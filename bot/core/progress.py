"""Training ETA from measured step times.

The ETA shown in Discord is the remaining steps times the mean time of the steps measured so
far in this run: only the steps themselves are timed, so model loading, validation passes and
checkpoint writes do not skew it, and a resumed run measures its own speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class StepTimer:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.steps = 0
        self.seconds = 0.0
        self._started: float | None = None

    def start(self) -> None:
        self._started = self.clock()

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += self.clock() - self._started
            self.steps += 1
            self._started = None

    @property
    def mean(self) -> float | None:
        return self.seconds / self.steps if self.steps else None

    def eta(self, remaining_steps: int) -> float | None:
        """Seconds left: remaining steps x the measured mean step time (None before any step)."""
        mean = self.mean
        return None if mean is None else mean * max(0, remaining_steps)
