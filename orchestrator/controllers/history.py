"""Pod-template hashes and Deployment revisions: how a Deployment tells its ReplicaSets apart.

Every ReplicaSet a Deployment makes is named `<deployment>-<hash>` and labelled
`pod-template-hash=<hash>`, where the hash is FNV-32a over the pod template (plus the
Deployment's `status.collisionCount`, bumped when two templates hash alike) rendered with kube's
`SafeEncodeString` alphabet. kube hashes the Go struct's spew dump; grove hashes the template's
canonical JSON (sorted keys, empty values dropped), so names look like kube's but are not
byte-identical to what a kube cluster would pick for the same template.

Revisions live in annotations: `deployment.kubernetes.io/revision` on the Deployment and on
each ReplicaSet (one more than the highest old one when a template becomes current again, so
`kubectl rollout undo` makes the old ReplicaSet the newest revision), the revisions a
ReplicaSet had before in `revision-history`, and `desired-replicas` / `max-replicas` for
proportional scaling. Every other annotation of the Deployment (e.g. `kubernetes.io/change-cause`)
is copied to its new ReplicaSet, which is what `kubectl rollout history` shows.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from .util import POD_TEMPLATE_HASH_LABEL, annotations_of

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
ROLLBACK_TO_ANNOTATION = "deprecated.deployment.rollback.to"
# Revision history longer than this (in characters) is trimmed from the oldest end.
MAX_REVISION_HISTORY_CHARS = 2000

_SKIP_COPY = frozenset(
    (
        LAST_APPLIED_ANNOTATION,
        REVISION_ANNOTATION,
        REVISION_HISTORY_ANNOTATION,
        DESIRED_REPLICAS_ANNOTATION,
        MAX_REPLICAS_ANNOTATION,
        ROLLBACK_TO_ANNOTATION,
    )
)

# k8s.io/apimachinery/pkg/util/rand: no vowels (no words) and no look-alike characters.
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv32a(data: bytes, h: int = _FNV32_OFFSET) -> int:
    """FNV-1a, 32 bits (Go's hash/fnv New32a), continuing from `h`."""
    for byte in data:
        h ^= byte
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def safe_encode_string(s: str) -> str:
    """rand.SafeEncodeString: each character mapped into the consonant-and-digit alphabet."""
    return "".join(_ALPHANUMS[ord(ch) % len(_ALPHANUMS)] for ch in s)


def normalize(value: Any) -> Any:
    """Drop nulls, empty objects and empty lists (Go's omitempty), recursively, so two templates
    that differ only in how an empty field is spelled compare and hash alike."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            v = normalize(v)
            if v is None or v == {} or v == []:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def compute_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """controller.ComputeHash: the pod-template-hash of a template (and collision count)."""
    data = orjson.dumps(normalize(template), option=orjson.OPT_SORT_KEYS)
    h = fnv32a(data)
    if collision_count is not None:
        h = fnv32a((int(collision_count) & 0xFFFFFFFF).to_bytes(4, "little") + b"\0\0\0\0", h)
    return safe_encode_string(str(h))


def without_hash(template: Mapping[str, Any] | None) -> dict[str, Any]:
    t = copy.deepcopy(dict(template or {}))
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(POD_TEMPLATE_HASH_LABEL, None)
    return normalize(t)


def equal_ignore_hash(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """deploymentutil.EqualIgnoreHash: equal templates apart from the pod-template-hash label."""
    return without_hash(a) == without_hash(b)


# --- revisions -----------------------------------------------------------------------------------


def revision(obj: Mapping[str, Any]) -> int:
    """The revision annotation as a number (0 when missing or not a number)."""
    try:
        return int(annotations_of(obj).get(REVISION_ANNOTATION, "0"))
    except ValueError:
        return 0


def max_revision(objs: Iterable[Mapping[str, Any] | None]) -> int:
    return max((revision(o) for o in objs if o is not None), default=0)


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    meta = obj.setdefault("metadata", {})
    ann = meta.get("annotations")
    if not isinstance(ann, dict):
        ann = meta["annotations"] = {}
    return ann


def copy_deployment_annotations(deployment: Mapping[str, Any], rs: dict[str, Any]) -> bool:
    """Copy the Deployment's annotations (but the ones kube skips) onto a ReplicaSet."""
    changed = False
    ann = _annotations(rs)
    for k, v in annotations_of(deployment).items():
        if k in _SKIP_COPY or ann.get(k) == v:
            continue
        ann[k] = v
        changed = True
    return changed


def set_replicas_annotations(rs: dict[str, Any], desired: int, max_replicas: int) -> bool:
    ann = _annotations(rs)
    changed = False
    for key, value in (
        (DESIRED_REPLICAS_ANNOTATION, str(desired)),
        (MAX_REPLICAS_ANNOTATION, str(max_replicas)),
    ):
        if ann.get(key) != value:
            ann[key] = value
            changed = True
    return changed


def replicas_annotations_need_update(rs: Mapping[str, Any], desired: int, max_replicas: int) -> bool:
    ann = annotations_of(rs)
    return ann.get(DESIRED_REPLICAS_ANNOTATION) != str(desired) or ann.get(MAX_REPLICAS_ANNOTATION) != str(
        max_replicas
    )


def int_annotation(obj: Mapping[str, Any], key: str) -> int | None:
    try:
        return int(annotations_of(obj)[key])
    except (KeyError, ValueError):
        return None


def set_new_replica_set_annotations(
    deployment: Mapping[str, Any],
    rs: dict[str, Any],
    new_revision: int,
    exists: bool,
    desired: int,
    max_replicas: int,
    max_history_chars: int = MAX_REVISION_HISTORY_CHARS,
) -> bool:
    """deploymentutil.SetNewReplicaSetAnnotations: copy the Deployment's annotations, move the
    ReplicaSet to `new_revision` (remembering the old one in revision-history) and, for a new
    ReplicaSet, record desired and max replicas. True when anything changed."""
    changed = copy_deployment_annotations(deployment, rs)
    ann = _annotations(rs)
    old_text = ann.get(REVISION_ANNOTATION, "")
    try:
        old = int(old_text) if old_text else 0
    except ValueError:
        return changed
    if old < new_revision:
        ann[REVISION_ANNOTATION] = str(new_revision)
        changed = True
        if old_text:
            history = ann.get(REVISION_HISTORY_ANNOTATION, "")
            if not history:
                ann[REVISION_HISTORY_ANNOTATION] = old_text
            else:
                olds = history.split(",")
                total = len(history) + len(old_text) + 1
                start = 0
                while total > max_history_chars and start < len(olds):
                    total -= len(olds[start]) + 1
                    start += 1
                if total <= max_history_chars:
                    ann[REVISION_HISTORY_ANNOTATION] = ",".join([*olds[start:], old_text])
    if not exists and set_replicas_annotations(rs, desired, max_replicas):
        changed = True
    return changed
