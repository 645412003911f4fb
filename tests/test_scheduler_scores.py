"""Each scheduler score alone, over hand-built snapshots: raw values by kube-scheduler's formulas,
normalizations, and which node each concern prefers. No I/O."""

from __future__ import annotations

import pytest

from orchestrator.scheduler import scores as s
from orchestrator.scheduler.testing import info, node, pod, snapshot, taint


def raw(score_fn, p, snap):
    pod_info = info(p)
    return {n.name: score_fn(pod_info, n, snap) for n in snap.node_list}


def prepared(prepare, p, snap, normalize=None):
    pod_info = info(p)
    nodes = snap.node_list
    fn = prepare(pod_info, nodes, snap)
    if fn is None:
        return None
    values = [fn(pod_info, n, snap) for n in nodes]
    if normalize is not None:
        values = normalize(values)
    return dict(zip([n.name for n in nodes], values, strict=True))


# --- normalizations -----------------------------------------------------------------------------


def test_normalize_by_max():
    assert s.normalize_by_max([0, 5, 10]) == [0, 50, 100]
    assert s.normalize_by_max([0, 0]) == [0, 0]
    assert s.normalize_by_max([0, 5, 10], reverse=True) == [100, 50, 0]
    assert s.normalize_reverse([0, 0]) == [100, 100]


def test_normalize_min_max():
    assert s.normalize_min_max([-4, 0, 4]) == [0, 50, 100]
    assert s.normalize_min_max([3, 3]) == [0, 0]


def test_normalize_fewest():
    assert s.normalize_fewest([2, 4, None]) == [100, 50, 0]
    assert s.normalize_fewest([0, 0]) == [100, 100]


# --- NodeResourcesFit (LeastAllocated) and BalancedAllocation -----------------------------------


def test_least_allocated_formula():
    # cpu: (4000 - 1000) * 100 / 4000 = 75; memory: (8Gi - 2Gi) * 100 / 8Gi = 75.
    snap = snapshot(node("n", cpu="4", memory="8Gi"))
    assert raw(s.least_allocated, pod("p", cpu="1", memory="2Gi"), snap) == {"n": 75}


def test_least_allocated_prefers_the_emptier_node():
    snap = snapshot(node("busy"), node("idle"), pods=(pod("a", cpu="3", memory="6Gi", node_name="busy"),))
    scores = raw(s.least_allocated, pod("p", cpu="500m", memory="1Gi"), snap)
    assert scores["idle"] > scores["busy"]
    assert scores == {"busy": 12, "idle": 87}


def test_least_allocated_counts_request_less_pods_as_100m_200mi():
    snap = snapshot(node("n", cpu="1", memory="1000Mi"))
    # cpu (1000 - 100) * 100 / 1000 = 90; memory (1000Mi - 200Mi) * 100 / 1000Mi = 80 -> 85.
    assert raw(s.least_allocated, pod("p"), snap) == {"n": 85}


def test_least_allocated_over_capacity_scores_zero():
    snap = snapshot(node("n", cpu="1", memory="1Gi"))
    assert raw(s.least_allocated, pod("p", cpu="2", memory="2Gi"), snap) == {"n": 0}


def test_balanced_allocation_formula():
    # cpu fraction 2/4 = 0.5, memory 2/8 = 0.25: std 0.125 -> (1 - 0.125) * 100 = 87.
    snap = snapshot(node("n", cpu="4", memory="8Gi"))
    assert raw(s.balanced_allocation, pod("p", cpu="2", memory="2Gi"), snap) == {"n": 87}


def test_balanced_allocation_prefers_even_use():
    snap = snapshot(
        node("cpu-heavy"), node("even"), pods=(pod("a", cpu="2", memory="1Gi", node_name="cpu-heavy"),)
    )
    scores = raw(s.balanced_allocation, pod("p", cpu="1", memory="2Gi"), snap)
    assert scores["even"] > scores["cpu-heavy"]


# --- TaintToleration and NodeAffinity -----------------------------------------------------------


def test_taint_toleration_counts_untolerated_prefer_no_schedule_taints():
    snap = snapshot(
        node("clean"),
        node("one", taints=[taint("a", "1", "PreferNoSchedule")]),
        node("two", taints=[taint("a", "1", "PreferNoSchedule"), taint("b", "2", "PreferNoSchedule")]),
    )
    scores = raw(s.taint_toleration, pod("p"), snap)
    assert scores == {"clean": 0, "one": 1, "two": 2}
    assert s.normalize_reverse(list(scores.values())) == [100, 50, 0]
    tolerant = pod("p", tolerations=[{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"}])
    assert raw(s.taint_toleration, tolerant, snap) == {"clean": 0, "one": 0, "two": 1}


def test_preferred_node_affinity_sums_matching_weights():
    snap = snapshot(
        node("ssd", labels={"disk": "ssd"}),
        node("ssd-fast", labels={"disk": "ssd", "net": "fast"}),
        node("plain"),
    )
    preferences = [
        {
            "weight": 10,
            "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
        },
        {"weight": 30, "preference": {"matchExpressions": [{"key": "net", "operator": "Exists"}]}},
    ]
    p = pod("p", affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferences}})
    scores = raw(s.node_affinity, p, snap)
    assert scores == {"ssd": 10, "ssd-fast": 40, "plain": 0}
    assert s.normalize_by_max(list(scores.values())) == [25, 100, 0]


# --- PodTopologySpread (scoring) ----------------------------------------------------------------


def test_controller_pods_spread_across_hosts():
    placed = (
        pod("r1", owner="rs", node_name="n1"),
        pod("r2", owner="rs", node_name="n1"),
        pod("r3", owner="rs", node_name="n2"),
        pod("other", owner="elsewhere", node_name="n3"),
    )
    snap = snapshot(node("n1"), node("n2"), node("n3"), pods=placed)
    scores = prepared(s.prepare_topology_spread, pod("r4", owner="rs"), snap, s.normalize_fewest)
    assert scores["n3"] > scores["n2"] > scores["n1"]
    assert scores["n3"] == 100


def test_first_pod_of_a_controller_does_not_pay_for_spreading():
    snap = snapshot(node("n1"), pods=(pod("x", owner="other", node_name="n1"),))
    assert prepared(s.prepare_topology_spread, pod("r1", owner="rs"), snap) is None
    assert prepared(s.prepare_topology_spread, pod("loose"), snap) is None


def test_controller_pods_spread_across_zones_too():
    def zoned(name, zone):
        return node(name, labels={"topology.kubernetes.io/zone": zone})

    placed = (pod("r1", owner="rs", node_name="a1"), pod("r2", owner="rs", node_name="a2"))
    snap = snapshot(zoned("a1", "a"), zoned("a2", "a"), zoned("a3", "a"), zoned("b1", "b"), pods=placed)
    scores = prepared(s.prepare_topology_spread, pod("r3", owner="rs"), snap, s.normalize_fewest)
    # a3 is an empty host in a crowded zone; b1 is an empty host in an empty zone.
    assert scores["b1"] > scores["a3"] > scores["a1"]


def test_schedule_anyway_constraint_prefers_the_emptier_zone():
    snap = snapshot(
        node("a1", labels={"zone": "a"}),
        node("b1", labels={"zone": "b"}),
        node("bare"),
        pods=(pod("w1", labels={"app": "web"}, node_name="a1"),),
    )
    constraint = {
        "maxSkew": 1,
        "topologyKey": "zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "web"}},
    }
    p = pod("w2", labels={"app": "web"}, topologySpreadConstraints=[constraint])
    scores = prepared(s.prepare_topology_spread, p, snap, s.normalize_fewest)
    assert scores["b1"] == 100
    assert scores["a1"] < scores["b1"]
    assert scores["bare"] == 0  # lacks the topology key


# --- InterPodAffinity (scoring) -----------------------------------------------------------------


def preferred(kind, weight, labels, key="kubernetes.io/hostname"):
    term = {"labelSelector": {"matchLabels": labels}, "topologyKey": key}
    return {
        kind: {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": weight, "podAffinityTerm": term}]
        }
    }


def test_preferred_pod_affinity_draws_to_the_node_with_the_pod():
    snap = snapshot(node("n1"), node("n2"), pods=(pod("cache", labels={"app": "cache"}, node_name="n1"),))
    p = pod("web", affinity=preferred("podAffinity", 50, {"app": "cache"}))
    assert prepared(s.prepare_inter_pod_affinity, p, snap, s.normalize_min_max) == {"n1": 100, "n2": 0}


def test_preferred_pod_anti_affinity_pushes_away():
    snap = snapshot(node("n1"), node("n2"), pods=(pod("noisy", labels={"app": "noisy"}, node_name="n1"),))
    p = pod("quiet", affinity=preferred("podAntiAffinity", 50, {"app": "noisy"}))
    assert prepared(s.prepare_inter_pod_affinity, p, snap, s.normalize_min_max) == {"n1": 0, "n2": 100}


def test_placed_pods_preferences_for_the_newcomer_count():
    fan = pod("fan", node_name="n2", affinity=preferred("podAffinity", 20, {"app": "star"}))
    snap = snapshot(node("n1"), node("n2"), pods=(fan,))
    assert prepared(s.prepare_inter_pod_affinity, pod("star", labels={"app": "star"}), snap) == {
        "n1": 0,
        "n2": 20,
    }


def test_inter_pod_affinity_score_is_skipped_without_terms():
    snap = snapshot(node("n1"), pods=(pod("a", labels={"app": "x"}, node_name="n1"),))
    assert prepared(s.prepare_inter_pod_affinity, pod("b"), snap) is None


@pytest.mark.parametrize("scorer", s.DEFAULT_SCORERS, ids=lambda sc: sc.name)
def test_default_scorers_have_kube_weights(scorer):
    weights = {
        "TaintToleration": 3,
        "NodeAffinity": 2,
        "NodeResourcesFit": 1,
        "PodTopologySpread": 2,
        "InterPodAffinity": 2,
        "NodeResourcesBalancedAllocation": 1,
    }
    assert scorer.weight == weights[scorer.name]
