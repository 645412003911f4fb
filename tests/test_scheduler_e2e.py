"""The scheduler as a real process against grove's API server over a three-member store.

Nodes are created through the API (scheduling needs no node agent); pods are created and the
test waits, with deadlines, for the bindings, the FailedScheduling events and the PodScheduled
conditions the scheduler writes. A second test runs two replicas with leader election, kills
the leader with SIGKILL and checks the standby takes the Lease and schedules.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from orchestrator.scheduler.testing import anti_affinity, node, pod, taint
from tests import waiting
from tests.apiserver_fixture import (
    ROOT,
    ApiServerProcess,
    _env,
    apiserver,  # noqa: F401 - the module's store + API server
)

DEADLINE = 30.0
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"


def wait_for(cond: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    return waiting.wait_for(cond, what, timeout)


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> dict:
        resp = self.http.request(method, self.url + path, json=body, timeout=10)
        assert resp.status_code in ok, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def add_node(self, obj: dict) -> None:
        self.call("POST", "/api/v1/nodes", obj)
        current = self.call("GET", f"/api/v1/nodes/{obj['metadata']['name']}")
        current["status"] = obj["status"]
        self.call("PUT", f"/api/v1/nodes/{obj['metadata']['name']}/status", current)

    def namespace(self, name: str) -> None:
        self.call(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )

    def create_pod(self, obj: dict) -> None:
        self.call("POST", f"/api/v1/namespaces/{obj['metadata']['namespace']}/pods", obj)

    def pod(self, ns: str, name: str) -> dict:
        return self.call("GET", f"/api/v1/namespaces/{ns}/pods/{name}")

    def node_of(self, ns: str, name: str) -> str | None:
        return self.pod(ns, name)["spec"].get("nodeName")

    def events(self, ns: str, name: str, reason: str) -> list[dict]:
        items = self.call("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        return [e for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason]

    def lease(self, name: str) -> dict | None:
        resp = self.http.get(f"{self.url}{LEASES}/{name}", timeout=10)
        return resp.json()["spec"] if resp.status_code == 200 else None


class SchedulerProcess:
    def __init__(self, server: str, log_path: str, *args: str) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.scheduler.cli", "--server", server, "-v", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(),
                cwd=ROOT,
            )

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def schedulers(apiserver: ApiServerProcess, tmp_path) -> Iterator[Callable[..., SchedulerProcess]]:  # noqa: F811
    started: list[SchedulerProcess] = []

    def start(*args: str) -> SchedulerProcess:
        proc = SchedulerProcess(apiserver.url, str(tmp_path / f"scheduler-{len(started)}.log"), *args)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop(signal.SIGKILL)


def test_places_pods_and_reports_what_does_not_fit(apiserver: ApiServerProcess, schedulers) -> None:  # noqa: F811
    api = Api(apiserver.url)
    ns = "place"
    api.namespace(ns)
    api.add_node(node("p-small", cpu="1", labels={"pool": "web"}))
    api.add_node(node("p-big", cpu="4", labels={"disk": "ssd", "pool": "web"}))
    api.add_node(node("p-infra", cpu="8", taints=[taint("dedicated", "infra")]))
    sched = schedulers("--no-leader-elect")

    def create(name: str, **kw: Any) -> None:
        api.create_pod(pod(name, namespace=ns, **kw))

    create("needs-3-cpu", cpu="3")
    create("wants-ssd", nodeSelector={"disk": "ssd"})
    create("infra", cpu="5", tolerations=[{"key": "dedicated", "operator": "Equal", "value": "infra"}])
    for i in range(2):
        create(
            f"web-{i}",
            labels={"app": "web"},
            nodeSelector={"pool": "web"},
            affinity=anti_affinity({"app": "web"}),
        )
    create("too-big", cpu="16")
    try:
        assert wait_for(lambda: api.node_of(ns, "needs-3-cpu"), "needs-3-cpu bound") == "p-big"
        assert wait_for(lambda: api.node_of(ns, "wants-ssd"), "wants-ssd bound") == "p-big"
        assert wait_for(lambda: api.node_of(ns, "infra"), "infra bound") == "p-infra"
        webs = {wait_for(lambda i=i: api.node_of(ns, f"web-{i}"), f"web-{i} bound") for i in range(2)}
        assert webs == {"p-small", "p-big"}  # one per node of the pool, by anti-affinity

        # A third replica has nowhere to go (the taint is checked before the node selector, as in kube).
        create(
            "web-2",
            labels={"app": "web"},
            nodeSelector={"pool": "web"},
            affinity=anti_affinity({"app": "web"}),
        )
        web_msg = (
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, "
            "2 node(s) didn't satisfy existing pods anti-affinity rules. preemption: 0/3 nodes are available: "
            "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        )
        wait_for(lambda: api.events(ns, "web-2", "FailedScheduling"), "FailedScheduling for web-2")
        assert api.events(ns, "web-2", "FailedScheduling")[0]["message"] == web_msg

        too_big_msg = (
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 Insufficient cpu. "
            "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
            "2 No preemption victims found for incoming pod."
        )
        event = wait_for(
            lambda: api.events(ns, "too-big", "FailedScheduling"), "FailedScheduling for too-big"
        )[0]
        assert (event["type"], event["message"]) == ("Warning", too_big_msg)
        assert event["source"]["component"] == "default-scheduler"

        def condition() -> dict | None:
            conds = api.pod(ns, "too-big").get("status", {}).get("conditions") or []
            return next((c for c in conds if c["type"] == "PodScheduled" and c["status"] == "False"), None)

        cond = wait_for(condition, "PodScheduled=False on too-big")
        assert (cond["reason"], cond["message"]) == ("Unschedulable", too_big_msg)
        assert api.node_of(ns, "too-big") is None
        scheduled = api.events(ns, "needs-3-cpu", "Scheduled")
        assert scheduled and scheduled[0]["message"] == f"Successfully assigned {ns}/needs-3-cpu to p-big"

        # The cluster grows: the waiting pod is retried and placed, without anyone touching it.
        api.add_node(node("p-huge", cpu="32"))
        assert (
            wait_for(lambda: api.node_of(ns, "too-big"), "too-big bound after a node was added") == "p-huge"
        )
        # A pod for another scheduler is left alone.
        create("not-ours", schedulerName="someone-else")
        create("ours-after", cpu="100m")
        wait_for(lambda: api.node_of(ns, "ours-after"), "ours-after bound")
        assert api.node_of(ns, "not-ours") is None
    except (AssertionError, pytest.fail.Exception):
        print(sched.log()[-5000:])
        raise


def test_standby_takes_over_when_the_leader_dies(apiserver: ApiServerProcess, schedulers) -> None:  # noqa: F811
    api = Api(apiserver.url)
    ns = "failover"
    api.namespace(ns)
    api.add_node(node("f-node", cpu="64", pods=500))
    lease = "failover-scheduler"
    common = (
        "--lease-name", lease,
        "--leader-elect-lease-duration", "2s",
        "--leader-elect-renew-deadline", "1500ms",
        "--leader-elect-retry-period", "250ms",
    )  # fmt: skip
    first = schedulers(*common, "--name", "first")
    wait_for(lambda: (api.lease(lease) or {}).get("holderIdentity") == "first", "first to lead")
    second = schedulers(*common, "--name", "second")
    try:
        api.create_pod(pod("before", namespace=ns))
        wait_for(lambda: api.node_of(ns, "before"), "a pod bound by the leader")
        wait_for(lambda: "caches synced" in second.log(), "the standby to sync its caches")
        assert api.lease(lease)["holderIdentity"] == "first"  # the standby waits its turn
        transitions = api.lease(lease).get("leaseTransitions", 0)

        first.stop(signal.SIGKILL)  # no chance to hand the Lease back
        api.create_pod(pod("after", namespace=ns))
        assert wait_for(lambda: api.node_of(ns, "after"), "the standby to bind a pod") == "f-node"
        spec = api.lease(lease)
        assert spec["holderIdentity"] == "second"
        assert spec["leaseTransitions"] == transitions + 1

        # A clean stop hands the Lease back at once.
        second.stop(signal.SIGTERM)
        assert second.proc.returncode == 0
        assert api.lease(lease)["holderIdentity"] == ""
    except (AssertionError, pytest.fail.Exception):
        print("first:", first.log()[-3000:], "\nsecond:", second.log()[-3000:])
        raise
