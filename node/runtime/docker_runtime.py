"""Pods on a real Docker Engine, through the `docker` SDK.

A pod is a sandbox — the pause container, which owns the pod's network namespace on grove's
bridge network (one IP per pod, hostPorts published here) and its IPC namespace — plus the app
containers joined to it with `network_mode=container:<sandbox>`, so they share localhost.

Every call blocks; the node agent runs them in an executor. The agent decides *what* to do
(restart policy, back-off, probes); this class only does it, and reports the engine's state in
Kubernetes terms. Guard rail: every container grove creates carries `io.grove.*` labels (the
node's name among them, `io.grove.node`), and this class refuses to list, inspect, stop, remove or
exec into any container without `io.grove.pod.uid` — a container started by hand is never grove's
business.

Engine calls are the cost of a pod start, so this class makes few: listing is one sparse call,
and a container is inspected again only when the list shows its state changed; an image found
present is believed for a while (a create that finds it gone says so); a container it has just
created is started without a fresh look.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import docker
import docker.errors
import docker.types
import docker.utils

from node.images import PAUSE_IMAGE
from node.runtime import hostnet
from node.runtime import spec as k8s
from node.runtime.types import (
    KIND_CONTAINER,
    KIND_SANDBOX,
    LABEL_CONTAINER_HASH,
    LABEL_CONTAINER_NAME,
    LABEL_KIND,
    LABEL_NETWORK,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    LABEL_SANDBOX_ID,
    SANDBOX_CONTAINER_NAME,
    ContainerInfo,
    ContainerNotFoundError,
    ContainerState,
    ContainerStats,
    CreateContainerError,
    EngineUnavailableError,
    ExecTimeoutError,
    ForeignContainerError,
    ImageNotPresentError,
    ImagePullError,
    NetworkError,
    NetworkInfo,
    PodContainers,
    RunContainerError,
    Sandbox,
    SandboxError,
)

log = logging.getLogger(__name__)

DEFAULT_NETWORK = "grove"
DEFAULT_SUBNET = "10.88.0.0/16"  # clear of docker0's 172.17.0.0/16
_ZERO_TIME = "0001-01-01T00:00:00Z"
IMAGE_PRESENT_SECONDS = 30.0  # how long an image found present is believed without asking again


def k8s_time(engine_time: str | None) -> str | None:
    """The engine's nanosecond RFC 3339 time as Kubernetes shows it (seconds, UTC), None if unset."""
    if not engine_time or engine_time.startswith("0001-01-01"):
        return None
    return engine_time[:19] + "Z"


def state_from_engine(container_id: str, s: Mapping[str, Any]) -> ContainerState:
    """Kubernetes' view of the engine's State block."""
    cid = f"docker://{container_id}"
    status = s.get("Status", "")
    started, finished = k8s_time(s.get("StartedAt")), k8s_time(s.get("FinishedAt"))
    if status in ("running", "paused", "restarting"):
        return ContainerState("running", started_at=started, container_id=cid)
    if status in ("exited", "dead", "removing"):
        code = int(s.get("ExitCode") or 0)
        error = s.get("Error") or ""
        if s.get("OOMKilled"):
            reason = "OOMKilled"
        elif error and not started:
            reason = "ContainerCannotRun"
        elif code == 0:
            reason = "Completed"
        else:
            reason = "Error"
        return ContainerState(
            "terminated",
            reason=reason,
            message=error,
            exit_code=code,
            started_at=started or finished,
            finished_at=finished,
            container_id=cid,
        )
    return ContainerState("waiting", reason="ContainerCreating", container_id=cid)


def _explain(e: docker.errors.APIError) -> str:
    return str(e.explanation or e)


class DockerRuntime:
    """grove's pods on one Docker Engine. Build with `DockerRuntime(client)` or `from_env()`."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        network: str = DEFAULT_NETWORK,
        subnet: str = DEFAULT_SUBNET,
        pause_image: str = PAUSE_IMAGE,
        cluster_dns: Sequence[str] = (),
        cluster_domain: str = "cluster.local",
        host_resolv_conf: str = "/etc/resolv.conf",
        pull_timeout: float = 300.0,
        log_max_size: str = "10m",
        node_name: str = "",
    ) -> None:
        self.client = client
        self.node_name = node_name  # labels every container (LABEL_NODE); the agent sets it
        self.network = network
        self.subnet = subnet
        self.pause_image = pause_image
        self.cluster_dns = list(cluster_dns)
        self.cluster_domain = cluster_domain
        self.host_resolv_conf = host_resolv_conf
        self.pull_timeout = pull_timeout
        self._log_config = docker.types.LogConfig(
            type="json-file", config={"max-size": log_max_size, "max-file": "2"}
        )
        self._network_ready = False
        self._network_lock = threading.Lock()
        # container id -> (engine state it was inspected in, what inspect said); see _infos_of
        self._inspected: dict[str, tuple[str, ContainerInfo]] = {}
        self._images_present: dict[str, float] = {}  # image ref -> believed present until (monotonic)
        self._fresh: set[str] = set()  # ids created by this object and not started yet: known grove's
        self._died: dict[str, float] = {}  # id -> when the engine said it died, until an inspect shows it
        self._cache_lock = threading.Lock()

    @classmethod
    def from_env(cls, **kwargs: Any) -> DockerRuntime:
        """Connect as the docker CLI would (DOCKER_HOST or the local socket)."""
        try:
            client = docker.from_env(timeout=60)
            client.ping()
        except docker.errors.DockerException as e:
            raise EngineUnavailableError(
                f"no Docker Engine answers ({e}); run scripts/ensure-docker.sh"
            ) from e
        return cls(client, **kwargs)

    def runtime_version(self) -> str:
        """For Node.status.nodeInfo.containerRuntimeVersion, e.g. docker://20.10.24."""
        return f"docker://{self.client.version().get('Version', 'unknown')}"

    # --- network ------------------------------------------------------------------------

    def ensure_network(self) -> NetworkInfo:
        """Create grove's bridge network if it does not exist; return its name, id and subnet."""
        with self._network_lock:
            net = self._find_network()
            if net is None:
                try:
                    gateway = str(next(ipaddress.ip_network(self.subnet).hosts()))
                except (ValueError, StopIteration) as e:
                    raise NetworkError(f"pod subnet {self.subnet!r} is not a usable IPv4/IPv6 network") from e
                try:
                    pool = docker.types.IPAMPool(subnet=self.subnet, gateway=gateway)
                    self.client.networks.create(
                        self.network,
                        driver="bridge",
                        ipam=docker.types.IPAMConfig(pool_configs=[pool]),
                        check_duplicate=True,
                        labels={LABEL_NETWORK: "true"},
                    )
                except docker.errors.APIError as e:
                    if self._find_network() is None:  # not merely created by someone else meanwhile
                        raise NetworkError(
                            f"cannot create network {self.network!r} with subnet {self.subnet}: {_explain(e)}"
                        ) from e
                net = self._find_network()
            if net is None:
                raise NetworkError(f"network {self.network!r} vanished right after it was created")
            self._claim_subnet(net)
            self._network_ready = True
            config = ((net.attrs.get("IPAM") or {}).get("Config") or [{}])[0]
            subnet, gateway = config.get("Subnet", ""), config.get("Gateway", "")
            if subnet and not gateway:  # the engine took the first address without saying so
                gateway = str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
            return NetworkInfo(name=net.name, id=net.id, subnet=subnet, gateway=gateway)

    def _claim_subnet(self, net: Any) -> None:
        """Make sure the kernel routes the pod subnet to this network's bridge and nowhere else.

        Bridges abandoned by a dead engine are deleted; any other overlap is an error the user
        can act on, since pods would otherwise be unreachable without a word.
        """
        addrs = hostnet.host_addresses()
        if addrs is None:  # no iproute2: nothing to check with
            return
        config = ((net.attrs.get("IPAM") or {}).get("Config") or [{}])[0]
        subnet = config.get("Subnet") or self.subnet
        options = net.attrs.get("Options") or {}
        own = options.get("com.docker.network.bridge.name") or f"br-{net.id[:12]}"
        claims = hostnet.overlapping_claims(addrs, subnet, own)
        if not claims:
            return
        engine_ids = [n.id for n in self.client.networks.list()]
        for claim in claims:
            if hostnet.abandoned(claim, engine_ids):
                error = hostnet.delete_interface(claim.interface)
                if error is None:
                    log.warning("removed %s, a bridge left by a Docker engine that is gone, which held "
                                "%s inside the pod subnet %s", claim.interface, claim.address, subnet)  # fmt: skip
                    continue
                raise NetworkError(
                    f"{claim.interface} (left by a Docker engine that is gone) holds {claim.address} inside the "
                    f"pod subnet {subnet} and could not be removed ({error}); run: ip link delete {claim.interface}"
                )
            raise NetworkError(
                f"host interface {claim.interface} holds {claim.address}, inside the pod subnet {subnet}: pods "
                f"would be unreachable; choose another subnet with --pod-subnet or remove that interface"
            )

    def _find_network(self) -> Any:
        # The engine's name filter matches substrings; keep only the exact name.
        for net in self.client.networks.list(names=[self.network]):
            if net.name == self.network:
                return self.client.networks.get(net.id)
        return None

    # --- guard rail -------------------------------------------------------------------------

    def _get(self, container_id: str) -> Any:
        """The container, if it exists and is grove's; raises otherwise."""
        try:
            c = self.client.containers.get(container_id)
        except docker.errors.NotFound as e:
            raise ContainerNotFoundError(f"container {container_id[:12]} not found") from e
        if not (c.labels or {}).get(LABEL_POD_UID):
            raise ForeignContainerError(
                f"container {c.name} ({c.id[:12]}) has no {LABEL_POD_UID} label; grove does not touch it"
            )
        return c

    def _info(self, c: Any) -> ContainerInfo:
        return self._info_of(c.attrs)

    def _info_of(self, attrs: Mapping[str, Any]) -> ContainerInfo:
        """A ContainerInfo from the engine's inspect document (and remember it, see _infos_of)."""
        cid = str(attrs["Id"])
        labels = dict(attrs["Config"].get("Labels") or {})
        host_config = attrs.get("HostConfig") or {}
        networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
        ip = (networks.get(self.network) or {}).get("IPAddress", "")
        if not ip:
            ip = next((n.get("IPAddress", "") for n in networks.values() if n.get("IPAddress")), "")
        try:
            restart_count = int(labels.get(LABEL_RESTART_COUNT, "0"))
        except ValueError:
            restart_count = 0
        info = ContainerInfo(
            id=cid,
            name=attrs.get("Name", "").lstrip("/"),
            kind=labels.get(LABEL_KIND, KIND_CONTAINER),
            pod_uid=labels.get(LABEL_POD_UID, ""),
            pod_namespace=labels.get(LABEL_POD_NAMESPACE, ""),
            pod_name=labels.get(LABEL_POD_NAME, ""),
            container_name=labels.get(LABEL_CONTAINER_NAME, ""),
            restart_count=restart_count,
            image=attrs["Config"].get("Image", ""),
            image_id=attrs.get("Image", ""),
            created=attrs.get("Created", ""),
            state=state_from_engine(cid, attrs.get("State") or {}),
            labels=labels,
            ip=ip,
            host_network=host_config.get("NetworkMode") == "host",
            sandbox_id=labels.get(LABEL_SANDBOX_ID, ""),
            spec_hash=labels.get(LABEL_CONTAINER_HASH, ""),
        )
        if labels.get(LABEL_POD_UID):
            with self._cache_lock:
                self._inspected[cid] = (str((attrs.get("State") or {}).get("Status") or ""), info)
                if not info.state.running:
                    self._died.pop(cid, None)
        return info

    def container_event(self, container_id: str, action: str) -> None:
        """Take note of an engine event (called from the event stream's thread). The engine emits
        "die" before its container list shows the exit: a list right after still says "running",
        which matched the remembered inspect. Until an inspect shows the container stopped,
        every list inspects it again; an inspect waits for the engine to finish the exit."""
        if action == "die":
            with self._cache_lock:
                self._died[container_id] = time.monotonic()

    # --- sandbox ------------------------------------------------------------------------------

    def run_sandbox(self, pod: Mapping[str, Any], attempt: int = 0) -> Sandbox:
        """Create and start the pod's pause container; returns its id and the pod IP.

        Raises SandboxError with the engine's message (e.g. a hostPort already allocated).
        """
        uid, namespace, name = k8s.pod_identity(pod)
        spec = pod.get("spec") or {}
        host_network = bool(spec.get("hostNetwork"))
        if not self._network_ready and not host_network:
            self.ensure_network()
        missing = SandboxError(f"pause image {self.pause_image} is missing: run `grove images build`")
        if not self.image_present(self.pause_image):
            raise missing
        kwargs: dict[str, Any] = {
            "name": k8s.container_name(namespace, name, SANDBOX_CONTAINER_NAME, attempt, uid),
            "labels": k8s.labels_for(pod, KIND_SANDBOX, SANDBOX_CONTAINER_NAME, attempt, node=self.node_name),
            "ipc_mode": "shareable",
            "log_config": self._log_config,
            "detach": True,
        }
        dns = None
        if host_network:
            kwargs["network_mode"] = "host"
        else:
            kwargs["network"] = self.network
            kwargs["hostname"] = k8s.pod_hostname(pod)
            if spec.get("subdomain"):
                kwargs["domainname"] = f"{spec['subdomain']}.{namespace}.svc.{self.cluster_domain}"
            ports = k8s.host_ports(pod)
            if ports:
                kwargs["ports"] = ports
            dns = k8s.pod_dns(
                pod, self.cluster_dns, self.cluster_domain, k8s.read_host_resolv_conf(self.host_resolv_conf)
            )
            if dns is not None:
                if dns.nameservers:
                    kwargs["dns"] = dns.nameservers
                kwargs["dns_search"] = dns.searches
                kwargs["dns_opt"] = dns.options
            if k8s.host_aliases(pod):
                kwargs["extra_hosts"] = k8s.host_aliases(pod)
            if k8s.pod_sysctls(pod):
                kwargs["sysctls"] = k8s.pod_sysctls(pod)
        try:
            c = self._create(self.pause_image, kwargs)
        except ImageNotPresentError as e:
            raise missing from e
        except CreateContainerError as e:
            self._network_ready = False  # check the network again next time, in case it went away
            raise SandboxError(f"creating the sandbox of pod {namespace}/{name}: {e}") from e
        self._fresh.discard(c.id)
        try:
            c.start()
            c.reload()  # the pod IP exists once the sandbox runs
        except docker.errors.APIError as e:
            self._force_remove(c.id)
            raise SandboxError(f"starting the sandbox of pod {namespace}/{name}: {_explain(e)}") from e
        info = self._info(c)
        if dns is not None and dns.nameservers:
            self._write_resolv_conf(c.attrs.get("ResolvConfPath") or "", dns)
        return Sandbox(
            id=c.id, name=info.name, pod_uid=uid, ip=info.ip, host_network=host_network, attempt=attempt
        )

    @staticmethod
    def _write_resolv_conf(path: str, dns: k8s.ResolvConf) -> None:
        # On a user-defined network the engine points resolv.conf at its embedded resolver
        # (127.0.0.11), which also answers container names. The kubelet's dockershim rewrote the
        # sandbox's file, and so does grove: the pod then asks its nameservers directly. The app
        # containers share this file through the sandbox's network namespace.
        if not path:
            return
        try:
            with open(path, "w") as f:
                f.write(dns.render())
        except OSError:
            pass  # engine on another host or not writable: its embedded resolver forwards anyway

    def inspect_sandbox(self, sandbox_id: str) -> Sandbox:
        return Sandbox.from_info(self.inspect_container(sandbox_id))

    # --- containers -----------------------------------------------------------------------

    def create_container(
        self,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        sandbox: Sandbox,
        volumes: Mapping[str, str],
        env: Mapping[str, str],
        restart_count: int,
    ) -> str:
        """Create (not start) a pod's container joined to its sandbox; returns the container id.

        `volumes` maps volume names to host paths (see materialise_volumes); `env` is the
        container's final environment, in order (the caller resolves valueFrom and envFrom).
        """
        uid, namespace, name = k8s.pod_identity(pod)
        cname = str(container.get("name") or "")
        image = str(container.get("image") or "")
        if not cname or not image:
            raise CreateContainerError("a container needs a name and an image")
        # No image check first: the create itself says ImageNotFound (-> ImageNotPresentError).
        entrypoint, cmd = k8s.entrypoint_and_cmd(container, env)
        res = k8s.container_resources(container)
        sec = k8s.container_security(pod, container)
        mounts = [
            docker.types.Mount(target=m.target, source=m.source, type="bind", read_only=m.read_only)
            for m in k8s.container_mounts(pod, container, volumes, env)
        ]
        shared = f"container:{sandbox.id}"
        kwargs: dict[str, Any] = {
            "name": k8s.container_name(namespace, name, cname, restart_count, uid),
            "labels": k8s.labels_for(
                pod,
                KIND_CONTAINER,
                cname,
                restart_count,
                sandbox_id=sandbox.id,
                hash_of=container,
                node=self.node_name,
            ),
            "environment": [f"{k}={v}" for k, v in env.items()],
            "network_mode": shared,
            "ipc_mode": shared,
            "mounts": mounts,
            "cpu_shares": res.cpu_shares,
            "tty": bool(container.get("tty")),
            "stdin_open": bool(container.get("stdin")),
            "log_config": self._log_config,
            "detach": True,
        }
        if entrypoint is not None:
            kwargs["entrypoint"] = entrypoint
        if cmd is not None:
            kwargs["command"] = cmd
        if container.get("workingDir"):
            kwargs["working_dir"] = str(container["workingDir"])
        if (pod.get("spec") or {}).get("shareProcessNamespace"):
            kwargs["pid_mode"] = shared
        if res.mem_limit is not None:
            kwargs["mem_limit"] = res.mem_limit
            kwargs["memswap_limit"] = res.mem_limit  # no swap, as in Kubernetes
        if res.nano_cpus is not None:
            kwargs["nano_cpus"] = res.nano_cpus
        if sec.user is not None:
            kwargs["user"] = sec.user
        for key in ("group_add", "cap_add", "cap_drop", "security_opt"):
            if getattr(sec, key):
                kwargs[key] = getattr(sec, key)
        if sec.privileged:
            kwargs["privileged"] = True
        if sec.read_only:
            kwargs["read_only"] = True
        return self._create(image, kwargs).id

    def _create(self, image: str, kwargs: dict[str, Any]) -> Any:
        """containers.create; a dead grove container left with the same name is replaced."""
        for attempt in range(2):
            try:
                c = self.client.containers.create(image, **kwargs)
            except docker.errors.ImageNotFound as e:
                with self._cache_lock:
                    self._images_present.pop(image, None)
                raise ImageNotPresentError(f'image "{image}" is not present on this node') from e
            except docker.errors.APIError as e:
                if e.status_code == 409 and attempt == 0 and self._remove_stale(kwargs["name"]):
                    continue
                raise CreateContainerError(_explain(e)) from e
            self._info(c)  # the create's own inspect, remembered for the next list
            self._fresh.add(c.id)
            return c
        raise CreateContainerError(f"name {kwargs['name']} stays in use")

    def _remove_stale(self, name: str) -> bool:
        try:
            old = self._get(name)
        except (ContainerNotFoundError, ForeignContainerError):
            return False
        if self._info(old).state.running:
            return False
        self._force_remove(old.id)
        return True

    def _force_remove(self, container_id: str) -> None:
        with self._cache_lock:
            self._inspected.pop(container_id, None)
            self._fresh.discard(container_id)
            self._died.pop(container_id, None)
        try:
            self.client.api.remove_container(container_id, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: removal already in progress
                raise

    def start_container(self, container_id: str) -> None:
        """Start a created container; RunContainerError carries the engine's reason."""
        with self._cache_lock:
            fresh = container_id in self._fresh
            self._fresh.discard(container_id)
        if not fresh:  # not one this object just created: look before touching
            container_id = self._get(container_id).id
        try:
            self.client.api.start(container_id)
        except docker.errors.NotFound as e:
            raise ContainerNotFoundError(f"container {container_id[:12]} not found") from e
        except docker.errors.APIError as e:
            raise RunContainerError(_explain(e)) from e

    def stop_container(self, container_id: str, grace_seconds: int) -> None:
        """SIGTERM (or the image's STOPSIGNAL), wait up to `grace_seconds`, then SIGKILL.

        Returns once the container has exited — as soon as it exits, not at the deadline.
        """
        c = self._get(container_id)
        try:
            c.stop(timeout=max(0, int(grace_seconds)))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            raise RunContainerError(f"stopping {c.name}: {_explain(e)}") from e

    def remove_container(self, container_id: str) -> None:
        """Remove a container (killing it if it still runs); a missing one is not an error."""
        try:
            c = self._get(container_id)
        except ContainerNotFoundError:
            return
        self._force_remove(c.id)

    def stop_pod(self, pod_uid: str, grace_seconds: int) -> None:
        """Stop a pod's app containers together (each within the grace period), then its sandbox."""
        pod = self.list_pod_containers(pod_uid).get(pod_uid)
        if pod is None:
            return
        running = [c for c in pod.containers if c.state.running]
        if running:
            with ThreadPoolExecutor(max_workers=min(8, len(running))) as pool:
                for f in [pool.submit(self.stop_container, c.id, grace_seconds) for c in running]:
                    try:
                        f.result()
                    except ContainerNotFoundError:
                        pass
        for s in pod.sandboxes:
            if s.state.running:
                try:
                    self.stop_container(s.id, 2)
                except ContainerNotFoundError:
                    pass

    def remove_pod(self, pod_uid: str) -> None:
        """Remove every container of a pod, app containers first, the sandbox last."""
        pod = self.list_pod_containers(pod_uid).get(pod_uid)
        if pod is None:
            return
        for c in [*pod.containers, *pod.sandboxes]:
            self.remove_container(c.id)

    def inspect_container(self, container_id: str) -> ContainerInfo:
        """The container's labels and its Kubernetes-style state."""
        return self._info(self._get(container_id))

    def container_state(self, container_id: str) -> ContainerState:
        return self.inspect_container(container_id).state

    def list_pod_containers(self, pod_uid: str | None = None) -> dict[str, PodContainers]:
        """grove's containers, grouped by pod uid (all pods, or just `pod_uid`)."""
        label = LABEL_POD_UID if pod_uid is None else f"{LABEL_POD_UID}={pod_uid}"
        pods: dict[str, PodContainers] = {}
        for info in self._infos_of(self.client.api.containers(all=True, filters={"label": label}), pod_uid):
            pod = pods.setdefault(
                info.pod_uid,
                PodContainers(uid=info.pod_uid, namespace=info.pod_namespace, name=info.pod_name),
            )
            (pod.sandboxes if info.kind == KIND_SANDBOX else pod.containers).append(info)
        return pods

    def _infos_of(self, rows: Sequence[Mapping[str, Any]], pod_uid: str | None) -> list[ContainerInfo]:
        """The listed containers' details. A container is inspected only when it is new or the
        list shows it in another state than when it was last inspected: a pod's sync costs one
        sparse list, not an inspect per container."""
        infos: list[ContainerInfo] = []
        listed: set[str] = set()
        for row in rows:
            if not (row.get("Labels") or {}).get(LABEL_POD_UID):
                continue  # the filter already says so; this is the guard rail restated in code
            cid = str(row["Id"])
            listed.add(cid)
            with self._cache_lock:
                known = self._inspected.get(cid)
                died = cid in self._died
            if known is not None and known[0] == row.get("State") and not died:
                infos.append(known[1])
                continue
            try:
                infos.append(self._info_of(self.client.api.inspect_container(cid)))
            except docker.errors.NotFound:
                continue  # removed since the list
        with self._cache_lock:
            gone = [
                cid
                for cid, (_, info) in self._inspected.items()
                if cid not in listed and (pod_uid is None or info.pod_uid == pod_uid)
            ]
            for cid in gone:
                del self._inspected[cid]
                self._died.pop(cid, None)
            if pod_uid is None:  # forget dead containers removed before any list saw them
                cutoff = time.monotonic() - 60
                self._died = {c: t for c, t in self._died.items() if c in listed or t > cutoff}
        return infos

    # --- exec, logs, stats -----------------------------------------------------------------

    def exec(self, container_id: str, cmd: Sequence[str], timeout: float | None = None) -> tuple[int, str]:
        """Run `cmd` in a running container; returns (exit code, stdout and stderr interleaved).

        On timeout the process is killed (when the engine runs on this host) and
        ExecTimeoutError is raised.
        """
        c = self._get(container_id)
        api = self.client.api
        try:
            exec_id = api.exec_create(c.id, list(cmd), stdout=True, stderr=True)["Id"]
            stream = api.exec_start(exec_id, stream=True)
        except docker.errors.APIError as e:
            raise RunContainerError(_explain(e)) from e
        chunks: list[bytes] = []
        failure: list[BaseException] = []

        def drain() -> None:
            try:
                chunks.extend(stream)
            except Exception as e:  # noqa: BLE001 - handed to the caller's thread
                failure.append(e)

        reader = threading.Thread(target=drain, name=f"exec-{c.id[:12]}", daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self._kill_exec(exec_id)
            raise ExecTimeoutError(f"command {list(cmd)!r} timed out after {timeout:g}s")
        if failure:
            raise RunContainerError(f"exec {list(cmd)!r}: {failure[0]}")
        # The output ends a moment before the engine records the exit code.
        deadline = time.monotonic() + 5
        while True:
            info = api.exec_inspect(exec_id)
            if not info.get("Running") or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        code = info.get("ExitCode")
        return (code if code is not None else -1), b"".join(chunks).decode("utf-8", "replace")

    def _kill_exec(self, exec_id: str) -> None:
        try:
            info = self.client.api.exec_inspect(exec_id)
            if info.get("Running") and info.get("Pid"):
                os.kill(int(info["Pid"]), signal.SIGKILL)
        except (docker.errors.APIError, OSError) as e:
            if isinstance(e, OSError) and e.errno not in (errno.ESRCH, errno.EPERM):
                raise

    def logs(
        self,
        container_id: str,
        tail: int | None = None,
        since: datetime | float | None = None,
        timestamps: bool = False,
        follow: bool = False,
        until: datetime | float | None = None,
    ) -> bytes | Iterator[bytes]:
        """The container's stdout and stderr: bytes, or an iterator of chunks when following."""
        c = self._get(container_id)
        kwargs: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "timestamps": timestamps,
            "tail": "all" if tail is None else max(0, int(tail)),
        }
        if since is not None:
            kwargs["since"] = since
        if until is not None:
            kwargs["until"] = until
        if follow:
            return c.logs(stream=True, follow=True, **kwargs)
        return c.logs(**kwargs)

    def stats(self, container_id: str) -> ContainerStats:
        """CPU (cumulative nanoseconds) and memory of a container, from one engine sample."""
        c = self._get(container_id)
        s = self.client.api.stats(c.id, stream=False, one_shot=True)
        cpu = int(((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0)
        mem = s.get("memory_stats") or {}
        detail = mem.get("stats") or {}
        usage = int(mem.get("usage") or 0)
        # cgroup v1 reports total_*; v2 plain names.
        inactive = int(detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0)
        rss = int(detail.get("total_rss", detail.get("anon", 0)) or 0)
        return ContainerStats(
            timestamp=s.get("read", ""),
            cpu_usage_nanoseconds=cpu,
            memory_usage_bytes=usage,
            memory_working_set_bytes=max(0, usage - inactive),
            memory_rss_bytes=rss,
        )

    # --- images -----------------------------------------------------------------------------

    def image_present(self, ref: str) -> bool:
        """Whether the image is on this node. A yes is believed for IMAGE_PRESENT_SECONDS: images
        are rarely removed under running pods, and a create that finds one gone says so."""
        now = time.monotonic()
        with self._cache_lock:
            if self._images_present.get(ref, 0.0) > now:
                return True
        try:
            self.client.api.inspect_image(ref)
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.APIError as e:
            raise ImagePullError(_explain(e)) from e
        with self._cache_lock:
            self._images_present[ref] = now + IMAGE_PRESENT_SECONDS
        return True

    def image_id(self, ref: str) -> str:
        try:
            return self.client.images.get(ref).id
        except docker.errors.ImageNotFound as e:
            raise ImageNotPresentError(f'image "{ref}" is not present on this node') from e

    def pull_image(self, ref: str) -> str:
        """Pull `ref`; returns the image id. ImagePullError carries the engine's message."""
        repository, tag = docker.utils.parse_repository_tag(ref)
        outcome: dict[str, Any] = {}

        def pull() -> None:
            try:
                for event in self.client.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                    if isinstance(event, dict) and event.get("error"):
                        outcome["error"] = str(event["error"])
                        return
            except docker.errors.APIError as e:
                outcome["error"] = _explain(e)
            except docker.errors.DockerException as e:
                outcome["error"] = str(e)

        worker = threading.Thread(target=pull, name=f"pull-{ref}", daemon=True)
        worker.start()
        worker.join(self.pull_timeout)
        if worker.is_alive():
            raise ImagePullError(f'pulling image "{ref}" timed out after {self.pull_timeout:g}s')
        if "error" in outcome:
            raise ImagePullError(f'failed to pull image "{ref}": {outcome["error"]}')
        try:
            return self.image_id(ref)
        except ImageNotPresentError as e:
            raise ImagePullError(f'pull of "{ref}" finished but the image is not present') from e
