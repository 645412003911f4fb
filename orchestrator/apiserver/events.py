"""Event aggregation: the same event about the same object becomes one Event with a count.

A component that reports "Scheduled" or "BackOff" over and over should not flood the store, so
when an Event arrives that matches one this server created recently (same involved object,
reason, message, type and source), the existing Event's count and lastTimestamp are bumped
instead of a new object being stored — what client-go's event correlator does on the client
side, done once here for every component. Events carry the store TTL (`--event-ttl`), so they
expire by themselves.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

from orchestrator.resources import Resource

from . import errors, strategy
from .storage import Storage, resource_version

_CACHE_SIZE = 4096
_RETRIES = 5


def _key(event: dict[str, Any]) -> tuple[str, ...]:
    meta = event.get("metadata") or {}
    inv = event.get("involvedObject") or {}
    src = event.get("source") or {}
    return (
        str(meta.get("namespace", "")),
        str(inv.get("kind", "")),
        str(inv.get("namespace", "")),
        str(inv.get("name", "")),
        str(inv.get("uid", "")),
        str(inv.get("apiVersion", "")),
        str(inv.get("fieldPath", "")),
        str(event.get("reason", "")),
        str(event.get("message", "")),
        str(event.get("type", "")),
        str(src.get("component", "")),
        str(src.get("host", "")),
        str(event.get("reportingComponent", "")),
        str(event.get("reportingInstance", "")),
    )


def fill_timestamps(event: dict[str, Any]) -> None:
    """An event without any time gets first/last timestamps of now and a count of 1."""
    if not event.get("eventTime"):
        now = strategy.now_rfc3339()
        event.setdefault("firstTimestamp", now)
        if not event.get("firstTimestamp"):
            event["firstTimestamp"] = now
        if not event.get("lastTimestamp"):
            event["lastTimestamp"] = event["firstTimestamp"]
    if not event.get("count"):
        event["count"] = 1


class EventAggregator:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._names: OrderedDict[tuple[str, ...], str] = OrderedDict()

    def remember(self, event: dict[str, Any]) -> None:
        key = _key(event)
        self._names[key] = event["metadata"]["name"]
        self._names.move_to_end(key)
        while len(self._names) > _CACHE_SIZE:
            self._names.popitem(last=False)

    def forget(self, event: dict[str, Any]) -> None:
        key = _key(event)
        if self._names.get(key) == (event.get("metadata") or {}).get("name"):
            del self._names[key]

    async def aggregate(
        self, res: Resource, event: dict[str, Any], ttl: int | None, *, dry_run: bool = False
    ) -> dict[str, Any] | None:
        """The existing Event updated with this occurrence, or None when it is a new one."""
        fill_timestamps(event)
        key = _key(event)
        name = self._names.get(key)
        if name is None:
            return None
        namespace = event["metadata"].get("namespace")
        for _ in range(_RETRIES):
            current = await self.storage.try_get(res, namespace, name)
            if current is None or _key(current) != key:
                self._names.pop(key, None)
                return None
            new = copy.deepcopy(current)
            new["count"] = int(current.get("count") or 1) + int(event.get("count") or 1)
            new["lastTimestamp"] = event.get("lastTimestamp") or strategy.now_rfc3339()
            if event.get("series"):
                new["series"] = event["series"]
            if dry_run:
                return new
            try:
                return await self.storage.update(res, new, resource_version(current), ttl=ttl)
            except errors.ApiError as exc:
                if exc.reason == "NotFound":
                    self._names.pop(key, None)
                    return None
                if exc.reason != "Conflict":
                    raise
        return None
