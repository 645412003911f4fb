"""The served-resource registry and its discovery documents, checked against kube-apiserver's shapes."""

from __future__ import annotations

import pytest

from orchestrator import resources as r
from orchestrator.resources import DEFAULT_REGISTRY, GroupVersionKind, Registry

KUBECTL_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)


@pytest.mark.parametrize(
    ("group", "kind", "expected"),
    [
        # Values as a kube-apiserver serves them in /api/v1 and /apis/<group>/v1.
        ("", "Pod", "xPOwRZ+Yhw8="),
        ("", "Namespace", "Q3oi5N2YM8M="),
        ("", "Node", "XwShjMxG9Fs="),
        ("", "Service", "0/CO1lhkEBI="),
        ("", "ConfigMap", "qFsyl6wFWjQ="),
        ("", "Secret", "S6u1pOWzb84="),
        ("", "Endpoints", "fWeeMqaN/OA="),
        ("", "Event", "r2yiGXH7wu8="),
        ("apps", "Deployment", "8aSe+NMegvE="),
        ("apps", "DaemonSet", "dd7pWHUlMKQ="),
        ("coordination.k8s.io", "Lease", "gqkMMb/YqFM="),
    ],
)
def test_storage_version_hash_matches_kube_apiserver(group: str, kind: str, expected: str) -> None:
    assert r.storage_version_hash(group, "v1", kind) == expected


def test_short_names_categories_and_scope() -> None:
    short = {res.resource: res.short_names for res in DEFAULT_REGISTRY.resources}
    assert short["pods"] == ("po",)
    assert short["services"] == ("svc",)
    assert short["deployments"] == ("deploy",)
    assert short["replicasets"] == ("rs",)
    assert short["daemonsets"] == ("ds",)
    assert short["namespaces"] == ("ns",)
    assert short["nodes"] == ("no",)
    assert short["configmaps"] == ("cm",)
    assert short["endpoints"] == ("ep",)
    assert short["events"] == ("ev",)
    assert short["secrets"] == () and short["leases"] == ()
    assert {res.resource for res in DEFAULT_REGISTRY.in_category("all")} == {
        "pods", "services", "deployments", "replicasets", "daemonsets", "statefulsets",
        "jobs", "cronjobs", "horizontalpodautoscalers",
    }  # fmt: skip
    cluster_scoped = {res.resource for res in DEFAULT_REGISTRY.resources if not res.namespaced}
    assert cluster_scoped == {"namespaces", "nodes"}
    assert "deletecollection" not in r.NAMESPACES.verbs and "deletecollection" in r.PODS.verbs


def test_subresources() -> None:
    subs = {res.resource: {s.name: s for s in res.subresources} for res in DEFAULT_REGISTRY.resources}
    assert set(subs["pods"]) == {"status", "binding", "log", "exec"}
    assert set(subs["nodes"]) == {"status"}
    assert set(subs["deployments"]) == {"status", "scale"}
    assert set(subs["replicasets"]) == {"status", "scale"}
    assert set(subs["daemonsets"]) == {"status"}
    assert set(subs["namespaces"]) == {"status", "finalize"}
    assert subs["pods"]["binding"].kind == "Binding" and subs["pods"]["binding"].verbs == ("create",)
    scale = subs["deployments"]["scale"]
    assert (scale.group, scale.version, scale.kind, scale.verbs) == (
        "autoscaling",
        "v1",
        "Scale",
        r.STATUS_VERBS,
    )
    assert subs["namespaces"]["finalize"].verbs == ("update",)


def test_storage_keys_and_urls() -> None:
    assert r.PODS.storage_prefix == "/registry/pods"
    assert r.PODS.storage_key("default", "web") == "/registry/pods/default/web"
    assert r.PODS.storage_key("default") == "/registry/pods/default"
    assert r.NODES.storage_key("ignored", "n1") == "/registry/nodes/n1"
    assert r.EVENTS_V1.storage_prefix == "/registry/events"
    assert r.DEPLOYMENTS.url("ns", "web", "scale") == "/apis/apps/v1/namespaces/ns/deployments/web/scale"
    assert r.NODES.url(name="n1") == "/api/v1/nodes/n1"
    assert r.PODS.url() == "/api/v1/pods"
    assert r.LEASES.api_version == "coordination.k8s.io/v1" and r.PODS.api_version == "v1"
    assert r.DEPLOYMENTS.list_kind == "DeploymentList"


def test_lookups() -> None:
    reg = DEFAULT_REGISTRY
    assert reg.get("apps", "v1", "deployments") is r.DEPLOYMENTS
    assert reg.get("", "v1", "pods/status") is r.PODS
    assert reg.get("apps", "v2", "deployments") is None
    assert reg.by_kind("ReplicaSet") is r.REPLICASETS
    assert reg.by_kind("Deployment", group="") is None
    assert reg.by_gvk(GroupVersionKind("coordination.k8s.io", "v1", "Lease")) is r.LEASES
    assert reg.by_api_version_kind("v1", "ConfigMap") is r.CONFIGMAPS
    assert reg.by_short_name("svc") is r.SERVICES
    assert reg.by_short_name("pods") is None
    assert reg.resolve("deploy") is r.DEPLOYMENTS
    assert reg.resolve("Deployment") is r.DEPLOYMENTS
    assert reg.resolve("deployments.apps") is r.DEPLOYMENTS
    assert reg.resolve("endpoints") is r.ENDPOINTS
    assert reg.resolve("nothing") is None
    with_events = Registry.default(events_v1=True)
    assert with_events.resolve("events") is r.EVENTS  # the core group wins, as in kubectl
    assert with_events.resolve("events.events.k8s.io") is r.EVENTS_V1
    assert with_events.by_kind("Event", group="events.k8s.io") is r.EVENTS_V1
    with pytest.raises(ValueError, match="registered twice"):
        Registry((r.PODS, r.PODS))


def test_api_versions_and_group_list() -> None:
    assert r.api_versions("10.0.0.1:6443") == {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:6443"}],
    }
    groups = r.api_group_list(DEFAULT_REGISTRY)
    assert groups["kind"] == "APIGroupList" and groups["apiVersion"] == "v1"
    assert groups["groups"][0] == {
        "name": "apps",
        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
    }
    assert [g["name"] for g in r.api_group_list(Registry.default(events_v1=True))["groups"]] == [
        "apps",
        "events.k8s.io",
        "autoscaling",
        "batch",
        "coordination.k8s.io",
        "discovery.k8s.io",
    ]
    assert r.api_group(DEFAULT_REGISTRY, "apps")["kind"] == "APIGroup"
    assert r.api_group(DEFAULT_REGISTRY, "policy") is None  # not served


def test_api_resource_list_shapes() -> None:
    core = r.api_resource_list(DEFAULT_REGISTRY, "", "v1")
    assert core is not None
    assert list(core) == ["kind", "groupVersion", "resources"]  # /api/v1 carries no apiVersion
    names = [e["name"] for e in core["resources"]]
    assert names == sorted(names)
    pods = next(e for e in core["resources"] if e["name"] == "pods")
    assert pods == {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        "shortNames": ["po"],
        "categories": ["all"],
        "storageVersionHash": "xPOwRZ+Yhw8=",
    }
    status = next(e for e in core["resources"] if e["name"] == "pods/status")
    assert status == {
        "name": "pods/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "patch", "update"],
    }
    apps = r.api_resource_list(DEFAULT_REGISTRY, "apps", "v1")
    assert apps is not None and apps["apiVersion"] == "v1" and apps["groupVersion"] == "apps/v1"
    scale = next(e for e in apps["resources"] if e["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert r.api_resource_list(DEFAULT_REGISTRY, "policy", "v1") is None


def test_aggregated_discovery_shapes() -> None:
    core = r.aggregated_discovery(DEFAULT_REGISTRY, legacy=True)
    assert core["kind"] == "APIGroupDiscoveryList" and core["apiVersion"] == "apidiscovery.k8s.io/v2"
    assert core["metadata"] == {}
    [group] = core["items"]
    assert group["metadata"] == {"creationTimestamp": None}
    [version] = group["versions"]
    assert version["version"] == "v1" and version["freshness"] == "Current"
    pods = next(e for e in version["resources"] if e["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert pods["scope"] == "Namespaced" and pods["singularResource"] == "pod"
    assert [s["subresource"] for s in pods["subresources"]] == ["binding", "exec", "log", "status"]
    nodes = next(e for e in version["resources"] if e["resource"] == "nodes")
    assert nodes["scope"] == "Cluster" and "categories" not in nodes

    apis = r.aggregated_discovery(DEFAULT_REGISTRY, legacy=False, version="v2beta1")
    assert apis["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    assert [g["metadata"]["name"] for g in apis["items"]] == [
        "apps",
        "autoscaling",
        "batch",
        "coordination.k8s.io",
        "discovery.k8s.io",
    ]
    deploy = next(e for e in apis["items"][0]["versions"][0]["resources"] if e["resource"] == "deployments")
    scale = next(s for s in deploy["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    with pytest.raises(ValueError):
        r.aggregated_discovery(DEFAULT_REGISTRY, legacy=True, version="v1")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (KUBECTL_ACCEPT, "v2"),
        ("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList", "v2beta1"),
        ("application/json, */*", None),
        ("application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", None),
        ("application/json;g=apidiscovery.k8s.io;v=v9;as=APIGroupDiscoveryList,application/json", None),
        (None, None),
    ],
)
def test_negotiate_discovery(accept: str | None, expected: str | None) -> None:
    assert r.negotiate_discovery(accept) == expected


def test_discovery_document_routes_paths() -> None:
    doc, ctype = r.discovery_document(DEFAULT_REGISTRY, "/apis", KUBECTL_ACCEPT)
    assert ctype == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    assert doc["kind"] == "APIGroupDiscoveryList"
    doc, ctype = r.discovery_document(DEFAULT_REGISTRY, "/api", "application/json", "1.2.3.4:6443")
    assert (doc["kind"], ctype) == ("APIVersions", "application/json")
    # Aggregated discovery only exists for /api and /apis.
    doc, _ = r.discovery_document(DEFAULT_REGISTRY, "/apis/apps/v1/", KUBECTL_ACCEPT)
    assert doc["kind"] == "APIResourceList"
    assert r.discovery_document(DEFAULT_REGISTRY, "/apis/apps")[0]["kind"] == "APIGroup"
    assert r.discovery_document(DEFAULT_REGISTRY, "/api/v1")[0]["groupVersion"] == "v1"
    assert r.discovery_document(DEFAULT_REGISTRY, "/apis/policy/v1") is None
    assert r.discovery_document(DEFAULT_REGISTRY, "/api/v1/pods") is None
