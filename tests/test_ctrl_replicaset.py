"""The ReplicaSet controller's decisions over cached snapshots: which pods to delete first (kube's
ActivePodsWithRanks), how many to create, adoption and release, status, expectations, batches."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.controllers.base import slow_start_batch
from orchestrator.controllers.expectations import ControllerExpectations, UIDTrackingControllerExpectations
from orchestrator.controllers.replicaset import (
    calculate_status,
    manage_replicas,
    pod_from_template,
    status_needs_update,
)
from orchestrator.controllers.testing import T0, owner_ref, pod, replicaset
from orchestrator.controllers.util import claim, key_of, labels_of, rank_pods_for_deletion, scaled_value


def names(pods):
    return [p["metadata"]["name"] for p in pods]


# --- ranking for deletion ------------------------------------------------------------------------


def test_unassigned_before_assigned():
    a = pod("assigned", node="n1")
    u = pod("unassigned", node=None, phase="Pending", ready=False)
    assert names(rank_pods_for_deletion([a, u], [a, u], T0)) == ["unassigned", "assigned"]


def test_pending_before_unknown_before_running():
    r = pod("running", node="n1", phase="Running", ready=False)
    u = pod("unknown", node="n1", phase="Unknown", ready=False)
    p = pod("pending", node="n1", phase="Pending", ready=False)
    assert names(rank_pods_for_deletion([r, u, p], [], T0)) == ["pending", "unknown", "running"]


def test_not_ready_before_ready():
    ready = pod("ready", node="n1")
    not_ready = pod("not-ready", node="n1", ready=False)
    assert names(rank_pods_for_deletion([ready, not_ready], [], T0)) == ["not-ready", "ready"]


def test_lower_deletion_cost_first():
    cheap = pod("cheap", node="n1", annotations={"controller.kubernetes.io/pod-deletion-cost": "-5"})
    dear = pod("dear", node="n1", annotations={"controller.kubernetes.io/pod-deletion-cost": "100"})
    plain = pod("plain", node="n1")
    assert names(rank_pods_for_deletion([dear, plain, cheap], [], T0)) == ["cheap", "plain", "dear"]


def test_doubled_up_on_a_node_first():
    alone = pod("alone", node="n1")
    crowded1 = pod("crowded1", node="n2")
    crowded2 = pod("crowded2", node="n2")
    ranked = names(rank_pods_for_deletion([alone, crowded1, crowded2], [alone, crowded1, crowded2], T0))
    assert ranked[-1] == "alone"


def test_ready_for_less_time_first_in_log_buckets():
    # 10 s and 1000 s ago are in different power-of-two buckets: the recent one goes first.
    recent = pod("recent", node="n1", ready_since=T0 - 10)
    old = pod("old", node="n1", ready_since=T0 - 1000)
    assert names(rank_pods_for_deletion([old, recent], [], T0)) == ["recent", "old"]


def test_same_log_bucket_ordered_by_uid_not_time():
    # 1000 s and 1001 s are in the same bucket: kube orders those by UID (pseudo-random).
    a = pod("a", node="n1", ready_since=T0 - 1000, uid_="00000000-0000-0000-0000-00000000000a")
    b = pod("b", node="n1", ready_since=T0 - 1001, uid_="00000000-0000-0000-0000-00000000000b")
    assert names(rank_pods_for_deletion([b, a], [], T0)) == ["a", "b"]


def test_more_restarts_first_then_newer_first():
    same = T0 - 500
    flappy = pod("flappy", node="n1", ready_since=same, restarts=7, created=T0 - 100000)
    steady = pod("steady", node="n1", ready_since=same, restarts=0, created=T0 - 10)
    assert names(rank_pods_for_deletion([steady, flappy], [], T0)) == ["flappy", "steady"]
    newer = pod("newer", node="n1", ready_since=same, created=T0 - 10)
    older = pod("older", node="n1", ready_since=same, created=T0 - 100000)
    assert names(rank_pods_for_deletion([older, newer], [], T0)) == ["newer", "older"]


# --- manage replicas -----------------------------------------------------------------------------


def test_too_few_creates_the_difference_capped_by_burst():
    rs = replicaset(replicas=5)
    pods = [pod(owner=rs, node="n1") for _ in range(2)]
    assert manage_replicas(rs, pods, pods, T0).create == 3
    assert manage_replicas(replicaset(replicas=900), [], [], T0, burst=500).create == 500


def test_too_many_deletes_the_worst_ranked():
    rs = replicaset(replicas=2)
    good1 = pod("good1", owner=rs, node="n1")
    good2 = pod("good2", owner=rs, node="n2")
    pending = pod("pending", owner=rs, node=None, phase="Pending", ready=False)
    not_ready = pod("not-ready", owner=rs, node="n3", ready=False)
    pods = [good1, pending, good2, not_ready]
    diff = manage_replicas(rs, pods, pods, T0)
    assert diff.create == 0
    assert names(diff.delete) == ["pending", "not-ready"]


def test_exact_count_does_nothing():
    rs = replicaset(replicas=2)
    pods = [pod(owner=rs, node="n1"), pod(owner=rs, node="n2")]
    diff = manage_replicas(rs, pods, pods, T0)
    assert diff.create == 0 and diff.delete == []


# --- claiming ------------------------------------------------------------------------------------


def test_claim_adopts_orphans_releases_mismatches_ignores_others():
    rs = replicaset(labels={"app": "web"})
    other = replicaset("other", labels={"app": "web"})
    mine = pod("mine", owner=rs, labels={"app": "web"})
    orphan = pod("orphan", labels={"app": "web"})
    strayed = pod("strayed", owner=rs, labels={"app": "db"})
    theirs = pod("theirs", owner=other, labels={"app": "web"})
    unrelated = pod("unrelated", labels={"app": "db"})
    dying = pod("dying", labels={"app": "web"}, deleting=True)
    result = claim(
        rs, [mine, orphan, strayed, theirs, unrelated, dying], lambda p: labels_of(p) == {"app": "web"}
    )
    assert names(result.owned) == ["mine"]
    assert names(result.adopt) == ["orphan"]
    assert names(result.release) == ["strayed"]


def test_owner_being_deleted_neither_adopts_nor_releases():
    rs = replicaset()
    rs["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    orphan = pod("orphan")
    strayed = pod("strayed", owner=rs, labels={"app": "db"})
    result = claim(rs, [orphan, strayed], lambda p: labels_of(p) == {"app": "web"})
    assert result.adopt == [] and result.release == []


# --- status --------------------------------------------------------------------------------------


def test_status_counts_ready_available_and_fully_labeled():
    rs = replicaset(replicas=4, min_ready=30, labels={"app": "web"})
    rs["spec"]["template"]["metadata"]["labels"] = {"app": "web", "tier": "front"}
    pods = [
        pod(owner=rs, labels={"app": "web", "tier": "front"}, ready_since=T0 - 100),  # available
        pod(owner=rs, labels={"app": "web", "tier": "front"}, ready_since=T0 - 5),  # ready, not yet available
        pod(owner=rs, labels={"app": "web"}, ready=False),
    ]
    st = calculate_status(rs, pods, T0)
    assert st["replicas"] == 3
    assert st["fullyLabeledReplicas"] == 2
    assert st["readyReplicas"] == 2
    assert st["availableReplicas"] == 1
    assert "conditions" not in st


def test_replica_failure_condition_set_and_cleared():
    rs = replicaset(replicas=3)
    st = calculate_status(rs, [], T0, "pods is forbidden: exceeded quota")
    (cond,) = st["conditions"]
    assert cond["type"] == "ReplicaFailure" and cond["reason"] == "FailedCreate"
    assert cond["message"] == "pods is forbidden: exceeded quota"
    rs["status"] = st
    assert "conditions" not in calculate_status(rs, [], T0, None)


def test_status_update_needed_only_when_something_changed():
    rs = replicaset(replicas=1, generation=2)
    p = pod(owner=rs)
    st = calculate_status(rs, [p], T0)
    assert status_needs_update(rs, st)  # observedGeneration is behind
    st["observedGeneration"] = 2
    rs["status"] = st
    assert not status_needs_update(rs, calculate_status(rs, [p], T0) | {"observedGeneration": 2})


# --- pods from the template ----------------------------------------------------------------------


def test_pod_from_template_carries_labels_annotations_and_controller_ref():
    rs = replicaset("web-abc")
    rs["spec"]["template"]["metadata"]["annotations"] = {"note": "x"}
    body = pod_from_template(rs, rs["spec"]["template"], owner_ref(rs))
    assert body["metadata"]["generateName"] == "web-abc-"
    assert body["metadata"]["labels"] == {"app": "web"}
    assert body["metadata"]["annotations"] == {"note": "x"}
    (ref,) = body["metadata"]["ownerReferences"]
    assert ref["controller"] is True and ref["uid"] == rs["metadata"]["uid"] and ref["kind"] == "ReplicaSet"
    assert body["spec"] == rs["spec"]["template"]["spec"]
    assert body["spec"] is not rs["spec"]["template"]["spec"]
    with pytest.raises(ValueError, match="no labels"):
        pod_from_template(rs, {"metadata": {}, "spec": {}}, owner_ref(rs))


# --- expectations --------------------------------------------------------------------------------


def test_expectations_block_until_observed():
    exp = ControllerExpectations()
    assert exp.satisfied("ns/rs")  # nothing recorded: act on the cache
    exp.expect_creations("ns/rs", 3)
    assert not exp.satisfied("ns/rs")
    for _ in range(2):
        exp.creation_observed("ns/rs")
    assert not exp.satisfied("ns/rs")
    exp.creation_observed("ns/rs")
    assert exp.satisfied("ns/rs")


def test_expectations_expire():
    now = [100.0]
    exp = ControllerExpectations(clock=lambda: now[0], timeout=300)
    exp.expect_creations("k", 1)
    assert not exp.satisfied("k")
    now[0] += 301
    assert exp.satisfied("k")


def test_uid_tracking_counts_each_deleted_pod_once():
    exp = UIDTrackingControllerExpectations()
    exp.expect_deletions_of("ns/rs", ["ns/a", "ns/b"])
    exp.deletion_observed_of("ns/rs", "ns/a")  # seen with a deletionTimestamp
    exp.deletion_observed_of("ns/rs", "ns/a")  # ... and again as DELETED
    exp.deletion_observed_of("ns/rs", "ns/zzz")  # not one we deleted
    assert not exp.satisfied("ns/rs")
    exp.deletion_observed_of("ns/rs", "ns/b")
    assert exp.satisfied("ns/rs")
    exp.delete("ns/rs")
    assert exp.get("ns/rs") is None and exp.pending_deletions("ns/rs") == frozenset()


def test_burst_of_events_never_over_creates():
    """Level-triggered syncs between creation and observation must not create again."""
    exp = ControllerExpectations()
    rs = replicaset(replicas=3)
    key = key_of(rs)
    cache: list = []
    created = 0
    for _sync in range(5):  # five syncs fired by a burst of events before any pod shows up
        if exp.satisfied(key):
            n = manage_replicas(rs, cache, cache, T0).create
            exp.expect_creations(key, n)
            created += n
    assert created == 3
    for _ in range(3):
        cache.append(pod(owner=rs, node="n1"))
        exp.creation_observed(key)
    assert exp.satisfied(key) and manage_replicas(rs, cache, cache, T0).create == 0


# --- slow start and IntOrString ------------------------------------------------------------------


def test_slow_start_batches_double_and_stop_at_first_failure():
    calls = []

    async def run(fail_at: int | None):
        calls.clear()

        async def fn():
            calls.append(len(calls))
            if fail_at is not None and len(calls) == fail_at:
                raise RuntimeError("quota")

        return await slow_start_batch(10, 1, fn)

    ok, err = asyncio.run(run(None))
    assert ok == 10 and err is None and len(calls) == 10
    ok, err = asyncio.run(run(3))  # batches 1, 2 (fails on the 3rd call) -> stop
    assert err is not None and ok == 2 and len(calls) == 3


def test_scaled_value_rounding():
    assert scaled_value("25%", 10, True) == 3
    assert scaled_value("25%", 10, False) == 2
    assert scaled_value(4, 10, True) == 4
    with pytest.raises(ValueError):
        scaled_value("abc", 10, True)
