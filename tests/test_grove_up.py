"""`grove up` end to end, as a user runs it: one subprocess that starts every part.

With hollow nodes (`--runtime fake`): pods land where resources, nodeSelector, taints and
anti-affinity allow, one that fits nowhere gets FailedScheduling with Kubernetes' summary,
`grove down` stops every process, and a second `grove up` on the same state dir serves the
same objects. With Docker: the web server example from `examples/` runs and a pod answers HTTP
on its IP, and `grove down` removes the pods' containers. Every test stops its cluster (and
removes its containers) even when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from grove.up import COMPONENTS_FILE, STATUS_FILE, remove_pod_containers
from kvstore.localcluster import free_port
from tests import waiting

pytest_plugins = ("tests.dockerutil",)

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
UP_TIMEOUT = 90.0
DEADLINE = 30.0


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE, **kw: Any) -> Any:
    return waiting.wait_for(cond, what, timeout, **kw)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has no cmdline: it is gone for our purposes
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


class GroveUp:
    """One `grove up` subprocess on a state dir, and the API it serves."""

    def __init__(self, state_dir: Path, api_port: int, *args: str) -> None:
        self.state_dir = state_dir
        self.api_port = api_port
        self.args = args
        self.url = f"http://127.0.0.1:{api_port}"
        self.http = requests.Session()
        self.proc: subprocess.Popen | None = None
        self.out_path = state_dir.parent / f"{state_dir.name}-up.out"

    def start(self) -> dict[str, Any]:
        """Run `grove up` and wait for its status file; returns the status."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        status_path = self.state_dir / STATUS_FILE
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "grove.cli", "up", "--state-dir", str(self.state_dir),
                 "--api-port", str(self.api_port), *self.args],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT,
            )  # fmt: skip

        def up() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"grove up exited with {self.proc.returncode}:\n{self.output()}")
            if status_path.exists():
                status = json.loads(status_path.read_text())
                return status if status.get("pid") == self.proc.pid else None
            return None

        status = wait_for(up, "grove up to report the cluster Ready", UP_TIMEOUT)
        self.url = status["api_url"]
        if status.get("ca_file"):  # a secured cluster: call the API as its admin
            self.http.trust_env = False  # REQUESTS_CA_BUNDLE would win over `verify`
            self.http.verify = status["ca_file"]
            self.http.cert = (status["client_cert"], status["client_key"])
        return status

    def output(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def component_pids(self) -> dict[str, int]:
        return json.loads((self.state_dir / COMPONENTS_FILE).read_text())

    def down(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "grove.cli", "down", "--state-dir", str(self.state_dir)],
            capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120,
        )  # fmt: skip

    def ensure_stopped(self) -> None:
        """Teardown, pass or fail: `grove down`, then anything still alive is killed."""
        pids: dict[str, int] = {}
        try:
            pids = self.component_pids()
        except (OSError, ValueError):
            pass
        if self.proc is not None and self.proc.poll() is None:
            self.down()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids.values():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    # --- the API ------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201), **kw: Any
    ) -> dict:
        resp = self.http.request(method, self.url + path, json=body, timeout=10, **kw)
        assert resp.status_code in ok, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def patch(self, path: str, body: dict) -> dict:
        resp = self.http.patch(
            self.url + path, data=json.dumps(body), timeout=10,
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip
        assert resp.status_code == 200, f"PATCH {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def pod(self, name: str, ns: str = "default") -> dict:
        return self.call("GET", f"/api/v1/namespaces/{ns}/pods/{name}")

    def node_of(self, name: str) -> str | None:
        return self.pod(name)["spec"].get("nodeName")

    def events(self, name: str, reason: str) -> list[dict]:
        items = self.call("GET", "/api/v1/namespaces/default/events")["items"]
        return [e for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason]

    def kubectl(self, *args: str) -> str:
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.state_dir / "kubeconfig"), *args],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
            env={**os.environ, "HOME": str(self.state_dir), "KUBECACHEDIR": str(self.state_dir / "kube-cache")},
        )  # fmt: skip
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr or done.stdout}"
        return done.stdout


@pytest.fixture
def grove_up(tmp_path: Path) -> Iterator[Callable[..., GroveUp]]:
    made: list[GroveUp] = []

    def make(*args: str, state: str = "state") -> GroveUp:
        g = GroveUp(tmp_path / state, free_port(), *args)
        made.append(g)
        return g

    try:
        yield make
    finally:
        for g in made:
            g.ensure_stopped()


def _pod(name: str, cpu: str = "100m", labels: dict | None = None, **spec: Any) -> dict:
    container = {"name": "c", "image": "grove/busybox:1.35", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 0, **spec},
    }


TOLERATE_INFRA = [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]
SPREAD = {
    "podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "spread"}}, "topologyKey": "kubernetes.io/hostname"}
        ]
    }
}


def test_grove_up_fake_nodes_schedule_and_survive_a_restart(grove_up: Callable[..., GroveUp]) -> None:
    g = grove_up("--runtime", "fake", "--nodes", "3")
    status = g.start()
    assert status["nodes"] == ["hollow-0", "hollow-1", "hollow-2"]
    assert status["timings"]["ready"] > 0
    assert status["timings"]["first_pod"] is not None, g.output()
    nodes = g.call("GET", "/api/v1/nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["hollow-0", "hollow-1", "hollow-2"]
    assert all(n["status"]["allocatable"]["cpu"] == "4" for n in nodes)
    # kubectl works with the kubeconfig grove up wrote.
    assert "hollow-2" in g.kubectl("get", "nodes")
    # The cluster is secured: HTTPS with the cluster's CA, and no answer without a certificate.
    assert status["api_url"].startswith("https://")
    assert status["store"] and all(u.startswith("https://") for u in status["store"])
    with requests.Session() as bare:  # the store takes only clients with a certificate from the CA
        bare.trust_env = False
        with pytest.raises(requests.exceptions.RequestException):
            bare.get(status["store"][0] + "/v2/keys/", verify=status["ca_file"], timeout=10)
        bare.cert = (str(g.state_dir / "pki" / "apiserver-etcd-client.crt"),
                     str(g.state_dir / "pki" / "apiserver-etcd-client.key"))  # fmt: skip
        assert bare.get(status["store"][0] + "/v2/keys/", verify=status["ca_file"], timeout=10).ok
    assert "kubernetes-admin" in g.kubectl("auth", "whoami")
    with requests.Session() as bare:
        bare.trust_env = False
        anonymous = bare.get(status["api_url"] + "/api/v1/nodes", verify=status["ca_file"], timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["reason"] == "Unauthorized"
    for identity in ("kube-scheduler", "kube-controller-manager", "kube-proxy", "node-hollow-0"):
        assert (g.state_dir / "pki" / f"{identity}.kubeconfig").stat().st_mode & 0o077 == 0

    g.patch("/api/v1/nodes/hollow-0", {"metadata": {"labels": {"disk": "ssd"}}})
    g.patch(
        "/api/v1/nodes/hollow-1",
        {"spec": {"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]}},
    )

    def create(pod: dict) -> None:
        g.call("POST", "/api/v1/namespaces/default/pods", pod)

    # nodeSelector: only hollow-0 has the label.
    create(_pod("ssd", nodeSelector={"disk": "ssd"}))
    # resources: two 3-cpu pods cannot share a 4-cpu node, and hollow-1's taint keeps them off it.
    create(_pod("big-a", cpu="3"))
    create(_pod("big-b", cpu="3"))
    # taints: a toleration lets a pod onto hollow-1.
    create(_pod("infra", tolerations=TOLERATE_INFRA, nodeSelector={"kubernetes.io/hostname": "hollow-1"}))
    # anti-affinity: one "spread" pod per node; the fourth has nowhere to go.
    for i in range(3):
        create(
            _pod(
                f"spread-{i}",
                cpu="10m",
                labels={"app": "spread"},
                tolerations=TOLERATE_INFRA,
                affinity=SPREAD,
            )
        )
    # fits nowhere: more cpu than any node has.
    create(_pod("huge", cpu="8"))

    placed = wait_for(
        lambda: (
            (
                nodes := {
                    n: g.node_of(n)
                    for n in ("ssd", "big-a", "big-b", "infra", "spread-0", "spread-1", "spread-2")
                }
            )
            and all(nodes.values())
            and nodes
        ),
        "the schedulable pods to be bound",
    )
    assert placed["ssd"] == "hollow-0"
    assert {placed["big-a"], placed["big-b"]} == {"hollow-0", "hollow-2"}
    assert placed["infra"] == "hollow-1"
    assert sorted(placed[f"spread-{i}"] for i in range(3)) == ["hollow-0", "hollow-1", "hollow-2"]

    create(_pod("spread-3", cpu="10m", labels={"app": "spread"}, tolerations=TOLERATE_INFRA, affinity=SPREAD))
    huge = wait_for(lambda: g.events("huge", "FailedScheduling"), "FailedScheduling for the 8-cpu pod")
    assert "0/3 nodes are available" in huge[0]["message"]
    assert "Insufficient cpu" in huge[0]["message"]
    spread = wait_for(
        lambda: g.events("spread-3", "FailedScheduling"), "FailedScheduling for the fourth spread pod"
    )
    assert "0/3 nodes are available" in spread[0]["message"]
    assert "anti-affinity" in spread[0]["message"]
    cond = next(c for c in g.pod("huge")["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert g.node_of("huge") is None and g.node_of("spread-3") is None
    # The hollow nodes run what they were given.
    wait_for(lambda: g.pod("ssd")["status"].get("phase") == "Running", "the ssd pod to be Running")
    before = {n: (g.pod(n)["metadata"]["uid"], g.node_of(n)) for n in placed}

    pids = g.component_pids()
    assert {"apiserver", "scheduler", "kv0", "kv1", "kv2", "nodes-fake"} <= set(pids)
    done = g.down()
    assert done.returncode == 0, done.stderr
    assert g.proc is not None and g.proc.wait(timeout=30) == 0, g.output()
    wait_for(lambda: not any(_alive(p) for p in pids.values()), "every process grove up started to exit", 15)
    assert not (g.state_dir / STATUS_FILE).exists()
    assert g.down().returncode == 1  # nothing left to stop

    again = grove_up("--runtime", "fake", "--nodes", "3")
    again.start()
    after = {n: (again.pod(n)["metadata"]["uid"], again.node_of(n)) for n in placed}
    assert after == before
    node0 = again.call("GET", "/api/v1/nodes/hollow-0")
    assert node0["metadata"]["labels"]["disk"] == "ssd"
    assert again.node_of("huge") is None
    wait_for(lambda: again.pod("ssd")["status"].get("phase") == "Running", "the ssd pod to be Running again")


def test_grove_up_docker_runs_the_web_example(
    grove_up: Callable[..., GroveUp], docker_client: Any, grove_images: list[str]
) -> None:
    g = grove_up("--runtime", "docker", "--nodes", "2")
    uids: set[str] = set()
    try:
        status = g.start()
        assert status["nodes"] == ["grove-node-0", "grove-node-1"]
        examples = ROOT / "examples"
        g.kubectl("apply", "-f", str(examples / "web-configmap.yaml"), "-f", str(examples / "web-deployment.yaml"),
                  "-f", str(examples / "web-service.yaml"))  # fmt: skip

        def ready_pods() -> list[dict] | None:
            items = g.call("GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")["items"]
            uids.update(p["metadata"]["uid"] for p in items)
            ready = [
                p for p in items
                if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            ]  # fmt: skip
            return ready if len(ready) == 3 else None

        pods = wait_for(ready_pods, "the 3 web pods to be Ready", 120)
        assert {p["spec"]["nodeName"] for p in pods} <= {"grove-node-0", "grove-node-1"}
        ip = pods[0]["status"]["podIP"]

        def answer() -> str | None:
            try:
                with urllib.request.urlopen(f"http://{ip}:8080/", timeout=3) as r:
                    return r.read().decode()
            except OSError:
                return None

        body = wait_for(answer, f"an HTTP answer from the pod at {ip}", 30)
        assert "Hello from grove" in body
        assert docker_client.containers.list(
            filters={"label": f"io.grove.pod.uid={pods[0]['metadata']['uid']}"}
        )

        done = g.down()
        assert done.returncode == 0, done.stderr
        left = [
            c.name for c in docker_client.containers.list(all=True, filters={"label": "io.grove.pod.uid"})
            if c.labels.get("io.grove.pod.uid") in uids
        ]  # fmt: skip
        assert left == [], f"grove down left containers: {left}"
    finally:
        g.ensure_stopped()
        remove_pod_containers(uids)


def test_grove_up_insecure_is_plain_http_without_credentials(grove_up: Callable[..., GroveUp]) -> None:
    g = grove_up("--runtime", "fake", "--nodes", "1", "--insecure", "--no-first-pod")
    status = g.start()
    assert status["api_url"].startswith("http://") and status["ca_file"] == ""
    assert all(u.startswith("http://") for u in status["store"])
    with requests.Session() as bare:
        bare.trust_env = False
        nodes = bare.get(status["api_url"] + "/api/v1/nodes", timeout=10).json()["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["hollow-0"]
    assert not (g.state_dir / "pki").exists()
    assert "hollow-0" in g.kubectl("get", "nodes")


def test_percentile_is_nearest_rank() -> None:
    from bench.schedule import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_bench_schedule_binds_every_pod(tmp_path: Path) -> None:
    """`grove bench schedule` on a small cluster of its own: every pod bound, results written."""
    out = tmp_path / "schedule.json"
    done = subprocess.run(
        [sys.executable, "-m", "grove.cli", "bench", "schedule", "--nodes", "4", "--pods", "40", "--json", str(out)],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["bound"] == 40 and result["nodes"] == 4 and result["unschedulable"] == 0
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["timeline"][-1][1:] == [40, 40]
    assert "scheduling 40 pods on 4 nodes" in done.stdout
