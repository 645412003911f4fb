"""The DaemonSet controller: one pod on every eligible node, updated a few nodes at a time.

A node is eligible when the pod template would land there: its nodeSelector and required node
affinity match the node and its tolerations — plus the ones every daemon pod gets (not-ready
and unreachable NoExecute, the pressure and unschedulable NoSchedule taints) — tolerate the
node's NoSchedule and NoExecute taints. A daemon pod whose node grows an untolerated NoSchedule
taint keeps running; an untolerated NoExecute taint removes it (kube's NodeShouldRunDaemonPod).

`sync(namespace/name)` first brings the revision history up to date (see `revisions`: one
ControllerRevision per template, the current one at the top, at most revisionHistoryLimit old
ones), takes the current revision's hash, claims the daemon's pods, then (once earlier creations and deletions
have shown up in the cache — expectations, as for ReplicaSets) creates a pod for every node
that needs one and deletes pods on nodes that must not run one, failed pods and duplicates.
Each pod is created with required node affinity `metadata.name In [node]` (kube's
ReplaceDaemonSetPodNodeNameNodeAffinity), so the scheduler places it, honouring everything else.
With nothing left to create or delete, a RollingUpdate replaces out-of-date pods (those whose
`controller-revision-hash` label is not the current revision's hash) while at most maxUnavailable
nodes are without an available daemon pod (or, with maxSurge, starts the new pod first).
Status: desired/current/updated numberScheduled, numberReady, numberAvailable,
numberUnavailable, numberMisscheduled, observedGeneration.

The decisions are the pure functions below; `DaemonSetController` reads caches and acts.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import (
    DAEMONSETS,
    NODES,
    Conflict,
    Obj,
)
from orchestrator.selectors import SelectorError, selector_from_object

from .base import (
    BY_CONTROLLER_UID,
    ControllerContext,
    RevisionOwnerController,
)
from .revisions import (
    REVISION_HASH_LABEL,
    revision_hash,
    template_hash,
)
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
    annotations_of,
    being_deleted,
    creation_time,
    generation_of,
    int_field,
    is_pod_available,
    is_pod_ready,
    is_pod_terminal,
    key_of,
    labels_of,
    name_of,
    new_controller_ref,
    node_matches_pod_affinity,
    node_taints,
    pod_from_template,
    scaled_value,
    selector_is_empty,
    spec,
    status,
    target_node_of,
    uid_of,
    untolerated_taint,
)

log = logging.getLogger(__name__)

COMPONENT = "daemonset-controller"
BURST_REPLICAS = 250
TEMPLATE_GENERATION_LABEL = "pod-template-generation"
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
FAILED_POD_BACKOFF = (1.0, 15 * 60.0)
CONFLICT_RETRY = 0.05


# --- pure decisions ------------------------------------------------------------------------------


def daemon_tolerations(pod_spec: Mapping[str, Any]) -> list[Obj]:
    """The pod's tolerations plus the ones kube adds to every daemon pod."""
    tolerations = [dict(t) for t in pod_spec.get("tolerations") or () if isinstance(t, Mapping)]
    extra = [
        (TAINT_NOT_READY, NO_EXECUTE),
        (TAINT_UNREACHABLE, NO_EXECUTE),
        (TAINT_DISK_PRESSURE, NO_SCHEDULE),
        (TAINT_MEMORY_PRESSURE, NO_SCHEDULE),
        (TAINT_PID_PRESSURE, NO_SCHEDULE),
        (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
    ]
    if pod_spec.get("hostNetwork"):
        extra.append((TAINT_NETWORK_UNAVAILABLE, NO_SCHEDULE))
    for key, effect in extra:
        wanted = {"key": key, "operator": "Exists", "effect": effect}
        if not any(
            t.get("key") == key and t.get("effect") == effect and t.get("operator") == "Exists"
            and not t.get("tolerationSeconds")
            for t in tolerations
        ):  # fmt: skip
            tolerations = [
                t
                for t in tolerations
                if not (t.get("key") == key and t.get("effect") == effect and t.get("operator") == "Exists")
            ]
            tolerations.append(wanted)
    return tolerations


def node_should_run(ds: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod: (should a daemon pod be placed here, may an existing one stay)."""
    pod_spec = (spec(ds).get("template") or {}).get("spec") or {}
    wanted_node = pod_spec.get("nodeName") or ""
    if wanted_node and wanted_node != name_of(node):
        return False, False
    if not node_matches_pod_affinity(pod_spec, node):
        return False, False
    taints = node_taints(node)
    tolerations = daemon_tolerations(pod_spec)
    if untolerated_taint(taints, tolerations, (NO_SCHEDULE, NO_EXECUTE)) is None:
        return True, True
    return False, untolerated_taint(taints, tolerations, (NO_EXECUTE,)) is None


def template_generation(ds: Mapping[str, Any]) -> int | None:
    try:
        return int(annotations_of(ds)[TEMPLATE_GENERATION_ANNOTATION])
    except (KeyError, ValueError):
        return None


daemonset_hash = template_hash


def pod_template(ds: Mapping[str, Any], hash_: str) -> Obj:
    """CreatePodTemplate: the template with the daemon tolerations and revision labels."""
    tmpl = copy.deepcopy(dict(spec(ds).get("template") or {}))
    tmeta = tmpl.setdefault("metadata", {})
    labels = dict(tmeta.get("labels") or {})
    generation = template_generation(ds)
    if generation is not None:
        labels[TEMPLATE_GENERATION_LABEL] = str(generation)
    if hash_:
        labels[REVISION_HASH_LABEL] = hash_
    tmeta["labels"] = labels
    pod_spec = tmpl.setdefault("spec", {})
    pod_spec["tolerations"] = daemon_tolerations(pod_spec)
    return tmpl


def pin_to_node(affinity: Mapping[str, Any] | None, node_name: str) -> Obj:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: required node affinity becomes exactly
    `metadata.name In [node]` (the other required terms were checked already); preferred
    terms and pod (anti-)affinity are kept."""
    out = copy.deepcopy(dict(affinity or {}))
    node_aff = out.setdefault("nodeAffinity", {})
    node_aff["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
        ]
    }
    return out


def is_pod_updated(pod: Mapping[str, Any], hash_: str, generation: int | None) -> bool:
    labels = labels_of(pod)
    template_matches = generation is not None and labels.get(TEMPLATE_GENERATION_LABEL) == str(generation)
    return bool(hash_) and labels.get(REVISION_HASH_LABEL) == hash_ or template_matches


def _by_creation_and_phase(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """podByCreationTimestampAndPhase: scheduled first, then oldest, then name."""
    return sorted(pods, key=lambda p: (not spec(p).get("nodeName"), creation_time(p) or 0.0, name_of(p)))


def nodes_to_daemon_pods(pods: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Claimed pods by target node; finished pods already being deleted are left out."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        if is_pod_terminal(pod) and being_deleted(pod):
            continue
        node = target_node_of(pod)
        if node is None:
            continue
        out.setdefault(node, []).append(pod)
    return out


def allows_surge(ds: Mapping[str, Any]) -> bool:
    strategy = spec(ds).get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return False
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge")
    try:
        return surge is not None and scaled_value(surge, 1, True) > 0
    except ValueError:
        return False


@dataclass
class NodesPlan:
    """What manage decided: nodes that need a daemon pod, pods to delete, events to record."""

    create_on: list[str] = field(default_factory=list)
    delete: list[Mapping[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    failed_nodes: list[str] = field(default_factory=list)


def manage(
    ds: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    by_node: Mapping[str, Sequence[Mapping[str, Any]]],
    hash_: str,
    now: float,
    in_backoff: Any = lambda node: False,
) -> NodesPlan:
    """podsShouldBeOnNode for every node, plus unscheduled pods aimed at nodes that are gone."""
    plan = NodesPlan()
    surge = allows_surge(ds)
    min_ready = int_field(spec(ds), "minReadySeconds")
    for node in sorted(nodes, key=name_of):
        nname = name_of(node)
        should_run, should_continue = node_should_run(ds, node)
        pods = list(by_node.get(nname) or ())
        exists = nname in by_node
        if should_run and not exists:
            plan.create_on.append(nname)
        elif should_continue:
            running = []
            for pod in pods:
                if being_deleted(pod):
                    continue
                phase = status(pod).get("phase")
                if phase == "Failed":
                    if in_backoff(nname):
                        continue
                    plan.failed_nodes.append(nname)
                    plan.events.append(
                        (
                            "Warning",
                            "FailedDaemonPod",
                            f"Found failed daemon pod {key_of(pod)} on node {nname}, will try to kill it",
                        )
                    )
                    plan.delete.append(pod)
                elif phase == "Succeeded":
                    plan.events.append(
                        (
                            "Normal",
                            "SucceededDaemonPod",
                            f"Found succeeded daemon pod {key_of(pod)} on node {nname}, will try to delete it",
                        )
                    )
                    plan.delete.append(pod)
                else:
                    running.append(pod)
            if not surge:
                if len(running) > 1:
                    plan.delete.extend(_by_creation_and_phase(running)[1:])
                continue
            if len(running) <= 1:
                if not running and should_run:
                    plan.create_on.append(nname)
                continue
            oldest_new = oldest_old = None
            for pod in _by_creation_and_phase(running):
                if labels_of(pod).get(REVISION_HASH_LABEL) == hash_:
                    if oldest_new is None:
                        oldest_new = pod
                        continue
                elif oldest_old is None:
                    oldest_old = pod
                    continue
                plan.delete.append(pod)
            if oldest_new is not None and oldest_old is not None:
                if not is_pod_ready(oldest_old) or is_pod_available(oldest_new, min_ready, now):
                    plan.delete.append(oldest_old)
        elif exists:
            plan.delete.extend(p for p in pods if not being_deleted(p))
    known = {name_of(n) for n in nodes}
    for nname, pods in sorted(by_node.items()):
        if nname in known:
            continue
        plan.delete.extend(p for p in pods if not spec(p).get("nodeName") and not being_deleted(p))
    return plan


def _find_updated(pods: Sequence[Mapping[str, Any]], hash_: str, generation: int | None):
    new = old = None
    for pod in pods:
        if being_deleted(pod):
            continue
        if is_pod_updated(pod, hash_, generation):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def desired_counts(ds: Mapping[str, Any], nodes: Sequence[Mapping[str, Any]]) -> tuple[int, int, int]:
    """updatedDesiredNodeCounts: (maxSurge, maxUnavailable, desiredNumberScheduled); both
    rounded up from percentages of the desired count; never both zero."""
    desired = sum(1 for n in nodes if node_should_run(ds, n)[0])
    rolling = (spec(ds).get("updateStrategy") or {}).get("rollingUpdate") or {}
    surge = scaled_value(rolling.get("maxSurge", 0), desired, True)
    unavailable = scaled_value(rolling.get("maxUnavailable", 1), desired, True)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable, desired


def rolling_update(
    ds: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    by_node: Mapping[str, Sequence[Mapping[str, Any]]],
    hash_: str,
    now: float,
) -> NodesPlan:
    """Which out-of-date pods to replace now (and, with maxSurge, where to start new ones)."""
    max_surge, max_unavailable, _ = desired_counts(ds, nodes)
    min_ready = int_field(spec(ds), "minReadySeconds")
    generation = template_generation(ds)
    plan = NodesPlan()
    if max_surge == 0:
        unavailable = 0
        replace: list[Mapping[str, Any]] = []
        candidates: list[Mapping[str, Any]] = []
        for _nname, pods in sorted(by_node.items()):
            new, old, ok = _find_updated(pods, hash_, generation)
            if not ok or (new is None and old is None) or (new is not None and old is not None):
                unavailable += 1
            elif new is not None:
                if not is_pod_available(new, min_ready, now):
                    unavailable += 1
            elif not is_pod_available(old, min_ready, now):
                replace.append(old)  # unavailable already: replacing it costs nothing, but it counts
                unavailable += 1
            elif unavailable >= max_unavailable:
                continue
            else:
                candidates.append(old)
        remaining = max(0, min(max_unavailable - unavailable, len(candidates)))
        plan.delete = replace + candidates[:remaining]
        return plan
    node_by_name = {name_of(n): n for n in nodes}
    surged = 0
    allowed: list[str] = []
    candidate_nodes: list[str] = []
    for nname, pods in sorted(by_node.items()):
        new, old, ok = _find_updated(pods, hash_, generation)
        if not ok:
            surged += 1
            continue
        if old is None:
            continue
        if new is None:
            if not is_pod_available(old, min_ready, now):
                node = node_by_name.get(nname)
                if node is None or not node_should_run(ds, node)[0]:
                    plan.delete.append(old)
                    continue
                allowed.append(nname)
            elif surged >= max_surge:
                continue
            else:
                candidate_nodes.append(nname)
        elif not is_pod_available(new, min_ready, now):
            surged += 1
        else:
            plan.delete.append(old)
    remaining = max(0, min(max_surge - surged, len(candidate_nodes)))
    plan.create_on = allowed + candidate_nodes[:remaining]
    return plan


def calculate_status(
    ds: Mapping[str, Any],
    nodes: Sequence[Mapping[str, Any]],
    by_node: Mapping[str, Sequence[Mapping[str, Any]]],
    hash_: str,
    now: float,
    observed_generation: int | None,
) -> Obj:
    desired = current = misscheduled = ready = updated = available = 0
    min_ready = int_field(spec(ds), "minReadySeconds")
    generation = template_generation(ds)
    for node in nodes:
        should_run, _ = node_should_run(ds, node)
        pods = by_node.get(name_of(node)) or []
        if should_run:
            desired += 1
            if not pods:
                continue
            current += 1
            first = _by_creation_and_phase(pods)[0]
            if is_pod_ready(first):
                ready += 1
                if is_pod_available(first, min_ready, now):
                    available += 1
            if is_pod_updated(first, hash_, generation):
                updated += 1
        elif pods:
            misscheduled += 1
    st: Obj = {
        "currentNumberScheduled": current,
        "numberMisscheduled": misscheduled,
        "desiredNumberScheduled": desired,
        "numberReady": ready,
    }
    obs = (
        observed_generation
        if observed_generation is not None
        else int_field(status(ds), "observedGeneration")
    )
    for k, v in (
        ("observedGeneration", obs),
        ("updatedNumberScheduled", updated),
        ("numberAvailable", available),
        ("numberUnavailable", desired - available),
    ):
        if v:
            st[k] = v
    for k in ("collisionCount", "conditions"):
        if status(ds).get(k) is not None:
            st[k] = status(ds)[k]
    return st


# --- the controller ------------------------------------------------------------------------------


class _Backoff:
    """flowcontrol.Backoff for failed daemon pods, per daemon set and node."""

    def __init__(self, initial: float, maximum: float, clock: Any = time.monotonic) -> None:
        self.initial, self.maximum, self.clock = initial, maximum, clock
        self._entries: dict[str, tuple[float, float]] = {}  # key -> (delay, last update)

    def in_backoff(self, key: str) -> float | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        delay, at = entry
        return delay if self.clock() - at < delay else None

    def next(self, key: str) -> None:
        entry = self._entries.get(key)
        delay = self.initial if entry is None else min(entry[0] * 2, self.maximum)
        self._entries[key] = (delay, self.clock())


def _node_view(node: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a node decides where daemon pods go (heartbeats do not)."""
    return (labels_of(node), spec(node).get("taints"), spec(node).get("unschedulable"))


class DaemonSetController(RevisionOwnerController):
    name = "daemonset"
    default_workers = 2
    api_version = "apps/v1"
    kind = "DaemonSet"
    owner_gvr = DAEMONSETS
    component = COMPONENT

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ds_informer = self.owners
        self.backoff = _Backoff(*FAILED_POD_BACKOFF)
        self.node_informer = self.informer(NODES)
        self.node_informer.add_handler(self._node_changed, self._node_updated, self._node_changed)

    # --- handlers -------------------------------------------------------------------------------

    def _node_changed(self, node: Obj) -> None:
        for ds in self.ds_informer.list():
            self.enqueue_obj(ds)

    def _node_updated(self, old: Obj, cur: Obj) -> None:
        if _node_view(old) != _node_view(cur):
            self._node_changed(cur)

    # --- sync -------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        ds = self.ds_informer.get(key)
        if ds is None:
            self.expectations.delete(key)
            return
        nodes = self.node_informer.list()
        if selector_is_empty(spec(ds).get("selector")):
            self.recorder.warning(
                ds, "SelectingAll", "This daemon set is selecting all pods. A non-empty selector is required."
            )
            return
        if being_deleted(ds):
            return
        try:
            history = await self.construct_history(ds)
        except Conflict as exc:  # a revision changed under a stale cache: look again shortly
            log.debug("%s: %s; syncing again", key, exc)
            self.enqueue_after(key, CONFLICT_RETRY)
            return
        if history is None:
            return  # the history changed under us; the revision events bring us back
        current, old_revisions = history
        hash_ = revision_hash(current)
        if not self.expectations.satisfied(key):
            await self._update_status(ds, nodes, hash_, False)
            return
        by_node = await self._claimed_by_node(ds)
        now = self.now()

        def in_backoff(node_name: str) -> bool:
            delay = self.backoff.in_backoff(f"{uid_of(ds)}/{node_name}")
            if delay is not None:
                self.enqueue_after(key, delay)
                return True
            return False

        plan = manage(ds, nodes, by_node, hash_, now, in_backoff)
        for nname in plan.failed_nodes:
            self.backoff.next(f"{uid_of(ds)}/{nname}")
        for etype, reason, message in plan.events:
            self.recorder.event(ds, etype, reason, message)
        await self._sync_nodes(key, ds, plan.delete, plan.create_on, hash_)
        strategy = (spec(ds).get("updateStrategy") or {}).get("type", "RollingUpdate")
        if self.expectations.satisfied(key) and strategy == "RollingUpdate":
            try:
                update = rolling_update(ds, nodes, by_node, hash_, now)
            except ValueError as exc:
                log.info("%s: %s", key, exc)
            else:
                await self._sync_nodes(key, ds, update.delete, update.create_on, hash_)
        if self.expectations.satisfied(key):
            pods = self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(ds))
            await self.prune_history(ds, old_revisions, pods)
        await self._update_status(ds, nodes, hash_, True)

    async def _claimed_by_node(self, ds: Obj) -> dict[str, list[Mapping[str, Any]]]:
        try:
            sel = selector_from_object(spec(ds).get("selector"))
        except SelectorError:
            return {}
        pods = await self.claim_owned(ds, lambda p: not sel.empty and sel.matches(labels_of(p)))
        return nodes_to_daemon_pods(pods)

    async def _sync_nodes(
        self, key: str, ds: Obj, to_delete: list[Mapping[str, Any]], create_on: list[str], hash_: str
    ) -> None:
        tmpl = pod_template(ds, hash_)
        ref = new_controller_ref(ds, self.api_version, self.kind)
        pending = list(create_on[:BURST_REPLICAS])

        def next_body() -> Obj:
            t = copy.deepcopy(tmpl)
            t["spec"]["affinity"] = pin_to_node(t["spec"].get("affinity"), pending.pop(0))
            return pod_from_template(ds, t, ref)

        await self.pod_control.sync_pods(key, ds, len(pending), next_body, to_delete[:BURST_REPLICAS])

    async def _update_status(self, ds: Obj, nodes: list[Obj], hash_: str, observe: bool) -> None:
        by_node = nodes_to_daemon_pods(self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(ds)))
        now = self.now()
        new = calculate_status(ds, nodes, by_node, hash_, now, generation_of(ds) if observe else None)
        if new != dict(status(ds)):
            await self.write_status(ds, new)
        self.wake_when_available(ds, new.get("numberReady", 0) != new.get("numberAvailable", 0))
