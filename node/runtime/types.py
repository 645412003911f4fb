"""Records and errors of grove's container runtime layer.

The runtime speaks Kubernetes: a container's state is running / terminated / waiting with the
reasons kubectl shows, ids are reported as `docker://<id>`, and every failure is an exception whose
message can go straight into a pod's status or an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Labels on every container grove creates. A container without LABEL_POD_UID is not grove's.
LABEL_POD_UID = "io.grove.pod.uid"
LABEL_POD_NAMESPACE = "io.grove.pod.namespace"
LABEL_POD_NAME = "io.grove.pod.name"
LABEL_CONTAINER_NAME = "io.grove.container.name"
LABEL_RESTART_COUNT = "io.grove.container.restart-count"
LABEL_KIND = "io.grove.kind"
LABEL_CONTAINER_HASH = "io.grove.container.hash"
LABEL_SANDBOX_ID = "io.grove.sandbox.id"
LABEL_GRACE_PERIOD = "io.grove.pod.termination-grace-period"
LABEL_NETWORK = "io.grove.network"

KIND_SANDBOX = "sandbox"
KIND_CONTAINER = "container"
SANDBOX_CONTAINER_NAME = "POD"  # never a valid Kubernetes container name, so it cannot clash


class ContainerRuntimeError(Exception):
    """Base of the runtime's errors; the message is meant for a pod status or an event."""


class EngineUnavailableError(ContainerRuntimeError):
    """No Docker Engine answers."""


class ForeignContainerError(ContainerRuntimeError):
    """The container has no grove labels, so grove will not look at or touch it."""


class ContainerNotFoundError(ContainerRuntimeError):
    """No container with that id exists (any more)."""


class ImagePullError(ContainerRuntimeError):
    """The image could not be pulled; the message is the engine's (kubectl: ErrImagePull)."""


class ImageNotPresentError(ContainerRuntimeError):
    """The image is not on this node and the caller did not pull it first."""


class CreateContainerError(ContainerRuntimeError):
    """The engine refused to create the container (kubectl: CreateContainerError)."""


class RunContainerError(ContainerRuntimeError):
    """The engine created the container but could not start it (kubectl: RunContainerError)."""


class SandboxError(ContainerRuntimeError):
    """The pod sandbox could not be created or started (event: FailedCreatePodSandBox)."""


class VolumeError(ContainerRuntimeError):
    """A volume could not be prepared (event: FailedMount)."""


class NetworkError(ContainerRuntimeError):
    """grove's pod network could not be created."""


class ExecTimeoutError(ContainerRuntimeError):
    """An exec'd command ran past its timeout (and was killed)."""


@dataclass
class ContainerState:
    """Kubernetes' ContainerState: exactly one of running / terminated / waiting."""

    status: str  # "running" | "terminated" | "waiting"
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    started_at: str | None = None  # RFC 3339, seconds, UTC
    finished_at: str | None = None
    container_id: str = ""  # docker://<id>

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def terminated(self) -> bool:
        return self.status == "terminated"

    def to_k8s(self) -> dict[str, Any]:
        """The state as it appears in a pod's containerStatuses[].state."""
        if self.status == "running":
            return {"running": {"startedAt": self.started_at}}
        if self.status == "terminated":
            body: dict[str, Any] = {
                "exitCode": self.exit_code if self.exit_code is not None else 0,
                "reason": self.reason,
                "startedAt": self.started_at,
                "finishedAt": self.finished_at,
                "containerID": self.container_id,
            }
            if self.message:
                body["message"] = self.message
            return {"terminated": body}
        body = {"reason": self.reason} if self.reason else {}
        if self.message:
            body["message"] = self.message
        return {"waiting": body}


@dataclass
class ContainerInfo:
    """What the engine knows about one of grove's containers (sandbox or app container)."""

    id: str
    name: str  # the engine's name, e.g. grove_default_web_nginx_0_1a2b3c4d
    kind: str  # KIND_SANDBOX or KIND_CONTAINER
    pod_uid: str
    pod_namespace: str
    pod_name: str
    container_name: str  # Kubernetes container name; "POD" for a sandbox
    restart_count: int
    image: str  # the reference the container was created from
    image_id: str  # sha256:...
    created: str  # RFC 3339 as the engine reports it (sortable)
    state: ContainerState
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = ""  # pod IP on grove's network (sandboxes only)
    host_network: bool = False
    sandbox_id: str = ""  # the sandbox an app container is joined to
    spec_hash: str = ""  # LABEL_CONTAINER_HASH: changes when the container spec changes

    @property
    def container_id(self) -> str:
        """The id the way Kubernetes shows it: docker://<id>."""
        return f"docker://{self.id}"


@dataclass
class Sandbox:
    """A pod's pause container: owner of the pod's network and IPC namespaces."""

    id: str
    name: str
    pod_uid: str
    ip: str  # "" for hostNetwork pods: the pod IP is the node's
    host_network: bool = False
    attempt: int = 0

    @classmethod
    def from_info(cls, info: ContainerInfo) -> Sandbox:
        return cls(
            id=info.id,
            name=info.name,
            pod_uid=info.pod_uid,
            ip=info.ip,
            host_network=info.host_network,
            attempt=info.restart_count,
        )


@dataclass
class PodContainers:
    """grove's containers of one pod, as found on the engine."""

    uid: str
    namespace: str
    name: str
    sandboxes: list[ContainerInfo] = field(default_factory=list)
    containers: list[ContainerInfo] = field(default_factory=list)

    @property
    def sandbox(self) -> ContainerInfo | None:
        """The newest running sandbox, else the newest one, else None."""
        ordered = sorted(self.sandboxes, key=lambda c: c.created, reverse=True)
        running = [s for s in ordered if s.state.running]
        return (running or ordered or [None])[0]

    def latest(self, container_name: str) -> ContainerInfo | None:
        """The newest instance of a Kubernetes container (highest restart count)."""
        mine = [c for c in self.containers if c.container_name == container_name]
        return max(mine, key=lambda c: (c.restart_count, c.created), default=None)


@dataclass
class ContainerStats:
    """A container's usage, as cAdvisor reports it."""

    timestamp: str  # RFC 3339 as the engine reports it
    cpu_usage_nanoseconds: int  # cumulative
    memory_usage_bytes: int
    memory_working_set_bytes: int  # usage minus inactive file cache: what the OOM killer weighs
    memory_rss_bytes: int


@dataclass
class NetworkInfo:
    name: str
    id: str
    subnet: str
    gateway: str
