"""The DaemonSet controller's decisions over snapshots: eligible nodes (selectors, affinity,
taints incl. the node controller's), pods pinned by node affinity, one pod per node, rolling
updates within maxUnavailable / maxSurge, status counts."""

from __future__ import annotations

import copy

from orchestrator.controllers.daemonset import (
    REVISION_HASH_LABEL,
    calculate_status,
    daemonset_hash,
    desired_counts,
    manage,
    node_should_run,
    nodes_to_daemon_pods,
    pin_to_node,
    pod_template,
    rolling_update,
)
from orchestrator.controllers.testing import T0, node, pod, taint, template, uid
from orchestrator.controllers.util import format_time, target_node_of


def daemonset(name="agent", *, tmpl=None, max_unavailable=1, max_surge=0, min_ready=0, generation=1):
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default", "uid": uid(), "generation": generation,
                     "creationTimestamp": format_time(T0 - 9999)},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": tmpl or template(labels),
            "updateStrategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": max_surge}},
            "minReadySeconds": min_ready,
        },
        "status": {},
    }  # fmt: skip


def daemon_pod(ds, node_name, *, current=True, bound=True, **kw):
    h = daemonset_hash(ds) if current else "oldhash"
    p = pod(
        owner=ds,
        labels={"app": ds["metadata"]["name"], REVISION_HASH_LABEL: h},
        node=node_name if bound else None,
        **kw,
    )
    p["spec"]["affinity"] = pin_to_node(None, node_name)
    return p


def names(pods):
    return sorted(p["metadata"]["name"] for p in pods)


# --- eligibility -------------------------------------------------------------------------------


def test_node_selector_and_affinity_decide_eligibility():
    ds = daemonset(tmpl=template({"app": "agent"}, nodeSelector={"disk": "ssd"}))
    assert node_should_run(ds, node("a", labels={"disk": "ssd"})) == (True, True)
    assert node_should_run(ds, node("b")) == (False, False)
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1", "z2"]}]}]}}}  # fmt: skip
    ds = daemonset(tmpl=template({"app": "agent"}, affinity=aff))
    assert node_should_run(ds, node("a", labels={"zone": "z2"}))[0]
    assert not node_should_run(ds, node("b", labels={"zone": "z3"}))[0]


def test_taints_noschedule_blocks_placement_but_keeps_running_pods():
    ds = daemonset()
    assert node_should_run(ds, node("a", taints=[taint("dedicated", "NoSchedule", "db")])) == (False, True)
    assert node_should_run(ds, node("a", taints=[taint("dedicated", "NoExecute", "db")])) == (False, False)
    tol = [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]
    ds_tol = daemonset(tmpl=template({"app": "agent"}, tolerations=tol))
    assert node_should_run(ds_tol, node("a", taints=[taint("dedicated", "NoSchedule", "db")])) == (True, True)


def test_daemon_pods_tolerate_the_node_controllers_taints():
    ds = daemonset()
    unreachable = node("a", taints=[taint("node.kubernetes.io/unreachable", "NoExecute"),
                                    taint("node.kubernetes.io/unreachable", "NoSchedule")])  # fmt: skip
    # The NoExecute taint is tolerated (the pod stays), the NoSchedule one is not (no new pod).
    assert node_should_run(ds, unreachable) == (False, True)
    cordoned = node("b", unschedulable=True, taints=[taint("node.kubernetes.io/unschedulable", "NoSchedule")])
    assert node_should_run(ds, cordoned) == (True, True)
    tols = pod_template(ds, "h")["spec"]["tolerations"]
    keys = {(t["key"], t["effect"]) for t in tols}
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys
    assert ("node.kubernetes.io/unreachable", "NoExecute") in keys
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys


def test_pods_are_pinned_with_matchfields_affinity_keeping_preferred_terms():
    preferred = [{"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]
    aff = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": preferred,
                            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]}}}  # fmt: skip
    pinned = pin_to_node(aff, "node-7")
    terms = pinned["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-7"]}]}]
    assert pinned["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == preferred
    unbound = {"spec": {"affinity": pinned}, "metadata": {}}
    assert target_node_of(unbound) == "node-7"


# --- manage -------------------------------------------------------------------------------------


def test_creates_on_new_nodes_and_deletes_where_not_wanted():
    ds = daemonset(tmpl=template({"app": "agent"}, nodeSelector={"role": "worker"}))
    nodes = [node("a", labels={"role": "worker"}), node("b", labels={"role": "worker"}), node("c")]
    pa = daemon_pod(ds, "a")
    pc = daemon_pod(ds, "c")  # node c lost its label
    plan = manage(ds, nodes, nodes_to_daemon_pods([pa, pc]), daemonset_hash(ds), T0)
    assert plan.create_on == ["b"]
    assert names(plan.delete) == names([pc])


def test_duplicates_keep_the_oldest_and_failed_pods_are_replaced():
    ds = daemonset()
    nodes = [node("a"), node("b")]
    old = daemon_pod(ds, "a", created=T0 - 500)
    dup = daemon_pod(ds, "a", created=T0 - 5)
    failed = daemon_pod(ds, "b", phase="Failed", ready=False)
    plan = manage(ds, nodes, nodes_to_daemon_pods([old, dup, failed]), daemonset_hash(ds), T0)
    assert names(plan.delete) == names([dup, failed])
    assert plan.failed_nodes == ["b"]
    assert any(e[1] == "FailedDaemonPod" for e in plan.events)
    assert plan.create_on == []  # the failed one is replaced once it is gone


def test_unscheduled_pods_for_vanished_nodes_are_deleted():
    ds = daemonset()
    ghost = daemon_pod(ds, "gone", bound=False)
    plan = manage(ds, [node("a")], nodes_to_daemon_pods([ghost]), daemonset_hash(ds), T0)
    assert plan.create_on == ["a"] and names(plan.delete) == names([ghost])


def test_terminating_pod_blocks_a_new_one_until_gone():
    ds = daemonset()
    leaving = daemon_pod(ds, "a", deleting=True)
    plan = manage(ds, [node("a")], nodes_to_daemon_pods([leaving]), daemonset_hash(ds), T0)
    assert plan.create_on == [] and plan.delete == []


# --- rolling update ------------------------------------------------------------------------------


def test_rolling_update_replaces_at_most_max_unavailable():
    ds = daemonset(max_unavailable=2)
    nodes = [node(f"n{i}") for i in range(5)]
    pods = [daemon_pod(ds, f"n{i}", current=False) for i in range(5)]
    plan = rolling_update(ds, nodes, nodes_to_daemon_pods(pods), daemonset_hash(ds), T0)
    assert len(plan.delete) == 2 and plan.create_on == []
    # Two nodes already down (new pods not yet available): nothing more goes.
    by_node = nodes_to_daemon_pods(
        pods[2:] + [daemon_pod(ds, "n0", ready=False), daemon_pod(ds, "n1", ready=False)]
    )
    plan = rolling_update(ds, nodes, by_node, daemonset_hash(ds), T0)
    assert plan.delete == []


def test_unavailable_old_pods_are_replaced_regardless_of_budget():
    ds = daemonset(max_unavailable=1)
    nodes = [node("a"), node("b"), node("c")]
    broken = daemon_pod(ds, "a", current=False, ready=False)
    fine = [daemon_pod(ds, n, current=False) for n in ("b", "c")]
    plan = rolling_update(ds, nodes, nodes_to_daemon_pods([broken, *fine]), daemonset_hash(ds), T0)
    assert names(plan.delete) == names([broken])  # it counted as the unavailable one


def test_percent_max_unavailable_rounds_up():
    ds = daemonset(max_unavailable="10%")
    nodes = [node(f"n{i}") for i in range(12)]
    surge, unavailable, desired = desired_counts(ds, nodes)
    assert (surge, unavailable, desired) == (0, 2, 12)


def test_surge_starts_new_pods_before_removing_old_ones():
    ds = daemonset(max_unavailable=0, max_surge=1)
    nodes = [node("a"), node("b")]
    olds = [daemon_pod(ds, n, current=False) for n in ("a", "b")]
    plan = rolling_update(ds, nodes, nodes_to_daemon_pods(olds), daemonset_hash(ds), T0)
    assert plan.delete == [] and plan.create_on == ["a"]
    # The new pod on a is available: the old one there goes; manage keeps both meanwhile.
    new_a = daemon_pod(ds, "a", created=T0 - 1)
    by_node = nodes_to_daemon_pods([*olds, new_a])
    plan = rolling_update(ds, nodes, by_node, daemonset_hash(ds), T0)
    assert names(plan.delete) == names([olds[0]])


# --- status --------------------------------------------------------------------------------------


def test_status_counts():
    ds = daemonset(min_ready=30, tmpl=template({"app": "agent"}, nodeSelector={"role": "w"}))
    nodes = [node(n, labels={"role": "w"}) for n in ("a", "b", "c")] + [node("x")]
    pods = [
        daemon_pod(ds, "a", ready_since=T0 - 100),  # ready, available, updated
        daemon_pod(ds, "b", current=False, ready_since=T0 - 5),  # ready, not available, old
        daemon_pod(ds, "x"),  # misscheduled
    ]
    st = calculate_status(ds, nodes, nodes_to_daemon_pods(pods), daemonset_hash(ds), T0, 1)
    assert st == {
        "currentNumberScheduled": 2,
        "numberMisscheduled": 1,
        "desiredNumberScheduled": 3,
        "numberReady": 2,
        "observedGeneration": 1,
        "updatedNumberScheduled": 1,
        "numberAvailable": 1,
        "numberUnavailable": 2,
    }


def test_hash_follows_the_template():
    ds = daemonset()
    other = copy.deepcopy(ds)
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "v2"
    assert daemonset_hash(ds) != daemonset_hash(other)
    assert pod_template(ds, daemonset_hash(ds))["metadata"]["labels"][REVISION_HASH_LABEL] == daemonset_hash(
        ds
    )
