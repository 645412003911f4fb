"""Container exits reach the pod's status through events alone, also when many pods of one node
exit at the same moment.

The node agent is level-triggered, but only wakes up for a pod on an event (the engine's "die",
the fake runtime's exit callback, a pod change) or on its full resync (`--sync-frequency`). The
end-to-end tests start the agent with a resync period far beyond their deadlines, so an exit the
agent was told of but could not see yet shows as a pod stuck in Running. Two such lags are pinned
down on their own: Docker lists a container as running just after its "die" event, and the fake
runtime's exit timer may fire a little before the wall clock reaches the scripted exit time.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

pytest.register_assert_rewrite("tests.dockerutil")  # before its import: its asserts explain failures

from kvstore.localcluster import free_port  # noqa: E402
from node.fake import EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION, FakeRuntime  # noqa: E402
from node.images import BUSYBOX_IMAGE  # noqa: E402
from node.runtime import DockerRuntime  # noqa: E402
from node.runtime.types import LABEL_POD_UID  # noqa: E402
from tests import apiserver_fixture  # noqa: E402
from tests.apiserver_fixture import ROOT, ApiServerProcess  # noqa: E402
from tests.dockerutil import Pods, make_pod, wait_for  # noqa: E402

apiserver = apiserver_fixture.apiserver  # the module-scoped store cluster + API server
pytest_plugins = ("tests.dockerutil",)  # docker_client, grove_images, pods

RESYNC = "300"  # seconds: far beyond every deadline below, so only events can finish a pod
DEADLINE = 40.0  # seconds for every pod to reach its terminal phase
HOLLOW_PODS = 120
DOCKER_PODS = 8
DOCKER_NS = "exit-events-docker"


class AgentProcess:
    """A `grove node` process whose log is kept for the failure message."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        self.log_path = workdir / "node.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONPATH=ROOT),
                cwd=ROOT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def serving(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(
                f"grove node exited with {self.proc.returncode}:\n{self.log()[-3000:]}", pytrace=False
            )
        return bool(re.search(r"serving on [\d.]+:\d+", self.log()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def create_namespace(apiserver: ApiServerProcess, ns: str) -> None:
    r = requests.post(f"{apiserver.url}/api/v1/namespaces", json={"metadata": {"name": ns}}, timeout=10)
    assert r.status_code in (201, 409), r.text


def create_pod(apiserver: ApiServerProcess, ns: str, pod: dict[str, Any]) -> None:
    r = requests.post(f"{apiserver.url}/api/v1/namespaces/{ns}/pods", json=pod, timeout=10)
    assert r.status_code == 201, r.text


def phases(apiserver: ApiServerProcess, ns: str) -> dict[str, str]:
    r = requests.get(f"{apiserver.url}/api/v1/namespaces/{ns}/pods", timeout=10)
    r.raise_for_status()
    return {p["metadata"]["name"]: (p.get("status") or {}).get("phase", "") for p in r.json()["items"]}


def wait_all_succeeded(apiserver: ApiServerProcess, ns: str, names: list[str], agent: AgentProcess) -> None:
    last: dict[str, str] = {}

    def done() -> bool:
        assert agent.proc.poll() is None, f"grove node exited:\n{agent.log()[-3000:]}"
        last.clear()
        last.update(phases(apiserver, ns))
        return all(last.get(n) == "Succeeded" for n in names)

    try:
        wait_for(done, DEADLINE, f"{len(names)} pods Succeeded without a resync")
    except BaseException:
        stuck = {n: last.get(n) for n in names if last.get(n) != "Succeeded"}
        print(f"pods not Succeeded: {stuck}\n--- node log ---\n{agent.log()[-4000:]}")
        raise


# --- hollow node --------------------------------------------------------------------------------


def test_fake_runtime_shows_the_exit_when_it_reports_it() -> None:
    """The exit callback comes from a loop timer, which may fire before the wall clock reaches the
    scripted exit time; the container must have exited when the agent hears of it."""
    start = 1_700_000_000.0
    seen: list[str] = []

    async def body() -> None:
        done = asyncio.Event()
        rt: FakeRuntime

        def on_exit(namespace: str, name: str) -> None:
            state = rt.container_state(cid)
            seen.append(f"{namespace}/{name} {state.status} {state.exit_code}")
            done.set()

        # A clock that stands still: the timer always fires "before" the scripted exit time.
        rt = FakeRuntime(clock=lambda: start, on_exit=on_exit)
        pod = make_pod("soon", [{"name": "c", "image": BUSYBOX_IMAGE}])
        pod["metadata"]["annotations"] = {EXIT_CODE_ANNOTATION: "7", RUN_SECONDS_ANNOTATION: "0.05"}
        sandbox = rt.run_sandbox(pod)
        cid = rt.create_container(pod, pod["spec"]["containers"][0], sandbox, {}, {}, 0)
        rt.start_container(cid)
        await asyncio.wait_for(done.wait(), 10)

    asyncio.run(body())
    assert seen == ["default/soon terminated 7"]


@pytest.fixture
def hollow_agent(apiserver: ApiServerProcess) -> Iterator[tuple[str, AgentProcess]]:
    """One hollow node with a 300 s resync and housekeeping period; yields (node name, process)."""
    workdir = Path(tempfile.mkdtemp(prefix="grove-exit-events-"))
    name = "exit-events-0"
    agent = AgentProcess(
        [
            "--server", apiserver.url, "--runtime", "fake", "--name", name, "--node-ip", "127.0.0.1",
            "--port", "0", "--root-dir", str(workdir / "root"),
            "--sync-frequency", RESYNC, "--housekeeping-interval", RESYNC,
        ],
        workdir,
    )  # fmt: skip
    try:
        wait_for(agent.serving, 60, "the hollow node to register")
        yield name, agent
    finally:
        agent.stop()
        print(agent.log()[-2000:])
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def hollow_pod(name: str, node: str, run_seconds: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {EXIT_CODE_ANNOTATION: "0", RUN_SECONDS_ANNOTATION: run_seconds},
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "grove/busybox:1.35"}],
        },
    }


def test_hollow_pods_exiting_together_all_succeed(
    apiserver: ApiServerProcess, hollow_agent: tuple[str, AgentProcess]
) -> None:
    node, agent = hollow_agent
    ns = "exit-events-hollow"
    create_namespace(apiserver, ns)
    # Pods started in one burst exit together while the agent is busy with the others' status
    # writes and watch events; some exit the moment they start.
    names = [f"p-{i}" for i in range(HOLLOW_PODS)]
    for i, name in enumerate(names):
        create_pod(apiserver, ns, hollow_pod(name, node, "0" if i % 4 == 0 else "0.5"))
    wait_all_succeeded(apiserver, ns, names, agent)


# --- Docker -------------------------------------------------------------------------------------


@pytest.fixture
def docker_agent(
    apiserver: ApiServerProcess, docker_client: docker.DockerClient, grove_images: list[str]
) -> Iterator[tuple[str, AgentProcess]]:
    """A Docker node agent with a 300 s resync and housekeeping period; removes its pods after."""
    workdir = Path(tempfile.mkdtemp(prefix="grove-exit-events-docker-"))
    name = "exit-events-docker"
    agent = AgentProcess(
        [
            "--server", apiserver.url, "--runtime", "docker", "--name", name, "--node-ip", "127.0.0.1",
            "--address", "127.0.0.1", "--port", str(free_port()), "--root-dir", str(workdir / "root"),
            "--sync-frequency", RESYNC, "--housekeeping-interval", RESYNC,
        ],
        workdir,
    )  # fmt: skip
    try:
        wait_for(agent.serving, 60, "the Docker node to register")
        yield name, agent
    finally:
        agent.stop()
        runtime = DockerRuntime(docker_client)
        for uid, pc in runtime.list_pod_containers().items():
            if pc.namespace == DOCKER_NS:
                runtime.remove_pod(uid)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


@pytest.mark.docker
def test_docker_pods_exiting_together_all_succeed(
    apiserver: ApiServerProcess, docker_agent: tuple[str, AgentProcess]
) -> None:
    node, agent = docker_agent
    create_namespace(apiserver, DOCKER_NS)
    # Some exit at once (often while their own start is still being synced), some a second later,
    # when the agent is idle and syncs the pod the moment the engine reports the exit.
    names = [f"hi-{i}" for i in range(DOCKER_PODS)]
    for i, name in enumerate(names):
        script = "echo hi" if i % 2 == 0 else "sleep 1; echo hi"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script]}],
            },
        }
        create_pod(apiserver, DOCKER_NS, pod)
    try:
        wait_all_succeeded(apiserver, DOCKER_NS, names, agent)
    finally:
        requests.delete(f"{apiserver.url}/api/v1/namespaces/{DOCKER_NS}", timeout=10)


@pytest.mark.docker
def test_docker_runtime_lists_a_container_exited_right_after_its_die_event(
    docker_client: docker.DockerClient, pods: Pods
) -> None:
    """The engine's list lags its "die" event; told of the event, the runtime looks closer."""
    runtime = pods.runtime
    pod = make_pod("dies-soon", [{"name": "c", "image": BUSYBOX_IMAGE, "command": ["sh", "-c", "sleep 1"]}])
    events = docker_client.events(
        decode=True,
        until=int(time.time()) + 30,  # the stream ends by then, die or not
        filters={"type": "container", "label": [f"{LABEL_POD_UID}={pod['metadata']['uid']}"]},
    )
    try:
        running = pods.run(pod)
        cid = running.ids["c"]
        before = runtime.list_pod_containers(running.uid)[running.uid]
        assert next(c for c in before.containers if c.id == cid).state.running  # remembered as running
        for event in events:
            if event.get("Action") == "die" and (event.get("Actor") or {}).get("ID") == cid:
                break
        runtime.container_event(cid, "die")  # what the agent's event thread does
        after = runtime.list_pod_containers(running.uid)[running.uid]
        state = next(c for c in after.containers if c.id == cid).state
        assert state.terminated and state.exit_code == 0, state
    finally:
        events.close()
