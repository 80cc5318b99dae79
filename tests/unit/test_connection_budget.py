"""The connection budget: callers wait in line for a connection, and none is lost on the way."""

from __future__ import annotations

import asyncio

from listener.adapters.postgres.pool import ConnectionBudget


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_waiting_for_a_connection_get_one_in_the_order_they_asked() -> None:
    budget = ConnectionBudget(1)
    await budget.take()
    order: list[int] = []

    async def use(n: int) -> None:
        await budget.take()
        order.append(n)
        await asyncio.sleep(0)
        budget.give_back()

    callers = [asyncio.create_task(use(n)) for n in range(20)]
    await _settle()
    assert order == []  # all wait: the one connection is taken
    budget.give_back()
    await asyncio.wait_for(asyncio.gather(*callers), 2)
    assert order == list(range(20))
    assert budget.in_use == 0


async def test_a_caller_cancelled_in_line_takes_nothing_and_the_next_is_served() -> None:
    budget = ConnectionBudget(1)
    await budget.take()
    first, second = asyncio.create_task(budget.take()), asyncio.create_task(budget.take())
    await _settle()
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    budget.give_back()
    await asyncio.wait_for(second, 2)
    assert budget.in_use == 1


async def test_a_connection_handed_to_a_caller_cancelled_meanwhile_goes_to_the_next() -> None:
    budget = ConnectionBudget(1)
    await budget.take()
    first, second = asyncio.create_task(budget.take()), asyncio.create_task(budget.take())
    await _settle()
    budget.give_back()  # handed to `first`, which is cancelled before it runs again
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 2)
    assert budget.in_use == 1


async def test_a_new_caller_does_not_pass_those_already_waiting() -> None:
    budget = ConnectionBudget(1)
    await budget.take()
    waiting = asyncio.create_task(budget.take())
    await _settle()
    budget.give_back()
    late = asyncio.create_task(budget.take())
    await asyncio.wait_for(waiting, 2)
    await _settle()
    assert not late.done()  # the one connection is the waiting caller's
    budget.give_back()
    await asyncio.wait_for(late, 2)
