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

import asyncio
import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import PODS, REPLICASETS, ApiError, NotFound, Obj
from orchestrator.selectors import SelectorError, selector_from_object

from .base import (
    BY_CONTROLLER_UID,
    ORPHANS_BY_NAMESPACE,
    BaseController,
    ControllerContext,
    index_by_controller_uid,
    index_orphans_by_namespace,
    slow_start_batch,
    update_status_with_retry,
)
from .expectations import UIDTrackingControllerExpectations
from .util import (
    adopt_patch,
    being_deleted,
    claim,
    controller_ref,
    format_time,
    generation_of,
    get_condition,
    int_field,
    is_pod_active,
    is_pod_available,
    is_pod_ready,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    rank_pods_for_deletion,
    release_patch,
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


def pod_from_template(owner: Mapping[str, Any], template: Mapping[str, Any], ref: Mapping[str, Any]) -> Obj:
    """controller.GetPodFromTemplate: a pod for `owner` (named `<owner>-xxxxx` by the server)."""
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    if not labels:
        raise ValueError("unable to create pods, no labels")
    pod_meta: Obj = {
        "generateName": f"{name_of(owner)}-",
        "namespace": namespace_of(owner),
        "labels": labels,
        "ownerReferences": [dict(ref)],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    if tmeta.get("finalizers"):
        pod_meta["finalizers"] = list(tmeta["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": copy.deepcopy(dict(template.get("spec") or {})),
    }


def namespace_terminating(err: ApiError) -> bool:
    causes = (err.details or {}).get("causes") or []
    return any(isinstance(c, Mapping) and c.get("reason") == "NamespaceTerminating" for c in causes)


# --- the controller ------------------------------------------------------------------------------


class ReplicaSetController(BaseController):
    name = "replicaset"
    default_workers = 5
    api_version = "apps/v1"
    kind = "ReplicaSet"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.expectations = UIDTrackingControllerExpectations()
        self.rs_informer = self.informer(REPLICASETS, indexers={BY_CONTROLLER_UID: index_by_controller_uid})
        self.pod_informer = self.informer(
            PODS,
            indexers={
                BY_CONTROLLER_UID: index_by_controller_uid,
                ORPHANS_BY_NAMESPACE: index_orphans_by_namespace,
            },
        )
        self.rs_informer.add_handler(self._rs_added, self._rs_updated, self._rs_deleted)
        self.pod_informer.add_handler(self._pod_added, self._pod_updated, self._pod_deleted)

    # --- handlers: decide which keys to sync, and observe expectations ---------------------------

    def _rs_added(self, rs: Obj) -> None:
        self.enqueue_obj(rs)

    def _rs_updated(self, old: Obj, cur: Obj) -> None:
        self.enqueue_obj(cur)

    def _rs_deleted(self, rs: Obj) -> None:
        key = key_of(rs)
        self.expectations.delete(key)
        self.enqueue(key)

    def _resolve(self, namespace: str, ref: Mapping[str, Any] | None) -> Obj | None:
        if ref is None or ref.get("kind") != self.kind:
            return None
        rs = self.rs_informer.get(f"{namespace}/{ref.get('name')}")
        if rs is None or uid_of(rs) != ref.get("uid"):
            return None
        return rs

    def _matching_sets(self, pod: Mapping[str, Any]) -> list[Obj]:
        labels = labels_of(pod)
        out = []
        for rs in self.rs_informer.list(namespace_of(pod)):
            try:
                sel = selector_from_object(spec(rs).get("selector"))
            except SelectorError:
                continue
            if not sel.empty and sel.matches(labels):
                out.append(rs)
        return out

    def _pod_added(self, pod: Obj) -> None:
        if being_deleted(pod):
            self._pod_deleted(pod)
            return
        ref = controller_ref(pod)
        if ref is not None:
            rs = self._resolve(namespace_of(pod), ref)
            if rs is not None:
                key = key_of(rs)
                self.expectations.creation_observed(key)
                self.enqueue(key)
            return
        for rs in self._matching_sets(pod):
            self.enqueue_obj(rs)

    def _pod_updated(self, old: Obj, cur: Obj) -> None:
        if meta(old).get("resourceVersion") == meta(cur).get("resourceVersion"):
            return
        labels_changed = labels_of(old) != labels_of(cur)
        if being_deleted(cur):
            self._pod_deleted(cur)
            if labels_changed:
                self._pod_deleted(old)
            return
        cur_ref, old_ref = controller_ref(cur), controller_ref(old)
        ref_changed = (cur_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            rs = self._resolve(namespace_of(old), old_ref)
            if rs is not None:
                self.enqueue_obj(rs)
        if cur_ref is not None:
            rs = self._resolve(namespace_of(cur), cur_ref)
            if rs is not None:
                self.enqueue_obj(rs)
                min_ready = int_field(spec(rs), "minReadySeconds")
                if min_ready > 0 and not is_pod_ready(old) and is_pod_ready(cur):
                    self.enqueue_after(key_of(rs), float(min_ready) + 1.0)
            return
        if labels_changed or ref_changed:
            for rs in self._matching_sets(cur):
                self.enqueue_obj(rs)

    def _pod_deleted(self, pod: Obj) -> None:
        rs = self._resolve(namespace_of(pod), controller_ref(pod))
        if rs is None:
            return
        key = key_of(rs)
        self.expectations.deletion_observed_of(key, key_of(pod))
        self.enqueue(key)

    # --- sync ---------------------------------------------------------------------------------

    def _candidate_pods(self, rs: Mapping[str, Any]) -> list[Obj]:
        owned = self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(rs))
        orphans = self.pod_informer.by_index(ORPHANS_BY_NAMESPACE, namespace_of(rs))
        return owned + orphans

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
        candidates = [p for p in self._candidate_pods(rs) if is_pod_active(p)]
        decided = claim(rs, candidates, lambda p: sel.matches(labels_of(p)))
        pods = list(decided.owned)
        pods += await self._adopt_and_release(rs, decided.adopt, decided.release)

        manage_error: ApiError | None = None
        if needs_sync and not being_deleted(rs):
            try:
                await self._manage(key, rs, pods)
            except ApiError as exc:
                manage_error = exc

        now = self.now()
        new_status = calculate_status(rs, pods, now, manage_error.message if manage_error else None)
        if status_needs_update(rs, new_status):
            new_status["observedGeneration"] = generation_of(rs)
            updated = await update_status_with_retry(self.client, REPLICASETS, rs, new_status)
            rs = updated or rs
        if manage_error is not None:
            raise manage_error
        replicas = int_field(spec(rs), "replicas", 1)
        min_ready = int_field(spec(rs), "minReadySeconds")
        st = status(rs)
        if (
            min_ready > 0
            and int_field(st, "readyReplicas") == replicas
            and int_field(st, "availableReplicas") != replicas
        ):
            self.enqueue_after(key, float(min_ready))

    async def _adopt_and_release(
        self, rs: Obj, adopt: list[Mapping[str, Any]], release: list[Mapping[str, Any]]
    ) -> list[Obj]:
        adopted: list[Obj] = []
        if adopt and not await self._can_adopt(rs):
            adopt = []
        ref = new_controller_ref(rs, self.api_version, self.kind)
        for pod in adopt:
            try:
                adopted.append(
                    await self.client.patch(
                        *PODS,
                        name_of(pod),
                        adopt_patch(pod, ref),
                        namespace=namespace_of(pod),
                        patch_type="strategic",
                    )
                )
            except NotFound:
                continue
        for pod in release:
            try:
                await self.client.patch(
                    *PODS,
                    name_of(pod),
                    release_patch(pod, uid_of(rs)),
                    namespace=namespace_of(pod),
                    patch_type="strategic",
                )
            except NotFound:
                continue
        return adopted

    async def _can_adopt(self, rs: Mapping[str, Any]) -> bool:
        """RecheckDeletionTimestamp: adopt only if a fresh read shows the same, undeleted owner."""
        try:
            fresh = await self.client.get(*REPLICASETS, name_of(rs), namespace=namespace_of(rs))
        except NotFound:
            return False
        return uid_of(fresh) == uid_of(rs) and not being_deleted(fresh)

    async def _manage(self, key: str, rs: Obj, pods: list[Obj]) -> None:
        diff = manage_replicas(rs, pods, self._related_pods(rs), self.now())
        if diff.create:
            await self._create(key, rs, diff.create)
        elif diff.delete:
            await self._delete(key, rs, diff.delete)

    async def _create(self, key: str, rs: Obj, count: int) -> None:
        self.expectations.expect_creations(key, count)
        ref = new_controller_ref(rs, self.api_version, self.kind)
        template = spec(rs).get("template") or {}
        ns = namespace_of(rs)

        async def create_one() -> None:
            try:
                body = pod_from_template(rs, template, ref)
            except ValueError as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
            try:
                pod = await self.client.create(*PODS, body, namespace=ns)
            except ApiError as exc:
                if namespace_terminating(exc):
                    return  # every create fails now; the namespace is going away
                self.recorder.warning(rs, "FailedCreate", f"Error creating: {exc.message}")
                raise
            self.recorder.normal(rs, "SuccessfulCreate", f"Created pod: {name_of(pod)}")

        successes, err = await slow_start_batch(count, SLOW_START_INITIAL_BATCH, create_one)
        for _ in range(count - successes):
            self.expectations.creation_observed(key)
        if err is not None:
            raise err

    async def _delete(self, key: str, rs: Obj, victims: list[Mapping[str, Any]]) -> None:
        self.expectations.expect_deletions_of(key, [key_of(p) for p in victims])

        async def delete_one(pod: Mapping[str, Any]) -> ApiError | None:
            try:
                await self.client.delete(*PODS, name_of(pod), namespace=namespace_of(pod))
            except ApiError as exc:
                self.expectations.deletion_observed_of(key, key_of(pod))
                if isinstance(exc, NotFound):
                    return None
                self.recorder.warning(rs, "FailedDelete", f"Error deleting: {exc.message}")
                return exc
            self.recorder.normal(rs, "SuccessfulDelete", f"Deleted pod: {name_of(pod)}")
            return None

        results = await asyncio.gather(*(delete_one(p) for p in victims))
        for err in results:
            if err is not None:
                raise err
