"""Real processes for end-to-end tests: children with their logs, a control plane, node agents.

`Proc` is one `python -m <module>` child logging to a work dir; `Cluster` runs the scheduler,
controller managers and hollow node agents against a test's API server and reads and writes
objects over HTTP and kubectl; `control_plane` is the usual set-up of a module (one scheduler, one
leading manager, hollow nodes), torn down pass or fail. `NodeAgentProcess` is one `grove node`
with a root dir of its own; `remove_pod_containers` removes the Docker containers one left
behind. Tests wait on conditions with deadlines (`tests.waiting`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import docker
import docker.errors
import requests

from kvstore.localcluster import free_port
from node.images import BUSYBOX_IMAGE
from node.runtime.types import LABEL_POD_UID
from tests import waiting
from tests.apiserver_fixture import ROOT, ApiServerProcess, _env

DEADLINE = 30.0
LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
MANAGER_FLAGS = [
    "--leader-elect-lease-duration", "2s", "--leader-elect-renew-deadline", "1500ms",
    "--leader-elect-retry-period", "300ms", "--node-monitor-grace-period", "3s",
    "--node-monitor-period", "500ms", "--node-startup-grace-period", "10s",
    "--pod-gc-orphan-quarantine", "1s", "-v",
]  # fmt: skip


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Signal a child that still runs and reap it; kill it when it has not exited in `timeout` s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE, **kw: Any) -> Any:
    return waiting.wait_for(cond, what, timeout, **kw)


class Proc:
    """A `python -m <module> ...` child with its log in the work dir."""

    def __init__(self, name: str, workdir: str, module: str, *args: str) -> None:
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT,
            )  # fmt: skip

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        """Fail with the tail of its log when it exited."""
        if not self.alive():
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig)


class Cluster:
    def __init__(self, server: ApiServerProcess, workdir: str) -> None:
        self.server = server
        self.url = server.url
        self.workdir = workdir
        self.http = requests.Session()
        self.procs: list[Proc] = []
        self.managers: dict[str, tuple[Proc, int]] = {}
        self.nodes: dict[str, Proc] = {}

    # --- processes ------------------------------------------------------------------------------

    def start(self, name: str, module: str, *args: str) -> Proc:
        proc = Proc(name, self.workdir, module, *args)
        self.procs.append(proc)
        return proc

    def start_manager(self, name: str) -> None:
        port = free_port()
        proc = self.start(
            f"manager-{name}", "orchestrator.controllers.cli", "--server", self.url, "--name", name,
            "--port", str(port), *MANAGER_FLAGS,
        )  # fmt: skip
        self.managers[name] = (proc, port)

    def start_nodes(self, prefix: str, count: int = 1) -> Proc:
        root = os.path.join(self.workdir, f"root-{prefix}")
        proc = self.start(
            f"nodes-{prefix}", "node.cli", "--server", self.url, "--runtime", "fake", "--count", str(count),
            "--name-prefix", prefix, "--port", "0", "--root-dir", root, "--node-ip", "127.0.0.1",
            "--node-lease-duration-seconds", "2", "--node-status-update-frequency", "1",
        )  # fmt: skip
        self.nodes[prefix] = proc
        names = [f"{prefix}{i}" for i in range(count)]
        wait_for(lambda: all(self.node_ready(n) for n in names), f"nodes {names} Ready", check=self.check)
        return proc

    def check(self) -> None:
        for p in self.procs:
            if not getattr(p, "expected_dead", False):
                p.check()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def leader(self) -> str:
        holder = self.get(LEASE, missing_ok=True)
        return (holder or {}).get("spec", {}).get("holderIdentity") or ""

    # --- API ------------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 202)) -> dict:
        resp = self.http.request(method, self.url + path, json=body, timeout=10)
        assert resp.status_code in ok, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def get(self, path: str, missing_ok: bool = False) -> dict | None:
        resp = self.http.get(self.url + path, timeout=10)
        if resp.status_code == 404 and missing_ok:
            return None
        assert resp.ok, f"GET {path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60) -> str:
        return self.server.kubectl(*args, input=input, check=check, timeout=timeout).stdout

    def apply(self, ns: str, *objs: dict) -> None:
        self.kubectl(
            "apply",
            "-n",
            ns,
            "-f",
            "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
        )

    def namespace(self, name: str) -> str:
        self.call(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        return name

    def node_ready(self, name: str) -> bool:
        node = self.get(f"/api/v1/nodes/{name}", missing_ok=True)
        conds = (node or {}).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def pods(self, ns: str, selector: str = "") -> list[dict]:
        q = f"?labelSelector={selector}" if selector else ""
        return self.get(f"/api/v1/namespaces/{ns}/pods{q}")["items"]

    def live_pods(self, ns: str, selector: str = "") -> list[dict]:
        return [p for p in self.pods(ns, selector) if not p["metadata"].get("deletionTimestamp")]

    def running(self, ns: str, selector: str = "") -> list[dict]:
        return [p for p in self.live_pods(ns, selector) if ready(p)]

    def obj(self, ns: str, kind: str, name: str) -> dict | None:
        base = {
            "deployment": "/apis/apps/v1",
            "replicaset": "/apis/apps/v1",
            "daemonset": "/apis/apps/v1",
        }.get(kind, "/api/v1")
        plural = {"endpoints": "endpoints"}.get(kind, kind + "s")
        return self.get(f"{base}/namespaces/{ns}/{plural}/{name}", missing_ok=True)

    def events(self, ns: str, reason: str) -> list[dict]:
        return [e for e in self.get(f"/api/v1/namespaces/{ns}/events")["items"] if e["reason"] == reason]


def ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", [])
    )


@contextlib.contextmanager
def control_plane(
    apiserver: ApiServerProcess, label: str, node_prefix: str, nodes: int = 2
) -> Iterator[Cluster]:
    """A scheduler, a controller manager `cm` that leads, and `nodes` hollow nodes named
    `<node_prefix><i>`, all Ready; stopped and their work dir removed at the end."""
    workdir = tempfile.mkdtemp(prefix=f"grove-{label}-")
    c = Cluster(apiserver, workdir)
    try:
        c.start("scheduler", "orchestrator.scheduler.cli", "--server", apiserver.url, "--no-leader-elect")
        c.start_manager("cm")
        wait_for(lambda: c.leader() == "cm", "the controller manager to lead", check=c.check)
        c.start_nodes(node_prefix, nodes)
        yield c
    finally:
        c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def delete_namespace_and_wait(api_url: str, namespace: str, timeout: float = 40.0) -> bool:
    """Best-effort cleanup: delete a namespace and wait until its pods are gone (their containers
    stopped by the agents); True when they went in time."""
    requests.delete(f"{api_url}/api/v1/namespaces/{namespace}", timeout=10)

    def no_pods() -> bool:
        r = requests.get(f"{api_url}/api/v1/namespaces/{namespace}/pods", timeout=5)
        return not r.ok or not r.json().get("items")

    return bool(waiting.poll(no_pods, timeout, errors=(requests.RequestException,))[0])


def busybox_container(name: str, script: str) -> dict[str, Any]:
    """A container running `script` under sh in grove's offline busybox image."""
    return {
        "name": name,
        "image": BUSYBOX_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script],
    }


class NodeAgentProcess:
    """One `grove node` process: a root dir of its own (removed at stop), its log in the API
    server's work dir, status every second and no events; `args` add the runtime, names, ..."""

    def __init__(self, server: ApiServerProcess, label: str, args: list[str]) -> None:
        self.root = tempfile.mkdtemp(prefix=f"grove-node-{label}-")
        self.log_path = os.path.join(server.workdir, f"node-{label}.log")
        self.args = [
            sys.executable, "-m", "node.cli", "--server", server.url, "--port", "0",
            "--node-ip", "127.0.0.1", "--root-dir", self.root, "--node-status-update-frequency", "1",
            "--no-events", *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(),
                cwd=ROOT,
            )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the node agent exited ({self.proc.returncode}):\n{self.log()[-3000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(self.root, ignore_errors=True)


def remove_pod_containers(client: docker.DockerClient, uids: Iterable[str]) -> None:
    """Remove every container of these pods (what an agent under test did not get to remove)."""
    for uid in uids:
        for ctr in client.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"}):
            try:
                ctr.remove(force=True)
            except docker.errors.NotFound:
                pass
