"""The compute-slot limiter: a fixed budget, taken in turn, left by callers who give up."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import pytest

from voxmatch.compute_slots import ComputeSlots, ComputeWaitStopped, available_cpus


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition was not met in time")
        time.sleep(0.005)


class Waiter(threading.Thread):
    """A thread that waits for a slot, records when it got one, and holds it until released."""

    def __init__(
        self,
        slots: ComputeSlots,
        order: list[str],
        name: str,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.slots = slots
        self.order = order
        self.label = name
        self.should_stop = should_stop
        self.release = threading.Event()
        self.stopped = False

    def run(self) -> None:
        try:
            with self.slots.slot(self.should_stop):
                self.order.append(self.label)
                self.release.wait(10)
        except ComputeWaitStopped:
            self.stopped = True


def test_slots_are_granted_in_arrival_order_within_the_budget() -> None:
    slots = ComputeSlots(2)
    order: list[str] = []
    waiters = {name: Waiter(slots, order, name) for name in "abcde"}

    def placed(arrived: int) -> bool:
        # A waiter is in line before it takes a free slot: wait until the slots are taken.
        return len(order) == min(arrived, 2) and slots.waiting == max(0, arrived - 2)

    for arrived, name in enumerate("abcde", start=1):
        waiters[name].start()
        # Each takes a slot or joins the line before the next arrives.
        wait_until(functools.partial(placed, arrived))
    assert order == ["a", "b"]
    assert (slots.busy, slots.waiting) == (2, 3)

    waiters["b"].release.set()
    wait_until(lambda: order == ["a", "b", "c"])
    waiters["a"].release.set()
    wait_until(lambda: order == ["a", "b", "c", "d"])
    assert (slots.busy, slots.waiting) == (2, 1)
    for waiter in waiters.values():
        waiter.release.set()
        waiter.join(10)
    assert order == ["a", "b", "c", "d", "e"]
    assert (slots.busy, slots.waiting) == (0, 0)


def test_a_waiter_that_gives_up_leaves_the_line_and_the_next_moves_up() -> None:
    slots = ComputeSlots(1, recheck_seconds=3600)  # only `wake` can make it look again
    order: list[str] = []
    holder = Waiter(slots, order, "holder")
    holder.start()
    wait_until(lambda: slots.busy == 1)
    give_up = threading.Event()
    quitter = Waiter(slots, order, "quitter", should_stop=give_up.is_set)
    quitter.start()
    wait_until(lambda: slots.waiting == 1)
    patient = Waiter(slots, order, "patient")
    patient.start()
    wait_until(lambda: slots.waiting == 2)

    give_up.set()
    slots.wake()
    quitter.join(10)
    assert quitter.stopped
    assert slots.waiting == 1

    holder.release.set()
    wait_until(lambda: order == ["holder", "patient"])
    patient.release.set()
    patient.join(10)
    assert (slots.busy, slots.waiting) == (0, 0)
    assert "quitter" not in order


def test_a_waiter_notices_should_stop_without_being_woken() -> None:
    slots = ComputeSlots(1, recheck_seconds=0.01)
    with slots.slot():
        give_up = threading.Event()
        quitter = Waiter(slots, [], "quitter", should_stop=give_up.is_set)
        quitter.start()
        wait_until(lambda: slots.waiting == 1)
        give_up.set()
        quitter.join(10)
        assert quitter.stopped
        assert (slots.busy, slots.waiting) == (1, 0)
    assert slots.busy == 0


def test_a_slot_is_given_back_when_the_work_fails() -> None:
    slots = ComputeSlots(1)
    with pytest.raises(ZeroDivisionError), slots.slot():
        _ = 1 / 0
    assert slots.busy == 0
    with slots.slot():  # and can be taken again at once
        assert slots.busy == 1


def test_invalid_budgets_and_releases_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        ComputeSlots(0)
    with pytest.raises(RuntimeError, match="not acquired"):
        ComputeSlots(1).release()
    assert available_cpus() >= 1
