"""The controller manager: every controller in one process, behind a leader-election Lease.

`run_manager` is kube-controller-manager's shape. It serves `/healthz`, `/readyz` and
`/metrics` (work queue depth, adds, retries, queue latency and sync latency per controller —
`workqueue_work_duration_seconds{name="deployment"}` — plus `leader_election_master_status`)
at once, then campaigns for the Lease `kube-system/kube-controller-manager`. Only the leader
runs controllers: on winning it builds fresh shared informers (one list+watch per resource for
all controllers), the event sink and the chosen controllers, and runs them until it stops or
loses the Lease — then everything is cancelled, and a standby that sees the Lease expire (or
released on a clean stop) takes over with state rebuilt from the API server, so no in-memory
state (expectations, health records) outlives a leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from orchestrator.apiclient import ApiClient, ApiError, ClientConfig
from orchestrator.leaderelection import LeaderElector, LeaseConfig
from orchestrator.watchers import InformerFactory, WorkQueueMetrics

from .base import BaseController, ControllerContext, ControllerOptions, EventSink
from .cronjob import CronJobController
from .daemonset import DaemonSetController
from .deployment import DeploymentController
from .discovery import discover
from .endpoints import EndpointsController
from .endpointslice import EndpointSliceController
from .garbagecollector import GarbageCollector
from .hpa import HorizontalPodAutoscalerController
from .job import JobController
from .namespace import NamespaceController
from .nodelifecycle import NodeLifecycleController, TaintEvictionController
from .podgc import ORPHAN_QUARANTINE, PodGCController
from .replicaset import ReplicaSetController
from .statefulset import StatefulSetController

log = logging.getLogger(__name__)

# --controllers names, as kube-controller-manager spells them.
CONTROLLERS: dict[str, Callable[..., BaseController]] = {
    "replicaset": ReplicaSetController,
    "deployment": DeploymentController,
    "daemonset": DaemonSetController,
    "statefulset": StatefulSetController,
    "job": JobController,
    "cronjob": CronJobController,
    "horizontalpodautoscaling": HorizontalPodAutoscalerController,
    "endpoint": EndpointsController,
    "endpointslice": EndpointSliceController,
    "namespace": NamespaceController,
    "nodelifecycle": NodeLifecycleController,
    "taint-eviction-controller": TaintEvictionController,
    "podgc": PodGCController,
    "garbagecollector": GarbageCollector,
}


def select_controllers(spec: Iterable[str]) -> list[str]:
    """kube's --controllers: `*` is all, `foo` adds one, `-foo` removes one. Unknown names are
    an error the user can act on."""
    chosen: set[str] = set()
    items = [s.strip() for part in spec for s in part.split(",") if s.strip()]
    if not items:
        items = ["*"]
    for item in items:
        name = item[1:] if item.startswith("-") else item
        if name != "*" and name not in CONTROLLERS:
            raise ValueError(f"unknown controller {name!r}; known: {', '.join(sorted(CONTROLLERS))}")
        if item == "*":
            chosen |= set(CONTROLLERS)
        elif item.startswith("-"):
            chosen.discard(name)
        else:
            chosen.add(name)
    disabled = {i[1:] for i in items if i.startswith("-")}
    return [n for n in CONTROLLERS if n in chosen - disabled]


@dataclass
class ManagerOptions:
    server: str | ClientConfig  # a URL, or a kubeconfig's server and credentials
    controllers: list[str] = field(default_factory=lambda: list(CONTROLLERS))
    lease: LeaseConfig | None = None
    bind_address: str = "127.0.0.1"
    port: int = 10257
    controller_options: ControllerOptions = field(default_factory=ControllerOptions)
    pod_gc_quarantine: float = ORPHAN_QUARANTINE


class Manager:
    """Builds and runs the controllers; serves health and metrics."""

    def __init__(self, client: ApiClient, options: ManagerOptions) -> None:
        self.client = client
        self.options = options
        self.registry = CollectorRegistry()
        self.queue_metrics = WorkQueueMetrics(self.registry)
        self.leader = Gauge(
            "leader_election_master_status",
            "1 while this replica holds the Lease",
            ["name"],
            registry=self.registry,
        )
        self.running: list[BaseController] = []
        self.synced = False

    async def build(self, factory: InformerFactory, sink: EventSink) -> list[BaseController]:
        ctx = ControllerContext(
            self.client, factory, sink, self.queue_metrics, self.options.controller_options
        )
        built: list[BaseController] = []
        for name in self.options.controllers:
            if name == "garbagecollector":
                resources = await self._discover()
                built.append(GarbageCollector(ctx, resources))
            elif name == "podgc":
                built.append(PodGCController(ctx, self.options.pod_gc_quarantine))
            else:
                built.append(CONTROLLERS[name](ctx))
        return built

    async def _discover(self):  # type: ignore[no-untyped-def]
        delay = 0.2
        while True:
            try:
                return await discover(self.client)
            except ApiError as exc:
                log.info("discovery failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def run_controllers(self) -> None:
        """Run the controllers until cancelled (what the leader does)."""
        factory = InformerFactory(self.client)
        sink = EventSink(self.client)
        try:
            self.running = await self.build(factory, sink)
            factory.start()
            log.info("starting controllers: %s", ", ".join(c.name for c in self.running))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(sink.run(), name="events")
                tg.create_task(self._watch_synced(factory), name="synced")
                for ctl in self.running:
                    tg.create_task(ctl.run(), name=f"controller {ctl.name}")
        finally:
            self.synced = False
            self.running = []
            await factory.stop()
            with contextlib.suppress(Exception):
                await asyncio.shield(sink.flush(1.0))

    async def _watch_synced(self, factory: InformerFactory) -> None:
        await factory.wait_synced()
        self.synced = True
        log.info("informer caches synced")

    async def run(self) -> None:
        lease = self.options.lease
        if lease is None:
            self.leader.labels("kube-controller-manager").set(1)
            await self.run_controllers()
            return
        gauge = self.leader.labels(lease.name)
        elector = LeaderElector(self.client, lease, on_change=lambda leading: gauge.set(int(leading)))
        self.elector = elector
        log.info("waiting to lead %s/%s as %s", lease.namespace, lease.name, lease.identity)
        await elector.run(self.run_controllers)

    # --- http -------------------------------------------------------------------------------------

    async def start_http(self) -> web.AppRunner | None:
        if not self.options.port:
            return None

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def readyz(_: web.Request) -> web.Response:
            leading = self.options.lease is None or getattr(
                getattr(self, "elector", None), "is_leader", False
            )
            if leading and not self.synced:
                return web.Response(status=503, text="caches not synced")
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.options.bind_address, self.options.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner


async def run_manager(options: ManagerOptions) -> None:
    """The whole process; runs until cancelled (a leader hands its Lease back on the way out)."""
    async with ApiClient(options.server, user_agent="grove-controller-manager") as client:
        manager = Manager(client, options)
        runner = await manager.start_http()
        try:
            await manager.run()
        finally:
            if runner is not None:
                await runner.cleanup()
