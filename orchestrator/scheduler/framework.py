"""One scheduling decision: filter the nodes, score the ones that fit, pick the best.

`Framework.schedule(pod, snapshot)` is pure apart from the random tie-break (an injectable
`random.Random`) and a round-robin cursor, so every decision can be tested over a hand-built
snapshot. Like kube-scheduler it stops looking once it has found enough feasible nodes in a
large cluster (`percentage_of_nodes_to_score`; the default adapts to cluster size, 50% of 100
nodes down to 5% of 5 000+, never fewer than 100), starting each search where the last one
stopped so every node gets its turn. A pod that only the resource check can turn away is
filtered, and scored by the resource scores, in one loop over the nodes each (`Filter.walk`,
`Scorer.score_all`: the same answers without a call per node, which at 1 000 nodes was most of
a decision's cost). When no node fits it raises `FitError`, whose text is
kube-scheduler's summary: "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had
untolerated taint {…}. preemption: 0/3 nodes are available: …".
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from orchestrator.scheduler.filters import DEFAULT_FILTERS, Filter, FilterFn, preemption_might_help
from orchestrator.scheduler.scores import DEFAULT_SCORERS, Scorer
from orchestrator.scheduler.snapshot import NodeInfo, PodInfo, Snapshot

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE = 5

NO_NODES_AVAILABLE = "no nodes available to schedule pods"
PREEMPTION_NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_PREEMPTION_VICTIMS = "No preemption victims found for incoming pod"
NOT_ELIGIBLE_NEVER = "not eligible due to preemptionPolicy=Never"


def _histogram(reasons: Iterable[str]) -> str:
    """ "<count> <reason>" entries sorted as strings, joined, as kube-scheduler prints them."""
    return ", ".join(sorted(f"{count} {reason}" for reason, count in Counter(reasons).items()))


@dataclass(eq=False)
class FitError(Exception):
    """No node can take the pod. `str()` is the FailedScheduling message."""

    pod: str
    num_all_nodes: int
    node_reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)
    post_filter_msg: str = ""

    def __str__(self) -> str:
        if self.num_all_nodes == 0:
            return NO_NODES_AVAILABLE
        msg = f"0/{self.num_all_nodes} nodes are available:"
        histogram = _histogram(r for reasons in self.node_reasons.values() for r in reasons)
        if histogram:
            msg += f" {histogram}."
        if self.post_filter_msg:
            msg += f" {self.post_filter_msg}."
        return msg


def preemption_summary(pod: PodInfo, num_all_nodes: int, node_reasons: dict[str, tuple[str, ...]]) -> str:
    """The "preemption: …" half of the summary. grove does not preempt: it reports what
    kube-scheduler's DefaultPreemption reports when it finds no victims."""
    if pod.preemption_policy == "Never":
        return f"preemption: {NOT_ELIGIBLE_NEVER}"
    verdicts = (
        NO_PREEMPTION_VICTIMS if preemption_might_help(reasons) else PREEMPTION_NOT_HELPFUL
        for reasons in node_reasons.values()
    )
    return f"preemption: 0/{num_all_nodes} nodes are available: {_histogram(verdicts)}"


@dataclass
class ScheduleResult:
    node: str
    evaluated_nodes: int
    feasible_nodes: int


class Framework:
    """Filters then scorers, in order. One instance per scheduler; not thread-safe."""

    def __init__(
        self,
        filters: Sequence[Filter] = DEFAULT_FILTERS,
        scorers: Sequence[Scorer] = DEFAULT_SCORERS,
        rng: random.Random | None = None,
        percentage_of_nodes_to_score: int = 0,
    ) -> None:
        self.filters = tuple(filters)
        self.scorers = tuple(scorers)
        self.rng = rng or random.Random()
        self.percentage_of_nodes_to_score = percentage_of_nodes_to_score
        self._next_start = 0

    def num_feasible_nodes_to_find(self, num_all_nodes: int) -> int:
        """How many fitting nodes are enough to choose among (kube's numFeasibleNodesToFind)."""
        if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND or self.percentage_of_nodes_to_score >= 100:
            return num_all_nodes
        percentage = self.percentage_of_nodes_to_score
        if percentage <= 0:
            percentage = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE)
        return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)

    def checks_for(self, pod: PodInfo, snapshot: Snapshot) -> list[FilterFn]:
        """The per-node checks that can fail for this pod (the rest are skipped outright)."""
        return [check for _, check in self._applicable(pod, snapshot)]

    def _applicable(self, pod: PodInfo, snapshot: Snapshot) -> list[tuple[Filter, FilterFn]]:
        out = []
        for f in self.filters:
            check = f.for_pod(pod, snapshot)
            if check is not None:
                out.append((f, check))
        return out

    def find_feasible(
        self, pod: PodInfo, snapshot: Snapshot, want: int | None = None
    ) -> tuple[list[NodeInfo], dict[str, tuple[str, ...]]]:
        """Walk the nodes round-robin until `want` fit; returns the fits and why the others failed."""
        nodes = snapshot.node_list
        total = len(nodes)
        if total == 0:
            return [], {}
        if want is None:
            want = self.num_feasible_nodes_to_find(total)
        applicable = self._applicable(pod, snapshot)
        start = self._next_start % total
        order = nodes[start:] + nodes[:start] if start else nodes
        if (
            len(applicable) == 1
            and applicable[0][0].walk is not None
            and applicable[0][0].check is applicable[0][1]
        ):
            # The usual pod meets one check (resources), which walks the nodes in one loop.
            feasible, failed, processed = applicable[0][0].walk(pod, order, snapshot, want)  # type: ignore[misc]
        else:
            checks = [check for _, check in applicable]
            feasible = []
            failed = {}
            processed = 0
            for node in order:
                processed += 1
                for check in checks:
                    reasons = check(pod, node, snapshot)
                    if reasons:
                        failed[node.name] = (reasons,) if isinstance(reasons, str) else reasons
                        break
                else:
                    feasible.append(node)
                    if len(feasible) >= want:
                        break
        self._next_start = (start + processed) % total
        return feasible, failed

    def score(self, pod: PodInfo, nodes: Sequence[NodeInfo], snapshot: Snapshot) -> list[int]:
        """Weighted sum of every applicable scorer's normalized score, per node."""
        totals = [0] * len(nodes)
        for scorer in self.scorers:
            raw = scorer.raw_scores(pod, nodes, snapshot)
            if raw is None:
                continue
            values = scorer.normalize(raw) if scorer.normalize is not None else raw
            weight = scorer.weight
            if weight == 1:
                totals = [t + (v or 0) for t, v in zip(totals, values)]
            else:
                totals = [t + weight * (v or 0) for t, v in zip(totals, values)]
        return totals

    def schedule(self, pod: PodInfo, snapshot: Snapshot) -> ScheduleResult:
        """The node for `pod`, or FitError with every node's reasons."""
        total = len(snapshot.node_list)
        feasible, failed = self.find_feasible(pod, snapshot)
        if not feasible:
            post = preemption_summary(pod, total, failed) if total else ""
            raise FitError(pod.key, total, failed, post)
        evaluated = len(feasible) + len(failed)
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        totals = self.score(pod, feasible, snapshot)
        best = max(totals)
        winners = [i for i, t in enumerate(totals) if t == best]
        pick = winners[0] if len(winners) == 1 else winners[self.rng.randrange(len(winners))]
        return ScheduleResult(feasible[pick].name, evaluated, len(feasible))
