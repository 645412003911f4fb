"""Fixtures for tests that need a real Docker Engine.

Load them in a test module with `pytest_plugins = ("tests.dockerutil",)`.

- `docker_client`: a connected SDK client. With no engine the test is skipped — or, when the
  CI environment variable is set, fails with a clear message: Docker tests never pass by skipping
  in CI.
- `grove_images`: grove's base images, built once per session (skipped when present).
- `docker_runtime`: a DockerRuntime on grove's network.
- `pods`: starts pods for a test and removes every container of them afterwards, pass or fail;
  `pods.scratch(...)` runs a container *without* grove labels, removed the same way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import pytest

from node.images import BUSYBOX_IMAGE, PAUSE_IMAGE, build_images
from node.runtime import DockerRuntime, Sandbox, materialise_volumes
from node.runtime.types import LABEL_POD_UID
from tests import waiting

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail the test at the deadline."""
    return waiting.wait_for(condition, what, timeout)


def make_pod(
    name: str, containers: list[dict[str, Any]], namespace: str = "default", **spec: Any
) -> dict[str, Any]:
    """A minimal Pod object with a fresh uid."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {"containers": containers, **spec},
    }


def reap_stale_containers(client: docker.DockerClient) -> None:
    """Remove grove containers a killed earlier run left on a reused machine (.ci/run asks for it).

    Only where nothing else may be running grove pods: the variable is set by CI, never by default.
    """
    for c in client.containers.list(all=True, filters={"label": LABEL_POD_UID}):
        try:
            c.remove(force=True)
        except docker.errors.DockerException as e:
            print(f"cannot remove stale container {c.name}: {e}")


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as e:
        message = f"no Docker Engine answers ({e}); run scripts/ensure-docker.sh as root"
        if os.environ.get("CI"):
            pytest.fail(f"Docker tests cannot run in CI: {message}", pytrace=False)
        pytest.skip(message)
    if os.environ.get("GROVE_TEST_REAP_STALE"):
        reap_stale_containers(client)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def grove_images(docker_client: docker.DockerClient) -> list[str]:
    build_images(docker_client)
    return [BUSYBOX_IMAGE, PAUSE_IMAGE]


@pytest.fixture(scope="session")
def docker_runtime(docker_client: docker.DockerClient, grove_images: list[str]) -> DockerRuntime:
    runtime = DockerRuntime(docker_client)
    runtime.ensure_network()
    return runtime


@dataclass
class RunningPod:
    pod: dict[str, Any]
    sandbox: Sandbox
    ids: dict[str, str] = field(default_factory=dict)  # container name -> container id
    volumes: dict[str, str] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]


class Pods:
    """Starts pods the way the node agent will, and remembers what to clean up."""

    def __init__(self, runtime: DockerRuntime, client: docker.DockerClient, tmp: Path) -> None:
        self.runtime = runtime
        self.client = client
        self.tmp = tmp
        self.uids: list[str] = []
        self.scratch_ids: list[str] = []

    def run(
        self,
        pod: dict[str, Any],
        env: Mapping[str, Mapping[str, str]] | None = None,
        secrets: Mapping[str, Mapping[str, Any]] | None = None,
        configmaps: Mapping[str, Mapping[str, Any]] | None = None,
        runtime: DockerRuntime | None = None,
    ) -> RunningPod:
        """Sandbox, volumes, then every container created and started; env is per container name."""
        rt = runtime or self.runtime
        self.uids.append(pod["metadata"]["uid"])
        sandbox = rt.run_sandbox(pod)
        volumes = materialise_volumes(pod, self.tmp / pod["metadata"]["uid"], secrets or {}, configmaps or {})
        running = RunningPod(pod=pod, sandbox=sandbox, volumes=volumes)
        for c in pod["spec"]["containers"]:
            cid = rt.create_container(pod, c, sandbox, volumes, dict((env or {}).get(c["name"], {})), 0)
            running.ids[c["name"]] = cid
            rt.start_container(cid)
        return running

    def scratch(self, **kwargs: Any) -> Any:
        """A container started by hand, without grove's pod uid label."""
        c = self.client.containers.run(BUSYBOX_IMAGE, detach=True, **kwargs)
        self.scratch_ids.append(c.id)
        return c

    def cleanup(self) -> None:
        for uid in self.uids:
            try:
                self.runtime.remove_pod(uid)
            except Exception as e:  # noqa: BLE001 - keep cleaning the rest
                print(f"cleanup of pod {uid} failed: {e}")
        for cid in self.scratch_ids:
            try:
                self.client.api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass


@pytest.fixture
def pods(docker_runtime: DockerRuntime, docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Pods]:
    p = Pods(docker_runtime, docker_client, tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


def container_logs(runtime: DockerRuntime, container_id: str) -> str:
    out = runtime.logs(container_id)
    assert isinstance(out, bytes)
    return out.decode()
