"""EndpointSlices end to end: a 3-member store, the API server, the scheduler, hollow nodes and the
controller manager as real processes, driven through kubectl 1.32 and plain HTTP.

A Deployment behind a Service gets a slice that follows its pods as they scale, `kubectl describe
svc` shows the endpoints (kubectl reads them from the slices), `kubectl get endpointslices`
prints the usual columns, the resource is discoverable, explainable and validated, and the
slices go with their Service.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from tests import test_controllers_e2e as e2e
from tests.apiserver_fixture import apiserver  # noqa: F401 - the module's store + API server

pytestmark = [pytest.mark.slow]

cluster = e2e.cluster  # the module's scheduler, hollow nodes and controller managers
Cluster = e2e.Cluster
wait_for = e2e.wait_for

GROUP = "/apis/discovery.k8s.io/v1"
SERVICE_NAME = "kubernetes.io/service-name"


def slices(c: Cluster, ns: str, service: str) -> list[dict]:
    q = urllib.parse.urlencode({"labelSelector": f"{SERVICE_NAME}={service}"})
    return c.get(f"{GROUP}/namespaces/{ns}/endpointslices?{q}")["items"]


def ready_addresses(c: Cluster, ns: str, service: str) -> list[str]:
    return sorted(
        a
        for s in slices(c, ns, service)
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready")
        for a in e["addresses"]
    )


def pod_ips(c: Cluster, ns: str, selector: str) -> list[str]:
    return sorted(p["status"]["podIP"] for p in c.running(ns, selector) if p["status"].get("podIP"))


def test_slices_follow_a_deployment_and_show_in_kubectl(cluster: Cluster) -> None:  # noqa: F811
    ns = cluster.namespace("slices")
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}  # fmt: skip
    cluster.apply(ns, e2e.deployment("web", 3), svc)

    def settled(n: int) -> bool:
        ips = pod_ips(cluster, ns, "app=web")
        return len(ips) == n and ready_addresses(cluster, ns, "web") == ips

    wait_for(lambda: settled(3), "a slice with the 3 ready pods", check=cluster.check)
    (es,) = slices(cluster, ns, "web")
    service = cluster.obj(ns, "service", "web")
    md = es["metadata"]
    assert md["name"].startswith("web-") and md["generateName"] == "web-"
    assert md["labels"] == {
        "tier": "front",
        SERVICE_NAME: "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert [(r["kind"], r["uid"], r["controller"]) for r in md["ownerReferences"]] == [
        ("Service", service["metadata"]["uid"], True)
    ]
    assert es["addressType"] == "IPv4"
    assert es["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    pods = {p["metadata"]["name"]: p for p in cluster.running(ns, "app=web")}
    for ep in es["endpoints"]:
        owner = pods[ep["targetRef"]["name"]]
        assert ep["addresses"] == [owner["status"]["podIP"]] and ep["nodeName"] == owner["spec"]["nodeName"]
        assert ep["conditions"] == {"ready": True, "serving": True, "terminating": False}

    # kubectl 1.32 reads a service's endpoints from its slices.
    described = cluster.kubectl("describe", "svc", "-n", ns, "web")
    line = next(x for x in described.splitlines() if x.startswith("Endpoints:"))
    shown = sorted(line.split(":", 1)[1].strip().split(","))
    assert shown == sorted(f"{ip}:8080" for ip in pod_ips(cluster, ns, "app=web")), described

    table = cluster.kubectl("get", "endpointslices", "-n", ns).splitlines()
    assert table[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    row = next(r.split() for r in table[1:] if r.startswith(md["name"]))
    assert row[1:3] == ["IPv4", "8080"]
    assert sorted(row[3].split(",")) == pod_ips(cluster, ns, "app=web")

    # Scaling changes the slice.
    cluster.kubectl("scale", "-n", ns, "deployment/web", "--replicas=5")
    wait_for(lambda: settled(5), "the slice to grow to 5", check=cluster.check)
    cluster.kubectl("scale", "-n", ns, "deployment/web", "--replicas=1")
    wait_for(
        lambda: settled(1) and sum(len(s["endpoints"] or []) for s in slices(cluster, ns, "web")) == 1,
        "the slice to shrink to 1",
        check=cluster.check,
    )
    (shrunk,) = slices(cluster, ns, "web")

    # A managed slice deleted by hand comes back.
    cluster.kubectl("delete", "endpointslice", "-n", ns, shrunk["metadata"]["name"])
    wait_for(
        lambda: (
            [s["metadata"]["name"] != shrunk["metadata"]["name"] for s in slices(cluster, ns, "web")]
            == [True]
            and settled(1)
        ),
        "a new slice in place of the deleted one",
        check=cluster.check,
    )

    # The Service goes: so do its slices.
    cluster.kubectl("delete", "service", "-n", ns, "web")
    wait_for(
        lambda: not slices(cluster, ns, "web"), "the slices deleted with the service", check=cluster.check
    )


def test_headless_service_and_placeholder(cluster: Cluster) -> None:  # noqa: F811
    ns = cluster.namespace("slices-hl")
    headless = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                "spec": {"clusterIP": "None", "selector": {"app": "db"}}}  # fmt: skip
    cluster.apply(ns, headless)
    # No pods: one empty placeholder slice.
    wait_for(lambda: slices(cluster, ns, "db"), "a placeholder slice", check=cluster.check)
    (placeholder,) = slices(cluster, ns, "db")
    assert (
        not placeholder.get("endpoints")
        and placeholder["metadata"]["labels"]["service.kubernetes.io/headless"] == ""
    )
    cluster.apply(ns, e2e.deployment("db", 2))
    wait_for(
        lambda: len(pod_ips(cluster, ns, "app=db")) == 2 and ready_addresses(cluster, ns, "db") == pod_ips(cluster, ns, "app=db"),
        "the headless slice with 2 addresses",
        check=cluster.check,
    )  # fmt: skip
    (es,) = slices(cluster, ns, "db")
    assert es["metadata"]["name"] == placeholder["metadata"]["name"]  # rewritten, not replaced
    assert not es.get("ports")


def test_the_resource_through_kubectl(cluster: Cluster) -> None:  # noqa: F811
    ns = cluster.namespace("slices-api")
    resources = cluster.kubectl("api-resources", "--api-group=discovery.k8s.io")
    assert any(r.split()[:4] == ["endpointslices", "discovery.k8s.io/v1", "true", "EndpointSlice"]
               for r in resources.splitlines()[1:]), resources  # fmt: skip
    explained = cluster.kubectl("explain", "endpointslices.endpoints.conditions")
    assert "serving" in explained and "terminating" in explained

    manual = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {"name": "manual-1", "labels": {SERVICE_NAME: "manual"}}, "addressType": "IPv4",
              "endpoints": [{"addresses": ["10.9.0.1"], "conditions": {"ready": True}}],
              "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}  # fmt: skip
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manual))
    manual["endpoints"].append({"addresses": ["10.9.0.2"]})
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(manual))
    assert ready_addresses(cluster, ns, "manual") == ["10.9.0.1"]
    assert len(slices(cluster, ns, "manual")[0]["endpoints"]) == 2
    by_name = cluster.get(f"{GROUP}/namespaces/{ns}/endpointslices?fieldSelector=metadata.name%3Dmanual-1")
    assert [s["metadata"]["name"] for s in by_name["items"]] == ["manual-1"]
    cluster.kubectl("patch", "-n", ns, "endpointslice", "manual-1", "--type=merge", "-p", '{"ports":[]}')
    assert slices(cluster, ns, "manual")[0]["ports"] in ([], None)

    bad = dict(manual, metadata={"name": "bad-1"}, addressType="IPv5")
    result = cluster.server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert 'addressType: Unsupported value: "IPv5"' in result.stderr, result.stderr
    cluster.kubectl("delete", "endpointslice", "-n", ns, "manual-1")
    assert slices(cluster, ns, "manual") == []


def test_the_api_server_keeps_the_kubernetes_service_slice(cluster: Cluster) -> None:  # noqa: F811
    described = cluster.kubectl("describe", "svc", "-n", "default", "kubernetes")
    line = next(x for x in described.splitlines() if x.startswith("Endpoints:"))
    assert re.fullmatch(r"Endpoints:\s+\d+\.\d+\.\d+\.\d+:\d+", line.strip()), described
