"""`kubectl logs` and `kubectl exec` through grove's API server to a real node agent with Docker.

One store cluster + API server, and one `grove node` process (Docker runtime) registered with it.
Pods are bound to that node by `spec.nodeName` (no scheduler needed); kubectl 1.32 then reaches
their containers the way it reaches a real cluster's: logs streamed from the agent's
/containerLogs, exec as a WebSocket (v5.channel.k8s.io) relayed by the API server. Every
container the agent made is removed at the end, pass or fail.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import requests

from tests import waiting
from tests.apiserver_fixture import (
    ApiServerProcess,
    apiserver,  # noqa: F401 - the module's store + API server
)
from tests.cluster import NodeAgentProcess, busybox_container, remove_pod_containers

pytest_plugins = ("tests.dockerutil",)
pytestmark = pytest.mark.slow

NODE = "logs-exec-node"
NS = "default"
DEADLINE = 60.0

APP_SCRIPT = (
    "echo first line; echo to stderr >&2; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
)


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE, **kw: Any) -> Any:
    return waiting.wait_for(cond, what, timeout, **kw)


class Cluster:
    def __init__(self, server: ApiServerProcess, agent: NodeAgentProcess) -> None:
        self.server = server
        self.agent = agent
        self.http = requests.Session()
        self.uids: list[str] = []

    def api(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        return self.http.request(method, self.server.url + path, json=body, params=params, timeout=30)

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return self.server.kubectl(*args, **kwargs)

    def run_pod(
        self, name: str, containers: list[dict[str, Any]], node: str | None = NODE, **spec: Any
    ) -> dict:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"containers": containers, "terminationGracePeriodSeconds": 1, **spec},
        }
        if node:
            pod["spec"]["nodeName"] = node
        resp = self.api("POST", f"/api/v1/namespaces/{NS}/pods", pod)
        assert resp.status_code == 201, resp.text
        created = resp.json()
        self.uids.append(created["metadata"]["uid"])
        return created

    def pod(self, name: str) -> dict:
        resp = self.api("GET", f"/api/v1/namespaces/{NS}/pods/{name}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def running(self, name: str) -> bool:
        status = self.pod(name).get("status") or {}
        statuses = status.get("containerStatuses") or []
        return status.get("phase") == "Running" and bool(statuses) and all(s.get("ready") for s in statuses)


@pytest.fixture(scope="module")
def cluster(
    apiserver: ApiServerProcess,  # noqa: F811
    grove_images: list[str],
    docker_client: docker.DockerClient,
) -> Iterator[Cluster]:
    agent = NodeAgentProcess(
        apiserver,
        "logs",
        ["--name", NODE, "--crashloop-backoff-base", "0.5", "--crashloop-backoff-max", "1"],
    )
    c = Cluster(apiserver, agent)
    try:
        agent.start()

        def node_ready() -> bool:
            resp = c.api("GET", f"/api/v1/nodes/{NODE}")
            if resp.status_code != 200:
                return False
            conditions = resp.json().get("status", {}).get("conditions") or []
            return any(x.get("type") == "Ready" and x.get("status") == "True" for x in conditions)

        wait_for(node_ready, "the node Ready", check=agent.check)
        c.run_pod(
            "chatty",
            [
                busybox_container("app", APP_SCRIPT),
                busybox_container("side", "echo side says hi; sleep 3600"),
            ],
        )
        c.run_pod("crasher", [busybox_container("once", "echo run $(date +%s%N); sleep 0.3; exit 1")])
        wait_for(lambda: c.running("chatty"), "pod chatty Running", check=agent.check)
        yield c
    finally:
        try:
            for name in ("chatty", "crasher"):
                c.api("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}")
            if agent.running():  # let the agent stop the pods' containers
                waiting.poll(
                    lambda: all(
                        c.api("GET", f"/api/v1/namespaces/{NS}/pods/{n}").status_code == 404
                        for n in ("chatty", "crasher")
                    ),
                    30,
                )
        finally:
            agent.stop()
            remove_pod_containers(docker_client, c.uids)


# --- logs -------------------------------------------------------------------------------------------


def test_kubectl_logs_of_each_container_with_options(cluster: Cluster) -> None:
    side = cluster.kubectl("logs", "chatty", "-c", "side")
    assert side.stdout == "side says hi\n"
    app = wait_for(lambda: cluster.kubectl("logs", "chatty", "-c", "app").stdout, "app logs")
    lines = app.splitlines()
    # stdout and stderr both (the engine may order the two streams either way)
    assert lines[0] in ("first line", "to stderr") and "to stderr" in lines
    assert lines.index("first line") < lines.index("tick 1") < lines.index("tick 2")
    last = cluster.kubectl("logs", "chatty", "-c", "app", "--tail=1").stdout.splitlines()
    assert len(last) == 1 and last[0].startswith("tick ")
    stamped = cluster.kubectl("logs", "chatty", "-c", "app", "--timestamps", "--tail=2").stdout.splitlines()
    assert len(stamped) == 2
    for line in stamped:
        stamp, _, text = line.partition(" ")
        assert (
            stamp[:4].isdigit() and stamp.endswith("Z") and (text.startswith("tick ") or text == "to stderr")
        ), line
    recent = cluster.kubectl("logs", "chatty", "-c", "app", "--since=1h").stdout
    assert "first line" in recent.splitlines()[:2]
    # kubectl picks the first container when none is named, and says so.
    default = cluster.kubectl("logs", "chatty", "--tail=1")
    assert default.stdout.startswith("tick ")


def test_kubectl_logs_follow_streams(cluster: Cluster) -> None:
    env = cluster.server.kubectl_env()
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            cluster.server.kubeconfig,
            "logs",
            "-f",
            "chatty",
            "-c",
            "app",
            "--tail=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ticks = []
        deadline = time.monotonic() + DEADLINE
        while len(ticks) < 4 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            ticks.append(int(line.split()[1]))
        # New lines keep arriving on the one request, in order.
        assert len(ticks) == 4, (ticks, proc.stderr.read() if proc.poll() is not None else "")
        assert ticks == sorted(ticks) and ticks[-1] > ticks[0]
    finally:
        proc.kill()
        proc.wait()


def test_kubectl_logs_previous_of_a_restarted_container(cluster: Cluster) -> None:
    def restarted() -> bool:
        statuses = (cluster.pod("crasher").get("status") or {}).get("containerStatuses") or []
        return bool(statuses) and statuses[0].get("restartCount", 0) >= 1

    wait_for(restarted, "crasher restarted", check=cluster.agent.check)
    previous = cluster.kubectl("logs", "crasher", "--previous")
    assert previous.stdout.startswith("run "), previous.stdout
    none = cluster.kubectl("logs", "chatty", "-c", "side", "--previous", check=False)
    assert none.returncode != 0
    assert 'previous terminated container "side" in pod "chatty" not found' in none.stderr


def test_log_errors_as_kubernetes_words_them(cluster: Cluster) -> None:
    base = f"/api/v1/namespaces/{NS}/pods"
    which = cluster.api("GET", f"{base}/chatty/log")
    assert which.status_code == 400, which.text
    assert (
        which.json()["message"]
        == "a container name must be specified for pod chatty, choose one of: [app side]"
    )
    unknown = cluster.api("GET", f"{base}/chatty/log", container="nope")
    assert (
        unknown.status_code == 400
        and unknown.json()["message"] == "container nope is not valid for pod chatty"
    )
    negative = cluster.api("GET", f"{base}/chatty/log", container="app", tailLines="-1")
    assert negative.status_code == 422 and negative.json()["reason"] == "Invalid", negative.text
    missing = cluster.api("GET", f"{base}/ghost/log")
    assert missing.status_code == 404 and missing.json()["reason"] == "NotFound"
    cluster.run_pod("unbound", [busybox_container("c", "sleep 1")], node=None)
    try:
        unbound = cluster.kubectl("logs", "unbound", check=False)
        assert unbound.returncode != 0 and "pod unbound does not have a host assigned" in unbound.stderr
        limited = cluster.api("GET", f"{base}/chatty/log", container="side", limitBytes="4")
        assert limited.status_code == 200 and limited.text == "side"
    finally:
        cluster.api("DELETE", f"{base}/unbound", gracePeriodSeconds="0")


# --- exec -------------------------------------------------------------------------------------------


def test_kubectl_exec_output_exit_code_and_stdin(cluster: Cluster) -> None:
    hello = cluster.kubectl("exec", "chatty", "-c", "app", "--", "echo", "hello", "world")
    assert hello.stdout == "hello world\n"
    both = cluster.kubectl("exec", "chatty", "-c", "side", "--", "sh", "-c", "echo out; echo err >&2")
    assert both.stdout == "out\n" and "err" in both.stderr
    failed = cluster.kubectl("exec", "chatty", "-c", "app", "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3, failed.stderr
    piped = cluster.kubectl(
        "exec", "-i", "chatty", "-c", "app", "--", "sh", "-c", "tr a-z A-Z", input="abc\ndef\n"
    )
    assert piped.stdout == "ABC\nDEF\n"
    # The process runs in the pod's container: it sees the pod's hostname.
    assert cluster.kubectl("exec", "chatty", "-c", "app", "--", "hostname").stdout.strip() == "chatty"


def test_exec_errors(cluster: Cluster) -> None:
    missing = cluster.kubectl("exec", "chatty", "-c", "nope", "--", "true", check=False)
    assert missing.returncode != 0 and "container nope is not valid for pod chatty" in missing.stderr
    no_such = cluster.kubectl("exec", "chatty", "-c", "app", "--", "/no/such/binary", check=False)
    assert no_such.returncode != 0
    resp = cluster.api("POST", f"/api/v1/namespaces/{NS}/pods/chatty/exec", container="app")
    assert resp.status_code == 400
    assert resp.json()["message"] == "you must specify at least one command for the container"
