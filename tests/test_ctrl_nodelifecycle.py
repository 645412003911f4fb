"""Node lifecycle decisions: health from heartbeats and Lease renewals judged on the controller's
clock, conditions turning Unknown after the grace period, the taints that follow the conditions,
and taint-based eviction times."""

from __future__ import annotations

from orchestrator.controllers.nodelifecycle import desired_taints, eviction_time, update_node_health
from orchestrator.controllers.testing import T0, node, taint
from orchestrator.controllers.util import format_time, get_condition

GRACE, STARTUP = 40.0, 60.0


def lease(renew: float) -> dict:
    micro = format_time(renew).replace("Z", ".000000Z")
    return {"metadata": {"name": "n1", "namespace": "kube-node-lease"}, "spec": {"renewTime": micro}}


def test_renewed_lease_keeps_a_node_healthy_even_without_new_heartbeats():
    n = node("n1", heartbeat=T0 - 1000)
    v = update_node_health(n, lease(T0), None, T0, GRACE, STARTUP)
    assert v.new_conditions is None and v.current_ready == "True"
    # 35 s later the lease was renewed again: still fine 70 s after the first look.
    v = update_node_health(n, lease(T0 + 35), v.health, T0 + 35, GRACE, STARTUP)
    v = update_node_health(n, lease(T0 + 35), v.health, T0 + 70, GRACE, STARTUP)
    assert v.new_conditions is None


def test_silent_node_turns_unknown_after_the_grace_period_on_our_clock():
    n = node("n1")
    v = update_node_health(n, lease(T0), None, T0, GRACE, STARTUP)
    v = update_node_health(n, lease(T0), v.health, T0 + 39, GRACE, STARTUP)
    assert v.new_conditions is None
    v = update_node_health(n, lease(T0), v.health, T0 + 41, GRACE, STARTUP)
    assert v.observed_ready == "True" and v.current_ready == "Unknown"
    ready = get_condition(v.new_conditions, "Ready")
    assert ready["status"] == "Unknown" and ready["reason"] == "NodeStatusUnknown"
    assert ready["message"] == "Kubelet stopped posting node status."
    for ctype in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        cond = get_condition(v.new_conditions, ctype)
        assert cond["status"] == "Unknown" and cond["reason"] == "NodeStatusNeverUpdated"


def test_node_clock_skew_does_not_matter():
    # The node's heartbeat claims a time far in the future; only its changing matters.
    n = node("n1", heartbeat=T0 + 10_000)
    v = update_node_health(n, None, None, T0, GRACE, STARTUP)
    v = update_node_health(n, None, v.health, T0 + 30, GRACE, STARTUP)
    assert v.new_conditions is None
    n2 = node("n1", heartbeat=T0 + 10_010)
    v = update_node_health(n2, None, v.health, T0 + 60, GRACE, STARTUP)
    assert v.new_conditions is None  # a new heartbeat was seen at T0+60
    v = update_node_health(n2, None, v.health, T0 + 101, GRACE, STARTUP)
    assert v.new_conditions is not None


def test_node_that_never_reported_gets_the_startup_grace():
    n = node("n1", ready=None, created=T0)
    v = update_node_health(n, None, None, T0 + 50, GRACE, STARTUP)
    assert v.new_conditions is None
    v = update_node_health(n, None, v.health, T0 + 61, GRACE, STARTUP)
    ready = get_condition(v.new_conditions, "Ready")
    assert (
        ready["reason"] == "NodeStatusNeverUpdated"
        and ready["message"] == "Kubelet never posted node status."
    )


def test_taints_follow_conditions_and_come_off_when_ready():
    n = node("n1", taints=[taint("dedicated", "NoSchedule", "db")])
    unknown = [{"type": "Ready", "status": "Unknown"}]
    taints = desired_taints(n, unknown, T0)
    keys = {(t["key"], t["effect"]) for t in taints}
    assert keys == {
        ("dedicated", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    ne = next(t for t in taints if t["effect"] == "NoExecute")
    assert ne["timeAdded"] == format_time(T0)
    # Unchanged conditions keep the taints as they are (timeAdded included).
    n["spec"]["taints"] = taints
    assert desired_taints(n, unknown, T0 + 100) == taints
    # Not ready (the agent reports False): the taints swap to not-ready.
    keys = {(t["key"], t["effect"]) for t in desired_taints(n, [{"type": "Ready", "status": "False"}], T0)}
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys and (
        "node.kubernetes.io/unreachable",
        "NoExecute",
    ) not in keys
    # Back: only the user's taint stays.
    assert desired_taints(n, [{"type": "Ready", "status": "True"}], T0) == [
        taint("dedicated", "NoSchedule", "db")
    ]


def test_pressure_and_unschedulable_taints():
    n = node("n1", unschedulable=True)
    conds = [
        {"type": "Ready", "status": "True"},
        {"type": "MemoryPressure", "status": "True"},
        {"type": "DiskPressure", "status": "False"},
    ]
    keys = {(t["key"], t["effect"]) for t in desired_taints(n, conds, T0)}
    assert keys == {
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    }


def test_eviction_time_from_tolerations():
    added = T0 - 100
    taints = [taint("node.kubernetes.io/unreachable", "NoExecute", added=added), taint("x", "NoSchedule")]
    default = [
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        }
    ]
    assert eviction_time(default, taints, T0) == added + 300
    forever = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]
    assert eviction_time(forever, taints, T0) is None
    assert eviction_time([], taints, T0) == float("-inf")  # not tolerated: now
    # Without timeAdded the countdown starts when the controller first saw the taint.
    plain = [taint("node.kubernetes.io/unreachable", "NoExecute")]
    assert eviction_time(default, plain, T0) == T0 + 300
    # The shortest matching toleration per taint, earliest over taints.
    both = [*taints, taint("node.kubernetes.io/not-ready", "NoExecute", added=added)]
    tols = [
        *default,
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 5,
        },
    ]
    assert eviction_time(tols, both, T0) == added + 5
