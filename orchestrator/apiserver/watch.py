"""Watch requests: a chunked stream of `{"type": ..., "object": ...}` lines, one per change.

A watch starts where the client says (`resourceVersion=N`: every change after N), or — without a
resourceVersion — with ADDED events for what exists now and then the changes after that list.
Label and field selectors apply to each change the way kube-apiserver applies them: an object
that stops matching is sent as DELETED, one that starts matching as ADDED. BOOKMARK events (on
request) tell the client how far the stream has come; `timeoutSeconds` ends the stream cleanly;
a resourceVersion that fell out of the store's history ends it with an ERROR event carrying a
410 Expired Status, as Kubernetes does. Events come from the resource's shared watch cache
(see watchcache.py) when it covers the requested version, else straight from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from orchestrator.resources import Resource
from orchestrator.tables import to_table

from . import errors
from .codec import Accept
from .handlers import Api, field_selector_name, field_selector_value, include_object, partial, selection
from .routing import RequestInfo, is_true
from .storage import StoreEvent
from .watchcache import EventSink, WatchCaches

log = logging.getLogger("grove.apiserver")


class _Encoder:
    """Turns objects into the shape the client asked for (plain, Table rows, or metadata only)."""

    def __init__(self, res: Resource, accept: Accept, query: Any) -> None:
        self.res = res
        self.accept = accept
        self.include = include_object(query) if accept.as_kind == "Table" else "Object"
        self.first = True
        self.plain = accept.as_kind is None

    def event(self, type_: str, obj: dict[str, Any]) -> bytes:
        if self.accept.as_kind == "Table":
            body: dict[str, Any] = to_table(
                self.res, [obj], include_object=self.include, no_headers=not self.first
            )
            body["metadata"]["resourceVersion"] = obj["metadata"].get("resourceVersion", "")
            self.first = False
        elif self.accept.as_kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
            body = partial(obj, self.accept.version)
        else:
            body = obj
        return orjson.dumps({"type": type_, "object": body}) + b"\n"

    def store_event(self, type_: str, ev: StoreEvent) -> bytes | None:
        """The line for a store event passed on as it is (its object shared, maybe never decoded)."""
        if self.plain:
            raw = ev.object_json()
            return None if raw is None else b'{"type":"%s","object":%s}\n' % (type_.encode(), raw)
        obj = ev.object
        return None if obj is None else self.event(type_, obj)

    def bookmark(self, rv: int) -> bytes:
        obj = {
            "kind": self.res.kind,
            "apiVersion": self.res.group_version,
            "metadata": {"resourceVersion": str(rv)},
        }
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"


def _error_line(err: errors.ApiError) -> bytes:
    return orjson.dumps({"type": "ERROR", "object": err.status()}) + b"\n"


def _filtered(
    ev: StoreEvent, match: Callable[[dict[str, Any]], bool]
) -> tuple[str, dict[str, Any] | None] | None:
    """The event a selective watcher sees for a store change (None: nothing); an object of None
    means the change's own object, unchanged."""
    obj = ev.object
    if obj is None:
        return None
    now = match(obj)
    if ev.type != "MODIFIED":
        return (ev.type, None) if now else None
    old = ev.old
    before = old is not None and match(old)
    if now:
        return ("MODIFIED" if before else "ADDED"), None
    if before:
        assert old is not None
        # The old state, at the version of the change that made it leave (ev.old is shared: copy).
        return "DELETED", {**old, "metadata": {**old["metadata"], "resourceVersion": str(ev.rv)}}
    return None


async def serve_watch(
    request: web.Request, api: Api, caches: WatchCaches, info: RequestInfo, accept: Accept
) -> web.StreamResponse:
    query = request.query
    res = info.res
    namespace = info.namespace
    match = selection(res, query)
    timeout = _timeout(query, api.config.min_request_timeout)
    bookmarks = is_true(query.get("allowWatchBookmarks"))
    name = info.name
    if name is None and (namespace is not None or not res.namespaced):
        name = field_selector_name(query)
    rv_param = query.get("resourceVersion") or ""
    initial: list[dict[str, Any]] = []
    if rv_param in ("", "0"):
        if name is not None:
            obj, rv = await api.storage.get_with_index(res, namespace, name)
            initial = [obj] if obj is not None else []
            since = rv + 1
        else:
            items, rv = await api.storage.list(res, namespace)
            initial = items
            since = rv + 1
        if match is not None:
            initial = [o for o in initial if match(o)]
    else:
        try:
            since = int(rv_param) + 1
        except ValueError:
            raise errors.bad_request(
                f'resourceVersion: Invalid value: "{rv_param}": must be an integer'
            ) from None
        if since < 1:
            raise errors.bad_request(f'resourceVersion: Invalid value: "{rv_param}": must not be negative')

    resp = web.StreamResponse(
        status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    encoder = _Encoder(res, accept, query)
    if initial:
        await resp.write(b"".join(encoder.event("ADDED", o) for o in initial))

    node = field_selector_value(query, "spec.nodeName") if res.resource == "pods" and not res.group else None
    sink = EventSink()
    producer = asyncio.create_task(
        caches.pump(res, namespace, name, since, sink, node), name=f"watch-{res.resource}"
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    interval = api.config.bookmark_interval
    next_bookmark = loop.time() + interval
    last_rv = since - 1
    try:
        ended = False
        while not ended:
            now = loop.time()
            if now >= deadline:
                break
            wake = min(deadline, next_bookmark) if bookmarks else deadline
            batch = await sink.take(max(wake - now, 0.001))
            if batch is None:
                if bookmarks and loop.time() >= next_bookmark:
                    await resp.write(encoder.bookmark(last_rv))
                    next_bookmark = loop.time() + interval
                continue
            lines = []
            for item in batch:
                if item is None:
                    ended = True
                    break
                if isinstance(item, errors.ApiError):
                    lines.append(_error_line(item))
                    ended = True
                    break
                last_rv = item.rv
                if match is None:
                    line = encoder.store_event(item.type, item)
                else:
                    out = _filtered(item, match)
                    if out is None:
                        continue
                    type_, obj = out
                    line = encoder.store_event(type_, item) if obj is None else encoder.event(type_, obj)
                if line is not None:
                    lines.append(line)
            if lines:
                await resp.write(b"".join(lines))
        if bookmarks:
            await resp.write(encoder.bookmark(last_rv))
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producer
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


def _timeout(query: Any, minimum: int) -> float:
    raw = query.get("timeoutSeconds")
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise errors.bad_request(f'timeoutSeconds: Invalid value: "{raw}": must be an integer') from None
        if value < 0:
            raise errors.bad_request(f'timeoutSeconds: Invalid value: "{raw}": must not be negative')
        if value > 0:
            return float(value)
    # kube-apiserver spreads watch lifetimes over [min, 2*min) so clients do not reconnect in step.
    return minimum * (1 + random.random())
