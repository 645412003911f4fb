"""Informers: a local, indexed copy of one resource kept current by list + watch.

Every consumer of the API (scheduler, controllers, node agents) reads the cluster from an
informer's cache instead of asking the API server, and learns of changes through its handlers.
The informer lists the resource, then watches from the list's resourceVersion, so nothing between
the two is missed. A watch that ends (timeoutSeconds) or breaks (API server restart, network) is
resumed from the last resourceVersion seen, after an exponential back-off when it failed; BOOKMARK
events move that version forward on quiet resources. When the server says 410 Gone (the version
fell out of its history) the informer lists again and reconciles its cache with the new list the
way client-go's Replace does: handlers get a delete for every object that is gone, an update for
every one that changed and an add for every new one, so a consumer never needs to know that a
re-list happened.

One task (`run()`) owns the cache; handlers run in that task, in event order, and must be cheap —
usually they just put a key on a `WorkQueue`. Objects in the cache are shared: never mutate them.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.apiclient import ApiClient, ApiError, Gone, Obj

log = logging.getLogger(__name__)

# An index function maps an object to the values it is filed under (none, one or several).
IndexFn = Callable[[Obj], "Iterable[str] | str | None"]
AddFn = Callable[[Obj], None]
UpdateFn = Callable[[Obj, Obj], None]
DeleteFn = Callable[[Obj], None]


def object_key(obj: Mapping[str, Any]) -> str:
    """`namespace/name`, or `name` for a cluster-scoped object (client-go's MetaNamespaceKeyFunc)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "")
    return f"{ns}/{name}" if ns else name


def split_key(key: str) -> tuple[str | None, str]:
    """(namespace, name) of a key; namespace None for a cluster-scoped object."""
    ns, sep, name = key.partition("/")
    return (ns, name) if sep else (None, key)


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def index_by_namespace(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


def index_by_node(obj: Obj) -> str | None:
    """Pods by `spec.nodeName` (unscheduled pods are in no bucket)."""
    return (obj.get("spec") or {}).get("nodeName") or None


def index_by_controller(obj: Obj) -> str | None:
    """Objects by their controlling owner's key `namespace/name` (e.g. pods by ReplicaSet)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            ns = (obj.get("metadata") or {}).get("namespace")
            return f"{ns}/{ref.get('name')}" if ns else ref.get("name")
    return None


def _older(a: str, b: str) -> bool:
    """True when resourceVersion `a` is known to be older than `b` (grove's are store indexes)."""
    try:
        return int(a) < int(b)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Handler:
    on_add: AddFn | None = None
    on_update: UpdateFn | None = None
    on_delete: DeleteFn | None = None


class Informer:
    """List + watch of one resource (optionally one namespace and selectors) into an indexed cache.

    Start it with `task = asyncio.create_task(informer.run())`; `await informer.wait_synced()`
    before trusting the cache; cancel the task to stop.
    """

    def __init__(
        self,
        client: ApiClient,
        group: str,
        version: str,
        resource: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: Mapping[str, IndexFn] | None = None,
        resync: float | None = None,
        page_size: int = 500,
        watch_timeout: tuple[int, int] = (300, 600),
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.client = client
        self.group, self.version, self.resource = group, version, resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync = resync
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._items: dict[str, Obj] = {}
        self._indexers: dict[str, IndexFn] = dict(indexers or {})
        self._indices: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}
        self._filed: dict[str, dict[str, tuple[str, ...]]] = {}  # key -> indexer -> values
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._rv = ""
        self._backoff = backoff_initial
        self._api_version = group + "/" + version if group else version
        self._kind = ""
        # Counters a test or a /metrics page can read.
        self.lists = 0
        self.watches = 0
        self.events = 0

    def __repr__(self) -> str:
        scope = f" in {self.namespace}" if self.namespace else ""
        return (
            f"<Informer {self.resource}.{self.group or 'core'}{scope} rv={self._rv} items={len(self._items)}>"
        )

    # --- reading the cache --------------------------------------------------------------------

    def get(self, key: str) -> Obj | None:
        """The cached object with key `namespace/name` (or `name`), or None."""
        return self._items.get(key)

    def list(self, namespace: str | None = None) -> list[Obj]:
        """Every cached object (of one namespace, when given)."""
        if namespace is None:
            return list(self._items.values())
        prefix = namespace + "/"
        return [o for k, o in self._items.items() if k.startswith(prefix)]

    def keys(self) -> list[str]:
        return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def by_index(self, name: str, value: str) -> list[Obj]:
        """The cached objects the indexer `name` files under `value` (e.g. pods on one node)."""
        try:
            keys = self._indices[name].get(value, ())
        except KeyError:
            raise KeyError(f"no indexer {name!r} (have: {', '.join(self._indices) or 'none'})") from None
        return [self._items[k] for k in keys]

    def index_keys(self, name: str, value: str) -> list[str]:
        return list(self._indices[name].get(value, ()))

    def add_indexer(self, name: str, fn: IndexFn) -> None:
        """Add an index; objects already cached are filed at once."""
        if name in self._indexers:
            raise ValueError(f"indexer {name!r} exists already")
        self._indexers[name] = fn
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._file(name, fn, key, obj)

    @property
    def resource_version(self) -> str:
        """The last resourceVersion the informer saw (list, event or bookmark)."""
        return self._rv

    @property
    def has_synced(self) -> bool:
        """True once the first list is in the cache (and its handlers have run)."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait for the first list; TimeoutError after `timeout` seconds."""
        if timeout is None:
            await self._synced.wait()
        else:
            await asyncio.wait_for(self._synced.wait(), timeout)

    # --- handlers -------------------------------------------------------------------------------

    def add_handler(
        self,
        on_add: AddFn | None = None,
        on_update: UpdateFn | None = None,
        on_delete: DeleteFn | None = None,
    ) -> Handler:
        """Register handlers. A handler added after objects are cached gets an add for each, so a
        late consumer sees the same picture as an early one."""
        handler = Handler(on_add, on_update, on_delete)
        self._handlers.append(handler)
        if on_add is not None:
            for obj in list(self._items.values()):
                self._call(on_add, obj)
        return handler

    def remove_handler(self, handler: Handler) -> None:
        self._handlers.remove(handler)

    def _call(self, fn: Callable[..., None], *args: Obj) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%s handler %r failed", self.resource, fn)

    def _emit_add(self, obj: Obj) -> None:
        for h in self._handlers:
            if h.on_add is not None:
                self._call(h.on_add, obj)

    def _emit_update(self, old: Obj, new: Obj) -> None:
        for h in self._handlers:
            if h.on_update is not None:
                self._call(h.on_update, old, new)

    def _emit_delete(self, obj: Obj) -> None:
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, obj)

    # --- the cache and its indexes -------------------------------------------------------------

    def _index_values(self, name: str, fn: IndexFn, key: str, obj: Obj) -> tuple[str, ...]:
        try:
            values = fn(obj)
        except Exception:
            log.exception("%s indexer %s failed on %s", self.resource, name, key)
            return ()
        if values is None:
            return ()
        return (values,) if isinstance(values, str) else tuple(values)

    def _file(self, name: str, fn: IndexFn, key: str, obj: Obj) -> None:
        values = self._index_values(name, fn, key, obj)
        if values:
            self._filed.setdefault(key, {})[name] = values
            index = self._indices[name]
            for v in values:
                index.setdefault(v, set()).add(key)

    def _unfile(self, key: str) -> None:
        # The values an object was filed under are remembered: indexers need not be pure.
        for name, values in (self._filed.pop(key, None) or {}).items():
            index = self._indices[name]
            for v in values:
                bucket = index.get(v)
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del index[v]

    def _store(self, key: str, obj: Obj) -> Obj | None:
        old = self._items.get(key)
        if old is not None:
            self._unfile(key)
        self._items[key] = obj
        for name, fn in self._indexers.items():
            self._file(name, fn, key, obj)
        return old

    def _remove(self, key: str) -> Obj | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unfile(key)
        return old

    def _typed(self, obj: Obj) -> Obj:
        # List items come without apiVersion/kind (as from kube-apiserver); consumers want them.
        if self._kind and "kind" not in obj:
            obj["kind"] = self._kind
        if "apiVersion" not in obj:
            obj["apiVersion"] = self._api_version
        return obj

    # --- list + watch ---------------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled. Never returns on its own; errors are retried."""
        resync_task = asyncio.create_task(self._resync_loop()) if self.resync else None
        try:
            need_list = True
            while True:
                try:
                    if need_list:
                        await self._list_and_replace()
                        need_list = False
                    if await self._watch_once():
                        continue  # the server ended a watch that delivered events: resume at once
                except Gone as exc:
                    log.info("%s: %s; listing again", self.resource, exc)
                    need_list = True
                    continue
                except ApiError as exc:
                    # Unreachable server, 5xx, a stream cut mid-event: resume from the last version.
                    log.info(
                        "%s: list/watch failed (%s); retrying in ~%.2fs", self.resource, exc, self._backoff
                    )
                except Exception:
                    log.exception(
                        "%s: list/watch failed; listing again in ~%.2fs", self.resource, self._backoff
                    )
                    need_list = True
                await self._sleep_backoff()
        finally:
            if resync_task is not None:
                resync_task.cancel()
                try:
                    await resync_task
                except asyncio.CancelledError:
                    pass

    async def _sleep_backoff(self) -> None:
        delay = self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2, self.backoff_max)
        await asyncio.sleep(delay)

    async def _list_and_replace(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        rv = ""
        while True:
            try:
                page = await self.client.list(
                    self.group,
                    self.version,
                    self.resource,
                    self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    limit=self.page_size or None,
                    continue_token=token,
                )
            except Gone:
                if token is None:
                    raise
                # The continue token expired between pages: start over in one piece.
                log.info("%s: list continuation expired; listing without pages", self.resource)
                items, token, rv = [], None, ""
                page = await self.client.list(
                    self.group,
                    self.version,
                    self.resource,
                    self.namespace,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                )
            if not self._kind:
                kind = str(page.get("kind") or "")
                self._kind = kind[: -len("List")] if kind.endswith("List") else ""
            items.extend(page.get("items") or ())
            meta = page.get("metadata") or {}
            rv = rv or str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            if not token:
                break
        self.lists += 1
        self._replace(items, rv)
        self._backoff = self.backoff_initial

    def _replace(self, items: list[Obj], rv: str) -> None:
        """Make the cache equal to a fresh list, telling handlers what changed."""
        fresh: dict[str, Obj] = {}
        for obj in items:
            obj = self._typed(obj)
            fresh[object_key(obj)] = obj
        for key in [k for k in self._items if k not in fresh]:
            old = self._remove(key)
            if old is not None:
                self._emit_delete(old)
        for key, obj in fresh.items():
            old = self._items.get(key)
            if old is not None and resource_version(old) == resource_version(obj):
                continue
            self._store(key, obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)
        self._rv = rv
        self._synced.set()

    async def _watch_once(self) -> bool:
        """One watch from the last resourceVersion; True when the server ended it normally after
        sending something (a watch that ends empty-handed is retried after a back-off)."""
        lo, hi = self.watch_timeout
        self.watches += 1
        got = False
        async for kind, obj in self.client.watch(
            self.group,
            self.version,
            self.resource,
            self.namespace,
            resource_version=self._rv or None,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=random.randint(lo, hi) if hi > 0 else None,
            allow_bookmarks=True,
        ):
            self._backoff = self.backoff_initial
            self.events += 1
            got = True
            self._apply(kind, obj)
        return got

    def _apply(self, kind: str, obj: Obj) -> None:
        rv = resource_version(obj)
        if kind == "BOOKMARK":
            self._advance(rv)
            return
        obj = self._typed(obj)
        key = object_key(obj)
        old = self._items.get(key)
        if old is not None and (
            _older(rv, resource_version(old)) or (kind != "DELETED" and rv == resource_version(old))
        ):
            # Pages of a list can be read at later versions than the list's; a replayed event
            # no newer than what we hold (even the delete of an earlier incarnation) must not
            # roll the cache back or be told twice.
            self._advance(rv)
            return
        if kind in ("ADDED", "MODIFIED"):
            self._store(key, obj)
            if old is None:
                self._emit_add(obj)
            else:
                self._emit_update(old, obj)
        elif kind == "DELETED":
            old = self._remove(key)
            if old is not None:
                self._emit_delete(obj)
        else:
            log.warning("%s: ignoring a watch event of unknown type %r", self.resource, kind)
            return
        self._advance(rv)

    def _advance(self, rv: str) -> None:
        if rv and not _older(rv, self._rv):
            self._rv = rv

    async def _resync_loop(self) -> None:
        """Every `resync` seconds, an update(obj, obj) for every cached object: a safety net for
        controllers whose world changes outside the API (containers dying, clocks passing)."""
        assert self.resync
        while True:
            await asyncio.sleep(self.resync)
            if not self.has_synced:
                continue
            for obj in list(self._items.values()):
                self._emit_update(obj, obj)
