"""Training ETA from measured step times, and the notes a run adds to its progress message.

The ETA shown in Discord is the remaining steps times the mean time of the steps measured so
far in this run: only the steps themselves are timed, so model loading, validation passes and
checkpoint writes do not skew it, and a resumed run measures its own speed.

A run that acts by itself says so under its progress: the divergence guard's roll-backs and the
retry at a lower learning rate of a run that did not beat the base (training.py).
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


def rollback_note(start: float, reached: float, good_step: int, rollbacks: int, limit: int) -> str:
    return (
        f"the loss climbed from {start:.2f} to {reached:.2f}: rolled back to step {good_step} and "
        f"halved the learning rate ({rollbacks} of {limit})"
    )


def retry_note(learning_rate: float, retry_rate: float) -> str:
    return f"no better than the base model at learning rate {learning_rate:g}: trying again at {retry_rate:g}"
