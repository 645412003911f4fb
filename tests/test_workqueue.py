"""The work queue's guarantees, in-process: de-duplication, one worker per key, re-queue after done,
per-key exponential back-off, delays, shutdown and metrics; and the Controller's key wiring."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from orchestrator.apiclient import Conflict
from orchestrator.watchers import (
    Controller,
    QueueShutDown,
    WorkQueue,
    WorkQueueMetrics,
    owner_key,
    run_workers,
)
from orchestrator.watchers.informer import Informer

DEADLINE = 10.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, DEADLINE * 2))


async def until(cond, what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def test_add_deduplicates_waiting_keys():
    async def main():
        q = WorkQueue()
        for key in ["a", "b", "a", "a", "c", "b"]:
            q.add(key)
        assert len(q) == 3
        got = [await q.get() for _ in range(3)]
        assert got == ["a", "b", "c"]
        assert len(q) == 0

    run(main())


def test_key_added_while_processing_is_requeued_after_done_only():
    async def main():
        q = WorkQueue()
        q.add("a")
        key = await q.get()
        assert key == "a"
        q.add("a")
        q.add("a")
        assert len(q) == 0, "a key being processed must not be handed to a second worker"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.05)
        q.done("a")
        assert len(q) == 1
        assert await q.get() == "a"
        q.done("a")
        assert len(q) == 0

    run(main())


def test_never_two_workers_on_one_key_and_last_change_is_seen():
    async def main():
        q = WorkQueue()
        version = Counter()  # what the "cluster" says now, per key
        seen: dict[str, int] = {}  # what the last sync of each key saw
        active: Counter = Counter()
        max_active: Counter = Counter()
        syncs = Counter()

        async def sync(key: str) -> None:
            active[key] += 1
            max_active[key] = max(max_active[key], active[key])
            syncs[key] += 1
            await asyncio.sleep(0)  # let other workers and the producer run
            seen[key] = version[key]
            await asyncio.sleep(0.001)
            active[key] -= 1

        workers = asyncio.create_task(run_workers(q, sync, 4))
        keys = [f"ns/k{i}" for i in range(5)]
        for round_ in range(200):
            key = keys[round_ % len(keys)]
            version[key] += 1
            q.add(key)
            if round_ % 7 == 0:
                await asyncio.sleep(0.001)
        await until(lambda: all(seen.get(k) == version[k] for k in keys) and not q.processing, "final syncs")
        q.shutdown()
        await workers
        assert max(max_active.values()) == 1
        assert sum(syncs.values()) < 200, "adds of a waiting key must collapse"

    run(main())


def test_rate_limited_backoff_doubles_per_key_and_forget_resets():
    q = WorkQueue(base_delay=0.005, max_delay=0.1)
    assert [q.when("a") for _ in range(7)] == [0.005, 0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    assert q.num_requeues("a") == 7
    assert q.when("b") == 0.005, "back-off is per key"
    q.forget("a")
    assert q.num_requeues("a") == 0
    assert q.when("a") == 0.005
    many = WorkQueue()
    for _ in range(200):
        last = many.when("x")
    assert last == many.max_delay


def test_add_rate_limited_requeues_later_and_shutdown_cancels_it():
    async def main():
        q = WorkQueue(base_delay=0.01)
        q.add_rate_limited("a")
        assert len(q) == 0
        assert await asyncio.wait_for(q.get(), DEADLINE) == "a"
        q.done("a")
        assert q.num_requeues("a") == 1
        q.add_rate_limited("a")
        q.shutdown()
        with pytest.raises(QueueShutDown):
            await q.get()

    run(main())


def test_add_after_orders_by_ready_time_and_keeps_the_earliest():
    async def main():
        q = WorkQueue()
        q.add_after("late", 0.3)
        q.add_after("soon", 0.02)
        q.add_after("twice", 30)
        q.add_after("twice", 0.1)  # earlier wins
        q.add_after("twice", 60)  # later is ignored
        q.add_after("now", 0)
        assert len(q) == 1
        got = [await asyncio.wait_for(q.get(), DEADLINE) for _ in range(4)]
        assert got == ["now", "soon", "twice", "late"]

    run(main())


def test_shutdown_wakes_waiting_getters_and_ignores_adds():
    async def main():
        q = WorkQueue()
        getters = [asyncio.create_task(q.get()) for _ in range(3)]
        await asyncio.sleep(0)
        q.shutdown()
        for g in getters:
            with pytest.raises(QueueShutDown):
                await g
        q.add("a")
        assert len(q) == 0

    run(main())


def test_cancelled_getter_passes_its_wakeup_on():
    async def main():
        q = WorkQueue()
        first = asyncio.create_task(q.get())
        second = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        q.add("a")  # wakes `first`...
        first.cancel()  # ...which is cancelled before it runs
        assert await asyncio.wait_for(second, DEADLINE) == "a"

    run(main())


def test_run_workers_retries_failures_then_forgets():
    async def main():
        q = WorkQueue(base_delay=0.001)
        attempts = Counter()

        async def sync(key: str) -> None:
            attempts[key] += 1
            if key == "flaky" and attempts[key] < 4:
                raise RuntimeError("not yet")
            if key == "conflict" and attempts[key] < 2:
                raise Conflict(409, "Conflict", "the object has been modified")

        workers = asyncio.create_task(run_workers(q, sync, 2))
        for key in ("flaky", "conflict", "fine"):
            q.add(key)
        await until(
            lambda: attempts["flaky"] == 4 and attempts["conflict"] == 2 and not q.processing, "retries"
        )
        assert attempts["fine"] == 1
        assert q.num_requeues("flaky") == 0 and q.num_requeues("conflict") == 0
        q.shutdown()
        await asyncio.wait_for(workers, DEADLINE)

    run(main())


def test_cancelling_run_workers_hands_keys_back():
    async def main():
        q = WorkQueue()
        started = asyncio.Event()

        async def sync(key: str) -> None:
            started.set()
            await asyncio.sleep(3600)

        workers = asyncio.create_task(run_workers(q, sync, 1))
        q.add("a")
        await asyncio.wait_for(started.wait(), DEADLINE)
        assert q.processing == {"a"}
        workers.cancel()
        with pytest.raises(asyncio.CancelledError):
            await workers
        assert not q.processing

    run(main())


def test_metrics_count_adds_retries_depth_and_work():
    async def main():
        registry = CollectorRegistry()
        metrics = WorkQueueMetrics(registry)
        q = WorkQueue("pods", metrics=metrics, base_delay=0.001)
        other = WorkQueue("nodes", metrics=metrics)
        q.add("a")
        q.add("a")
        q.add("b")
        other.add("n1")
        labels = {"name": "pods"}
        assert registry.get_sample_value("workqueue_adds_total", labels) == 2
        assert registry.get_sample_value("workqueue_depth", labels) == 2
        assert registry.get_sample_value("workqueue_depth", {"name": "nodes"}) == 1
        key = await q.get()
        q.add_rate_limited(key)
        q.done(key)
        assert registry.get_sample_value("workqueue_retries_total", labels) == 1
        assert registry.get_sample_value("workqueue_work_duration_seconds_count", labels) == 1
        assert registry.get_sample_value("workqueue_queue_duration_seconds_count", labels) == 1
        await asyncio.wait_for(q.get(), DEADLINE)
        await asyncio.wait_for(q.get(), DEADLINE)
        assert registry.get_sample_value("workqueue_depth", labels) == 0

    run(main())


def _pod(name: str, rv: str, owner: str | None = None, node: str | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "ns", "resourceVersion": rv}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "controller": True}
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"nodeName": node} if node else {}}


def test_controller_maps_events_to_keys_old_and_new_owner():
    async def main():
        informer = Informer(None, "", "v1", "pods")  # fed by hand below; never run
        synced: list[str] = []

        async def sync(key: str) -> None:
            synced.append(key)

        ctl = Controller("replicaset", sync)
        ctl.watch(informer, owner_key("ReplicaSet"))
        own = Controller("pod", sync)
        own.watch(informer)
        informer._replace([_pod("p1", "5", owner="rs1"), _pod("p2", "6")], "10")
        assert sorted(await _drain(ctl.queue)) == ["ns/rs1"]
        assert sorted(await _drain(own.queue)) == ["ns/p1", "ns/p2"]
        # p1 is adopted by rs2: both the old and the new owner must look.
        informer._apply("MODIFIED", _pod("p1", "11", owner="rs2"))
        assert sorted(await _drain(ctl.queue)) == ["ns/rs1", "ns/rs2"]
        informer._apply("DELETED", _pod("p1", "12", owner="rs2"))
        assert await _drain(ctl.queue) == ["ns/rs2"]
        assert informer.get("ns/p1") is None

    run(main())


async def _drain(q: WorkQueue) -> list:
    out = []
    while len(q):
        key = await q.get()
        q.done(key)
        out.append(key)
    return out
