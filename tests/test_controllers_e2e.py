"""The controllers end to end: a 3-member store, the API server, the scheduler, hollow node agents
(`grove node --runtime fake`) and the controller manager, all real processes.

Every test works in its own namespace through kubectl 1.32 or plain HTTP and waits on conditions
with deadlines. The manager runs with kube's flags set short (node grace 3 s, a 2 s Lease) so node
failure and failover take seconds; a second manager waits as a hot standby from the start, and
the failover test at the end kills whichever one leads.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.apiserver_fixture import (
    ApiServerProcess,
    apiserver,  # noqa: F401 - the module's store + API server
)
from tests.cluster import Cluster, ready, wait_for

pytestmark = [pytest.mark.slow]


def owner_uids(obj: dict) -> list[str]:
    return [r["uid"] for r in obj["metadata"].get("ownerReferences") or []]


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServerProcess) -> Iterator[Cluster]:  # noqa: F811
    workdir = tempfile.mkdtemp(prefix="grove-ctl-e2e-")
    c = Cluster(apiserver, workdir)
    try:
        c.start("scheduler", "orchestrator.scheduler.cli", "--server", apiserver.url, "--no-leader-elect")
        c.start_manager("cm-a")
        wait_for(lambda: c.leader() == "cm-a", "cm-a to lead", check=c.check)
        c.start_manager("cm-b")  # the hot standby
        c.start_nodes("stable-", 2)
        yield c
    finally:
        c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- objects ---------------------------------------------------------------------------------------


def pod_template(app: str, image: str = "busybox:1", **spec: Any) -> dict:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}],
            **spec,
        },
    }


def replicaset(name: str, replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name),
        },
    }


def deployment(name: str, replicas: int, image: str = "busybox:1", **spec: Any) -> dict:
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, image),
            **spec,
        },
    }
    return body


# --- replica sets ----------------------------------------------------------------------------------


def test_replicaset_scales_replaces_adopts_and_releases(cluster: Cluster) -> None:
    ns = cluster.namespace("rs")
    cluster.apply(ns, replicaset("web", 3))

    def settled(n: int) -> bool:
        rs = cluster.obj(ns, "replicaset", "web") or {}
        st = rs.get("status", {})
        return (
            len(cluster.running(ns, "app=web")) == n
            and len(cluster.pods(ns, "app=web")) == n
            and st.get("readyReplicas") == n
            and st.get("availableReplicas") == n
            and st.get("fullyLabeledReplicas") == n
            and st.get("observedGeneration") == rs["metadata"]["generation"]
        )

    wait_for(lambda: settled(3), "3 ready pods", check=cluster.check)
    cluster.kubectl("scale", "-n", ns, "rs/web", "--replicas=5")
    wait_for(lambda: settled(5), "scale up to 5", check=cluster.check)
    cluster.kubectl("scale", "-n", ns, "rs/web", "--replicas=2")
    wait_for(lambda: settled(2), "scale down to 2", check=cluster.check)

    # Kill a pod: it is replaced.
    victim = cluster.live_pods(ns, "app=web")[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", "-n", ns, victim, "--wait=false")
    wait_for(
        lambda: settled(2) and victim not in [p["metadata"]["name"] for p in cluster.pods(ns)],
        "a replacement",
        check=cluster.check,
    )

    # An orphan with matching labels is adopted (and, being one too many, a pod goes).
    rs_uid = cluster.obj(ns, "replicaset", "web")["metadata"]["uid"]
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stray", "labels": {"app": "web"}},
              "spec": pod_template("web")["spec"]}  # fmt: skip
    cluster.call("POST", f"/api/v1/namespaces/{ns}/pods", orphan)
    wait_for(
        lambda: all(owner_uids(p) == [rs_uid] for p in cluster.pods(ns, "app=web")) and settled(2),
        "the orphan adopted and the surplus deleted",
        check=cluster.check,
    )

    # A pod whose labels stop matching is released (and replaced).
    mine = cluster.live_pods(ns, "app=web")[0]["metadata"]["name"]
    cluster.kubectl("label", "pod", "-n", ns, mine, "app=elsewhere", "--overwrite")
    wait_for(
        lambda: not owner_uids(cluster.get(f"/api/v1/namespaces/{ns}/pods/{mine}")) and settled(2),
        "the relabelled pod released and replaced",
        check=cluster.check,
    )
    described = cluster.kubectl("describe", "rs", "-n", ns, "web")
    assert "SuccessfulCreate" in described and "SuccessfulDelete" in described, described
    assert "Created pod: web-" in described


# --- deployments -----------------------------------------------------------------------------------


class AvailabilityWatch:
    """Counts ready, non-terminating pods of one app from a pod watch, remembering the lowest
    count seen once armed."""

    def __init__(self, cluster: Cluster, ns: str, app: str) -> None:
        self.url = f"{cluster.url}/api/v1/namespaces/{ns}/pods"
        self.app = app
        self.available: dict[str, bool] = {}
        self.lowest: int | None = None
        self.armed = False
        self.events = 0
        self._stop = threading.Event()
        listing = requests.get(self.url, params={"labelSelector": f"app={app}"}, timeout=10).json()
        for p in listing["items"]:
            self._observe("ADDED", p)
        self._rv = listing["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _observe(self, kind: str, pod: dict) -> None:
        name = pod["metadata"]["name"]
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp") or not ready(pod):
            self.available.pop(name, None)
        else:
            self.available[name] = True
        if self.armed:
            n = len(self.available)
            self.lowest = n if self.lowest is None else min(self.lowest, n)

    def _run(self) -> None:
        params = {"watch": "1", "resourceVersion": self._rv, "labelSelector": f"app={self.app}"}
        with requests.get(self.url, params=params, stream=True, timeout=(5, 120)) as resp:
            for line in resp.iter_lines():
                if self._stop.is_set():
                    return
                if line:
                    ev = json.loads(line)
                    self.events += 1
                    self._observe(ev["type"], ev["object"])

    def stop(self) -> None:
        self._stop.set()


def rollout_done(cluster: Cluster, ns: str, name: str, replicas: int) -> bool:
    d = cluster.obj(ns, "deployment", name) or {}
    st = d.get("status", {})
    return (
        st.get("observedGeneration") == d.get("metadata", {}).get("generation")
        and st.get("updatedReplicas") == replicas
        and st.get("availableReplicas") == replicas
        and st.get("replicas") == replicas
        and len(cluster.live_pods(ns, f"app={name}")) == replicas
    )


def images(cluster: Cluster, ns: str, app: str) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in cluster.live_pods(ns, f"app={app}")}


def test_rolling_update_keeps_availability_and_rolls_back(cluster: Cluster) -> None:
    ns = cluster.namespace("rollout")
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    cluster.apply(ns, deployment("web", 4, strategy=strategy))
    out = cluster.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=30s")
    assert 'deployment "web" successfully rolled out' in out
    cluster.kubectl("annotate", "-n", ns, "deployment/web", "kubernetes.io/change-cause=first")

    watch = AvailabilityWatch(cluster, ns, "web")
    try:
        wait_for(lambda: len(watch.available) == 4, "the watch to see 4 available pods")
        watch.armed = True
        cluster.kubectl("set", "image", "-n", ns, "deployment/web", "c=busybox:2")
        cluster.kubectl(
            "annotate", "-n", ns, "deployment/web", "kubernetes.io/change-cause=second", "--overwrite"
        )
        out = cluster.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=30s")
        assert "successfully rolled out" in out
        wait_for(
            lambda: rollout_done(cluster, ns, "web", 4) and images(cluster, ns, "web") == {"busybox:2"},
            "v2 everywhere",
        )
    finally:
        watch.stop()
    assert watch.events > 0 and watch.lowest is not None
    assert watch.lowest >= 3, f"availability dropped to {watch.lowest} (maxUnavailable 1 of 4)"

    history = cluster.kubectl("rollout", "history", "-n", ns, "deployment/web")
    lines = [ln.split() for ln in history.splitlines()[2:] if ln.strip()]
    assert (
        [ln[0] for ln in lines] == ["1", "2"] and lines[0][1:] == ["first"] and lines[1][1:] == ["second"]
    ), history
    d = cluster.obj(ns, "deployment", "web")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"

    # Undo: back to revision 1's template, which becomes revision 3.
    cluster.kubectl("rollout", "undo", "-n", ns, "deployment/web")
    cluster.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=30s")
    wait_for(
        lambda: rollout_done(cluster, ns, "web", 4) and images(cluster, ns, "web") == {"busybox:1"},
        "undo to v1",
    )
    history = cluster.kubectl("rollout", "history", "-n", ns, "deployment/web")
    revisions = [ln.split()[0] for ln in history.splitlines()[2:] if ln.strip()]
    assert revisions == ["2", "3"], history
    rs_list = cluster.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
    assert len(rs_list) == 2  # no third ReplicaSet: the old one came back

    # Undo to a named revision.
    cluster.kubectl("rollout", "undo", "-n", ns, "deployment/web", "--to-revision=2")
    wait_for(
        lambda: rollout_done(cluster, ns, "web", 4) and images(cluster, ns, "web") == {"busybox:2"},
        "undo to v2",
    )

    # Pause: template changes wait; resume rolls them out.
    cluster.kubectl("rollout", "pause", "-n", ns, "deployment/web")
    cluster.kubectl("set", "image", "-n", ns, "deployment/web", "c=busybox:3")
    wait_for(
        lambda: any(
            c["type"] == "Progressing" and c["reason"] == "DeploymentPaused"
            for c in cluster.obj(ns, "deployment", "web")["status"].get("conditions", [])
        ),
        "the paused condition",
    )
    assert images(cluster, ns, "web") == {"busybox:2"}
    cluster.kubectl("rollout", "resume", "-n", ns, "deployment/web")
    wait_for(
        lambda: rollout_done(cluster, ns, "web", 4) and images(cluster, ns, "web") == {"busybox:3"},
        "resume to v3",
    )

    # Restart: a new ReplicaSet with the same image.
    before = {p["metadata"]["name"] for p in cluster.live_pods(ns, "app=web")}
    cluster.kubectl("rollout", "restart", "-n", ns, "deployment/web")
    wait_for(
        lambda: (
            rollout_done(cluster, ns, "web", 4)
            and not before & {p["metadata"]["name"] for p in cluster.live_pods(ns, "app=web")}
        ),
        "restarted pods",
    )
    described = cluster.kubectl("describe", "deployment", "-n", ns, "web")
    assert "ScalingReplicaSet" in described and "Scaled down replica set web-" in described, described
    assert "MinimumReplicasAvailable" in described and "NewReplicaSetAvailable" in described, described


def test_stuck_rollout_reports_deadline_and_scales_proportionally(cluster: Cluster) -> None:
    ns = cluster.namespace("stuck")
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 0}}
    cluster.apply(ns, deployment("app", 6, strategy=strategy, progressDeadlineSeconds=3))
    cluster.kubectl("rollout", "status", "-n", ns, "deployment/app", "--timeout=30s")
    # New pods wait for a readiness gate nobody sets: the rollout cannot finish.
    d = cluster.obj(ns, "deployment", "app")
    d["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": "example.com/never"}]
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    cluster.call("PUT", f"/apis/apps/v1/namespaces/{ns}/deployments/app", d)

    def progressing() -> dict:
        conds = cluster.obj(ns, "deployment", "app")["status"].get("conditions", [])
        return next((c for c in conds if c["type"] == "Progressing"), {})

    wait_for(
        lambda: progressing().get("reason") == "ProgressDeadlineExceeded",
        "ProgressDeadlineExceeded",
        timeout=20,
    )
    assert progressing()["status"] == "False"
    result = cluster.server.kubectl(
        "rollout", "status", "-n", ns, "deployment/app", "--timeout=10s", check=False
    )
    assert result.returncode != 0 and "exceeded its progress deadline" in result.stderr, result.stderr

    def sizes() -> dict[str, int]:
        rss = cluster.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
        return {r["spec"]["template"]["spec"]["containers"][0]["image"]: r["spec"]["replicas"] for r in rss}

    wait_for(lambda: sizes() == {"busybox:1": 6, "busybox:2": 3}, "6 old + 3 surge pods")
    # Scale 6 -> 12 mid-rollout: 9 pods (max 6+3) become 15 (max 12+3) split 10 : 5.
    cluster.kubectl("scale", "-n", ns, "deployment/app", "--replicas=12")
    wait_for(lambda: sizes() == {"busybox:1": 10, "busybox:2": 5}, "a proportional split", timeout=15)


# --- daemon sets -----------------------------------------------------------------------------------


def test_daemonset_follows_nodes(cluster: Cluster) -> None:
    ns = cluster.namespace("ds")
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": pod_template("agent")},
    }
    cluster.apply(ns, ds)

    def on_nodes() -> set[str]:
        return {p["spec"].get("nodeName") for p in cluster.running(ns, "app=agent")}

    def status_is(desired: int) -> bool:
        st = (cluster.obj(ns, "daemonset", "agent") or {}).get("status", {})
        return (
            st.get("desiredNumberScheduled") == desired
            and st.get("currentNumberScheduled") == desired
            and st.get("numberReady") == desired
            and st.get("updatedNumberScheduled") == desired
            and st.get("numberAvailable") == desired
        )

    wait_for(
        lambda: on_nodes() == {"stable-0", "stable-1"} and status_is(2),
        "a pod on each node",
        check=cluster.check,
    )
    pod = cluster.live_pods(ns, "app=agent")[0]
    pinned = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert pinned["nodeSelectorTerms"][0]["matchFields"][0]["key"] == "metadata.name"
    keys = {(t.get("key"), t.get("effect")) for t in pod["spec"]["tolerations"]}
    assert ("node.kubernetes.io/unreachable", "NoExecute") in keys

    # A node joins: it gets a pod.
    joiner = cluster.start_nodes("join-", 1)
    wait_for(
        lambda: on_nodes() == {"stable-0", "stable-1", "join-0"} and status_is(3),
        "a pod on the new node",
        check=cluster.check,
    )

    # Rolling update, one node at a time.
    cluster.kubectl("set", "image", "-n", ns, "daemonset/agent", "c=busybox:2")
    wait_for(
        lambda: (
            status_is(3)
            and {p["spec"]["containers"][0]["image"] for p in cluster.running(ns, "app=agent")}
            == {"busybox:2"}
        ),
        "the daemon pods updated",
        check=cluster.check,
    )

    # The node leaves: its agent stops and the Node is deleted; its pod goes.
    joiner.expected_dead = True  # type: ignore[attr-defined]
    joiner.stop()
    cluster.kubectl("delete", "node", "join-0")
    wait_for(
        lambda: (
            on_nodes() == {"stable-0", "stable-1"}
            and not [p for p in cluster.pods(ns) if p["spec"].get("nodeName") == "join-0"]
        ),
        "the pod of the departed node gone",
        check=cluster.check,
    )
    wait_for(lambda: status_is(2), "status back to 2")


# --- endpoints -------------------------------------------------------------------------------------


def test_endpoints_follow_readiness(cluster: Cluster) -> None:
    ns = cluster.namespace("ep")
    gate = "example.com/serving"
    d = deployment("api", 3)
    d["spec"]["template"]["spec"]["readinessGates"] = [{"conditionType": gate}]
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
           "spec": {"selector": {"app": "api"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}  # fmt: skip
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api-headless"},
                "spec": {"clusterIP": "None", "selector": {"app": "api"}}}  # fmt: skip
    cluster.apply(ns, d, svc, headless)

    def addresses(name: str) -> tuple[list[str], list[str], list[int]]:
        ep = cluster.obj(ns, "endpoints", name) or {}
        ready_ips, not_ready, ports = [], [], []
        for s in ep.get("subsets") or []:
            ready_ips += [a["ip"] for a in s.get("addresses") or []]
            not_ready += [a["ip"] for a in s.get("notReadyAddresses") or []]
            ports += [p["port"] for p in s.get("ports") or []]
        return sorted(ready_ips), sorted(not_ready), ports

    def pod_ips() -> list[str]:
        return sorted(
            p["status"]["podIP"] for p in cluster.live_pods(ns, "app=api") if p.get("status", {}).get("podIP")
        )

    wait_for(
        lambda: len(pod_ips()) == 3 and addresses("api")[1] == pod_ips(),
        "3 not-ready addresses",
        check=cluster.check,
    )
    assert addresses("api")[0] == [] and set(addresses("api")[2]) == {8080}
    # The gate opens for one pod: it moves to the ready addresses.
    one = cluster.live_pods(ns, "app=api")[0]
    cond = {
        "type": gate,
        "status": "True",
        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    resp = cluster.http.patch(
        f"{cluster.url}/api/v1/namespaces/{ns}/pods/{one['metadata']['name']}/status",
        data=json.dumps({"status": {"conditions": [cond]}}),
        headers={"Content-Type": "application/strategic-merge-patch+json"},
        timeout=10,
    )
    assert resp.ok, resp.text
    ip = one["status"]["podIP"]
    wait_for(
        lambda: addresses("api")[0] == [ip] and ip not in addresses("api")[1],
        "the ready address",
        check=cluster.check,
    )
    # Headless: addresses without ports, the headless label.
    wait_for(lambda: addresses("api-headless")[:2] == addresses("api")[:2], "headless endpoints")
    hl = cluster.obj(ns, "endpoints", "api-headless")
    assert hl["metadata"]["labels"].get("service.kubernetes.io/headless") == ""
    assert addresses("api-headless")[2] == []
    # Scale down to 1: the endpoints shrink; the service goes: its endpoints go.
    cluster.kubectl("scale", "-n", ns, "deployment/api", "--replicas=1")
    wait_for(lambda: len(addresses("api")[0] + addresses("api")[1]) == 1, "one address left")
    cluster.kubectl("delete", "service", "-n", ns, "api")
    wait_for(lambda: cluster.obj(ns, "endpoints", "api") is None, "the endpoints deleted with the service")


# --- garbage collection and namespaces ---------------------------------------------------------------


def test_cascading_and_orphaning_deletes(cluster: Cluster) -> None:
    ns = cluster.namespace("gc")
    cluster.apply(ns, deployment("bg", 2), deployment("orph", 2), deployment("fg", 2))
    for name in ("bg", "orph", "fg"):
        wait_for(lambda n=name: rollout_done(cluster, ns, n, 2), f"{name} rolled out", check=cluster.check)

    # kubectl delete deployment: background — its ReplicaSet and pods go too.
    cluster.kubectl("delete", "deployment", "-n", ns, "bg")
    wait_for(lambda: not cluster.pods(ns, "app=bg"), "bg's pods gone", check=cluster.check)
    assert not [
        r
        for r in cluster.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
        if r["metadata"]["name"].startswith("bg-")
    ]

    # --cascade=orphan keeps the ReplicaSet and pods, without the owner reference.
    rs_before = [
        r
        for r in cluster.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
        if r["metadata"]["name"].startswith("orph-")
    ]
    cluster.kubectl("delete", "deployment", "-n", ns, "orph", "--cascade=orphan")
    wait_for(lambda: cluster.obj(ns, "deployment", "orph") is None, "orph deleted")
    (rs,) = [
        r
        for r in cluster.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
        if r["metadata"]["name"].startswith("orph-")
    ]
    assert rs["metadata"]["uid"] == rs_before[0]["metadata"]["uid"] and not owner_uids(rs)
    assert len(cluster.running(ns, "app=orph")) == 2
    assert all(owner_uids(p) == [rs["metadata"]["uid"]] for p in cluster.pods(ns, "app=orph"))

    # --cascade=foreground: the deployment waits (finalizer) until its dependents are gone.
    cluster.kubectl("delete", "deployment", "-n", ns, "fg", "--cascade=foreground", "--wait=false")
    d = cluster.obj(ns, "deployment", "fg")
    assert d is None or "foregroundDeletion" in d["metadata"].get("finalizers", [])
    wait_for(
        lambda: cluster.obj(ns, "deployment", "fg") is None,
        "fg deleted after its dependents",
        check=cluster.check,
    )
    assert not cluster.pods(ns, "app=fg")
    assert not [
        r
        for r in cluster.get(f"/apis/apps/v1/namespaces/{ns}/replicasets")["items"]
        if r["metadata"]["name"].startswith("fg-")
    ]


def test_namespace_deletion_removes_everything(cluster: Cluster) -> None:
    ns = cluster.namespace("doomed")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}  # fmt: skip
    cluster.apply(ns, deployment("web", 2), cm, svc)
    wait_for(lambda: rollout_done(cluster, ns, "web", 2), "web rolled out", check=cluster.check)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    phase = (cluster.get(f"/api/v1/namespaces/{ns}", missing_ok=True) or {}).get("status", {}).get("phase")
    assert phase in ("Terminating", None)
    wait_for(
        lambda: cluster.get(f"/api/v1/namespaces/{ns}", missing_ok=True) is None,
        "the namespace gone",
        check=cluster.check,
    )
    for path in (f"/api/v1/namespaces/{ns}/pods", f"/apis/apps/v1/namespaces/{ns}/deployments",
                 f"/apis/apps/v1/namespaces/{ns}/replicasets", f"/api/v1/namespaces/{ns}/configmaps",
                 f"/api/v1/namespaces/{ns}/services"):  # fmt: skip
        assert cluster.get(path)["items"] == [], path


# --- node failure ----------------------------------------------------------------------------------


def test_dead_node_is_tainted_and_its_pods_replaced_elsewhere(cluster: Cluster) -> None:
    ns = cluster.namespace("evict")
    doomed = cluster.start_nodes("doomed-", 1)
    # Everyone but the doomed node is cordoned while the pods are placed.
    for n in ("stable-0", "stable-1"):
        cluster.kubectl("cordon", n)
    try:
        tolerations = [{"key": k, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}
                       for k in ("node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready")]  # fmt: skip
        d = deployment("svc", 2)
        d["spec"]["template"]["spec"]["tolerations"] = tolerations
        cluster.apply(ns, d)
        wait_for(
            lambda: (
                [p["spec"].get("nodeName") for p in cluster.running(ns, "app=svc")]
                == ["doomed-0", "doomed-0"]
            ),
            "both pods on the doomed node",
            check=cluster.check,
        )
    finally:
        for n in ("stable-0", "stable-1"):
            cluster.kubectl("uncordon", n)
    old = {p["metadata"]["name"] for p in cluster.pods(ns)}

    doomed.expected_dead = True  # type: ignore[attr-defined]
    doomed.stop(signal.SIGKILL)

    def node_state() -> tuple[str, set[tuple[str, str]]]:
        node = cluster.get("/api/v1/nodes/doomed-0")
        ready_status = next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")
        return ready_status, {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}

    wait_for(
        lambda: node_state() == ("Unknown", {("node.kubernetes.io/unreachable", "NoSchedule"),
                                             ("node.kubernetes.io/unreachable", "NoExecute")}),
        "the node Unknown and tainted",
        timeout=20,
        check=cluster.check,
    )  # fmt: skip
    wait_for(
        lambda: (
            len(cluster.running(ns, "app=svc")) == 2
            and all(p["spec"]["nodeName"].startswith("stable-") for p in cluster.running(ns, "app=svc"))
        ),
        "replacements running on the live nodes",
        timeout=20,
        check=cluster.check,
    )
    evicted = [p for p in cluster.pods(ns) if p["metadata"]["name"] in old]
    assert all(p["metadata"].get("deletionTimestamp") for p in evicted)
    assert all(
        any(
            c["type"] == "DisruptionTarget" and c["reason"] == "DeletionByTaintManager"
            for c in p["status"]["conditions"]
        )
        for p in evicted
    )
    assert cluster.events(ns, "TaintManagerEviction")

    # The node comes back: the taints come off and the evicted pods finish terminating.
    back = cluster.start_nodes("doomed-", 1)
    wait_for(lambda: node_state() == ("True", set()), "the node untainted", timeout=20, check=cluster.check)
    wait_for(
        lambda: not [p for p in cluster.pods(ns) if p["metadata"]["name"] in old],
        "the evicted pods gone",
        timeout=20,
    )
    back.expected_dead = True  # type: ignore[attr-defined]
    back.stop()
    cluster.kubectl("delete", "node", "doomed-0")


# --- the manager itself ----------------------------------------------------------------------------


def test_metrics_and_failover_to_the_standby(cluster: Cluster) -> None:
    leader = cluster.leader()
    assert leader in cluster.managers
    proc, port = cluster.managers[leader]
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for name in ("replicaset", "deployment", "daemonset", "endpoint", "garbagecollector"):
        assert f'workqueue_depth{{name="{name}"}}' in metrics
        assert f'workqueue_work_duration_seconds_count{{name="{name}"}}' in metrics
    assert 'leader_election_master_status{name="kube-controller-manager"} 1.0' in metrics
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok"
    standby = next(n for n in cluster.managers if n != leader)
    _, standby_port = cluster.managers[standby]
    standby_metrics = requests.get(f"http://127.0.0.1:{standby_port}/metrics", timeout=5).text
    assert 'leader_election_master_status{name="kube-controller-manager"} 0.0' in standby_metrics

    proc.expected_dead = True  # type: ignore[attr-defined]
    proc.stop(signal.SIGKILL)
    wait_for(
        lambda: cluster.leader() == standby, "the standby to take the Lease", timeout=20, check=cluster.check
    )
    ns = cluster.namespace("failover")
    cluster.apply(ns, replicaset("after", 2))
    wait_for(
        lambda: len(cluster.running(ns, "app=after")) == 2,
        "the new leader to create pods",
        check=cluster.check,
    )
