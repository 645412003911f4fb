"""`grove bench pod-startup`: from `kubectl create` to a running, ready pod, on real Docker.

Kubernetes' pod startup SLO (p99 ≤ 5 s, image already on the node) is the number users feel,
so this benchmark measures the same thing on grove: it starts a cluster the way `grove up` does
(three store members, the API server, the scheduler, Docker node agents; no controllers, DNS or
proxy, which pod startup does not need), runs one warm-up pod, then creates `--pods` busybox
pods at `--rate` pods per second. One watch on the namespace notes when each pod is first seen
bound and first seen Running with its Ready condition True (the SLO's "running and ready");
latency is from just before the pod's POST to that watch event.
The pods are deleted afterwards and their containers removed. `--server` measures a running
cluster instead (its nodes must run Docker pods and have grove/busybox present).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.kv import machine_busy_seconds
from bench.podwatch import PodWatch
from bench.schedule import percentile
from orchestrator.apiclient import NAMESPACES, PODS, ApiClient, ApiError, ClientConfig, load_kubeconfig

NAMESPACE = "grove-bench-podstartup"
IMAGE = "grove/busybox:1.35"
STALL_SECONDS = 120.0


class PodStartupBenchError(RuntimeError):
    """Something the user can act on (no Docker Engine, the cluster did not start); one line."""


@dataclass
class PodStartupConfig:
    pods: int = 50
    rate: float = 5.0  # pods created per second; 0: all at once
    nodes: int = 1
    server: str | None = None


@dataclass
class Stage:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, values_ms: list[float]) -> Stage:
        v = sorted(values_ms)
        return cls(
            p50_ms=round(percentile(v, 50), 1),
            p90_ms=round(percentile(v, 90), 1),
            p99_ms=round(percentile(v, 99), 1),
            max_ms=round(v[-1], 1) if v else 0.0,
        )


@dataclass
class PodStartupResult:
    pods: int
    rate: float
    nodes: int
    running: int
    seconds: float  # first POST to last pod Running and Ready
    startup: Stage  # creation -> Running and Ready
    scheduling: Stage  # creation -> bound
    node: Stage  # bound -> Running and Ready (the node agent and Docker)
    warmup_ms: float | None
    machine_busy_cores: float  # average over the run, all processes (dockerd and neighbours too)
    per_pod: list[dict[str, Any]]  # name, node, bound_ms, running_ms (to Running and Ready)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    def step(self, text: str) -> None: ...

    def counts(self, created: int, running: int) -> None: ...


def startup_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench-podstartup"}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}},
                }
            ],
            "terminationGracePeriodSeconds": 0,
        },
    }


def running_and_ready(pod: dict[str, Any]) -> bool:
    """Phase Running and the Ready condition True: the pod startup SLO's end point."""
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ()
    )
    return status.get("phase") == "Running" and ready


class StageWatch(PodWatch):
    """One watch on the namespace: when each pod was first seen bound, and first seen Running
    and Ready."""

    def __init__(self, client: ApiClient) -> None:
        super().__init__(client, NAMESPACE)
        self.bound_at: dict[str, float] = {}
        self.running_at: dict[str, float] = {}
        self.node_of: dict[str, str] = {}
        self.waiting: dict[str, str] = {}  # name -> last waiting reason, for a stuck run's report

    def _see(self, pod: dict[str, Any], now: float) -> None:
        name = pod["metadata"]["name"]
        node = (pod.get("spec") or {}).get("nodeName")
        if node and name not in self.bound_at:
            self.bound_at[name] = now
            self.node_of[name] = node
        status = pod.get("status") or {}
        if name not in self.running_at and running_and_ready(pod):
            self.running_at[name] = now
            self.bound_at.setdefault(name, now)
            self.changed.set()
        for cs in status.get("containerStatuses") or ():
            reason = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
            if reason:
                self.waiting[name] = reason


async def _wait_running(client: ApiClient, name: str, timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        pod = await client.get("", "v1", "pods", name, namespace=NAMESPACE)
        if running_and_ready(pod):
            return (time.monotonic() - t0) * 1000
        await asyncio.sleep(0.02)
    return None


async def _delete_all(client: ApiClient, names: list[str], timeout: float = 120.0) -> None:
    for name in names:
        try:
            await client.delete(*PODS, name, namespace=NAMESPACE, grace_period_seconds=0)
        except ApiError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = (await client.list(*PODS, NAMESPACE)).get("items") or []
        if not left:
            return
        await asyncio.sleep(0.25)


async def measure(client: ApiClient, config: PodStartupConfig, progress: Progress) -> PodStartupResult:
    notes: list[str] = []
    try:
        await client.create(
            *NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
    except ApiError as exc:
        if exc.code != 409:
            raise
    progress.step("a warm-up pod")
    warm = startup_pod("warmup")
    await client.create(*PODS, warm)
    warmup_ms = await _wait_running(client, "warmup", 120)
    if warmup_ms is None:
        raise PodStartupBenchError(
            "the warm-up pod was not Running and Ready within 120s; are the node agents running Docker pods?"
        )
    await _delete_all(client, ["warmup"])

    listing = await client.list(*PODS, NAMESPACE, limit=1)
    watch = StageWatch(client)
    watcher = asyncio.create_task(watch.run(str(listing["metadata"]["resourceVersion"])))
    names = [f"pod-{i:04d}" for i in range(config.pods)]
    created_at: dict[str, float] = {}
    busy_before = machine_busy_seconds()
    t0 = time.monotonic()
    progress.step(f"creating {config.pods} pods" + (f" at {config.rate:g}/s" if config.rate else " at once"))
    try:

        async def create(i: int) -> None:
            if config.rate:
                delay = t0 + i / config.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            created_at[names[i]] = time.monotonic()
            await client.create(*PODS, startup_pod(names[i]))
            progress.counts(len(created_at), len(watch.running_at))

        async with asyncio.TaskGroup() as tg:
            for i in range(config.pods):
                tg.create_task(create(i))
        progress.step("waiting for every pod to be Running and Ready")
        last, count = time.monotonic(), -1
        while len(watch.running_at) < config.pods:
            watch.changed.clear()
            progress.counts(len(created_at), len(watch.running_at))
            if len(watch.running_at) != count:
                last, count = time.monotonic(), len(watch.running_at)
            elif time.monotonic() - last > STALL_SECONDS:
                stuck = {n: watch.waiting.get(n, "not started") for n in names if n not in watch.running_at}
                reasons = sorted(set(stuck.values()))
                notes.append(
                    f"stopped waiting: {len(stuck)} pods not Running and Ready after {STALL_SECONDS:.0f}s "
                    f"({', '.join(reasons)})"
                )
                break
            try:
                await asyncio.wait_for(watch.changed.wait(), 1.0)
            except TimeoutError:
                pass
        progress.counts(len(created_at), len(watch.running_at))
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    end = max(watch.running_at.values(), default=t0)
    busy = (machine_busy_seconds() - busy_before) / max(time.monotonic() - t0, 1e-3)
    per_pod = []
    for n in names:
        if n not in created_at:
            continue
        bound = watch.bound_at.get(n)
        running = watch.running_at.get(n)
        per_pod.append(
            {
                "name": n,
                "node": watch.node_of.get(n, ""),
                "bound_ms": round((bound - created_at[n]) * 1000, 1) if bound else None,
                "running_ms": round((running - created_at[n]) * 1000, 1) if running else None,
            }
        )
    done = [p for p in per_pod if p["running_ms"] is not None]
    progress.step("deleting the pods")
    await _delete_all(client, names)
    return PodStartupResult(
        pods=config.pods,
        rate=config.rate,
        nodes=len({p["node"] for p in per_pod if p["node"]}),
        running=len(done),
        seconds=round(end - t0, 3),
        startup=Stage.of([p["running_ms"] for p in done]),
        scheduling=Stage.of([p["bound_ms"] for p in done if p["bound_ms"] is not None]),
        node=Stage.of([p["running_ms"] - p["bound_ms"] for p in done if p["bound_ms"] is not None]),
        warmup_ms=round(warmup_ms, 1),
        machine_busy_cores=round(busy, 2),
        per_pod=per_pod,
        notes=notes,
    )


def run_podstartup(config: PodStartupConfig, progress: Progress | None = None) -> PodStartupResult:
    """Start a Docker cluster (unless config.server), measure, stop it and remove its containers."""
    progress = progress or Progress()
    if config.pods < 1:
        raise PodStartupBenchError("--pods must be at least 1")
    if config.server:
        return _run(config.server, config, progress)

    from grove.up import Cluster, UpError, check_docker, ensure_images

    problem = check_docker()
    if problem:
        raise PodStartupBenchError(problem)
    try:
        progress.step("building grove's images (when missing)")
        ensure_images()
    except UpError as exc:
        raise PodStartupBenchError(str(exc)) from None
    work = tempfile.mkdtemp(prefix="grove-bench-podstartup-")
    cluster = Cluster(
        work, nodes=config.nodes, runtime="docker", api_port=0, dns=False, controllers=False, proxy=False
    )
    try:
        try:
            cluster.start(progress.step)
        except UpError as exc:
            raise PodStartupBenchError(str(exc)) from None
        result = _run(load_kubeconfig(cluster.kubeconfig), config, progress)  # as its admin, over TLS
        for comp in cluster.dead_components():
            result.notes.append(f"{comp.name} exited during the run: {comp.tail(5)}")
        return result
    finally:
        progress.step("stopping the cluster and removing its containers")
        cluster.stop(lambda m: None)
        shutil.rmtree(work, ignore_errors=True)


def _run(server: str | ClientConfig, config: PodStartupConfig, progress: Progress) -> PodStartupResult:
    async def main() -> PodStartupResult:
        async with ApiClient(server, user_agent="grove-bench-podstartup", timeout=60) as client:
            try:
                return await measure(client, config, progress)
            except ApiError as exc:
                raise PodStartupBenchError(f"the API server refused: {exc}") from None

    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(main())


# --- presentation ------------------------------------------------------------------------------


def table(result: PodStartupResult) -> Any:
    from rich.table import Table

    how = f"{result.rate:g} pods/s" if result.rate else "all at once"
    t = Table(
        title=f"{result.pods} pods created {how} on {result.nodes} Docker node(s)", title_justify="left"
    )
    for col in ("stage", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        t.add_column(col, justify="right" if col != "stage" else "left")
    rows: list[tuple[str, Stage]] = [
        ("creation → Running and Ready", result.startup),
        ("creation → bound (scheduler)", result.scheduling),
        ("bound → Running and Ready (node agent + Docker)", result.node),
    ]
    for label, s in rows:
        t.add_row(label, f"{s.p50_ms:,.0f}", f"{s.p90_ms:,.0f}", f"{s.p99_ms:,.0f}", f"{s.max_ms:,.0f}")
    return t


def legend(result: PodStartupResult) -> str:
    lines = [
        f"{result.running}/{result.pods} pods Running and Ready, the last {result.seconds:.1f}s after the first "
        "POST; "
        f"a warm-up pod before the run took {result.warmup_ms or 0:.0f} ms.",
        "Latency: from just before a pod's POST to the watch event showing it Running and Ready "
        "(image already present), as Kubernetes' pod startup SLO counts it (p99 ≤ 5 s).",
        f"The machine's {os.cpu_count()} cores were {result.machine_busy_cores:.2f} busy on average during the run "
        "(grove, dockerd and anything else running).",
    ]
    if result.machine_busy_cores >= 0.9 * (os.cpu_count() or 1):
        lines.append(
            "The cores were nearly always busy: pods waited for CPU (Docker spends about 0.25 s of CPU per pod "
            "start here), so these figures depend on what else ran; compare runs made close together."
        )
    lines.extend(result.notes)
    return "\n".join(lines)


def chart(result: PodStartupResult, path: str) -> None:
    """Each pod's creation → bound and creation → Running and Ready, in creation order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = list(range(len(result.per_pod)))
    ax.plot(
        xs,
        [p["running_ms"] for p in result.per_pod],
        "o-",
        label="creation → Running and Ready",
        color="tab:green",
    )
    ax.plot(xs, [p["bound_ms"] for p in result.per_pod], ".--", label="creation → bound", color="tab:blue")
    ax.axhline(
        result.startup.p99_ms, color="tab:red", linestyle=":", label=f"p99 {result.startup.p99_ms:,.0f} ms"
    )
    ax.set_xlabel("pod (creation order)")
    ax.set_ylabel("ms")
    ax.grid(True, alpha=0.3)
    ax.legend()
    how = f"{result.rate:g} pods/s" if result.rate else "all at once"
    ax.set_title(
        f"grove bench pod-startup — {result.pods} pods, {how}, {os.cpu_count()} CPU cores", fontsize=10
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
