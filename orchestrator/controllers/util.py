"""What the controllers share: pod readiness and ranking, owner references, conditions, times.

These are the small pure helpers kube's `pkg/controller` and `pkg/api/v1/pod` give every
controller — `IsPodReady`, `IsPodAvailable`, `ActivePodsWithRanks`, `GetControllerOf`, the
adopt/release decision of `ControllerRefManager`, `GetScaledValueFromIntOrPercent`, taint and
toleration matching — over the plain JSON objects the informers cache. Nothing here does I/O
or reads a clock: `now` is always an argument (seconds since the epoch), so every decision is
testable over a snapshot.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import Any

from orchestrator.selectors import (
    DOES_NOT_EXIST,
    EXISTS,
    GREATER_THAN,
    IN,
    LESS_THAN,
    NOT_IN,
    Requirement,
    SelectorError,
    selector_from_object,
)

Obj = dict[str, Any]

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
FOREGROUND_FINALIZER = "foregroundDeletion"
ORPHAN_FINALIZER = "orphan"

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
TAINT_MEMORY_PRESSURE = "node.kubernetes.io/memory-pressure"
TAINT_DISK_PRESSURE = "node.kubernetes.io/disk-pressure"
TAINT_PID_PRESSURE = "node.kubernetes.io/pid-pressure"
TAINT_NETWORK_UNAVAILABLE = "node.kubernetes.io/network-unavailable"
NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE = "NoSchedule", "NoExecute", "PreferNoSchedule"


# --- objects -----------------------------------------------------------------------------------


def meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    m = (obj or {}).get("metadata")
    return m if isinstance(m, Mapping) else {}


def spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    s = (obj or {}).get("spec")
    return s if isinstance(s, Mapping) else {}


def status(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    s = (obj or {}).get("status")
    return s if isinstance(s, Mapping) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("namespace") or "")


def uid_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("uid") or "")


def key_of(obj: Mapping[str, Any]) -> str:
    ns = namespace_of(obj)
    return f"{ns}/{name_of(obj)}" if ns else name_of(obj)


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    labels = meta(obj).get("labels")
    return dict(labels) if isinstance(labels, Mapping) else {}


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    ann = meta(obj).get("annotations")
    return dict(ann) if isinstance(ann, Mapping) else {}


def being_deleted(obj: Mapping[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def generation_of(obj: Mapping[str, Any]) -> int:
    return int(meta(obj).get("generation") or 0)


def int_field(mapping: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


# --- time ----------------------------------------------------------------------------------------


def parse_time(value: Any) -> float | None:
    """A metav1.Time / MicroTime string as seconds since the epoch (None when unset or bad)."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def format_time(ts: float) -> str:
    """metav1.Time: RFC 3339, UTC, whole seconds (what kube serializes)."""
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def creation_time(obj: Mapping[str, Any]) -> float | None:
    return parse_time(meta(obj).get("creationTimestamp"))


# --- IntOrString -----------------------------------------------------------------------------------


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, "25%" of `total` rounded up or down."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if not value.endswith("%"):
            raise ValueError(
                f"invalid value for IntOrString: invalid type: string is not a percentage: {value!r}"
            )
        try:
            percent = int(value[:-1])
        except ValueError:
            raise ValueError(f"invalid value {value!r}: not an integer percentage") from None
        return -(-percent * total // 100) if round_up else percent * total // 100
    raise ValueError(f"invalid value for IntOrString: {value!r}")


# --- pods ------------------------------------------------------------------------------------------


def pod_condition(pod: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in status(pod).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond
    return None


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    cond = pod_condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def pod_ready_time(pod: Mapping[str, Any]) -> float | None:
    """When a ready pod became ready (its Ready condition's lastTransitionTime)."""
    cond = pod_condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def is_pod_available(pod: Mapping[str, Any], min_ready_seconds: int, now: float) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    if not is_pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = pod_ready_time(pod)
    return since is not None and since + min_ready_seconds < now


def is_pod_terminal(pod: Mapping[str, Any]) -> bool:
    return status(pod).get("phase") in ("Succeeded", "Failed")


def is_pod_active(pod: Mapping[str, Any]) -> bool:
    """controller.IsPodActive: not finished and not being deleted."""
    return not is_pod_terminal(pod) and not being_deleted(pod)


def max_container_restarts(pod: Mapping[str, Any]) -> int:
    counts = [
        int_field(c, "restartCount")
        for c in status(pod).get("containerStatuses") or ()
        if isinstance(c, Mapping)
    ]
    return max(counts, default=0)


def deletion_cost(pod: Mapping[str, Any]) -> int:
    """The pod-deletion-cost annotation (0 when absent or not an int32)."""
    raw = annotations_of(pod).get(DELETION_COST_ANNOTATION)
    try:
        value = int(str(raw))
    except ValueError:
        return 0
    return value if -(2**31) <= value < 2**31 else 0


_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


def _log_rank(ts: float, now: float) -> int:
    delta_ns = int((now - ts) * 1e9)
    return int(math.log2(delta_ns)) if delta_ns > 0 else -1


def _after_or_zero(t1: float | None, t2: float | None) -> bool:
    if t1 is None or t2 is None:
        return t1 is None
    return t1 > t2


def _time_less(t1: float | None, t2: float | None, uid1: str, uid2: str, now: float | None) -> bool | None:
    """kube's LogarithmicScaleDown comparison: the more recent time first, but times in the same
    power-of-two age bucket are ordered by UID (pseudo-random), so no one pod is always picked."""
    if t1 == t2:
        return None
    if now is None or t1 is None or t2 is None:
        return _after_or_zero(t1, t2)
    diff = _log_rank(t1, now) - _log_rank(t2, now)
    if diff == 0:
        return uid1 < uid2
    return diff < 0


def deletion_less(
    a: Mapping[str, Any], b: Mapping[str, Any], rank_a: int, rank_b: int, now: float | None
) -> bool:
    """ActivePodsWithRanks.Less: True when `a` should be deleted before `b`."""
    node_a, node_b = spec(a).get("nodeName") or "", spec(b).get("nodeName") or ""
    # 1. unassigned < assigned
    if node_a != node_b and (not node_a or not node_b):
        return not node_a
    # 2. Pending < Unknown < Running
    pa = _PHASE_ORDINAL.get(status(a).get("phase") or "", 0)
    pb = _PHASE_ORDINAL.get(status(b).get("phase") or "", 0)
    if pa != pb:
        return pa < pb
    # 3. not ready < ready
    ready_a, ready_b = is_pod_ready(a), is_pod_ready(b)
    if ready_a != ready_b:
        return not ready_a
    # 4. lower pod-deletion-cost first
    ca, cb = deletion_cost(a), deletion_cost(b)
    if ca != cb:
        return ca < cb
    # 5. doubled up (more related pods on the same node) first
    if rank_a != rank_b:
        return rank_a > rank_b
    # 6. ready for less time first
    if ready_a and ready_b:
        less = _time_less(pod_ready_time(a), pod_ready_time(b), uid_of(a), uid_of(b), now)
        if less is not None:
            return less
    # 7. more container restarts first
    ra, rb = max_container_restarts(a), max_container_restarts(b)
    if ra != rb:
        return ra > rb
    # 8. newer first
    less = _time_less(creation_time(a), creation_time(b), uid_of(a), uid_of(b), now)
    return bool(less)


def rank_pods_for_deletion(
    pods: Sequence[Mapping[str, Any]], related: Iterable[Mapping[str, Any]], now: float | None
) -> list[Mapping[str, Any]]:
    """`pods` in the order a ReplicaSet deletes them (getPodsRankedByRelatedPodsOnSameNode +
    ActivePodsWithRanks): the rank of a pod is how many active related pods share its node."""
    on_node: dict[str, int] = {}
    for pod in related:
        if is_pod_active(pod):
            node = spec(pod).get("nodeName") or ""
            on_node[node] = on_node.get(node, 0) + 1
    ranked = [(pod, on_node.get(spec(pod).get("nodeName") or "", 0)) for pod in pods]

    def cmp(x: tuple[Mapping[str, Any], int], y: tuple[Mapping[str, Any], int]) -> int:
        if deletion_less(x[0], y[0], x[1], y[1], now):
            return -1
        if deletion_less(y[0], x[0], y[1], x[1], now):
            return 1
        return 0

    return [pod for pod, _ in sorted(ranked, key=cmp_to_key(cmp))]


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


# --- owner references ------------------------------------------------------------------------------


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """metav1.GetControllerOf: the owner reference with controller=true, if any."""
    for ref in meta(obj).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return None


def controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner_uid


def new_controller_ref(owner: Mapping[str, Any], api_version: str, kind: str) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def adopt_patch(obj: Mapping[str, Any], ref: Mapping[str, Any]) -> Obj:
    """The strategic merge patch kube's ControllerRefManager sends to adopt an object (the uid in
    it makes the patch fail on a different object of the same name)."""
    return {"metadata": {"ownerReferences": [dict(ref)], "uid": uid_of(obj)}}


def release_patch(obj: Mapping[str, Any], owner_uid: str) -> Obj:
    return {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": owner_uid}], "uid": uid_of(obj)}}


@dataclass
class Claim:
    """What ClaimObjects decides: objects already ours, orphans to adopt, ours to release."""

    owned: list[Mapping[str, Any]] = field(default_factory=list)
    adopt: list[Mapping[str, Any]] = field(default_factory=list)
    release: list[Mapping[str, Any]] = field(default_factory=list)


def claim(
    owner: Mapping[str, Any],
    candidates: Iterable[Mapping[str, Any]],
    match: Callable[[Mapping[str, Any]], bool],
) -> Claim:
    """BaseControllerRefManager.ClaimObject for every candidate: keep what we own and still
    match, release what we own and no longer match (unless we are being deleted), adopt
    matching orphans (unless we or they are being deleted). Objects owned by others are ignored."""
    result = Claim()
    owner_uid = uid_of(owner)
    owner_ns = namespace_of(owner)
    deleting = being_deleted(owner)
    for obj in candidates:
        ref = controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != owner_uid:
                continue
            if match(obj):
                result.owned.append(obj)
            elif not deleting:
                result.release.append(obj)
            continue
        if deleting or not match(obj) or being_deleted(obj):
            continue
        if owner_ns and owner_ns != namespace_of(obj):
            continue
        result.adopt.append(obj)
    return result


def label_selector_matcher(selector: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over objects for a LabelSelector object; a bad selector matches nothing."""
    try:
        sel = selector_from_object(selector)
    except SelectorError:
        return lambda obj: False
    return lambda obj: sel.matches(labels_of(obj))


def selector_is_empty(selector: Mapping[str, Any] | None) -> bool:
    return not selector or (not selector.get("matchLabels") and not selector.get("matchExpressions"))


# --- conditions ------------------------------------------------------------------------------------


def get_condition(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if isinstance(cond, Mapping) and cond.get("type") == ctype:
            return cond
    return None


def set_condition(conditions: list[Obj], new: Obj) -> bool:
    """SetDeploymentCondition-style: replace the condition of new's type unless status and
    reason are the same; keep lastTransitionTime when the status did not change. True if changed."""
    current = get_condition(conditions, new["type"])
    if (
        current is not None
        and current.get("status") == new.get("status")
        and current.get("reason") == new.get("reason")
    ):
        return False
    if (
        current is not None
        and current.get("status") == new.get("status")
        and current.get("lastTransitionTime")
    ):
        new["lastTransitionTime"] = current["lastTransitionTime"]
    conditions[:] = [c for c in conditions if c.get("type") != new["type"]] + [new]
    return True


def remove_condition(conditions: list[Obj], ctype: str) -> bool:
    before = len(conditions)
    conditions[:] = [c for c in conditions if c.get("type") != ctype]
    return len(conditions) != before


# --- taints, tolerations and node affinity -------------------------------------------------------


def toleration_tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """v1.Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(
    taints: Iterable[Mapping[str, Any]],
    tolerations: Iterable[Mapping[str, Any]],
    effects: Iterable[str] = (NO_SCHEDULE, NO_EXECUTE),
) -> Mapping[str, Any] | None:
    """v1helper.FindMatchingUntoleratedTaint over the taints with one of `effects`."""
    tols = [t for t in tolerations if isinstance(t, Mapping)]
    wanted = set(effects)
    for taint in taints:
        if not isinstance(taint, Mapping) or taint.get("effect") not in wanted:
            continue
        if not any(toleration_tolerates(t, taint) for t in tols):
            return taint
    return None


def node_taints(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in spec(node).get("taints") or () if isinstance(t, Mapping)]


_NODE_OPS = {
    "In": IN,
    "NotIn": NOT_IN,
    "Exists": EXISTS,
    "DoesNotExist": DOES_NOT_EXIST,
    "Gt": GREATER_THAN,
    "Lt": LESS_THAN,
}


def _term_matches(term: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = labels_of(node)
    for expr in exprs:
        op = _NODE_OPS.get(str(expr.get("operator")))
        if op is None:
            return False
        req = Requirement(str(expr.get("key", "")), op, tuple(str(v) for v in expr.get("values") or ()))
        if not req.matches(labels):
            return False
    for expr in fields:
        op = _NODE_OPS.get(str(expr.get("operator")))
        if expr.get("key") != "metadata.name" or op not in (IN, NOT_IN):
            return False
        req = Requirement("metadata.name", op, tuple(str(v) for v in expr.get("values") or ()))
        if not req.matches({"metadata.name": name_of(node)}):
            return False
    return True


def node_matches_pod_affinity(pod_spec: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """nodeaffinity.GetRequiredNodeAffinity(pod).Match(node): nodeSelector and the required
    node affinity terms (ORed)."""
    selector = pod_spec.get("nodeSelector") or {}
    labels = labels_of(node)
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(
        _term_matches(t, node) for t in required.get("nodeSelectorTerms") or () if isinstance(t, Mapping)
    )


def target_node_of(pod: Mapping[str, Any]) -> str | None:
    """util.GetTargetNodeName: spec.nodeName, or the node a DaemonSet pod's
    `metadata.name In [node]` field affinity pins it to."""
    node = spec(pod).get("nodeName")
    if node:
        return str(node)
    affinity = (spec(pod).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or ():
        for expr in term.get("matchFields") or ():
            if expr.get("key") == "metadata.name" and expr.get("operator") == "In":
                values = expr.get("values") or []
                if len(values) == 1:
                    return str(values[0])
    return None
