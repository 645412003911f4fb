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


class StoreEvent:
    """One change under a resource's prefix: type ADDED/MODIFIED/DELETED at store index `rv`.

    `value` is the stored JSON of the object after the change (for DELETED: its last state) and
    `old_value` the state before a MODIFIED. Decoding is left to whoever needs the objects: a
    watcher without selectors gets `line()`, the stored JSON with the resourceVersion spliced in,
    so one event shared by many watchers is decoded and encoded at most once, often never.
    Objects handed out are shared: readers must not change them.
    """

    __slots__ = (
        "_json",
        "_object",
        "_old",
        "name",
        "namespace",
        "old_rv",
        "old_value",
        "rv",
        "type",
        "value",
    )

    def __init__(
        self,
        type_: str,
        rv: int,
        namespace: str | None,
        name: str,
        value: str,
        old_value: str | None = None,
        old_rv: int = 0,
    ) -> None:
        self.type = type_
        self.rv = rv
        self.namespace = namespace
        self.name = name
        self.value = value
        self.old_value = old_value
        self.old_rv = old_rv
        self._object: dict[str, Any] | None = None
        self._old: dict[str, Any] | None = None
        self._json: bytes | None = None

    @property
    def object(self) -> dict[str, Any] | None:
        """The object after the change (with resourceVersion `rv`); None if the value is no object."""
        if self._object is None:
            self._object = decode_value(self.value, self.rv)
        return self._object

    @property
    def old(self) -> dict[str, Any] | None:
        """The object before a MODIFIED (with its own resourceVersion)."""
        if self._old is None and self.old_value is not None:
            self._old = decode_value(self.old_value, self.old_rv)
        return self._old

    def decoded(self) -> dict[str, Any] | None:
        """`object` if it is decoded already (None otherwise: nothing is decoded here)."""
        return self._object

    def attach(self, obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
        """Take the decoded objects from whoever wrote them (equal to what decoding `value` and
        `old_value` gives), so that they need not be decoded again. They are shared from now on."""
        if self._object is None:
            self._object = obj
        if old is not None and self._old is None and self.old_value is not None:
            self._old = old

    def forget_decoded(self) -> None:
        """Drop the decoded objects (they are many times the size of the JSON they came from)."""
        self._object = self._old = None

    def object_json(self) -> bytes | None:
        """`object` as JSON bytes (None if the value is no object)."""
        if self._json is None:
            self._json = with_resource_version(self.value, self.rv)
            if self._json is None:
                obj = self.object
                if obj is None:
                    return None
                self._json = orjson.dumps(obj)
        return self._json


_METADATA = b'"metadata":{'


def with_resource_version(value: str, rv: int) -> bytes | None:
    """The stored JSON of an object with `metadata.resourceVersion` added, without decoding it;
    None when the top-level metadata cannot be found for sure (decode instead)."""
    raw = value.encode()
    at = raw.find(_METADATA)
    # The first `"metadata":{` (which can only be a key: quotes inside strings are escaped) is the
    # top-level one when no other object was opened before it.
    # (A stored resourceVersion — never written by this server — would be repeated: decode instead.)
    if at < 0 or raw[0:1] != b"{" or raw.count(b"{", 0, at) != 1 or b'"resourceVersion"' in raw:
        return None
    at += len(_METADATA)
    sep = b"" if raw[at : at + 1] == b"}" else b","
    return b'%s"resourceVersion":"%d"%s%s' % (raw[:at], rv, sep, raw[at:])


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
    return decode_value(value, rv if rv is not None else node.get("modifiedIndex", 0))


def decode_value(value: str, rv: int) -> dict[str, Any] | None:
    """A stored object with its resourceVersion; None for a value that is no object."""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = obj["metadata"] = {}
    meta["resourceVersion"] = str(rv)
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
        namespaced = res.namespaced
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
                node_key = node.get("key", "")
                if node.get("dir") or node_key.count("/") != depth:
                    continue
                parts = node_key.rsplit("/", 2)
                obj_ns = parts[1] if namespaced else None
                rv = node["modifiedIndex"]
                prev = ev.prev_node
                if ev.action in _DELETE_ACTIONS:
                    if prev and prev.get("value") is not None:
                        yield StoreEvent("DELETED", rv, obj_ns, parts[2], prev["value"])
                    continue
                value = node.get("value")
                if value is None:
                    continue
                old = prev.get("value") if prev else None
                if old is None:
                    yield StoreEvent("ADDED", rv, obj_ns, parts[2], value)
                else:
                    yield StoreEvent(
                        "MODIFIED", rv, obj_ns, parts[2], value, old, prev.get("modifiedIndex", 0)
                    )
        finally:
            await stream.aclose()
