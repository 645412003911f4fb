"""Tests of orchestrator.defaults: the values Kubernetes fills in on create."""

from __future__ import annotations

import base64
import copy

import pytest

from orchestrator.defaults import apply_defaults, image_pull_policy, pod_qos_class
from orchestrator.validation import validate


def _pod(**spec):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], **spec},
    }


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", "Always"),
        ("busybox:latest", "Always"),
        ("busybox:1.36", "IfNotPresent"),
        ("registry.local:5000/team/app", "Always"),
        ("registry.local:5000/team/app:v2", "IfNotPresent"),
        ("app@sha256:" + "a" * 64, "IfNotPresent"),
        ("app:latest@sha256:" + "a" * 64, "Always"),
    ],
)
def test_image_pull_policy(image, policy):
    assert image_pull_policy(image) == policy


def test_pod_spec_defaults():
    out = apply_defaults("Pod", _pod())
    spec = out["spec"]
    assert spec["restartPolicy"] == "Always"
    assert spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["securityContext"] == {}
    assert spec["enableServiceLinks"] is True
    assert spec["priority"] == 0
    assert spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert out["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    ctr = spec["containers"][0]
    assert ctr["imagePullPolicy"] == "IfNotPresent"
    assert ctr["terminationMessagePath"] == "/dev/termination-log"
    assert ctr["terminationMessagePolicy"] == "File"
    assert ctr["resources"] == {}
    assert validate("Pod", out) == []


def test_default_toleration_seconds():
    spec = apply_defaults("Pod", _pod())["spec"]
    assert spec["tolerations"] == [
        {
            "key": "node.kubernetes.io/not-ready",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 300,
        },
    ]
    own = {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 5,
    }
    spec = apply_defaults("Pod", _pod(tolerations=[own]))["spec"]
    assert spec["tolerations"][0] == own
    assert [t["key"] for t in spec["tolerations"]] == [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    spec = apply_defaults("Pod", _pod(tolerations=[{"operator": "Exists"}]))["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}], "a toleration of everything covers both"


def test_container_details():
    pod = _pod(
        volumes=[
            {"name": "s", "secret": {"secretName": "x"}},
            {"name": "c", "configMap": {"name": "y", "defaultMode": 256}},
            {"name": "h", "hostPath": {"path": "/tmp"}},
            {"name": "e"},
            {
                "name": "d",
                "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]},
            },
        ]
    )
    pod["spec"]["containers"][0].update(
        {
            "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
            "env": [
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            ],
            "livenessProbe": {"httpGet": {"port": 8080}},
            "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 3},
        }
    )
    spec = apply_defaults("Pod", pod)["spec"]
    ctr = spec["containers"][0]
    assert [p["protocol"] for p in ctr["ports"]] == ["TCP", "UDP"]
    assert ctr["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "spec.nodeName", "apiVersion": "v1"}
    assert ctr["env"][1]["valueFrom"]["resourceFieldRef"]["divisor"] == "0"
    assert ctr["livenessProbe"] == {
        "httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert ctr["readinessProbe"]["periodSeconds"] == 3
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["s"]["secret"]["defaultMode"] == 420
    assert vols["c"]["configMap"]["defaultMode"] == 256, "client values are kept"
    assert vols["h"]["hostPath"]["type"] == ""
    assert vols["e"]["emptyDir"] == {}
    assert vols["d"]["downwardAPI"]["defaultMode"] == 420
    assert vols["d"]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"] == "v1"


def test_requests_default_to_limits_and_qos():
    pod = _pod()
    pod["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "500m", "memory": "128Mi"}}
    out = apply_defaults("Pod", pod)
    assert out["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "500m", "memory": "128Mi"}
    assert out["status"]["qosClass"] == "Guaranteed"
    pod["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "100m"},
        "limits": {"cpu": "500m", "memory": "1Gi"},
    }
    assert apply_defaults("Pod", pod)["status"]["qosClass"] == "Burstable"
    assert (
        pod_qos_class({"spec": {"containers": [{"resources": {"requests": {"cpu": "0"}}}]}}) == "BestEffort"
    )


def test_host_network_ports():
    pod = _pod(hostNetwork=True)
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    port = apply_defaults("Pod", pod)["spec"]["containers"][0]["ports"][0]
    assert port["hostPort"] == 8080


def test_client_values_are_never_overwritten():
    pod = _pod(
        restartPolicy="Never", dnsPolicy="Default", terminationGracePeriodSeconds=0, schedulerName="mine"
    )
    pod["spec"]["enableServiceLinks"] = False
    pod["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    spec = apply_defaults("Pod", pod)["spec"]
    assert (spec["restartPolicy"], spec["dnsPolicy"], spec["terminationGracePeriodSeconds"]) == (
        "Never",
        "Default",
        0,
    )
    assert spec["schedulerName"] == "mine" and spec["enableServiceLinks"] is False
    assert spec["containers"][0]["imagePullPolicy"] == "Never"


def test_input_is_not_modified_and_defaulting_is_idempotent():
    pod = _pod()
    before = copy.deepcopy(pod)
    once = apply_defaults("Pod", pod)
    assert pod == before
    assert apply_defaults("Pod", once) == once


def test_update_skips_create_only_admission():
    old = apply_defaults("Pod", _pod())
    new = copy.deepcopy(old)
    new["spec"]["tolerations"] = []
    new["status"] = {}
    out = apply_defaults("Pod", new, old=old)
    assert out["spec"]["tolerations"] == [] and out["status"] == {}


def test_deployment_defaults():
    d = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "w", "image": "nginx"}]},
            },
        },
    }
    out = apply_defaults("deployments", d)
    spec = out["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    tspec = spec["template"]["spec"]
    assert tspec["restartPolicy"] == "Always" and tspec["containers"][0]["imagePullPolicy"] == "Always"
    assert "tolerations" not in tspec and "priority" not in tspec and "enableServiceLinks" not in tspec
    assert "status" not in out
    assert validate("Deployment", out) == []
    recreate = copy.deepcopy(d)
    recreate["spec"]["strategy"] = {"type": "Recreate"}
    assert apply_defaults("Deployment", recreate)["spec"]["strategy"] == {"type": "Recreate"}


def test_replicaset_and_daemonset_defaults():
    template = {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    rs = apply_defaults(
        "ReplicaSet", {"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": template}}
    )
    assert rs["spec"]["replicas"] == 1
    assert rs["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    ds = apply_defaults(
        "DaemonSet", {"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": template}}
    )
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert ds["spec"]["revisionHistoryLimit"] == 10
    on_delete = apply_defaults(
        "DaemonSet", {"spec": {"updateStrategy": {"type": "OnDelete"}, "template": template}}
    )
    assert on_delete["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_service_defaults():
    svc = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    spec = apply_defaults("Service", svc)["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"

    svc["spec"].update(
        type="NodePort", sessionAffinity="ClientIP", ports=[{"port": 80, "targetPort": "http"}]
    )
    spec = apply_defaults("Service", svc)["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert spec["ports"][0]["targetPort"] == "http"

    lb = apply_defaults("Service", {"spec": {"type": "LoadBalancer", "ports": [{"port": 443}]}})
    assert lb["spec"]["allocateLoadBalancerNodePorts"] is True
    assert lb["status"] == {"loadBalancer": {}}

    v6 = apply_defaults("Service", {"spec": {"clusterIP": "fd00::10", "ports": [{"port": 1}]}})
    assert v6["spec"]["clusterIPs"] == ["fd00::10"] and v6["spec"]["ipFamilies"] == ["IPv6"]

    ext = apply_defaults("Service", {"spec": {"type": "ExternalName", "externalName": "db.example.com"}})
    assert "ipFamilies" not in ext["spec"] and "internalTrafficPolicy" not in ext["spec"]


def test_service_update_keeps_allocations():
    old = apply_defaults(
        "Service",
        {"spec": {"type": "NodePort", "clusterIP": "10.0.0.7", "ports": [{"port": 80, "nodePort": 30080}]}},
    )
    new = apply_defaults("Service", {"spec": {"type": "NodePort", "ports": [{"port": 80}]}}, old=old)
    assert new["spec"]["clusterIP"] == "10.0.0.7" and new["spec"]["clusterIPs"] == ["10.0.0.7"]
    assert new["spec"]["ports"][0]["nodePort"] == 30080


def test_other_kinds():
    ns = apply_defaults("Namespace", {"metadata": {"name": "team-a"}})
    assert ns["spec"] == {"finalizers": ["kubernetes"]}
    assert ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}

    secret = apply_defaults(
        "Secret", {"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello"}}
    )
    assert secret["type"] == "Opaque"
    assert "stringData" not in secret
    assert base64.b64decode(secret["data"]["b"]) == b"hello" and secret["data"]["a"] == "eA=="

    node = apply_defaults(
        "Node", {"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "4", "pods": "110"}}}
    )
    assert node["status"]["allocatable"] == {"cpu": "4", "pods": "110"}

    ep = apply_defaults(
        "Endpoints", {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}
    )
    assert ep["subsets"][0]["ports"][0]["protocol"] == "TCP"

    assert apply_defaults("ConfigMap", {"data": {"a": "1"}}) == {"data": {"a": "1"}}
    assert apply_defaults("Widget", {"spec": {}}) == {"spec": {}}
