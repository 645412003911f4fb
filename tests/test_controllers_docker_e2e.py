"""A rolling update with no failed request, on real Docker: the example web server (examples/
web-deployment.yaml, busybox httpd serving a ConfigMap) run by the scheduler, the controller
manager and a Docker node agent as processes, while a client keeps requesting it directly at the
pod IPs the Endpoints controller publishes (following them through a watch), round robin.

The Deployment is rolled to a new version (maxUnavailable 0, one surge pod): a new pod only
joins the Endpoints once its readiness probe passes, an old one leaves them the moment it is
marked for deletion, and its preStop pause (kube's advice) keeps it serving while clients learn
that. The test fails on any failed request.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from kvstore.localcluster import free_port
from node.runtime import DockerRuntime
from tests.apiserver_fixture import ROOT, ApiServerProcess, _env, apiserver  # noqa: F401 - pytest fixture
from tests.cluster import delete_namespace_and_wait
from tests.dockerutil import wait_for

pytest_plugins = ("tests.dockerutil",)
pytestmark = [pytest.mark.docker, pytest.mark.slow]

NS = "webdemo"
NODE = "ctl-docker-node"
EXAMPLES = Path(ROOT) / "examples"


def load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def web_deployment() -> dict:
    """The example, with a 1 s readiness period and a preStop pause (so a pod leaving the
    Endpoints keeps serving the clients that have not heard yet), rolled one pod at a time."""
    d = load("web-deployment.yaml")
    spec = d["spec"]
    spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    container = spec["template"]["spec"]["containers"][0]
    container["readinessProbe"]["periodSeconds"] = 1
    container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "2"]}}}
    spec["template"]["spec"]["terminationGracePeriodSeconds"] = 10
    return d


def http_get(ip: str, port: int, timeout: float = 3.0) -> str:
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise OSError(f"bad answer: {head[:80]!r}")
    return body.decode(errors="replace")


class EndpointsClient:
    """Follows `endpoints/web` through a watch and requests the ready addresses round robin."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.addresses: list[str] = []
        self.served: Counter[str] = Counter()
        self.errors: list[str] = []
        self.timeline: list[tuple[str, list[str]]] = []  # when the address list changed, and to what
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch, daemon=True),
            threading.Thread(target=self._load, daemon=True),
        ]

    def _set(self, ep: dict) -> None:
        self.addresses = sorted(
            f"{a['ip']}:{p['port']}"
            for s in ep.get("subsets") or []
            for a in s.get("addresses") or []
            for p in s.get("ports") or []
        )
        self.timeline.append(
            (time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}", self.addresses)
        )

    def _watch(self) -> None:
        url = f"{self.server}/api/v1/namespaces/{NS}/endpoints"
        while not self._stop.is_set():
            try:
                listing = requests.get(url, params={"fieldSelector": "metadata.name=web"}, timeout=5).json()
                for ep in listing["items"]:
                    self._set(ep)
                params = {
                    "watch": "1",
                    "fieldSelector": "metadata.name=web",
                    "resourceVersion": listing["metadata"]["resourceVersion"],
                }
                with requests.get(url, params=params, stream=True, timeout=(5, 60)) as resp:
                    for line in resp.iter_lines():
                        if self._stop.is_set():
                            return
                        if line:
                            ev = json.loads(line)
                            if ev["type"] == "DELETED":
                                self.addresses = []
                            elif ev["type"] in ("ADDED", "MODIFIED"):
                                self._set(ev["object"])
            except (requests.RequestException, ValueError, KeyError):
                time.sleep(0.1)  # pacing of this background watcher's reconnects

    def _load(self) -> None:
        turn = itertools.count()
        while not self._stop.is_set():
            addrs = self.addresses
            if not addrs:
                time.sleep(0.02)  # pacing: the prober has no backend yet
                continue
            target = addrs[next(turn) % len(addrs)]
            ip, port = target.rsplit(":", 1)
            try:
                http_get(ip, int(port))
                self.served[ip] += 1
            except OSError as e:
                stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
                self.errors.append(f"{stamp} {target}: {e!r}")
            time.sleep(0.005)  # pacing of the prober's requests, not a wait for an outcome

    def __enter__(self) -> EndpointsClient:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    @property
    def total(self) -> int:
        return sum(self.served.values()) + len(self.errors)


@pytest.fixture
def control_plane(
    apiserver: ApiServerProcess,  # noqa: F811 - the module's fixture
    docker_client,
    grove_images,
) -> Iterator[list[subprocess.Popen]]:
    workdir = Path(tempfile.mkdtemp(prefix="grove-ctl-docker-"))
    procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(name: str, module: str, *args: str) -> None:
        log = workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT)  # fmt: skip
        procs.append((name, proc, log))

    def check() -> None:
        for name, proc, log in procs:
            assert proc.poll() is None, f"{name} exited:\n{log.read_text(errors='replace')[-3000:]}"

    try:
        start("scheduler", "orchestrator.scheduler.cli", "--server", apiserver.url, "--no-leader-elect")
        start(
            "controllers",
            "orchestrator.controllers.cli",
            "--server",
            apiserver.url,
            "--no-leader-elect",
            "--port",
            "0",
        )
        start("node", "node.cli", "--server", apiserver.url, "--name", NODE, "--runtime", "docker",
              "--node-ip", "127.0.0.1", "--address", "127.0.0.1", "--port", str(free_port()),
              "--root-dir", str(workdir / "node"))  # fmt: skip

        def node_ready() -> bool:
            check()
            r = requests.get(f"{apiserver.url}/api/v1/nodes/{NODE}", timeout=5)
            conds = r.json().get("status", {}).get("conditions", []) if r.ok else []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        wait_for(node_ready, 60, "the Docker node to be Ready")
        yield [p for _, p, _ in procs]
        check()
    finally:
        try:
            delete_namespace_and_wait(apiserver.url, NS, 40)
        finally:
            for _, proc, _ in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for _, proc, _ in reversed(procs):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            runtime = DockerRuntime(docker_client)
            for uid, pc in runtime.list_pod_containers().items():
                if pc.namespace == NS:
                    runtime.remove_pod(uid)
            shutil.rmtree(workdir, ignore_errors=True)


def test_rolling_update_through_endpoints_without_a_failed_request(
    apiserver: ApiServerProcess,  # noqa: F811 - the module's fixture
    control_plane,
) -> None:
    requests.post(
        f"{apiserver.url}/api/v1/namespaces", json={"metadata": {"name": NS}}, timeout=10
    ).raise_for_status()
    objs = [load("web-configmap.yaml"), web_deployment(), load("web-service.yaml")]
    apiserver.kubectl(
        "apply", "-n", NS, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
    )
    apiserver.kubectl("rollout", "status", "-n", NS, "deployment/web", "--timeout=90s", timeout=120)

    def pods() -> list[dict]:
        return requests.get(f"{apiserver.url}/api/v1/namespaces/{NS}/pods", timeout=5).json()["items"]

    old_ips = {p["status"]["podIP"] for p in pods()}
    assert len(old_ips) == 3

    with EndpointsClient(apiserver.url) as client:
        wait_for(
            lambda: len(client.addresses) == 3 and client.total >= 30,
            30,
            "the client to reach all three pods",
        )
        assert set(client.served) == old_ips
        # The new version: a changed pod template (an env variable), as `kubectl set env` does.
        apiserver.kubectl("set", "env", "-n", NS, "deployment/web", "WEB_VERSION=2")
        apiserver.kubectl("rollout", "status", "-n", NS, "deployment/web", "--timeout=120s", timeout=150)

        def rolled() -> bool:
            live = [p for p in pods() if not p["metadata"].get("deletionTimestamp")]
            envs = [{e["name"] for e in p["spec"]["containers"][0].get("env") or []} for p in live]
            return len(live) == 3 and all("WEB_VERSION" in e for e in envs)

        wait_for(rolled, 60, "three pods of the new version")
        new_ips = {p["status"]["podIP"] for p in pods() if not p["metadata"].get("deletionTimestamp")}
        wait_for(
            lambda: {a.rsplit(":", 1)[0] for a in client.addresses} == new_ips,
            30,
            "endpoints on the new pods",
        )
        before = {ip: client.served[ip] for ip in new_ips}
        wait_for(
            lambda: all(client.served[ip] > before[ip] + 5 for ip in new_ips),
            30,
            "answers from every new pod",
        )
    assert not client.errors, (
        f"{len(client.errors)} of {client.total} requests failed: {client.errors[:5]}\n"
        f"endpoint changes (time, addresses): {client.timeline}"
    )
    assert old_ips <= set(client.served) and new_ips <= set(client.served)
    assert client.total > 100, client.served
    history = apiserver.kubectl("rollout", "history", "-n", NS, "deployment/web").stdout
    assert [ln.split()[0] for ln in history.splitlines()[2:] if ln.strip()] == ["1", "2"], history
