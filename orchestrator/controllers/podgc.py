"""Pod garbage collection: pods bound to nodes that no longer exist are removed.

A pod whose node object was deleted has no node agent left to stop it and confirm its
deletion, so it would stay forever (and a DaemonSet would count it). kube's PodGC deletes such
orphaned pods — after a quarantine (40 s) in which the node must stay absent, confirmed by a
live read, so a node that is merely late in the cache is not robbed — at once (grace period 0),
with the DisruptionTarget condition DeletionByPodGC. Unscheduled pods that are being deleted
are finished off the same way: no node will ever confirm them.
"""

from __future__ import annotations

import logging

from orchestrator.apiclient import NODES, PODS, ApiError, NotFound, Obj
from orchestrator.watchers import index_by_node

from .base import BY_NODE, BaseController, ControllerContext
from .nodelifecycle import mark_disruption
from .util import being_deleted, key_of, meta, name_of, namespace_of, spec

log = logging.getLogger(__name__)

ORPHAN_QUARANTINE = 40.0


class PodGCController(BaseController):
    name = "podgc"
    default_workers = 2

    def __init__(self, ctx: ControllerContext, quarantine: float = ORPHAN_QUARANTINE) -> None:
        super().__init__(ctx)
        self.quarantine = quarantine
        self.missing_since: dict[str, float] = {}
        self.node_informer = self.informer(NODES)
        self.pod_informer = self.informer(PODS, indexers={BY_NODE: index_by_node})
        self.node_informer.add_handler(None, None, self._node_deleted)
        self.pod_informer.add_handler(self._pod_changed, lambda o, c: self._pod_changed(c), self._pod_deleted)

    def _node_deleted(self, node: Obj) -> None:
        for pod in self.pod_informer.by_index(BY_NODE, name_of(node)):
            self.enqueue_obj(pod)

    def _pod_changed(self, pod: Obj) -> None:
        node = spec(pod).get("nodeName")
        if (node and node not in self.node_informer) or (not node and being_deleted(pod)):
            self.enqueue_obj(pod)

    def _pod_deleted(self, pod: Obj) -> None:
        self.missing_since.pop(key_of(pod), None)

    async def sync(self, key: str) -> None:
        pod = self.pod_informer.get(key)
        if pod is None:
            self.missing_since.pop(key, None)
            return
        node_name = spec(pod).get("nodeName")
        if not node_name:
            if being_deleted(pod):
                await self._force_delete(pod, None)
            return
        if node_name in self.node_informer:
            self.missing_since.pop(key, None)
            return
        now = self.now()
        since = self.missing_since.setdefault(key, now)
        if now - since < self.quarantine:
            self.enqueue_after(key, self.quarantine - (now - since))
            return
        try:
            await self.client.get(*NODES, node_name)
            return  # the node exists after all; our cache is behind
        except NotFound:
            pass
        await mark_disruption(self.ctx, pod, "DeletionByPodGC", "PodGC: node no longer exists")
        await self._force_delete(pod, node_name)

    async def _force_delete(self, pod: Obj, node_name: str | None) -> None:
        try:
            await self.client.delete(
                *PODS, name_of(pod), namespace=namespace_of(pod), grace_period_seconds=0,
                preconditions={"uid": meta(pod).get("uid")},
            )  # fmt: skip
        except NotFound:
            return
        except ApiError as exc:
            log.info("podgc: cannot delete %s: %s", key_of(pod), exc)
            raise
        self.missing_since.pop(key_of(pod), None)
        if node_name:
            log.info("podgc: deleted %s, bound to vanished node %s", key_of(pod), node_name)
        else:
            log.info("podgc: deleted unscheduled terminating pod %s", key_of(pod))
