"""`grove bench kv`: grove's store and real etcd 3.4 under the same load, in one run.

People pick a store by its numbers next to the one they know, so this benchmark starts a
three-member grove cluster and then a three-member etcd cluster (`--enable-v2`) on loopback and runs
the same cells against each through the same v2 HTTP API: writes (PUT of 64-byte values over 1 000
keys), default reads and `quorum=true` reads; 1 to 256 closed-loop clients; to the leader only and
spread over all members. The load comes from `bench.loadgen` worker processes, whose CPU use is
reported per cell, next to the CPU the members used, so a reader can see what the limit was.

The helpers for local clusters (start either store, find the leader over HTTP, per-process CPU)
live here too; `bench.failover` uses them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Self

import orjson

from bench.loadgen import OPS, LoadGenerator, LoadSpec, key_name, value_for

TARGETS = ("grove", "etcd")
MODES = ("leader", "spread")
DEFAULT_CLIENTS = (1, 16, 64, 256)
KEYS = 1000
VALUE_SIZE = 64
_POLL = 0.05  # seconds between two looks at a cluster's state while waiting for a condition


class BenchError(RuntimeError):
    """Something the user can fix (etcd missing, endpoints unreachable); shown as one line."""


# --- clusters ---------------------------------------------------------------------------------


def ensure_etcd(install: bool) -> str:
    """Path of the etcd binary; with `install` (and root) apt-get installs etcd-server first."""
    from bench.etcd import find_etcd

    path = find_etcd()
    if path:
        return path
    how = "install it with `apt-get install etcd-server` (Debian/Ubuntu, etcd 3.4)"
    if not install:
        raise BenchError(
            f"etcd is not installed: {how}, or pass --install-etcd when running as root, "
            "or leave etcd out with --targets grove"
        )
    if os.geteuid() != 0:
        raise BenchError(f"--install-etcd needs root; as root, run `apt-get install etcd-server` ({how})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "etcd-server"]
    if subprocess.run(cmd, check=False, env=env).returncode != 0:
        subprocess.run(["apt-get", "update"], check=False, env=env)
        if subprocess.run(cmd, check=False, env=env).returncode != 0:
            raise BenchError("`apt-get install -y etcd-server` failed; see its output above")
    path = find_etcd() or shutil.which("etcd")
    if not path:
        raise BenchError("etcd-server was installed but no `etcd` binary is on PATH")
    return path


class LocalCluster:
    """A three-member grove or etcd cluster on loopback, behind one small interface."""

    def __init__(self, target: str, size: int = 3) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
        self.target = target
        self.size = size
        self._cluster: object | None = None

    def start(self) -> LocalCluster:
        if self.target == "grove":
            from kvstore.localcluster import GroveCluster

            self._cluster = GroveCluster(self.size).start()
        else:
            from bench.etcd import EtcdCluster

            self._cluster = EtcdCluster(self.size).start()
        return self

    @property
    def client_urls(self) -> list[str]:
        return list(self._cluster.client_urls)  # type: ignore[union-attr]

    def pids(self) -> list[int]:
        """Process ids of the members that are running now."""
        c = self._cluster
        if self.target == "grove":
            return [p.pid for p in c.procs if p is not None and p.poll() is None]  # type: ignore[union-attr]
        return [m.pid for m in c.members if m.pid is not None]  # type: ignore[union-attr]

    def kill(self, i: int) -> None:
        """SIGKILL member i and wait until it is gone."""
        self._cluster.kill(i)  # type: ignore[union-attr]

    def restart(self, i: int) -> None:
        """Start member i again on its ports and data dir; returns when it answers /health."""
        self._cluster.restart(i)  # type: ignore[union-attr]

    def log_tail(self, i: int, chars: int = 2000) -> str:
        c = self._cluster
        if self.target == "grove":
            return c.log(i)[-chars:]  # type: ignore[union-attr]
        return c.members[i].log_tail(30)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._cluster is not None:
            self._cluster.stop()  # type: ignore[attr-defined]
            self._cluster = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def get_json(url: str, timeout: float = 1.0) -> dict | None:
    """GET a JSON document; None when the member does not answer or answers garbage."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            doc = orjson.loads(resp.read())
            return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None


def leader_of(urls: list[str], *, require_all: bool = False) -> int | None:
    """Index of the member every answering member agrees is the leader (from /v2/stats/self).

    With `require_all`, a member that does not answer means "no agreed leader" (None).
    """
    leader = None
    named = set()
    for i, url in enumerate(urls):
        stats = get_json(url + "/v2/stats/self")
        if stats is None:
            if require_all:
                return None
            continue
        named.add((stats.get("leaderInfo") or {}).get("leader") or None)
        if stats.get("state") == "StateLeader":
            leader = i
    if leader is None or len(named) != 1 or None in named:
        return None
    return leader


def wait_leader(urls: list[str], timeout: float = 30.0) -> int:
    """Wait until the members agree on a leader; its index."""
    deadline = time.monotonic() + timeout
    while True:
        leader = leader_of(urls)
        if leader is not None:
            return leader
        if time.monotonic() > deadline:
            raise BenchError(
                f"the members at {', '.join(urls)} did not agree on a leader within {timeout:g}s"
            )
        time.sleep(_POLL)


def detect_target(urls: list[str]) -> str:
    """ "grove" or "etcd" from /version of the first member that answers (else "endpoints")."""
    for url in urls:
        doc = get_json(url + "/version")
        if doc is not None:
            return "grove" if "grove" in doc else "etcd" if "etcdserver" in doc else "endpoints"
    raise BenchError(f"no member of {', '.join(urls)} answered /version; is the cluster running?")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent not idle so far (from /proc/stat)."""
    with open("/proc/stat", "rb") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLOCK_TICKS


def process_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the given processes (from /proc)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / _CLOCK_TICKS


# --- the benchmark ----------------------------------------------------------------------------


@dataclass
class KvCell:
    """One measured cell: one target, one op, one mode, one client count."""

    target: str
    op: str
    clients: int
    mode: str
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    loadgen_cpu: float  # busiest load generator worker: CPU seconds / wall seconds (1.0 = one core)
    loadgen_cpu_workers: list[float]
    server_cpu: float | None  # cores the members used together during the cell (None: not local)
    other_cpu: float  # cores busy with anything else on the machine during the cell (noise)
    duration_s: float
    ops: int
    error_samples: list[str] = field(default_factory=list)
    grove_etcd_ratio: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KvConfig:
    targets: list[str]
    ops: list[str]
    clients: list[int]
    modes: list[str] = field(default_factory=lambda: list(MODES))
    duration: float = 3.0
    warmup: float = 0.5
    workers: int = 2
    endpoints: list[str] | None = None
    install_etcd: bool = False
    interleave: bool = True

    def cells_per_target(self) -> int:
        return len(self.ops) * len(self.modes) * len(self.clients)


class Progress:
    """What the benchmark tells the person waiting for it; `bench.cli` renders it with rich."""

    def step(self, text: str) -> None:  # a phase: starting a cluster, preloading keys
        pass

    def cell_started(self, text: str) -> None:
        pass

    def cell_done(self, cell: KvCell) -> None:
        pass


def preload(urls: list[str], keys: int = KEYS, value_size: int = VALUE_SIZE) -> None:
    """Write every benchmark key once, so reads never miss."""
    from kvstore.client import KVClient

    async def run() -> None:
        async with KVClient(urls, timeout=10.0, retry_deadline=30.0) as client:
            limit = asyncio.Semaphore(32)

            async def put(i: int) -> None:
                async with limit:
                    await client.set(key_name(i), value_for(i, value_size))

            await asyncio.gather(*(put(i) for i in range(keys)))

    asyncio.run(run())


def spread_order(urls: list[str], leader: int | None) -> list[str]:
    """Members for spread mode, followers first: client i -> member i mod n, and 1 client hits a follower."""
    if leader is None:
        return list(urls)
    return [u for i, u in enumerate(urls) if i != leader] + [urls[leader]]


@dataclass
class RunningTarget:
    """A cluster under test: its name, client URLs and (when local) its members' process ids."""

    name: str
    urls: list[str]
    pids: Callable[[], list[int]] | None = None
    preloaded: bool = False


def measure_cell(
    target: RunningTarget, op: str, mode: str, clients: int, config: KvConfig, gen: LoadGenerator
) -> KvCell:
    """One cell against one running cluster."""
    urls = target.urls
    if op != "write" and not target.preloaded:
        preload(urls)
        target.preloaded = True
    leader = wait_leader(urls)
    endpoints = [urls[leader]] if mode == "leader" else spread_order(urls, leader)
    spec = LoadSpec(
        op,
        clients,
        endpoints,
        duration=config.duration,
        warmup=config.warmup,
        keys=KEYS,
        value_size=VALUE_SIZE,
    )
    member_pids = target.pids() if target.pids else []

    def probe() -> dict[str, float]:
        return {"members": process_cpu_seconds(member_pids), "machine": machine_busy_seconds()}

    try:
        result = gen.run(spec, probe)
    except ConnectionError as exc:
        raise BenchError(str(exc)) from None
    rates = result.probe_rates
    # Whatever else kept the CPUs busy (other programs on the machine) during the window.
    other = rates["machine"] - rates["members"] - sum(result.worker_cpu)
    return KvCell(
        target=target.name,
        op=op,
        clients=clients,
        mode=mode,
        ops_per_s=round(result.ops_per_s, 1),
        p50_ms=round(result.p50_ms, 3),
        p99_ms=round(result.p99_ms, 3),
        errors=result.errors,
        loadgen_cpu=round(result.loadgen_cpu, 3),
        loadgen_cpu_workers=[round(c, 3) for c in result.worker_cpu],
        server_cpu=round(rates["members"], 2) if member_pids else None,
        other_cpu=round(max(0.0, other), 2),
        duration_s=config.duration,
        ops=result.ok,
        error_samples=result.error_samples,
    )


def run_cells(
    targets: list[RunningTarget], config: KvConfig, gen: LoadGenerator, progress: Progress
) -> list[KvCell]:
    """Every cell of `config`, each measured on every target in turn before the next cell.

    The order of the targets alternates from one cell to the next, so a slow drift of the
    machine's load (other programs) weighs on both stores alike.
    """
    cells = []
    turn = 0
    for op in config.ops:
        for mode in config.modes:
            for clients in config.clients:
                order = targets if turn % 2 == 0 else targets[::-1]
                turn += 1
                for target in order:
                    progress.cell_started(f"{target.name} {op} {mode} {clients} clients")
                    cell = measure_cell(target, op, mode, clients, config, gen)
                    cells.append(cell)
                    progress.cell_done(cell)
    return cells


def add_ratios(cells: list[KvCell]) -> None:
    """Set grove_etcd_ratio (grove ops/s over etcd ops/s) on both cells of every matching pair."""
    by_key = {(c.target, c.op, c.mode, c.clients): c for c in cells}
    for c in cells:
        if c.target != "grove":
            continue
        other = by_key.get(("etcd", c.op, c.mode, c.clients))
        if other is not None and other.ops_per_s > 0:
            c.grove_etcd_ratio = other.grove_etcd_ratio = round(c.ops_per_s / other.ops_per_s, 3)


def run_kv(config: KvConfig, progress: Progress | None = None) -> list[KvCell]:
    """Run the whole benchmark against local clusters of every target (or the given endpoints).

    With `config.interleave` all clusters run at once and each cell is measured on one store
    right after the other; otherwise one store's cluster runs all its cells, then the next one's.
    """
    progress = progress or Progress()
    cells: list[KvCell] = []
    with LoadGenerator(config.workers) as gen:
        if config.endpoints:
            name = detect_target(config.endpoints)
            progress.step(f"{name}: using the cluster at {', '.join(config.endpoints)}")
            cells += run_cells([RunningTarget(name, config.endpoints)], config, gen, progress)
        else:
            if "etcd" in config.targets:
                ensure_etcd(config.install_etcd)
            groups = [config.targets] if config.interleave else [[t] for t in config.targets]
            for group in groups:
                with ExitStack() as stack:
                    running = []
                    for name in group:
                        progress.step(f"{name}: starting 3 members on loopback")
                        cluster = stack.enter_context(started(name))
                        running.append(RunningTarget(name, cluster.client_urls, cluster.pids))
                    cells += run_cells(running, config, gen, progress)
                progress.step(f"{', '.join(group)}: stopped")
    add_ratios(cells)
    return cells


@contextmanager
def started(target: str) -> Iterator[LocalCluster]:
    """A running local cluster of `target`, stopped (and its data removed) whatever happens."""
    cluster = LocalCluster(target)
    try:
        cluster.start()
    except (RuntimeError, OSError) as exc:  # ClusterError, EtcdStartError, EtcdNotFound, spawn errors
        cluster.stop()
        raise BenchError(f"could not start the {target} cluster: {exc}") from None
    try:
        yield cluster
    finally:
        cluster.stop()


def parse_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise BenchError(f"{what} must be a comma-separated list of {', '.join(allowed)} (got {text!r})")
    return items


def parse_clients(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise BenchError(f"--clients must be a comma-separated list of positive numbers (got {text!r})")
    return values


__all__ = [
    "KEYS",
    "MODES",
    "OPS",
    "TARGETS",
    "BenchError",
    "KvCell",
    "KvConfig",
    "LocalCluster",
    "Progress",
    "ensure_etcd",
    "leader_of",
    "process_cpu_seconds",
    "run_kv",
    "started",
    "wait_leader",
]
