"""A hollow container runtime: plays a node's engine without running anything.

`FakeRuntime` has the interface the node agent uses of `DockerRuntime` (sandbox, containers,
state, logs, stats, images) but keeps its containers as records in memory, so one process can
host hundreds of nodes (`grove node --runtime fake --count 200`) for scale tests and benchmarks —
Kubernetes' kubemark "hollow node" idea. Containers are running the moment they start; pods get
an IP from the node's own /24; every image is present.

Scripting, through pod annotations:

- `grove.io/fake-exit-code: "3"` — every container exits with 3 (`"app=0,sidecar=1"` per container);
- `grove.io/fake-run-seconds: "5"` — ... after running that long (default 0: at once);
- `grove.io/fake-cpu-millicores: "400"` — every container's stats report that CPU usage rate
  (`"app=400,sidecar=10"` per container; default 1m), so autoscaling can be tried without load.

Calls never block (`blocking = False`), so the agent calls them on its event loop. When a scripted
container exits later, `on_exit(namespace, name)` is called so the agent syncs the pod.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from node.runtime import spec as k8s
from node.runtime.types import (
    KIND_CONTAINER,
    KIND_SANDBOX,
    LABEL_CONTAINER_HASH,
    SANDBOX_CONTAINER_NAME,
    ContainerInfo,
    ContainerNotFoundError,
    ContainerState,
    ContainerStats,
    CreateContainerError,
    PodContainers,
    RunContainerError,
    Sandbox,
    SandboxError,
)

__all__ = [
    "CPU_MILLICORES_ANNOTATION",
    "EXIT_CODE_ANNOTATION",
    "RUN_SECONDS_ANNOTATION",
    "FakeRuntime",
    "fake_pod_subnet",
]

EXIT_CODE_ANNOTATION = "grove.io/fake-exit-code"
RUN_SECONDS_ANNOTATION = "grove.io/fake-run-seconds"
CPU_MILLICORES_ANNOTATION = "grove.io/fake-cpu-millicores"
DEFAULT_CPU_MILLICORES = 1.0  # a hollow container "uses" 1 ms of cpu per second
DEFAULT_POD_RANGE = "10.128.0.0/9"  # one /24 per hollow node, clear of grove's 10.88.0.0/16


def fake_pod_subnet(index: int, pod_range: str = DEFAULT_POD_RANGE) -> ipaddress.IPv4Network:
    """The /24 of the index-th hollow node inside `pod_range`."""
    net = ipaddress.ip_network(pod_range)
    subnets = 2 ** (24 - net.prefixlen)
    if not 0 <= index < subnets:
        raise ValueError(f"pod range {pod_range} has room for {subnets} hollow nodes, not {index + 1}")
    return ipaddress.ip_network((int(net.network_address) + index * 256, 24))


def _engine_time(epoch: float) -> str:
    """The engine's nanosecond RFC 3339 form (sortable as text)."""
    ns = int(epoch * 1e9)
    base = datetime.fromtimestamp(ns // 10**9, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{ns % 10**9:09d}Z"


def _k8s_time(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _script(annotations: Mapping[str, str], key: str, container: str) -> str | None:
    """A per-pod script value: "3" for every container, or "name=3,other=0"."""
    raw = str(annotations.get(key) or "").strip()
    if not raw:
        return None
    if "=" not in raw:
        return raw
    for part in raw.split(","):
        name, _, value = part.partition("=")
        if name.strip() == container:
            return value.strip()
    return None


@dataclass
class _Record:
    id: str
    name: str
    kind: str
    pod_uid: str
    namespace: str
    pod_name: str
    container_name: str
    restart_count: int
    image: str
    labels: dict[str, str]
    created: float
    ip: str = ""
    sandbox_id: str = ""
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    exit_at: float | None = None  # scripted exit, when started
    scripted_code: int = 0
    cpu_millicores: float = DEFAULT_CPU_MILLICORES
    logs: list[bytes] = field(default_factory=list)


class FakeRuntime:
    """In-memory pods for one hollow node (see the module docstring)."""

    blocking = False

    def __init__(
        self,
        node_index: int = 0,
        pod_range: str = DEFAULT_POD_RANGE,
        clock: Callable[[], float] = time.time,
        on_exit: Callable[[str, str], None] | None = None,
    ) -> None:
        self.subnet = fake_pod_subnet(node_index, pod_range)
        self.clock = clock
        self.on_exit = on_exit
        self._records: dict[str, _Record] = {}
        self._ids = itertools.count(1)
        self._node_index = node_index
        self._free_ips = [str(ip) for ip in self.subnet.hosts()][1:]  # .1 is the "gateway"
        self._ips_in_use: set[str] = set()

    # --- engine -------------------------------------------------------------------------------

    def runtime_version(self) -> str:
        return "fake://1.0.0"

    def ensure_network(self) -> None:
        return None

    def ping(self) -> bool:
        return True

    # --- records ------------------------------------------------------------------------------

    def _new_id(self) -> str:
        seed = f"{self._node_index}/{next(self._ids)}/{time.time_ns()}"
        return hashlib.sha256(seed.encode()).hexdigest()

    def _get(self, container_id: str) -> _Record:
        rec = self._records.get(container_id)
        if rec is None:
            raise ContainerNotFoundError(f"container {container_id[:12]} not found")
        return rec

    def _settle(self, rec: _Record) -> None:
        """Apply a scripted exit whose time has come."""
        if rec.started is not None and rec.finished is None and rec.exit_at is not None:
            if self.clock() >= rec.exit_at:
                rec.finished = rec.exit_at
                rec.exit_code = rec.scripted_code

    def _state(self, rec: _Record) -> ContainerState:
        self._settle(rec)
        cid = f"docker://{rec.id}"
        if rec.started is None:
            return ContainerState("waiting", reason="ContainerCreating", container_id=cid)
        if rec.finished is None:
            return ContainerState("running", started_at=_k8s_time(rec.started), container_id=cid)
        code = rec.exit_code or 0
        return ContainerState(
            "terminated",
            reason="Completed" if code == 0 else "Error",
            exit_code=code,
            started_at=_k8s_time(rec.started),
            finished_at=_k8s_time(rec.finished),
            container_id=cid,
        )

    def _info(self, rec: _Record) -> ContainerInfo:
        return ContainerInfo(
            id=rec.id,
            name=rec.name,
            kind=rec.kind,
            pod_uid=rec.pod_uid,
            pod_namespace=rec.namespace,
            pod_name=rec.pod_name,
            container_name=rec.container_name,
            restart_count=rec.restart_count,
            image=rec.image,
            image_id=self.image_id(rec.image),
            created=_engine_time(rec.created),
            state=self._state(rec),
            labels=dict(rec.labels),
            ip=rec.ip,
            sandbox_id=rec.sandbox_id,
            spec_hash=rec.labels.get(LABEL_CONTAINER_HASH, ""),
        )

    # --- sandbox and containers ------------------------------------------------------------------

    def run_sandbox(self, pod: Mapping[str, Any], attempt: int = 0) -> Sandbox:
        uid, namespace, name = k8s.pod_identity(pod)
        host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
        ip = ""
        if not host_network:
            if not self._free_ips:
                raise SandboxError(f"no free pod IP left in {self.subnet}")
            ip = self._free_ips.pop(0)
            self._ips_in_use.add(ip)
        now = self.clock()
        rec = _Record(
            id=self._new_id(),
            name=k8s.container_name(namespace, name, SANDBOX_CONTAINER_NAME, attempt, uid),
            kind=KIND_SANDBOX,
            pod_uid=uid,
            namespace=namespace,
            pod_name=name,
            container_name=SANDBOX_CONTAINER_NAME,
            restart_count=attempt,
            image="grove/pause:1.0",
            labels=k8s.labels_for(pod, KIND_SANDBOX, SANDBOX_CONTAINER_NAME, attempt),
            created=now,
            ip=ip,
            started=now,
        )
        self._records[rec.id] = rec
        return Sandbox(
            id=rec.id, name=rec.name, pod_uid=uid, ip=ip, host_network=host_network, attempt=attempt
        )

    def create_container(
        self,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        sandbox: Sandbox,
        volumes: Mapping[str, str],
        env: Mapping[str, str],
        restart_count: int,
    ) -> str:
        uid, namespace, name = k8s.pod_identity(pod)
        cname = str(container.get("name") or "")
        image = str(container.get("image") or "")
        if not cname or not image:
            raise CreateContainerError("a container needs a name and an image")
        annotations = (pod.get("metadata") or {}).get("annotations") or {}
        rec = _Record(
            id=self._new_id(),
            name=k8s.container_name(namespace, name, cname, restart_count, uid),
            kind=KIND_CONTAINER,
            pod_uid=uid,
            namespace=namespace,
            pod_name=name,
            container_name=cname,
            restart_count=restart_count,
            image=image,
            labels=k8s.labels_for(
                pod, KIND_CONTAINER, cname, restart_count, sandbox_id=sandbox.id, hash_of=container
            ),
            created=self.clock(),
            sandbox_id=sandbox.id,
        )
        code = _script(annotations, EXIT_CODE_ANNOTATION, cname)
        run = _script(annotations, RUN_SECONDS_ANNOTATION, cname)
        try:
            if code is not None:
                rec.scripted_code = int(code)
                rec.exit_at = float(run or 0)  # relative until started
        except ValueError as e:
            raise CreateContainerError(
                f"annotation {EXIT_CODE_ANNOTATION}/{RUN_SECONDS_ANNOTATION}: {e}"
            ) from e
        cpu = _script(annotations, CPU_MILLICORES_ANNOTATION, cname)
        if cpu is not None:
            try:
                rec.cpu_millicores = float(cpu)
            except ValueError:
                raise CreateContainerError(
                    f"annotation {CPU_MILLICORES_ANNOTATION}: {cpu!r} is not a number of millicores"
                ) from None
            if rec.cpu_millicores < 0:
                raise CreateContainerError(f"annotation {CPU_MILLICORES_ANNOTATION}: {cpu!r} is negative")
        self._records[rec.id] = rec
        return rec.id

    def start_container(self, container_id: str) -> None:
        rec = self._get(container_id)
        if rec.started is not None:
            raise RunContainerError(f"container {rec.name} was started already")
        rec.started = self.clock()
        rec.logs.append(
            f"fake container {rec.container_name} of pod {rec.namespace}/{rec.pod_name}\n".encode()
        )
        if rec.exit_at is not None:
            delay = rec.exit_at
            rec.exit_at = rec.started + delay
            if self.on_exit is not None:  # like the engine's "die" event, also for an exit at once
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    return
                loop.call_later(max(0.0, delay), self._exit, rec.id)

    def _exit(self, container_id: str) -> None:
        """A scripted exit's timer: the container exits, then the agent hears of it — as the engine
        emits "die" only after the state changed. The loop's timers run on a millisecond clock
        and may fire just before the wall clock reaches exit_at; an agent told "exited" that then
        found the container running would not look again until its resync."""
        rec = self._records.get(container_id)
        if rec is None:
            return
        if rec.started is not None and rec.finished is None and rec.exit_at is not None:
            rec.finished = rec.exit_at
            rec.exit_code = rec.scripted_code
        if self.on_exit is not None:
            self.on_exit(rec.namespace, rec.pod_name)

    def stop_container(self, container_id: str, grace_seconds: int) -> None:
        rec = self._get(container_id)
        self._settle(rec)
        if rec.started is not None and rec.finished is None:
            rec.finished = self.clock()
            rec.exit_code = 0  # a hollow process exits cleanly on SIGTERM

    def remove_container(self, container_id: str) -> None:
        rec = self._records.pop(container_id, None)
        if rec is not None and rec.ip:
            self._ips_in_use.discard(rec.ip)
            self._free_ips.append(rec.ip)

    def stop_pod(self, pod_uid: str, grace_seconds: int) -> None:
        for rec in [r for r in self._records.values() if r.pod_uid == pod_uid]:
            self.stop_container(rec.id, grace_seconds)

    def remove_pod(self, pod_uid: str) -> None:
        for rec in [r for r in self._records.values() if r.pod_uid == pod_uid]:
            self.remove_container(rec.id)

    def inspect_container(self, container_id: str) -> ContainerInfo:
        return self._info(self._get(container_id))

    def container_state(self, container_id: str) -> ContainerState:
        return self._state(self._get(container_id))

    def list_pod_containers(self, pod_uid: str | None = None) -> dict[str, PodContainers]:
        pods: dict[str, PodContainers] = {}
        for rec in self._records.values():
            if pod_uid is not None and rec.pod_uid != pod_uid:
                continue
            info = self._info(rec)
            pod = pods.setdefault(
                rec.pod_uid, PodContainers(uid=rec.pod_uid, namespace=rec.namespace, name=rec.pod_name)
            )
            (pod.sandboxes if rec.kind == KIND_SANDBOX else pod.containers).append(info)
        return pods

    def __len__(self) -> int:
        return len(self._records)

    # --- exec, logs, stats ------------------------------------------------------------------------

    def exec(self, container_id: str, cmd: Sequence[str], timeout: float | None = None) -> tuple[int, str]:
        self._get(container_id)
        raise RunContainerError("the fake runtime runs no processes, so there is nothing to exec into")

    def logs(
        self,
        container_id: str,
        tail: int | None = None,
        since: Any = None,
        timestamps: bool = False,
        follow: bool = False,
        until: Any = None,
    ) -> bytes | Iterator[bytes]:
        rec = self._get(container_id)
        lines = rec.logs if tail is None else rec.logs[-tail:] if tail > 0 else []
        if timestamps and rec.started is not None:
            stamp = _engine_time(rec.started).encode()
            lines = [stamp + b" " + line for line in lines]
        data = b"".join(lines)
        return iter([data]) if follow else data

    def stats(self, container_id: str) -> ContainerStats:
        rec = self._get(container_id)
        self._settle(rec)
        now = self.clock()
        ran = 0.0 if rec.started is None else (rec.finished or now) - rec.started
        return ContainerStats(
            timestamp=_engine_time(now),
            cpu_usage_nanoseconds=int(ran * rec.cpu_millicores * 1e6),
            memory_usage_bytes=4 * 2**20,
            memory_working_set_bytes=4 * 2**20,
            memory_rss_bytes=2 * 2**20,
        )

    # --- images -----------------------------------------------------------------------------------

    def image_present(self, ref: str) -> bool:
        return True

    def image_id(self, ref: str) -> str:
        return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()

    def pull_image(self, ref: str) -> str:
        return self.image_id(ref)

    def is_local_image(self, ref: str) -> bool:
        return True

    def list_images(self) -> list[tuple[list[str], int]]:
        return []
