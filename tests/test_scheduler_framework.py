"""Whole scheduling decisions over snapshots: filter + score + pick, the FailedScheduling summary,
the assumed-pod cache and the scheduling queue. No I/O; time and randomness are injected."""

from __future__ import annotations

import random

import pytest

from orchestrator.scheduler.assume import AssumeCache
from orchestrator.scheduler.framework import FitError, Framework
from orchestrator.scheduler.queue import SchedulingQueue
from orchestrator.scheduler.testing import anti_affinity, info, node, pod, snapshot, taint


def schedule(snap, p, seed=0, **kw):
    return Framework(rng=random.Random(seed), **kw).schedule(info(p), snap)


def fit_error(snap, p, **kw) -> str:
    with pytest.raises(FitError) as exc:
        schedule(snap, p, **kw)
    return str(exc.value)


# --- the FailedScheduling summary ---------------------------------------------------------------


def test_summary_reads_like_kube_scheduler():
    snap = snapshot(
        node("cp", taints=[taint("node-role.kubernetes.io/control-plane")]),
        node("w1", cpu="1"),
        node("w2", cpu="1"),
    )
    assert fit_error(snap, pod("big", cpu="2")) == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )


def test_summary_counts_every_reason_of_a_node():
    snap = snapshot(
        node("n1", cpu="1", memory="1Gi"), node("n2", cpu="1", memory="1Gi"), node("n3", unschedulable=True)
    )
    assert fit_error(snap, pod("big", cpu="2", memory="2Gi")) == (
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu, 2 Insufficient memory. "
        "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )


def test_summary_when_nothing_can_help():
    snap = snapshot(*(node(f"n{i}", taints=[taint("dedicated", "infra")]) for i in range(3)))
    assert fit_error(snap, pod("p")) == (
        "0/3 nodes are available: 3 node(s) had untolerated taint {dedicated: infra}. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )


def test_summary_sorts_as_strings():
    # kube sorts "<count> <reason>" strings, so "10 …" comes before "2 …".
    nodes = [node(f"small{i}", cpu="100m") for i in range(10)] + [
        node(f"c{i}", unschedulable=True) for i in range(2)
    ]
    msg = fit_error(snapshot(*nodes), pod("p", cpu="1"))
    assert msg.startswith("0/12 nodes are available: 10 Insufficient cpu, 2 node(s) were unschedulable.")


def test_summary_with_preemption_policy_never():
    snap = snapshot(node("n1", cpu="1"))
    p = pod("p", cpu="2", preemptionPolicy="Never")
    assert fit_error(snap, p) == (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    )


def test_no_nodes_at_all():
    assert fit_error(snapshot(), pod("p")) == "no nodes available to schedule pods"


def test_not_ready_and_cordoned_nodes_are_skipped():
    snap = snapshot(node("down", ready="False"), node("cordoned", unschedulable=True), node("ok"))
    assert schedule(snap, pod("p")).node == "ok"


# --- placement ----------------------------------------------------------------------------------


def test_places_by_resources():
    snap = snapshot(node("small", cpu="1"), node("large", cpu="8"))
    assert schedule(snap, pod("p", cpu="2")).node == "large"


def test_places_by_node_selector_and_taints():
    snap = snapshot(
        node("gpu", labels={"accel": "gpu"}, taints=[taint("accel", "gpu")]),
        node("plain1"),
        node("plain2"),
    )
    wants_gpu = pod("p", nodeSelector={"accel": "gpu"}, tolerations=[{"key": "accel", "operator": "Exists"}])
    assert schedule(snap, wants_gpu).node == "gpu"
    for seed in range(20):
        assert schedule(snap, pod("q"), seed=seed).node in ("plain1", "plain2")


def test_prefers_the_least_allocated_node():
    snap = snapshot(node("a"), node("b"), pods=(pod("x", cpu="2", memory="4Gi", node_name="a"),))
    assert schedule(snap, pod("p", cpu="1", memory="1Gi")).node == "b"


def test_ties_are_broken_at_random_reproducibly():
    snap = snapshot(*(node(f"n{i}") for i in range(4)))
    picks = {schedule(snap, pod("p"), seed=seed).node for seed in range(40)}
    assert picks == {"n0", "n1", "n2", "n3"}
    assert schedule(snap, pod("p"), seed=7).node == schedule(snap, pod("p"), seed=7).node


def test_controller_replicas_spread_over_nodes():
    snap = snapshot(node("n1"), node("n2"), node("n3"))
    fw = Framework(rng=random.Random(1))
    cache = AssumeCache(snap)
    placed = []
    for i in range(6):
        p = info(pod(f"r{i}", cpu="100m", memory="100Mi", owner="rs"))
        node_name = fw.schedule(p, snap).node
        cache.assume(p, node_name)
        placed.append(node_name)
    assert sorted(placed.count(n) for n in ("n1", "n2", "n3")) == [2, 2, 2]


def test_anti_affine_replicas_get_a_node_each_then_fail():
    # The placed replicas' own anti-affinity rejects the third first (kube checks it first).
    snap = snapshot(node("n1"), node("n2"))
    fw = Framework(rng=random.Random(0))
    cache = AssumeCache(snap)
    spec = {"affinity": anti_affinity({"app": "db"})}
    for i in range(2):
        p = info(pod(f"db{i}", labels={"app": "db"}, **spec))
        cache.assume(p, fw.schedule(p, snap).node)
    with pytest.raises(FitError) as exc:
        fw.schedule(info(pod("db2", labels={"app": "db"}, **spec)), snap)
    assert str(exc.value).startswith(
        "0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules."
    )


# --- sampling large clusters --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "percentage", "want"),
    [
        (50, 0, 50),
        (100, 0, 100),
        (1000, 0, 420),
        (5000, 0, 500),
        (10000, 0, 500),
        (1000, 10, 100),
        (1000, 100, 1000),
        (300, 5, 100),
    ],
)
def test_number_of_feasible_nodes_to_find(nodes, percentage, want):
    # Below 100 nodes every node is checked; above, kube's adaptive 50% - nodes/125 (at least 5%).
    fw = Framework(percentage_of_nodes_to_score=percentage)
    expected = nodes if nodes < 100 else want
    assert fw.num_feasible_nodes_to_find(nodes) == expected


def test_large_clusters_are_sampled_round_robin():
    snap = snapshot(*(node(f"n{i:04}") for i in range(1000)))
    fw = Framework(rng=random.Random(0))
    first = fw.schedule(info(pod("a")), snap)
    assert (first.evaluated_nodes, first.feasible_nodes) == (420, 420)
    feasible, failed = fw.find_feasible(info(pod("b")), snap)
    assert not failed
    assert feasible[0].name == "n0420"  # the next search starts where the last one stopped


def test_a_full_cluster_is_searched_to_the_end():
    nodes = [node(f"n{i:04}", cpu="1") for i in range(999)] + [node("big", cpu="8")]
    result = schedule(snapshot(*nodes), pod("p", cpu="2"))
    assert result.node == "big"
    assert result.evaluated_nodes == 1000


# --- the assumed-pod cache ----------------------------------------------------------------------


def test_assumed_pods_prevent_double_booking():
    snap = snapshot(node("n", cpu="1"))
    fw = Framework(rng=random.Random(0))
    cache = AssumeCache(snap)
    for name in ("a", "b"):
        p = info(pod(name, cpu="500m"))
        cache.assume(p, fw.schedule(p, snap).node)
    with pytest.raises(FitError):
        fw.schedule(info(pod("c", cpu="500m")), snap)
    assert len(cache) == 2


def test_forget_gives_the_room_back():
    snap = snapshot(node("n", cpu="1"))
    cache = AssumeCache(snap)
    cache.assume(info(pod("a", cpu="1")), "n")
    assert snap.nodes["n"].requested.cpu == 1000
    assert cache.forget("default/a")
    assert snap.nodes["n"].requested.cpu == 0
    assert not cache.forget("default/a")


def test_the_watch_confirms_an_assumption():
    snap = snapshot(node("n", cpu="2"))
    cache = AssumeCache(snap, ttl=30)
    cache.assume(info(pod("a", cpu="1")), "n")
    cache.pod_placed(info(pod("a", cpu="1", node_name="n")))
    assert not cache.is_assumed("default/a")
    assert snap.nodes["n"].requested.cpu == 1000  # counted once
    assert not cache.forget("default/a")  # a late bind error cannot undo what the watch showed
    assert snap.nodes["n"].requested.cpu == 1000


def test_unconfirmed_assumptions_expire_after_the_bind():
    snap = snapshot(node("n", cpu="2"))
    cache = AssumeCache(snap, ttl=30)
    cache.assume(info(pod("a", cpu="1")), "n")
    assert cache.expire(now=1000.0) == []  # still binding: never expires
    cache.finish_binding("default/a", now=100.0)
    assert cache.expire(now=129.0) == []
    assert cache.expire(now=130.0) == ["default/a"]
    assert snap.nodes["n"].requested.cpu == 0


def test_deleted_pod_leaves_its_node():
    snap = snapshot(node("n", cpu="2"), pods=(pod("a", cpu="1", node_name="n"),))
    cache = AssumeCache(snap)
    cache.pod_gone("default/a")
    assert snap.nodes["n"].requested.cpu == 0 and not snap.nodes["n"].pods


def test_pods_on_unknown_nodes_are_counted_once_the_node_appears():
    snap = snapshot(pods=(pod("a", cpu="1", node_name="late"),))
    assert len(snap) == 0
    snap.set_node(node("late", cpu="1"))
    with pytest.raises(FitError):
        schedule(snap, pod("b", cpu="1"))


# --- the scheduling queue -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_queue_orders_by_priority_then_arrival():
    q = SchedulingQueue(clock=Clock())
    q.add("a")
    q.add("b", priority=10)
    q.add("c")
    assert [q.pop(), q.pop(), q.pop(), q.pop()] == ["b", "a", "c", None]


def test_unschedulable_pods_wait_for_a_cluster_change():
    clock = Clock()
    q = SchedulingQueue(clock=clock, initial_backoff=1, max_backoff=10, unschedulable_timeout=300)
    q.add("p")
    assert q.pop() == "p"
    q.unschedulable("p")
    clock.now = 50
    assert q.pop() is None  # nothing changed: no retry, however long we wait (short of the timeout)
    assert q.next_ready_in() == 250
    assert q.move_all() == 1
    assert q.pop() == "p"


def test_cluster_changes_retry_at_most_once_per_backoff():
    clock = Clock()
    q = SchedulingQueue(clock=clock, initial_backoff=1, max_backoff=10)
    q.add("p")
    for attempt in range(1, 6):
        assert q.pop() == "p"
        q.unschedulable("p")
        q.move_all()  # a storm of events right after the failure
        q.move_all()
        assert q.pop() is None
        wait = q.next_ready_in()
        assert wait == min(2 ** (attempt - 1), 10)
        clock.now += wait


def test_unschedulable_pods_are_retried_after_the_timeout():
    clock = Clock()
    q = SchedulingQueue(clock=clock, unschedulable_timeout=300)
    q.add("p")
    q.pop()
    q.unschedulable("p")
    clock.now = 300
    assert q.pop() == "p"


def test_errors_back_off_and_a_pod_update_retries_a_parked_pod():
    clock = Clock()
    q = SchedulingQueue(clock=clock, initial_backoff=1)
    q.add("p")
    q.pop()
    q.backoff("p")
    assert q.pop() is None and q.next_ready_in() == 1
    clock.now = 1
    assert q.pop() == "p"
    q.unschedulable("p")
    clock.now = 10
    q.add("p")  # the pod's spec changed
    assert q.pop() == "p"


def test_deleted_pods_leave_the_queue():
    q = SchedulingQueue(clock=Clock())
    q.add("a")
    q.add("b")
    q.delete("a")
    assert q.pop() == "b" and q.pop() is None
    q.unschedulable("b")
    q.delete("b")
    assert q.move_all() == 0 and len(q) == 0


def test_queue_counts():
    clock = Clock()
    q = SchedulingQueue(clock=clock)
    for k in "abc":
        q.add(k)
    q.pop()
    q.unschedulable("a")
    q.pop()
    q.backoff("b")
    assert q.counts() == {"active": 1, "backoff": 1, "unschedulable": 1}


# --- the process's event handlers and bind outcomes (a stub API client; no I/O) -----------------


class StubClient:
    """Just the calls the scheduler makes, recorded; `bind_error` makes binds fail."""

    def __init__(self, bind_error: Exception | None = None) -> None:
        self.bind_error = bind_error
        self.binds: list[tuple[str, str, str]] = []
        self.events: list[tuple[str, str]] = []
        self.patches: list[dict] = []

    async def bind(self, namespace, name, node, *, uid=None):
        if self.bind_error is not None:
            raise self.bind_error
        self.binds.append((namespace, name, node))
        return {}

    async def create_event(self, obj, reason, message, **kw):
        self.events.append((reason, message))
        return {}

    async def patch(self, *args, **kw):
        self.patches.append(args[4])
        return {}


def make_scheduler(client=None, clock=None):
    from orchestrator.scheduler.scheduler import Scheduler, SchedulerOptions

    return Scheduler(client or StubClient(), SchedulerOptions(seed=0), clock=clock or Clock())  # type: ignore[arg-type]


_rv = iter(range(1, 1_000_000))


def feed(informer, kind, obj):
    """Deliver a watch event through the scheduler's real informer (cache + handlers)."""
    obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(next(_rv))}}
    informer._apply(kind, obj)
    return obj


def test_only_our_pending_pods_are_queued():
    sched = make_scheduler()
    feed(sched.pods, "ADDED", pod("ours"))
    feed(sched.pods, "ADDED", pod("named", schedulerName="grove-scheduler"))
    feed(sched.pods, "ADDED", pod("theirs", schedulerName="other-scheduler"))
    feed(sched.pods, "ADDED", pod("gated", schedulingGates=[{"name": "wait"}]))
    feed(sched.pods, "ADDED", pod("bound", node_name="n1"))
    assert sorted(sched.queue.counts().items()) == [("active", 2), ("backoff", 0), ("unschedulable", 0)]
    assert "default/ours" in sched.queue and "default/named" in sched.queue


def test_heartbeats_do_not_wake_parked_pods_but_real_node_changes_do():
    clock = Clock()
    sched = make_scheduler(clock=clock)
    n = node("n1", cpu="1")
    feed(sched.nodes, "ADDED", n)
    feed(sched.pods, "ADDED", pod("big", cpu="2"))
    key = sched.queue.pop()
    sched.queue.unschedulable(key)
    clock.now = 100  # well past any back-off
    beat = {
        **n,
        "status": {
            **n["status"],
            "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "t2"}],
        },
    }
    feed(sched.nodes, "MODIFIED", beat)
    assert sched.queue.pop() is None
    grown = {
        **beat,
        "status": {**beat["status"], "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
    }
    feed(sched.nodes, "MODIFIED", grown)
    assert sched.queue.pop() == "default/big"


def test_status_writes_do_not_requeue_but_spec_changes_do():
    clock = Clock()
    sched = make_scheduler(clock=clock)
    old = feed(sched.pods, "ADDED", pod("p", nodeSelector={"disk": "ssd"}))
    sched.queue.unschedulable(sched.queue.pop())
    clock.now = 100
    status_only = feed(sched.pods, "MODIFIED", {**old, "status": {"conditions": [{"type": "PodScheduled"}]}})
    assert sched.queue.pop() is None
    feed(
        sched.pods, "MODIFIED", {**status_only, "metadata": {**status_only["metadata"], "labels": {"x": "y"}}}
    )
    assert sched.queue.pop() == "default/p"


def test_a_deleted_bound_pod_frees_room_for_parked_pods():
    clock = Clock()
    sched = make_scheduler(clock=clock)
    feed(sched.nodes, "ADDED", node("n1", cpu="1"))
    placed = feed(sched.pods, "ADDED", pod("old", cpu="1", node_name="n1"))
    feed(sched.pods, "ADDED", pod("new", cpu="1"))
    sched.queue.unschedulable(sched.queue.pop())
    clock.now = 100
    feed(sched.pods, "DELETED", placed)
    assert sched.snapshot.nodes["n1"].requested.cpu == 0
    assert sched.queue.pop() == "default/new"


def test_schedule_one_assumes_binds_and_reports():
    import asyncio

    async def scenario():
        client = StubClient()
        sched = make_scheduler(client)
        feed(sched.nodes, "ADDED", node("n1", cpu="1"))
        feed(sched.pods, "ADDED", pod("fits", cpu="1"))
        feed(sched.pods, "ADDED", pod("waits", cpu="1"))
        assert sched.schedule_one(sched.queue.pop())
        assert sched.cache.is_assumed("default/fits")
        assert not sched.schedule_one(sched.queue.pop())  # the assumed pod holds the cpu
        await sched.drain()
        return client, sched

    client, sched = asyncio.run(scenario())
    assert client.binds == [("default", "fits", "n1")]
    assert sched.queue.counts()["unschedulable"] == 1
    condition = client.patches[0]["status"]["conditions"][0]
    assert (condition["status"], condition["reason"]) == ("False", "Unschedulable")
    assert condition["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")


def test_a_failed_bind_gives_the_room_back_and_retries_later():
    import asyncio

    from orchestrator.apiclient import Conflict

    async def scenario():
        client = StubClient(bind_error=Conflict(409, "Conflict", "the object has been modified"))
        sched = make_scheduler(client)
        feed(sched.nodes, "ADDED", node("n1", cpu="1"))
        feed(sched.pods, "ADDED", pod("p", cpu="1"))
        assert sched.schedule_one(sched.queue.pop())
        await sched.drain()
        return sched

    sched = asyncio.run(scenario())
    assert not sched.cache.is_assumed("default/p")
    assert sched.snapshot.nodes["n1"].requested.cpu == 0
    assert sched.queue.counts()["backoff"] == 1
