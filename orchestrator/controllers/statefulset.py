"""The StatefulSet controller: pods with stable names, started and stopped in order.

A StatefulSet of `replicas` N owns pods `<set>-<ordinal>` for ordinals start..start+N-1 (start is
spec.ordinals.start, 0 by default). Each pod keeps its identity across restarts and updates: the
labels `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, hostname = pod
name and subdomain = spec.serviceName, so with a headless Service the pod answers to
`<pod>.<service>.<ns>.svc.cluster.local` (grove's DNS serves that name).

OrderedReady (the default) creates ordinal i only once 0..i-1 are Running and Ready (and
available for minReadySeconds), and scales down from the highest ordinal, one pod at a time,
waiting for each to go. Parallel creates and deletes without waiting. A RollingUpdate replaces
pods from the highest ordinal down to spec.updateStrategy.rollingUpdate.partition, one at a time,
each only once the ones above it are healthy again; OnDelete leaves replacement to the user.

History is kept as for DaemonSets (see `revisions`): one ControllerRevision per template, whose
name is the value of each pod's `controller-revision-hash` label. status.updateRevision names the
revision of the current template, status.currentRevision the one pods were at before the rollout
began; it moves to updateRevision when every pod is updated and ready. That is what `kubectl
rollout status|history|undo sts` read and write.

The decisions are pure functions (`plan`, `compute_status`); `StatefulSetController` reads the
caches, acts on one plan per sync and writes status. No expectations are needed: pod names are
fixed, so acting twice on a stale cache creates or deletes the same pod again, which the API
server refuses (AlreadyExists) or ignores (NotFound).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import (
    PODS,
    AlreadyExists,
    ApiError,
    Conflict,
    GroupVersionResource,
    NotFound,
    Obj,
)
from orchestrator.selectors import SelectorError, selector_from_object

from .base import (
    BY_CONTROLLER_UID,
    ControllerContext,
    RevisionOwnerController,
    ignore_missing,
    namespace_terminating,
)
from .revisions import (
    REVISION_HASH_LABEL,
)
from .util import (
    being_deleted,
    generation_of,
    int_field,
    is_pod_available,
    is_pod_ready,
    labels_of,
    name_of,
    namespace_of,
    new_controller_ref,
    pod_from_template,
    selector_is_empty,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

STATEFULSETS = GroupVersionResource("apps", "v1", "statefulsets")
COMPONENT = "statefulset-controller"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
CONFLICT_RETRY = 0.05


# --- pure decisions ------------------------------------------------------------------------------


def pod_name(sts: Mapping[str, Any], ordinal: int) -> str:
    return f"{name_of(sts)}-{ordinal}"


def ordinal_of(sts: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    """The ordinal in the pod's name when it is `<set>-<n>`, else None (not a member)."""
    m = re.fullmatch(re.escape(name_of(sts)) + r"-(0|[1-9][0-9]*)", name_of(pod))
    return int(m.group(1)) if m else None


def start_ordinal(sts: Mapping[str, Any]) -> int:
    return int_field(spec(sts).get("ordinals") or {}, "start")


def replicas_of(sts: Mapping[str, Any]) -> int:
    value = spec(sts).get("replicas")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def pod_revision(pod: Mapping[str, Any]) -> str:
    return labels_of(pod).get(REVISION_HASH_LABEL, "")


def is_created(pod: Mapping[str, Any]) -> bool:
    return bool(status(pod).get("phase"))


def is_failed(pod: Mapping[str, Any]) -> bool:
    return status(pod).get("phase") in ("Failed", "Succeeded")


def is_running_and_ready(pod: Mapping[str, Any]) -> bool:
    return status(pod).get("phase") == "Running" and is_pod_ready(pod)


def is_running_and_available(pod: Mapping[str, Any], min_ready: int, now: float) -> bool:
    return status(pod).get("phase") == "Running" and is_pod_available(pod, min_ready, now)


def is_healthy(pod: Mapping[str, Any], min_ready: int, now: float) -> bool:
    return is_running_and_available(pod, min_ready, now) and not being_deleted(pod)


def partition_of(sts: Mapping[str, Any]) -> int | None:
    rolling = (spec(sts).get("updateStrategy") or {}).get("rollingUpdate")
    if not isinstance(rolling, Mapping) or rolling.get("partition") is None:
        return None
    return int_field(rolling, "partition")


def strategy_type(sts: Mapping[str, Any]) -> str:
    return (spec(sts).get("updateStrategy") or {}).get("type") or "RollingUpdate"


def wants_current_revision(sts: Mapping[str, Any], ordinal: int) -> bool:
    """isCurrentRevisionNeeded: a missing pod below the partition is made at the current revision
    (so a partitioned rollout does not update it by recreating it); OnDelete uses the update one."""
    if strategy_type(sts) != "RollingUpdate":
        return False
    partition = partition_of(sts)
    if partition is None:
        return ordinal < start_ordinal(sts) + int_field(status(sts), "currentReplicas")
    return ordinal < start_ordinal(sts) + partition


def identity_labels(sts: Mapping[str, Any], ordinal: int) -> dict[str, str]:
    return {POD_NAME_LABEL: pod_name(sts, ordinal), POD_INDEX_LABEL: str(ordinal)}


def identity_matches(sts: Mapping[str, Any], pod: Mapping[str, Any], ordinal: int) -> bool:
    labels = labels_of(pod)
    return all(labels.get(k) == v for k, v in identity_labels(sts, ordinal).items())


@dataclass
class Plan:
    """One sync's step: pods to create (ordinal, revision to make it at) and pods to delete.

    `relabel` are pods whose identity labels are missing or wrong (identityMatches), to patch.
    `waiting` says the plan stopped early for a pod that is not yet Running and Ready (or not
    yet available); `requeue` asks to look again after that many seconds (minReadySeconds)."""

    create: list[tuple[int, str]] = field(default_factory=list)
    delete: list[Mapping[str, Any]] = field(default_factory=list)
    waiting: str = ""
    requeue: float | None = None
    relabel: list[Mapping[str, Any]] = field(default_factory=list)


def plan(
    sts: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    current_revision: str,
    update_revision: str,
    now: float,
) -> Plan:
    """updateStatefulSet: what to create and delete now, in kube's order — replace failed pods and
    fill gaps from the lowest ordinal, delete condemned pods from the highest, then roll out."""
    out = Plan()
    ordered = spec(sts).get("podManagementPolicy", "OrderedReady") != "Parallel"
    min_ready = int_field(spec(sts), "minReadySeconds")
    start, count = start_ordinal(sts), replicas_of(sts)
    replicas: dict[int, Mapping[str, Any]] = {}
    condemned: list[tuple[int, Mapping[str, Any]]] = []
    for pod in pods:
        ordinal = ordinal_of(sts, pod)
        if ordinal is None:
            continue
        if start <= ordinal < start + count:
            replicas[ordinal] = pod
        else:
            condemned.append((ordinal, pod))
    condemned.sort(key=lambda item: item[0])

    def wait(pod_or_ordinal: Any, why: str) -> Plan:
        name = pod_or_ordinal if isinstance(pod_or_ordinal, str) else name_of(pod_or_ordinal)
        out.waiting = f"{name} {why}"
        return out

    def revision_for(ordinal: int) -> str:
        return current_revision if wants_current_revision(sts, ordinal) else update_revision

    first_unhealthy: Mapping[str, Any] | None = None
    for ordinal in range(start, start + count):
        pod = replicas.get(ordinal)
        if pod is None:
            out.create.append((ordinal, revision_for(ordinal)))
            if ordered:
                return wait(pod_name(sts, ordinal), "is being created")
            continue
        if not being_deleted(pod) and not identity_matches(sts, pod, ordinal):
            out.relabel.append(pod)
        if is_failed(pod) and not being_deleted(pod):
            # A failed pod is deleted and, once gone, created again under the same name.
            out.delete.append(pod)
            if ordered:
                return wait(pod, "failed and is being replaced")
            continue
        if first_unhealthy is None and not is_healthy(pod, min_ready, now):
            first_unhealthy = pod
        if being_deleted(pod):
            if ordered:
                return wait(pod, "is terminating")
            continue
        if not is_running_and_ready(pod):
            if ordered:
                return wait(pod, "is not Running and Ready")
            continue
        if not is_running_and_available(pod, min_ready, now):
            out.requeue = float(min_ready)
            if ordered:
                return wait(pod, f"is not yet available (minReadySeconds {min_ready})")
    if first_unhealthy is None:
        first_unhealthy = next((p for _, p in condemned if not is_healthy(p, min_ready, now)), None)
    for _ordinal, pod in reversed(condemned):
        if being_deleted(pod):
            if ordered:
                return wait(pod, "is terminating")
            continue
        if ordered and not is_running_and_available(pod, min_ready, now) and pod is not first_unhealthy:
            return wait(first_unhealthy or pod, "is unhealthy; scale down waits")
        out.delete.append(pod)
        if ordered:
            return out
    if out.create or out.delete or strategy_type(sts) != "RollingUpdate":
        return out
    partition = partition_of(sts) or 0
    for ordinal in range(start + count - 1, start + partition - 1, -1):
        pod = replicas[ordinal]
        if pod_revision(pod) != update_revision and not being_deleted(pod):
            out.delete.append(pod)
            return out
        if not is_healthy(pod, min_ready, now):
            return wait(pod, "is updating")
    return out


def compute_status(
    sts: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    current_revision: str,
    update_revision: str,
    now: float,
    observed_generation: int | None,
) -> Obj:
    """The set's status from its pods; currentRevision moves to updateRevision once a rolling
    update has every pod updated and ready (completeRollingUpdate)."""
    min_ready = int_field(spec(sts), "minReadySeconds")
    replicas = ready = available = current = updated = 0
    for pod in pods:
        if ordinal_of(sts, pod) is None:
            continue
        if is_created(pod):
            replicas += 1
        if is_running_and_ready(pod):
            ready += 1
            if is_running_and_available(pod, min_ready, now):
                available += 1
        if is_created(pod) and not being_deleted(pod):
            rev = pod_revision(pod)
            current += rev == current_revision
            updated += rev == update_revision
    if strategy_type(sts) == "RollingUpdate" and updated == replicas and ready == replicas:
        current, current_revision = updated, update_revision
    old = status(sts)
    obs = observed_generation if observed_generation is not None else int_field(old, "observedGeneration")
    st: Obj = {
        "observedGeneration": obs,
        "replicas": replicas,
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "availableReplicas": available,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": int_field(old, "collisionCount"),
    }
    if old.get("conditions") is not None:
        st["conditions"] = old["conditions"]
    return st


def revision_template(rev: Mapping[str, Any]) -> Obj:
    """The pod template a revision's data puts back."""
    template = copy.deepcopy(dict(((rev.get("data") or {}).get("spec") or {}).get("template") or {}))
    template.pop("$patch", None)
    return template


def new_pod(
    sts: Mapping[str, Any], template: Mapping[str, Any], ordinal: int, revision: str, ref: Mapping[str, Any]
) -> Obj:
    """newVersionedStatefulSetPod: the template as pod `<set>-<ordinal>` with its identity."""
    pod = pod_from_template(sts, template, ref)
    name = pod_name(sts, ordinal)
    meta = pod["metadata"]
    meta.pop("generateName", None)
    meta["name"] = name
    meta["labels"].update({**identity_labels(sts, ordinal), REVISION_HASH_LABEL: revision})
    pod["spec"]["hostname"] = name
    if spec(sts).get("serviceName"):
        pod["spec"]["subdomain"] = spec(sts)["serviceName"]
    return pod


# --- the controller ------------------------------------------------------------------------------


class StatefulSetController(RevisionOwnerController):
    name = "statefulset"
    default_workers = 2
    api_version = "apps/v1"
    kind = "StatefulSet"
    owner_gvr = STATEFULSETS
    component = COMPONENT

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sts_informer = self.owners

    def pod_revision_label(self, rev: Mapping[str, Any]) -> str:
        return name_of(rev)  # a StatefulSet's pods carry their revision's name

    async def sync(self, key: str) -> None:
        sts = self.sts_informer.get(key)
        if sts is None or being_deleted(sts):
            return
        if selector_is_empty(spec(sts).get("selector")):
            self.recorder.warning(
                sts,
                "SelectingAll",
                "This statefulset is selecting all pods. A non-empty selector is required.",
            )
            return
        try:
            history = await self.construct_history(sts)
        except Conflict as exc:
            log.debug("%s: %s; syncing again", key, exc)
            self.enqueue_after(key, CONFLICT_RETRY)
            return
        if history is None:
            return  # the history changed under us; its events bring us back
        update_rev, revisions = history
        current_rev = next(
            (r for r in revisions if name_of(r) == status(sts).get("currentRevision")), update_rev
        )
        pods = await self._claim_pods(sts)
        now = self.now()
        step = plan(sts, pods, name_of(current_rev), name_of(update_rev), now)
        if step.waiting:
            log.debug("%s: waiting: %s", key, step.waiting)
        try:
            await self._act(sts, step, {name_of(current_rev): current_rev, name_of(update_rev): update_rev})
        finally:
            live = {pod_revision(p) for p in pods} | {name_of(current_rev), name_of(update_rev)}
            # truncateHistory: the oldest revisions no pod runs, beyond revisionHistoryLimit
            await self.prune_history(sts, [r for r in revisions if name_of(r) not in live])
            fresh = self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(sts))
            new = compute_status(
                sts, fresh, name_of(current_rev), name_of(update_rev), self.now(), generation_of(sts)
            )
            if new != dict(status(sts)):
                await self.write_status(sts, new)
            if step.requeue is not None:
                self.enqueue_after(key, step.requeue + 0.5)

    async def _claim_pods(self, sts: Obj) -> list[Obj]:
        try:
            sel = selector_from_object(spec(sts).get("selector"))
        except SelectorError:
            return []
        return await self.claim_owned(
            sts, lambda p: not sel.empty and sel.matches(labels_of(p)) and ordinal_of(sts, p) is not None
        )

    async def _act(self, sts: Obj, step: Plan, revisions: Mapping[str, Obj]) -> None:
        ref = new_controller_ref(sts, self.api_version, self.kind)
        ns = namespace_of(sts)
        for ordinal, rev_name in step.create:
            body = new_pod(sts, revision_template(revisions[rev_name]), ordinal, rev_name, ref)
            try:
                await self.client.create(*PODS, body, namespace=ns)
            except AlreadyExists:
                continue  # a stale cache: the pod is there
            except ApiError as exc:
                if namespace_terminating(exc):
                    return
                self.recorder.warning(
                    sts, "FailedCreate", f"create Pod {name_of(body)} in StatefulSet {name_of(sts)} failed "
                    f"error: {exc.message}",
                )  # fmt: skip
                raise
            self.recorder.normal(
                sts,
                "SuccessfulCreate",
                f"create Pod {name_of(body)} in StatefulSet {name_of(sts)} successful",
            )
        for pod in step.relabel:
            ordinal = ordinal_of(sts, pod)
            if ordinal is not None:
                patch = {"metadata": {"labels": identity_labels(sts, ordinal)}}
                await ignore_missing(
                    self.client.patch(*PODS, name_of(pod), patch, namespace=namespace_of(pod))
                )
        for pod in step.delete:
            try:
                await self.client.delete(*PODS, name_of(pod), namespace=namespace_of(pod))
            except NotFound:
                continue
            except ApiError as exc:
                self.recorder.warning(
                    sts, "FailedDelete", f"delete Pod {name_of(pod)} in StatefulSet {name_of(sts)} failed "
                    f"error: {exc.message}",
                )  # fmt: skip
                raise
            self.recorder.normal(
                sts, "SuccessfulDelete", f"delete Pod {name_of(pod)} in StatefulSet {name_of(sts)} successful"
            )
