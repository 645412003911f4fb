"""The garbage collector: objects whose owners are gone go too — or are orphaned on request.

Every object can name its owners in `metadata.ownerReferences` (a Deployment owns its
ReplicaSets, a ReplicaSet its pods). The collector watches every resource the API server
serves (discovered, not listed here) with informers indexed by owner uid, and syncs an object
whenever its owner references change, an owner of it disappears, or it is being deleted with
one of the deletion finalizers the API server records for a propagationPolicy:

- background (`kubectl delete`'s default): the owner is deleted at once; each dependent then
  finds its owner gone (checked by a live read, so a lagging cache never condemns anything)
  and is deleted — with the policy its own finalizers ask for — and so on down the tree;
- foreground (`foregroundDeletion` finalizer): the owner stays, marked, while all its
  dependents are deleted (dependents that have dependents of their own are deleted in the
  foreground too); once no dependent with `blockOwnerDeletion` is left the collector removes
  the finalizer and the API server finishes the owner;
- orphan (`orphan` finalizer, `--cascade=orphan`): the collector removes the owner's reference
  from every dependent, then the finalizer; the dependents stay.

A dependent with an owner that still exists ("solid") is kept; references to owners that are
gone, or are themselves waiting for their dependents, are just removed from it. The decision
(`decide`) is pure over what the caches and the live reads say.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import ApiError, GroupVersionResource, NotFound, Obj
from orchestrator.watchers import Informer

from .base import BaseController, ControllerContext
from .discovery import ApiResource
from .util import (
    FOREGROUND_FINALIZER,
    ORPHAN_FINALIZER,
    being_deleted,
    key_of,
    meta,
    name_of,
    namespace_of,
    uid_of,
)

log = logging.getLogger(__name__)

BY_OWNER_UID = "byOwnerUID"
ABSENT_CACHE_SIZE = 1000

Key = tuple[GroupVersionResource, str]


def owner_refs(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in meta(obj).get("ownerReferences") or () if isinstance(r, Mapping) and r.get("uid")]


def finalizers(obj: Mapping[str, Any]) -> list[str]:
    return [str(f) for f in meta(obj).get("finalizers") or ()]


def deleting_dependents(obj: Mapping[str, Any]) -> bool:
    return being_deleted(obj) and FOREGROUND_FINALIZER in finalizers(obj)


def index_by_owner_uids(obj: Obj) -> list[str]:
    return [str(r["uid"]) for r in owner_refs(obj)]


def group_of(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


# --- pure decisions ------------------------------------------------------------------------------


@dataclass
class Classified:
    """classifyReferences: owners that exist, owners that are gone, owners being deleted in the
    foreground (waiting for their dependents — this object among them)."""

    solid: list[Mapping[str, Any]] = field(default_factory=list)
    dangling: list[Mapping[str, Any]] = field(default_factory=list)
    waiting: list[Mapping[str, Any]] = field(default_factory=list)


def classify(refs: Iterable[Mapping[str, Any]], owners: Mapping[str, Mapping[str, Any] | None]) -> Classified:
    """`owners` maps each reference's uid to the owner found (None when it does not exist)."""
    out = Classified()
    for ref in refs:
        owner = owners.get(str(ref.get("uid")))
        if owner is None:
            out.dangling.append(ref)
        elif deleting_dependents(owner):
            out.waiting.append(ref)
        else:
            out.solid.append(ref)
    return out


@dataclass
class Action:
    """What to do with an object: nothing, drop some owner references, unblock them, or delete
    it with a propagation policy."""

    kind: str  # none | remove_refs | delete
    refs: list[Mapping[str, Any]] = field(default_factory=list)
    policy: str | None = None
    unblock: list[Mapping[str, Any]] = field(default_factory=list)


def decide(obj: Mapping[str, Any], c: Classified, dependents: Sequence[Mapping[str, Any]]) -> Action:
    """attemptToDeleteItem for an object that is not being deleted and has owner references."""
    if c.solid:
        if not c.dangling and not c.waiting:
            return Action("none")
        return Action("remove_refs", refs=[*c.dangling, *c.waiting])
    if c.waiting and dependents:
        # It has dependents of its own: delete it in the foreground too. A dependent that is
        # itself waiting for us would be a cycle: stop blocking our owners so they can finish.
        unblock = c.waiting if any(deleting_dependents(d) for d in dependents) else []
        return Action("delete", policy="Foreground", unblock=unblock)
    fins = finalizers(obj)
    policy = (
        "Orphan"
        if ORPHAN_FINALIZER in fins
        else "Foreground"
        if FOREGROUND_FINALIZER in fins
        else "Background"
    )
    return Action("delete", policy=policy)


def blocking_dependents(
    owner: Mapping[str, Any], dependents: Iterable[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Dependents whose reference to `owner` has blockOwnerDeletion: the foreground deletion of
    the owner waits for them."""
    uid = uid_of(owner)
    return [
        d
        for d in dependents
        if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in owner_refs(d))
    ]


def remove_refs_patch(obj: Mapping[str, Any], uids: Iterable[str]) -> Obj:
    return {
        "metadata": {"ownerReferences": [{"$patch": "delete", "uid": u} for u in uids], "uid": uid_of(obj)}
    }


def unblock_patch(obj: Mapping[str, Any], refs: Iterable[Mapping[str, Any]]) -> Obj:
    return {
        "metadata": {
            "ownerReferences": [{**r, "blockOwnerDeletion": False} for r in refs],
            "uid": uid_of(obj),
        }
    }


# --- the controller ------------------------------------------------------------------------------


class GarbageCollector(BaseController):
    name = "garbagecollector"
    default_workers = 8

    def __init__(self, ctx: ControllerContext, resources: Sequence[ApiResource]) -> None:
        super().__init__(ctx)
        ignored = set(ctx.options.gc_ignored_resources)
        self.resources: dict[GroupVersionResource, ApiResource] = {}
        self.by_kind: dict[tuple[str, str], ApiResource] = {}
        self.informers: dict[GroupVersionResource, Informer] = {}
        self._absent: OrderedDict[str, None] = OrderedDict()
        for res in resources:
            if res.group_resource in ignored or not {"list", "watch", "delete"} <= res.verbs:
                continue
            self.resources[res.gvr] = res
            self.by_kind.setdefault((res.gvr.group, res.kind), res)
            inf = self.informer(res.gvr, indexers={BY_OWNER_UID: index_by_owner_uids})
            self.informers[res.gvr] = inf
            self._watch(res.gvr, inf)

    # --- handlers -------------------------------------------------------------------------------

    def _watch(self, gvr: GroupVersionResource, inf: Informer) -> None:
        def key(obj: Mapping[str, Any]) -> Key:
            return (gvr, key_of(obj))

        def added(obj: Obj) -> None:
            if owner_refs(obj) or (being_deleted(obj) and _gc_finalizers(obj)):
                self.enqueue(key(obj))
            if deleting_dependents(obj):
                self._enqueue_dependents(obj)

        def updated(old: Obj, cur: Obj) -> None:
            if meta(old).get("resourceVersion") == meta(cur).get("resourceVersion"):
                return
            if owner_refs(old) != owner_refs(cur):
                self.enqueue(key(cur))
            if being_deleted(cur) and (
                _gc_finalizers(cur) != _gc_finalizers(old) or being_deleted(old) != being_deleted(cur)
            ):
                self.enqueue(key(cur))
                if deleting_dependents(cur):
                    self._enqueue_dependents(cur)
            if being_deleted(cur) != being_deleted(old):
                self._enqueue_waiting_owners(cur)

        def deleted(obj: Obj) -> None:
            self._absent_add(uid_of(obj))
            self._enqueue_dependents(obj)
            self._enqueue_waiting_owners(obj)

        inf.add_handler(added, updated, deleted)

    def dependents(self, uid: str) -> list[tuple[GroupVersionResource, Obj]]:
        out = []
        for gvr, inf in self.informers.items():
            for obj in inf.by_index(BY_OWNER_UID, uid):
                out.append((gvr, obj))
        return out

    def _enqueue_dependents(self, owner: Mapping[str, Any]) -> None:
        for gvr, dep in self.dependents(uid_of(owner)):
            self.enqueue((gvr, key_of(dep)))

    def _enqueue_waiting_owners(self, obj: Mapping[str, Any]) -> None:
        """A dependent went (or started going): owners deleting in the foreground re-check."""
        for ref in owner_refs(obj):
            res = self.by_kind.get((group_of(str(ref.get("apiVersion", ""))), str(ref.get("kind", ""))))
            if res is None:
                continue
            okey = f"{namespace_of(obj)}/{ref.get('name')}" if res.namespaced else str(ref.get("name"))
            owner = self.informers[res.gvr].get(okey)
            if owner is not None and deleting_dependents(owner):
                self.enqueue((res.gvr, okey))

    def _absent_add(self, uid: str) -> None:
        if not uid:
            return
        self._absent[uid] = None
        self._absent.move_to_end(uid)
        while len(self._absent) > ABSENT_CACHE_SIZE:
            self._absent.popitem(last=False)

    # --- lookups ----------------------------------------------------------------------------------

    async def _find_owner(
        self, obj: Mapping[str, Any], ref: Mapping[str, Any]
    ) -> tuple[bool, Mapping[str, Any] | None]:
        """(resolvable, owner). Unknown kinds are not resolvable: such references are left alone."""
        uid = str(ref.get("uid"))
        res = self.by_kind.get((group_of(str(ref.get("apiVersion", ""))), str(ref.get("kind", ""))))
        if res is None:
            return False, None
        if res.namespaced and not namespace_of(obj):
            return True, None  # a cluster-scoped object cannot be owned by a namespaced one
        okey = f"{namespace_of(obj)}/{ref.get('name')}" if res.namespaced else str(ref.get("name"))
        cached = self.informers[res.gvr].get(okey)
        if cached is not None and uid_of(cached) == uid:
            return True, cached
        if uid in self._absent:
            return True, None
        # Not in the cache: ask the API server before calling it gone.
        try:
            live = await self.client.get(
                *res.gvr, str(ref.get("name")), namespace=namespace_of(obj) if res.namespaced else None
            )
        except NotFound:
            self._absent_add(uid)
            return True, None
        if uid_of(live) != uid:
            self._absent_add(uid)
            return True, None
        return True, live

    # --- sync -----------------------------------------------------------------------------------

    async def sync(self, key: Key) -> None:
        gvr, okey = key
        inf = self.informers.get(gvr)
        obj = inf.get(okey) if inf is not None else None
        if obj is None:
            return
        if being_deleted(obj):
            fins = finalizers(obj)
            if ORPHAN_FINALIZER in fins:
                await self._orphan_dependents(gvr, obj)
            elif FOREGROUND_FINALIZER in fins:
                await self._process_deleting_dependents(gvr, obj)
            return
        refs = owner_refs(obj)
        if not refs:
            return
        owners: dict[str, Mapping[str, Any] | None] = {}
        resolvable: list[Mapping[str, Any]] = []
        unresolved = False
        for ref in refs:
            ok, owner = await self._find_owner(obj, ref)
            if not ok:
                unresolved = True
                continue
            resolvable.append(ref)
            owners[str(ref.get("uid"))] = owner
        c = classify(resolvable, owners)
        if unresolved:
            # An owner we cannot look up counts as present: never delete on a guess.
            c.solid.append({"uid": "?"})
        deps = [d for _, d in self.dependents(uid_of(obj))]
        action = decide(obj, c, deps)
        await self._act(gvr, obj, action)

    async def _act(self, gvr: GroupVersionResource, obj: Obj, action: Action) -> None:
        ns = namespace_of(obj) or None
        if action.kind == "remove_refs":
            uids = [str(r.get("uid")) for r in action.refs]
            log.info(
                "gc: %s %s: removing references to gone owners %s", gvr.resource, key_of(obj), ", ".join(uids)
            )
            try:
                await self.client.patch(
                    *gvr, name_of(obj), remove_refs_patch(obj, uids), namespace=ns, patch_type="strategic"
                )
            except NotFound:
                pass
        elif action.kind == "delete":
            if action.unblock:
                try:
                    await self.client.patch(
                        *gvr,
                        name_of(obj),
                        unblock_patch(obj, action.unblock),
                        namespace=ns,
                        patch_type="strategic",
                    )
                except NotFound:
                    return
            log.info("gc: deleting %s %s (%s)", gvr.resource, key_of(obj), action.policy)
            try:
                await self.client.delete(
                    *gvr,
                    name_of(obj),
                    namespace=ns,
                    propagation_policy=action.policy,
                    preconditions={"uid": uid_of(obj)},
                )
            except NotFound:
                pass

    async def _orphan_dependents(self, gvr: GroupVersionResource, owner: Obj) -> None:
        uid = uid_of(owner)
        for dgvr, dep in self.dependents(uid):
            try:
                await self.client.patch(
                    *dgvr, name_of(dep), remove_refs_patch(dep, [uid]), namespace=namespace_of(dep) or None,
                    patch_type="strategic",
                )  # fmt: skip
            except NotFound:
                continue
        await self._remove_finalizer(gvr, owner, ORPHAN_FINALIZER)

    async def _process_deleting_dependents(self, gvr: GroupVersionResource, owner: Obj) -> None:
        deps = [d for _, d in self.dependents(uid_of(owner))]
        blocking = blocking_dependents(owner, deps)
        if not blocking:
            await self._remove_finalizer(gvr, owner, FOREGROUND_FINALIZER)
            return
        for dgvr, dep in self.dependents(uid_of(owner)):
            if not being_deleted(dep):
                self.enqueue((dgvr, key_of(dep)))

    async def _remove_finalizer(self, gvr: GroupVersionResource, obj: Obj, finalizer: str) -> None:
        ns = namespace_of(obj) or None
        try:
            fresh = await self.client.get(*gvr, name_of(obj), namespace=ns)
        except NotFound:
            return
        if uid_of(fresh) != uid_of(obj) or finalizer not in finalizers(fresh):
            return
        remaining = [f for f in finalizers(fresh) if f != finalizer]
        patch = {
            "metadata": {
                "resourceVersion": meta(fresh).get("resourceVersion"),
                "finalizers": remaining or None,
            }
        }
        try:
            await self.client.patch(*gvr, name_of(obj), patch, namespace=ns)
        except NotFound:
            return
        except ApiError:
            raise
        log.info("gc: removed finalizer %s from %s %s", finalizer, gvr.resource, key_of(obj))


def _gc_finalizers(obj: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(f for f in finalizers(obj) if f in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER))
