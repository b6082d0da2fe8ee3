"""The run-event outbox: in order, nothing lost across restarts, delayed (never dropped)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from core import events
from core.errors import TemporaryFailure
from core.events import Changes, Handler, Outbox
from core.models import RunEvent, RunState
from core.store import NewRun, Store


def make_run(store: Store) -> str:
    run = store.create_run(NewRun(app="demo", job="hello", source="cli", actor="cli:ada")).run
    return run.id


async def deliver_until(outbox: Outbox, condition: object, timeout: float = 10) -> None:
    task = asyncio.create_task(outbox.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # type: ignore[operator]
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_events_arrive_in_order_and_a_restart_resumes_after_the_last(store: Store) -> None:
    seen: list[tuple[str, str]] = []

    async def handler(event: RunEvent) -> None:
        seen.append((event.kind, event.state))

    run_id = make_run(store)
    first = Outbox(store, Changes(), poll=0.05)
    first.subscribe("slack", handler, from_start=True)
    store.transition(run_id, RunState.RUNNING)
    last = store.last_event_id()
    await deliver_until(first, lambda: store.cursor("slack") == last)
    assert seen == [("created", "queued"), ("state", "running")]
    # While no outbox runs (jobbot restarting), events pile up; the next one picks up after.
    store.transition(run_id, RunState.SUCCEEDED)
    second = Outbox(store, Changes(), poll=0.05)
    second.subscribe("slack", handler)
    last = store.last_event_id()
    await deliver_until(second, lambda: store.cursor("slack") == last)
    assert seen == [("created", "queued"), ("state", "running"), ("state", "succeeded")]


async def test_a_new_subscriber_gets_the_events_of_requests_made_before_deliveries_begin(
        store: Store) -> None:
    """`prepare` (at server start-up, before it listens) starts a new subscriber's cursor:
    a run asked for between then and the first delivery is not passed over."""
    old = make_run(store)  # before this subscriber existed: not its business
    seen: list[str] = []

    async def handler(event: RunEvent) -> None:
        seen.append(event.run_id)

    outbox = Outbox(store, Changes(), poll=0.05)
    outbox.subscribe("slack", handler)
    await outbox.prepare()
    early = make_run(store)  # a request the server took before its outbox task ran
    last = store.last_event_id()
    await deliver_until(outbox, lambda: store.cursor("slack") == last)
    assert seen == [early] and old not in seen
    # Prepared again (a restart, another replica), the cursor stays where deliveries left it.
    later = make_run(store)
    again = Outbox(store, Changes(), poll=0.05)
    again.subscribe("slack", handler)
    await again.prepare()
    assert store.cursor("slack") == last
    await deliver_until(again, lambda: store.cursor("slack") == store.last_event_id())
    assert seen == [early, later]


async def stop_during_delivery(store: Store, handler: Handler, in_flight: asyncio.Event,
                               after_cancel: Callable[[], object] = lambda: None) -> None:
    """Deliver to `handler` from the start; cancel the outbox (a shutdown) once `in_flight`."""
    outbox = Outbox(store, Changes(), poll=0.05)
    outbox.subscribe("slack", handler, from_start=True)
    task = asyncio.create_task(outbox.run())
    await in_flight.wait()
    task.cancel()
    after_cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_shutdown_lets_the_delivery_under_way_finish_and_records_it(
        store: Store) -> None:
    # The Slack notifier posts a thread's parent, then records its ts: a shutdown between
    # the two made the next process post a second parent for the same run.
    posted: list[int] = []
    recorded: list[int] = []
    in_flight, answer = asyncio.Event(), asyncio.Event()

    async def handler(event: RunEvent) -> None:
        posted.append(event.id or 0)
        in_flight.set()
        await answer.wait()  # Slack answering
        recorded.append(event.id or 0)

    make_run(store)
    await stop_during_delivery(store, handler, in_flight,
                               lambda: asyncio.get_running_loop().call_later(0.05, answer.set))
    assert recorded == posted == [store.last_event_id()]
    assert store.cursor("slack") == store.last_event_id()  # not delivered again


async def test_a_shutdown_waits_for_a_stuck_delivery_only_so_long(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "FINISH_GRACE", 0.1)
    in_flight = asyncio.Event()

    async def handler(event: RunEvent) -> None:
        in_flight.set()
        await asyncio.Event().wait()  # never answered

    make_run(store)
    await stop_during_delivery(store, handler, in_flight)
    assert store.cursor("slack") == 0  # delivered again after the restart


async def test_a_new_subscriber_starts_at_the_newest_event(store: Store) -> None:
    make_run(store)
    seen: list[int] = []

    async def handler(event: RunEvent) -> None:
        seen.append(event.id or 0)

    outbox = Outbox(store, Changes(), poll=0.05)
    outbox.subscribe("github", handler)
    run_id = make_run(store)
    await deliver_until(outbox, lambda: store.cursor("github") is not None)
    store.transition(run_id, RunState.RUNNING)
    await deliver_until(outbox, lambda: len(seen) >= 1)
    assert len(seen) == 1


async def test_temporary_failures_delay_but_never_drop(store: Store) -> None:
    outage = {"left": 3}
    delivered: list[int] = []

    async def flaky(event: RunEvent) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise TemporaryFailure("Slack is down", delay=0.01)
        delivered.append(event.id or 0)

    make_run(store)
    outbox = Outbox(store, Changes(), poll=0.05)
    outbox.subscribe("slack", flaky, from_start=True)
    await deliver_until(outbox, lambda: len(delivered) == 1)
    assert outage["left"] == 0


async def test_a_handler_bug_is_logged_and_skipped_after_a_few_tries(store: Store) -> None:
    calls: list[int] = []

    async def broken(event: RunEvent) -> None:
        calls.append(event.id or 0)
        if len(calls) <= 2:
            raise ValueError("bug")

    make_run(store)
    make_run(store)
    outbox = Outbox(store, Changes(), poll=0.05, give_up_after=2, max_delay=0.01)
    outbox.subscribe("web", broken, from_start=True)
    await deliver_until(outbox, lambda: len(calls) == 3)
    first, second = (e.id for e in store.events_after(0))
    assert calls == [first, first, second]


async def test_with_two_replicas_one_delivers_and_the_other_stands_by(store: Store) -> None:
    seen: list[tuple[str, int]] = []

    def recorder(replica: str) -> Handler:
        async def handler(event: RunEvent) -> None:
            seen.append((replica, event.id or 0))
        return handler

    make_run(store)
    replicas = []
    for name in ("a", "b"):
        outbox = Outbox(store, Changes(), poll=0.05, standby=0.05)
        outbox.subscribe("slack", recorder(name), from_start=True)
        replicas.append(asyncio.create_task(outbox.run()))
    try:
        async with asyncio.timeout(10):
            while store.cursor("slack") != store.last_event_id():
                await asyncio.sleep(0.02)
        run_id = make_run(store)
        store.transition(run_id, RunState.RUNNING)
        async with asyncio.timeout(10):
            while store.cursor("slack") != store.last_event_id():
                await asyncio.sleep(0.02)
    finally:
        for task in replicas:
            task.cancel()
        await asyncio.gather(*replicas, return_exceptions=True)
    ids = [event_id for _, event_id in seen]
    assert ids == sorted(set(ids)) == [e.id for e in store.events_after(0)]
    assert len({replica for replica, _ in seen}) == 1


async def test_the_standby_takes_over_when_the_holder_stops(store: Store) -> None:
    seen: list[str] = []

    def recorder(replica: str) -> Handler:
        async def handler(event: RunEvent) -> None:
            seen.append(replica)
        return handler

    first = Outbox(store, Changes(), poll=0.05, standby=0.05)
    first.subscribe("slack", recorder("first"), from_start=True)
    second = Outbox(store, Changes(), poll=0.05, standby=0.05)
    second.subscribe("slack", recorder("second"), from_start=True)
    task_first = asyncio.create_task(first.run())
    await asyncio.sleep(0.3)
    task_second = asyncio.create_task(second.run())
    make_run(store)
    async with asyncio.timeout(10):
        while seen != ["first"]:
            await asyncio.sleep(0.02)
    task_first.cancel()
    await asyncio.gather(task_first, return_exceptions=True)
    make_run(store)
    async with asyncio.timeout(10):
        while seen != ["first", "second"]:
            await asyncio.sleep(0.02)
    task_second.cancel()
    await asyncio.gather(task_second, return_exceptions=True)
