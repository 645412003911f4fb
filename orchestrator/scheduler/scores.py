"""Scores: each ranks the feasible nodes for a pod on one concern, 0 (worst) to 100 (best).

A scorer is a small named function `(pod, node, snapshot) -> int` plus, where Kubernetes has
one, a normalization over all the feasible nodes' raw scores (e.g. "fewest matching pods gets
100"). Scorers that compare against the rest of the cluster (spreading, pod affinity) count
once per pod in `prepare`, which returns the per-node function, or None when the concern
cannot tell nodes apart for this pod, so it costs nothing. The framework adds the normalized
scores times each scorer's weight; weights and formulas follow kube-scheduler's default
profile (NodeResourcesFit LeastAllocated 1, NodeResourcesBalancedAllocation 1,
TaintToleration 3, NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.scheduler.filters import count_matching_pods, counts_toward_spread
from orchestrator.scheduler.snapshot import (
    LABEL_HOSTNAME,
    LABEL_ZONE,
    PREFER_NO_SCHEDULE,
    SCHEDULE_ANYWAY,
    NodeInfo,
    PodInfo,
    Snapshot,
    SpreadConstraint,
)

MAX_NODE_SCORE = 100

ScoreFn = Callable[[PodInfo, NodeInfo, Snapshot], int | None]
ScoreAllFn = Callable[[PodInfo, Sequence[NodeInfo], Snapshot], list[int]]
Normalize = Callable[[list[int | None]], list[int]]


@dataclass(frozen=True)
class Scorer:
    """A named score with its weight. `score` runs per node (skipped when `applies` says the
    pod cannot be told apart by it); `prepare` instead counts once and returns the per-node
    function; `normalize` maps raw scores of all feasible nodes onto 0..100. `score_all`, where
    given, is `score` over a whole list of nodes in one loop (the same numbers, without a
    function call per node: the scores every pod runs on hundreds of nodes have one)."""

    name: str
    weight: int
    score: ScoreFn | None = None
    applies: Callable[[PodInfo, Snapshot], bool] | None = None
    prepare: Callable[[PodInfo, Sequence[NodeInfo], Snapshot], ScoreFn | None] | None = None
    normalize: Normalize | None = None
    score_all: ScoreAllFn | None = None

    def for_pod(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> ScoreFn | None:
        if self.prepare is not None:
            return self.prepare(pod, nodes, snapshot)
        if self.applies is not None and not self.applies(pod, snapshot):
            return None
        return self.score

    def raw_scores(
        self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot
    ) -> list[int | None] | None:
        """Each node's score before normalization; None when the scorer does not apply."""
        if self.score_all is not None and self.prepare is None:
            if self.applies is not None and not self.applies(pod, snapshot):
                return None
            return self.score_all(pod, nodes, snapshot)  # type: ignore[return-value]
        fn = self.for_pod(pod, nodes, snapshot)
        if fn is None:
            return None
        return [fn(pod, node, snapshot) for node in nodes]


# ---------------------------------------------------------------------------------------------
# Normalizations
# ---------------------------------------------------------------------------------------------


def normalize_by_max(scores: list[int | None], reverse: bool = False) -> list[int]:
    """Kubernetes' DefaultNormalizeScore: scale so the highest raw score gets 100 (or 0)."""
    values = [s or 0 for s in scores]
    top = max(values, default=0)
    if top == 0:
        return [MAX_NODE_SCORE if reverse else 0 for _ in values]
    out = [MAX_NODE_SCORE * v // top for v in values]
    return [MAX_NODE_SCORE - v for v in out] if reverse else out


def normalize_reverse(scores: list[int | None]) -> list[int]:
    return normalize_by_max(scores, reverse=True)


def normalize_min_max(scores: list[int | None]) -> list[int]:
    """Lowest raw score 0, highest 100, linear between (InterPodAffinity's normalization)."""
    values = [s or 0 for s in scores]
    low, high = min(values, default=0), max(values, default=0)
    if high == low:
        return [0 for _ in values]
    return [int(MAX_NODE_SCORE * (v - low) / (high - low)) for v in values]


def normalize_fewest(scores: list[int | None]) -> list[int]:
    """PodTopologySpread: the node whose domain holds the fewest matching pods gets 100;
    nodes that lack a required topology label (None) get 0."""
    present = [s for s in scores if s is not None]
    if not present:
        return [0 for _ in scores]
    low, high = min(present), max(present)
    if high == 0:
        return [0 if s is None else MAX_NODE_SCORE for s in scores]
    return [0 if s is None else MAX_NODE_SCORE * (high + low - s) // high for s in scores]


# ---------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------


def _least_requested(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def least_allocated(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
    """NodeResourcesFit (LeastAllocated): prefer nodes with the most cpu and memory left after
    placing the pod, counting request-less containers as 100m / 200Mi."""
    cpu, memory = node.allocatable.cpu, node.allocatable.memory
    if cpu and memory:
        return (
            _least_requested(node.non_zero_cpu + pod.non_zero_cpu, cpu)
            + _least_requested(node.non_zero_memory + pod.non_zero_memory, memory)
        ) // 2
    if cpu:
        return _least_requested(node.non_zero_cpu + pod.non_zero_cpu, cpu)
    if memory:
        return _least_requested(node.non_zero_memory + pod.non_zero_memory, memory)
    return 0


def balanced_allocation(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
    """NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory would be used in
    equal proportion, so neither is stranded (100 × (1 − standard deviation of the fractions))."""
    cpu, memory = node.allocatable.cpu, node.allocatable.memory
    if not (cpu and memory):
        return MAX_NODE_SCORE  # one resource (or none) has no spread
    cpu_fraction = (node.requested.cpu + pod.requests.cpu) / cpu
    memory_fraction = (node.requested.memory + pod.requests.memory) / memory
    cpu_fraction = min(cpu_fraction, 1.0)
    memory_fraction = min(memory_fraction, 1.0)
    return int((1 - abs(cpu_fraction - memory_fraction) / 2) * MAX_NODE_SCORE)


def least_allocated_all(pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> list[int]:
    """`least_allocated` of every node, in one loop."""
    pod_cpu, pod_memory = pod.non_zero_cpu, pod.non_zero_memory
    out: list[int] = []
    append = out.append
    for node in nodes:
        alloc = node.allocatable
        cpu, memory = alloc.cpu, alloc.memory
        if cpu and memory:
            want_cpu = node.non_zero_cpu + pod_cpu
            want_memory = node.non_zero_memory + pod_memory
            append(
                (
                    ((cpu - want_cpu) * MAX_NODE_SCORE // cpu if want_cpu <= cpu else 0)
                    + ((memory - want_memory) * MAX_NODE_SCORE // memory if want_memory <= memory else 0)
                )
                // 2
            )
        else:
            append(least_allocated(pod, node, snapshot))
    return out


def balanced_allocation_all(pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> list[int]:
    """`balanced_allocation` of every node, in one loop."""
    pod_cpu, pod_memory = pod.requests.cpu, pod.requests.memory
    out: list[int] = []
    append = out.append
    for node in nodes:
        alloc = node.allocatable
        cpu, memory = alloc.cpu, alloc.memory
        if cpu and memory:
            used = node.requested
            cpu_fraction = (used.cpu + pod_cpu) / cpu
            memory_fraction = (used.memory + pod_memory) / memory
            if cpu_fraction > 1.0:
                cpu_fraction = 1.0
            if memory_fraction > 1.0:
                memory_fraction = 1.0
            append(int((1 - abs(cpu_fraction - memory_fraction) / 2) * MAX_NODE_SCORE))
        else:
            append(MAX_NODE_SCORE)
    return out


# ---------------------------------------------------------------------------------------------
# Taints and node affinity
# ---------------------------------------------------------------------------------------------


def taint_toleration(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
    """TaintToleration: the number of PreferNoSchedule taints the pod does not tolerate
    (fewer is better; normalized in reverse)."""
    tolerations = [t for t in pod.tolerations if t.effect in ("", PREFER_NO_SCHEDULE)]
    return sum(1 for taint in node.prefer_taints if not any(t.tolerates(taint) for t in tolerations))


def node_affinity(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
    """NodeAffinity: the sum of weights of the preferred terms the node matches."""
    return sum(weight for weight, term in pod.preferred_node_terms if term.matches(node.labels, node.name))


# ---------------------------------------------------------------------------------------------
# Spreading
# ---------------------------------------------------------------------------------------------

# Kubernetes' system-default spreading for pods that set no constraints of their own:
# (topologyKey, maxSkew), ScheduleAnyway, over the pods of the same controller.
DEFAULT_SPREAD = ((LABEL_HOSTNAME, 3), (LABEL_ZONE, 5))


def _round(x: float) -> int:
    """Go's math.Round for the non-negative scores here (Python's round() rounds half to even)."""
    return int(x + 0.5)


def prepare_topology_spread(pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> ScoreFn | None:
    """PodTopologySpread scoring: prefer nodes whose topology domains hold fewer matching pods.

    A pod's own ScheduleAnyway constraints count pods its selector matches. A pod without
    constraints that belongs to a controller (ReplicaSet, DaemonSet, …) is spread like
    Kubernetes' defaults (hostname maxSkew 3, zone maxSkew 5) over its controller's pods —
    grove identifies those by the controller ownerReference rather than by selector lookups.
    """
    if pod.spread_constraints:
        user = [c for c in pod.spread_constraints if c.when_unsatisfiable == SCHEDULE_ANYWAY]
        if not user:
            return None
        specs = [(c.topology_key, c.max_skew) for c in user]
        counters = [_constraint_counter(pod, c) for c in user]
        keys = [key for key, _ in specs]
        ignored = {n.name for n in nodes if any(k not in n.labels for k in keys)}
        return _spread_score(specs, counters, nodes, ignored, lambda: snapshot.node_list)

    per_node = snapshot.owner_pods_per_node.get(pod.owner_uid or "")
    if not per_node:
        return None  # no sibling placed yet: spreading cannot tell the nodes apart
    if not any(LABEL_ZONE in n.labels for n in nodes):
        # Only the hostname default applies; the common case, so score it directly.
        weight = math.log(len(nodes) + 2)
        skew = DEFAULT_SPREAD[0][1] - 1

        def pod_topology_spread(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int | None:
            if LABEL_HOSTNAME not in node.labels:
                return 0
            return int(per_node.get(node.name, 0) * weight + skew + 0.5)  # _round, inlined

        return pod_topology_spread

    def owner_pods(node: NodeInfo) -> int:
        return per_node.get(node.name, 0)

    def owner_nodes() -> list[NodeInfo]:
        return [n for n in map(snapshot.get_node, per_node) if n is not None]

    return _spread_score(list(DEFAULT_SPREAD), [owner_pods] * len(DEFAULT_SPREAD), nodes, set(), owner_nodes)


def _spread_score(
    specs: list[tuple[str, int]],
    counters: list[Callable[[NodeInfo], int]],
    nodes: Sequence[NodeInfo],
    ignored: set[str],
    counted_nodes: Callable[[], Sequence[NodeInfo]],
) -> ScoreFn:
    """Per constraint: weight log(#domains + 2); a node scores Σ count·weight + (maxSkew − 1)."""
    keys = [key for key, _ in specs]
    # Domains present among the feasible nodes; per-host counts are taken at score time.
    domains: list[dict[str, int]] = [{} for _ in specs]
    for node in nodes:
        if node.name in ignored:
            continue
        for i, key in enumerate(keys):
            if key != LABEL_HOSTNAME and key in node.labels:
                domains[i].setdefault(node.labels[key], 0)
    weights = [
        math.log((len(nodes) - len(ignored) if key == LABEL_HOSTNAME else len(domains[i])) + 2)
        for i, key in enumerate(keys)
    ]
    if any(domains):
        counted = counted_nodes()
        for i, key in enumerate(keys):
            if not domains[i]:
                continue
            for node in counted:
                value = node.labels.get(key)
                if value in domains[i]:
                    domains[i][value] += counters[i](node)

    def pod_topology_spread(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int | None:
        if node.name in ignored:
            return None
        score = 0.0
        labels = node.labels
        for i, (key, skew) in enumerate(specs):
            value = labels.get(key)
            if value is None:
                continue
            count = counters[i](node) if key == LABEL_HOSTNAME else domains[i].get(value, 0)
            score += count * weights[i] + (skew - 1)
        return _round(score)

    return pod_topology_spread


def _constraint_counter(pod: PodInfo, constraint: SpreadConstraint) -> Callable[[NodeInfo], int]:
    def count(node: NodeInfo) -> int:
        if not counts_toward_spread(pod, node, constraint):
            return 0
        return count_matching_pods(pod, node, constraint)

    return count


# ---------------------------------------------------------------------------------------------
# Pod affinity
# ---------------------------------------------------------------------------------------------

HARD_POD_AFFINITY_WEIGHT = 1


def prepare_inter_pod_affinity(pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> ScoreFn | None:
    """InterPodAffinity scoring: + weight per topology domain holding pods the pod prefers to be
    near, − weight for pods it prefers to avoid, and the same for placed pods' terms that
    name this pod (their required affinity counting with weight 1)."""
    own_terms = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
    if not own_terms and not snapshot.pods_with_affinity:
        return None
    ns_labels = snapshot.namespace_labels
    scores: dict[tuple[str, str], int] = {}

    def add(node: NodeInfo, key: str, weight: int) -> None:
        value = node.labels.get(key)
        if value is not None and weight:
            scores[(key, value)] = scores.get((key, value), 0) + weight

    if own_terms:
        placed = ((p, n) for p, n in snapshot.pods() if n.obj is not None)
    else:
        placed = (
            (p, n)
            for p, n in ((p, snapshot.get_node(p.node_name)) for p in snapshot.pods_with_affinity.values())
            if n is not None
        )
    for other, node in placed:
        for term in pod.preferred_affinity:
            if term.matches(other, ns_labels):
                add(node, term.topology_key, term.weight)
        for term in pod.preferred_anti_affinity:
            if term.matches(other, ns_labels):
                add(node, term.topology_key, -term.weight)
        for term in other.required_affinity:
            if term.matches(pod, ns_labels):
                add(node, term.topology_key, HARD_POD_AFFINITY_WEIGHT)
        for term in other.preferred_affinity:
            if term.matches(pod, ns_labels):
                add(node, term.topology_key, term.weight)
        for term in other.preferred_anti_affinity:
            if term.matches(pod, ns_labels):
                add(node, term.topology_key, -term.weight)
    if not scores:
        return None
    keys = sorted({key for key, _ in scores})

    def inter_pod_affinity(pod: PodInfo, node: NodeInfo, snapshot: Snapshot) -> int:
        labels = node.labels
        return sum(scores.get((key, labels[key]), 0) for key in keys if key in labels)

    return inter_pod_affinity


DEFAULT_SCORERS: tuple[Scorer, ...] = (
    Scorer(
        "TaintToleration",
        3,
        taint_toleration,
        applies=lambda pod, snapshot: snapshot.prefer_no_schedule_nodes > 0,
        normalize=normalize_reverse,
    ),
    Scorer(
        "NodeAffinity",
        2,
        node_affinity,
        applies=lambda pod, snapshot: bool(pod.preferred_node_terms),
        normalize=normalize_by_max,
    ),
    Scorer("NodeResourcesFit", 1, least_allocated, score_all=least_allocated_all),
    Scorer("PodTopologySpread", 2, prepare=prepare_topology_spread, normalize=normalize_fewest),
    Scorer("InterPodAffinity", 2, prepare=prepare_inter_pod_affinity, normalize=normalize_min_max),
    Scorer("NodeResourcesBalancedAllocation", 1, balanced_allocation, score_all=balanced_allocation_all),
)
