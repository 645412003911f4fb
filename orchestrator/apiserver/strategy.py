"""What the server does to an object of each kind on create, update and status update.

kube-apiserver's "strategies": server-owned metadata (uid, creationTimestamp, generation,
deletion fields) is set here and never taken from the client, a status subresource means the
main resource cannot change status (and the status subresource nothing but status), generation
moves only when the spec does, and a few kinds get the fields Kubernetes adds on create (a new
pod is Pending with its QoS class, a namespace is Active with the `kubernetes` finalizer).
Defaults of user-visible fields and validation live in orchestrator.defaults/validation.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from orchestrator.resources import Resource

# kube's generateName alphabet: no vowels or look-alike characters, so no words and no confusion.
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"

# Fields under metadata that only the server sets.
_SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")


@dataclass(frozen=True)
class Strategy:
    generation: bool = False  # metadata.generation counts spec changes
    status_subresource: bool = False  # status changes only through <resource>/status
    allow_create_on_update: bool = False  # PUT of a missing object creates it
    graceful_delete: bool = False  # deletion waits for the node agent (pods)
    return_deleted_object: bool = False  # DELETE answers with the object, not a Status
    ttl: bool = False  # stored with the server's event TTL


STRATEGIES: dict[str, Strategy] = {
    "pods": Strategy(status_subresource=True, graceful_delete=True, return_deleted_object=True),
    "nodes": Strategy(status_subresource=True),
    "namespaces": Strategy(status_subresource=True),
    "services": Strategy(),
    "endpoints": Strategy(allow_create_on_update=True),
    "events": Strategy(allow_create_on_update=True, ttl=True),
    "deployments": Strategy(generation=True, status_subresource=True),
    "replicasets": Strategy(generation=True, status_subresource=True),
    "daemonsets": Strategy(generation=True, status_subresource=True),
    "statefulsets": Strategy(generation=True, status_subresource=True),
    "jobs": Strategy(generation=True, status_subresource=True),
    "cronjobs": Strategy(generation=True, status_subresource=True),
    "horizontalpodautoscalers": Strategy(generation=True, status_subresource=True),
}
DEFAULT_STRATEGY = Strategy()


def strategy_for(res: Resource) -> Strategy:
    return STRATEGIES.get(res.resource, DEFAULT_STRATEGY)


_last_second: list[Any] = [-1, ""]  # the last second formatted, and its text (many writes share one)


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(value))


def now_rfc3339(ts: float | None = None) -> str:
    """A metav1.Time: RFC 3339 in UTC with seconds precision."""
    second = math.floor(time.time() if ts is None else ts)
    if second != _last_second[0]:
        _last_second[1] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        _last_second[0] = second
    return _last_second[1]


def now_micro(ts: float | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with microseconds."""
    ts = time.time() if ts is None else ts
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


_uid_pool: list[bytes] = []  # random bytes for the next uids (one urandom call per 256 objects)
os.register_at_fork(after_in_child=_uid_pool.clear)  # a forked child must not repeat its parent's uids


def new_uid() -> str:
    """A random (version 4) UUID as text, what `str(uuid.uuid4())` gives, with fewer system calls."""
    if not _uid_pool:
        _uid_pool.append(os.urandom(16 * 256))
    pool = _uid_pool[0]
    raw, rest = pool[:16], pool[16:]
    if rest:
        _uid_pool[0] = rest
    else:
        _uid_pool.clear()
    return str(uuid.UUID(bytes=raw, version=4))


def generate_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))


def prepare_create(res: Resource, obj: dict[str, Any]) -> None:
    """Server-owned fields of a new object (metadata.name is already decided)."""
    strat = strategy_for(res)
    meta = obj["metadata"]
    for key in _SERVER_META:
        meta.pop(key, None)
    meta.pop("resourceVersion", None)
    meta.pop("selfLink", None)
    meta["uid"] = new_uid()
    meta["creationTimestamp"] = now_rfc3339()
    if strat.generation:
        meta["generation"] = 1
    kind = res.resource
    if kind == "pods":
        obj.pop("status", None)  # defaults make it Pending with its QoS class
    elif kind in ("deployments", "replicasets", "daemonsets", "statefulsets", "jobs", "cronjobs"):
        obj["status"] = {}
    elif kind == "namespaces":
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict) and not spec.get("finalizers"):
            spec["finalizers"] = ["kubernetes"]
        obj["status"] = {"phase": "Active"}
        label_namespace(obj)


def label_namespace(obj: dict[str, Any]) -> None:
    labels = obj["metadata"].get("labels")
    if not isinstance(labels, dict):
        labels = obj["metadata"]["labels"] = {}
    labels[NAMESPACE_NAME_LABEL] = obj["metadata"]["name"]


def prepare_update(res: Resource, new: dict[str, Any], old: dict[str, Any]) -> None:
    """Carry the server-owned fields of `old` into `new` (an update of the main resource)."""
    strat = strategy_for(res)
    meta, old_meta = new["metadata"], old["metadata"]
    for key in _SERVER_META:
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    meta["name"] = old_meta["name"]
    if "namespace" in old_meta:
        meta["namespace"] = old_meta["namespace"]
    if strat.status_subresource:
        if "status" in old:
            new["status"] = json_copy(old["status"])
        else:
            new.pop("status", None)
    kind = res.resource
    if kind == "namespaces":
        label_namespace(new)
        # spec.finalizers change only through namespaces/finalize.
        if isinstance(old.get("spec"), dict):
            new["spec"] = json_copy(old["spec"])
    if strat.generation and new.get("spec") != old.get("spec"):
        meta["generation"] = int(old_meta.get("generation") or 1) + 1


def prepare_status_update(res: Resource, new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The object after a status update: `old` with `new`'s status (and nothing else of it).
    The result shares `new`'s status (the caller's own)."""
    result = json_copy(old)
    if "status" in new:
        result["status"] = new["status"]
    else:
        result.pop("status", None)
    if "managedFields" in new.get("metadata", {}):
        result["metadata"]["managedFields"] = new["metadata"]["managedFields"]
    else:
        result["metadata"].pop("managedFields", None)
    return result


def prepare_finalize(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """namespaces/finalize: only spec.finalizers of `new` is taken."""
    result = json_copy(old)
    finalizers = (new.get("spec") or {}).get("finalizers") if isinstance(new.get("spec"), dict) else None
    spec = result.setdefault("spec", {})
    if finalizers:
        spec["finalizers"] = list(finalizers)
    else:
        spec.pop("finalizers", None)
    return result


def _meta_for_compare(meta: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in meta.items() if k != "resourceVersion"}
    fields = out.get("managedFields")
    if isinstance(fields, list):
        out["managedFields"] = [
            {k: v for k, v in e.items() if k != "time"} if isinstance(e, dict) else e for e in fields
        ]
    return out


def same_object(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from resourceVersion and managedFields times (such a write is not stored)."""
    if a.keys() != b.keys() or any(a[k] != b[k] for k in a if k != "metadata"):
        return False
    return _meta_for_compare(a.get("metadata") or {}) == _meta_for_compare(b.get("metadata") or {})
