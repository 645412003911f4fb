"""The node agent: grove's kubelet.

One `NodeAgent` per node registers its Node (capacity, addresses, nodeInfo, labels), keeps its
Lease in `kube-node-lease` fresh, reports the Ready condition, and converges the pods bound to it.
It has the controller shape every grove loop has: the pods informer (pods with
spec.nodeName=<node>, through `orchestrator.watchers`) puts `namespace/name` keys on a work queue,
and `sync(key)` compares the pod with the containers found on the engine, asks `podsync` for the
next steps, takes them, and writes the pod's status — level-triggered and safe to run twice. The
engine's own events (a container died), probe results and back-off timers only enqueue keys; as an
engine may list a container as running just after reporting its death, a sync that still sees it
running looks again shortly (for a few seconds), since no other event would follow.

Deletion is the kubelet's: a pod with a deletionTimestamp gets its preStop hooks, SIGTERM, up to
its grace period, SIGKILL; its containers are removed, then the agent confirms the deletion with
a delete of grace period 0. Containers whose pod no longer exists are removed (housekeeping);
containers without grove's labels are never looked at. On restart the agent adopts what runs:
a running container whose spec hash matches its pod is left alone.

`NodeHost` runs one agent or many (hollow nodes on the fake runtime) in one process, sharing one
API client and one pods informer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import platform
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from node import podsync
from node.env import EnvError, EnvSources, container_env, referenced_configmaps, referenced_secrets
from node.probes import ProbeManager, RunningContainer, http_get, resolve_port
from node.runtime.spec import LABEL_NODE
from node.runtime.types import (
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    ContainerInfo,
    ContainerNotFoundError,
    ContainerRuntimeError,
    CreateContainerError,
    ExecTimeoutError,
    ImageNotPresentError,
    ImagePullError,
    PodContainers,
    RunContainerError,
    Sandbox,
    SandboxError,
    VolumeError,
)
from node.runtime.volumes import materialise_volumes, remove_volumes
from orchestrator.apiclient import (
    CONFIGMAPS,
    LEASES,
    NODES,
    PODS,
    SECRETS,
    SERVICES,
    AlreadyExists,
    ApiClient,
    ApiError,
    Conflict,
    NotFound,
)
from orchestrator.defaults import pod_qos_class
from orchestrator.watchers import Informer, WorkQueue, object_key, run_workers

log = logging.getLogger("grove.node")

__all__ = ["AgentConfig", "ContainerRuntime", "NodeAgent", "NodeHost", "detect_node_ip", "host_capacity"]

KUBELET_VERSION = "v1.32.0-grove"
LEASE_NAMESPACE = "kube-node-lease"
MIN_GRACE_SECONDS = 2  # the kubelet never kills with less, once a pod has had a deletion grace period
EXIT_CONFIRM_SECONDS = 10.0  # how long a reported exit is looked for before trusting the listing
EXIT_RECHECK_SECONDS = 0.2
T = TypeVar("T")


class ContainerRuntime(Protocol):
    """What the agent needs of a runtime: node.runtime.DockerRuntime and node.fake.FakeRuntime."""

    def runtime_version(self) -> str: ...
    def run_sandbox(self, pod: Mapping[str, Any], attempt: int = 0) -> Sandbox: ...
    def create_container(
        self,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        sandbox: Sandbox,
        volumes: Mapping[str, str],
        env: Mapping[str, str],
        restart_count: int,
    ) -> str: ...
    def start_container(self, container_id: str) -> None: ...
    def stop_container(self, container_id: str, grace_seconds: int) -> None: ...
    def remove_container(self, container_id: str) -> None: ...
    def stop_pod(self, pod_uid: str, grace_seconds: int) -> None: ...
    def remove_pod(self, pod_uid: str) -> None: ...
    def inspect_container(self, container_id: str) -> ContainerInfo: ...
    def list_pod_containers(self, pod_uid: str | None = None) -> dict[str, PodContainers]: ...
    def exec(
        self, container_id: str, cmd: Sequence[str], timeout: float | None = None
    ) -> tuple[int, str]: ...
    def image_present(self, ref: str) -> bool: ...
    def pull_image(self, ref: str) -> str: ...


# --- the host --------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def detect_node_ip() -> str:
    """The address of the interface with the default route (no packet is sent), else loopback."""
    for target in ("10.255.255.255", "192.0.2.1"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 9))
                ip = s.getsockname()[0]
                if ip and not ip.startswith("0."):
                    return ip
        except OSError:
            continue
    return "127.0.0.1"


def host_capacity(root_dir: str | Path = "/") -> dict[str, str]:
    """cpu, memory, pods and ephemeral-storage of this machine, as a kubelet reports them."""
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    try:
        st = os.statvfs(root_dir)
        disk_kib = st.f_blocks * st.f_frsize // 1024
    except OSError:
        disk_kib = 0
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{mem_kib}Ki",
        "pods": "110",
        "ephemeral-storage": f"{disk_kib}Ki",
    }


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _arch() -> str:
    machine = platform.machine().lower()
    return {
        "x86_64": "amd64",
        "aarch64": "arm64",
        "armv7l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
    }.get(machine, machine)


def _now() -> str:
    return podsync.rfc3339(time.time())


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- configuration --------------------------------------------------------------------------------


@dataclass
class AgentConfig:
    """One node's settings (flags of `grove node`)."""

    name: str
    node_ip: str = "127.0.0.1"
    port: int = 10250  # the agent's HTTP endpoint, advertised as daemonEndpoints.kubeletEndpoint
    capacity: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    root_dir: Path = Path("/var/lib/grove/node")
    lease_duration: int = 40
    status_update_frequency: float = 10.0
    status_report_frequency: float = 300.0
    sync_frequency: float = 60.0
    housekeeping_interval: float = 10.0
    crashloop_backoff: tuple[float, float] = (10.0, 300.0)  # initial, maximum (Kubernetes' values)
    image_pull_backoff: tuple[float, float] = (10.0, 300.0)
    # Pods synced at once. A pod start is mostly waiting on the engine (sandbox ~0.3-1 s, container
    # ~0.1-0.5 s on 2 cores), which gains little from more than 2-4 starts at once: with 8 or 16
    # workers each start only took longer, and pods started later (bench/podstartup.py).
    workers: int = 4
    events: bool = True
    pod_cidr: str = ""
    machine_id: str = ""


def node_labels(config: AgentConfig) -> dict[str, str]:
    arch = _arch()
    return {
        "kubernetes.io/hostname": config.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        **config.labels,
    }


# --- one node ---------------------------------------------------------------------------------------


class NodeAgent:
    """One node: its Node object, its Lease, and its pods (see the module docstring)."""

    def __init__(
        self,
        config: AgentConfig,
        client: ApiClient,
        runtime: Any,
        pods: Informer,
        services: Informer | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.client = client
        self.runtime = runtime
        self.pods = pods
        self.services = services
        self.executor = executor
        self.blocking = getattr(runtime, "blocking", True)
        if getattr(runtime, "node_name", None) == "":
            runtime.node_name = config.name  # every container it creates carries the node's name
        self.queue = WorkQueue(f"node {config.name}", base_delay=0.2, max_delay=30.0)
        self.backoff = podsync.BackOff(*config.crashloop_backoff)
        self.image_backoff = podsync.BackOff(*config.image_pull_backoff)
        self.error_backoff = podsync.BackOff(1.0, 30.0)  # sandbox, volume and config errors
        self.started_at = time.time()
        self.probes: Any
        if self.blocking:
            self.probes = ProbeManager(self._probe_exec, self.queue.add, self._probe_failed)
        else:
            self.probes = podsync.NoProbes()
        self._waiting: dict[str, dict[str, podsync.Waiting]] = {}  # uid -> container -> why
        self._uids: dict[str, str] = {}  # key -> uid of the pod last synced under that key
        self._orphans: dict[str, set[str]] = {}  # key -> uids found on the engine without a pod
        self._exits: dict[str, dict[str, float]] = {}  # key -> container reported dead -> look until
        self._terminating: dict[str, asyncio.Task[None]] = {}
        self._written: dict[str, dict[str, Any]] = {}  # uid -> status last written
        self._volumes_at: dict[str, float] = {}
        self._pull_failed_at: dict[str, float] = {}
        self._seeded: set[str] = set()
        self._events_sent: dict[tuple[str, str, str], float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._node_uid = ""
        self._lease: dict[str, Any] | None = None
        self._reported: dict[str, Any] | None = None
        self._reported_at = 0.0
        self._images_at = 0.0
        self._conditions_since: dict[str, tuple[str, str]] = {}
        self._runtime_version = ""
        self.registered = asyncio.Event()

    # --- plumbing ---------------------------------------------------------------------------------

    async def _rt(self, fn: Callable[..., T], *args: Any) -> T:
        """Call the runtime: in the executor when it blocks (Docker), inline when it does not."""
        if not self.blocking:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pod(self, key: str) -> dict[str, Any] | None:
        """The cached pod under `key` if it is bound to this node."""
        pod = self.pods.get(key)
        if pod is None or (pod.get("spec") or {}).get("nodeName") != self.name:
            return None
        return pod

    def my_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.pods.list() if (p.get("spec") or {}).get("nodeName") == self.name]

    def pod_dir(self, uid: str) -> Path:
        return self.config.root_dir / "pods" / uid

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Record an Event like the kubelet's, without waiting for it (and without repeating the
        same one within 30 s)."""
        if not self.config.events:
            return
        meta = obj.get("metadata") or {}
        key = (str(meta.get("uid") or meta.get("name")), reason, message)
        now = time.monotonic()
        if now - self._events_sent.get(key, -1e9) < 30:
            return
        self._events_sent[key] = now
        if len(self._events_sent) > 5000:
            cutoff = now - 30
            self._events_sent = {k: t for k, t in self._events_sent.items() if t > cutoff}

        async def send() -> None:
            try:
                await self.client.create_event(
                    dict(obj), reason, message, type=type_, component="kubelet", host=self.name
                )
            except ApiError as e:
                log.debug("event %s for %s not recorded: %s", reason, key[0], e)

        self._spawn(send())

    # --- the Node and its Lease -----------------------------------------------------------------------

    def node_object(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "labels": node_labels(self.config),
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        }
        node: dict[str, Any] = {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": {}}
        if self.config.pod_cidr:
            node["spec"] = {"podCIDR": self.config.pod_cidr, "podCIDRs": [self.config.pod_cidr]}
        node["status"] = self._status_body(self._conditions(True, ""), self._images_now())
        return node

    def _images_now(self) -> list[dict[str, Any]]:
        images: list[dict[str, Any]] = []
        lister = getattr(self.runtime, "list_images", None)
        try:
            if lister is not None:
                rows = lister()
            else:
                client = getattr(self.runtime, "client", None)
                rows = []
                for img in client.images.list() if client is not None else []:
                    names = list(img.attrs.get("RepoTags") or []) + list(img.attrs.get("RepoDigests") or [])
                    if names:
                        rows.append((names, int(img.attrs.get("Size") or 0)))
        except Exception as e:  # noqa: BLE001 - the image list is informational
            log.debug("listing images failed: %s", e)
            return []
        for names, size in sorted(rows, key=lambda r: -r[1])[:50]:
            images.append({"names": names, "sizeBytes": size})
        return images

    def _runtime_healthy(self) -> tuple[bool, str]:
        client = getattr(self.runtime, "client", None)
        if client is None:
            return True, ""
        try:
            client.ping()
        except Exception as e:  # noqa: BLE001 - any failure means the engine is not usable
            return False, f"container runtime is down: {e}"
        return True, ""

    def _conditions(self, runtime_ok: bool, message: str) -> list[dict[str, Any]]:
        now = _now()
        wanted = [
            (
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            (
                "Ready",
                "True" if runtime_ok else "False",
                "KubeletReady" if runtime_ok else "KubeletNotReady",
                "kubelet is posting ready status" if runtime_ok else message,
            ),
        ]
        out = []
        for ctype, status, reason, msg in wanted:
            since = self._conditions_since.get(ctype)
            if since is None or since[0] != status:
                since = self._conditions_since[ctype] = (status, now)
            out.append(
                {
                    "type": ctype,
                    "status": status,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": since[1],
                    "reason": reason,
                    "message": msg,
                }
            )
        return out

    def _status_body(self, conditions: list[dict[str, Any]], images: list[dict[str, Any]]) -> dict[str, Any]:
        capacity = dict(self.config.capacity)
        machine_id = self.config.machine_id or _read("/etc/machine-id")
        return {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": self.config.node_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config.port}},
            "nodeInfo": {
                "machineID": machine_id,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{machine_id}/{self.name}")),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": platform.release(),
                "osImage": _os_image(),
                "containerRuntimeVersion": self._runtime_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux",
                "architecture": _arch(),
            },
            "images": images,
        }

    async def register(self) -> None:
        """Create the Node (or take over an existing one), then report its status."""
        self._runtime_version = await self._rt(self.runtime.runtime_version)
        node = await self._rt(self.node_object)
        delay = 0.2
        while True:
            try:
                try:
                    created = await self.client.create(*NODES, node)
                    log.info("registered node %s", self.name)
                except AlreadyExists:
                    created = await self.client.patch(
                        *NODES, self.name, {"metadata": {"labels": node["metadata"]["labels"]}}
                    )
                    log.info("node %s exists; taking it over", self.name)
                self._node_uid = str((created.get("metadata") or {}).get("uid") or "")
                await self._report_status(force=True)
                await self._renew_lease()
                self.registered.set()
                return
            except ApiError as e:
                log.warning("registering node %s failed (%s); retrying in %.1fs", self.name, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _report_status(self, force: bool = False) -> None:
        ok, message = await self._rt(self._runtime_healthy)
        if force or self._reported is None or time.monotonic() - self._images_at > 60:
            images = await self._rt(self._images_now)
            self._images_at = time.monotonic()
        else:
            images = self._reported["images"]
        status = self._status_body(self._conditions(ok, message), images)
        if not force and self._reported is not None:
            unchanged = _without_heartbeats(status) == _without_heartbeats(self._reported)
            if unchanged and time.monotonic() - self._reported_at < self.config.status_report_frequency:
                return
        await self.client.patch(*NODES, self.name, {"status": status}, subresource="status")
        self._reported, self._reported_at = status, time.monotonic()

    async def _renew_lease(self) -> None:
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.config.lease_duration,
            "renewTime": _micro_now(),
        }
        if self._lease is not None:
            lease = {**self._lease, "spec": {**(self._lease.get("spec") or {}), **spec}}
            try:
                self._lease = await self.client.update(*LEASES, lease, namespace=LEASE_NAMESPACE)
                return
            except (Conflict, NotFound):
                self._lease = None
        try:
            current = await self.client.get(*LEASES, self.name, namespace=LEASE_NAMESPACE)
            lease = {**current, "spec": {**(current.get("spec") or {}), **spec}}
            self._lease = await self.client.update(*LEASES, lease, namespace=LEASE_NAMESPACE)
        except NotFound:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
                "spec": spec,
            }
            if self._node_uid:
                lease["metadata"]["ownerReferences"] = [
                    {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self._node_uid}
                ]
            self._lease = await self.client.create(*LEASES, lease, namespace=LEASE_NAMESPACE)

    async def _lease_loop(self) -> None:
        interval = max(0.2, self.config.lease_duration * 0.25)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew_lease()
            except ApiError as e:
                log.warning("renewing the lease of node %s failed: %s", self.name, e)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_update_frequency)
            try:
                await self._report_status()
            except ApiError as e:
                log.warning("updating the status of node %s failed: %s", self.name, e)

    # --- running ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Register (unless done already), then run the loops until cancelled."""
        if not self.registered.is_set():
            await self.register()
        await self.pods.wait_synced()
        await self._housekeeping()  # adopt or clean up what the engine already runs
        for pod in self.my_pods():
            self.queue.add(object_key(pod))
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._lease_loop())
                tg.create_task(self._status_loop())
                tg.create_task(self._resync_loop())
                tg.create_task(run_workers(self.queue, self.sync, self.config.workers))
        finally:
            self.queue.shutdown()
            if isinstance(self.probes, ProbeManager):
                await self.probes.close()
            for task in list(self._tasks) + list(self._terminating.values()):
                task.cancel()

    async def _resync_loop(self) -> None:
        next_sync = time.monotonic() + self.config.sync_frequency
        while True:
            await asyncio.sleep(self.config.housekeeping_interval)
            try:
                await self._housekeeping()
            except Exception:
                log.exception("housekeeping on node %s failed", self.name)
            if time.monotonic() >= next_sync:
                next_sync = time.monotonic() + self.config.sync_frequency
                for pod in self.my_pods():
                    self.queue.add(object_key(pod))

    async def _housekeeping(self) -> None:
        """Containers whose pod is gone go to their key's sync, which removes them; volume
        directories of pods that left no containers are deleted."""
        on_engine = await self._rt(self.runtime.list_pod_containers)
        known = {str(p["metadata"].get("uid")) for p in self.my_pods()}
        for uid, pc in on_engine.items():
            if uid in known or not self._owns(uid, pc):
                continue
            task = self._terminating.get(uid)
            if task is not None and not task.done():
                continue
            key = f"{pc.namespace}/{pc.name}"
            self._orphans.setdefault(key, set()).add(uid)
            self.queue.add(key)
        pods_dir = self.config.root_dir / "pods"
        if self.blocking and pods_dir.is_dir():
            for entry in pods_dir.iterdir():
                if (
                    entry.name not in known
                    and entry.name not in on_engine
                    and entry.name not in self._terminating
                ):
                    await self._rt(remove_volumes, entry)

    def _owns(self, uid: str, found: PodContainers) -> bool:
        """Whether this agent started the pod with this uid: its directory is in this agent's root
        dir. Containers of pods it did not start — another agent's on a shared engine, a test's —
        are not its own. The node name on the containers (LABEL_NODE) rules out other nodes' pods
        cheaply, but cannot prove ownership alone: two clusters on one engine may both have a
        node called grove-node-0, and each must leave the other's pods alone."""
        if not self.blocking or uid in self._uids.values():
            return True
        nodes = {c.labels.get(LABEL_NODE) for c in [*found.sandboxes, *found.containers]} - {None}
        if nodes and self.name not in nodes:
            return False
        return self.pod_dir(uid).is_dir()

    def engine_event(self, namespace: str, name: str, container_id: str = "", action: str = "") -> None:
        """The engine says a container of this pod changed (died, started): sync it. A death is
        remembered until a sync sees the container stopped (see _confirm_exits)."""
        key = f"{namespace}/{name}"
        if self.pod(key) is not None or key in self._uids:
            if action == "die" and container_id:
                self._exits.setdefault(key, {})[container_id] = time.monotonic() + EXIT_CONFIRM_SECONDS
            self.queue.add(key)

    def _confirm_exits(self, key: str, observed: PodContainers | None) -> None:
        """Sync the pod again shortly while a container the engine reported dead still shows as
        running: a listing can lag the engine's event, and no other event would follow."""
        pending = self._exits.get(key)
        if not pending:
            return
        running = (
            {c.id for c in [*observed.containers, *observed.sandboxes] if c.state.running}
            if observed
            else set()
        )
        now = time.monotonic()
        for cid, until in list(pending.items()):
            if cid not in running:
                del pending[cid]
            elif now >= until:
                log.warning(
                    "node %s: container %s of %s still shows as running after its exit",
                    self.name,
                    cid[:12],
                    key,
                )
                del pending[cid]
        if pending:
            self.queue.add_after(key, EXIT_RECHECK_SECONDS)
        else:
            del self._exits[key]

    # --- sync -------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        """Converge one pod (and clean up earlier pods under the same name)."""
        pod = self.pod(key)
        uid = str(pod["metadata"].get("uid")) if pod is not None else None
        stale = self._orphans.pop(key, set())
        old = self._uids.get(key)
        if old is not None and old != uid:
            stale.add(old)
        for gone in stale - {uid}:
            await self._kill_orphan(gone)
        if pod is None or uid is None:
            self._uids.pop(key, None)
            self._exits.pop(key, None)
            return
        self._uids[key] = uid
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._exits.pop(key, None)  # termination stops and removes everything anyway
            self._ensure_terminating(key, pod)
            return
        await self._sync_pod(key, pod, uid)

    async def _kill_orphan(self, uid: str) -> None:
        task = self._terminating.get(uid)
        if task is not None and not task.done():
            return  # its graceful termination cleans up
        if await self._observe(uid) is not None:
            try:
                await self._rt(self.runtime.stop_pod, uid, MIN_GRACE_SECONDS)
                await self._rt(self.runtime.remove_pod, uid)
            except ContainerNotFoundError:
                pass
            log.info("node %s: removed the containers of pod %s, which no longer exists", self.name, uid)
        self._forget(uid)
        if self.blocking:
            await self._rt(remove_volumes, self.pod_dir(uid))

    def _forget(self, uid: str) -> None:
        if isinstance(self.probes, ProbeManager):
            self.probes.remove_pod(uid)
        self.backoff.forget(uid)
        self.image_backoff.forget(uid)
        for k in [k for k in self._pull_failed_at if k.startswith(uid)]:
            del self._pull_failed_at[k]
        self.error_backoff.forget(uid)
        for table in (self._waiting, self._written, self._volumes_at):
            table.pop(uid, None)
        self._seeded.discard(uid)
        self._terminating.pop(uid, None)

    async def _observe(self, uid: str) -> PodContainers | None:
        return (await self._rt(self.runtime.list_pod_containers, uid)).get(uid)

    async def _sync_pod(self, key: str, pod: dict[str, Any], uid: str) -> None:
        observed = await self._observe(uid)
        if uid not in self._seeded:
            self._seed_probes(pod, observed)
        now = time.time()
        actions = podsync.compute_actions(pod, observed, self.probes, self.backoff, now)
        waiting = self._waiting.setdefault(uid, {})
        if actions.changes_anything:
            await self._execute(key, pod, uid, observed, actions, waiting)
            observed = await self._observe(uid)
        elif observed is not None and _live(observed) is not None:
            await self._refresh_volumes(pod, uid)
        for name, why in actions.waiting.items():
            if why.reason == podsync.CRASH_LOOP_BACK_OFF:
                meta = pod["metadata"]
                self.event(
                    pod, "Warning", "BackOff",
                    f"Back-off restarting failed container {name} in pod {meta['name']}_{meta.get('namespace')}({uid})",
                )  # fmt: skip
        shown = {**waiting, **actions.waiting}
        status = podsync.pod_status(
            pod,
            observed,
            self.probes,
            host_ip=self.config.node_ip,
            now=time.time(),
            waiting=shown,
            terminal_phase=actions.terminal_phase,
            qos_class=pod_qos_class(pod),
            image_id_prefix=self._image_prefix,
        )
        self._update_probes(key, pod, uid, observed, status)
        self._confirm_exits(key, observed)
        await self._write_status(pod, uid, status)
        if actions.requeue_after is not None:
            self.queue.add_after(key, actions.requeue_after)

    @property
    def _image_prefix(self) -> str:
        return "docker://" if self.blocking else "fake://"

    def _seed_probes(self, pod: Mapping[str, Any], observed: PodContainers | None) -> None:
        """Containers adopted after a restart keep the readiness the API last showed."""
        uid = str(pod["metadata"].get("uid"))
        self._seeded.add(uid)
        if not isinstance(self.probes, ProbeManager) or observed is None:
            return
        ready = {
            str(s.get("containerID")): bool(s.get("ready"))
            for s in (pod.get("status") or {}).get("containerStatuses") or []
            if s.get("containerID")
        }
        for c in observed.containers:
            if c.state.running and c.container_id in ready:
                self.probes.seed_ready(c.id, ready[c.container_id])

    def _update_probes(
        self,
        key: str,
        pod: Mapping[str, Any],
        uid: str,
        observed: PodContainers | None,
        status: Mapping[str, Any],
    ) -> None:
        if not isinstance(self.probes, ProbeManager):
            return
        sandbox = _live(observed)
        specs = _container_specs(pod)
        running: list[RunningContainer] = []
        if sandbox is not None and observed is not None:
            for c in observed.containers:
                if not c.state.running or (c.sandbox_id and c.sandbox_id != sandbox.id):
                    continue
                spec = specs.get(c.container_name)
                if spec is None or podsync.history(observed, c.container_name)[0].id != c.id:
                    continue
                started = podsync.parse_time(c.state.started_at) or time.time()
                running.append(RunningContainer(c.container_name, c.id, started, spec))
        self.probes.update(key, uid, str(status.get("podIP") or ""), running)

    async def _write_status(self, pod: Mapping[str, Any], uid: str, status: dict[str, Any]) -> None:
        old = pod.get("status") or {}
        if status == old or status == self._written.get(uid):
            return
        body = dict(status)
        for k in old:
            if k not in body:
                body[k] = None
        meta = pod["metadata"]
        try:
            await self.client.patch(
                *PODS, meta["name"], {"status": body}, namespace=meta.get("namespace"), subresource="status"
            )
        except NotFound:
            return
        self._written[uid] = status

    # --- executing actions -----------------------------------------------------------------------

    async def _execute(
        self,
        key: str,
        pod: dict[str, Any],
        uid: str,
        observed: PodContainers | None,
        actions: podsync.PodActions,
        waiting: dict[str, podsync.Waiting],
    ) -> None:
        grace = _grace(pod)
        if actions.kill_pod:
            if actions.create_sandbox and observed is not None and observed.sandbox is not None:
                self.event(
                    pod, "Normal", "SandboxChanged", "Pod sandbox changed, it will be killed and re-created."
                )
            await self._rt(self.runtime.stop_pod, uid, grace)
        specs = _container_specs(pod)
        for kill in actions.kill:
            self.event(pod, "Normal", "Killing", kill.message)
            spec = specs.get(kill.info.container_name) or {}
            kill_grace = grace
            if kill.probe_failure:
                for probe in ("livenessProbe", "startupProbe"):
                    value = (spec.get(probe) or {}).get("terminationGracePeriodSeconds")
                    if value is not None:
                        kill_grace = int(value)
            deadline = time.monotonic() + kill_grace
            await self._pre_stop(pod, spec, kill.info, deadline)
            remaining = max(MIN_GRACE_SECONDS, math.ceil(deadline - time.monotonic()))
            try:
                await self._rt(self.runtime.stop_container, kill.info.id, remaining)
            except ContainerNotFoundError:
                pass
        sandbox = Sandbox.from_info(s) if (s := _live(observed)) is not None else None
        if actions.create_sandbox:
            sandbox = await self._create_sandbox(key, pod, uid, actions.sandbox_attempt)
        if sandbox is not None and actions.start:
            await self._start_containers(key, pod, uid, sandbox, actions.start, waiting)
        for info in actions.remove:
            try:
                await self._rt(self.runtime.remove_container, info.id)
            except ContainerRuntimeError as e:
                log.info("removing dead container %s of %s failed: %s", info.name, key, e)

    async def _create_sandbox(self, key: str, pod: dict[str, Any], uid: str, attempt: int) -> Sandbox | None:
        backoff_key = f"{uid}/sandbox"
        now = time.time()
        if self.error_backoff.in_backoff_since_update(backoff_key, now):
            self.queue.add_after(key, self.error_backoff.remaining(backoff_key, now, now) + 0.05)
            return None
        if self.blocking:
            # The pod's directory records that this agent started the pod: housekeeping only ever
            # removes containers of pods it started (the engine may be shared), and `grove down`
            # reads the uids of its nodes' pods here.
            await self._rt(lambda: self.pod_dir(uid).mkdir(parents=True, exist_ok=True))
        try:
            sandbox = await self._rt(self.runtime.run_sandbox, pod, attempt)
        except (SandboxError, ContainerRuntimeError) as e:
            delay = self.error_backoff.next(backoff_key, now)
            self.event(pod, "Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
            log.warning("pod %s: %s", key, e)
            self.queue.add_after(key, delay)
            return None
        self.error_backoff.reset(backoff_key)
        return sandbox

    async def _fetch(self, pod: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The Secrets and ConfigMaps the pod refers to (absent ones are left out)."""
        ns = (pod.get("metadata") or {}).get("namespace") or "default"

        async def get_all(gvr: Any, names: Iterable[str]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for n in sorted(names):
                try:
                    out[n] = await self.client.get(*gvr, n, namespace=ns)
                except NotFound:
                    pass
            return out

        return await get_all(SECRETS, referenced_secrets(pod)), await get_all(
            CONFIGMAPS, referenced_configmaps(pod)
        )

    async def _volumes(
        self, pod: Mapping[str, Any], uid: str, secrets: Any, configmaps: Any
    ) -> dict[str, str]:
        if not self.blocking:
            return {}
        volumes = await self._rt(materialise_volumes, pod, self.pod_dir(uid) / "volumes", secrets, configmaps)
        self._volumes_at[uid] = time.monotonic()
        return volumes

    async def _refresh_volumes(self, pod: Mapping[str, Any], uid: str) -> None:
        """Bring Secret and ConfigMap volumes of a running pod up to date about once a minute."""
        if not self.blocking or time.monotonic() - self._volumes_at.get(uid, 0.0) < 60:
            return
        vols = (pod.get("spec") or {}).get("volumes") or []
        if not any(k in v for v in vols for k in ("secret", "configMap", "projected", "downwardAPI")):
            return
        try:
            secrets, configmaps = await self._fetch(pod)
            await self._volumes(pod, uid, secrets, configmaps)
        except (VolumeError, ApiError) as e:
            log.info("refreshing the volumes of pod %s failed: %s", uid, e)

    async def _start_containers(
        self,
        key: str,
        pod: dict[str, Any],
        uid: str,
        sandbox: Sandbox,
        starts: Sequence[podsync.StartContainer],
        waiting: dict[str, podsync.Waiting],
    ) -> None:
        secrets, configmaps = await self._fetch(pod) if self.blocking else ({}, {})
        now = time.time()
        vol_key = f"{uid}/volumes"
        try:
            volumes = await self._volumes(pod, uid, secrets, configmaps)
        except VolumeError as e:
            delay = self.error_backoff.next(vol_key, now)
            self.event(pod, "Warning", "FailedMount", f"MountVolume.SetUp failed: {e}")
            self.queue.add_after(key, delay)
            return
        self.error_backoff.reset(vol_key)
        pod_ip = self.config.node_ip if sandbox.host_network else sandbox.ip
        sources = EnvSources(
            secrets=secrets,
            configmaps=configmaps,
            services=self.services.list() if self.services is not None else (),
            pod_ip=pod_ip,
            pod_ips=[pod_ip] if pod_ip else [],
            host_ip=self.config.node_ip,
            host_ips=[self.config.node_ip],
            node_allocatable=self.config.capacity,
        )
        for start in starts:
            ok = await self._start_one(key, pod, uid, sandbox, start, volumes, sources, waiting)
            if not ok and start.init:
                break

    async def _start_one(
        self,
        key: str,
        pod: dict[str, Any],
        uid: str,
        sandbox: Sandbox,
        start: podsync.StartContainer,
        volumes: Mapping[str, str],
        sources: EnvSources,
        waiting: dict[str, podsync.Waiting],
    ) -> bool:
        c, name = start.container, start.name
        problem = await self._ensure_image(key, pod, uid, c, waiting.get(name))
        if problem is not None:
            waiting[name] = problem
            return False
        err_key = f"{uid}/{name}/start"
        now = time.time()
        try:
            env = container_env(pod, c, sources) if self.blocking else {}
            cid = await self._rt(
                self.runtime.create_container, pod, c, sandbox, volumes, env, start.restart_count
            )
        except EnvError as e:
            return self._start_failed(
                key, pod, err_key, now, waiting, name, podsync.CREATE_CONTAINER_CONFIG_ERROR, e
            )
        except ImageNotPresentError as e:
            return self._start_failed(key, pod, err_key, now, waiting, name, podsync.ERR_IMAGE_PULL, e)
        except (CreateContainerError, VolumeError) as e:
            return self._start_failed(
                key, pod, err_key, now, waiting, name, podsync.CREATE_CONTAINER_ERROR, e
            )
        self.event(pod, "Normal", "Created", f"Created container {name}")
        try:
            await self._rt(self.runtime.start_container, cid)
        except RunContainerError as e:
            return self._start_failed(key, pod, err_key, now, waiting, name, podsync.RUN_CONTAINER_ERROR, e)
        self.event(pod, "Normal", "Started", f"Started container {name}")
        waiting.pop(name, None)
        self.error_backoff.reset(err_key)
        post_start = (c.get("lifecycle") or {}).get("postStart")
        if post_start:
            error = await self._run_hook(pod, c, cid, post_start, float(_grace(pod)))
            if error is not None:
                self.event(pod, "Warning", "FailedPostStartHook", error)
                self.event(pod, "Normal", "Killing", f"FailedPostStartHook: container {name} will be killed")
                with contextlib.suppress(ContainerRuntimeError):
                    await self._rt(self.runtime.stop_container, cid, _grace(pod))
                self.queue.add_after(key, 0)
                return False
        return True

    def _start_failed(
        self,
        key: str,
        pod: dict[str, Any],
        err_key: str,
        now: float,
        waiting: dict[str, podsync.Waiting],
        name: str,
        reason: str,
        error: Exception,
    ) -> bool:
        waiting[name] = podsync.Waiting(reason, str(error))
        self.event(pod, "Warning", "Failed", f"Error: {error}")
        log.info("pod %s: container %s: %s: %s", key, name, reason, error)
        self.queue.add_after(key, self.error_backoff.next(err_key, now))
        return False

    async def _ensure_image(
        self, key: str, pod: dict[str, Any], uid: str, c: Mapping[str, Any], shown: podsync.Waiting | None
    ) -> podsync.Waiting | None:
        """None when the container's image is there (pulled if the policy says so), else why not."""
        image = str(c.get("image") or "")
        policy = str(c.get("imagePullPolicy") or ("Always" if _latest(image) else "IfNotPresent"))
        try:
            present = await self._rt(self.runtime.image_present, image)
        except ImagePullError as e:
            return podsync.Waiting(podsync.ERR_IMAGE_PULL, str(e))
        if policy == "Never":
            if present:
                return None
            message = f'Container image "{image}" is not present with pull policy of Never'
            self.event(pod, "Warning", "ErrImageNeverPull", message)
            return podsync.Waiting(podsync.ERR_IMAGE_NEVER_PULL, message)
        if present and (policy == "IfNotPresent" or await self._rt(self._local_only, image)):
            return None
        backoff_key = f"{uid}_{image}"
        now = time.time()
        if self.image_backoff.in_backoff_since_update(backoff_key, now):
            failed_at = self._pull_failed_at.get(backoff_key, now)
            hold = failed_at + self.image_backoff.get(backoff_key) / 2
            if shown is not None and shown.reason == podsync.ERR_IMAGE_PULL and now < hold:
                # The kubelet shows ErrImagePull until its next try; then ImagePullBackOff.
                self.queue.add_after(key, hold - now + 0.05)
                return shown
            message = f'Back-off pulling image "{image}"'
            log.debug("pod %s: %s", key, message)
            self.event(pod, "Normal", "BackOff", message)
            self.queue.add_after(key, self.image_backoff.remaining(backoff_key, failed_at, now) + 0.05)
            return podsync.Waiting(podsync.IMAGE_PULL_BACK_OFF, message)
        self.event(pod, "Normal", "Pulling", f'Pulling image "{image}"')
        try:
            await self._rt(self.runtime.pull_image, image)
        except ImagePullError as e:
            delay = self.image_backoff.next(backoff_key, now)
            self._pull_failed_at[backoff_key] = now
            log.info("pod %s: %s (next attempt in %gs)", key, e, delay)
            self.event(pod, "Warning", "Failed", f'Failed to pull image "{image}": {e}')
            self.event(pod, "Warning", "Failed", "Error: ErrImagePull")
            self.queue.add_after(key, delay / 2 + 0.05)  # then ImagePullBackOff, until the next try
            return podsync.Waiting(podsync.ERR_IMAGE_PULL, str(e))
        self.image_backoff.reset(backoff_key)
        self._pull_failed_at.pop(backoff_key, None)
        self.event(pod, "Normal", "Pulled", f'Successfully pulled image "{image}"')
        return None

    def _local_only(self, image: str) -> bool:
        """grove's own images (built offline, labelled io.grove.image) exist in no registry, so
        pulling them can only fail: imagePullPolicy Always uses the local copy."""
        check = getattr(self.runtime, "is_local_image", None)
        if check is not None:
            return bool(check(image))
        client = getattr(self.runtime, "client", None)
        if client is None:
            return False
        try:
            return bool((client.images.get(image).labels or {}).get("io.grove.image"))
        except Exception:  # noqa: BLE001 - unknown means "pull as asked"
            return False

    # --- hooks and probes ------------------------------------------------------------------------

    async def _run_hook(
        self,
        pod: Mapping[str, Any],
        c: Mapping[str, Any],
        container_id: str,
        handler: Mapping[str, Any],
        timeout: float,
    ) -> str | None:
        """Run a lifecycle hook; None on success, else what went wrong."""
        name = str(c.get("name"))
        if "exec" in handler:
            command = [str(a) for a in (handler["exec"] or {}).get("command") or []]
            try:
                code, output = await self._rt(self.runtime.exec, container_id, command, max(1.0, timeout))
            except ExecTimeoutError as e:
                return f'Exec lifecycle hook ({command}) for Container "{name}" failed - error: {e}'
            except ContainerRuntimeError as e:
                return f'Exec lifecycle hook ({command}) for Container "{name}" failed - error: {e}'
            if code != 0:
                return (
                    f'Exec lifecycle hook ({command}) for Container "{name}" failed - error: command '
                    f"'{' '.join(command)}' exited with {code}: {output.strip()[:500]}"
                )
            return None
        if "httpGet" in handler:
            g = handler["httpGet"] or {}
            status = pod.get("status") or {}
            host = str(g.get("host") or status.get("podIP") or self.config.node_ip)
            try:
                port = resolve_port(g.get("port"), c)
            except ValueError as e:
                return str(e)
            headers = {str(h.get("name")): str(h.get("value")) for h in g.get("httpHeaders") or []}
            result, message = await http_get(
                host,
                port,
                str(g.get("path") or "/"),
                str(g.get("scheme") or "HTTP"),
                headers,
                max(1.0, timeout),
            )
            return (
                None
                if result.value == "success"
                else f"HTTP lifecycle hook ({g.get('path')}) failed: {message}"
            )
        if "sleep" in handler:
            await asyncio.sleep(min(float((handler["sleep"] or {}).get("seconds") or 0), timeout))
            return None
        return None

    async def _pre_stop(
        self, pod: Mapping[str, Any], spec: Mapping[str, Any], info: ContainerInfo, deadline: float
    ) -> None:
        hook = (spec.get("lifecycle") or {}).get("preStop") if spec else None
        if not hook or not info.state.running:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            error = await asyncio.wait_for(self._run_hook(pod, spec, info.id, hook, remaining), remaining)
        except TimeoutError:
            error = f"PreStop hook for container {info.container_name} did not finish within the grace period"
        if error is not None:
            self.event(pod, "Warning", "FailedPreStopHook", error)

    async def _probe_exec(self, container_id: str, cmd: Sequence[str], timeout: float) -> tuple[int, str]:
        try:
            return await self._rt(self.runtime.exec, container_id, list(cmd), timeout)
        except ExecTimeoutError as e:
            raise TimeoutError(str(e)) from e

    def _probe_failed(self, key: str, container: str, kind: str, message: str) -> None:
        pod = self.pod(key)
        if pod is not None:
            text = f"{kind.capitalize()} probe failed: {message}".rstrip(": ")
            self.event(pod, "Warning", "Unhealthy", text)

    # --- deletion ---------------------------------------------------------------------------------

    def _ensure_terminating(self, key: str, pod: dict[str, Any]) -> None:
        uid = str(pod["metadata"]["uid"])
        task = self._terminating.get(uid)
        if task is not None and not task.done():
            return
        if task is not None and not task.cancelled():
            if task.exception() is None:
                return  # terminated and deleted; the pod's DELETED event is on its way
            log.warning("terminating pod %s failed (%s); trying again", key, task.exception())
        self._terminating[uid] = asyncio.create_task(self._terminate(key, pod), name=f"terminate {key}")

    async def _terminate(self, key: str, pod: dict[str, Any]) -> None:
        """preStop, SIGTERM, the grace period, SIGKILL; remove; confirm the deletion."""
        meta = pod["metadata"]
        uid = str(meta["uid"])
        grace = meta.get("deletionGracePeriodSeconds")
        grace = _grace(pod) if grace is None else int(grace)
        deadline = time.monotonic() + grace
        try:
            observed = await self._observe(uid)
            running = [c for c in observed.containers if c.state.running] if observed is not None else []
            specs = _container_specs(pod)
            if running:
                await asyncio.gather(
                    *(self._pre_stop(pod, specs.get(c.container_name) or {}, c, deadline) for c in running)
                )
                for c in running:
                    self.event(pod, "Normal", "Killing", f"Stopping container {c.container_name}")
            remaining = max(MIN_GRACE_SECONDS, math.ceil(deadline - time.monotonic()))
            await self._rt(self.runtime.stop_pod, uid, remaining)
            if isinstance(self.probes, ProbeManager):
                self.probes.remove_pod(uid)
            observed = await self._observe(uid)
            status = podsync.pod_status(
                pod,
                observed,
                self.probes,
                host_ip=self.config.node_ip,
                now=time.time(),
                terminal_phase=podsync.terminated_phase(observed, pod),
                qos_class=pod_qos_class(pod),
                image_id_prefix=self._image_prefix,
            )
            with contextlib.suppress(ApiError):
                await self._write_status(pod, uid, status)
            await self._rt(self.runtime.remove_pod, uid)
            if self.blocking:
                await self._rt(remove_volumes, self.pod_dir(uid))
            try:
                await self.client.delete(
                    *PODS, meta["name"], namespace=meta.get("namespace"), grace_period_seconds=0,
                    preconditions={"uid": uid},
                )  # fmt: skip
            except (NotFound, Conflict):
                pass  # gone already, or a new pod took the name
            log.info("node %s: pod %s terminated", self.name, key)
        finally:
            self.queue.add(key)
        self._forget_after_termination(uid)

    def _forget_after_termination(self, uid: str) -> None:
        task = self._terminating.get(uid)
        self._forget(uid)
        if task is not None:
            self._terminating[uid] = task  # kept (done) so a late sync does not start it again


def _without_heartbeats(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in status["conditions"]
    ]
    return out


def _live(observed: PodContainers | None) -> ContainerInfo | None:
    sandbox = observed.sandbox if observed is not None else None
    return sandbox if sandbox is not None and sandbox.state.running else None


def _container_specs(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    return {
        str(c.get("name")): c for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }


def _grace(pod: Mapping[str, Any]) -> int:
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return 30 if value is None else max(0, int(value))


def _latest(image: str) -> bool:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return "@" not in image and (":" not in last or last.rsplit(":", 1)[1] == "latest")


# --- the process --------------------------------------------------------------------------------------


class NodeHost:
    """The agents of one process: one API client, one pods informer (and a services informer for
    env), the agents' loops, and — for Docker — the engine's event stream."""

    def __init__(
        self,
        client: ApiClient,
        configs: Sequence[AgentConfig],
        runtime_factory: Callable[[int, AgentConfig], Any],
        *,
        executor_workers: int = 16,
    ) -> None:
        if not configs:
            raise ValueError("a node host needs at least one node")
        self.client = client
        names = [c.name for c in configs]
        field_selector = f"spec.nodeName={names[0]}" if len(names) == 1 else "spec.nodeName!="
        self.pods = Informer(client, *PODS, field_selector=field_selector, watch_timeout=(240, 300))
        self.runtimes = [runtime_factory(i, c) for i, c in enumerate(configs)]
        blocking = any(getattr(r, "blocking", True) for r in self.runtimes)
        self.executor = (
            ThreadPoolExecutor(max_workers=executor_workers, thread_name_prefix="runtime")
            if blocking
            else None
        )
        self.services = Informer(client, *SERVICES) if blocking else None
        self.agents: dict[str, NodeAgent] = {}
        for config, runtime in zip(configs, self.runtimes, strict=True):
            self.agents[config.name] = NodeAgent(
                config, client, runtime, self.pods, self.services, self.executor
            )
        self.pods.add_handler(self._on_pod, self._on_pod_update, self._on_pod)
        self._stop = threading.Event()
        self._engine_streams: list[Any] = []

    def _dispatch(self, pod: Mapping[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        agent = self.agents.get(node) if node else None
        if agent is not None:
            agent.queue.add(object_key(pod))

    def _on_pod(self, pod: dict[str, Any]) -> None:
        self._dispatch(pod)

    def _on_pod_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._dispatch(new)
        if (old.get("spec") or {}).get("nodeName") != (new.get("spec") or {}).get("nodeName"):
            self._dispatch(old)

    def find_pod(self, namespace: str, name: str) -> tuple[NodeAgent, dict[str, Any]] | None:
        """The agent running a pod, and the pod (for the HTTP endpoint)."""
        pod = self.pods.get(f"{namespace}/{name}")
        if pod is None:
            return None
        agent = self.agents.get((pod.get("spec") or {}).get("nodeName") or "")
        return (agent, pod) if agent is not None else None

    def _watch_engine(self, agent: NodeAgent, loop: asyncio.AbstractEventLoop) -> None:
        """A thread following the engine's container events (the kubelet's PLEG, push-style)."""
        client = getattr(agent.runtime, "client", None)
        if client is None:
            return
        delay = 0.5
        while not self._stop.is_set():
            try:
                stream = client.events(
                    decode=True,
                    filters={"type": "container", "label": [LABEL_POD_UID], "event": ["die", "start", "oom"]},
                )
                self._engine_streams.append(stream)
                delay = 0.5
                note = getattr(agent.runtime, "container_event", None)
                for event in stream:
                    actor = event.get("Actor") or {}
                    attrs = actor.get("Attributes") or {}
                    ns, name = attrs.get(LABEL_POD_NAMESPACE), attrs.get(LABEL_POD_NAME)
                    cid = str(actor.get("ID") or event.get("id") or "")
                    action = str(event.get("Action") or event.get("status") or "")
                    if note is not None and cid:
                        note(cid, action)  # before the sync it causes lists the pod's containers
                    if ns and name:
                        loop.call_soon_threadsafe(agent.engine_event, ns, name, cid, action)
            except Exception as e:  # noqa: BLE001 - reconnect after engine restarts
                if self._stop.is_set():
                    return
                log.warning("engine event stream of node %s broke (%s); reconnecting", agent.name, e)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, 10.0)

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Run every agent until cancelled; `ready()` is called once all nodes are registered."""
        loop = asyncio.get_running_loop()
        threads = []
        for agent in self.agents.values():
            ensure = getattr(agent.runtime, "ensure_network", None)
            if ensure is not None and agent.blocking:
                await agent._rt(ensure)
            if agent.blocking:
                t = threading.Thread(
                    target=self._watch_engine,
                    args=(agent, loop),
                    name=f"engine-events {agent.name}",
                    daemon=True,
                )
                t.start()
                threads.append(t)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.pods.run())
                if self.services is not None:
                    tg.create_task(self.services.run())
                limit = asyncio.Semaphore(32)  # hundreds of hollow nodes register a few at a time

                async def run_agent(agent: NodeAgent) -> None:
                    async with limit:
                        await agent.register()
                    await agent.run()

                for agent in self.agents.values():
                    tg.create_task(run_agent(agent))
                if ready is not None:

                    async def announce() -> None:
                        await asyncio.gather(*(a.registered.wait() for a in self.agents.values()))
                        ready()

                    tg.create_task(announce())
        finally:
            self._stop.set()
            for stream in self._engine_streams:
                with contextlib.suppress(Exception):
                    stream.close()
            if self.executor is not None:
                self.executor.shutdown(wait=False, cancel_futures=True)


def hollow_machine_id(name: str) -> str:
    """A stable, distinct machine id per hollow node."""
    return hashlib.md5(name.encode()).hexdigest()  # noqa: S324 - an identifier, not a secret
