"""Node lifecycle: notice nodes that stopped reporting, taint them, evict what they ran.

`NodeLifecycleController.sync(node)` (every node, every --node-monitor-period) does what
kube's node lifecycle controller does in monitorNodeHealth:

- health: a node is alive while its kubelet — here the node agent — renews its Lease in
  `kube-node-lease` or posts a new Ready heartbeat. Both are judged on this controller's own
  clock (when it last *saw* a change), so node and controller clocks need not agree. After
  --node-monitor-grace-period (40 s) without either (--node-startup-grace-period, 60 s, for a
  node that never reported), Ready, MemoryPressure, DiskPressure and PIDPressure become Unknown
  ("Kubelet stopped posting node status."), the node gets a NodeNotReady event and its pods are
  marked not ready, so Endpoints drop them;
- taints: the node's conditions decide the taints the controller owns — Ready False/Unknown
  give `node.kubernetes.io/not-ready` / `unreachable` as NoSchedule *and* NoExecute (with
  timeAdded), pressure conditions and spec.unschedulable give their NoSchedule taints — and a
  node that reports Ready again loses them.

`TaintEvictionController.sync(pod)` is kube's taint manager: a pod on a node with NoExecute
taints is deleted at once if it does not tolerate one of them, or once the shortest
tolerationSeconds of its matching tolerations has passed since the taint was added (300 s by
default, from the API server's DefaultTolerationSeconds), so its controller replaces it
elsewhere. Pods that tolerate the taint forever (daemon pods) stay.

The decisions — `update_node_health`, `desired_taints`, `eviction_time` — are pure.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.apiclient import LEASES, NODES, PODS, ApiError, NotFound, Obj
from orchestrator.watchers import index_by_node

from .base import BY_NODE, BaseController, ControllerContext
from .util import (
    NO_EXECUTE,
    NO_SCHEDULE,
    TAINT_DISK_PRESSURE,
    TAINT_MEMORY_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
    TAINT_NOT_READY,
    TAINT_PID_PRESSURE,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    being_deleted,
    format_time,
    get_condition,
    is_pod_ready,
    key_of,
    meta,
    name_of,
    namespace_of,
    node_taints,
    parse_time,
    spec,
    status,
    toleration_tolerates,
)

log = logging.getLogger(__name__)

COMPONENT = "node-controller"
EVICTION_COMPONENT = "taint-eviction-controller"
NODE_LEASE_NAMESPACE = "kube-node-lease"
UNKNOWN_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

# Node condition (type, status) -> the NoSchedule taint it means.
CONDITION_TAINTS: dict[tuple[str, str], str] = {
    ("Ready", "False"): TAINT_NOT_READY,
    ("Ready", "Unknown"): TAINT_UNREACHABLE,
    ("MemoryPressure", "True"): TAINT_MEMORY_PRESSURE,
    ("DiskPressure", "True"): TAINT_DISK_PRESSURE,
    ("NetworkUnavailable", "True"): TAINT_NETWORK_UNAVAILABLE,
    ("PIDPressure", "True"): TAINT_PID_PRESSURE,
}
NO_SCHEDULE_KEYS = frozenset([*CONDITION_TAINTS.values(), TAINT_UNSCHEDULABLE])
NO_EXECUTE_KEYS = frozenset([TAINT_NOT_READY, TAINT_UNREACHABLE])


# --- health ------------------------------------------------------------------------------------


@dataclass
class NodeHealth:
    """What the controller remembers of a node between passes (kube's nodeHealthData)."""

    probe_timestamp: float
    ready_transition_timestamp: float
    ready: Mapping[str, Any] | None  # the Ready condition last seen
    lease_renew: float | None = None


@dataclass
class HealthVerdict:
    health: NodeHealth
    observed_ready: str  # Ready status before this pass
    current_ready: str  # Ready status after it
    new_conditions: list[Obj] | None  # conditions to write (None: leave the node alone)


def update_node_health(
    node: Mapping[str, Any],
    lease: Mapping[str, Any] | None,
    saved: NodeHealth | None,
    now: float,
    grace: float,
    startup_grace: float,
) -> HealthVerdict:
    """tryUpdateNodeHealth: refresh the probe time from a new heartbeat or lease renewal and,
    when nothing was heard for the grace period, mark the node's conditions Unknown."""
    conditions = [dict(c) for c in status(node).get("conditions") or () if isinstance(c, Mapping)]
    current = get_condition(conditions, "Ready")
    created = parse_time(meta(node).get("creationTimestamp")) or now
    if current is None:
        observed = "Unknown"
        period = startup_grace
        health = saved or NodeHealth(created, created, None)
    else:
        observed = str(current.get("status") or "Unknown")
        period = grace
        health = copy.copy(saved) if saved is not None else None
        if health is None or health.ready is None:
            health = NodeHealth(now, now, dict(current), health.lease_renew if health else None)
        elif health.ready.get("lastHeartbeatTime") != current.get("lastHeartbeatTime"):
            transition = (
                now
                if health.ready.get("lastTransitionTime") != current.get("lastTransitionTime")
                else health.ready_transition_timestamp
            )
            health = NodeHealth(now, transition, dict(current), health.lease_renew)
    renew = parse_time((lease or {}).get("spec", {}).get("renewTime")) if lease else None
    if renew is not None and (health.lease_renew is None or health.lease_renew < renew):
        health.lease_renew = renew
        health.probe_timestamp = now
    if now <= health.probe_timestamp + period:
        return HealthVerdict(health, observed, observed, None)
    stamp = format_time(now)
    changed = False
    for ctype in UNKNOWN_CONDITIONS:
        cond = get_condition(conditions, ctype)
        if cond is None:
            conditions.append(
                {
                    "type": ctype,
                    "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": meta(node).get("creationTimestamp"),
                    "lastTransitionTime": stamp,
                }
            )
            changed = True
        elif cond.get("status") != "Unknown":
            cond.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=stamp,
            )
            changed = True
    if not changed:
        return HealthVerdict(health, observed, "Unknown", None)
    health.ready_transition_timestamp = now
    health.ready = get_condition(conditions, "Ready")
    return HealthVerdict(health, observed, "Unknown", conditions)


# --- taints ------------------------------------------------------------------------------------


def desired_taints(node: Mapping[str, Any], conditions: Sequence[Mapping[str, Any]], now: float) -> list[Obj]:
    """The node's taints with the controller-owned ones made to match its conditions (kept
    as they are, timeAdded included, when already right)."""
    want_ns: set[str] = set()
    for cond in conditions:
        key = CONDITION_TAINTS.get((str(cond.get("type")), str(cond.get("status"))))
        if key:
            want_ns.add(key)
    if spec(node).get("unschedulable"):
        want_ns.add(TAINT_UNSCHEDULABLE)
    ready = get_condition(conditions, "Ready")
    want_ne: set[str] = set()
    if ready is not None and ready.get("status") == "False":
        want_ne.add(TAINT_NOT_READY)
    elif ready is not None and ready.get("status") == "Unknown":
        want_ne.add(TAINT_UNREACHABLE)
    out: list[Obj] = []
    have_ns: set[str] = set()
    have_ne: set[str] = set()
    for t in node_taints(node):
        key, effect = t.get("key"), t.get("effect")
        if effect == NO_SCHEDULE and key in NO_SCHEDULE_KEYS:
            if key not in want_ns or key in have_ns:
                continue
            have_ns.add(str(key))
        elif effect == NO_EXECUTE and key in NO_EXECUTE_KEYS:
            if key not in want_ne or key in have_ne:
                continue
            have_ne.add(str(key))
        out.append(dict(t))
    for key in sorted(want_ns - have_ns):
        out.append({"key": key, "effect": NO_SCHEDULE})
    for key in sorted(want_ne - have_ne):
        out.append({"key": key, "effect": NO_EXECUTE, "timeAdded": format_time(now)})
    return out


def taints_patch(node: Mapping[str, Any], taints: list[Obj]) -> list[Obj]:
    """A JSON patch setting spec.taints that fails if someone changed them since we read them."""
    current = spec(node).get("taints")
    if current is None:
        return [{"op": "add", "path": "/spec/taints", "value": taints}]
    return [
        {"op": "test", "path": "/spec/taints", "value": current},
        {"op": "replace", "path": "/spec/taints", "value": taints},
    ]


# --- eviction ----------------------------------------------------------------------------------


def eviction_time(
    tolerations: Sequence[Mapping[str, Any]], taints: Sequence[Mapping[str, Any]], first_seen: float
) -> float | None:
    """When a pod must leave a node with these taints: the earliest, over the node's NoExecute
    taints, of the taint's timeAdded (or `first_seen`, when the controller first saw it) plus the
    tolerationSeconds of the first toleration matching it. -inf (at once) when a taint is not
    tolerated at all; None when every taint is tolerated forever."""
    deadline: float | None = None
    for taint in taints:
        if taint.get("effect") != NO_EXECUTE:
            continue
        added = parse_time(taint.get("timeAdded")) or first_seen
        match = next(
            (t for t in tolerations if isinstance(t, Mapping) and toleration_tolerates(t, taint)), None
        )
        if match is None:
            return float("-inf")
        seconds = match.get("tolerationSeconds")
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            continue  # tolerated forever
        when = added + max(0, seconds)
        deadline = when if deadline is None else min(deadline, when)
    return deadline


def disruption_condition(reason: str, message: str, now: float) -> Obj:
    return {
        "type": "DisruptionTarget",
        "status": "True",
        "lastTransitionTime": format_time(now),
        "reason": reason,
        "message": message,
    }


async def mark_disruption(ctx: ControllerContext, pod: Mapping[str, Any], reason: str, message: str) -> None:
    """Best effort: the DisruptionTarget condition kube adds before deleting a pod for the
    cluster's reasons (a taint, a vanished node)."""
    conditions = [dict(c) for c in status(pod).get("conditions") or () if c.get("type") != "DisruptionTarget"]
    conditions.append(disruption_condition(reason, message, ctx.clock()))
    try:
        await ctx.client.patch(
            *PODS,
            name_of(pod),
            {"status": {"conditions": conditions}},
            namespace=namespace_of(pod),
            subresource="status",
        )
    except ApiError as exc:
        log.debug("cannot mark %s as a disruption target: %s", key_of(pod), exc)


# --- the controllers -------------------------------------------------------------------------


def _index_lease_by_name(obj: Obj) -> str | None:
    return name_of(obj) or None


class NodeLifecycleController(BaseController):
    name = "nodelifecycle"
    default_workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        opts = ctx.options
        self.period = opts.node_monitor_period
        self.grace = opts.node_monitor_grace_period
        self.startup_grace = opts.node_startup_grace_period
        self.recorder = ctx.recorder(COMPONENT)
        self.health: dict[str, NodeHealth] = {}
        self.node_informer = self.informer(NODES)
        self.lease_informer = self.informer(LEASES, namespace=NODE_LEASE_NAMESPACE)
        self.pod_informer = self.informer(PODS, indexers={BY_NODE: index_by_node})
        self.node_informer.add_handler(self._node_added, self._node_updated, self._node_deleted)

    def _node_added(self, node: Obj) -> None:
        self.recorder.normal(
            node,
            "RegisteredNode",
            f"Node {name_of(node)} event: Registered Node {name_of(node)} in Controller",
        )
        self.enqueue(name_of(node))

    def _node_updated(self, old: Obj, cur: Obj) -> None:
        if (spec(old).get("taints"), spec(old).get("unschedulable"), status(old).get("conditions")) != (
            spec(cur).get("taints"),
            spec(cur).get("unschedulable"),
            status(cur).get("conditions"),
        ):
            self.enqueue(name_of(cur))

    def _node_deleted(self, node: Obj) -> None:
        self.health.pop(name_of(node), None)

    async def sync(self, key: str) -> None:
        node = self.node_informer.get(key)
        if node is None:
            self.health.pop(key, None)
            return
        # Every node is looked at again after a monitor period: time passing is the event.
        self.enqueue_after(key, self.period)
        lease = self.lease_informer.get(f"{NODE_LEASE_NAMESPACE}/{key}")
        now = self.now()
        verdict = update_node_health(node, lease, self.health.get(key), now, self.grace, self.startup_grace)
        self.health[key] = verdict.health
        conditions = [dict(c) for c in status(node).get("conditions") or ()]
        if verdict.new_conditions is not None:
            body = copy.deepcopy(node)
            body.setdefault("status", {})["conditions"] = verdict.new_conditions
            try:
                node = await self.client.update_status(*NODES, body)
            except NotFound:
                return
            conditions = verdict.new_conditions
            log.info(
                "node %s: no heartbeat for %.0fs, marked Unknown", key, now - verdict.health.probe_timestamp
            )
        if verdict.observed_ready == "True" and verdict.current_ready != "True":
            self.recorder.normal(node, "NodeNotReady", f"Node {key} status is now: NodeNotReady")
        if verdict.current_ready == "Unknown":
            await self._mark_pods_not_ready(key)
        taints = desired_taints(node, conditions, now)
        if taints != list(node_taints(node)):
            await self.client.patch(*NODES, key, taints_patch(node, taints), patch_type="json")

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        """MarkPodsNotReady: the node cannot vouch for its pods any more."""
        now = format_time(self.now())
        for pod in self.pod_informer.by_index(BY_NODE, node_name):
            if not is_pod_ready(pod) or being_deleted(pod):
                continue
            conditions = []
            for c in status(pod).get("conditions") or ():
                c = dict(c)
                if c.get("type") in ("Ready", "ContainersReady") and c.get("status") != "False":
                    c.update(status="False", lastTransitionTime=now)
                conditions.append(c)
            try:
                await self.client.patch(
                    *PODS,
                    name_of(pod),
                    {"status": {"conditions": conditions}},
                    namespace=namespace_of(pod),
                    subresource="status",
                )
            except NotFound:
                continue
            self.recorder.warning(pod, "NodeNotReady", "Node is not ready")


class TaintEvictionController(BaseController):
    name = "taint-eviction"
    default_workers = 4

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(EVICTION_COMPONENT)
        self.first_seen: dict[str, float] = {}
        self.node_informer = self.informer(NODES)
        self.pod_informer = self.informer(PODS, indexers={BY_NODE: index_by_node})
        self.node_informer.add_handler(self._node_changed, self._node_updated, None)
        self.pod_informer.add_handler(self._pod_changed, lambda o, c: self._pod_changed(c), self._pod_deleted)

    @staticmethod
    def _no_execute(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [t for t in node_taints(node) if t.get("effect") == NO_EXECUTE]

    def _node_changed(self, node: Obj) -> None:
        if self._no_execute(node):
            for pod in self.pod_informer.by_index(BY_NODE, name_of(node)):
                self.enqueue_obj(pod)

    def _node_updated(self, old: Obj, cur: Obj) -> None:
        if self._no_execute(old) != self._no_execute(cur):
            for pod in self.pod_informer.by_index(BY_NODE, name_of(cur)):
                self.enqueue_obj(pod)

    def _pod_changed(self, pod: Obj) -> None:
        node_name = spec(pod).get("nodeName")
        if not node_name or being_deleted(pod):
            return
        node = self.node_informer.get(node_name)
        if node is not None and self._no_execute(node):
            self.enqueue_obj(pod)

    def _pod_deleted(self, pod: Obj) -> None:
        self.first_seen.pop(key_of(pod), None)

    async def sync(self, key: str) -> None:
        pod = self.pod_informer.get(key)
        if pod is None or being_deleted(pod) or not spec(pod).get("nodeName"):
            self.first_seen.pop(key, None)
            return
        node = self.node_informer.get(spec(pod).get("nodeName"))
        taints = self._no_execute(node) if node is not None else []
        if not taints:
            self.first_seen.pop(key, None)
            return
        now = self.now()
        first = self.first_seen.setdefault(key, now)
        when = eviction_time(spec(pod).get("tolerations") or [], taints, first)
        if when is None:
            return
        if when > now:
            self.enqueue_after(key, when - now)
            return
        await mark_disruption(
            self.ctx, pod, "DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint"
        )
        try:
            await self.client.delete(
                *PODS, name_of(pod), namespace=namespace_of(pod), preconditions={"uid": meta(pod).get("uid")}
            )
        except NotFound:
            return
        self.first_seen.pop(key, None)
        self.recorder.normal(pod, "TaintManagerEviction", f"Marking for deletion Pod {key}")
        log.info("evicted %s from node %s (NoExecute taint)", key, spec(pod).get("nodeName"))
