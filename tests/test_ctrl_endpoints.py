"""The Endpoints controller's decisions: ready and not-ready addresses, named and numbered target
ports, headless services, packing into subsets, and no write when nothing changed."""

from __future__ import annotations

from orchestrator.controllers.endpoints import (
    HEADLESS_LABEL,
    build_subsets,
    desired_endpoints,
    find_port,
)
from orchestrator.controllers.testing import pod


def service(
    name="web", *, selector=None, ports=None, cluster_ip="10.96.0.10", publish_not_ready=False, labels=None
):
    spec = {
        "selector": selector if selector is not None else {"app": "web"},
        "clusterIP": cluster_ip,
        "type": "ClusterIP",
    }
    if ports is not None:
        spec["ports"] = ports
    if publish_not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": "svc-uid", "labels": labels or {"team": "a"}},
            "spec": spec}  # fmt: skip


HTTP_CONTAINER = [
    {"name": "c", "image": "web", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}
]


def web_pod(name, ip, *, ready=True, containers=None, **kw):
    return pod(name, ip=ip, ready=ready, node="n1", containers=containers or HTTP_CONTAINER, **kw)


def ips(addresses):
    return [a["ip"] for a in addresses or []]


def test_ready_and_not_ready_addresses_with_named_port():
    svc = service(ports=[{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}])
    pods = [web_pod("a", "10.0.0.2"), web_pod("b", "10.0.0.1"), web_pod("c", "10.0.0.3", ready=False)]
    (subset,) = build_subsets(svc, pods)
    assert ips(subset["addresses"]) == ["10.0.0.1", "10.0.0.2"]
    assert ips(subset["notReadyAddresses"]) == ["10.0.0.3"]
    assert subset["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    addr = subset["addresses"][0]
    assert (
        addr["nodeName"] == "n1" and addr["targetRef"]["kind"] == "Pod" and addr["targetRef"]["name"] == "b"
    )


def test_numbered_target_port_and_pods_without_the_named_port():
    svc = service(
        ports=[
            {"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "targetPort": 9100, "protocol": "TCP"},
        ]
    )
    has_http = web_pod("a", "10.0.0.1")
    no_http = web_pod("b", "10.0.0.2", containers=[{"name": "c", "image": "x"}])
    subsets = build_subsets(svc, [has_http, no_http])
    # a serves both ports, b only the numbered one: ports are grouped by the addresses serving
    # them (kube's RepackSubsets), so a appears under each port's subset.
    by_ports = {tuple(p["port"] for p in s["ports"]): ips(s["addresses"]) for s in subsets}
    assert by_ports == {(8080,): ["10.0.0.1"], (9100,): ["10.0.0.1", "10.0.0.2"]}


def test_named_port_must_match_protocol():
    udp = {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"}
    containers = [{"name": "c", "ports": [{"name": "dns", "containerPort": 5353, "protocol": "TCP"}]}]
    assert find_port({"spec": {"containers": containers}}, udp) is None
    containers[0]["ports"].append({"name": "dns", "containerPort": 5354, "protocol": "UDP"})
    assert find_port({"spec": {"containers": containers}}, udp) == 5354


def test_pods_without_ip_finished_or_terminating_are_left_out():
    svc = service(ports=[{"port": 80, "targetPort": 8080, "protocol": "TCP"}])
    pods = [
        web_pod("ok", "10.0.0.1"),
        pod("no-ip", node="n1"),
        web_pod("done", "10.0.0.2", phase="Succeeded"),
        web_pod("leaving", "10.0.0.3", deleting=True),
        web_pod("other-app", "10.0.0.4", labels={"app": "db"}),
    ]
    (subset,) = build_subsets(svc, pods)
    assert ips(subset["addresses"]) == ["10.0.0.1"] and "notReadyAddresses" not in subset


def test_publish_not_ready_addresses_lists_everything_as_ready():
    svc = service(ports=[{"port": 80, "targetPort": 8080, "protocol": "TCP"}], publish_not_ready=True)
    pods = [web_pod("a", "10.0.0.1", ready=False), web_pod("b", "10.0.0.2", deleting=True)]
    (subset,) = build_subsets(svc, pods)
    assert ips(subset["addresses"]) == ["10.0.0.1", "10.0.0.2"]


def test_headless_without_ports_and_label():
    svc = service(cluster_ip="None", ports=[])
    ep = desired_endpoints(svc, [web_pod("a", "10.0.0.1")], None)
    assert ep["metadata"]["labels"] == {"team": "a", HEADLESS_LABEL: ""}
    (subset,) = ep["subsets"]
    assert ips(subset["addresses"]) == ["10.0.0.1"] and "ports" not in subset
    # A non-headless service without ports gets no addresses at all.
    assert build_subsets(service(ports=[]), [web_pod("a", "10.0.0.1")]) == []


def test_no_write_when_unchanged_and_write_on_readiness_change():
    svc = service(ports=[{"port": 80, "targetPort": 8080, "protocol": "TCP"}])
    pods = [web_pod("a", "10.0.0.1"), web_pod("b", "10.0.0.2")]
    first = desired_endpoints(svc, pods, None)
    stored = {**first, "metadata": {**first["metadata"], "resourceVersion": "7", "uid": "ep-uid"}}
    assert desired_endpoints(svc, list(reversed(pods)), stored) is None
    pods[1] = web_pod("b", "10.0.0.2", ready=False)
    update = desired_endpoints(svc, pods, stored)
    assert update["metadata"]["resourceVersion"] == "7"
    (subset,) = update["subsets"]
    assert ips(subset["addresses"]) == ["10.0.0.1"] and ips(subset["notReadyAddresses"]) == ["10.0.0.2"]


def test_no_pods_means_no_subsets():
    ep = desired_endpoints(service(ports=[{"port": 80, "targetPort": 80, "protocol": "TCP"}]), [], None)
    assert "subsets" not in ep and ep["metadata"]["name"] == "web"
