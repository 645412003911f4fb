"""The Deployment controller: roll a pod template out through ReplicaSets, one step per sync.

A Deployment owns one ReplicaSet per pod template it has had, named `<deployment>-<hash>`
(see `history`). `sync(namespace/name)` claims the ReplicaSets its selector matches, then does
what kube's deployment controller does, in the same order and with the same arithmetic:

- paused: only scale and clean up; a replica-count change (the `desired-replicas` annotation of
  an active ReplicaSet differs from spec.replicas) is scaled proportionally across the active
  ReplicaSets — the largest share to the largest, leftovers to the biggest (`scale`);
- RollingUpdate: scale the new ReplicaSet up to at most replicas + maxSurge pods in total, then
  scale old ones down while at least replicas - maxUnavailable pods stay available (surge rounds
  up, unavailability rounds down, both zero means one unavailable);
- Recreate: scale every old ReplicaSet to zero, wait until their pods are gone, then scale the
  new one up;
- revisions: the new ReplicaSet gets revision max(old)+1 and the Deployment's annotations
  (change-cause), old ReplicaSets beyond revisionHistoryLimit (scaled to zero) are deleted;
- status: replicas, updatedReplicas, readyReplicas, availableReplicas, unavailableReplicas,
  observedGeneration, collisionCount, and the Available and Progressing conditions with kube's
  reasons (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated, NewReplicaSetAvailable,
  ProgressDeadlineExceeded, DeploymentPaused/Resumed, MinimumReplicasAvailable/Unavailable).

`DeploymentPlanner` is the pure part: given the Deployment, its ReplicaSets, their pods and the
time it works on copies and returns the ordered writes (create/update/delete ReplicaSet, status)
with the events each write earns. `DeploymentController.sync` claims, plans and executes.
Rollback (`kubectl rollout undo`) is done by kubectl itself: it copies an old ReplicaSet's
template into the Deployment, which this controller then sees as a template change back to an
existing ReplicaSet — so that ReplicaSet becomes the newest revision.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import Any

from orchestrator.apiclient import (
    DEPLOYMENTS,
    PODS,
    REPLICASETS,
    AlreadyExists,
    ApiError,
    Conflict,
    NotFound,
    Obj,
)
from orchestrator.selectors import SelectorError, selector_from_object

from .base import (
    BY_CONTROLLER_UID,
    ControllerContext,
    WorkloadController,
    index_by_controller_uid,
)
from .history import (
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    REVISION_ANNOTATION,
    compute_hash,
    equal_ignore_hash,
    int_annotation,
    max_revision,
    replicas_annotations_need_update,
    revision,
    set_new_replica_set_annotations,
    set_replicas_annotations,
)
from .util import (
    POD_TEMPLATE_HASH_LABEL,
    annotations_of,
    being_deleted,
    controller_ref,
    creation_time,
    format_time,
    generation_of,
    get_condition,
    int_field,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    parse_time,
    remove_condition,
    scaled_value,
    selector_is_empty,
    set_condition,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

COMPONENT = "deployment-controller"
CONFLICT_RETRY = 0.05
MAX_INT32 = 2**31 - 1

# Condition reasons (deploymentutil).
NEW_RS_REASON = "NewReplicaSetCreated"
FOUND_NEW_RS_REASON = "FoundNewReplicaSet"
RS_UPDATED_REASON = "ReplicaSetUpdated"
NEW_RS_AVAILABLE_REASON = "NewReplicaSetAvailable"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
PAUSED_REASON = "DeploymentPaused"
RESUMED_REASON = "DeploymentResumed"
FAILED_RS_CREATE_REASON = "ReplicaSetCreateError"
MIN_AVAILABLE_REASON = "MinimumReplicasAvailable"
MIN_UNAVAILABLE_REASON = "MinimumReplicasUnavailable"


# --- pure helpers over a Deployment --------------------------------------------------------------


def replicas_of(obj: Mapping[str, Any]) -> int:
    return int_field(spec(obj), "replicas", 1)


def is_rolling(d: Mapping[str, Any]) -> bool:
    return ((spec(d).get("strategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """deploymentutil.ResolveFenceposts: surge rounds up, unavailable rounds down; never both 0."""
    surge = scaled_value(max_surge, desired, True) if max_surge is not None else 0
    unavailable = scaled_value(max_unavailable, desired, False) if max_unavailable is not None else 0
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling_params(d: Mapping[str, Any]) -> tuple[Any, Any]:
    rolling = (spec(d).get("strategy") or {}).get("rollingUpdate") or {}
    return rolling.get("maxSurge", "25%"), rolling.get("maxUnavailable", "25%")


def max_surge(d: Mapping[str, Any]) -> int:
    if not is_rolling(d):
        return 0
    surge, _ = resolve_fenceposts(*_rolling_params(d), replicas_of(d))
    return surge


def max_unavailable(d: Mapping[str, Any]) -> int:
    if not is_rolling(d) or replicas_of(d) == 0:
        return 0
    _, unavailable = resolve_fenceposts(*_rolling_params(d), replicas_of(d))
    return min(unavailable, replicas_of(d))


def has_progress_deadline(d: Mapping[str, Any]) -> bool:
    pds = spec(d).get("progressDeadlineSeconds")
    return isinstance(pds, int) and pds != MAX_INT32


def sum_spec_replicas(rss: Sequence[Mapping[str, Any] | None]) -> int:
    return sum(replicas_of(rs) for rs in rss if rs is not None)


def sum_status(rss: Sequence[Mapping[str, Any] | None], field_name: str) -> int:
    return sum(int_field(status(rs), field_name) for rs in rss if rs is not None)


def filter_active(rss: Sequence[Mapping[str, Any] | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas_of(rs) > 0]  # type: ignore[misc]


def _ctime(rs: Mapping[str, Any]) -> float:
    return creation_time(rs) or 0.0


def by_creation(rss: Sequence[Obj]) -> list[Obj]:
    """ReplicaSetsByCreationTimestamp: oldest first, then by name."""
    return sorted(rss, key=lambda r: (_ctime(r), name_of(r)))


def _cmp(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def by_size_older(rss: Sequence[Obj]) -> list[Obj]:
    """ReplicaSetsBySizeOlder: larger first; equal sizes oldest first."""
    return sorted(rss, key=lambda r: (-replicas_of(r), _ctime(r), name_of(r)))


def by_size_newer(rss: Sequence[Obj]) -> list[Obj]:
    """ReplicaSetsBySizeNewer: larger first; equal sizes newest first."""

    def cmp(a: Obj, b: Obj) -> int:
        if replicas_of(a) != replicas_of(b):
            return _cmp(replicas_of(b), replicas_of(a))
        return -_cmp((_ctime(a), name_of(a)), (_ctime(b), name_of(b)))

    return sorted(rss, key=cmp_to_key(cmp))


def by_revision(rss: Sequence[Obj]) -> list[Obj]:
    return sorted(rss, key=lambda r: (revision(r), _ctime(r), name_of(r)))


def find_new_replica_set(d: Mapping[str, Any], rss: Sequence[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's (ignoring the hash label)."""
    template = spec(d).get("template")
    for rs in by_creation(rss):
        if equal_ignore_hash(spec(rs).get("template"), template):
            return rs
    return None


def new_condition(ctype: str, cstatus: str, reason: str, message: str, now: float) -> Obj:
    t = format_time(now)
    return {
        "type": ctype,
        "status": cstatus,
        "lastUpdateTime": t,
        "lastTransitionTime": t,
        "reason": reason,
        "message": message,
    }


def deployment_complete(d: Mapping[str, Any], st: Mapping[str, Any]) -> bool:
    n = replicas_of(d)
    return (
        int_field(st, "updatedReplicas") == n
        and int_field(st, "replicas") == n
        and int_field(st, "availableReplicas") == n
        and int_field(st, "observedGeneration") >= generation_of(d)
    )


def deployment_progressing(d: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    old = status(d)
    old_old = int_field(old, "replicas") - int_field(old, "updatedReplicas")
    new_old = int_field(new, "replicas") - int_field(new, "updatedReplicas")
    return (
        int_field(new, "updatedReplicas") > int_field(old, "updatedReplicas")
        or new_old < old_old
        or int_field(new, "readyReplicas") > int_field(old, "readyReplicas")
        or int_field(new, "availableReplicas") > int_field(old, "availableReplicas")
    )


def deployment_timed_out(d: Mapping[str, Any], st: Mapping[str, Any], now: float) -> bool:
    if not has_progress_deadline(d):
        return False
    cond = get_condition(st.get("conditions"), "Progressing")
    if cond is None:
        return False
    if cond.get("reason") == NEW_RS_AVAILABLE_REASON:
        return False
    if cond.get("reason") == TIMED_OUT_REASON:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + int_field(spec(d), "progressDeadlineSeconds") < now


def _omit_zero(st: Obj) -> Obj:
    return {k: v for k, v in st.items() if v not in (0, None, [], {})}


# --- the planner ---------------------------------------------------------------------------------


@dataclass
class Write:
    """One API write of a plan and the Deployment events it earns once it succeeds."""

    op: str  # create_rs | update_rs | delete_rs | update_status | event
    obj: Obj
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)


@dataclass
class Plan:
    writes: list[Write] = field(default_factory=list)
    requeue_after: float | None = None
    requeue_soon: bool = False


class DeploymentPlanner:
    """kube's deployment sync over copies: call `plan()`, get the writes in order."""

    def __init__(
        self,
        deployment: Mapping[str, Any],
        replica_sets: Sequence[Mapping[str, Any]],
        pod_map: Mapping[str, Sequence[Mapping[str, Any]]] | None,
        now: float,
    ) -> None:
        self.d: Obj = copy.deepcopy(dict(deployment))
        self.rss: list[Obj] = [copy.deepcopy(dict(rs)) for rs in replica_sets]
        self.pod_map = pod_map or {}
        self.now = now
        self.out = Plan()

    # --- entry ---------------------------------------------------------------------------------

    def plan(self) -> Plan:
        d = self.d
        if selector_is_empty(spec(d).get("selector")):
            self.out.writes.append(
                Write(
                    "event",
                    {},
                    [
                        (
                            "Warning",
                            "SelectingAll",
                            "This deployment is selecting all pods. A non-empty selector is required.",
                        )
                    ],
                )
            )
            if int_field(status(d), "observedGeneration") < generation_of(d):
                st = dict(status(d))
                st["observedGeneration"] = generation_of(d)
                self._write_status(st)
            return self.out
        if being_deleted(d):
            self.sync_status_only()
            return self.out
        self.check_paused_conditions()
        if spec(d).get("paused"):
            self.sync()
            return self.out
        if self.is_scaling_event():
            self.sync()
            return self.out
        if is_rolling(d):
            self.rollout_rolling()
        else:
            self.rollout_recreate()
        return self.out

    # --- writes -------------------------------------------------------------------------------

    def _write_status(self, new_status: Obj) -> None:
        self.d["status"] = new_status
        self.out.writes.append(Write("update_status", copy.deepcopy(self.d)))

    def _update_rs(self, rs: Obj, events: list[tuple[str, str, str]] | None = None) -> None:
        self.out.writes.append(Write("update_rs", copy.deepcopy(rs), events or []))

    def _conditions(self) -> list[Obj]:
        st = self.d.setdefault("status", {})
        conds = st.get("conditions")
        if not isinstance(conds, list):
            conds = st["conditions"] = []
        return conds

    # --- revisions and the new ReplicaSet ------------------------------------------------------

    def old_replica_sets(self, new_rs: Obj | None) -> list[Obj]:
        return [rs for rs in self.rss if new_rs is None or rs is not new_rs]

    def get_all_replica_sets_and_sync_revision(self, create: bool) -> tuple[Obj | None, list[Obj]]:
        existing = find_new_replica_set(self.d, self.rss)
        old = self.old_replica_sets(existing)
        new_rs = self.get_new_replica_set(existing, old, create)
        return new_rs, self.old_replica_sets(new_rs)

    def _set_deployment_revision(self, rev: str) -> bool:
        meta_ = self.d.setdefault("metadata", {})
        ann = meta_.get("annotations")
        if not isinstance(ann, dict):
            ann = meta_["annotations"] = {}
        if ann.get(REVISION_ANNOTATION) == rev:
            return False
        ann[REVISION_ANNOTATION] = rev
        return True

    def get_new_replica_set(self, existing: Obj | None, old: list[Obj], create: bool) -> Obj | None:
        d = self.d
        new_revision = max_revision(old) + 1
        desired, max_total = replicas_of(d), replicas_of(d) + max_surge(d)
        if existing is not None:
            updated = set_new_replica_set_annotations(d, existing, new_revision, True, desired, max_total)
            min_ready = int_field(spec(d), "minReadySeconds")
            if updated or int_field(spec(existing), "minReadySeconds") != min_ready:
                existing["spec"]["minReadySeconds"] = min_ready
                self._update_rs(existing)
                return existing
            needs_update = self._set_deployment_revision(
                annotations_of(existing).get(REVISION_ANNOTATION, "")
            )
            if has_progress_deadline(d) and get_condition(self._conditions(), "Progressing") is None:
                msg = f'Found new replica set "{name_of(existing)}"'
                set_condition(
                    self._conditions(),
                    new_condition("Progressing", "True", FOUND_NEW_RS_REASON, msg, self.now),
                )
                needs_update = True
            if needs_update:
                self._write_status(dict(status(d)))
            return existing
        if not create:
            return None
        template = copy.deepcopy(spec(d).get("template") or {})
        collision = status(d).get("collisionCount")
        pod_hash = compute_hash(template, collision if isinstance(collision, int) else None)
        tmeta = template.setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), POD_TEMPLATE_HASH_LABEL: pod_hash}
        selector = copy.deepcopy(spec(d).get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), POD_TEMPLATE_HASH_LABEL: pod_hash}
        new_rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name_of(d)}-{pod_hash}",
                "namespace": namespace_of(d),
                "ownerReferences": [new_controller_ref(d, "apps/v1", "Deployment")],
                "labels": dict(tmeta["labels"]),
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": int_field(spec(d), "minReadySeconds"),
                "selector": selector,
                "template": template,
            },
            "status": {},
        }
        count = self.new_rs_new_replicas([*old, new_rs], new_rs)
        new_rs["spec"]["replicas"] = count
        set_new_replica_set_annotations(d, new_rs, new_revision, False, desired, max_total)
        events = []
        if count > 0:
            events.append(
                ("Normal", "ScalingReplicaSet", f"Scaled up replica set {name_of(new_rs)} from 0 to {count}")
            )
        self.out.writes.append(Write("create_rs", copy.deepcopy(new_rs), events))
        self.rss.append(new_rs)
        needs_update = self._set_deployment_revision(str(new_revision))
        if has_progress_deadline(d):
            msg = f'Created new replica set "{name_of(new_rs)}"'
            set_condition(
                self._conditions(), new_condition("Progressing", "True", NEW_RS_REASON, msg, self.now)
            )
            needs_update = True
        if needs_update:
            self._write_status(dict(status(d)))
        return new_rs

    def new_rs_new_replicas(self, all_rss: Sequence[Obj], new_rs: Obj) -> int:
        d = self.d
        if not is_rolling(d):
            return replicas_of(d)
        current = sum_spec_replicas(all_rss)
        max_total = replicas_of(d) + max_surge(d)
        if current >= max_total:
            return replicas_of(new_rs)
        scale_up = min(max_total - current, replicas_of(d) - replicas_of(new_rs))
        return replicas_of(new_rs) + scale_up

    # --- scaling ------------------------------------------------------------------------------

    def scale_replica_set(self, rs: Obj, new_scale: int) -> bool:
        d = self.d
        old_scale = replicas_of(rs)
        size_needs = old_scale != new_scale
        desired, max_total = replicas_of(d), replicas_of(d) + max_surge(d)
        if not size_needs and not replicas_annotations_need_update(rs, desired, max_total):
            return False
        rs.setdefault("spec", {})["replicas"] = new_scale
        set_replicas_annotations(rs, desired, max_total)
        events = []
        if size_needs:
            op = "up" if old_scale < new_scale else "down"
            events.append(
                (
                    "Normal",
                    "ScalingReplicaSet",
                    f"Scaled {op} replica set {name_of(rs)} from {old_scale} to {new_scale}",
                )
            )
        self._update_rs(rs, events)
        return size_needs

    def scale_and_record(self, rs: Obj, new_scale: int) -> bool:
        if replicas_of(rs) == new_scale:
            return False
        return self.scale_replica_set(rs, new_scale)

    def is_scaling_event(self) -> bool:
        new_rs, old = self.get_all_replica_sets_and_sync_revision(False)
        for rs in filter_active([*old, new_rs]):
            desired = int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
            if desired is not None and desired != replicas_of(self.d):
                return True
        return False

    def find_active_or_latest(self, new_rs: Obj | None, old: list[Obj]) -> Obj | None:
        if new_rs is None and not old:
            return None
        newest_first = list(reversed(by_creation(old)))
        active = filter_active([*newest_first, new_rs])
        if not active:
            return new_rs if new_rs is not None else newest_first[0]
        if len(active) == 1:
            return active[0]
        return None

    def is_saturated(self, rs: Obj | None) -> bool:
        if rs is None:
            return False
        desired = int_annotation(rs, DESIRED_REPLICAS_ANNOTATION)
        n = replicas_of(self.d)
        return (
            desired is not None
            and replicas_of(rs) == n
            and desired == n
            and int_field(status(rs), "availableReplicas") == n
        )

    def replica_set_fraction(self, rs: Obj) -> int:
        d = self.d
        if replicas_of(d) == 0:
            return -replicas_of(rs)
        deployment_replicas = replicas_of(d) + max_surge(d)
        annotated = int_annotation(rs, MAX_REPLICAS_ANNOTATION)
        if annotated is None:
            annotated = int_field(status(d), "replicas")
        if annotated <= 0:
            return 0
        new_size = replicas_of(rs) * deployment_replicas / annotated
        return int(math.floor(new_size + 0.5)) - replicas_of(rs)

    def proportion(self, rs: Obj, to_add: int, added: int) -> int:
        if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
            return 0
        fraction = self.replica_set_fraction(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    def scale(self, new_rs: Obj | None, old: list[Obj]) -> None:
        d = self.d
        target = self.find_active_or_latest(new_rs, old)
        if target is not None:
            if replicas_of(target) != replicas_of(d):
                self.scale_and_record(target, replicas_of(d))
            return
        if self.is_saturated(new_rs):
            for rs in filter_active(old):
                self.scale_and_record(rs, 0)
            return
        if not is_rolling(d):
            return
        active = filter_active([*old, new_rs])
        allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
        to_add = allowed - sum_spec_replicas(active)
        if to_add > 0:
            active = by_size_newer(active)
        elif to_add < 0:
            active = by_size_older(active)
        added = 0
        sizes: dict[str, int] = {}
        for rs in active:
            if to_add != 0:
                p = self.proportion(rs, to_add, added)
                sizes[name_of(rs)] = replicas_of(rs) + p
                added += p
            else:
                sizes[name_of(rs)] = replicas_of(rs)
        for i, rs in enumerate(active):
            if i == 0 and to_add != 0:
                sizes[name_of(rs)] = max(0, sizes[name_of(rs)] + to_add - added)
            self.scale_replica_set(rs, sizes[name_of(rs)])

    # --- rolling update -----------------------------------------------------------------------

    def rollout_rolling(self) -> None:
        new_rs, old = self.get_all_replica_sets_and_sync_revision(True)
        all_rss = [*old, new_rs] if new_rs is not None else list(old)
        if new_rs is not None and self.reconcile_new_replica_set(all_rss, new_rs):
            self.sync_rollout_status(all_rss, new_rs)
            return
        if new_rs is not None and self.reconcile_old_replica_sets(all_rss, filter_active(old), new_rs):
            self.sync_rollout_status(all_rss, new_rs)
            return
        if deployment_complete(self.d, status(self.d)):
            self.cleanup(old)
        self.sync_rollout_status(all_rss, new_rs)

    def reconcile_new_replica_set(self, all_rss: list[Obj], new_rs: Obj) -> bool:
        n = replicas_of(self.d)
        if replicas_of(new_rs) == n:
            return False
        if replicas_of(new_rs) > n:
            return self.scale_and_record(new_rs, n)
        return self.scale_and_record(new_rs, self.new_rs_new_replicas(all_rss, new_rs))

    def reconcile_old_replica_sets(self, all_rss: list[Obj], old_active: list[Obj], new_rs: Obj) -> bool:
        if sum_spec_replicas(old_active) == 0:
            return False
        all_pods = sum_spec_replicas(all_rss)
        min_available = replicas_of(self.d) - max_unavailable(self.d)
        new_unavailable = replicas_of(new_rs) - int_field(status(new_rs), "availableReplicas")
        max_scaled_down = all_pods - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = self.cleanup_unhealthy_replicas(old_active, max_scaled_down)
        scaled = self.scale_down_old_for_rolling_update([*old_active, new_rs], old_active)
        return cleaned + scaled > 0

    def cleanup_unhealthy_replicas(self, old: list[Obj], max_cleanup: int) -> int:
        """Scale down old ReplicaSets' unavailable pods first: they serve nobody."""
        total = 0
        for rs in by_creation(old):
            if total >= max_cleanup:
                break
            want, available = replicas_of(rs), int_field(status(rs), "availableReplicas")
            if want == 0 or want == available:
                continue
            down = min(max_cleanup - total, want - available)
            self.scale_and_record(rs, want - down)
            total += down
        return total

    def scale_down_old_for_rolling_update(self, all_rss: list[Obj], old: list[Obj]) -> int:
        min_available = replicas_of(self.d) - max_unavailable(self.d)
        available = sum_status(all_rss, "availableReplicas")
        if available <= min_available:
            return 0
        to_scale = available - min_available
        total = 0
        for rs in by_creation(old):
            if total >= to_scale:
                break
            if replicas_of(rs) == 0:
                continue
            down = min(replicas_of(rs), to_scale - total)
            self.scale_and_record(rs, replicas_of(rs) - down)
            total += down
        return total

    # --- recreate -----------------------------------------------------------------------------

    def rollout_recreate(self) -> None:
        new_rs, old = self.get_all_replica_sets_and_sync_revision(False)
        all_rss = [*old, new_rs] if new_rs is not None else list(old)
        scaled_down = False
        for rs in filter_active(old):
            if self.scale_and_record(rs, 0):
                scaled_down = True
        if scaled_down:
            self.sync_rollout_status(all_rss, new_rs)
            return
        if self.old_pods_running(new_rs, old):
            self.sync_rollout_status(all_rss, new_rs)
            return
        if new_rs is None:
            new_rs, old = self.get_all_replica_sets_and_sync_revision(True)
            all_rss = [*old, new_rs] if new_rs is not None else list(old)
        if new_rs is not None:
            self.scale_and_record(new_rs, replicas_of(self.d))
        if deployment_complete(self.d, status(self.d)):
            self.cleanup(old)
        self.sync_rollout_status(all_rss, new_rs)

    def old_pods_running(self, new_rs: Obj | None, old: list[Obj]) -> bool:
        if sum_status(old, "replicas") > 0:
            return True
        new_uid = uid_of(new_rs) if new_rs is not None else None
        for rs_uid, pods in self.pod_map.items():
            if rs_uid == new_uid:
                continue
            for pod in pods:
                if status(pod).get("phase") not in ("Failed", "Succeeded"):
                    return True
        return False

    # --- paused, scaling, cleanup -----------------------------------------------------------------

    def check_paused_conditions(self) -> None:
        d = self.d
        if not has_progress_deadline(d):
            return
        cond = get_condition(self._conditions(), "Progressing")
        if cond is not None and cond.get("reason") == TIMED_OUT_REASON:
            return
        paused_cond = cond is not None and cond.get("reason") == PAUSED_REASON
        if spec(d).get("paused") and not paused_cond:
            c = new_condition("Progressing", "Unknown", PAUSED_REASON, "Deployment is paused", self.now)
        elif not spec(d).get("paused") and paused_cond:
            c = new_condition("Progressing", "Unknown", RESUMED_REASON, "Deployment is resumed", self.now)
        else:
            return
        set_condition(self._conditions(), c)
        self._write_status(dict(status(d)))

    def sync(self) -> None:
        new_rs, old = self.get_all_replica_sets_and_sync_revision(False)
        self.scale(new_rs, old)
        if spec(self.d).get("paused"):
            self.cleanup(old)
        all_rss = [*old, new_rs] if new_rs is not None else list(old)
        self.sync_deployment_status(all_rss, new_rs)

    def sync_status_only(self) -> None:
        new_rs, old = self.get_all_replica_sets_and_sync_revision(False)
        all_rss = [*old, new_rs] if new_rs is not None else list(old)
        self.sync_deployment_status(all_rss, new_rs)

    def cleanup(self, old: list[Obj]) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond revisionHistoryLimit."""
        limit = spec(self.d).get("revisionHistoryLimit")
        if not isinstance(limit, int) or limit == MAX_INT32:
            return
        alive = [rs for rs in old if not being_deleted(rs)]
        diff = len(alive) - limit
        if diff <= 0:
            return
        for rs in by_revision(alive)[:diff]:
            st = status(rs)
            if (
                int_field(st, "replicas") != 0
                or replicas_of(rs) != 0
                or generation_of(rs) > int_field(st, "observedGeneration")
                or being_deleted(rs)
            ):
                continue
            self.out.writes.append(Write("delete_rs", copy.deepcopy(rs)))

    # --- status -------------------------------------------------------------------------------

    def calculate_status(self, all_rss: list[Obj], new_rs: Obj | None) -> Obj:
        d = self.d
        available = sum_status(all_rss, "availableReplicas")
        total = sum_spec_replicas(all_rss)
        st: Obj = {
            "observedGeneration": generation_of(d),
            "replicas": sum_status(all_rss, "replicas"),
            "updatedReplicas": sum_status([new_rs], "replicas"),
            "readyReplicas": sum_status(all_rss, "readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
        }
        st = _omit_zero(st)
        collision = status(d).get("collisionCount")
        if isinstance(collision, int):
            st["collisionCount"] = collision
        conditions = [dict(c) for c in status(d).get("conditions") or () if isinstance(c, Mapping)]
        if available >= replicas_of(d) - max_unavailable(d):
            cond = new_condition(
                "Available", "True", MIN_AVAILABLE_REASON, "Deployment has minimum availability.", self.now
            )
        else:
            cond = new_condition(
                "Available",
                "False",
                MIN_UNAVAILABLE_REASON,
                "Deployment does not have minimum availability.",
                self.now,
            )
        set_condition(conditions, cond)
        st["conditions"] = conditions
        return st

    def sync_deployment_status(self, all_rss: list[Obj], new_rs: Obj | None) -> None:
        new_status = self.calculate_status(all_rss, new_rs)
        if new_status != dict(status(self.d)):
            self._write_status(new_status)

    def sync_rollout_status(self, all_rss: list[Obj], new_rs: Obj | None) -> None:
        d = self.d
        new_status = self.calculate_status(all_rss, new_rs)
        conditions: list[Obj] = new_status["conditions"]
        if not has_progress_deadline(d):
            remove_condition(conditions, "Progressing")
        current = get_condition(status(d).get("conditions"), "Progressing")
        complete = (
            int_field(new_status, "replicas") == int_field(new_status, "updatedReplicas")
            and current is not None
            and current.get("reason") == NEW_RS_AVAILABLE_REASON
        )
        if has_progress_deadline(d) and not complete:
            subject = (
                f'ReplicaSet "{name_of(new_rs)}"' if new_rs is not None else f'Deployment "{name_of(d)}"'
            )
            if deployment_complete(d, new_status):
                c = new_condition(
                    "Progressing",
                    "True",
                    NEW_RS_AVAILABLE_REASON,
                    f"{subject} has successfully progressed.",
                    self.now,
                )
                set_condition(conditions, c)
            elif deployment_progressing(d, new_status):
                c = new_condition(
                    "Progressing", "True", RS_UPDATED_REASON, f"{subject} is progressing.", self.now
                )
                if (
                    current is not None
                    and current.get("status") == "True"
                    and current.get("lastTransitionTime")
                ):
                    c["lastTransitionTime"] = current["lastTransitionTime"]
                remove_condition(conditions, "Progressing")
                set_condition(conditions, c)
            elif deployment_timed_out(d, new_status, self.now):
                c = new_condition(
                    "Progressing",
                    "False",
                    TIMED_OUT_REASON,
                    f"{subject} has timed out progressing.",
                    self.now,
                )
                set_condition(conditions, c)
        failures = self.replica_failures(all_rss, new_rs)
        if failures:
            set_condition(conditions, failures[0])
        else:
            remove_condition(conditions, "ReplicaFailure")
        if new_status == dict(status(d)):
            self.requeue_stuck(new_status)
            return
        self._write_status(new_status)

    def replica_failures(self, all_rss: list[Obj], new_rs: Obj | None) -> list[Obj]:
        def convert(c: Mapping[str, Any]) -> Obj:
            return {
                "type": "ReplicaFailure",
                "status": c.get("status"),
                "lastUpdateTime": c.get("lastTransitionTime"),
                "lastTransitionTime": c.get("lastTransitionTime"),
                "reason": c.get("reason"),
                "message": c.get("message"),
            }

        for group in ([new_rs] if new_rs is not None else [], all_rss):
            found = [
                convert(c)
                for rs in group
                for c in status(rs).get("conditions") or ()
                if isinstance(c, Mapping) and c.get("type") == "ReplicaFailure"
            ]
            if found:
                return found
        return []

    def requeue_stuck(self, new_status: Mapping[str, Any]) -> None:
        """Come back when the progress deadline passes, to report ProgressDeadlineExceeded."""
        d = self.d
        current = get_condition(status(d).get("conditions"), "Progressing")
        if not has_progress_deadline(d) or current is None:
            return
        if deployment_complete(d, new_status) or current.get("reason") == TIMED_OUT_REASON:
            return
        since = parse_time(current.get("lastUpdateTime"))
        if since is None:
            return
        after = since + int_field(spec(d), "progressDeadlineSeconds") - self.now
        if after < 1:
            self.out.requeue_soon = True
        else:
            self.out.requeue_after = after + 1


# --- the controller ------------------------------------------------------------------------------


class DeploymentController(WorkloadController):
    name = "deployment"
    default_workers = 5
    api_version = "apps/v1"
    kind = "Deployment"
    owner_gvr = DEPLOYMENTS
    owned_gvr = REPLICASETS

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.d_informer = self.owners
        self.rs_informer = self.owned
        self.pod_informer = self.informer(PODS, indexers={BY_CONTROLLER_UID: index_by_controller_uid})
        self.pod_informer.add_handler(None, None, self._pod_deleted)

    # --- handlers -------------------------------------------------------------------------------

    def _pod_deleted(self, pod: Obj) -> None:
        """A Recreate rollout waits for the old pods to be gone: wake it when one goes."""
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.rs_informer.get(f"{namespace_of(pod)}/{ref.get('name')}")
        if rs is None:
            return
        d = self.resolve_owner(namespace_of(rs), controller_ref(rs))
        if d is not None and not is_rolling(d):
            self.enqueue_obj(d)

    # --- sync -------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        d = self.d_informer.get(key)
        if d is None:
            return
        try:
            sel = selector_from_object(spec(d).get("selector"))
        except SelectorError as exc:
            log.info("%s: invalid selector: %s", key, exc)
            return
        rss = await self.claim_owned(d, lambda rs: not sel.empty and sel.matches(labels_of(rs)))
        pod_map = {uid_of(rs): self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(rs)) for rs in rss}
        try:
            plan = DeploymentPlanner(d, rss, pod_map, self.now()).plan()
        except ValueError as exc:  # e.g. a maxSurge that is not a number or a percentage
            log.info("%s: %s", key, exc)
            return
        try:
            await self._execute(d, plan)
        except Conflict as exc:
            # Our cache is behind what the server has (often our own last write): look again
            # shortly, without the growing back-off a failure would earn.
            log.debug("%s: %s; syncing again", key, exc)
            self.enqueue_after(key, CONFLICT_RETRY)
            return
        if plan.requeue_soon:
            self.queue.add_rate_limited(key)
        elif plan.requeue_after is not None:
            self.enqueue_after(key, plan.requeue_after)

    async def _execute(self, d: Obj, plan: Plan) -> None:
        """Send the plan's writes in order; stop at the first failure (the key is retried)."""
        latest_rv: dict[tuple[str, str], str] = {}
        ns = namespace_of(d)

        def fresh(kind: str, obj: Obj) -> Obj:
            rv = latest_rv.get((kind, name_of(obj)))
            if rv:
                obj["metadata"]["resourceVersion"] = rv
            return obj

        def remember(kind: str, obj: Obj) -> None:
            latest_rv[(kind, name_of(obj))] = str(meta(obj).get("resourceVersion") or "")

        for write in plan.writes:
            if write.op == "create_rs":
                try:
                    created = await self.client.create(*REPLICASETS, write.obj, namespace=ns)
                except AlreadyExists:
                    await self._on_rs_exists(d, write.obj)
                    return
                except ApiError as exc:
                    await self._on_rs_create_failed(d, write.obj, exc)
                    raise
                remember("rs", created)
            elif write.op == "update_rs":
                updated = await self.client.update(*REPLICASETS, fresh("rs", write.obj), namespace=ns)
                remember("rs", updated)
            elif write.op == "delete_rs":
                try:
                    await self.client.delete(
                        *REPLICASETS,
                        name_of(write.obj),
                        namespace=ns,
                        preconditions={"uid": uid_of(write.obj)},
                    )
                except NotFound:
                    pass
            elif write.op == "update_status":
                await self._sync_revision_annotation(d, write.obj, latest_rv)
                updated = await self.client.update_status(*DEPLOYMENTS, fresh("d", write.obj), namespace=ns)
                remember("d", updated)
            for etype, reason, message in write.events:
                self.recorder.event(d, etype, reason, message)

    async def _sync_revision_annotation(
        self, d: Obj, planned: Obj, latest_rv: dict[tuple[str, str], str]
    ) -> None:
        """A status update does not carry metadata here, so the Deployment's revision annotation
        is written with its own patch when it changes."""
        want = annotations_of(planned).get(REVISION_ANNOTATION)
        have = annotations_of(d).get(REVISION_ANNOTATION)
        if want is None or want == have or latest_rv.get(("d-ann", name_of(d))) == want:
            return
        patched = await self.client.patch(
            *DEPLOYMENTS,
            name_of(d),
            {"metadata": {"annotations": {REVISION_ANNOTATION: want}}},
            namespace=namespace_of(d),
        )
        latest_rv[("d", name_of(d))] = str(meta(patched).get("resourceVersion") or "")
        latest_rv[("d-ann", name_of(d))] = want

    async def _on_rs_exists(self, d: Obj, planned: Obj) -> None:
        """The new ReplicaSet's name is taken: ours with the same template (a stale cache) is fine;
        anything else is a hash collision, which bumps status.collisionCount for a new name."""
        try:
            existing = await self.client.get(*REPLICASETS, name_of(planned), namespace=namespace_of(d))
        except NotFound:
            self.enqueue(key_of(d))
            return
        ref = controller_ref(existing)
        if (
            ref is not None
            and ref.get("uid") == uid_of(d)
            and equal_ignore_hash(spec(existing).get("template"), spec(d).get("template"))
        ):
            self.enqueue(key_of(d))
            return
        await self.record_hash_collision(d, name_of(planned))
        self.enqueue(key_of(d))

    async def _on_rs_create_failed(self, d: Obj, planned: Obj, exc: ApiError) -> None:
        msg = f'Failed to create new replica set "{name_of(planned)}": {exc.message}'
        self.recorder.warning(d, FAILED_RS_CREATE_REASON, msg)
        if not has_progress_deadline(d):
            return
        st = copy.deepcopy(dict(status(d)))
        conds = st.setdefault("conditions", [])
        set_condition(conds, new_condition("Progressing", "False", FAILED_RS_CREATE_REASON, msg, self.now()))
        try:
            await self.client.update_status(*DEPLOYMENTS, {**d, "status": st}, namespace=namespace_of(d))
        except ApiError:
            pass
