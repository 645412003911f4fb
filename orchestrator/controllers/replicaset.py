"""The ReplicaSet controller: keep exactly `spec.replicas` pods matching the selector.

`sync(namespace/name)` reads the ReplicaSet and the candidate pods (the ones it controls and
the orphans of its namespace) from the informer caches, claims them — adopting matching
orphans and releasing owned pods whose labels stopped matching, through ownerReferences with
controller=true — and, when its expectations are satisfied (everything it created or deleted
before has shown up in the cache), creates the missing pods in slow-start batches or deletes
the surplus, worst-ranked first (kube's ActivePodsWithRanks: unscheduled, pending, not ready,
doubled up on a node, ready for less time, restarted more, newer). Then it writes the status:
replicas, fullyLabeledReplicas, readyReplicas, availableReplicas (ready for minReadySeconds),
observedGeneration and a ReplicaFailure condition while creating or deleting fails.

The decisions (`manage_replicas`, `calculate_status`) are pure functions over a snapshot;
`ReplicaSetController` is the thin part that reads caches and talks to the API server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import REPLICASETS, ApiError, Obj
from orchestrator.selectors import SelectorError, selector_from_object

from .base import (
    BY_CONTROLLER_UID,
    ControllerContext,
    PodOwnerController,
    index_by_controller_uid,
)
from .util import (
    being_deleted,
    controller_ref,
    format_time,
    generation_of,
    get_condition,
    int_field,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    labels_of,
    new_controller_ref,
    pod_from_template,
    rank_pods_for_deletion,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

BURST_REPLICAS = 500  # creations or deletions per sync at most (kube's BurstReplicas)
SLOW_START_INITIAL_BATCH = 1
COMPONENT = "replicaset-controller"


# --- pure decisions ------------------------------------------------------------------------------


@dataclass
class ReplicaDiff:
    """What manageReplicas would do: create `create` pods, or delete `delete` (in that order)."""

    create: int = 0
    delete: list[Mapping[str, Any]] = field(default_factory=list)


def manage_replicas(
    rs: Mapping[str, Any],
    active_pods: Sequence[Mapping[str, Any]],
    related_pods: Sequence[Mapping[str, Any]],
    now: float | None,
    burst: int = BURST_REPLICAS,
) -> ReplicaDiff:
    """How many pods to create, or which to delete, to get from `active_pods` to spec.replicas."""
    want = int_field(spec(rs), "replicas", 1)
    diff = len(active_pods) - want
    if diff < 0:
        return ReplicaDiff(create=min(-diff, burst))
    if diff > 0:
        diff = min(diff, burst)
        if diff < len(active_pods):
            ranked = rank_pods_for_deletion(active_pods, related_pods or active_pods, now)
            return ReplicaDiff(delete=list(ranked[:diff]))
        return ReplicaDiff(delete=list(active_pods))
    return ReplicaDiff()


def calculate_status(
    rs: Mapping[str, Any],
    active_pods: Sequence[Mapping[str, Any]],
    now: float,
    manage_error: str | None = None,
) -> Obj:
    """The ReplicaSet status the pods make (calculateStatus), with kube's omitempty shape."""
    template_labels = labels_of(spec(rs).get("template") or {})
    min_ready = int_field(spec(rs), "minReadySeconds")
    fully_labeled = ready = available = 0
    for pod in active_pods:
        labels = labels_of(pod)
        if all(labels.get(k) == v for k, v in template_labels.items()):
            fully_labeled += 1
        if is_pod_ready(pod):
            ready += 1
            if is_pod_available(pod, min_ready, now):
                available += 1
    old = status(rs)
    conditions = [dict(c) for c in old.get("conditions") or () if isinstance(c, Mapping)]
    failure = get_condition(conditions, "ReplicaFailure")
    if manage_error is not None and failure is None:
        diff = len(active_pods) - int_field(spec(rs), "replicas", 1)
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        conditions.append(
            {
                "type": "ReplicaFailure",
                "status": "True",
                "lastTransitionTime": format_time(now),
                "reason": reason,
                "message": manage_error,
            }
        )
    elif manage_error is None and failure is not None:
        conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
    new: Obj = {"replicas": len(active_pods)}
    for k, v in (
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("observedGeneration", int_field(old, "observedGeneration")),
    ):
        if v:
            new[k] = v
    if conditions:
        new["conditions"] = conditions
    return new


def status_needs_update(rs: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old = status(rs)
    return (
        any(
            int_field(old, k) != int_field(new, k)
            for k in ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")
        )
        or generation_of(rs) != int_field(old, "observedGeneration")
        or (old.get("conditions") or []) != (new.get("conditions") or [])
    )


# --- the controller ------------------------------------------------------------------------------


class ReplicaSetController(PodOwnerController):
    name = "replicaset"
    default_workers = 5
    api_version = "apps/v1"
    kind = "ReplicaSet"
    owner_gvr = REPLICASETS
    owner_indexers = {BY_CONTROLLER_UID: index_by_controller_uid}
    component = COMPONENT
    initial_batch = SLOW_START_INITIAL_BATCH

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.rs_informer = self.owners

    # --- sync ---------------------------------------------------------------------------------

    def _related_pods(self, rs: Mapping[str, Any]) -> list[Obj]:
        """Pods of this ReplicaSet and of its siblings (same controlling owner): the pods that
        count toward 'doubled up on a node' when choosing which to delete."""
        owner = controller_ref(rs)
        if owner is None:
            return self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(rs))
        pods: list[Obj] = []
        for sibling in self.rs_informer.by_index(BY_CONTROLLER_UID, str(owner.get("uid"))):
            pods.extend(self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(sibling)))
        return pods

    async def sync(self, key: str) -> None:
        rs = self.rs_informer.get(key)
        if rs is None:
            self.expectations.delete(key)
            return
        needs_sync = self.expectations.satisfied(key)
        try:
            sel = selector_from_object(spec(rs).get("selector"))
        except SelectorError as exc:
            log.info("%s: invalid selector: %s", key, exc)
            return
        pods = await self.claim_owned(rs, lambda p: sel.matches(labels_of(p)), only=is_pod_active)

        manage_error: ApiError | None = None
        if needs_sync and not being_deleted(rs):
            try:
                await self._manage(key, rs, pods)
            except ApiError as exc:
                manage_error = exc

        new_status = calculate_status(rs, pods, self.now(), manage_error.message if manage_error else None)
        if status_needs_update(rs, new_status):
            new_status["observedGeneration"] = generation_of(rs)
            rs = await self.write_status(rs, new_status)
        if manage_error is not None:
            raise manage_error
        replicas = int_field(spec(rs), "replicas", 1)
        st = status(rs)
        self.wake_when_available(
            rs, int_field(st, "readyReplicas") == replicas and int_field(st, "availableReplicas") != replicas
        )

    async def _manage(self, key: str, rs: Obj, pods: list[Obj]) -> None:
        diff = manage_replicas(rs, pods, self._related_pods(rs), self.now())
        ref = new_controller_ref(rs, self.api_version, self.kind)
        template = spec(rs).get("template") or {}
        await self.pod_control.sync_pods(
            key, rs, diff.create, lambda: pod_from_template(rs, template, ref), diff.delete
        )
