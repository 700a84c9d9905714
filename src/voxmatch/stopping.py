"""The one signal that long work stopped early because its caller asked it to.

Long work (an extraction, a comparison, a wait for a compute slot) takes a `should_stop`
callable and asks it as it goes, often enough that a stop is seen within a fraction of a
second. When it says so, the work raises `Stopped`: a cancelled REST task, a gRPC call whose
client went away, a Python caller's own condition. Each interface catches this one exception
and ends the work in its own convention (the task is cancelled, the call ends CANCELLED).
"""

from __future__ import annotations

from collections.abc import Callable

StopCheck = Callable[[], bool]
"""Asked by long work as it goes: True means stop now."""


class Stopped(RuntimeError):
    """The work stopped early because its `should_stop` said so; the message says what stopped."""


def check(should_stop: StopCheck | None, work: str) -> None:
    """Raise Stopped ("the `work` stopped on request") if `should_stop` says so."""
    if should_stop is not None and should_stop():
        raise Stopped(f"the {work} stopped on request")
