"""The status-write debouncer, on a manual clock (and once on a real loop)."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.controller.test_workqueue import FakeScheduler
from vmdhcp.controller.debounce import Debouncer


def debouncer(
    quiet: float = 1.0, max_delay: float = 3.0
) -> tuple[Debouncer[str], FakeScheduler, list[tuple[str, float]]]:
    clock = FakeScheduler()
    fired: list[tuple[str, float]] = []
    debounce: Debouncer[str] = Debouncer(
        lambda key: fired.append((key, clock.now)),
        quiet=quiet,
        max_delay=max_delay,
        scheduler=clock,
    )
    return debounce, clock, fired


def test_a_burst_fires_once_after_the_burst() -> None:
    debounce, clock, fired = debouncer(quiet=1.0, max_delay=10.0)
    for _ in range(4):
        debounce.touch("a")
        clock.advance(0.5)
    assert debounce.pending() == 1
    clock.advance(0.25)
    assert fired == []
    clock.advance(0.25)
    assert fired == [("a", 2.5)]  # quiet seconds after the last touch, at t=1.5
    assert debounce.pending() == 0
    clock.advance(100)
    assert fired == [("a", 2.5)]


def test_a_continuous_stream_fires_at_least_every_max_delay() -> None:
    debounce, clock, fired = debouncer(quiet=1.0, max_delay=3.0)
    for _ in range(21):  # a touch every 0.5 s from t=0 to t=10
        debounce.touch("a")
        clock.advance(0.5)
    assert [when for _, when in fired] == [3.0, 6.0, 9.0]
    clock.advance(10)
    assert [when for _, when in fired] == [3.0, 6.0, 9.0, 11.0]  # the tail, quiet after t=10


def test_keys_are_independent() -> None:
    debounce, clock, fired = debouncer(quiet=1.0, max_delay=3.0)
    debounce.touch("a")
    clock.advance(0.5)
    debounce.touch("b")
    assert debounce.pending() == 2
    clock.advance(0.5)
    assert fired == [("a", 1.0)]  # touching "b" did not postpone "a"
    debounce.touch("b")
    clock.advance(5)
    assert fired == [("a", 1.0), ("b", 2.0)]


def test_a_key_touched_after_firing_fires_again_with_a_fresh_window() -> None:
    debounce, clock, fired = debouncer(quiet=1.0, max_delay=3.0)
    debounce.touch("a")
    clock.advance(2.5)
    assert fired == [("a", 1.0)]
    for _ in range(4):  # t=2.5 to 4.0: max_delay counts from t=2.5, not from t=0
        debounce.touch("a")
        clock.advance(0.5)
    clock.advance(10)
    assert fired == [("a", 1.0), ("a", 5.0)]


def test_cancel_and_close_stop_pending_fires() -> None:
    debounce, clock, fired = debouncer()
    debounce.touch("a")
    debounce.touch("b")
    debounce.cancel("a")
    debounce.cancel("unknown")
    assert debounce.pending() == 1
    clock.advance(5)
    assert fired == [("b", 1.0)]

    debounce.touch("a")
    clock.advance(0.5)
    debounce.cancel("a")
    debounce.touch("a")  # a fresh start: max_delay counts from now
    clock.advance(0.75)
    assert fired == [("b", 1.0)]
    clock.advance(0.25)
    assert fired == [("b", 1.0), ("a", 6.5)]

    debounce.touch("a")
    debounce.touch("b")
    debounce.close()
    assert debounce.pending() == 0
    debounce.touch("c")  # ignored once closed
    assert debounce.pending() == 0
    clock.advance(10)
    assert fired == [("b", 1.0), ("a", 6.5)]
    assert clock.live() == []


def test_rejects_negative_durations() -> None:
    with pytest.raises(ValueError, match="negative"):
        Debouncer(print, quiet=-1, max_delay=1)


async def test_on_the_running_loop() -> None:
    fired = asyncio.Event()
    keys: list[str] = []

    def fire(key: str) -> None:
        keys.append(key)
        fired.set()

    debounce: Debouncer[str] = Debouncer(fire, quiet=0.01, max_delay=1.0)
    debounce.touch("a")
    debounce.touch("a")
    await asyncio.wait_for(fired.wait(), 5)
    assert keys == ["a"]
    assert debounce.pending() == 0
