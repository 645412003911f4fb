"""The namespace controller: a deleted namespace empties itself, then goes.

Deleting a namespace only marks it (deletionTimestamp, phase Terminating — the API server
refuses new objects in it from then on); its `kubernetes` finalizer keeps it until this
controller has deleted everything in it. `sync(name)` discovers the namespaced resources the
API server serves, deletes each collection in the namespace (background propagation, pods
gracefully), and counts what is left. While something remains — pods waiting for their node
to stop them, objects held by their own finalizers — it reports the namespace conditions kube
reports (NamespaceContentRemaining, NamespaceFinalizersRemaining, NamespaceDeletionContentFailure,
NamespaceDeletionDiscoveryFailure) and comes back after an estimate; once nothing is left it
removes `kubernetes` through `namespaces/{name}/finalize`, and the API server deletes the
namespace. `content_conditions` is the pure part.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import NAMESPACES, ApiError, NotFound, Obj, api_path

from .base import BaseController, ControllerContext
from .discovery import ApiResource, discover
from .util import being_deleted, format_time, get_condition, int_field, meta, name_of, spec, status

log = logging.getLogger(__name__)

FINALIZER = "kubernetes"
DISCOVERY_TTL = 30.0


@dataclass
class Remaining:
    """What a deletion pass left behind."""

    counts: dict[str, int] = field(default_factory=dict)  # group resource -> objects left
    finalizers: dict[str, int] = field(default_factory=dict)  # finalizer -> objects carrying it
    failures: list[str] = field(default_factory=list)
    discovery_failure: str | None = None
    estimate: int = 0  # seconds until it may be gone

    @property
    def empty(self) -> bool:
        return not self.counts and not self.failures and self.discovery_failure is None


def _cond(ctype: str, cstatus: str, reason: str, message: str, now: float) -> Obj:
    return {
        "type": ctype,
        "status": cstatus,
        "lastTransitionTime": format_time(now),
        "reason": reason,
        "message": message,
    }


def content_conditions(rem: Remaining, now: float) -> list[Obj]:
    """The namespace status conditions of kube's namespaced resources deleter."""
    conds = []
    if rem.discovery_failure:
        conds.append(
            _cond("NamespaceDeletionDiscoveryFailure", "True", "DiscoveryFailed", rem.discovery_failure, now)
        )
    else:
        conds.append(
            _cond(
                "NamespaceDeletionDiscoveryFailure",
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered",
                now,
            )
        )
    conds.append(
        _cond(
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
            now,
        )
    )
    if rem.failures:
        conds.append(
            _cond(
                "NamespaceDeletionContentFailure",
                "True",
                "ContentDeletionFailed",
                "; ".join(sorted(rem.failures)),
                now,
            )
        )
    else:
        conds.append(
            _cond(
                "NamespaceDeletionContentFailure",
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization",
                now,
            )
        )
    if rem.counts:
        listed = ", ".join(f"{gr} has {n} resource instances" for gr, n in sorted(rem.counts.items()))
        conds.append(
            _cond(
                "NamespaceContentRemaining",
                "True",
                "SomeResourcesRemain",
                f"Some resources are remaining: {listed}",
                now,
            )
        )
    else:
        conds.append(
            _cond(
                "NamespaceContentRemaining",
                "False",
                "ContentRemoved",
                "All content successfully removed",
                now,
            )
        )
    if rem.finalizers:
        listed = ", ".join(f"{f} in {n} resource instances" for f, n in sorted(rem.finalizers.items()))
        conds.append(
            _cond(
                "NamespaceFinalizersRemaining",
                "True",
                "SomeFinalizersRemain",
                f"Some content in the namespace has finalizers remaining: {listed}",
                now,
            )
        )
    else:
        conds.append(
            _cond(
                "NamespaceFinalizersRemaining",
                "False",
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished",
                now,
            )
        )
    return conds


def merge_conditions(old: Sequence[Mapping[str, Any]], new: Sequence[Obj]) -> tuple[list[Obj], bool]:
    """Replace conditions whose status, reason or message changed (keeping the old transition
    time otherwise). Returns (conditions, changed)."""
    out = [dict(c) for c in old]
    changed = False
    for cond in new:
        cur = get_condition(out, cond["type"])
        if cur is not None and all(cur.get(k) == cond.get(k) for k in ("status", "reason", "message")):
            continue
        if cur is not None and cur.get("status") == cond["status"]:
            cond = {**cond, "lastTransitionTime": cur.get("lastTransitionTime", cond["lastTransitionTime"])}
        out = [c for c in out if c.get("type") != cond["type"]] + [cond]
        changed = True
    return out, changed


def grace_estimate(obj: Mapping[str, Any], now: float) -> int:
    """Seconds a terminating object may still take (its deletion grace period, at least 1)."""
    grace = int_field(meta(obj), "deletionGracePeriodSeconds")
    if not grace:
        grace = int_field(spec(obj), "terminationGracePeriodSeconds")
    return max(1, grace)


class NamespaceController(BaseController):
    name = "namespace"
    default_workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ns_informer = self.informer(NAMESPACES)
        self.ns_informer.add_handler(self._changed, lambda o, c: self._changed(c), None)
        self._resources: list[ApiResource] = []
        self._discovered_at = 0.0

    def _changed(self, ns: Obj) -> None:
        if being_deleted(ns):
            self.enqueue_obj(ns)

    async def _namespaced_resources(self) -> list[ApiResource]:
        if not self._resources or time.monotonic() - self._discovered_at > DISCOVERY_TTL:
            found = await discover(self.client)
            self._resources = [r for r in found if r.namespaced and {"list", "delete"} <= r.verbs]
            self._discovered_at = time.monotonic()
        return self._resources

    async def sync(self, key: str) -> None:
        ns = self.ns_informer.get(key)
        if ns is None or not being_deleted(ns):
            return
        if FINALIZER not in (spec(ns).get("finalizers") or []):
            return
        rem = await self.delete_all_content(key)
        await self._write_conditions(ns, rem)
        if not rem.empty:
            delay = max(1.0, rem.estimate / 2 + 1) if rem.estimate else 2.0
            self.enqueue_after(key, min(delay, self.ctx.options.namespace_sync_period))
            return
        finalizers = [f for f in spec(ns).get("finalizers") or [] if f != FINALIZER]
        body = copy.deepcopy(ns)
        body.setdefault("spec", {})["finalizers"] = finalizers
        try:
            await self.client.request(
                "PUT", api_path("", "v1", "namespaces", None, name_of(ns), "finalize"), body=body
            )
        except NotFound:
            return
        log.info("namespace %s: content removed, finalized", key)

    async def delete_all_content(self, namespace: str) -> Remaining:
        rem = Remaining()
        try:
            resources = await self._namespaced_resources()
        except ApiError as exc:
            rem.discovery_failure = f"Discovery failed for some groups: {exc.message}"
            return rem
        now = self.now()
        for res in resources:
            gvr = res.gvr
            try:
                if "deletecollection" in res.verbs:
                    await self.client.request(
                        "DELETE",
                        api_path(gvr.group, gvr.version, gvr.resource, namespace),
                        body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
                    )
                    items, _ = await self.client.list_all(*gvr, namespace=namespace)
                else:
                    items, _ = await self.client.list_all(*gvr, namespace=namespace)
                    for obj in items:
                        if being_deleted(obj):
                            continue
                        try:
                            await self.client.delete(
                                *gvr, name_of(obj), namespace=namespace, propagation_policy="Background"
                            )
                        except NotFound:
                            pass
                    items, _ = await self.client.list_all(*gvr, namespace=namespace)
            except NotFound:
                continue
            except ApiError as exc:
                rem.failures.append(f"{res.group_resource}: {exc.message}")
                continue
            if items:
                rem.counts[res.group_resource] = len(items)
                for obj in items:
                    for fin in meta(obj).get("finalizers") or ():
                        rem.finalizers[fin] = rem.finalizers.get(fin, 0) + 1
                    rem.estimate = max(rem.estimate, grace_estimate(obj, now))
        return rem

    async def _write_conditions(self, ns: Obj, rem: Remaining) -> None:
        conds, changed = merge_conditions(
            status(ns).get("conditions") or [], content_conditions(rem, self.now())
        )
        phase = status(ns).get("phase")
        if not changed and phase == "Terminating":
            return
        new_status = {**status(ns), "phase": "Terminating", "conditions": conds}
        try:
            await self.client.update_status(*NAMESPACES, {**ns, "status": new_status})
        except ApiError as exc:  # a conflict or a namespace just gone: the next pass writes again
            log.debug("namespace %s: status not written: %s", name_of(ns), exc)
