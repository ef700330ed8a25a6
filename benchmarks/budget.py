"""A wall-clock budget for an unattended benchmark run (``bench.py --gpu`` must finish in under 8 minutes).

The run is cut into units (one spec in one dtype). Before a unit starts, :meth:`Budget.admit` compares the time
left with what the unit is expected to take, the longest unit seen so far; a unit that would run past the
deadline is dropped and named in the notes rather than started. A unit that overruns anyway (a slow compile)
is stopped by :meth:`Budget.guard`: at the deadline ``SIGALRM`` raises :class:`OutOfTime` and the run reports
what it measured so far.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


class OutOfTime(BaseException):
    """Raised inside a unit when the run's deadline passes. A BaseException, so that the harness's and the
    libraries' ``except Exception`` (a variant failing on one spec is noted and the run goes on) let it through."""


@dataclass
class Budget:
    """``seconds`` of wall time from creation; ``clock`` is injectable so the logic can be tested."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    start: float = field(init=False)
    longest: float = field(init=False, default=0.0)
    dropped: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def left(self) -> float:
        """Seconds until the deadline (negative past it)."""
        return self.seconds - (self.clock() - self.start)

    def admit(self, unit: str, first_estimate: float) -> bool:
        """Whether ``unit`` may start: the time left covers the longest unit so far (``first_estimate`` before any
        has run). A refused unit is recorded in :attr:`dropped`."""
        expected = self.longest or first_estimate
        if self.left() >= expected:
            return True
        self.dropped.append(f"{unit}: dropped, {self.left():.0f} s left of the {self.seconds:.0f} s budget and "
                            f"a unit takes about {expected:.0f} s")
        return False

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Time one unit; its duration updates the estimate for the next ones."""
        began = self.clock()
        try:
            yield
        finally:
            self.longest = max(self.longest, self.clock() - began)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Raise :class:`OutOfTime` in the body when the deadline passes (POSIX ``SIGALRM``; without it, only the
        admission check applies)."""
        if not hasattr(signal, "SIGALRM"):
            yield
            return

        def expire(signum: int, frame: object) -> None:
            raise OutOfTime(f"the {self.seconds:.0f} s budget ran out")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, max(self.left(), 0.001))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
