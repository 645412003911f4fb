"""Builders of the objects controller tests reason about: pods, ReplicaSets, Deployments, nodes.

They return plain JSON dicts shaped as the API server stores them (defaults filled in where a
controller reads them), with times as seconds since the epoch converted to RFC 3339, so unit
tests can state a snapshot in a line per object.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from .util import format_time

Obj = dict[str, Any]
T0 = 1_700_000_000.0  # a fixed "now" for tests
_seq = itertools.count(1)


def uid() -> str:
    return str(uuid.uuid4())


def owner_ref(owner: Obj, controller: bool = True) -> Obj:
    return {
        "apiVersion": owner.get("apiVersion", "v1"),
        "kind": owner.get("kind", ""),
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def pod(
    name: str | None = None,
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    owner: Obj | None = None,
    node: str | None = None,
    phase: str = "Running",
    ready: bool | None = True,
    ready_since: float | None = None,
    created: float | None = None,
    restarts: int = 0,
    ip: str | None = None,
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    containers: list[Obj] | None = None,
    tolerations: list[Obj] | None = None,
    uid_: str | None = None,
) -> Obj:
    name = name or f"pod-{next(_seq)}"
    meta: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid_ or uid(),
        "labels": dict(labels or {"app": "web"}),
        "creationTimestamp": format_time(created if created is not None else T0 - 3600),
        "resourceVersion": str(next(_seq)),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    if deleting:
        meta["deletionTimestamp"] = format_time(T0)
    status: Obj = {"phase": phase}
    if ready is not None:
        status["conditions"] = [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "lastTransitionTime": format_time(ready_since if ready_since is not None else T0 - 600),
            }
        ]
    status["containerStatuses"] = [{"name": "c", "restartCount": restarts, "ready": bool(ready)}]
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    spec: Obj = {"containers": containers or [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def template(labels: dict[str, str] | None = None, image: str = "busybox:1", **spec_extra: Any) -> Obj:
    return {
        "metadata": {"labels": dict(labels or {"app": "web"})},
        "spec": {"containers": [{"name": "c", "image": image}], **spec_extra},
    }


def replicaset(
    name: str = "web",
    *,
    replicas: int = 3,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    owner: Obj | None = None,
    tmpl: Obj | None = None,
    min_ready: int = 0,
    created: float | None = None,
    generation: int = 1,
    status: Obj | None = None,
    annotations: dict[str, str] | None = None,
    selector: Obj | None = None,
) -> Obj:
    labels = dict(labels or {"app": "web"})
    meta: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid(),
        "generation": generation,
        "labels": labels,
        "creationTimestamp": format_time(created if created is not None else T0 - 7200),
        "resourceVersion": str(next(_seq)),
    }
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready,
            "selector": selector or {"matchLabels": labels},
            "template": tmpl or template(labels),
        },
        "status": dict(status or {}),
    }


def deployment(
    name: str = "web",
    *,
    replicas: int = 3,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    tmpl: Obj | None = None,
    strategy: Obj | None = None,
    max_surge: Any = "25%",
    max_unavailable: Any = "25%",
    revision_history_limit: int = 10,
    progress_deadline: int | None = 600,
    min_ready: int = 0,
    paused: bool = False,
    generation: int = 1,
    status: Obj | None = None,
    annotations: dict[str, str] | None = None,
) -> Obj:
    labels = dict(labels or {"app": "web"})
    spec: Obj = {
        "replicas": replicas,
        "selector": {"matchLabels": labels},
        "template": tmpl or template(labels),
        "strategy": strategy
        or {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": max_unavailable},
        },
        "revisionHistoryLimit": revision_history_limit,
        "minReadySeconds": min_ready,
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    if paused:
        spec["paused"] = True
    meta: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid(),
        "generation": generation,
        "labels": labels,
        "creationTimestamp": format_time(T0 - 86400),
        "resourceVersion": str(next(_seq)),
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": spec,
        "status": dict(status or {}),
    }


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    taints: list[Obj] | None = None,
    ready: str | None = "True",
    heartbeat: float | None = None,
    unschedulable: bool = False,
    created: float | None = None,
) -> Obj:
    meta: Obj = {
        "name": name,
        "uid": uid(),
        "labels": {"kubernetes.io/hostname": name, **(labels or {})},
        "creationTimestamp": format_time(created if created is not None else T0 - 86400),
        "resourceVersion": str(next(_seq)),
    }
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    status: Obj = {}
    if ready is not None:
        hb = format_time(heartbeat if heartbeat is not None else T0 - 5)
        status["conditions"] = [
            {
                "type": "Ready",
                "status": ready,
                "reason": "KubeletReady" if ready == "True" else "KubeletNotReady",
                "lastHeartbeatTime": hb,
                "lastTransitionTime": format_time(T0 - 3600),
            }
        ]
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": status}


def taint(key: str, effect: str = "NoSchedule", value: str = "", added: float | None = None) -> Obj:
    t: Obj = {"key": key, "effect": effect}
    if value:
        t["value"] = value
    if added is not None:
        t["timeAdded"] = format_time(added)
    return t
