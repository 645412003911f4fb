"""Feasibility filters: each answers one question about one node for one pod.

A filter is a small named function `(pod, node, snapshot) -> None | reason` (a tuple of
reasons when several apply, as for resources). The reason strings are kube-scheduler's own, so
the FailedScheduling summary reads the same as on Kubernetes. `Filter` wraps a check with its
plugin name and, for checks that need a look at the whole cluster first (pod affinity, topology
spread — Kubernetes' PreFilter), a `prepare` step that counts once per pod and returns the
per-node check. Filters that cannot fail for a pod are skipped before the node loop, so a plain
pod pays only for the few comparisons that concern it. `DEFAULT_FILTERS` is ordered as
kube-scheduler's default profile orders its filter plugins, cheapest questions first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.scheduler.snapshot import (
    DO_NOT_SCHEDULE,
    HONOR,
    NO_SCHEDULE,
    TAINT_UNSCHEDULABLE,
    NodeInfo,
    PodInfo,
    Snapshot,
    SpreadConstraint,
    Taint,
    tolerated,
)

Reasons = str | tuple[str, ...] | None
FilterFn = Callable[[PodInfo, NodeInfo, Snapshot], Reasons]
# (pod, nodes in walk order, snapshot, enough) -> (fitting nodes, failed node -> reasons, nodes looked at)
WalkFn = Callable[
    [PodInfo, Sequence[NodeInfo], Snapshot, int], tuple[list[NodeInfo], dict[str, tuple[str, ...]], int]
]

ERR_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_NODE_NAME = "node(s) didn't match the requested node name"
ERR_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
ERR_NODE_PORTS = "node(s) didn't have free ports for the requested pod ports"
ERR_TOO_MANY_PODS = "Too many pods"
ERR_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
ERR_SPREAD = "node(s) didn't match pod topology spread constraints"
ERR_SPREAD_MISSING_LABEL = ERR_SPREAD + " (missing required label)"

# Reasons that removing lower-priority pods could cure (kube's `Unschedulable`, as opposed to
# `UnschedulableAndUnresolvable`); they decide the "preemption:" half of the summary.
_RESOLVABLE = frozenset(
    {ERR_NODE_PORTS, ERR_TOO_MANY_PODS, ERR_EXISTING_ANTI_AFFINITY, ERR_ANTI_AFFINITY, ERR_SPREAD}
)


def insufficient(resource: str) -> str:
    return f"Insufficient {resource}"


def untolerated_taint(taint: Taint) -> str:
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


def preemption_might_help(reasons: tuple[str, ...]) -> bool:
    """Could evicting pods from the node make room? False for cordons, taints, selectors."""
    return all(r in _RESOLVABLE or r.startswith("Insufficient ") for r in reasons)


@dataclass(frozen=True)
class Filter:
    """A named filter. `check` runs per node; `applies` lets a pod skip it entirely; `prepare`
    (instead of `check`) looks at the whole cluster once and returns the per-node check.
    `walk`, where given, is the whole search with `check` alone (the same answer in one loop),
    which the framework uses when this is the only filter that applies to a pod."""

    name: str
    check: FilterFn | None = None
    applies: Callable[[PodInfo, Snapshot], bool] | None = None
    prepare: Callable[[PodInfo, Snapshot], FilterFn | None] | None = None
    walk: WalkFn | None = None

    def for_pod(self, pod: PodInfo, snapshot: Snapshot) -> FilterFn | None:
        if self.prepare is not None:
            return self.prepare(pod, snapshot)
        if self.applies is not None and not self.applies(pod, snapshot):
            return None
        return self.check


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------

_UNSCHEDULABLE_TAINT = Taint(TAINT_UNSCHEDULABLE, "", NO_SCHEDULE)


def node_unschedulable(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
    """A cordoned node (`spec.unschedulable`) takes only pods that tolerate the cordon taint."""
    if node.unschedulable and not tolerated(pod.tolerations, _UNSCHEDULABLE_TAINT):
        return ERR_UNSCHEDULABLE
    return None


def node_name(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
    """A pod that names its node fits only there."""
    if pod.node_name and pod.node_name != node.name:
        return ERR_NODE_NAME
    return None


def node_ready(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
    """A node that is not Ready repels pods the way its not-ready/unreachable taint would."""
    taint = node.readiness_taint
    if taint is not None and not tolerated(pod.tolerations, taint):
        return untolerated_taint(taint)
    return None


def taint_toleration(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
    """Every NoSchedule/NoExecute taint must be tolerated; the first one that is not is named."""
    for taint in node.taints:
        if not tolerated(pod.tolerations, taint):
            return untolerated_taint(taint)
    return None


def matches_node_selector(pod: PodInfo, node: NodeInfo) -> bool:
    """`nodeSelector` and required node affinity (terms ORed, expressions within a term ANDed)."""
    labels = node.labels
    for key, value in pod.node_selector.items():
        if labels.get(key) != value:
            return False
    terms = pod.required_node_terms
    return terms is None or any(term.matches(labels, node.name) for term in terms)


def node_affinity(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
    """`nodeSelector` and `requiredDuringSchedulingIgnoredDuringExecution` node affinity."""
    return None if matches_node_selector(pod, node) else ERR_NODE_AFFINITY


def node_ports(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
    """Host ports the pod wants must be free on the node (0.0.0.0 clashes with any address)."""
    for ip, protocol, port in pod.host_ports:
        if node.port_conflict(ip, protocol, port):
            return ERR_NODE_PORTS
    return None


def node_resources_fit(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
    """Requests must fit in allocatable minus what the node's pods already request."""
    want, alloc, used = pod.requests, node.allocatable, node.requested
    if (
        len(node.pods) < node.allowed_pods
        and want.cpu <= alloc.cpu - used.cpu
        and want.memory <= alloc.memory - used.memory
        and want.ephemeral <= alloc.ephemeral - used.ephemeral
        and not want.scalar
    ):
        return None  # the usual answer, without building a list of reasons
    reasons: list[str] = []
    if len(node.pods) + 1 > node.allowed_pods:
        reasons.append(ERR_TOO_MANY_PODS)
    if want.cpu and want.cpu > alloc.cpu - used.cpu:
        reasons.append(insufficient("cpu"))
    if want.memory and want.memory > alloc.memory - used.memory:
        reasons.append(insufficient("memory"))
    if want.ephemeral and want.ephemeral > alloc.ephemeral - used.ephemeral:
        reasons.append(insufficient("ephemeral-storage"))
    for name, amount in want.scalar.items():
        if amount and amount > alloc.scalar.get(name, 0) - used.scalar.get(name, 0):
            reasons.append(insufficient(name))
    return tuple(reasons) or None


def node_resources_fit_walk(
    pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot, enough: int
) -> tuple[list[NodeInfo], dict[str, tuple[str, ...]], int]:
    """`node_resources_fit` over nodes in order until `enough` fit, in one loop: the search
    every plain pod makes over hundreds of nodes."""
    want = pod.requests
    cpu, memory, ephemeral = want.cpu, want.memory, want.ephemeral
    simple = not want.scalar
    feasible: list[NodeInfo] = []
    failed: dict[str, tuple[str, ...]] = {}
    processed = 0
    for node in nodes:
        processed += 1
        alloc, used = node.allocatable, node.requested
        if (
            simple
            and len(node.pods) < node.allowed_pods
            and cpu <= alloc.cpu - used.cpu
            and memory <= alloc.memory - used.memory
            and ephemeral <= alloc.ephemeral - used.ephemeral
        ):
            reasons: Reasons = None
        else:
            reasons = node_resources_fit(pod, node, snapshot)
        if reasons:
            failed[node.name] = (reasons,) if isinstance(reasons, str) else reasons
        else:
            feasible.append(node)
            if len(feasible) >= enough:
                break
    return feasible, failed, processed


# ---------------------------------------------------------------------------------------------
# Checks that count across the cluster first
# ---------------------------------------------------------------------------------------------


def counts_toward_spread(pod: PodInfo, node: NodeInfo, constraint: SpreadConstraint) -> bool:
    """nodeAffinityPolicy / nodeTaintsPolicy: which nodes' pods count when measuring skew."""
    if constraint.node_affinity_policy == HONOR and not matches_node_selector(pod, node):
        return False
    if constraint.node_taints_policy == HONOR:
        return all(tolerated(pod.tolerations, t) for t in node.taints)
    return True


def count_matching_pods(pod: PodInfo, node: NodeInfo, constraint: SpreadConstraint) -> int:
    selector = constraint.selector
    return sum(
        1
        for other in node.pods.values()
        if other.namespace == pod.namespace and not other.terminating and selector.matches(other.labels)
    )


def prepare_topology_spread(pod: PodInfo, snapshot: Snapshot) -> FilterFn | None:
    """PodTopologySpread with `whenUnsatisfiable: DoNotSchedule`: count matching pods per
    topology domain once, then each node may hold at most `maxSkew` more than the emptiest."""
    constraints = [c for c in pod.spread_constraints if c.when_unsatisfiable == DO_NOT_SCHEDULE]
    if not constraints:
        return None
    counts: list[dict[str, int]] = [{} for _ in constraints]
    for node in snapshot.node_list:
        if not all(c.topology_key in node.labels for c in constraints):
            continue
        for i, c in enumerate(constraints):
            if not counts_toward_spread(pod, node, c):
                continue
            value = node.labels[c.topology_key]
            counts[i][value] = counts[i].get(value, 0) + count_matching_pods(pod, node, c)
    minimums = [
        min(domain.values()) if len(domain) >= c.min_domains and domain else 0
        for c, domain in zip(constraints, counts, strict=True)
    ]
    self_match = [1 if c.selector.matches(pod.labels) else 0 for c in constraints]

    def pod_topology_spread(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
        for i, c in enumerate(constraints):
            value = node.labels.get(c.topology_key)
            if value is None:
                return ERR_SPREAD_MISSING_LABEL
            if counts[i].get(value, 0) + self_match[i] - minimums[i] > c.max_skew:
                return ERR_SPREAD
        return None

    return pod_topology_spread


TopologyCounts = dict[tuple[str, str], int]


def _bump(counts: TopologyCounts, node: NodeInfo, key: str) -> None:
    value = node.labels.get(key)
    if value is not None:
        counts[(key, value)] = counts.get((key, value), 0) + 1


def prepare_inter_pod_affinity(pod: PodInfo, snapshot: Snapshot) -> FilterFn | None:
    """Required pod affinity and anti-affinity, both ways: the pod's own terms against the pods
    already placed, and placed pods' anti-affinity terms against the pod."""
    if not (pod.required_affinity or pod.required_anti_affinity or snapshot.pods_with_required_anti_affinity):
        return None
    ns_labels = snapshot.namespace_labels

    existing_anti: TopologyCounts = {}
    for other in snapshot.pods_with_required_anti_affinity.values():
        node = snapshot.get_node(other.node_name)
        if node is None:
            continue
        for term in other.required_anti_affinity:
            if term.matches(pod, ns_labels):
                _bump(existing_anti, node, term.topology_key)

    affinity: TopologyCounts = {}
    anti: TopologyCounts = {}
    if pod.required_affinity or pod.required_anti_affinity:
        for other, node in snapshot.pods():
            if node.obj is None:
                continue
            if pod.required_affinity and all(t.matches(other, ns_labels) for t in pod.required_affinity):
                for term in pod.required_affinity:
                    _bump(affinity, node, term.topology_key)
            for term in pod.required_anti_affinity:
                if term.matches(other, ns_labels):
                    _bump(anti, node, term.topology_key)
    # The first pod of a group that wants to be with itself would otherwise wait forever.
    first_of_group = not affinity and all(t.matches(pod, ns_labels) for t in pod.required_affinity)

    def inter_pod_affinity(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> Reasons:
        labels = node.labels
        for (key, value), count in existing_anti.items():
            if count and labels.get(key) == value:
                return ERR_EXISTING_ANTI_AFFINITY
        if pod.required_affinity:
            for term in pod.required_affinity:
                if term.topology_key not in labels:
                    return ERR_AFFINITY
            satisfied = all(
                affinity.get((t.topology_key, labels[t.topology_key]), 0) > 0 for t in pod.required_affinity
            )
            if not satisfied and not first_of_group:
                return ERR_AFFINITY
        for term in pod.required_anti_affinity:
            value = labels.get(term.topology_key)
            if value is not None and anti.get((term.topology_key, value), 0) > 0:
                return ERR_ANTI_AFFINITY
        return None

    return inter_pod_affinity


# ---------------------------------------------------------------------------------------------
# The default chain, in kube-scheduler's order
# ---------------------------------------------------------------------------------------------

DEFAULT_FILTERS: tuple[Filter, ...] = (
    Filter(
        "NodeUnschedulable", node_unschedulable, applies=lambda pod, snapshot: snapshot.cordoned_nodes > 0
    ),
    Filter("NodeName", node_name, applies=lambda pod, snapshot: bool(pod.node_name)),
    Filter("NodeReady", node_ready, applies=lambda pod, snapshot: snapshot.not_ready_nodes > 0),
    Filter("TaintToleration", taint_toleration, applies=lambda pod, snapshot: snapshot.tainted_nodes > 0),
    Filter(
        "NodeAffinity",
        node_affinity,
        applies=lambda pod, snapshot: bool(pod.node_selector) or pod.required_node_terms is not None,
    ),
    Filter("NodePorts", node_ports, applies=lambda pod, snapshot: bool(pod.host_ports)),
    Filter("NodeResourcesFit", node_resources_fit, walk=node_resources_fit_walk),
    Filter("PodTopologySpread", prepare=prepare_topology_spread),
    Filter("InterPodAffinity", prepare=prepare_inter_pod_affinity),
)
