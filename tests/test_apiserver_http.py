"""grove's API server over plain HTTP: Kubernetes API conventions checked request by request,
and watches that survive a store leader kill. One store cluster + API server for the module."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from kvstore.localcluster import free_port
from tests import waiting
from tests.apiserver_fixture import apiserver  # noqa: F401

pytestmark = pytest.mark.slow

HISTORY = 400
CLUSTER_ARGS = {"history_size": HISTORY}
APISERVER_ARGS = [
    "--service-cluster-ip-range", "10.250.0.0/28",
    "--service-node-port-range", "30000-30009",
    "--bookmark-interval", "0.5",
]  # fmt: skip

JSON = {"Content-Type": "application/json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def req(self, method: str, path: str, body: Any = None, headers: dict | None = None, **params: Any):
        data = body if isinstance(body, bytes | str) or body is None else json.dumps(body)
        hdrs = dict(JSON if data is not None else {})
        hdrs.update(headers or {})
        return self.session.request(
            method, self.base + path, data=data, headers=hdrs, params=params, timeout=30
        )

    def ok(
        self, method: str, path: str, body: Any = None, headers: dict | None = None, **params: Any
    ) -> dict:
        resp = self.req(method, path, body, headers, **params)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def watch(self, path: str, **params: Any) -> Iterator[dict]:
        params.setdefault("watch", "1")
        with self.session.get(self.base + path, params=params, stream=True, timeout=(5, 60)) as resp:
            assert resp.status_code == 200, resp.text
            for line in resp.iter_lines():
                if line:
                    yield json.loads(line)


@pytest.fixture(scope="module")
def api(apiserver) -> Client:  # noqa: F811
    return Client(apiserver.url)


def status_of(resp: requests.Response, code: int, reason: str) -> dict:
    assert resp.status_code == code, resp.text
    body = resp.json()
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == code and body["reason"] == reason, body
    return body


def cm(name: str, labels: dict | None = None, data: dict | None = None, **meta: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "data": data or {},
    }


def make_namespace(api: Client, name: str) -> None:
    api.ok("POST", "/api/v1/namespaces", {"metadata": {"name": name}})


def watch_into(api: Client, path: str, out: queue.Queue, **params: Any) -> threading.Thread:
    def run() -> None:
        try:
            for event in api.watch(path, **params):
                out.put(event)
        except Exception as exc:  # noqa: BLE001 - surfaced to the test through the queue
            out.put(exc)
        out.put(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def take(q: queue.Queue, n: int, timeout: float = 20.0) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < n:
        item = q.get(timeout=max(0.1, deadline - time.monotonic()))
        if item is None or isinstance(item, Exception):
            raise AssertionError(f"watch ended after {events}: {item}")
        if item["type"] != "BOOKMARK":
            events.append(item)
    return events


# --- non-resource endpoints and discovery ------------------------------------------------------


def test_health_version_metrics(api):
    for path in ("/healthz", "/livez", "/readyz"):
        resp = api.req("GET", path)
        assert resp.status_code == 200 and resp.text == "ok"
    assert "[+]etcd ok" in api.req("GET", "/readyz", verbose="1").text
    version = api.ok("GET", "/version")
    assert version["gitVersion"] == "v1.32.0-grove" and version["major"] == "1"
    api.req("GET", "/api/v1/namespaces/default/configmaps")
    api.req("GET", "/api/v1/namespaces/default/configmaps/missing-one")
    metrics = api.req("GET", "/metrics").text
    assert (
        'apiserver_request_total{code="200",group="",resource="configmaps",subresource="",verb="LIST"}'
        in metrics
    )
    assert (
        'apiserver_request_total{code="404",group="",resource="configmaps",subresource="",verb="GET"}'
        in metrics
    )
    assert 'apiserver_request_duration_seconds_bucket{group="",le="0.005",resource="configmaps"' in metrics


def test_discovery(api):
    core = api.ok("GET", "/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["shortNames"] == ["po"] and by_name["pods"]["categories"] == ["all"]
    assert {"pods/status", "pods/binding", "pods/log", "namespaces/finalize"} <= set(by_name)
    apps = api.ok("GET", "/apis/apps/v1")
    assert {r["name"]: r.get("shortNames") for r in apps["resources"]}["deployments"] == ["deploy"]
    groups = [g["name"] for g in api.ok("GET", "/apis")["groups"]]
    assert {"apps", "coordination.k8s.io"} <= set(groups)
    aggregated = api.req(
        "GET",
        "/apis",
        headers={"Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"},
    )
    assert aggregated.json()["kind"] == "APIGroupDiscoveryList"
    assert "as=APIGroupDiscoveryList" in aggregated.headers["Content-Type"]
    index = api.ok("GET", "/openapi/v3")
    assert "apis/apps/v1" in index["paths"]


# --- errors --------------------------------------------------------------------------------------


def test_status_errors(api):
    base = "/api/v1/namespaces/default/configmaps"
    status_of(api.req("POST", base, b'{"metadata": '), 400, "BadRequest")
    status_of(api.req("POST", base, b"a: [\n", {"Content-Type": "application/yaml"}), 400, "BadRequest")
    status_of(api.req("POST", base, b"[1, 2]"), 400, "BadRequest")
    status_of(api.req("POST", base, b"hello", {"Content-Type": "text/plain"}), 415, "UnsupportedMediaType")
    status_of(
        api.req("PATCH", base + "/x", b"{}", {"Content-Type": "application/json"}),
        415,
        "UnsupportedMediaType",
    )
    status_of(
        api.req("GET", base, headers={"Accept": "application/vnd.kubernetes.protobuf"}), 406, "NotAcceptable"
    )
    status_of(api.req("GET", "/api/v1/widgets"), 404, "NotFound")
    status_of(api.req("GET", "/nothing/here"), 404, "NotFound")
    missing = status_of(api.req("GET", base + "/absent"), 404, "NotFound")
    assert missing["message"] == 'configmaps "absent" not found'
    assert missing["details"] == {"name": "absent", "kind": "configmaps"}
    status_of(api.req("PUT", base, cm("x")), 405, "MethodNotAllowed")
    status_of(api.req("DELETE", "/api/v1/namespaces"), 405, "MethodNotAllowed")
    api.ok("POST", base, cm("errs"))
    exists = status_of(api.req("POST", base, cm("errs")), 409, "AlreadyExists")
    assert exists["message"] == 'configmaps "errs" already exists'
    current = api.ok("GET", base + "/errs")
    api.ok("PUT", base + "/errs", {**current, "data": {"a": "1"}})
    stale = status_of(api.req("PUT", base + "/errs", {**current, "data": {"a": "2"}}), 409, "Conflict")
    assert "the object has been modified" in stale["message"]
    invalid = status_of(
        api.req(
            "POST", "/apis/apps/v1/namespaces/default/deployments", {"metadata": {"name": "Bad!"}, "spec": {}}
        ),
        422,
        "Invalid",
    )
    assert invalid["message"].startswith('Deployment.apps "Bad!" is invalid: [')
    fields = {c["field"] for c in invalid["details"]["causes"]}
    assert {"metadata.name", "spec.selector", "spec.template.spec.containers"} <= fields
    assert invalid["details"]["kind"] == "Deployment" and invalid["details"]["group"] == "apps"
    typed = status_of(api.req("POST", base, {"metadata": {"name": "t"}, "data": {"a": 1}}), 400, "BadRequest")
    assert "cannot unmarshal number into Go struct field ConfigMap.data of type string" in typed["message"]


def test_field_validation_modes(api):
    base = "/api/v1/namespaces/default/configmaps"
    body = b'{"metadata": {"name": "fv1"}, "data": {"a": "1"}, "extra": true}'
    strict = status_of(api.req("POST", base, body, fieldValidation="Strict"), 400, "BadRequest")
    assert 'strict decoding error: unknown field "extra"' in strict["message"]
    warned = api.req("POST", base, body, fieldValidation="Warn")
    assert warned.status_code == 201 and 'unknown field \\"extra\\"' in warned.headers["Warning"]
    assert "extra" not in warned.json()
    ignored = api.req("POST", base, body.replace(b"fv1", b"fv2"), fieldValidation="Ignore")
    assert ignored.status_code == 201 and "Warning" not in ignored.headers
    dup = b'{"metadata": {"name": "fv3"}, "data": {"a": "1", "a": "2"}}'
    strict = status_of(api.req("POST", base, dup, fieldValidation="Strict"), 400, "BadRequest")
    assert 'duplicate field "data.a"' in strict["message"]
    status_of(api.req("POST", base, body, fieldValidation="Sometimes"), 400, "BadRequest")


# --- objects --------------------------------------------------------------------------------------


def test_metadata_generation_and_status(api):
    make_namespace(api, "meta")
    base = "/apis/apps/v1/namespaces/meta/deployments"
    spec = {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "m"}},
        "template": {
            "metadata": {"labels": {"app": "m"}},
            "spec": {"containers": [{"name": "c", "image": "grove/busybox:1.35"}]},
        },
    }
    created = api.ok(
        "POST", base, {"metadata": {"generateName": "gen-"}, "spec": spec, "status": {"replicas": 9}}
    )
    meta = created["metadata"]
    name = meta["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert created["status"] == {}  # status is not set through the main resource
    assert created["spec"]["template"]["spec"]["restartPolicy"] == "Always"  # defaults
    path = f"{base}/{name}"
    labelled = api.ok("PATCH", path, {"metadata": {"labels": {"x": "y"}}}, MERGE)
    assert labelled["metadata"]["generation"] == 1  # metadata changes leave generation alone
    assert int(labelled["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    scaled = api.ok("PATCH", path, {"spec": {"replicas": 3}}, MERGE)
    assert scaled["metadata"]["generation"] == 2
    ignored = api.ok("PATCH", path, {"status": {"replicas": 7}}, MERGE)
    assert (
        ignored["status"] == {}
        and ignored["metadata"]["resourceVersion"] == scaled["metadata"]["resourceVersion"]
    )
    status = api.ok("PATCH", path + "/status", {"status": {"replicas": 3}, "spec": {"replicas": 50}}, MERGE)
    assert status["status"] == {"replicas": 3} and status["spec"]["replicas"] == 3
    assert status["metadata"]["generation"] == 2
    scale = api.ok("GET", path + "/scale")
    assert (
        scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3 and scale["status"]["selector"] == "app=m"
    )
    scale["spec"]["replicas"] = 4
    assert api.ok("PUT", path + "/scale", scale)["spec"]["replicas"] == 4
    status_of(api.req("PUT", path + "/scale", scale), 409, "Conflict")  # stale resourceVersion
    immutable = status_of(
        api.req("PATCH", path, {"spec": {"selector": {"matchLabels": {"app": "z"}}}}, MERGE), 422, "Invalid"
    )
    assert "field is immutable" in immutable["message"]


def test_service_allocations(api, apiserver):  # noqa: F811
    make_namespace(api, "svc")
    base = "/api/v1/namespaces/svc/services"

    def service(name: str, node_port: int | None = None, stype: str = "NodePort") -> dict:
        port = {"port": 80, "targetPort": 8080}
        if node_port:
            port["nodePort"] = node_port
        return {
            "metadata": {"name": name},
            "spec": {"type": stype, "selector": {"app": name}, "ports": [port]},
        }

    a = api.ok("POST", base, service("a", 30005))
    assert a["spec"]["ports"][0]["nodePort"] == 30005
    assert a["spec"]["clusterIP"].startswith("10.250.0.") and a["spec"]["clusterIPs"] == [
        a["spec"]["clusterIP"]
    ]
    taken = status_of(api.req("POST", base, service("b", 30005)), 422, "Invalid")
    assert "provided port is already allocated" in taken["message"]
    assert taken["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"
    status_of(api.req("GET", base + "/b"), 404, "NotFound")
    ips = {a["spec"]["clusterIP"]}
    ports = {30005}
    for i in range(3):
        s = api.ok("POST", base, service(f"auto{i}"))
        ips.add(s["spec"]["clusterIP"])
        ports.add(s["spec"]["ports"][0]["nodePort"])
    assert len(ips) == 4 and len(ports) == 4 and all(30000 <= p <= 30009 for p in ports)
    # Allocations live in the store: a restarted API server still knows 30005 is taken.
    apiserver.restart()
    status_of(api.req("POST", base, service("b", 30005)), 422, "Invalid")
    ip_taken = status_of(
        api.req(
            "POST",
            base,
            {
                **service("c", stype="ClusterIP"),
                "spec": {**service("c")["spec"], "type": "ClusterIP", "clusterIP": a["spec"]["clusterIP"]},
            },
        ),
        422,
        "Invalid",
    )
    assert "provided IP is already allocated" in ip_taken["message"]
    # Released on delete: the port can be had again.
    api.ok("DELETE", base + "/a")
    again = api.ok("POST", base, service("b", 30005))
    assert again["spec"]["ports"][0]["nodePort"] == 30005
    # An update that leaves the allocated values out keeps them; the clusterIP is immutable.
    updated = api.ok("PUT", base + "/b", {**service("b"), "metadata": {"name": "b"}})
    assert updated["spec"]["clusterIP"] == again["spec"]["clusterIP"]
    assert updated["spec"]["ports"][0]["nodePort"] == 30005
    other_ip = "10.250.0.14" if updated["spec"]["clusterIP"] != "10.250.0.14" else "10.250.0.13"
    changed = dict(updated, spec=dict(updated["spec"], clusterIP=other_ip, clusterIPs=[other_ip]))
    status_of(api.req("PUT", base + "/b", changed), 422, "Invalid")


def test_pod_binding_graceful_delete_and_finalizers(api):
    make_namespace(api, "pods")
    base = "/api/v1/namespaces/pods/pods"

    def pod(name: str, **meta: Any) -> dict:
        return {
            "metadata": {"name": name, **meta},
            "spec": {"containers": [{"name": "c", "image": "grove/busybox:1.35"}]},
        }

    created = api.ok("POST", base, pod("p1"))
    assert created["status"]["phase"] == "Pending" and created["status"]["qosClass"] == "BestEffort"
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "p1"},
        "target": {"kind": "Node", "name": "node-a"},
    }
    assert api.req("POST", base + "/p1/binding", binding).status_code == 201
    bound = api.ok("GET", base + "/p1")
    assert bound["spec"]["nodeName"] == "node-a"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in bound["status"]["conditions"])
    twice = status_of(api.req("POST", base + "/p1/binding", binding), 409, "Conflict")
    assert 'already assigned to node "node-a"' in twice["message"]
    # Graceful: the pod stays, marked, until its node agent confirms (gracePeriodSeconds=0).
    marked = api.ok("DELETE", base + "/p1")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 30
    assert api.ok("GET", base + "/p1")["metadata"]["deletionGracePeriodSeconds"] == 30
    api.ok("DELETE", base + "/p1", {"gracePeriodSeconds": 0})
    status_of(api.req("GET", base + "/p1"), 404, "NotFound")
    # Never scheduled: gone at once.
    api.ok("POST", base, pod("p2"))
    api.ok("DELETE", base + "/p2")
    status_of(api.req("GET", base + "/p2"), 404, "NotFound")
    # Finalizers hold an object until they are removed.
    api.ok("POST", "/api/v1/namespaces/pods/configmaps", cm("held", finalizers=["example.com/hold"]))
    held = api.ok("DELETE", "/api/v1/namespaces/pods/configmaps/held")
    assert held["metadata"]["deletionTimestamp"] and held["metadata"]["finalizers"] == ["example.com/hold"]
    added = status_of(
        api.req(
            "PATCH",
            "/api/v1/namespaces/pods/configmaps/held",
            {"metadata": {"finalizers": ["a/b", "example.com/hold"]}},
            MERGE,
        ),
        422,
        "Invalid",
    )
    assert "no new finalizers can be added if the object is being deleted" in added["message"]
    api.ok("PATCH", "/api/v1/namespaces/pods/configmaps/held", {"metadata": {"finalizers": None}}, MERGE)
    status_of(api.req("GET", "/api/v1/namespaces/pods/configmaps/held"), 404, "NotFound")


def test_propagation_policy_is_recorded(api):
    base = "/api/v1/namespaces/default/configmaps"
    for name, policy, finalizer in (
        ("orph", "Orphan", "orphan"),
        ("fore", "Foreground", "foregroundDeletion"),
    ):
        api.ok("POST", base, cm(name))
        marked = api.ok(
            "DELETE",
            f"{base}/{name}",
            {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": policy},
        )
        assert marked["metadata"]["finalizers"] == [finalizer] and marked["metadata"]["deletionTimestamp"]
    api.ok("POST", base, cm("back"))
    gone = api.ok("DELETE", f"{base}/back", propagationPolicy="Background")
    assert gone["kind"] == "Status" and gone["status"] == "Success" and gone["details"]["name"] == "back"
    status_of(api.req("DELETE", f"{base}/orph", propagationPolicy="Sideways"), 400, "BadRequest")


def test_namespace_lifecycle(api):
    make_namespace(api, "doomed")
    api.ok("POST", "/api/v1/namespaces/doomed/configmaps", cm("inside"))
    terminating = api.ok("DELETE", "/api/v1/namespaces/doomed")
    assert terminating["status"]["phase"] == "Terminating" and terminating["spec"]["finalizers"] == [
        "kubernetes"
    ]
    refused = status_of(api.req("POST", "/api/v1/namespaces/doomed/configmaps", cm("late")), 403, "Forbidden")
    assert "because it is being terminated" in refused["message"]
    status_of(api.req("DELETE", "/api/v1/namespaces/default"), 403, "Forbidden")
    status_of(api.req("POST", "/api/v1/namespaces/nowhere/configmaps", cm("x")), 404, "NotFound")
    # The namespace controller's last step: removing the `kubernetes` finalizer lets it go.
    current = api.ok("GET", "/api/v1/namespaces/doomed")
    current["spec"]["finalizers"] = []
    api.ok("PUT", "/api/v1/namespaces/doomed/finalize", current)
    status_of(api.req("GET", "/api/v1/namespaces/doomed"), 404, "NotFound")


def test_events_aggregate(api):
    event = {
        "metadata": {"generateName": "p1-"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p1", "uid": "u-1"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container",
        "type": "Warning",
        "source": {"component": "kubelet", "host": "node-a"},
    }
    first = api.ok("POST", "/api/v1/namespaces/default/events", event)
    second = api.ok("POST", "/api/v1/namespaces/default/events", event)
    assert second["metadata"]["name"] == first["metadata"]["name"] and second["count"] == 2
    assert first["firstTimestamp"] and second["lastTimestamp"]
    listed = api.ok(
        "GET",
        "/api/v1/namespaces/default/events",
        fieldSelector="involvedObject.name=p1,involvedObject.uid=u-1",
    )
    assert [e["count"] for e in listed["items"]] == [2]


def test_table_partial_metadata_and_yaml(api):
    make_namespace(api, "tables")
    api.ok("POST", "/api/v1/namespaces/tables/configmaps", cm("t1", data={"a": "1", "b": "2"}))
    table = api.ok("GET", "/api/v1/namespaces/tables/configmaps", headers=TABLE)
    assert table["kind"] == "Table" and [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Data",
        "Age",
    ]
    assert table["rows"][0]["cells"][:2] == ["t1", 2]
    partial = api.ok(
        "GET", "/api/v1/namespaces/tables/configmaps",
        headers={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"},
    )  # fmt: skip
    assert partial["kind"] == "PartialObjectMetadataList" and "data" not in partial["items"][0]
    as_yaml = api.req(
        "GET", "/api/v1/namespaces/tables/configmaps/t1", headers={"Accept": "application/yaml"}
    )
    assert (
        as_yaml.headers["Content-Type"].startswith("application/yaml") and "kind: ConfigMap" in as_yaml.text
    )
    created = api.req(
        "POST", "/api/v1/namespaces/tables/configmaps", "metadata:\n  name: from-yaml\ndata:\n  k: v\n",
        {"Content-Type": "application/yaml"},
    )  # fmt: skip
    assert created.status_code == 201 and created.json()["data"] == {"k": "v"}


def test_pod_log_and_exec_answer_with_status(api):
    api.ok(
        "POST",
        "/api/v1/namespaces/default/pods",
        {
            "metadata": {"name": "logs"},
            "spec": {"containers": [{"name": "c", "image": "grove/busybox:1.35"}]},
        },
    )
    status_of(api.req("GET", "/api/v1/namespaces/default/pods/absent/log"), 404, "NotFound")
    status_of(api.req("GET", "/api/v1/namespaces/default/pods/logs/log"), 400, "BadRequest")
    api.req(
        "POST",
        "/api/v1/namespaces/default/pods/logs/binding",
        {"kind": "Binding", "apiVersion": "v1", "metadata": {"name": "logs"}, "target": {"name": "n1"}},
    )
    no_node = status_of(api.req("GET", "/api/v1/namespaces/default/pods/logs/log"), 400, "BadRequest")
    assert no_node["message"] == 'node "n1" of pod logs does not exist'
    # A node whose agent does not answer: 503, naming where it was looked for.
    port = free_port()
    api.ok("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}})
    node = api.ok("GET", "/api/v1/nodes/n1")
    node["status"] = {
        "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
    }
    api.ok("PUT", "/api/v1/nodes/n1/status", node)
    down = status_of(api.req("GET", "/api/v1/namespaces/default/pods/logs/log"), 503, "ServiceUnavailable")
    assert f"node agent of n1 at 127.0.0.1:{port}" in down["message"]
    status_of(
        api.req("GET", "/api/v1/namespaces/default/pods/logs/exec", command="true", stdout="1"),
        503,
        "ServiceUnavailable",
    )
    api.ok("DELETE", "/api/v1/nodes/n1")


# --- watches --------------------------------------------------------------------------------------


def test_watch_semantics(api):
    make_namespace(api, "w")
    base = "/api/v1/namespaces/w/configmaps"
    api.ok("POST", base, cm("pre", {"sel": "yes"}))
    # Without a resourceVersion: the current objects as ADDED, then changes; selectors apply.
    q: queue.Queue = queue.Queue()
    watch_into(api, base, q, labelSelector="sel=yes", timeoutSeconds="20")
    [added] = take(q, 1)
    assert added["type"] == "ADDED" and added["object"]["metadata"]["name"] == "pre"
    api.ok("POST", base, cm("other", {"sel": "no"}))
    api.ok("PATCH", base + "/other", {"metadata": {"labels": {"sel": "yes"}}}, MERGE)  # starts matching
    api.ok("PATCH", base + "/pre", {"metadata": {"labels": {"sel": "no"}}}, MERGE)  # stops matching
    api.ok("DELETE", base + "/other")
    events = take(q, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "other"), ("DELETED", "pre"), ("DELETED", "other"),
    ]  # fmt: skip
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and int(added["object"]["metadata"]["resourceVersion"]) < versions[0]
    # From a list's resourceVersion: nothing between the list and the watch is lost.
    listed = api.ok("GET", base)
    api.ok("POST", base, cm("after-list"))
    replay = list(api.watch(base, resourceVersion=listed["metadata"]["resourceVersion"], timeoutSeconds="1"))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in replay] == [("ADDED", "after-list")]
    # Bookmarks on request; timeoutSeconds ends the stream.
    started = time.monotonic()
    marks = list(
        api.watch(
            base,
            resourceVersion=listed["metadata"]["resourceVersion"],
            allowWatchBookmarks="true",
            timeoutSeconds="2",
        )
    )
    assert time.monotonic() - started < 10
    bookmarks = [e for e in marks if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[-1]["object"]["kind"] == "ConfigMap"
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= int(
        replay[0]["object"]["metadata"]["resourceVersion"]
    )
    # One object by name, as kubectl delete --wait watches it.
    q2: queue.Queue = queue.Queue()
    watch_into(api, base, q2, fieldSelector="metadata.name=after-list", timeoutSeconds="20")
    assert take(q2, 1)[0]["type"] == "ADDED"
    api.ok("DELETE", base + "/after-list")
    assert take(q2, 1)[0]["type"] == "DELETED"
    # Table watches carry rows, with column definitions on the first event only.
    q3: queue.Queue = queue.Queue()

    table_rv = api.ok("GET", base)["metadata"]["resourceVersion"]

    def table_watch() -> None:
        try:
            for event in _watch_with_headers(api, base, TABLE, table_rv):
                q3.put(event)
        except requests.RequestException as exc:
            q3.put(exc)
        q3.put(None)

    threading.Thread(target=table_watch, daemon=True).start()
    api.ok("POST", base, cm("t1"))
    api.ok("POST", base, cm("t2"))
    rows = take(q3, 2)
    assert rows[0]["object"]["kind"] == "Table" and rows[0]["object"]["columnDefinitions"]
    assert rows[1]["object"]["columnDefinitions"] == [] and rows[1]["object"]["rows"][0]["cells"][0] == "t2"


def _watch_with_headers(api: Client, path: str, headers: dict, rv: str) -> Iterator[dict]:
    params = {"watch": "1", "resourceVersion": rv, "timeoutSeconds": "3"}
    with api.session.get(
        api.base + path, params=params, headers=headers, stream=True, timeout=(5, 30)
    ) as resp:
        for line in resp.iter_lines():
            if line:
                yield json.loads(line)


def test_watch_too_old_is_410(api):
    make_namespace(api, "old")
    for i in range(HISTORY + 50):  # push resourceVersion 1 out of the store's event history
        api.ok("POST", "/api/v1/namespaces/old/configmaps", cm(f"c{i}"))
    events = list(api.watch("/apis/coordination.k8s.io/v1/leases", resourceVersion="1", timeoutSeconds="5"))
    assert events and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


def test_watch_survives_store_leader_kill(api, apiserver):  # noqa: F811
    make_namespace(api, "ha")
    base = "/api/v1/namespaces/ha/configmaps"
    api.ok("POST", base, cm("counter", data={"i": "-1"}))
    rv = api.ok("GET", base)["metadata"]["resourceVersion"]
    q: queue.Queue = queue.Queue()
    watch_into(api, base, q, resourceVersion=rv, timeoutSeconds="60")
    cluster = apiserver.cluster
    killed = None
    total = 40
    try:
        for i in range(total):
            if i == 10:
                killed = cluster.leader_index()
                cluster.kill(killed)

            def patched(i: int = i) -> bool:
                resp = api.req("PATCH", base + "/counter", {"data": {"i": str(i)}}, MERGE)
                assert resp.status_code in (200, 500, 503, 504), resp.text
                return resp.status_code == 200

            # a write may fail while the store elects a new leader; retrying is idempotent
            waiting.wait_for(patched, f"PATCH {i} to be accepted", 30)
        events = take(q, total, timeout=60)
        assert [e["type"] for e in events] == ["MODIFIED"] * total
        assert [e["object"]["data"]["i"] for e in events] == [str(i) for i in range(total)]
        versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert versions == sorted(set(versions))
    finally:
        if killed is not None:
            cluster.restart(killed)
