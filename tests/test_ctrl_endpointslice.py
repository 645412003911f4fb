"""EndpointSlices without a server: the controller's slice computation (conditions, named ports,
address families, headless services, packing by 100, stable updates, the placeholder) and the
resource's registration, defaults, validation and `kubectl get` columns."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime

from orchestrator import defaults, resources, tables, validation
from orchestrator.controllers.endpointslice import (
    CONTROLLER_NAME,
    HEADLESS_LABEL,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    SliceTracker,
    address_types,
    plan_slices,
)
from orchestrator.controllers.testing import pod

HTTP = [{"name": "c", "image": "web", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]
_names = itertools.count(1)


def service(name="web", *, ports=None, cluster_ip="10.96.0.10", families=None, **spec_extra):
    spec = {"selector": {"app": "web"}, "clusterIP": cluster_ip, "type": "ClusterIP", **spec_extra}
    spec["ports"] = (
        ports if ports is not None else [{"name": "web", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    )
    if families:
        spec["ipFamilies"] = families
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": {"team": "a"}},
            "spec": spec}  # fmt: skip


def web_pod(name, ip, *, ready=True, containers=None, node="n1", **kw):
    return pod(name, ip=ip, ready=ready, node=node, containers=containers or HTTP, **kw)


def stored(plan_create, plan_update=()):
    """What the API server would hold after the plan: names and resourceVersions given out."""
    out = []
    for body in plan_create:
        obj = copy.deepcopy(body)
        obj["metadata"]["name"] = obj["metadata"].pop("generateName") + f"x{next(_names)}"
        obj["metadata"]["resourceVersion"] = str(next(_names))
        out.append(obj)
    for body in plan_update:
        obj = copy.deepcopy(body)
        obj["metadata"]["resourceVersion"] = str(next(_names))
        out.append(obj)
    return out


def addresses(slices):
    return sorted(a for s in slices for e in s["endpoints"] for a in e["addresses"])


def test_one_slice_with_conditions_named_port_and_metadata():
    svc = service()
    pods = [
        web_pod("a", "10.0.0.1"),
        web_pod("b", "10.0.0.2", ready=False),
        web_pod("c", "10.0.0.3", deleting=True),
        web_pod("d", None),  # no IP yet: left out
        web_pod("e", "10.0.0.5", phase="Succeeded"),  # finished: left out
        pod("other", ip="10.0.0.9", labels={"app": "db"}, node="n1"),
    ]
    plan = plan_slices(svc, pods, [])
    assert not plan.update and not plan.delete
    (body,) = plan.create
    md = body["metadata"]
    assert md["generateName"] == "web-" and md["namespace"] == "default"
    assert md["labels"] == {"team": "a", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: CONTROLLER_NAME}
    (ref,) = md["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == ("Service", "web", "uid-web", True)
    assert body["addressType"] == "IPv4"
    assert body["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    conds = {e["targetRef"]["name"]: e["conditions"] for e in body["endpoints"]}
    assert conds == {
        "a": {"ready": True, "serving": True, "terminating": False},
        "b": {"ready": False, "serving": False, "terminating": False},
        "c": {"ready": False, "serving": True, "terminating": True},
    }
    first = body["endpoints"][0]
    assert first["addresses"] == ["10.0.0.1"] and first["nodeName"] == "n1"
    assert first["targetRef"]["kind"] == "Pod" and first["targetRef"]["namespace"] == "default"


def test_publish_not_ready_makes_every_endpoint_ready():
    svc = service(publishNotReadyAddresses=True)
    plan = plan_slices(svc, [web_pod("a", "10.0.0.1", ready=False)], [])
    assert plan.create[0]["endpoints"][0]["conditions"]["ready"] is True


def test_named_target_port_resolved_per_pod_groups_pods_by_ports():
    other = [{"name": "c", "image": "web", "ports": [{"name": "http", "containerPort": 9090}]}]
    bare = [{"name": "c", "image": "web"}]
    pods = [
        web_pod("a", "10.0.0.1"),
        web_pod("b", "10.0.0.2", containers=other),
        web_pod("c", "10.0.0.3", containers=bare),
    ]
    plan = plan_slices(service(), pods, [])
    by_port = {tuple(p["port"] for p in s["ports"]): addresses([s]) for s in plan.create}
    assert by_port == {(8080,): ["10.0.0.1"], (9090,): ["10.0.0.2"], (): ["10.0.0.3"]}


def test_zone_and_hostname_and_missing_nodes():
    svc = service("web")
    p = web_pod("a", "10.0.0.1")
    p["spec"].update(hostname="a", subdomain="web")
    nodes = {"n1": {"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}}}}
    (body,) = plan_slices(svc, [p, web_pod("b", "10.0.0.2", node="gone")], [], nodes).create
    (ep,) = body["endpoints"]
    assert ep["zone"] == "z1" and ep["hostname"] == "a"
    assert plan_slices(svc, [web_pod("b", "10.0.0.2", node="gone")], [], nodes).missing_nodes == {"gone"}


def test_address_families_and_headless_services():
    assert address_types(service(families=["IPv6", "IPv4"])) == ["IPv6", "IPv4"]
    assert address_types(service(cluster_ip="fd00::10")) == ["IPv6"]
    headless = service("hl", cluster_ip="None", ports=[])
    assert address_types(headless) == ["IPv4", "IPv6"]
    dual = web_pod("a", "10.0.0.1")
    dual["status"]["podIPs"] = [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]
    plan = plan_slices(headless, [dual, web_pod("b", "10.0.0.2")], [])
    by_type = {s["addressType"]: addresses([s]) for s in plan.create}
    assert by_type == {"IPv4": ["10.0.0.1", "10.0.0.2"], "IPv6": ["fd00::1"]}
    for s in plan.create:
        assert s["ports"] == [] and s["metadata"]["labels"][HEADLESS_LABEL] == ""
    # A headless service with ports resolves them as any other.
    with_ports = service("hl2", cluster_ip="None")
    (s,) = plan_slices(with_ports, [web_pod("a", "10.0.0.1")], []).create
    assert s["ports"][0]["port"] == 8080 and s["metadata"]["labels"][HEADLESS_LABEL] == ""


def test_at_most_100_endpoints_per_slice_and_growth_fills_before_creating():
    svc = service()
    pods = [web_pod(f"p{i:03}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(250)]
    plan = plan_slices(svc, pods, [])
    assert sorted(len(s["endpoints"]) for s in plan.create) == [50, 100, 100]
    current = stored(plan.create)
    # Unchanged pods: nothing to write.
    assert not plan_slices(svc, pods, current)
    # 30 more fit into the slice with room: one update, no new slice.
    more = pods + [web_pod(f"q{i:03}", f"10.1.0.{i + 1}") for i in range(30)]
    plan = plan_slices(svc, more, current)
    assert not plan.create and not plan.delete and len(plan.update) == 1
    assert len(plan.update[0]["endpoints"]) == 80
    assert plan.update[0]["metadata"]["resourceVersion"]  # optimistic concurrency on the stored slice


def test_scale_down_updates_and_deletes_emptied_slices():
    svc = service()
    pods = [web_pod(f"p{i:03}", f"10.0.0.{i + 1}") for i in range(150)]
    current = stored(plan_slices(svc, pods, []).create)
    full = next(s for s in current if len(s["endpoints"]) == 100)
    keep = {e["targetRef"]["name"] for e in full["endpoints"][:3]}
    survivors = [p for p in pods if p["metadata"]["name"] in keep]
    plan = plan_slices(svc, survivors, current)
    assert not plan.create
    assert [len(s["endpoints"]) for s in plan.update] == [3]
    assert plan.update[0]["metadata"]["name"] == full["metadata"]["name"]
    assert [s["metadata"]["name"] for s in plan.delete] == [
        s["metadata"]["name"] for s in current if s is not full
    ]


def test_readiness_change_rewrites_only_that_slice():
    svc = service()
    pods = [web_pod("a", "10.0.0.1", ready=False), web_pod("b", "10.0.0.2")]
    current = stored(plan_slices(svc, pods, []).create)
    pods[0] = web_pod("a", "10.0.0.1", ready=True, uid_=pods[0]["metadata"]["uid"])
    plan = plan_slices(svc, pods, current)
    (body,) = plan.update
    assert [e["conditions"]["ready"] for e in body["endpoints"]] == [True, True]
    assert not plan.create and not plan.delete


def test_placeholder_for_a_service_without_endpoints_and_replacing_it():
    svc = service()
    (placeholder,) = plan_slices(svc, [], []).create
    assert (
        placeholder["endpoints"] == [] and placeholder["ports"] == [] and placeholder["addressType"] == "IPv4"
    )
    current = stored([placeholder])
    assert not plan_slices(svc, [], current)  # the placeholder stays, untouched
    # Pods arrive: the placeholder is rewritten in place rather than deleted and replaced.
    plan = plan_slices(svc, [web_pod("a", "10.0.0.1")], current)
    assert not plan.create and not plan.delete
    (body,) = plan.update
    assert body["metadata"]["name"] == current[0]["metadata"]["name"] and addresses([body]) == ["10.0.0.1"]


def test_foreign_slices_and_port_changes():
    svc = service()
    pods = [web_pod("a", "10.0.0.1")]
    current = stored(plan_slices(svc, pods, []).create)
    # A slice of an older service of the same name (another uid) is replaced.
    old = copy.deepcopy(current[0])
    old["metadata"]["ownerReferences"][0]["uid"] = "uid-of-old-service"
    old["metadata"]["name"] = "web-old"
    plan = plan_slices(svc, pods, current + [old])
    assert [s["metadata"]["name"] for s in plan.delete] == ["web-old"] and not plan.update and not plan.create
    # The service's port changes: the slice is rewritten with the new ports.
    svc2 = service(ports=[{"name": "web", "port": 80, "targetPort": 8081, "protocol": "TCP"}])
    plan = plan_slices(svc2, pods, current)
    (body,) = plan.update
    assert body["ports"] == [{"name": "web", "port": 8081, "protocol": "TCP"}] and not plan.delete
    # Labels of the service change: the slice follows.
    svc3 = service()
    svc3["metadata"]["labels"] = {"team": "b"}
    (body,) = plan_slices(svc3, pods, current).update
    assert body["metadata"]["labels"]["team"] == "b"


def test_tracker_waits_for_its_own_writes():
    tracker = SliceTracker()
    written = {"metadata": {"name": "web-abc", "resourceVersion": "7"}}
    tracker.wrote("default/web", written)
    assert tracker.stale("default/web", {})
    assert tracker.stale(
        "default/web", {"web-abc": {"metadata": {"name": "web-abc", "resourceVersion": "6"}}}
    )
    assert not tracker.stale(
        "default/web", {"web-abc": {"metadata": {"name": "web-abc", "resourceVersion": "7"}}}
    )
    tracker.deleted("default/web", written)
    assert tracker.stale("default/web", {"web-abc": written})
    assert not tracker.stale("default/web", {})
    # A slice deleted by someone else before the cache showed our write: nothing left to wait for.
    tracker.wrote("default/web", {"metadata": {"name": "web-def", "resourceVersion": "9"}})
    assert tracker.stale("default/web", {})
    tracker.gone("default/web", "web-def")
    assert not tracker.stale("default/web", {})


# --- the resource ----------------------------------------------------------------------------------


def slice_obj(**fields):
    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}  # fmt: skip
    body.update(fields)
    return body


def test_registered_for_discovery():
    res = resources.DEFAULT_REGISTRY.get("discovery.k8s.io", "v1", "endpointslices")
    assert res is not None and res.kind == "EndpointSlice" and res.namespaced
    assert "discovery.k8s.io" in resources.DEFAULT_REGISTRY.groups()
    listed = resources.api_resource_list(resources.DEFAULT_REGISTRY, "discovery.k8s.io", "v1")
    (entry,) = listed["resources"]
    assert entry["name"] == "endpointslices" and "watch" in entry["verbs"]
    assert resources.DEFAULT_REGISTRY.resolve("endpointslice") is res
    assert res.storage_key("default", "web-abc") == "/registry/endpointslices/default/web-abc"


def test_defaults_fill_port_name_and_protocol():
    out = defaults.apply_defaults("EndpointSlice", slice_obj(ports=[{"port": 80}]))
    assert out["ports"] == [{"port": 80, "name": "", "protocol": "TCP"}]


def test_validation_in_kube_words():
    assert validation.validate("EndpointSlice", slice_obj()) == []
    causes = validation.validate(
        "EndpointSlice",
        slice_obj(
            addressType="IPv5",
            endpoints=[{"addresses": []}, {"addresses": ["fd00::1"], "hostname": "A_b", "nodeName": "n..1"}],
            ports=[{"name": "x", "protocol": "TCP"}, {"name": "x", "protocol": "HTTP"}],
        ),
    )
    msgs = {c.field: c.message for c in causes}
    assert msgs["addressType"] == 'Unsupported value: "IPv5": supported values: "FQDN", "IPv4", "IPv6"'
    assert msgs["endpoints[0].addresses"] == "Required value: must contain at least 1 address"
    assert msgs["endpoints[1].hostname"].startswith('Invalid value: "A_b": a lowercase RFC 1123 label')
    assert "endpoints[1].nodeName" in msgs
    assert msgs["ports[1].name"] == 'Duplicate value: "x"'
    assert msgs["ports[1].protocol"].startswith('Unsupported value: "HTTP"')
    v4 = validation.validate("EndpointSlice", slice_obj(endpoints=[{"addresses": ["fd00::1"]}]))
    assert [c.message for c in v4] == ['Invalid value: "fd00::1": must be a valid IPv4 address']
    status = validation.invalid_status("EndpointSlice", "web-abc", v4)
    assert status["kind"] == "Status" and status["code"] == 422 and status["reason"] == "Invalid"
    assert status["details"]["group"] == "discovery.k8s.io" and status["details"]["kind"] == "EndpointSlice"
    update = validation.validate_update(
        "EndpointSlice", slice_obj(addressType="IPv6", endpoints=[]), slice_obj()
    )
    assert [(c.field, c.message) for c in update] == [
        ("addressType", 'Invalid value: "IPv6": field is immutable')
    ]


def test_table_columns_and_cells():
    names = [c["name"] for c in tables.column_definitions("endpointslices")]
    assert names == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    many = slice_obj(
        endpoints=[{"addresses": [f"10.0.0.{i}"]} for i in range(1, 6)],
        ports=[{"name": "a", "port": 80}, {"name": "b", "port": 443}],
    )
    many["metadata"]["creationTimestamp"] = "2025-12-31T23:58:00Z"
    cells = tables.PRINTERS["endpointslices"].cells(many, now)
    assert cells == ["web-abc", "IPv4", "80,443", "10.0.0.1,10.0.0.2,10.0.0.3 + 2 more...", "2m"]
    empty = tables.PRINTERS["endpointslices"].cells(slice_obj(endpoints=[], ports=[]), now)
    assert empty[2:4] == ["<unset>", "<unset>"]
