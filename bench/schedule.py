"""`grove bench schedule`: how fast the scheduler places a burst of pods on many nodes.

The question a reader has is kube-scheduler's: given N nodes and M pending pods, how many pods
per second end up bound, and how long does one pod wait from creation to binding? So this
benchmark starts a cluster the way `grove up` does (three store members, the API server, the
scheduler — no controllers and no node agents, so nothing else competes for the 2 cores), creates
N Node objects straight through the API (Ready, 4 cpu / 16Gi / 110 pods, three zones), then
creates M small pods as fast as the API server takes them, while one watch on the namespace
notes when each pod's `spec.nodeName` first appears. Latency is per pod, from just before its
POST to the watch event that shows it bound; throughput is pods bound per second from the first
POST to the last binding. `--server` measures a running cluster instead (its nodes are left
alone; the bench adds its own and removes them afterwards).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.podwatch import PodWatch
from orchestrator.apiclient import NAMESPACES, NODES, PODS, ApiClient, ApiError, ClientConfig, load_kubeconfig

NAMESPACE = "grove-bench-schedule"
NODE_PREFIX = "bench-node-"
ZONES = ("zone-a", "zone-b", "zone-c")
STALL_SECONDS = 60.0  # no binding for this long: report what was measured and stop


class ScheduleBenchError(RuntimeError):
    """Something the user can act on (the cluster did not start, the API refused); one line."""


@dataclass
class ScheduleConfig:
    nodes: int = 1000
    pods: int = 10000
    server: str | None = None  # a running cluster; default: start one
    concurrency: int = 64  # pod creations in flight
    pod_cpu: str = "10m"
    pod_memory: str = "16Mi"


@dataclass
class ScheduleResult:
    nodes: int
    pods: int
    bound: int
    unschedulable: int
    create_seconds: float  # first POST to last POST answered
    create_per_s: float
    schedule_seconds: float  # first POST to last pod seen bound
    pods_per_s: float  # bound / schedule_seconds
    steady_pods_per_s: float  # bound per second between 10 % and 90 % of the pods
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_seconds: dict[str, float]  # per component, during the run (own cluster only)
    timeline: list[tuple[float, int, int]]  # (seconds since first POST, created, bound)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Progress:
    """What the command shows while the benchmark runs; the default shows nothing."""

    def step(self, text: str) -> None: ...

    def counts(self, created: int, bound: int) -> None: ...


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def bench_node(name: str, index: int) -> dict[str, Any]:
    allocatable = {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": ZONES[index % len(ZONES)],
                "grove.io/bench": "schedule",
            },
        },
        "spec": {},
        "status": {
            "capacity": allocatable,
            "allocatable": allocatable,
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "BenchNode", "message": "made by grove bench"}
            ],
        },
    }


def bench_pod(
    name: str, cpu: str, memory: str, node_selector: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "image": "grove/busybox:1.35",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "resources": {"requests": {"cpu": cpu, "memory": memory}},
            }
        ],
        "terminationGracePeriodSeconds": 0,
    }
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench-schedule"}},
        "spec": spec,
    }


async def _gather_limited(n: int, limit: int, make: Callable[[int], Any]) -> None:
    """Run make(0..n-1) with at most `limit` in flight; the first error stops the rest."""
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await make(i)

    async with asyncio.TaskGroup() as tg:
        for _ in range(min(limit, n)):
            tg.create_task(worker())


async def _ensure_namespace(client: ApiClient) -> None:
    try:
        await client.create(
            *NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
    except ApiError as exc:
        if exc.code != 409:
            raise


async def create_nodes(client: ApiClient, count: int, progress: Progress) -> list[str]:
    """count Ready nodes; the last one is created after all others (see `wait_scheduler_sees`)."""
    names = [f"{NODE_PREFIX}{i}" for i in range(count)]

    async def make(i: int) -> None:
        obj = bench_node(names[i], i)
        try:
            created = await client.create(*NODES, obj)
        except ApiError as exc:
            if exc.code != 409:
                raise
            created = await client.get("", "v1", "nodes", names[i])
        created["status"] = obj["status"]
        await client.update_status(*NODES, created)
        done[0] += 1
        if done[0] % 100 == 0:
            progress.step(f"created {done[0]}/{count} nodes")

    done = [0]
    await _gather_limited(count - 1, 32, make)
    await make(count - 1)
    return names


async def wait_scheduler_sees(client: ApiClient, last_node: str, timeout: float = 120.0) -> None:
    """A probe pod pinned to the node created last: once it is bound, the scheduler's node
    watch (delivered in store order) has shown it every earlier node too."""
    probe = bench_pod("bench-probe", "1m", "1Mi", {"kubernetes.io/hostname": last_node})
    try:
        await client.create(*PODS, probe)
    except ApiError as exc:
        if exc.code != 409:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = await client.get("", "v1", "pods", "bench-probe", namespace=NAMESPACE)
        if (pod.get("spec") or {}).get("nodeName"):
            await client.delete(*PODS, "bench-probe", namespace=NAMESPACE, grace_period_seconds=0)
            return
        await asyncio.sleep(0.05)
    raise ScheduleBenchError(f"the scheduler did not bind a probe pod within {timeout:.0f}s; is it running?")


class BindWatch(PodWatch):
    """One watch on the namespace's pods: when each pod was first seen bound (monotonic time)."""

    def __init__(self, client: ApiClient) -> None:
        super().__init__(client, NAMESPACE)
        self.bound_at: dict[str, float] = {}
        self.unschedulable: set[str] = set()

    def _see(self, pod: dict[str, Any], now: float) -> None:
        name = pod["metadata"]["name"]
        if (pod.get("spec") or {}).get("nodeName"):
            if name not in self.bound_at:
                self.bound_at[name] = now
                self.unschedulable.discard(name)
                self.changed.set()
        else:
            for cond in (pod.get("status") or {}).get("conditions") or ():
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    self.unschedulable.add(name)


async def measure(
    client: ApiClient, config: ScheduleConfig, progress: Progress, pids: dict[str, int]
) -> ScheduleResult:
    from bench.kv import machine_busy_seconds, process_cpu_seconds

    notes: list[str] = []
    await _ensure_namespace(client)
    progress.step(f"creating {config.nodes} nodes")
    names = await create_nodes(client, config.nodes, progress)
    progress.step("waiting for the scheduler to see every node")
    await wait_scheduler_sees(client, names[-1])

    listing = await client.list(*PODS, NAMESPACE, limit=1)
    watch = BindWatch(client)
    watcher = asyncio.create_task(watch.run(str(listing["metadata"]["resourceVersion"])))
    created_at: dict[str, float] = {}
    created = [0]
    cpu_before = {name: process_cpu_seconds([pid]) for name, pid in pids.items()}
    busy_before = machine_busy_seconds()
    timeline: list[tuple[float, int, int]] = []
    t0 = time.monotonic()

    async def sample() -> None:
        while True:
            timeline.append((round(time.monotonic() - t0, 3), created[0], len(watch.bound_at)))
            progress.counts(created[0], len(watch.bound_at))
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    progress.step(f"creating {config.pods} pods, {config.concurrency} at a time")

    async def make(i: int) -> None:
        name = f"pod-{i:06d}"
        pod = bench_pod(name, config.pod_cpu, config.pod_memory)
        created_at[name] = time.monotonic()
        await client.create(*PODS, pod)
        created[0] += 1

    try:
        await _gather_limited(config.pods, config.concurrency, make)
        t_created = time.monotonic()
        progress.step("waiting for every pod to be bound")
        last_progress, last_count = time.monotonic(), -1
        while len(watch.bound_at) < config.pods:
            watch.changed.clear()
            if len(watch.bound_at) != last_count:
                last_progress, last_count = time.monotonic(), len(watch.bound_at)
            elif time.monotonic() - last_progress > STALL_SECONDS:
                notes.append(f"stopped waiting: no pod was bound for {STALL_SECONDS:.0f}s")
                break
            try:
                await asyncio.wait_for(watch.changed.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        sampler.cancel()
        watcher.cancel()
        await asyncio.gather(sampler, watcher, return_exceptions=True)
    timeline.append((round(time.monotonic() - t0, 3), created[0], len(watch.bound_at)))
    progress.counts(created[0], len(watch.bound_at))
    cpu = {name: round(process_cpu_seconds([pid]) - cpu_before[name], 2) for name, pid in pids.items()}
    if cpu:
        # What else ran on the machine meanwhile: a busy neighbour explains a slow run.
        cpu["other processes"] = round(max(0.0, machine_busy_seconds() - busy_before - sum(cpu.values())), 2)

    latencies = sorted((watch.bound_at[n] - created_at[n]) * 1000 for n in watch.bound_at if n in created_at)
    bound_times = sorted(watch.bound_at[n] - t0 for n in watch.bound_at if n in created_at)
    span = bound_times[-1] if bound_times else 0.0
    steady = 0.0
    if len(bound_times) >= 20:
        lo, hi = bound_times[len(bound_times) // 10], bound_times[(len(bound_times) * 9) // 10]
        if hi > lo:
            steady = ((len(bound_times) * 9) // 10 - len(bound_times) // 10) / (hi - lo)
    create_s = t_created - t0
    return ScheduleResult(
        nodes=config.nodes,
        pods=config.pods,
        bound=len(latencies),
        unschedulable=len(watch.unschedulable),
        create_seconds=round(create_s, 3),
        create_per_s=round(config.pods / create_s, 1) if create_s else 0.0,
        schedule_seconds=round(span, 3),
        pods_per_s=round(len(latencies) / span, 1) if span else 0.0,
        steady_pods_per_s=round(steady, 1),
        p50_ms=round(percentile(latencies, 50), 1),
        p90_ms=round(percentile(latencies, 90), 1),
        p99_ms=round(percentile(latencies, 99), 1),
        max_ms=round(latencies[-1], 1) if latencies else 0.0,
        cpu_seconds=cpu,
        timeline=timeline,
        notes=notes,
    )


async def cleanup(client: ApiClient, nodes: int) -> None:
    """On a cluster that goes on running: remove the bench's nodes and namespace."""

    async def drop(i: int) -> None:
        try:
            await client.delete(*NODES, f"{NODE_PREFIX}{i}")
        except ApiError:
            pass

    await _gather_limited(nodes, 32, drop)
    try:
        await client.delete(*NAMESPACES, NAMESPACE)
    except ApiError:
        pass


def run_schedule(config: ScheduleConfig, progress: Progress | None = None) -> ScheduleResult:
    """Start a cluster (unless config.server), measure, stop it; the result."""
    progress = progress or Progress()
    if config.nodes < 1 or config.pods < 1:
        raise ScheduleBenchError("--nodes and --pods must be at least 1")
    if config.server:
        return _run(config.server, config, progress, {}, cleanup_after=True)

    from grove.up import Cluster, UpError

    work = tempfile.mkdtemp(prefix="grove-bench-schedule-")
    cluster = Cluster(work, nodes=0, runtime="fake", api_port=0, dns=False, controllers=False, proxy=False)
    try:
        progress.step("starting the store, the API server and the scheduler")
        try:
            cluster.start(progress.step)
        except UpError as exc:
            raise ScheduleBenchError(str(exc)) from None
        pids = {c.name: c.pid for c in cluster.components if c.pid}
        for i in range(cluster.kv.size):
            proc = cluster.kv.procs[i]
            if proc is not None:
                pids[cluster.kv.names[i]] = proc.pid
        pids["bench (this process)"] = os.getpid()
        # as the cluster's admin, over TLS, as a user would
        result = _run(load_kubeconfig(cluster.kubeconfig), config, progress, pids, cleanup_after=False)
        for comp in cluster.dead_components():
            result.notes.append(f"{comp.name} exited during the run: {comp.tail(5)}")
        return result
    finally:
        progress.step("stopping the cluster")
        cluster.stop(lambda m: None)
        shutil.rmtree(work, ignore_errors=True)


def _run(
    server: str | ClientConfig,
    config: ScheduleConfig,
    progress: Progress,
    pids: dict[str, int],
    cleanup_after: bool,
) -> ScheduleResult:
    async def main() -> ScheduleResult:
        async with ApiClient(server, user_agent="grove-bench-schedule", timeout=60) as client:
            try:
                return await measure(client, config, progress, pids)
            except ApiError as exc:
                raise ScheduleBenchError(f"the API server refused: {exc}") from None
            finally:
                if cleanup_after:
                    progress.step("removing the bench's nodes and namespace")
                    await cleanup(client, config.nodes)

    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(main())


# --- presentation ------------------------------------------------------------------------------


def table(result: ScheduleResult) -> Any:
    from rich.table import Table

    t = Table(title=f"scheduling {result.pods:,} pods on {result.nodes:,} nodes", title_justify="left")
    for col in ("pods bound", "pods/s (first POST → last bound)", "pods/s (10–90 %)", "created/s",
                "p50 ms", "p90 ms", "p99 ms", "max ms", "unschedulable"):  # fmt: skip
        t.add_column(col, justify="right")
    t.add_row(
        f"{result.bound:,}/{result.pods:,}",
        f"{result.pods_per_s:,.0f}",
        f"{result.steady_pods_per_s:,.0f}",
        f"{result.create_per_s:,.0f}",
        f"{result.p50_ms:,.0f}",
        f"{result.p90_ms:,.0f}",
        f"{result.p99_ms:,.0f}",
        f"{result.max_ms:,.0f}",
        str(result.unschedulable),
    )
    return t


def legend(result: ScheduleResult) -> str:
    lines = [
        "Latency: from just before a pod's POST to the watch event showing it bound (spec.nodeName set).",
        f"The pods were created in {result.create_seconds:.1f}s; everything was bound {result.schedule_seconds:.1f}s "
        "after the first POST.",
    ]
    if result.cpu_seconds:
        span = result.schedule_seconds or 1.0
        parts = ", ".join(f"{k} {v:.1f}s ({v / span:.2f} cores)" for k, v in result.cpu_seconds.items())
        lines.append(f"CPU used during the run: {parts}; {os.cpu_count()} cores in all.")
    lines.extend(result.notes)
    return "\n".join(lines)


def chart(result: ScheduleResult, path: str) -> None:
    """Pods created and bound over time (left), and the latency distribution (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    ts = [p[0] for p in result.timeline]
    left.plot(ts, [p[1] for p in result.timeline], label="created", color="tab:blue")
    left.plot(ts, [p[2] for p in result.timeline], label="bound", color="tab:green")
    left.set_xlabel("seconds since the first POST")
    left.set_ylabel("pods")
    left.grid(True, alpha=0.3)
    left.legend()
    left.set_title(
        f"{result.pods:,} pods on {result.nodes:,} nodes: {result.pods_per_s:,.0f} pods/s bound", fontsize=10
    )
    marks = [("p50", result.p50_ms), ("p90", result.p90_ms), ("p99", result.p99_ms), ("max", result.max_ms)]
    right.bar([m[0] for m in marks], [m[1] for m in marks], color="tab:green")
    right.set_ylabel("creation → bound (ms)")
    right.set_title("scheduling latency", fontsize=10)
    right.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"grove bench schedule — {os.cpu_count()} CPU cores", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
