"""StatefulSets end to end through kubectl 1.32, against real processes — a 3-member store, the API
server, the scheduler, the controller manager and two hollow nodes (`grove node --runtime fake`):
ordered creation (each pod waits for the previous one to be Ready, held back with a readiness
gate), scale down from the highest ordinal one pod at a time (seen on a watch), a partitioned
rolling update, `kubectl rollout status|history|undo sts`, `kubectl scale sts`, `kubectl get sts`
and the refusal of volumeClaimTemplates."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.apiserver_fixture import (
    ApiServerProcess,
    apiserver,  # noqa: F401 - the module's store + API server
)
from tests.cluster import Cluster, control_plane, wait_for
from tests.test_controllers_e2e import pod_template

pytestmark = [pytest.mark.slow]

GATE = "grove.io/open"


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServerProcess) -> Iterator[Cluster]:  # noqa: F811
    with control_plane(apiserver, "sts", "sts-") as c:
        yield c


def statefulset(name: str, replicas: int, image: str = "busybox:1", **spec: object) -> dict:
    template = pod_template(name, image, **spec.pop("pod", {}))  # type: ignore[arg-type]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
            **spec,
        },
    }


def sts_of(cluster: Cluster, ns: str, name: str) -> dict:
    return cluster.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/{name}") or {}


def pod_names(cluster: Cluster, ns: str, app: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in cluster.live_pods(ns, f"app={app}"))


def running(pod: dict) -> bool:
    return pod.get("status", {}).get("phase") == "Running"


def open_gate(cluster: Cluster, ns: str, name: str) -> None:
    pod = cluster.get(f"/api/v1/namespaces/{ns}/pods/{name}") or {}
    conds = [c for c in pod["status"].get("conditions", []) if c["type"] != GATE]
    conds.append({"type": GATE, "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    pod["status"]["conditions"] = conds
    cluster.call("PUT", f"/api/v1/namespaces/{ns}/pods/{name}/status", pod)


Event = tuple[str, str, bool]  # (type, pod name, being deleted)


class PodWatch:
    """Pod events of a namespace, in order, from a watch stream read by a thread until `last`
    says an event is the last one wanted (the server ends the watch after 30 s regardless)."""

    def __init__(self, cluster: Cluster, ns: str, last: Callable[[Event], bool]) -> None:
        rv = cluster.get(f"/api/v1/namespaces/{ns}/pods")["metadata"]["resourceVersion"]
        self.events: list[Event] = []
        self.last = last
        self.resp = requests.get(
            f"{cluster.url}/api/v1/namespaces/{ns}/pods?watch=1&resourceVersion={rv}&timeoutSeconds=30",
            stream=True,
            timeout=40,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.resp.iter_lines():
                if line:
                    ev = json.loads(line)
                    meta = ev["object"]["metadata"]
                    event = (ev["type"], meta["name"], bool(meta.get("deletionTimestamp")))
                    self.events.append(event)
                    if self.last(event):
                        break
        except (requests.RequestException, ValueError, AttributeError):
            pass
        finally:
            self.resp.close()  # here, not from the test's thread: closing under a blocked read waits

    def first(self, name: str, pred) -> int:
        return next(i for i, ev in enumerate(self.events) if ev[1] == name and pred(ev))

    def close(self) -> None:
        self.thread.join(45)


def test_ordered_creation_and_scale_down(cluster: Cluster) -> None:
    ns = cluster.namespace("sts-order")
    cluster.apply(ns, statefulset("web", 3, pod={"readinessGates": [{"conditionType": GATE}]}))
    for i in range(3):
        name = f"web-{i}"
        pod = wait_for(
            lambda name=name: next(
                (p for p in cluster.live_pods(ns, "app=web") if p["metadata"]["name"] == name and running(p)),
                None,
            ),
            f"{name} Running",
            check=cluster.check,
        )
        assert pod["spec"]["hostname"] == name and pod["spec"]["subdomain"] == "web"
        labels = pod["metadata"]["labels"]
        assert labels["statefulset.kubernetes.io/pod-name"] == name
        assert labels["apps.kubernetes.io/pod-index"] == str(i)
        assert labels["controller-revision-hash"].startswith("web-")
        # Running but not Ready (its gate is closed): the next ordinal must not exist yet.
        assert pod_names(cluster, ns, "web") == [f"web-{j}" for j in range(i + 1)]
        open_gate(cluster, ns, name)
    wait_for(lambda: sts_of(cluster, ns, "web").get("status", {}).get("readyReplicas") == 3, "3 ready")
    table = cluster.kubectl("get", "sts", "-n", ns, "-o", "wide")
    assert table.split("\n")[0].split() == ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]
    assert re.search(r"^web\s+3/3\s+\S+\s+c\s+busybox:1$", table, re.MULTILINE), table
    described = cluster.kubectl("describe", "sts", "-n", ns, "web")
    assert re.search(r"Pods Status:\s+3 Running / 0 Waiting", described), described
    wait_for(
        lambda: (
            "create Pod web-2 in StatefulSet web successful"
            in cluster.kubectl("describe", "sts", "-n", ns, "web")
        ),
        "the SuccessfulCreate events",
    )

    # Scale down: web-2 goes entirely before web-1 starts terminating.
    watch = PodWatch(cluster, ns, last=lambda ev: ev[:2] == ("DELETED", "web-1"))
    try:
        out = cluster.kubectl("scale", "-n", ns, "sts/web", "--replicas=1")
        assert "scaled" in out
        wait_for(
            lambda: pod_names(cluster, ns, "web") == ["web-0"], "scaled down to web-0", check=cluster.check
        )
        wait_for(lambda: not watch.thread.is_alive(), "web-1 deletion seen")
        gone_2 = watch.first("web-2", lambda ev: ev[0] == "DELETED")
        leaving_1 = watch.first("web-1", lambda ev: ev[2] or ev[0] == "DELETED")
        assert gone_2 < leaving_1, watch.events
        assert all(ev[1] != "web-0" or not ev[2] for ev in watch.events)
    finally:
        watch.close()
    wait_for(
        lambda: sts_of(cluster, ns, "web")["status"].get("replicas") == 1,
        "status.replicas 1",
        check=cluster.check,
    )


def history(cluster: Cluster, ns: str) -> list[int]:
    out = cluster.kubectl("rollout", "history", "-n", ns, "statefulset/db")
    return sorted(int(m.group(1)) for m in re.finditer(r"^(\d+)\s", out, re.MULTILINE))


def images(cluster: Cluster, ns: str) -> dict[str, str]:
    return {
        p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
        for p in cluster.live_pods(ns, "app=db")
        if running(p)
    }


def settled(cluster: Cluster, ns: str, replicas: int) -> bool:
    sts = sts_of(cluster, ns, "db")
    st = sts.get("status", {})
    return (
        st.get("observedGeneration") == sts["metadata"]["generation"]
        and st.get("readyReplicas") == replicas
        and st.get("replicas") == replicas
    )


def test_partitioned_rolling_update_history_undo_and_scale(cluster: Cluster) -> None:
    ns = cluster.namespace("sts-update")
    cluster.apply(ns, statefulset("db", 3))
    out = cluster.kubectl("rollout", "status", "-n", ns, "sts/db", "--timeout=60s")
    assert "partitioned roll out complete: 3 new pods have been updated" in out
    assert images(cluster, ns) == {"db-0": "busybox:1", "db-1": "busybox:1", "db-2": "busybox:1"}
    first = sts_of(cluster, ns, "db")["status"]
    assert first["currentRevision"] == first["updateRevision"]
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.live_pods(ns, "app=db")}

    # partition 2: only db-2 moves to the new template.
    patch = {
        "spec": {
            "updateStrategy": {"rollingUpdate": {"partition": 2}},
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}},
        }
    }
    cluster.kubectl("patch", "-n", ns, "sts/db", "-p", json.dumps(patch))
    wait_for(
        lambda: (
            images(cluster, ns) == {"db-0": "busybox:1", "db-1": "busybox:1", "db-2": "busybox:2"}
            and settled(cluster, ns, 3)
        ),
        "db-2 updated",
        check=cluster.check,
    )
    out = cluster.kubectl("rollout", "status", "-n", ns, "sts/db", "--timeout=60s")
    assert "partitioned roll out complete: 1 new pods have been updated" in out
    st = sts_of(cluster, ns, "db")["status"]
    assert st["updatedReplicas"] == 1 and st["currentReplicas"] == 2
    assert st["currentRevision"] == first["currentRevision"] != st["updateRevision"]
    kept = {p["metadata"]["name"]: p["metadata"]["uid"] for p in cluster.live_pods(ns, "app=db")}
    assert kept["db-0"] == uids["db-0"] and kept["db-1"] == uids["db-1"] and kept["db-2"] != uids["db-2"]

    # partition 0: the rest follow and currentRevision catches up.
    cluster.kubectl(
        "patch",
        "-n",
        ns,
        "sts/db",
        "-p",
        json.dumps({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
    )
    out = cluster.kubectl("rollout", "status", "-n", ns, "sts/db", "--timeout=60s")
    assert "partitioned roll out complete: 3 new pods have been updated" in out
    assert images(cluster, ns) == {f"db-{i}": "busybox:2" for i in range(3)}
    wait_for(
        lambda: (
            (s := sts_of(cluster, ns, "db")["status"])["currentRevision"] == s["updateRevision"]
            and s["currentReplicas"] == 3
        ),
        "currentRevision caught up",
    )
    assert history(cluster, ns) == [1, 2]
    detail = cluster.kubectl("rollout", "history", "-n", ns, "sts/db", "--revision=1")
    assert "busybox:1" in detail and "busybox:2" not in detail

    # Undo: back to busybox:1, revision 1 becomes revision 3.
    out = cluster.kubectl("rollout", "undo", "-n", ns, "sts/db")
    assert "rolled back" in out
    wait_for(
        lambda: images(cluster, ns) == {f"db-{i}": "busybox:1" for i in range(3)} and settled(cluster, ns, 3),
        "rolled back to busybox:1",
        check=cluster.check,
    )
    wait_for(lambda: history(cluster, ns) == [2, 3], "history 2, 3")
    cluster.kubectl("rollout", "status", "-n", ns, "sts/db", "--timeout=60s")

    # kubectl scale through the scale subresource: the highest ordinals go.
    cluster.kubectl("scale", "-n", ns, "sts/db", "--replicas=2")
    wait_for(lambda: pod_names(cluster, ns, "db") == ["db-0", "db-1"], "scaled to 2", check=cluster.check)
    wait_for(lambda: settled(cluster, ns, 2), "status of 2 replicas", check=cluster.check)
    scale = cluster.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/db/scale")
    assert scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2

    # Deleting the set collects its pods and revisions.
    cluster.kubectl("delete", "-n", ns, "sts/db")
    wait_for(
        lambda: (
            not cluster.live_pods(ns, "app=db")
            and not cluster.get(f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
        ),
        "pods and revisions collected",
        check=cluster.check,
    )


def test_volume_claim_templates_are_refused_with_a_status(cluster: Cluster) -> None:
    ns = cluster.namespace("sts-pvc")
    body = statefulset("data", 1)
    body["spec"]["volumeClaimTemplates"] = [
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    ]
    resp = cluster.http.post(
        f"{cluster.url}/apis/apps/v1/namespaces/{ns}/statefulsets", json=body, timeout=10
    )
    assert resp.status_code == 422, resp.text
    status = resp.json()
    assert status["kind"] == "Status" and status["reason"] == "Invalid"
    causes = status["details"]["causes"]
    assert any(
        c["field"] == "spec.volumeClaimTemplates" and "PersistentVolume" in c["message"] for c in causes
    )
    result = cluster.server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0 and "volumeClaimTemplates" in result.stderr


def test_parallel_starts_every_pod_without_waiting(cluster: Cluster) -> None:
    ns = cluster.namespace("sts-parallel")
    gated = statefulset(
        "par", 3, podManagementPolicy="Parallel", pod={"readinessGates": [{"conditionType": GATE}]}
    )
    cluster.apply(ns, gated)
    # No pod is ever Ready (the gates stay closed), yet all three run.
    wait_for(
        lambda: (
            sorted(p["metadata"]["name"] for p in cluster.live_pods(ns, "app=par") if running(p))
            == ["par-0", "par-1", "par-2"]
        ),
        "three pods Running",
        check=cluster.check,
    )
    assert sts_of(cluster, ns, "par")["status"].get("readyReplicas", 0) == 0
    cluster.kubectl("delete", "-n", ns, "sts/par")


def test_kubectl_knows_the_kind(cluster: Cluster) -> None:
    rows = {line.split()[0]: line.split() for line in cluster.kubectl("api-resources").splitlines()[1:]}
    assert rows["statefulsets"] == ["statefulsets", "sts", "apps/v1", "true", "StatefulSet"]
    explain = cluster.kubectl("explain", "sts.spec")
    assert "podManagementPolicy" in explain and "serviceName" in explain
