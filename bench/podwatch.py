"""One watch on a benchmark namespace's pods, timestamped as events arrive (monotonic time).

A dropped or too-old watch lists again (pods seen late get the list's time) and goes on from the
list's resourceVersion. Subclasses say what they record from each pod in `see`.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import Any

from orchestrator.apiclient import PODS, ApiClient, ApiError


class PodWatch(abc.ABC):
    def __init__(self, client: ApiClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.changed = asyncio.Event()

    @abc.abstractmethod
    def _see(self, pod: dict[str, Any], now: float) -> None:
        """Record what this pod's state says, as seen at `now`."""

    async def run(self, resource_version: str) -> None:
        rv = resource_version
        while True:
            try:
                async for kind, obj in self.client.watch(*PODS, self.namespace, resource_version=rv):
                    now = time.monotonic()
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if kind in ("ADDED", "MODIFIED"):
                        self._see(obj, now)
            except ApiError:
                listing = await self.client.list(*PODS, self.namespace)
                now = time.monotonic()
                for pod in listing.get("items") or ():
                    self._see(pod, now)
                rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
