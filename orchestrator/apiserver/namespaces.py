"""Namespace lifecycle admission: objects go only into namespaces that exist and are not terminating.

Every create of a namespaced object asks this; a store read per create would double the cost of
the hot path (the scheduler benchmark creates thousands of pods), so the phases of all namespaces
are kept from a list+watch of `/registry/namespaces`, with a live read when a name is not in that
cache yet (a namespace created a moment ago through another API server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from orchestrator.resources import Resource

from . import errors
from .storage import Storage

log = logging.getLogger("grove.apiserver")


class NamespaceLifecycle:
    IMMORTAL = frozenset(("default", "kube-system", "kube-public"))
    # Namespaces created at start-up, as kube-apiserver's system namespaces controller does.
    SYSTEM = ("default", "kube-system", "kube-public", "kube-node-lease")

    def __init__(self, storage: Storage, namespaces: Resource) -> None:
        self.storage = storage
        self.res = namespaces
        self.phases: dict[str, str] = {}
        self._synced = False
        self._task: asyncio.Task[None] | None = None

    def observe(self, ns: dict[str, Any]) -> None:
        name = (ns.get("metadata") or {}).get("name")
        if name:
            self.phases[name] = (ns.get("status") or {}).get("phase") or "Active"

    def forget(self, name: str) -> None:
        self.phases.pop(name, None)

    async def phase(self, namespace: str) -> str | None:
        phase = self.phases.get(namespace)
        if phase is not None and phase != "Terminating":
            return phase
        # Not known (or terminating, which may have ended): ask the store.
        obj = await self.storage.try_get(self.res, None, namespace)
        if obj is None:
            self.phases.pop(namespace, None)
            return None
        self.observe(obj)
        return self.phases.get(namespace)

    async def admit_create(self, namespace: str, res: Resource, name: str) -> None:
        phase = await self.phase(namespace)
        if phase is None:
            raise errors.namespace_not_found(namespace)
        if phase == "Terminating":
            why = f"unable to create new content in namespace {namespace} because it is being terminated"
            err = errors.forbidden(res, name, f'{errors.qualified(res)} "{name}" is forbidden: {why}')
            err.details = dict(err.details or {})
            err.details["causes"] = [
                {"reason": "NamespaceTerminating", "message": why, "field": "metadata.namespace"}
            ]
            raise err

    # --- the cache --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="namespace-cache")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                items, rv = await self.storage.list(self.res, None)
                self.phases = {}
                for ns in items:
                    self.observe(ns)
                self._synced = True
                delay = 0.1
                async for ev in self.storage.watch(self.res, None, rv + 1):
                    if ev.type == "DELETED":
                        self.forget(ev.name)
                    elif ev.object is not None:
                        self.observe(ev.object)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - store down or history moved on: list again
                log.debug("namespace cache: %s; relisting", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
