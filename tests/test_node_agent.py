"""The node agent end to end: a real store cluster + API server, `grove node` as its own process,
pods on a real Docker Engine, kubectl 1.32 through the API server.

The agent runs with short back-offs (hidden flags) so crash loops and image pull retries show
within seconds; everything else uses Kubernetes' defaults. Each test works in its own namespace
and its pods are force-deleted afterwards (the agent then removes their containers).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import docker.errors
import pytest
import requests

pytest.register_assert_rewrite("tests.dockerutil")  # before its import: its asserts explain failures

from node.images import BUSYBOX_IMAGE  # noqa: E402
from node.runtime import LABEL_POD_NAMESPACE, LABEL_POD_UID, DockerRuntime  # noqa: E402
from node.runtime.spec import LABEL_NODE  # noqa: E402
from tests import apiserver_fixture, waiting  # noqa: E402
from tests.apiserver_fixture import KUBECTL, ROOT, ApiServerProcess  # noqa: E402
from tests.dockerutil import make_pod, wait_for  # noqa: E402

pytest_plugins = ("tests.dockerutil",)
apiserver = apiserver_fixture.apiserver  # the module-scoped store cluster + API server
pytestmark = [pytest.mark.docker, pytest.mark.slow]

NODE = "grove-e2e-node"
BB = BUSYBOX_IMAGE


# --- the agent process ----------------------------------------------------------------------------


class AgentProcess:
    """`grove node` against the test API server, restartable."""

    def __init__(self, server: ApiServerProcess, root: Path) -> None:
        self.server = server
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = root / "agent.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        mark = len(self.log())
        args = [
            sys.executable, "-m", "node.cli",
            "--server", self.server.url, "--name", NODE, "--node-ip", "127.0.0.1", "--port", "0",
            "--root-dir", str(self.root / "root"), "--node-lease-duration-seconds", "4",
            "--node-status-update-frequency", "1", "--housekeeping-interval", "1", "--sync-frequency", "5",
            "--crashloop-backoff-base", "1", "--crashloop-backoff-max", "4",
            "--image-pull-backoff-base", "1", "--image-pull-backoff-max", "2", "-v",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=ROOT)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

        def alive() -> None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"grove node exited with {self.proc.returncode}:\n{self.log()[-3000:]}")

        serving, _ = waiting.poll(
            lambda: re.search(r"serving on [\d.]+:(\d+)", self.log()[mark:]), timeout, check=alive
        )
        if serving is None:
            raise RuntimeError(f"grove node did not come up in {timeout}s:\n{self.log()[-3000:]}")
        self.port = int(serving.group(1))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Api:
    """Plain JSON requests to the API server."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()

    def get(self, path: str) -> dict[str, Any] | None:
        r = self.session.get(self.url + path, timeout=10)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        r = self.session.post(self.url + path, json=obj, timeout=10)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def delete(self, path: str, grace: int | None = None) -> None:
        body = {} if grace is None else {"gracePeriodSeconds": grace}
        r = self.session.delete(self.url + path, json=body, timeout=10)
        assert r.status_code in (200, 202, 404), r.text

    def pod(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/api/v1/namespaces/{ns}/pods/{name}")


@pytest.fixture(scope="module")
def agent(
    apiserver: ApiServerProcess, grove_images: list[str], docker_client: docker.DockerClient
) -> Iterator[AgentProcess]:
    root = Path(tempfile.mkdtemp(prefix="grove-node-e2e-"))
    proc = AgentProcess(apiserver, root)
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        print(proc.log()[-4000:])
        for c in docker_client.containers.list(
            all=True, filters={"label": LABEL_POD_NAMESPACE}, ignore_removed=True
        ):
            if (c.labels.get(LABEL_POD_NAMESPACE) or "").startswith("e2e-"):
                try:
                    c.remove(force=True)
                except docker.errors.NotFound:
                    pass
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def api(apiserver: ApiServerProcess) -> Api:
    return Api(apiserver.url)


@pytest.fixture
def ns(api: Api, agent: AgentProcess, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"e2e-{request.node.name[5:20].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:4]}".lower()
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        yield name
    finally:
        pods = api.get(f"/api/v1/namespaces/{name}/pods") or {"items": []}
        for p in pods["items"]:
            api.delete(f"/api/v1/namespaces/{name}/pods/{p['metadata']['name']}", grace=0)


def pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    pod = make_pod(name, containers, **spec)
    del pod["metadata"]["uid"]
    del pod["metadata"]["namespace"]
    pod["spec"]["nodeName"] = NODE
    return pod


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": BB, "command": ["sh", "-c", script], **extra}


def run_pod(api: Api, ns: str, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return api.create(f"/api/v1/namespaces/{ns}/pods", pod_manifest(name, containers, **spec))


def status_of(api: Api, ns: str, name: str) -> dict[str, Any]:
    pod = api.pod(ns, name)
    return (pod or {}).get("status") or {}


def cstatus(status: dict[str, Any], container: str) -> dict[str, Any]:
    for s in status.get("containerStatuses") or []:
        if s["name"] == container:
            return s
    return {}


def condition(status: dict[str, Any], ctype: str) -> str:
    return next((c["status"] for c in status.get("conditions") or [] if c["type"] == ctype), "")


def wait_ready(api: Api, ns: str, name: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (s := status_of(api, ns, name)).get("phase") == "Running"
            and condition(s, "Ready") == "True"
            and s
        ),
        timeout,
        f"pod {ns}/{name} Running and Ready",
    )


def logs(apiserver: ApiServerProcess, ns: str, name: str, *args: str) -> str:
    return apiserver.kubectl("-n", ns, "logs", name, *args).stdout


def containers_of(client: docker.DockerClient, uid: str) -> dict[str, Any]:
    return {c.id: c for c in client.containers.list(all=True, filters={"label": f"{LABEL_POD_UID}={uid}"})}


# --- the node -------------------------------------------------------------------------------------


def test_node_registers_with_capacity_info_and_a_fresh_lease(
    api: Api, agent: AgentProcess, apiserver: ApiServerProcess
) -> None:
    node = wait_for(lambda: api.get(f"/api/v1/nodes/{NODE}"), 10, "the Node")
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == NODE and labels["kubernetes.io/os"] == "linux"
    assert labels["kubernetes.io/arch"]
    status = node["status"]
    assert int(status["capacity"]["cpu"]) == os.cpu_count() and status["capacity"]["pods"] == "110"
    assert (
        status["capacity"]["memory"].endswith("Ki")
        and status["allocatable"]["memory"] == status["capacity"]["memory"]
    )
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert {"type": "Hostname", "address": NODE} in status["addresses"]
    info = status["nodeInfo"]
    assert info["kubeletVersion"] == "v1.32.0-grove" and info["containerRuntimeVersion"].startswith(
        "docker://"
    )
    assert info["osImage"] and info["kernelVersion"] and info["operatingSystem"] == "linux"
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == agent.port
    assert condition(status, "Ready") == "True"
    assert any(BB in image["names"] for image in status["images"])
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
    first = wait_for(lambda: api.get(lease_path), 10, "the Lease")
    assert first["spec"]["holderIdentity"] == NODE and first["spec"]["leaseDurationSeconds"] == 4
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Node"
    wait_for(
        lambda: api.get(lease_path)["spec"]["renewTime"] != first["spec"]["renewTime"], 10, "a lease renewal"
    )
    out = apiserver.kubectl("get", "node", NODE).stdout
    assert re.search(rf"{NODE}\s+Ready", out), out


# --- pods -----------------------------------------------------------------------------------------


def test_two_containers_share_localhost_and_an_empty_dir(
    api: Api,
    ns: str,
    apiserver: ApiServerProcess,
    docker_client: docker.DockerClient,
) -> None:
    mount = [{"name": "www", "mountPath": "/www"}]
    run_pod(
        api, ns, "web",
        [
            # Always: grove's offline images exist in no registry, so the local copy is used.
            {"name": "server", "image": BB, "imagePullPolicy": "Always", "command": ["httpd", "-f", "-p", "8080", "-h", "/www"], "volumeMounts": mount,
             "ports": [{"containerPort": 8080}]},
            shell("writer", "echo hello-from-writer > /www/index.html; "
                  "while true; do wget -qO- http://localhost:8080/index.html; sleep 1; done", volumeMounts=mount),
        ],
        volumes=[{"name": "www", "emptyDir": {}}],
    )  # fmt: skip
    status = wait_ready(api, ns, "web")
    assert status["podIP"].startswith("10.88.") and status["hostIP"] == "127.0.0.1"
    assert status["qosClass"] == "BestEffort" and status["startTime"]
    for name in ("server", "writer"):
        cs = cstatus(status, name)
        assert cs["ready"] and cs["started"] and "running" in cs["state"] and cs["restartCount"] == 0
        assert cs["containerID"].startswith("docker://") and cs["imageID"].startswith("docker://sha256:")
    assert {c["type"] for c in status["conditions"]} >= {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    }
    # The writer reached the server over localhost, through the file they share.
    wait_for(
        lambda: "hello-from-writer" in logs(apiserver, ns, "web", "-c", "writer"), 15, "the writer's wget"
    )
    # Another pod reaches it at the pod IP on grove's network.
    run_pod(
        api,
        ns,
        "peer",
        [shell("get", f"wget -qO- http://{status['podIP']}:8080/index.html")],
        restartPolicy="Never",
    )
    wait_for(lambda: status_of(api, ns, "peer").get("phase") == "Succeeded", 20, "the peer to finish")
    assert "hello-from-writer" in logs(apiserver, ns, "peer")
    out = apiserver.kubectl("-n", ns, "get", "pods").stdout
    assert re.search(r"web\s+2/2\s+Running\s+0", out) and re.search(r"peer\s+0/1\s+Completed\s+0", out), out
    # Engine side: the app containers live in the sandbox's network namespace, with grove's labels.
    uid = api.pod(ns, "web")["metadata"]["uid"]
    on_engine = containers_of(docker_client, uid)
    sandbox = next(c for c in on_engine.values() if c.labels["io.grove.kind"] == "sandbox")
    apps = [c for c in on_engine.values() if c.labels["io.grove.kind"] == "container"]
    assert len(apps) == 2
    for c in apps:
        assert c.attrs["HostConfig"]["NetworkMode"] == f"container:{sandbox.id}"
        assert c.labels[LABEL_POD_NAMESPACE] == ns and c.labels["io.grove.container.hash"]


def test_crash_loop_backoff_and_restart_policies(api: Api, ns: str, apiserver: ApiServerProcess) -> None:
    run_pod(api, ns, "crash", [shell("c", "echo boom; exit 3")])
    run_pod(api, ns, "never", [shell("c", "exit 1")], restartPolicy="Never")
    run_pod(api, ns, "done", [shell("c", "echo ok")], restartPolicy="OnFailure")
    run_pod(api, ns, "retry", [shell("c", "exit 2")], restartPolicy="OnFailure")
    seen: set[str] = set()

    def looping() -> bool:
        cs = cstatus(status_of(api, ns, "crash"), "c")
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            seen.add(waiting["reason"])
            if waiting["reason"] == "CrashLoopBackOff":
                assert (
                    waiting["message"].startswith("back-off ")
                    and "restarting failed container=c pod=crash_" in waiting["message"]
                )
        return cs.get("restartCount", 0) >= 3 and "CrashLoopBackOff" in seen

    wait_for(looping, 40, "three restarts with CrashLoopBackOff in between")
    last = cstatus(status_of(api, ns, "crash"), "c")["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error"
    assert status_of(api, ns, "crash")["phase"] == "Running"
    never = wait_for(
        lambda: (s := status_of(api, ns, "never")).get("phase") == "Failed" and s, 20, "Never: Failed"
    )
    assert (
        cstatus(never, "c")["restartCount"] == 0
        and cstatus(never, "c")["state"]["terminated"]["exitCode"] == 1
    )
    done = wait_for(
        lambda: (s := status_of(api, ns, "done")).get("phase") == "Succeeded" and s,
        20,
        "OnFailure + 0: Succeeded",
    )
    assert cstatus(done, "c")["state"]["terminated"]["reason"] == "Completed"
    wait_for(
        lambda: cstatus(status_of(api, ns, "retry"), "c").get("restartCount", 0) >= 1,
        20,
        "OnFailure + 2: restarted",
    )
    assert status_of(api, ns, "retry")["phase"] in ("Running", "Pending")
    events = apiserver.kubectl(
        "-n", ns, "get", "events", "--field-selector", "involvedObject.name=crash"
    ).stdout
    assert "BackOff" in events and "Back-off restarting failed container c" in events, events


def test_liveness_probe_failure_restarts_the_container(
    api: Api, ns: str, apiserver: ApiServerProcess
) -> None:
    script = (
        "touch /tmp/healthy; sleep 1; rm /tmp/healthy; trap 'exit 0' TERM; while true; do sleep 0.2; done"
    )
    probe = {
        "exec": {"command": ["cat", "/tmp/healthy"]},
        "initialDelaySeconds": 2,
        "periodSeconds": 1,
        "failureThreshold": 1,
    }
    run_pod(api, ns, "sick", [shell("c", script, livenessProbe=probe)], terminationGracePeriodSeconds=5)
    wait_for(
        lambda: cstatus(status_of(api, ns, "sick"), "c").get("restartCount", 0) >= 1, 30, "a liveness restart"
    )
    last = cstatus(status_of(api, ns, "sick"), "c")["lastState"]["terminated"]
    assert last["exitCode"] == 0  # it got SIGTERM and left as asked
    events = apiserver.kubectl(
        "-n", ns, "get", "events", "--field-selector", "involvedObject.name=sick"
    ).stdout
    assert "Unhealthy" in events and "Liveness probe failed" in events, events
    assert "failed liveness probe, will be restarted" in events, events


def test_readiness_probe_drives_ready(api: Api, ns: str, docker_client: docker.DockerClient) -> None:
    probe = {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1}
    run_pod(
        api,
        ns,
        "flip",
        [shell("c", "trap 'exit 0' TERM; while true; do sleep 0.2; done", readinessProbe=probe)],
    )
    running = wait_for(
        lambda: (s := status_of(api, ns, "flip")).get("phase") == "Running" and s, 20, "Running"
    )
    assert condition(running, "Ready") == "False" and not cstatus(running, "c")["ready"]
    cid = cstatus(running, "c")["containerID"].removeprefix("docker://")
    docker_client.containers.get(cid).exec_run(["touch", "/tmp/ready"])
    wait_for(
        lambda: condition(status_of(api, ns, "flip"), "Ready") == "True", 15, "Ready after the file appears"
    )
    docker_client.containers.get(cid).exec_run(["rm", "/tmp/ready"])
    wait_for(lambda: condition(status_of(api, ns, "flip"), "Ready") == "False", 15, "NotReady after it goes")
    status = status_of(api, ns, "flip")
    assert status["phase"] == "Running" and cstatus(status, "c")["restartCount"] == 0
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (
        ready["reason"] == "ContainersNotReady" and ready["message"] == "containers with unready status: [c]"
    )


def test_secret_and_configmap_files_and_env(
    api: Api,
    ns: str,
    apiserver: ApiServerProcess,
    docker_client: docker.DockerClient,
) -> None:
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    api.create(f"/api/v1/namespaces/{ns}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "data": {"user": b64("admin"), "pass": b64("s3cret")},
    })  # fmt: skip
    api.create(f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"color": "blue", "app.conf": "listen 80\n"},
    })  # fmt: skip
    svc = api.create(f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "redis-primary"},
        "spec": {"selector": {"app": "redis"}, "ports": [{"name": "redis", "port": 6379}]},
    })  # fmt: skip
    cluster_ip = svc["spec"]["clusterIP"]
    script = (
        "env | sort; "
        "echo pw=$(cat /etc/creds/pw); stat -c 'mode=%a %n' /etc/creds/pw; ls /etc/creds; "
        "echo conf=$(cat /etc/app/app.conf); stat -c 'mode=%a %n' /etc/settings/color; "
        "touch /etc/settings/new 2>/dev/null || echo settings-read-only; "
        "echo pwd=$(pwd); "
        "trap 'exit 0' TERM; while true; do sleep 0.2; done"
    )
    container = shell(
        "c", script,
        workingDir="/tmp",
        env=[
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pass"}}},
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
            {"name": "GREETING", "value": "hi-$(POD_NAME)"},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
        envFrom=[{"secretRef": {"name": "creds"}, "prefix": "CREDS_"}],
        resources={"limits": {"memory": "64Mi", "cpu": "500m"}},
        volumeMounts=[
            {"name": "creds", "mountPath": "/etc/creds"},
            {"name": "settings", "mountPath": "/etc/settings"},
            {"name": "settings", "mountPath": "/etc/app/app.conf", "subPath": "app.conf"},
        ],
    )  # fmt: skip
    run_pod(
        api, ns, "cfg", [container],
        volumes=[
            {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "pass", "path": "pw", "mode": 0o400}]}},
            {"name": "settings", "configMap": {"name": "settings", "defaultMode": 0o640}},
        ],
    )  # fmt: skip
    status = wait_ready(api, ns, "cfg")
    out = wait_for(lambda: "pwd=" in (o := logs(apiserver, ns, "cfg")) and o, 15, "the pod's report")
    expected = [
        "POD_NAME=cfg", f"POD_IP={status['podIP']}", f"NODE={NODE}", "PASSWORD=s3cret", "COLOR=blue",
        "GREETING=hi-cfg", "MEM=64", "CREDS_user=admin", "CREDS_pass=s3cret",
        f"REDIS_PRIMARY_SERVICE_HOST={cluster_ip}", "REDIS_PRIMARY_SERVICE_PORT=6379",
        "REDIS_PRIMARY_SERVICE_PORT_REDIS=6379", f"REDIS_PRIMARY_PORT_6379_TCP=tcp://{cluster_ip}:6379",
        f"REDIS_PRIMARY_PORT_6379_TCP_ADDR={cluster_ip}", "REDIS_PRIMARY_PORT_6379_TCP_PROTO=tcp",
        "pw=s3cret", "mode=400 /etc/creds/pw", "conf=listen 80", "mode=640 /etc/settings/color",
        "settings-read-only", "pwd=/tmp",
    ]  # fmt: skip
    lines = set(out.splitlines())
    assert [e for e in expected if e not in lines] == [], out
    assert "user" not in out.split("pw=")[1].split("conf=")[0]  # only the listed item is projected
    cid = cstatus(status, "c")["containerID"].removeprefix("docker://")
    host_config = docker_client.containers.get(cid).attrs["HostConfig"]
    assert host_config["Memory"] == 64 * 2**20 and host_config["NanoCpus"] == 500_000_000
    assert status["qosClass"] == "Guaranteed"


def test_init_containers_run_in_order(api: Api, ns: str, apiserver: ApiServerProcess) -> None:
    mount = [{"name": "work", "mountPath": "/work"}]
    run_pod(
        api, ns, "init",
        [shell("main", "cat /work/order; trap 'exit 0' TERM; while true; do sleep 0.2; done", volumeMounts=mount)],
        initContainers=[
            shell("first", "sleep 0.5; echo one >> /work/order", volumeMounts=mount),
            shell("second", "echo two >> /work/order", volumeMounts=mount),
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )  # fmt: skip
    status = wait_ready(api, ns, "init")
    assert condition(status, "Initialized") == "True"
    inits = {s["name"]: s for s in status["initContainerStatuses"]}
    assert all(s["state"]["terminated"]["reason"] == "Completed" for s in inits.values())
    wait_for(lambda: logs(apiserver, ns, "init") == "one\ntwo\n", 10, "main to see both init steps in order")


def test_missing_image_shows_err_image_pull_then_recovers(
    api: Api,
    ns: str,
    docker_client: docker.DockerClient,
    apiserver: ApiServerProcess,
) -> None:
    image = f"grove-test/missing-{uuid.uuid4().hex[:6]}:1"
    run_pod(
        api,
        ns,
        "nopull",
        [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "300"]}],
    )
    never_pull = [{"name": "c", "image": image, "imagePullPolicy": "Never", "command": ["sleep", "300"]}]
    run_pod(api, ns, "never", never_pull)
    reasons: dict[str, str] = {}

    def waiting() -> bool:
        w = (cstatus(status_of(api, ns, "nopull"), "c").get("state") or {}).get("waiting") or {}
        if w.get("reason"):
            reasons[w["reason"]] = w.get("message", "")
        return {"ErrImagePull", "ImagePullBackOff"} <= set(reasons)

    try:
        wait_for(waiting, 30, "ErrImagePull and ImagePullBackOff")
        assert (
            image in reasons["ErrImagePull"]
            and reasons["ImagePullBackOff"] == f'Back-off pulling image "{image}"'
        )
        assert status_of(api, ns, "nopull")["phase"] == "Pending"
        never = (cstatus(status_of(api, ns, "never"), "c").get("state") or {}).get("waiting") or {}
        assert never == {
            "reason": "ErrImageNeverPull",
            "message": f'Container image "{image}" is not present with pull policy of Never',
        }
        out = apiserver.kubectl("-n", ns, "get", "pod", "nopull").stdout
        assert re.search(r"nopull\s+0/1\s+(ErrImagePull|ImagePullBackOff)", out), out
        repository, tag = image.rsplit(":", 1)
        docker_client.images.get(BB).tag(repository, tag)  # the image turns up: the pod recovers
        wait_ready(api, ns, "nopull")
    finally:
        try:
            docker_client.images.remove(image, noprune=True)
        except docker.errors.APIError:
            pass


# --- logs, exec, stats ----------------------------------------------------------------------------


def test_logs_and_exec_through_kubectl(api: Api, ns: str, apiserver: ApiServerProcess) -> None:
    script = (
        "n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo run-$n; "
        "if [ $n -lt 2 ]; then exit 1; fi; "
        "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.3; done"
    )
    run_pod(
        api, ns, "talk",
        [shell("main", script, volumeMounts=[{"name": "d", "mountPath": "/d"}]), shell("side", "trap 'exit 0' TERM; while true; do sleep 0.2; done")],
        volumes=[{"name": "d", "emptyDir": {}}],
    )  # fmt: skip
    wait_for(lambda: cstatus(status_of(api, ns, "talk"), "main").get("restartCount") == 1, 20, "one restart")
    wait_ready(api, ns, "talk")
    wait_for(lambda: "tick-3" in logs(apiserver, ns, "talk", "-c", "main"), 15, "a few ticks")
    current = logs(apiserver, ns, "talk", "-c", "main")
    assert current.startswith("run-2\n") and "run-1" not in current
    assert logs(apiserver, ns, "talk", "-c", "main", "--previous") == "run-1\n"
    tail = logs(apiserver, ns, "talk", "-c", "main", "--tail=1").splitlines()
    assert len(tail) == 1 and tail[0].startswith("tick-")
    stamped = logs(apiserver, ns, "talk", "-c", "main", "--timestamps", "--tail=2").splitlines()
    assert len(stamped) == 2 and all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z tick-\d+$", line) for line in stamped
    )
    assert "run-2" in logs(apiserver, ns, "talk", "-c", "main", "--since=1h")
    follow = subprocess.Popen(
        [KUBECTL, "--kubeconfig", apiserver.kubeconfig, "-n", ns, "logs", "-f", "talk", "-c", "main", "--tail=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=apiserver.kubectl_env(),
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        lines = [follow.stdout.readline() for _ in range(3)]  # new lines arrive as they are written
        numbers = [int(line.strip().removeprefix("tick-")) for line in lines]
        assert numbers == sorted(numbers) and len(set(numbers)) == 3, lines
    finally:
        follow.kill()
        follow.wait()
    # exec: output, stderr and the exit code come back; -c picks the container.
    r = apiserver.kubectl(
        "-n",
        ns,
        "exec",
        "talk",
        "-c",
        "side",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
        check=False,
    )
    assert r.returncode == 3 and r.stdout == "out\n" and "err" in r.stderr, (r.stdout, r.stderr)
    r = apiserver.kubectl("-n", ns, "exec", "talk", "-c", "main", "--", "cat", "/d/n")
    assert r.stdout == "2\n"
    r = apiserver.kubectl(
        "-n", ns, "exec", "-i", "talk", "-c", "side", "--", "sh", "-c", "tr a-z A-Z", input="hello stdin\n"
    )
    assert r.stdout == "HELLO STDIN\n"
    r = apiserver.kubectl("-n", ns, "exec", "talk", "-c", "side", "--", "nosuchcommand", check=False)
    assert r.returncode != 0


def test_interactive_exec_with_a_terminal_over_the_websocket_protocol(
    api: Api, ns: str, agent: AgentProcess
) -> None:
    """What `kubectl exec -it` does (kubectl needs a real terminal for -t, so the test speaks the
    v5.channel.k8s.io protocol itself): stdin, a resize, output on channel 1, the exit code."""
    run_pod(api, ns, "tty", [shell("c", "trap 'exit 0' TERM; while true; do sleep 0.2; done")])
    wait_ready(api, ns, "tty")

    async def session() -> tuple[bytes, dict[str, Any], str]:
        url = f"{agent.url}/exec/{ns}/tty/c?command=sh&stdin=true&stdout=true&tty=true"
        out, status = b"", {}
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, protocols=["v5.channel.k8s.io"]) as ws:
                await ws.send_bytes(b"\x04" + json.dumps({"Width": 100, "Height": 30}).encode())
                await ws.send_bytes(b"\x00stty size; exit 7\n")
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        break
                    if msg.data[:1] == b"\x01":
                        out += msg.data[1:]
                    elif msg.data[:1] == b"\x03":
                        status = json.loads(msg.data[1:])
                return out, status, ws.protocol or ""

    out, status, protocol = asyncio.run(asyncio.wait_for(session(), 30))
    assert protocol == "v5.channel.k8s.io"
    assert b"30 100" in out, out
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"] == [
        {"reason": "ExitCode", "message": "7"}
    ]


def test_stats_summary_and_cadvisor_metrics(api: Api, ns: str, agent: AgentProcess) -> None:
    run_pod(
        api,
        ns,
        "busy",
        [
            shell(
                "c",
                "trap 'exit 0' TERM; while true; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 0.1; done",
            )
        ],
    )
    wait_ready(api, ns, "busy")

    def summary() -> dict[str, Any] | None:
        body = json.load(urllib.request.urlopen(agent.url + "/stats/summary", timeout=10))
        pod = next(
            (p for p in body["pods"] if p["podRef"]["name"] == "busy" and p["podRef"]["namespace"] == ns),
            None,
        )
        return pod if pod and pod["cpu"]["usageCoreNanoSeconds"] > 0 else None

    pod = wait_for(summary, 15, "the pod in /stats/summary")
    c = pod["containers"][0]
    assert c["name"] == "c" and c["memory"]["workingSetBytes"] > 0 and c["cpu"]["usageCoreNanoSeconds"] > 0
    body = json.load(urllib.request.urlopen(agent.url + "/stats/summary", timeout=10))
    assert body["node"]["nodeName"] == NODE and body["node"]["memory"]["workingSetBytes"] > 0
    text = urllib.request.urlopen(agent.url + "/metrics/cadvisor", timeout=10).read().decode()
    m = re.search(
        rf'container_cpu_usage_seconds_total\{{[^}}]*container="c"[^}}]*namespace="{ns}"[^}}]*pod="busy"[^}}]*\}} ([0-9.e+-]+)',
        text,
    )
    assert m and float(m.group(1)) > 0, text[:2000]
    assert re.search(r'container_memory_working_set_bytes\{[^}]*container="c"[^}]*pod="busy"', text)
    resource = urllib.request.urlopen(agent.url + "/metrics/resource", timeout=10).read().decode()
    assert f'pod_memory_working_set_bytes{{namespace="{ns}",pod="busy"}}' in resource
    assert urllib.request.urlopen(agent.url + "/healthz", timeout=5).read() == b"ok"


# --- deletion, restarts, foreign and orphaned containers ------------------------------------------


def test_graceful_delete(api: Api, ns: str, docker_client: docker.DockerClient, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    script = (
        "echo started >> /host/log; "
        "trap 'echo TERM >> /host/log; while [ ! -f /host/release ]; do sleep 0.1; done; echo bye >> /host/log; exit 0' TERM; "
        "while true; do sleep 0.1; done"
    )
    lifecycle = {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /host/log"]}}}
    vol = [{"name": "host", "hostPath": {"path": str(shared), "type": "Directory"}}]
    mount = [{"name": "host", "mountPath": "/host"}]
    run_pod(api, ns, "polite", [shell("c", script, lifecycle=lifecycle, volumeMounts=mount)], volumes=vol,
            terminationGracePeriodSeconds=60)  # fmt: skip
    run_pod(
        api,
        ns,
        "stubborn",
        [shell("c", "trap '' TERM; while true; do sleep 0.1; done")],
        terminationGracePeriodSeconds=2,
    )
    polite = wait_ready(api, ns, "polite")
    wait_ready(api, ns, "stubborn")
    uid = api.pod(ns, "polite")["metadata"]["uid"]
    stubborn_uid = api.pod(ns, "stubborn")["metadata"]["uid"]
    api.delete(f"/api/v1/namespaces/{ns}/pods/polite")
    api.delete(f"/api/v1/namespaces/{ns}/pods/stubborn")
    log_file = shared / "log"
    wait_for(lambda: "TERM" in log_file.read_text(), 20, "SIGTERM to reach the container")
    assert log_file.read_text().splitlines() == ["started", "prestop", "TERM"]  # preStop first, then SIGTERM
    # It is still shutting down: the pod stays, Terminating, and its container runs.
    pod = api.pod(ns, "polite")
    assert pod is not None and pod["metadata"]["deletionTimestamp"]
    cid = cstatus(polite, "c")["containerID"].removeprefix("docker://")
    assert docker_client.containers.get(cid).status == "running"
    # The one that ignores SIGTERM is killed when its 2 s are up, and its pod goes away.
    wait_for(lambda: api.pod(ns, "stubborn") is None, 20, "the stubborn pod to be killed and deleted")
    assert containers_of(docker_client, stubborn_uid) == {}
    (shared / "release").touch()
    wait_for(lambda: api.pod(ns, "polite") is None, 20, "the deletion to be confirmed")
    assert log_file.read_text().splitlines()[-1] == "bye"
    assert containers_of(docker_client, uid) == {}


def test_agent_restart_adopts_running_pods(
    api: Api, ns: str, agent: AgentProcess, docker_client: docker.DockerClient
) -> None:
    probe = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    run_pod(api, ns, "steady", [shell("a", "trap 'exit 0' TERM; while true; do sleep 0.2; done", readinessProbe=probe),
                                shell("b", "trap 'exit 0' TERM; while true; do sleep 0.2; done")])  # fmt: skip
    before = wait_ready(api, ns, "steady")
    uid = api.pod(ns, "steady")["metadata"]["uid"]
    engine_before = {
        cid: c.attrs["State"]["StartedAt"] for cid, c in containers_of(docker_client, uid).items()
    }
    agent.stop(signal.SIGKILL)  # a crash: no goodbye
    agent.start()
    # A pod created now is started by the new agent, so by then it has synced the old one too.
    run_pod(api, ns, "after", [shell("c", "trap 'exit 0' TERM; while true; do sleep 0.2; done")])
    wait_ready(api, ns, "after")
    after = status_of(api, ns, "steady")
    engine_after = {
        cid: c.attrs["State"]["StartedAt"] for cid, c in containers_of(docker_client, uid).items()
    }
    assert engine_after == engine_before  # same containers, never restarted
    for name in ("a", "b"):
        assert cstatus(after, name)["containerID"] == cstatus(before, name)["containerID"]
        assert cstatus(after, name)["restartCount"] == 0
    assert condition(after, "Ready") == "True"


def test_orphans_are_removed_and_other_containers_are_left_alone(
    api: Api, ns: str, agent: AgentProcess, docker_client: docker.DockerClient
) -> None:
    # A pod of this node, deleted from the API while its agent was down: an orphan. Its containers
    # carry the node's name.
    run_pod(api, ns, "ghost", [shell("c", "trap 'exit 0' TERM; while true; do sleep 0.2; done")])
    wait_ready(api, ns, "ghost")
    ghost_uid = api.pod(ns, "ghost")["metadata"]["uid"]
    assert {c.labels.get(LABEL_NODE) for c in containers_of(docker_client, ghost_uid).values()} == {NODE}
    # A container started by hand without labels, a pod someone else put on the engine without a
    # node's name (as grove did before it had one), and a pod of another node on the same engine.
    foreign = docker_client.containers.run(
        BB, ["sleep", "300"], detach=True, labels={"owner": "someone-else"}
    )
    others: dict[str, DockerRuntime] = {}
    try:
        for name, node in (("elsewhere", ""), ("neighbour", "another-node")):
            runtime = DockerRuntime(docker_client, node_name=node)
            other = make_pod(name, [{"name": "c", "image": BB, "command": ["sleep", "300"]}], namespace=ns)
            others[other["metadata"]["uid"]] = runtime
            if node:  # another node's pod, even with a (stale) directory under this agent's root
                (agent.root / "root" / "pods" / other["metadata"]["uid"]).mkdir(parents=True)
            sandbox = runtime.run_sandbox(other)
            runtime.start_container(
                runtime.create_container(other, other["spec"]["containers"][0], sandbox, {}, {}, 0)
            )
        agent.stop(signal.SIGKILL)
        api.delete(f"/api/v1/namespaces/{ns}/pods/ghost", grace=0)
        assert api.pod(ns, "ghost") is None
        agent.start()
        wait_for(
            lambda: containers_of(docker_client, ghost_uid) == {}, 20, "the orphan's containers to be removed"
        )
        # Housekeeping ran (it removed the orphan); what was not the agent's is untouched.
        foreign.reload()
        assert foreign.status == "running"
        for uid in others:
            assert {c.status for c in containers_of(docker_client, uid).values()} == {"running"}
    finally:
        for uid, runtime in others.items():
            runtime.remove_pod(uid)
        foreign.remove(force=True)
