"""Hollow nodes: the fake runtime on its own, then `grove node --runtime fake --count N` as one
process against a real store cluster + API server."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("tests.dockerutil")  # before its import: its asserts explain failures

from node.fake import EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION, FakeRuntime, fake_pod_subnet  # noqa: E402
from node.podsync import BackOff, NoProbes, compute_actions, pod_status  # noqa: E402
from node.runtime.types import ContainerNotFoundError, CreateContainerError, RunContainerError  # noqa: E402
from tests import apiserver_fixture  # noqa: E402
from tests.apiserver_fixture import ROOT, ApiServerProcess  # noqa: E402
from tests.dockerutil import wait_for  # noqa: E402

apiserver = apiserver_fixture.apiserver  # the module-scoped store cluster + API server


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def fake_pod(name: str = "p", annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    containers = spec.pop("containers", [{"name": "app", "image": "grove/busybox:1.35"}])
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": str(uuid.uuid4()),
            "annotations": annotations or {},
        },
        "spec": {"containers": containers, **spec},
    }


def start_pod(rt: FakeRuntime, pod: dict[str, Any]) -> dict[str, str]:
    sandbox = rt.run_sandbox(pod)
    ids = {}
    for c in pod["spec"]["containers"]:
        ids[c["name"]] = rt.create_container(pod, c, sandbox, {}, {}, 0)
        rt.start_container(ids[c["name"]])
    return ids


# --- the runtime alone ---------------------------------------------------------------------------


def test_pod_subnets_per_node() -> None:
    assert str(fake_pod_subnet(0)) == "10.128.0.0/24" and str(fake_pod_subnet(257)) == "10.129.1.0/24"
    with pytest.raises(ValueError, match="room for"):
        fake_pod_subnet(2**15)


def test_containers_run_at_once_with_ips_from_the_node_subnet() -> None:
    rt = FakeRuntime(node_index=3)
    a, b = fake_pod("a"), fake_pod("b")
    start_pod(rt, a)
    start_pod(rt, b)
    pods = rt.list_pod_containers()
    ips = {pods[p["metadata"]["uid"]].sandbox.ip for p in (a, b)}  # type: ignore[union-attr]
    assert len(ips) == 2 and all(ipaddress.ip_address(ip) in fake_pod_subnet(3) for ip in ips)
    info = pods[a["metadata"]["uid"]].containers[0]
    assert info.state.running and info.container_name == "app" and info.spec_hash
    assert info.labels["io.grove.pod.name"] == "a"
    rt.stop_pod(a["metadata"]["uid"], 30)
    assert (
        rt.list_pod_containers(a["metadata"]["uid"])[a["metadata"]["uid"]].containers[0].state.exit_code == 0
    )
    rt.remove_pod(a["metadata"]["uid"])
    assert a["metadata"]["uid"] not in rt.list_pod_containers()
    c = fake_pod("c")
    start_pod(rt, c)  # the freed address can be handed out again
    assert rt.list_pod_containers()[c["metadata"]["uid"]].sandbox is not None
    with pytest.raises(ContainerNotFoundError):
        rt.inspect_container("nope")


def test_scripted_exit_codes() -> None:
    clock = Clock()
    rt = FakeRuntime(clock=clock)
    pod = fake_pod(
        annotations={EXIT_CODE_ANNOTATION: "app=3,side=0", RUN_SECONDS_ANNOTATION: "5"},
        containers=[
            {"name": "app", "image": "x"},
            {"name": "side", "image": "x"},
            {"name": "other", "image": "x"},
        ],
    )
    ids = start_pod(rt, pod)
    assert all(rt.container_state(i).running for i in ids.values())
    clock.now += 5
    assert rt.container_state(ids["app"]).exit_code == 3 and rt.container_state(ids["app"]).reason == "Error"
    assert rt.container_state(ids["side"]).reason == "Completed"
    assert rt.container_state(ids["other"]).running  # not scripted: runs on
    everyone = fake_pod(annotations={EXIT_CODE_ANNOTATION: "1"})
    assert rt.container_state(start_pod(rt, everyone)["app"]).exit_code == 1  # at once
    with pytest.raises(CreateContainerError):
        start_pod(rt, fake_pod(annotations={EXIT_CODE_ANNOTATION: "lots"}))


def test_scripted_exit_calls_back() -> None:
    async def body() -> list[tuple[str, str]]:
        exited: list[tuple[str, str]] = []
        rt = FakeRuntime(on_exit=lambda ns, name: exited.append((ns, name)))
        start_pod(
            rt, fake_pod("later", annotations={EXIT_CODE_ANNOTATION: "0", RUN_SECONDS_ANNOTATION: "0.05"})
        )
        deadline = time.monotonic() + 5
        while not exited and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return exited

    assert asyncio.run(body()) == [("default", "later")]


def test_exec_logs_stats() -> None:
    clock = Clock()
    rt = FakeRuntime(clock=clock)
    pod = fake_pod("p")
    cid = start_pod(rt, pod)["app"]
    with pytest.raises(RunContainerError, match="runs no processes"):
        rt.exec(cid, ["true"])
    assert rt.logs(cid) == b"fake container app of pod default/p\n"
    assert rt.logs(cid, tail=0) == b""
    first = rt.stats(cid).cpu_usage_nanoseconds
    clock.now += 10
    assert rt.stats(cid).cpu_usage_nanoseconds > first and rt.stats(cid).memory_working_set_bytes > 0


def test_podsync_over_the_fake_runtime() -> None:
    """The agent's decisions and status work the same over hollow containers."""
    clock = Clock()
    rt = FakeRuntime(clock=clock)
    pod = fake_pod("job", annotations={EXIT_CODE_ANNOTATION: "4"}, restartPolicy="Never")
    uid = pod["metadata"]["uid"]
    start_pod(rt, pod)
    observed = rt.list_pod_containers(uid)[uid]
    actions = compute_actions(pod, observed, NoProbes(), BackOff(), clock.now)
    assert actions.terminal_phase == "Failed" and actions.kill_pod
    rt.stop_pod(uid, 30)
    status = pod_status(
        pod, rt.list_pod_containers(uid)[uid], NoProbes(), host_ip="10.0.0.1", now=clock.now,
        terminal_phase=actions.terminal_phase, image_id_prefix="fake://",
    )  # fmt: skip
    assert status["phase"] == "Failed"
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 4
    assert status["containerStatuses"][0]["imageID"].startswith("fake://sha256:")


# --- many hollow nodes in one process ------------------------------------------------------------

COUNT = 20
PREFIX = "hollow-"


@pytest.fixture(scope="module")
def hollow(apiserver: ApiServerProcess) -> Iterator[str]:
    """`grove node --runtime fake --count 20`; yields the agents' endpoint URL."""
    workdir = Path(tempfile.mkdtemp(prefix="grove-hollow-"))
    log_path = workdir / "nodes.log"
    args = [
        sys.executable, "-m", "node.cli", "--server", apiserver.url, "--runtime", "fake",
        "--count", str(COUNT), "--name-prefix", PREFIX, "--node-ip", "127.0.0.1", "--port", "0",
        "--root-dir", str(workdir / "root"), "--crashloop-backoff-base", "0.2", "--crashloop-backoff-max", "0.4",
    ]  # fmt: skip
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT
        )
    try:

        def serving() -> str:
            if proc.poll() is not None:
                pytest.fail(
                    f"grove node exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}",
                    pytrace=False,
                )
            m = re.search(r"serving on [\d.]+:(\d+)", log_path.read_text())
            return f"http://127.0.0.1:{m.group(1)}" if m else ""

        yield wait_for(serving, 60, "the hollow nodes to register")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(log_path.read_text()[-3000:])
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def api_get(apiserver: ApiServerProcess, path: str) -> dict[str, Any] | None:
    r = requests.get(apiserver.url + path, timeout=10)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def create_pod(
    apiserver: ApiServerProcess,
    ns: str,
    name: str,
    node: str,
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "grove/busybox:1.35"}], **spec},
    }
    r = requests.post(f"{apiserver.url}/api/v1/namespaces/{ns}/pods", json=pod, timeout=10)
    assert r.status_code == 201, r.text


def pod_status_of(apiserver: ApiServerProcess, ns: str, name: str) -> dict[str, Any]:
    return (api_get(apiserver, f"/api/v1/namespaces/{ns}/pods/{name}") or {}).get("status") or {}


def test_hollow_nodes_register_ready_with_leases(apiserver: ApiServerProcess, hollow: str) -> None:
    nodes = api_get(apiserver, "/api/v1/nodes?labelSelector=grove.io/hollow%3Dtrue")
    assert nodes is not None
    names = sorted(n["metadata"]["name"] for n in nodes["items"])
    assert names == sorted(f"{PREFIX}{i}" for i in range(COUNT))
    for n in nodes["items"]:
        ready = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert n["status"]["nodeInfo"]["containerRuntimeVersion"] == "fake://1.0.0"
        assert n["spec"]["podCIDR"] == str(fake_pod_subnet(int(n["metadata"]["name"].removeprefix(PREFIX))))
        assert n["status"]["capacity"]["cpu"] == "4"
    leases = api_get(apiserver, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
    assert leases is not None
    assert {lease["spec"]["holderIdentity"] for lease in leases["items"]} >= set(names)


def test_hollow_pods_run_finish_restart_and_delete(apiserver: ApiServerProcess, hollow: str) -> None:
    ns = "hollow-pods"
    requests.post(f"{apiserver.url}/api/v1/namespaces", json={"metadata": {"name": ns}}, timeout=10)
    for i in range(40):
        create_pod(apiserver, ns, f"web-{i}", f"{PREFIX}{i % COUNT}")
    create_pod(
        apiserver,
        ns,
        "ok",
        f"{PREFIX}1",
        {EXIT_CODE_ANNOTATION: "0", RUN_SECONDS_ANNOTATION: "1"},
        restartPolicy="Never",
    )
    create_pod(apiserver, ns, "bad", f"{PREFIX}2", {EXIT_CODE_ANNOTATION: "3"}, restartPolicy="Never")
    create_pod(apiserver, ns, "loop", f"{PREFIX}3", {EXIT_CODE_ANNOTATION: "1"})

    def all_running() -> bool:
        pods = api_get(apiserver, f"/api/v1/namespaces/{ns}/pods") or {"items": []}
        web = [p for p in pods["items"] if p["metadata"]["name"].startswith("web-")]
        return len(web) == 40 and all(
            p["status"].get("phase") == "Running"
            and any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or []
            )
            for p in web
        )

    wait_for(all_running, 30, "40 hollow pods Running and Ready")
    pods = (api_get(apiserver, f"/api/v1/namespaces/{ns}/pods") or {})["items"]
    for p in pods:
        if p["metadata"]["name"].startswith("web-"):
            node = int(p["spec"]["nodeName"].removeprefix(PREFIX))
            assert ipaddress.ip_address(p["status"]["podIP"]) in fake_pod_subnet(node)
    ok = wait_for(
        lambda: (s := pod_status_of(apiserver, ns, "ok")).get("phase") == "Succeeded" and s,
        20,
        "ok: Succeeded",
    )
    assert ok["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    bad = wait_for(
        lambda: (s := pod_status_of(apiserver, ns, "bad")).get("phase") == "Failed" and s, 20, "bad: Failed"
    )
    assert bad["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    wait_for(
        lambda: pod_status_of(apiserver, ns, "loop")["containerStatuses"][0]["restartCount"] >= 2,
        20,
        "loop: restarts",
    )
    out = apiserver.kubectl("-n", ns, "get", "pods", "ok", "bad", "web-0").stdout
    assert re.search(r"ok\s+0/1\s+Completed", out) and re.search(r"bad\s+0/1\s+Error", out), out
    assert re.search(r"web-0\s+1/1\s+Running\s+0", out), out
    # Logs come through the API server from the hollow node's endpoint; exec says why it cannot.
    assert apiserver.kubectl("-n", ns, "logs", "web-0").stdout == f"fake container c of pod {ns}/web-0\n"
    r = apiserver.kubectl("-n", ns, "exec", "web-0", "--", "true", check=False)
    assert r.returncode != 0 and "runs no processes" in r.stderr, r.stderr
    # Graceful deletion is confirmed by the hollow node.
    apiserver.kubectl("-n", ns, "delete", "pod", "web-1", "web-2", "--wait=false")
    wait_for(
        lambda: all(
            api_get(apiserver, f"/api/v1/namespaces/{ns}/pods/{n}") is None for n in ("web-1", "web-2")
        ),
        20,
        "the deletions to be confirmed",
    )
    summary = json.loads(requests.get(f"{hollow}/stats/summary?node={PREFIX}0", timeout=10).text)
    assert summary["node"]["nodeName"] == f"{PREFIX}0"
    assert {p["podRef"]["name"] for p in summary["pods"]} >= {"web-0", "web-20"}
    # A hollow node's usage is its pods' (not the host's, which every hollow node would share).
    pods_cpu = sum(p["cpu"]["usageCoreNanoSeconds"] for p in summary["pods"])
    pods_memory = sum(p["memory"]["workingSetBytes"] for p in summary["pods"])
    assert summary["node"]["cpu"]["usageCoreNanoSeconds"] == pods_cpu
    assert summary["node"]["memory"]["workingSetBytes"] == pods_memory
