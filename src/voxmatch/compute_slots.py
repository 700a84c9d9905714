"""One CPU budget for the whole server: a fixed number of compute slots, taken in turn.

Heavy work (an extraction, a large comparison) runs only while it holds a slot, whichever
interface asked for it: REST task workers and gRPC calls draw on the same slots, so together
they never run more heavy jobs at once than the machine has cores for. Work that finds every
slot busy waits in line, first come first served, until a slot frees or its caller gives up
(`should_stop`: a cancelled task, a gRPC call whose client went away or whose deadline passed).

Light work (health, status, merging, conversion, small comparisons) takes no slot: it costs
milliseconds and must not wait behind an extraction of minutes.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator

from voxmatch.stopping import Stopped

RECHECK_SECONDS = 0.1
"""How often a waiter asks its `should_stop`, when nothing wakes it sooner (see `wake`)."""

LIGHT_COMPARISON_SCORES = 1_000_000
"""Comparisons of at most this many scores take no slot: 1000 x 1000 is about 20 ms of one core,
less than it would cost a client to wait in line."""


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, which containers and taskset narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class ComputeWaitStopped(Stopped):
    """The caller's `should_stop` said so while it waited in line: it never got a slot.

    A `Stopped` like any other; its own type tells a caller that no work had begun."""


class ComputeSlots:
    """`size` slots; `slot()` holds one for the length of a `with` block. Thread-safe."""

    def __init__(self, size: int, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
        if size < 1:
            raise ValueError(f"a compute budget needs at least one slot, got {size}")
        self.size = size
        self._recheck_seconds = recheck_seconds
        self._condition = threading.Condition()
        self._busy = 0
        self._line: collections.deque[int] = collections.deque()
        self._tickets = itertools.count()

    @property
    def busy(self) -> int:
        """Slots held now."""
        with self._condition:
            return self._busy

    @property
    def waiting(self) -> int:
        """Callers waiting in line for a slot now."""
        with self._condition:
            return len(self._line)

    @contextlib.contextmanager
    def slot(self, should_stop: Callable[[], bool] | None = None) -> Iterator[None]:
        """Wait for a slot in turn and hold it while the block runs.

        Raises ComputeWaitStopped, without running the block, when `should_stop` returns True
        before a slot is free; it is asked at least every RECHECK_SECONDS while waiting.
        """
        self.acquire(should_stop)
        try:
            yield
        finally:
            self.release()

    def wake(self) -> None:
        """Have every waiter ask its `should_stop` now (call it when a caller is cancelled)."""
        with self._condition:
            self._condition.notify_all()

    def release(self) -> None:
        """Give back a slot taken with `acquire`."""
        with self._condition:
            if self._busy == 0:
                raise RuntimeError("release() of a compute slot that was not acquired")
            self._busy -= 1
            self._condition.notify_all()

    def acquire(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Wait for a slot in turn and take it; `release` gives it back. See `slot`."""
        with self._condition:
            ticket = next(self._tickets)
            self._line.append(ticket)
        try:
            while True:
                with self._condition:
                    if self._line[0] == ticket and self._busy < self.size:
                        self._line.popleft()
                        self._busy += 1
                        # The next in line may fit in another free slot.
                        self._condition.notify_all()
                        return
                    self._condition.wait(None if should_stop is None else self._recheck_seconds)
                # Asked outside the lock: a caller's check may take locks of its own.
                if should_stop is not None and should_stop():
                    raise ComputeWaitStopped("it left the line for a compute slot")
        except BaseException:
            with self._condition:
                if ticket in self._line:
                    self._line.remove(ticket)
                    # Whoever was behind this waiter may now be first.
                    self._condition.notify_all()
            raise
