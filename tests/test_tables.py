"""Server-side Table printing: kube-apiserver's columns and kubectl's computed cells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import resources, tables
from tests.test_openapi import TinyApiServer, apiserver, run_kubectl  # noqa: F401 (fixture)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def names(resource: str) -> list[str]:
    return [c["name"] for c in tables.column_definitions(resource)]


def wide(resource: str) -> list[str]:
    return [c["name"] for c in tables.column_definitions(resource) if c["priority"] == 1]


def cells(resource: str, obj: dict[str, Any]) -> list[Any]:
    return tables.to_table(resource, [obj], now=NOW)["rows"][0]["cells"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (7 * 3600 + 5 * 60, "7h5m"),
        (30 * 3600, "30h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 2 * 3600, "3d2h"),
        (100 * 86400, "100d"),
        (800 * 86400, "2y70d"),
        (365 * 9 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert tables.human_duration(seconds) == text


def test_columns_match_kube_apiserver_printers() -> None:
    assert names("pods") == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
        "IP",
        "Node",
        "Nominated Node",
        "Readiness Gates",
    ]
    assert wide("pods") == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert names("nodes")[:5] == ["Name", "Status", "Roles", "Age", "Version"]
    assert wide("nodes") == ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"]
    assert names("services") == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]
    assert names("deployments") == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
        "Containers",
        "Images",
        "Selector",
    ]
    assert names("replicasets")[:5] == ["Name", "Desired", "Current", "Ready", "Age"]
    assert names("daemonsets")[:8] == [
        "Name",
        "Desired",
        "Current",
        "Ready",
        "Up-to-date",
        "Available",
        "Node Selector",
        "Age",
    ]
    assert names("namespaces") == ["Name", "Status", "Age"]
    assert [n for n in names("events") if n not in wide("events")] == [
        "Last Seen",
        "Type",
        "Reason",
        "Object",
        "Message",
    ]
    assert names("secrets") == ["Name", "Type", "Data", "Age"]
    assert names("configmaps") == ["Name", "Data", "Age"]
    assert names("endpoints") == ["Name", "Endpoints", "Age"]
    assert names("leases") == ["Name", "Holder", "Age"]
    name = tables.column_definitions("pods")[0]
    assert (
        name["format"] == "name"
        and name["type"] == "string"
        and "unique within a namespace" in name["description"]
    )
    assert set(name) == {"name", "type", "format", "description", "priority"}


def pod(status: dict[str, Any], spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default", "creationTimestamp": ts(182), **meta},
        "spec": spec or {"containers": [{"name": "a", "image": "busybox"}]},
        "status": status,
    }


def running(name: str = "a", ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "state": {"running": {"startedAt": ts(60)}},
    }


def waiting(reason: str, name: str = "a", restarts: int = 0) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": restarts, "state": {"waiting": {"reason": reason}}}


def terminated(exit_code: int, reason: str = "", name: str = "a", signal: int = 0) -> dict[str, Any]:
    state = {"exitCode": exit_code, "reason": reason, "signal": signal}
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": state}}


INIT_SPEC = {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}]}


@pytest.mark.parametrize(
    ("obj", "ready", "status"),
    [
        (pod({"phase": "Pending"}), "0/1", "Pending"),
        (
            pod({"phase": "Pending", "containerStatuses": [waiting("ContainerCreating")]}),
            "0/1",
            "ContainerCreating",
        ),
        (pod({"phase": "Running", "containerStatuses": [running()]}), "1/1", "Running"),
        (
            pod({"phase": "Running", "containerStatuses": [waiting("CrashLoopBackOff")]}),
            "0/1",
            "CrashLoopBackOff",
        ),
        (pod({"phase": "Succeeded", "containerStatuses": [terminated(0, "Completed")]}), "0/1", "Completed"),
        (pod({"phase": "Failed", "containerStatuses": [terminated(1, "Error")]}), "0/1", "Error"),
        (pod({"phase": "Failed", "containerStatuses": [terminated(3)]}), "0/1", "ExitCode:3"),
        (pod({"phase": "Failed", "containerStatuses": [terminated(137, signal=9)]}), "0/1", "Signal:9"),
        (pod({"phase": "Failed", "reason": "Evicted"}), "0/1", "Evicted"),
        (
            pod({"phase": "Running", "containerStatuses": [running()]}, deletionTimestamp=ts(1)),
            "1/1",
            "Terminating",
        ),
        (
            pod(
                {"phase": "Succeeded", "containerStatuses": [terminated(0, "Completed")]},
                deletionTimestamp=ts(1),
            ),
            "0/1",
            "Completed",
        ),
        (
            pod({"phase": "Running", "reason": "NodeLost"}, deletionTimestamp=ts(1)),
            "0/1",
            "Unknown",
        ),
        (
            pod({"phase": "Pending", "conditions": [{"type": "PodScheduled", "reason": "SchedulingGated"}]}),
            "0/1",
            "SchedulingGated",
        ),
        (
            pod({"phase": "Pending", "initContainerStatuses": [running("init")]}, INIT_SPEC),
            "0/1",
            "Init:0/1",
        ),
        (
            pod({"phase": "Pending", "initContainerStatuses": [terminated(1, "Error", "init")]}, INIT_SPEC),
            "0/1",
            "Init:Error",
        ),
        (
            pod({"phase": "Pending", "initContainerStatuses": [terminated(2, name="init")]}, INIT_SPEC),
            "0/1",
            "Init:ExitCode:2",
        ),
        (
            pod(
                {"phase": "Pending", "initContainerStatuses": [waiting("CrashLoopBackOff", "init")]},
                INIT_SPEC,
            ),
            "0/1",
            "Init:CrashLoopBackOff",
        ),
        (
            pod(
                {
                    "phase": "Running",
                    "initContainerStatuses": [terminated(0, "Completed", "init")],
                    "containerStatuses": [running()],
                },
                INIT_SPEC,
            ),
            "1/1",
            "Running",
        ),
        (
            # A sidecar (restartable init container) counts towards READY.
            pod(
                {
                    "phase": "Running",
                    "conditions": [{"type": "Initialized", "status": "True"}],
                    "initContainerStatuses": [{**running("side"), "started": True}],
                    "containerStatuses": [running()],
                },
                {
                    "initContainers": [{"name": "side", "restartPolicy": "Always"}],
                    "containers": [{"name": "a"}],
                },
            ),
            "2/2",
            "Running",
        ),
        (
            # One container completed, another still running: Running only with the Ready condition.
            pod(
                {"phase": "Running", "containerStatuses": [terminated(0, "Completed", "b"), running("a")]},
                {"containers": [{"name": "a"}, {"name": "b"}]},
            ),
            "1/2",
            "NotReady",
        ),
        (
            pod(
                {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [terminated(0, "Completed", "b"), running("a")],
                },
                {"containers": [{"name": "a"}, {"name": "b"}]},
            ),
            "1/2",
            "Running",
        ),
    ],
)
def test_pod_ready_and_status(obj: dict[str, Any], ready: str, status: str) -> None:
    row = cells("pods", obj)
    assert (row[1], row[2]) == (ready, status)


def test_pod_restarts_age_and_wide_cells() -> None:
    crashing = waiting("CrashLoopBackOff", restarts=5)
    crashing["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": ts(300)}}
    obj = pod(
        {
            "phase": "Running",
            "podIPs": [{"ip": "10.1.0.7"}],
            "conditions": [{"type": "gate-a", "status": "True"}, {"type": "gate-b", "status": "False"}],
            "containerStatuses": [crashing],
        },
        {
            "containers": [{"name": "a"}],
            "nodeName": "node-1",
            "readinessGates": [{"conditionType": "gate-a"}, {"conditionType": "gate-b"}],
        },
    )
    assert cells("pods", obj) == [
        "p",
        "0/1",
        "CrashLoopBackOff",
        "5 (5m ago)",
        "3m2s",
        "10.1.0.7",
        "node-1",
        "<none>",
        "1/2",
    ]
    fresh = pod({"phase": "Pending"})
    del fresh["metadata"]["creationTimestamp"]
    assert cells("pods", fresh)[3:] == ["0", "<unknown>", "<none>", "<none>", "<none>", "<none>"]


def test_pod_rows_carry_completion_conditions() -> None:
    table = tables.to_table("pods", [pod({"phase": "Succeeded"}), pod({"phase": "Running"})], now=NOW)
    done, live = table["rows"]
    assert done["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]
    assert "conditions" not in live


def test_node_cells() -> None:
    node = {
        "metadata": {
            "name": "n1",
            "creationTimestamp": ts(3 * 86400 + 7200),
            "labels": {
                "node-role.kubernetes.io/control-plane": "",
                "node-role.kubernetes.io/worker": "",
                "kubernetes.io/role": "edge",
            },
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "192.0.2.4"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0",
                "osImage": "Debian",
                "kernelVersion": "6.1",
                "containerRuntimeVersion": "docker://26",
            },
        },
    }
    assert cells("nodes", node) == [
        "n1",
        "Ready,SchedulingDisabled",
        "control-plane,edge,worker",
        "3d2h",
        "v1.32.0",
        "192.0.2.4",
        "<none>",
        "Debian",
        "6.1",
        "docker://26",
    ]
    bare = {"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    assert cells("nodes", bare)[1:3] == ["NotReady", "<none>"]
    assert cells("nodes", {"metadata": {"name": "n3"}})[1] == "Unknown"
    assert cells("nodes", {"metadata": {"name": "n3"}})[7:] == ["<unknown>", "<unknown>", "<unknown>"]


def service(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "s", "creationTimestamp": ts(45)}, "spec": spec, "status": status or {}}


def test_service_cells() -> None:
    cluster = service(
        {
            "type": "ClusterIP",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 80}],
            "selector": {"b": "2", "a": "1"},
        }
    )
    assert cells("services", cluster) == [
        "s",
        "ClusterIP",
        "10.96.0.10",
        "<none>",
        "53/UDP,80/TCP",
        "45s",
        "a=1,b=2",
    ]
    node_port = service(
        {
            "type": "NodePort",
            "clusterIP": "10.96.0.11",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
        }
    )
    assert cells("services", node_port)[1:5] == ["NodePort", "10.96.0.11", "<none>", "80:30080/TCP"]
    pending = service({"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "ports": [{"port": 443}]})
    assert cells("services", pending)[3] == "<pending>"
    balanced = service(
        {"type": "LoadBalancer", "externalIPs": ["198.51.100.9"]},
        {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}},
    )
    assert cells("services", balanced)[2:5] == ["<none>", "203.0.113.5,198.51.100.9", "<none>"]
    external = service({"type": "ExternalName", "externalName": "db.example.com"})
    assert cells("services", external)[3] == "db.example.com"
    undefaulted = service({"clusterIP": "None", "selector": {}})
    assert cells("services", undefaulted)[1:3] == ["ClusterIP", "None"]
    assert cells("services", undefaulted)[6] == "<none>"


TEMPLATE = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {
        "containers": [{"name": "web", "image": "nginx:1"}, {"name": "log", "image": "busybox"}],
        "nodeSelector": {"disk": "ssd"},
    },
}
SELECTOR = {
    "matchLabels": {"app": "web"},
    "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["front", "back"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "zone", "operator": "NotIn", "values": ["b"]},
        {"key": "env", "operator": "Exists"},
    ],
}
SELECTOR_TEXT = "app=web,!canary,env,tier in (back,front),zone notin (b)"


def test_workload_cells() -> None:
    meta = {"name": "web", "creationTimestamp": ts(7 * 3600 + 300)}
    deploy = {"metadata": meta, "spec": {"replicas": 3, "selector": SELECTOR, "template": TEMPLATE}}
    deploy["status"] = {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    assert cells("deployments", deploy) == [
        "web",
        "2/3",
        3,
        2,
        "7h5m",
        "web,log",
        "nginx:1,busybox",
        SELECTOR_TEXT,
    ]
    assert cells("deployments", {"metadata": meta, "spec": {}})[1:4] == ["0/1", 0, 0]
    rs = {
        "metadata": meta,
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE},
    }
    rs["status"] = {"replicas": 2, "readyReplicas": 1}
    assert cells("replicasets", rs) == ["web", 2, 2, 1, "7h5m", "web,log", "nginx:1,busybox", "app=web"]
    ds = {"metadata": meta, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": TEMPLATE}}
    ds["status"] = {
        "desiredNumberScheduled": 3,
        "currentNumberScheduled": 3,
        "numberReady": 2,
        "updatedNumberScheduled": 3,
        "numberAvailable": 2,
    }
    assert cells("daemonsets", ds) == [
        "web",
        3,
        3,
        2,
        3,
        2,
        "disk=ssd",
        "7h5m",
        "web,log",
        "nginx:1,busybox",
        "app=web",
    ]
    bad = {"metadata": meta, "spec": {"selector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}}}
    assert cells("replicasets", bad)[-1] == "<invalid>"


def test_namespace_secret_configmap_lease_cells() -> None:
    meta = {"name": "x", "creationTimestamp": ts(10)}
    assert cells("namespaces", {"metadata": meta, "status": {"phase": "Terminating"}}) == [
        "x",
        "Terminating",
        "10s",
    ]
    secret = {"metadata": meta, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}
    assert cells("secrets", secret) == ["x", "kubernetes.io/tls", 2, "10s"]
    assert cells("secrets", {"metadata": meta})[1:3] == ["Opaque", 0]
    assert cells("configmaps", {"metadata": meta, "data": {"a": "1"}, "binaryData": {"b": ""}}) == [
        "x",
        2,
        "10s",
    ]
    assert cells("leases", {"metadata": meta, "spec": {"holderIdentity": "sched-1"}}) == [
        "x",
        "sched-1",
        "10s",
    ]
    assert cells("leases", {"metadata": meta, "spec": {}})[1] == ""


def test_endpoints_cells() -> None:
    meta = {"name": "web", "creationTimestamp": ts(5)}
    assert cells("endpoints", {"metadata": meta}) == ["web", "<none>", "5s"]
    subsets = [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
        {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]},
    ]
    assert (
        cells("endpoints", {"metadata": meta, "subsets": subsets})[1]
        == "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more..."
    )
    assert cells("endpoints", {"metadata": meta, "subsets": subsets[1:]})[1] == "[fd00::1]:8080"
    headless = [{"addresses": [{"ip": "10.0.0.9"}]}]
    assert cells("endpoints", {"metadata": meta, "subsets": headless})[1] == "10.0.0.9"


def test_event_cells_core_series_and_events_v1() -> None:
    core = {
        "metadata": {"name": "p.17a", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
        "reason": "BackOff",
        "message": " Back-off restarting failed container \n",
        "type": "Warning",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ts(3600),
        "lastTimestamp": ts(90),
        "count": 12,
    }
    assert cells("events", core) == [
        "90s",
        "Warning",
        "BackOff",
        "pod/p",
        "spec.containers{a}",
        "kubelet, node-1",
        "Back-off restarting failed container",
        "60m",
        12,
        "p.17a",
    ]
    series = {
        "metadata": {"name": "e"},
        "eventTime": "2024-05-01T11:00:00.000000Z",
        "series": {"count": 4, "lastObservedTime": "2024-05-01T11:59:00.000000Z"},
        "involvedObject": {"kind": "Node"},
        "reportingComponent": "grove-scheduler",
        "type": "Normal",
        "reason": "Scheduled",
    }
    row = cells("events", series)
    assert (row[0], row[3], row[5], row[7], row[8]) == ("60s", "node", "grove-scheduler", "60m", 4)
    v1 = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "e2"},
        "eventTime": "2024-05-01T11:59:30.000000Z",
        "regarding": {"kind": "Deployment", "name": "web"},
        "note": "Scaled up",
        "reason": "ScalingReplicaSet",
        "reportingController": "deployment-controller",
        "type": "Normal",
    }
    assert cells("events", v1) == [
        "30s",
        "Normal",
        "ScalingReplicaSet",
        "deployment/web",
        "",
        "deployment-controller",
        "Scaled up",
        "30s",
        1,
        "e2",
    ]


def test_table_envelope_and_include_object() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
        "data": {},
    }
    table = tables.to_table(
        resources.CONFIGMAPS, [obj], now=NOW, resource_version="42", continue_token="next"
    )
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42", "continue": "next"}
    assert table["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
    }
    full = tables.to_table("configmaps", [{"metadata": {"name": "c"}}], include_object="Object", now=NOW)
    assert full["rows"][0]["object"] == {"metadata": {"name": "c"}, "apiVersion": "v1", "kind": "ConfigMap"}
    bare = tables.to_table("cm", [obj], include_object="None", now=NOW, no_headers=True)
    assert "object" not in bare["rows"][0] and bare["columnDefinitions"] == []
    with pytest.raises(ValueError, match="includeObject"):
        tables.to_table("configmaps", [obj], include_object="Everything", now=NOW)
    other = tables.to_table(
        "widgets", [{"metadata": {"name": "w", "creationTimestamp": "2024-05-01T10:00:00+02:00"}}], now=NOW
    )
    assert [c["name"] for c in other["columnDefinitions"]] == ["Name", "Created At"]
    assert other["rows"][0]["cells"] == ["w", "2024-05-01T08:00:00Z"]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (
            (
                "application/json;as=Table;v=v1;g=meta.k8s.io,"
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            ),
            True,
        ),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", True),
        ("application/json", False),
        ("application/json,application/json;as=Table;v=v1;g=meta.k8s.io", False),
        ("application/yaml;as=Table;v=v1;g=meta.k8s.io", False),
        (None, False),
    ],
)
def test_wants_table(accept: str | None, expected: bool) -> None:
    assert tables.wants_table(accept) is expected


def test_kubectl_get_pods_prints_the_computed_columns(
    apiserver: TinyApiServer,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    stamp = (now - timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    crashing = waiting("CrashLoopBackOff", restarts=3)
    crashing["lastState"] = {"terminated": {"exitCode": 1, "finishedAt": stamp}}
    apiserver.objects["pods"] = [
        {
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": stamp},
            "spec": {"containers": [{"name": "a"}], "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.1.0.7", "containerStatuses": [crashing]},
        }
    ]
    out = run_kubectl(apiserver, tmp_path, "get", "pods", "-A", "-o", "wide")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split() == [
        "NAMESPACE",
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
        "READINESS",
        "GATES",
    ]
    fields = row.split()
    assert fields[:4] == ["default", "web-1", "0/1", "CrashLoopBackOff"]
    assert fields[4] == "3" and fields[5].startswith("(") and fields[6] == "ago)"
    assert fields[-4:] == ["10.1.0.7", "node-1", "<none>", "<none>"]
