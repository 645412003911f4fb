"""`kubectl top nodes` and `kubectl top pods` against grove's API server (metrics.k8s.io/v1beta1).

One store cluster + API server for the module, and real node agents registered with it: a
`grove node --runtime fake --count 2` process (hollow nodes, whose containers report fixed small
usage) and a `grove node` with the Docker runtime running a busybox pod. A third Node object
advertises an agent endpoint where nothing listens: it must be left out, not fail the request.
kubectl 1.32 finds the group through discovery and reads NodeMetrics/PodMetrics as it does from
metrics-server. Every process, container and temp dir is removed at the end, pass or fail.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
import requests

from kvstore.localcluster import free_port
from tests import waiting
from tests.apiserver_fixture import (
    ApiServerProcess,
    apiserver,  # noqa: F401 - the module's store + API server
)
from tests.cluster import NodeAgentProcess, busybox_container, remove_pod_containers

pytest_plugins = ("tests.dockerutil",)
pytestmark = pytest.mark.slow

NS = "default"
DOCKER_NODE = "top-docker-node"
HOLLOW = ["top-hollow-0", "top-hollow-1"]
GHOST = "top-ghost"  # a Node whose agent does not answer
DEADLINE = 60.0

NUMBERS_NODE = re.compile(r"^(\S+)\s+(\d+)m\s+(\d+|<unknown>)%?\s+(\d+)Mi\s+(\d+|<unknown>)%?\s*$")
NUMBERS_POD = re.compile(r"^(\S+)\s+(\d+)m\s+(\d+)Mi\s*$")


def wait_for(cond: Callable[[], Any], what: str, check: Callable[[], None] | None = None, **kw: Any) -> Any:
    return waiting.wait_for(cond, what, DEADLINE, check=check, **kw)


class Cluster:
    def __init__(self, server: ApiServerProcess) -> None:
        self.server = server
        self.http = requests.Session()
        self.uids: list[str] = []
        self.pods: list[str] = []

    def api(self, method: str, path: str, body: Any = None, **params: Any) -> requests.Response:
        return self.http.request(method, self.server.url + path, json=body, params=params, timeout=30)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.server.kubectl(*args, check=check)

    def node_ready(self, name: str) -> bool:
        resp = self.api("GET", f"/api/v1/nodes/{name}")
        conditions = resp.json().get("status", {}).get("conditions") or [] if resp.status_code == 200 else []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def run_pod(self, name: str, node: str, containers: list[dict[str, Any]], labels: dict[str, str]) -> None:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": containers, "terminationGracePeriodSeconds": 1},
        }
        resp = self.api("POST", f"/api/v1/namespaces/{NS}/pods", pod)
        assert resp.status_code == 201, resp.text
        self.uids.append(resp.json()["metadata"]["uid"])
        self.pods.append(name)

    def running(self, name: str) -> bool:
        resp = self.api("GET", f"/api/v1/namespaces/{NS}/pods/{name}")
        return resp.status_code == 200 and (resp.json().get("status") or {}).get("phase") == "Running"


@pytest.fixture(scope="module")
def cluster(
    apiserver: ApiServerProcess,  # noqa: F811
    grove_images: list[str],
    docker_client: docker.DockerClient,
) -> Iterator[Cluster]:
    c = Cluster(apiserver)
    hollow = NodeAgentProcess(
        apiserver, "hollow", ["--runtime", "fake", "--count", "2", "--name-prefix", "top-hollow-"]
    )
    real = NodeAgentProcess(apiserver, "docker", ["--name", DOCKER_NODE])
    agents = (hollow, real)
    try:
        for agent in agents:
            agent.start()

        def check() -> None:
            for agent in agents:
                agent.check()

        for node in [*HOLLOW, DOCKER_NODE]:
            wait_for(lambda n=node: c.node_ready(n), f"node {node} Ready", check)
        ghost = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": GHOST, "labels": {"grove.io/hollow": "true"}},
        }
        assert c.api("POST", "/api/v1/nodes", ghost).status_code == 201
        status = {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": free_port()}},  # nothing listens there
                "allocatable": {"cpu": "1", "memory": "1Gi"},
            }
        }
        resp = c.http.patch(
            f"{apiserver.url}/api/v1/nodes/{GHOST}/status",
            json=status,
            headers={"Content-Type": "application/merge-patch+json"},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text

        c.run_pod("hollow-web", HOLLOW[0], [{"name": "app", "image": "grove/anything:1"}], {"app": "web"})
        c.run_pod("hollow-db", HOLLOW[1], [{"name": "db", "image": "grove/anything:1"}], {"app": "db"})
        c.run_pod(
            "real-web",
            DOCKER_NODE,
            [
                busybox_container("app", "sleep 3600"),
                busybox_container("ticker", "while true; do echo . >/dev/null; sleep 0.2; done"),
            ],
            {"app": "real"},
        )
        c.run_pod("stranded", GHOST, [{"name": "app", "image": "grove/anything:1"}], {"app": "stranded"})
        for name in ("hollow-web", "hollow-db", "real-web"):
            wait_for(lambda n=name: c.running(n), f"pod {name} Running", check)
        yield c
    finally:
        try:
            for name in c.pods:
                c.api("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}", gracePeriodSeconds=0)
            if real.running():  # let the agent stop the real pod's containers
                waiting.poll(
                    lambda: c.api("GET", f"/api/v1/namespaces/{NS}/pods/real-web").status_code == 404, 20
                )
        finally:
            for agent in agents:
                agent.stop()
            remove_pod_containers(docker_client, c.uids)


def rows(output: str, pattern: re.Pattern[str]) -> dict[str, re.Match[str]]:
    """The data lines of a `kubectl top` table that carry numbers, by their first column."""
    found = {}
    for line in output.splitlines()[1:]:
        m = pattern.match(line)
        if m:
            found[m.group(1)] = m
    return found


def test_discovery_lists_the_metrics_group(cluster: Cluster) -> None:
    groups = cluster.api("GET", "/apis").json()["groups"]
    assert any(g["name"] == "metrics.k8s.io" for g in groups)
    out = cluster.kubectl("api-resources", "--api-group=metrics.k8s.io", "--no-headers").stdout
    names = sorted(line.split()[0] for line in out.splitlines() if line.strip())
    assert names == ["nodes", "pods"], out
    assert "metrics.k8s.io/v1beta1" in cluster.kubectl("api-versions").stdout


def test_top_nodes_lists_answering_nodes_and_leaves_out_the_silent_one(cluster: Cluster) -> None:
    wanted = {*HOLLOW, DOCKER_NODE}

    last: list[str] = [""]

    def listed() -> dict[str, re.Match[str]] | None:
        result = cluster.kubectl("top", "nodes", check=False)
        last[0] = result.stdout + result.stderr
        found = rows(result.stdout, NUMBERS_NODE) if result.returncode == 0 else {}
        return found if wanted <= found.keys() else None

    found = wait_for(listed, "kubectl top nodes to list every answering node", detail=lambda: last[0])
    assert GHOST not in found
    for name in wanted:
        assert found[name].group(3).isdigit(), found[name].group(0)  # a CPU(%) from the allocatable
    only_hollow = rows(cluster.kubectl("top", "nodes", "-l", "grove.io/hollow=true").stdout, NUMBERS_NODE)
    assert set(only_hollow) == set(HOLLOW)


def test_top_pods_with_containers_selectors_and_all_namespaces(cluster: Cluster) -> None:
    last: list[str] = [""]

    def listed() -> dict[str, re.Match[str]] | None:
        result = cluster.kubectl("top", "pods", "-n", NS, check=False)
        last[0] = result.stdout + result.stderr
        found = rows(result.stdout, NUMBERS_POD) if result.returncode == 0 else {}
        return found if {"hollow-web", "hollow-db", "real-web"} <= found.keys() else None

    found = wait_for(listed, "kubectl top pods to list the running pods", detail=lambda: last[0])
    assert "stranded" not in found  # its node's agent does not answer
    assert int(found["hollow-web"].group(3)) == 4  # the fake runtime's 4 MiB working set

    selected = rows(cluster.kubectl("top", "pods", "-l", "app=web").stdout, NUMBERS_POD)
    assert set(selected) == {"hollow-web"}

    containers = cluster.kubectl("top", "pods", "real-web", "--containers").stdout
    lines = [line.split() for line in containers.splitlines()]
    assert lines[0][:2] == ["POD", "NAME"], containers
    assert sorted(line[1] for line in lines[1:]) == ["app", "ticker"], containers
    assert all(re.fullmatch(r"\d+m", line[2]) and re.fullmatch(r"\d+Mi", line[3]) for line in lines[1:])

    everywhere = cluster.kubectl("top", "pods", "-A").stdout
    ns_rows = [line.split() for line in everywhere.splitlines()[1:]]
    assert [NS, "real-web"] in [r[:2] for r in ns_rows], everywhere

    table = cluster.kubectl("get", "pods.metrics.k8s.io", "real-web").stdout
    assert table.split()[:4] == ["NAME", "CPU", "MEMORY", "WINDOW"] and "real-web" in table, table


def test_no_metrics_at_all_says_not_available_yet(cluster: Cluster) -> None:
    result = cluster.kubectl("top", "nodes", "-l", "no-such=label", check=False)
    assert result.returncode != 0 and "metrics not available yet" in result.stderr, result.stderr
    result = cluster.kubectl("top", "pods", "-l", "app=stranded", check=False)
    # kubectl words it by the pod's age: "metrics not available yet" in its first two minutes.
    assert result.returncode != 0, result.stdout
    assert re.search(
        r"metrics not available yet|Metrics not available for pod default/stranded", result.stderr
    )
    result = cluster.kubectl("top", "pods", "stranded", check=False)
    assert result.returncode != 0 and "NotFound" in result.stderr, result.stderr


def test_read_only(cluster: Cluster) -> None:
    for method, path in (
        ("POST", "/apis/metrics.k8s.io/v1beta1/nodes"),
        ("DELETE", f"/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods/real-web"),
        ("GET", "/apis/metrics.k8s.io/v1beta1/pods?watch=true"),
    ):
        resp = cluster.http.request(method, cluster.server.url + path, json={}, timeout=30)
        assert resp.status_code == 405, (method, path, resp.text)
        body = resp.json()
        assert body["kind"] == "Status" and body["reason"] == "MethodNotAllowed", body
