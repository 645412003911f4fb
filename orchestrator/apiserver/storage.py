"""The registry over the store: objects as JSON at `/registry/<resource>/[<namespace>/]<name>`.

resourceVersion is the store's modifiedIndex of the object's key, so optimistic concurrency is the
store's compare-and-swap: creates use prevExist=false (-> 409 AlreadyExists), updates and deletes
use prevIndex=<resourceVersion> (-> 409 Conflict). The resourceVersion is never written into the
stored JSON (it is not known before the write); it is filled in on every read. A list's
resourceVersion is the store index the read was served at (X-Etcd-Index), and a watch streams the
store's events under the resource's prefix from any later index — `kvstore.client.watch_stream`
resumes across member failures, so nothing between a list and a watch is lost. An index that
fell out of the store's history (etcd error 401) becomes 410 Gone `Expired`, as clients expect.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from kvstore.client import ClusterUnavailable, EtcdError, KVClient
from orchestrator.resources import Resource

from . import errors

KEY_NOT_FOUND = 100
COMPARE_FAILED = 101
NODE_EXIST = 105
INDEX_CLEARED = 401

_DELETE_ACTIONS = frozenset(("delete", "compareAndDelete", "expire"))


@dataclass(slots=True)
class StoreEvent:
    """One change under a resource's prefix: type ADDED/MODIFIED/DELETED, the object after it
    (for DELETED the last state, with the deletion's resourceVersion) and the object before it."""

    type: str
    object: dict[str, Any]
    old: dict[str, Any] | None
    rv: int


def _encode(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    rv = meta.pop("resourceVersion", None) if isinstance(meta, dict) else None
    try:
        return orjson.dumps(obj).decode()
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv  # type: ignore[index]


def decode_node(node: dict[str, Any], rv: int | None = None) -> dict[str, Any] | None:
    """The object stored in an etcd node, with its resourceVersion; None for a value that is no object."""
    value = node.get("value")
    if value is None:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    meta["resourceVersion"] = str(rv if rv is not None else node.get("modifiedIndex", 0))
    return obj


def resource_version(obj: dict[str, Any]) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return 0


def _leaves(node: dict[str, Any], depth: int, out: list[dict[str, Any]]) -> None:
    """Collect the objects `depth` directory levels below `node` (0: its own children)."""
    for child in node.get("nodes") or ():
        if child.get("dir"):
            if depth > 0:
                _leaves(child, depth - 1, out)
        elif depth == 0:
            obj = decode_node(child)
            if obj is not None:
                out.append(obj)


class Storage:
    """CRUD and watch of API objects in the store, through one KVClient."""

    def __init__(self, kv: KVClient, *, quorum_reads: bool = False) -> None:
        self.kv = kv
        self.quorum_reads = quorum_reads

    # --- errors -----------------------------------------------------------------------------

    @staticmethod
    def _unavailable(exc: ClusterUnavailable) -> errors.ApiError:
        return errors.unavailable(f"the key-value store is unavailable: {exc}")

    # --- reads ------------------------------------------------------------------------------

    async def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        """The object, or ApiError 404."""
        obj = await self.try_get(res, namespace, name)
        if obj is None:
            raise errors.not_found(res, name)
        return obj

    async def try_get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            resp = await self.kv.get(res.storage_key(namespace, name), quorum=self.quorum_reads)
        except EtcdError as exc:
            if exc.error_code == KEY_NOT_FOUND:
                return None
            raise errors.internal(f"reading {res.resource} {name!r} from the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        if resp.node.get("dir"):
            return None
        return decode_node(resp.node)

    async def get_with_index(
        self, res: Resource, namespace: str | None, name: str
    ) -> tuple[dict[str, Any] | None, int]:
        """The object (or None) and the store index the read was served at."""
        try:
            resp = await self.kv.get(res.storage_key(namespace, name), quorum=self.quorum_reads)
        except EtcdError as exc:
            if exc.error_code == KEY_NOT_FOUND:
                return None, exc.index
            raise errors.internal(f"reading {res.resource} {name!r} from the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        obj = None if resp.node.get("dir") else decode_node(resp.node)
        return obj, resp.etcd_index

    async def list(self, res: Resource, namespace: str | None) -> tuple[list[dict[str, Any]], int]:
        """Every object of a resource (in one namespace, or all), sorted by key; and the list's
        resourceVersion (the store index the read saw)."""
        key = res.storage_key(namespace) if namespace else res.storage_prefix
        try:
            resp = await self.kv.get(key, recursive=True, sorted=True, quorum=self.quorum_reads)
        except EtcdError as exc:
            if exc.error_code == KEY_NOT_FOUND:
                return [], exc.index
            raise errors.internal(f"listing {res.resource} from the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        out: list[dict[str, Any]] = []
        depth = 1 if res.namespaced and not namespace else 0
        _leaves(resp.node, depth, out)
        return out, resp.etcd_index

    async def current_index(self) -> int:
        """The store's index now (a resourceVersion to start a watch at when there is nothing to list)."""
        try:
            resp = await self.kv.get("/registry")
        except EtcdError as exc:
            return exc.index
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        return resp.etcd_index

    # --- writes -----------------------------------------------------------------------------

    async def create(self, res: Resource, obj: dict[str, Any], *, ttl: int | None = None) -> dict[str, Any]:
        """Store a new object (metadata.name/namespace set); sets and returns it with its resourceVersion."""
        meta = obj["metadata"]
        name = meta["name"]
        key = res.storage_key(meta.get("namespace"), name)
        try:
            resp = await self.kv.create(key, _encode(obj), ttl=ttl)
        except EtcdError as exc:
            if exc.error_code == NODE_EXIST:
                raise errors.already_exists(res, name) from None
            raise errors.internal(f"writing {res.resource} {name!r} to the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        meta["resourceVersion"] = str(resp.node["modifiedIndex"])
        return obj

    async def update(
        self, res: Resource, obj: dict[str, Any], prev_rv: int, *, ttl: int | None = None
    ) -> dict[str, Any]:
        """Replace an object if its resourceVersion is still `prev_rv` (409 Conflict otherwise)."""
        meta = obj["metadata"]
        name = meta["name"]
        key = res.storage_key(meta.get("namespace"), name)
        try:
            resp = await self.kv.compare_and_swap(key, _encode(obj), prev_index=prev_rv, ttl=ttl)
        except EtcdError as exc:
            if exc.error_code == COMPARE_FAILED:
                raise errors.stale_conflict(res, name) from None
            if exc.error_code == KEY_NOT_FOUND:
                raise errors.not_found(res, name) from None
            raise errors.internal(f"writing {res.resource} {name!r} to the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        meta["resourceVersion"] = str(resp.node["modifiedIndex"])
        return obj

    async def delete(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Remove an object if unchanged since it was read; returns it with the deletion's resourceVersion."""
        meta = obj["metadata"]
        name = meta["name"]
        key = res.storage_key(meta.get("namespace"), name)
        try:
            resp = await self.kv.delete(key, prev_index=resource_version(obj))
        except EtcdError as exc:
            if exc.error_code == COMPARE_FAILED:
                raise errors.stale_conflict(res, name) from None
            if exc.error_code == KEY_NOT_FOUND:
                raise errors.not_found(res, name) from None
            raise errors.internal(f"deleting {res.resource} {name!r} from the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        meta["resourceVersion"] = str(resp.node.get("modifiedIndex") or resp.etcd_index)
        return obj

    # --- raw keys (allocators and other server-owned records) --------------------------------

    async def claim(self, key: str, value: str) -> bool:
        """Create `key` if absent; False when someone holds it already."""
        try:
            await self.kv.create(key, value)
        except EtcdError as exc:
            if exc.error_code == NODE_EXIST:
                return False
            raise errors.internal(f"writing {key} to the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        return True

    async def release(self, key: str, value: str | None = None) -> None:
        """Delete `key` (only if it still holds `value`, when given); absent keys are fine."""
        try:
            await self.kv.delete(key, prev_value=value)
        except EtcdError as exc:
            if exc.error_code in (KEY_NOT_FOUND, COMPARE_FAILED):
                return
            raise errors.internal(f"deleting {key} from the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None

    async def read_value(self, key: str) -> str | None:
        try:
            resp = await self.kv.get(key)
        except EtcdError as exc:
            if exc.error_code == KEY_NOT_FOUND:
                return None
            raise errors.internal(f"reading {key} from the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        return resp.node.get("value")

    async def read_dir(self, key: str) -> dict[str, str]:
        """The values of the keys directly under a directory, by their last path segment."""
        try:
            resp = await self.kv.get(key, recursive=True)
        except EtcdError as exc:
            if exc.error_code == KEY_NOT_FOUND:
                return {}
            raise errors.internal(f"reading {key} from the store: {exc}") from None
        except ClusterUnavailable as exc:
            raise self._unavailable(exc) from None
        return {
            n["key"].rsplit("/", 1)[-1]: n.get("value", "")
            for n in resp.node.get("nodes") or ()
            if not n.get("dir")
        }

    # --- watch ------------------------------------------------------------------------------

    async def watch(
        self, res: Resource, namespace: str | None, since: int, name: str | None = None
    ) -> AsyncIterator[StoreEvent]:
        """Every change of the resource (in a namespace, or of one object) from index `since` on."""
        if name is not None:
            key, recursive = res.storage_key(namespace, name), False
        else:
            key, recursive = (res.storage_key(namespace) if namespace else res.storage_prefix), True
        depth = key.count("/") + (1 if name is None else 0) + (1 if res.namespaced and not namespace else 0)
        stream = self.kv.watch_stream(key, index=max(since, 1), recursive=recursive)
        try:
            while True:
                try:
                    ev = await anext(stream, None)
                except EtcdError as exc:
                    if exc.error_code == INDEX_CLEARED:
                        raise errors.gone(
                            f"too old resource version: {since} ({exc.index or exc.message})"
                        ) from None
                    raise errors.internal(f"watching {res.resource} in the store: {exc}") from None
                except ClusterUnavailable as exc:
                    raise self._unavailable(exc) from None
                if ev is None:
                    return
                node = ev.node
                if node.get("dir") or node.get("key", "").count("/") != depth:
                    continue
                rv = node["modifiedIndex"]
                prev = ev.prev_node
                if ev.action in _DELETE_ACTIONS:
                    obj = decode_node(prev, rv) if prev else None
                    if obj is not None:
                        yield StoreEvent("DELETED", obj, None, rv)
                    continue
                obj = decode_node(node, rv)
                if obj is None:
                    continue
                old = decode_node(prev) if prev and prev.get("value") is not None else None
                yield StoreEvent("ADDED" if old is None else "MODIFIED", obj, old, rv)
        finally:
            await stream.aclose()
