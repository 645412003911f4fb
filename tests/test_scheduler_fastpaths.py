"""The scheduler's one-loop fast paths give the answers of the plain per-node checks and scores.

Every plain pod is filtered and scored over hundreds of nodes, so the resource check and the two
resource scores also come as whole-list loops (`Filter.walk`, `Scorer.score_all`), and a pod whose
bind the watch reports keeps the record parsed when it was scheduled (`PodInfo.rebound`). These
tests hold each fast path to the slow one it replaces, over clusters with nodes that fit, nodes
that are full in each way, and pods of every request shape. No I/O.
"""

from __future__ import annotations

import copy
import dataclasses
import random

from orchestrator.scheduler.assume import AssumeCache
from orchestrator.scheduler.filters import DEFAULT_FILTERS, node_resources_fit, node_resources_fit_walk
from orchestrator.scheduler.framework import FitError, Framework
from orchestrator.scheduler.scores import (
    DEFAULT_SCORERS,
    balanced_allocation,
    balanced_allocation_all,
    least_allocated,
    least_allocated_all,
)
from orchestrator.scheduler.snapshot import PodInfo, pod_requests, pod_requests_pair
from orchestrator.scheduler.testing import info, node, pod, snapshot


def mixed_cluster():
    """Nodes of different sizes, some already busy, one without memory, one full of pods."""
    nodes = [
        node("big", cpu="8", memory="32Gi"),
        node("small", cpu="1", memory="1Gi"),
        node("no-memory", cpu="2", memory="0"),
        node("no-cpu", cpu="0", memory="4Gi"),
        node("two-pods", cpu="4", memory="8Gi", pods=2),
        node("gpu", cpu="4", memory="8Gi", extra={"example.com/gpu": "2"}),
    ]
    placed = (
        pod("a", cpu="700m", memory="512Mi", node_name="small"),
        pod("b", cpu="3", memory="1Gi", node_name="big"),
        pod("c", node_name="two-pods"),
        pod("d", node_name="two-pods"),
        pod("e", cpu="1", memory="7Gi", node_name="gpu"),
    )
    return snapshot(*nodes, pods=placed)


POD_SHAPES = [
    pod("plain"),
    pod("cpu-only", cpu="250m"),
    pod("memory-only", memory="3Gi"),
    pod("both", cpu="500m", memory="512Mi"),
    pod("huge", cpu="16", memory="64Gi"),
    pod("too-much-memory", cpu="100m", memory="2Gi"),
]


def gpu_pod():
    p = pod("gpu-user", cpu="100m")
    p["spec"]["containers"][0]["resources"]["limits"] = {"example.com/gpu": "1"}
    return p


def test_score_all_gives_each_nodes_score():
    snap = mixed_cluster()
    for p in [*POD_SHAPES, gpu_pod()]:
        pi = info(p)
        nodes = snap.node_list
        assert least_allocated_all(pi, nodes, snap) == [least_allocated(pi, n, snap) for n in nodes], p
        assert balanced_allocation_all(pi, nodes, snap) == [
            balanced_allocation(pi, n, snap) for n in nodes
        ], p


def slow_walk(pi, nodes, snap, enough):
    feasible, failed, processed = [], {}, 0
    for n in nodes:
        processed += 1
        reasons = node_resources_fit(pi, n, snap)
        if reasons:
            failed[n.name] = (reasons,) if isinstance(reasons, str) else reasons
        else:
            feasible.append(n)
            if len(feasible) >= enough:
                break
    return feasible, failed, processed


def test_resources_walk_finds_what_the_check_finds():
    snap = mixed_cluster()
    for p in [*POD_SHAPES, gpu_pod()]:
        pi = info(p)
        for enough in (1, 2, 100):
            fast = node_resources_fit_walk(pi, snap.node_list, snap, enough)
            slow = slow_walk(pi, snap.node_list, snap, enough)
            assert [n.name for n in fast[0]] == [n.name for n in slow[0]], (p, enough)
            assert fast[1:] == slow[1:], (p, enough)


def slow_framework(seed: int) -> Framework:
    """The framework as it was: every check and score called per node."""
    return Framework(
        filters=[dataclasses.replace(f, walk=None) for f in DEFAULT_FILTERS],
        scorers=[dataclasses.replace(s, score_all=None) for s in DEFAULT_SCORERS],
        rng=random.Random(seed),
    )


def test_a_burst_lands_where_the_per_node_framework_puts_it():
    # 150 nodes (so the adaptive search stops early and rotates), a burst of mixed pods, some
    # of which fit nowhere by the end: both frameworks must decide the same, pod by pod.
    def cluster():
        nodes = [
            node(f"n{i}", cpu=str(1 + i % 3), memory=f"{2 + i % 4}Gi", pods=5 + i % 7) for i in range(150)
        ]
        return snapshot(*nodes)

    fast_snap, slow_snap = cluster(), cluster()
    fast, slow = Framework(rng=random.Random(7)), slow_framework(7)
    fast_cache, slow_cache = AssumeCache(fast_snap), AssumeCache(slow_snap)
    shapes = [("100m", "128Mi"), (None, None), ("1", None), (None, "1Gi"), ("300m", "700Mi")]
    outcomes = []
    for i in range(900):
        cpu, memory = shapes[i % len(shapes)]
        p = pod(f"p{i}", cpu=cpu, memory=memory)
        results = []
        for fw, snap, cache in ((fast, fast_snap, fast_cache), (slow, slow_snap, slow_cache)):
            pi = info(p)
            try:
                result = fw.schedule(pi, snap)
            except FitError as err:
                results.append(("unschedulable", str(err)))
                continue
            cache.assume(pi, result.node)
            results.append((result.node, result.evaluated_nodes, result.feasible_nodes))
        assert results[0] == results[1], f"pod {i}"
        outcomes.append(results[0][0])
    assert "unschedulable" in outcomes  # the burst did fill the cluster up
    assert len(set(outcomes)) > 100


def test_pod_requests_pair_counts_init_containers_sidecars_and_overhead():
    spec = {
        "containers": [
            {"name": "app", "resources": {"requests": {"cpu": "200m"}}},
            {"name": "log", "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}},
        ],
        "initContainers": [
            {"name": "setup", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
        ],
        "overhead": {"cpu": "10m", "memory": "1Mi"},
    }
    plain, non_zero = pod_requests_pair(spec)
    # Containers 300m + sidecar 50m = 350m; the init container needs 1 cpu (it starts before the
    # sidecar), so 1000m; plus overhead.
    assert (plain.cpu, plain.memory) == (1010, 1024**3 + 1024**2)
    # Request-less memory counts 200Mi per container: app and proxy; the init container's 1Gi
    # still dominates.
    assert (non_zero.cpu, non_zero.memory) == (1010, 1024**3 + 1024**2)
    assert pod_requests(spec).cpu == plain.cpu and pod_requests(spec, non_zero=True).memory == non_zero.memory
    only = {"containers": [{"name": "c"}, {"name": "d", "resources": {"requests": {"cpu": "5m"}}}]}
    plain, non_zero = pod_requests_pair(only)
    assert (plain.cpu, plain.memory) == (5, 0)
    assert (non_zero.cpu, non_zero.memory) == (105, 2 * 200 * 1024 * 1024)


def bound_version(p, node_name="n1"):
    b = copy.deepcopy(p)
    b["spec"]["nodeName"] = node_name
    b["metadata"]["resourceVersion"] = "42"
    b["metadata"]["annotations"] = {"scheduler.example.com/note": "x"}
    b["status"] = {"conditions": [{"type": "PodScheduled", "status": "True"}]}
    return b


def test_rebound_keeps_the_record_when_only_binding_changed():
    p = pod("web", cpu="100m", labels={"app": "web"}, owner="rs")
    pi = PodInfo.from_pod(p)
    b = bound_version(p)
    again = pi.rebound(b)
    assert again is not None
    assert again.node_name == "n1" and again.obj is b
    fresh = PodInfo.from_pod(b)
    for f in dataclasses.fields(PodInfo):
        if f.name != "obj":
            assert getattr(again, f.name) == getattr(fresh, f.name), f.name


def test_rebound_refuses_any_other_change():
    p = pod("web", cpu="100m", labels={"app": "web"})
    pi = PodInfo.from_pod(p)
    relabelled = bound_version(p)
    relabelled["metadata"]["labels"] = {"app": "other"}
    resized = bound_version(p)
    resized["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "2"
    tolerating = bound_version(p)
    tolerating["spec"]["tolerations"] = [{"operator": "Exists"}]
    deleting = bound_version(p)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    for changed in (relabelled, resized, tolerating, deleting):
        assert pi.rebound(changed) is None
