"""The ingest pacer (screening.api.pacing) on a real event loop: how many heavy steps each loop
iteration admits, in what order, and that nothing is left waiting."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from screening.api.pacing import Pacer


class IterationClock:
    """Counts event-loop iterations: a callback that puts itself back once per iteration."""

    def __init__(self) -> None:
        self.now = 0
        self._running = True
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.now += 1
        if self._running:
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._running = False


async def run_all(pacer: Pacer, units: list[int], clock: IterationClock) -> list[tuple[int, int]]:
    """Start one task per entry of ``units`` together; (task index, iteration) in pass order."""
    passed: list[tuple[int, int]] = []

    async def request(i: int) -> None:
        await pacer.turn(units[i])
        passed.append((i, clock.now))

    await asyncio.gather(*(request(i) for i in range(len(units))))
    return passed


async def settle(check: Callable[[], bool], iterations: int = 10) -> bool:
    for _ in range(iterations):
        if check():
            return True
        await asyncio.sleep(0)
    return check()


async def test_each_iteration_admits_at_most_its_budget_in_arrival_order() -> None:
    clock = IterationClock()
    pacer = Pacer(4)
    passed = await run_all(pacer, [1] * 30, clock)
    clock.stop()
    assert [i for i, _ in passed] == list(range(30))  # first come, first served
    per_iteration = Counter(at for _, at in passed)
    assert max(per_iteration.values()) == 4
    assert len(per_iteration) == 8  # 30 requests, 4 a turn
    assert await settle(lambda: not pacer._ticking)  # no tick runs once nothing waits


async def test_requests_arriving_while_woken_ones_run_wait_for_a_later_turn() -> None:
    """Woken waiters run in the turn after the tick that woke them: requests arriving in that
    turn count against it too (the budget is not spent twice)."""
    clock = IterationClock()
    pacer = Pacer(4)
    passed: list[int] = []

    async def request() -> None:
        await pacer.turn()
        passed.append(clock.now)

    tasks = [asyncio.ensure_future(request()) for _ in range(8)]  # 4 run now, 4 queue
    for arrival in range(4):  # then 4 more in each of the next turns
        await asyncio.sleep(0)
        if arrival:  # not the first: the queue is woken empty, the woken run when these do
            tasks += [asyncio.ensure_future(request()) for _ in range(4)]
    await asyncio.gather(*tasks)
    clock.stop()
    assert len(passed) == 20
    assert max(Counter(passed).values()) <= 4, Counter(passed)
    assert await settle(lambda: not pacer._ticking)


async def test_a_body_larger_than_the_budget_passes_alone() -> None:
    clock = IterationClock()
    pacer = Pacer(4)
    passed = await run_all(pacer, [1, 10, 1, 1, 1, 1, 10], clock)
    clock.stop()
    order = [i for i, _ in passed]
    assert order == list(range(7))
    at = dict(passed)
    assert at[0] != at[1]  # the large one waits for a turn of its own...
    assert at[1] not in (at[0], at[2])  # ...and has it to itself
    assert at[2] == at[3] == at[4] == at[5]
    assert at[6] != at[5]


async def test_a_request_cancelled_while_it_waits_is_skipped() -> None:
    pacer = Pacer(1)
    tasks = [asyncio.ensure_future(pacer.turn()) for _ in range(4)]
    await asyncio.sleep(0)  # their first steps: one takes the turn, three queue
    assert tasks[0].done()
    assert len(pacer._waiters) == 3
    tasks[1].cancel()
    await asyncio.gather(tasks[2], tasks[3])
    assert tasks[1].cancelled()
    assert await settle(lambda: not pacer._ticking and not pacer._waiters)


async def test_without_contention_a_turn_does_not_wait() -> None:
    pacer = Pacer(16)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        await pacer.turn()
        await asyncio.sleep(0)  # a new iteration each time: the budget never fills
    assert not pacer._waiters
    assert loop.time() - started < 1.0
