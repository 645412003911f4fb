"""Tests of orchestrator.validation: kube-apiserver's field paths, reasons and wording."""

from __future__ import annotations

import base64
import copy

import pytest

from orchestrator.defaults import apply_defaults
from orchestrator.validation import (
    Cause,
    QuantityError,
    canonical_kind,
    go_quote,
    invalid_message,
    invalid_status,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_qualified_name,
    is_valid_label_value,
    kind_info,
    parse_quantity,
    validate,
    validate_update,
)

DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
    "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
    "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def messages(causes):
    return [str(c) for c in causes]


def has(causes, text):
    assert text in messages(causes), "\n".join(messages(causes))


def pod(**spec_overrides):
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]}],
            **spec_overrides,
        },
    }
    return apply_defaults("Pod", obj)


def deployment(**spec_overrides):
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
            **spec_overrides,
        },
    }
    return apply_defaults("Deployment", obj)


def service(**spec_overrides):
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], **spec_overrides},
    }
    return apply_defaults("Service", obj)


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


def test_name_formats():
    assert is_dns1123_label("my-name") == []
    assert is_dns1123_label("My_Name") == [DNS_LABEL_MSG]
    assert is_dns1123_label("a.b") == ["must not contain dots"]
    assert is_dns1123_label("a" * 64) == ["must be no more than 63 characters"]
    assert is_dns1123_subdomain("example.com") == []
    assert is_dns1123_subdomain("-bad") == [DNS_SUBDOMAIN_MSG]
    assert is_dns1035_label("1abc") == [DNS1035_MSG]
    assert is_qualified_name("example.com/My_Name") == []
    assert is_qualified_name("/x") == ["prefix part must be non-empty"]
    assert is_qualified_name("a/b/c")[0].startswith("a qualified name must consist of")
    assert is_qualified_name("a/b/c")[0].endswith(
        "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
    )
    assert is_qualified_name("x" * 64) == ["name part must be no more than 63 characters"]
    assert is_valid_label_value("") == []
    assert is_valid_label_value("-x")[0].startswith("a valid label must be an empty string or consist of")


def test_go_quote():
    assert go_quote('a"b\\c\n') == '"a\\"b\\\\c\\n"'
    assert go_quote("\x01") == '"\\x01"'


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", 0.1),
        ("1", 1),
        ("1.5", 1.5),
        ("1Ki", 1024),
        ("1Gi", 2**30),
        ("2M", 2_000_000),
        ("1e3", 1000),
        ("500u", 0.0005),
        (3, 3),
    ],
)
def test_parse_quantity(text, value):
    assert float(parse_quantity(text)) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "1.2.3", "1Qi", "", "--1", True])
def test_parse_quantity_rejects(text):
    with pytest.raises(QuantityError):
        parse_quantity(text)


def test_kind_lookup():
    assert canonical_kind("deployments") == "Deployment"
    assert canonical_kind("pod") == "Pod"
    assert canonical_kind("deployments.apps") == "Deployment"
    assert canonical_kind("Widget") is None
    assert kind_info("Lease").qualified_kind == "Lease.coordination.k8s.io"
    assert not kind_info("nodes").namespaced


# --------------------------------------------------------------------------------------------
# Status bodies
# --------------------------------------------------------------------------------------------


def test_invalid_status_for_selector_mismatch():
    d = deployment()
    d["spec"]["template"]["metadata"]["labels"] = {"app": "other", "tier": "x"}
    causes = validate("Deployment", d)
    status = invalid_status("Deployment", "web", causes)
    assert status["code"] == 422 and status["reason"] == "Invalid" and status["kind"] == "Status"
    assert status["message"] == (
        'Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"app":"other", "tier":"x"}: `selector` does not match template `labels`'
    )
    assert status["details"] == {
        "name": "web",
        "kind": "Deployment",
        "group": "apps",
        "causes": [
            {
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: map[string]string{"app":"other", "tier":"x"}: '
                "`selector` does not match template `labels`",
                "field": "spec.template.metadata.labels",
            }
        ],
    }


def test_invalid_message_aggregates_and_deduplicates():
    causes = [
        Cause("spec.a", "FieldValueRequired", "Required value"),
        Cause("spec.b", "FieldValueRequired", "Required value"),
        Cause("spec.a", "FieldValueRequired", "Required value"),
    ]
    assert (
        invalid_message("Pod", "p", causes)
        == 'Pod "p" is invalid: [spec.a: Required value, spec.b: Required value]'
    )
    assert invalid_message("pods", "p", []) == 'Pod "p" is invalid'
    assert "group" not in invalid_status("Pod", "p", causes)["details"]


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------


def test_valid_objects_have_no_causes():
    assert validate("Pod", pod()) == []
    assert validate("Deployment", deployment()) == []
    assert validate("Service", service()) == []


def test_object_meta():
    p = pod()
    p["metadata"] = {"generateName": "Web-", "namespace": "default"}
    causes = validate("Pod", p)
    has(causes, f'metadata.generateName: Invalid value: "Web-": {DNS_SUBDOMAIN_MSG}')
    has(causes, "metadata.name: Required value: name or generateName is required")
    p["metadata"] = {"generateName": "web-", "name": "web-x7k2p", "namespace": "default"}
    assert validate("Pod", p) == []
    p["metadata"] = {"name": "web"}
    has(validate("Pod", p), "metadata.namespace: Required value")
    node = {"metadata": {"name": "n1", "namespace": "default"}}
    has(validate("Node", node), "metadata.namespace: Forbidden: not allowed on this type")


def test_labels_and_annotations():
    p = pod()
    p["metadata"]["labels"] = {"bad key": "v", "ok": "bad value"}
    causes = validate("Pod", p)
    assert any(
        str(c).startswith('metadata.labels: Invalid value: "bad key": name part must consist of')
        for c in causes
    )
    assert any(
        str(c).startswith('metadata.labels: Invalid value: "bad value": a valid label must be')
        for c in causes
    )
    p = pod()
    p["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
    has(validate("Pod", p), "metadata.annotations: Too long: must have at most 262144 bytes")
    p["metadata"]["annotations"] = {"Example.COM/Mixed_Case": "fine"}
    assert validate("Pod", p) == []


def test_owner_references_and_finalizers():
    p = pod()
    p["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "1", "controller": True},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "b", "uid": "", "controller": True},
    ]
    p["metadata"]["finalizers"] = ["custom"]
    causes = messages(validate("Pod", p))
    assert 'metadata.ownerReferences.uid: Invalid value: "": must not be empty' in causes
    assert any(
        'Only one reference can have Controller set to true. Found "true" in references for ReplicaSet/a and '
        "ReplicaSet/b" in c
        for c in causes
    )
    assert (
        'metadata.finalizers[0]: Invalid value: "custom": name is neither a standard finalizer name nor is it fully qualified'
        in causes
    )


# --------------------------------------------------------------------------------------------
# Pods
# --------------------------------------------------------------------------------------------


def test_pod_containers():
    has(validate("Pod", pod(containers=[])), "spec.containers: Required value")
    p = pod(
        containers=[
            {"name": "Web", "image": "x"},
            {"name": "dup", "image": ""},
            {"name": "dup", "image": "y"},
        ]
    )
    causes = validate("Pod", p)
    has(causes, f'spec.containers[0].name: Invalid value: "Web": {DNS_LABEL_MSG}')
    has(causes, "spec.containers[1].image: Required value")
    has(causes, 'spec.containers[2].name: Duplicate value: "dup"')
    p = pod(initContainers=[{"name": "web", "image": "x"}])
    has(validate("Pod", p), 'spec.initContainers[0].name: Duplicate value: "web"')


def test_pod_ports():
    p = pod(
        containers=[
            {
                "name": "web",
                "image": "x",
                "ports": [
                    {"containerPort": 70000},
                    {"containerPort": 0},
                    {"containerPort": 80, "protocol": "HTTP"},
                    {"containerPort": 81, "name": "Bad_Name"},
                    {"containerPort": 82, "name": "web", "hostPort": 99999},
                ],
            }
        ]
    )
    causes = validate("Pod", p)
    has(
        causes,
        "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
    )
    has(causes, "spec.containers[0].ports[1].containerPort: Required value")
    has(
        causes,
        'spec.containers[0].ports[2].protocol: Unsupported value: "HTTP": supported values: "SCTP", "TCP", "UDP"',
    )
    has(
        causes,
        'spec.containers[0].ports[3].name: Invalid value: "Bad_Name": '
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    )
    has(
        causes,
        "spec.containers[0].ports[4].hostPort: Invalid value: 99999: must be between 1 and 65535, inclusive",
    )


def test_pod_policies():
    p = pod(restartPolicy="Sometimes", dnsPolicy="Weird")
    causes = validate("Pod", p)
    has(
        causes,
        'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"',
    )
    has(
        causes,
        'spec.dnsPolicy: Unsupported value: "Weird": supported values: "ClusterFirstWithHostNet", "ClusterFirst", '
        '"Default", "None"',
    )
    p = pod()
    p["spec"]["containers"][0]["imagePullPolicy"] = "Sometimes"
    has(
        validate("Pod", p),
        'spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": supported values: "Always", '
        '"IfNotPresent", "Never"',
    )
    raw = {"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    has(validate("Pod", raw), "spec.restartPolicy: Required value")


def test_pod_volumes_and_mounts():
    p = pod(
        volumes=[
            {"name": "data", "emptyDir": {}, "hostPath": {"path": "/x"}},
            {"name": "cfg", "configMap": {"name": "c"}},
            {"name": "cfg", "secret": {"secretName": "s"}},
            {"name": "mode", "configMap": {"name": "c", "defaultMode": 0o1777}},
            {"name": "none"},
        ]
    )
    p["spec"]["volumes"][4].pop("emptyDir", None)  # defaulting would have filled it
    p["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "missing", "mountPath": "/a"},
        {"name": "data", "mountPath": "/a"},
        {"name": "cfg"},
    ]
    causes = validate("Pod", p)
    has(causes, "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type")
    has(causes, 'spec.volumes[2].name: Duplicate value: "cfg"')
    has(
        causes,
        "spec.volumes[3].configMap.defaultMode: Invalid value: 1023: "
        "must be a number between 0 and 0777 (octal), both inclusive",
    )
    has(causes, "spec.volumes[4]: Required value: must specify a volume type")
    has(causes, 'spec.containers[0].volumeMounts[0].name: Not found: "missing"')
    # An invalid volume is not mountable either, as in Kubernetes.
    has(causes, 'spec.containers[0].volumeMounts[1].name: Not found: "data"')
    has(causes, 'spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/a": must be unique')
    has(causes, "spec.containers[0].volumeMounts[2].mountPath: Required value")
    assert "spec.containers[0].volumeMounts[2].name" not in [c.field for c in causes]
    ok = pod(volumes=[{"name": "data", "emptyDir": {}}])
    ok["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    assert validate("Pod", ok) == []


def test_pod_resources():
    p = pod()
    p["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "2", "memory": "-1Gi", "gpu": "1"},
        "limits": {"cpu": "500m", "example.com/fpga": "1"},
    }
    causes = validate("Pod", p)
    has(
        causes,
        'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 500m',
    )
    has(
        causes,
        'spec.containers[0].resources.requests[memory]: Invalid value: "-1Gi": must be greater than or equal to 0',
    )
    has(
        causes,
        'spec.containers[0].resources.requests[gpu]: Invalid value: "gpu": must be a standard resource for containers',
    )
    p["spec"]["containers"][0]["resources"] = {"limits": {"memory": "lots"}}
    causes = messages(validate("Pod", p))
    assert any(
        c.startswith(
            'spec.containers[0].resources.limits[memory]: Invalid value: "lots": quantities must match'
        )
        for c in causes
    )
    p["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "250m"},
        "limits": {"cpu": "0.5", "memory": "1Gi"},
    }
    assert validate("Pod", p) == []


def test_pod_probes():
    p = pod()
    ctr = p["spec"]["containers"][0]
    ctr["livenessProbe"] = apply_defaults(
        "Pod", {"spec": {"containers": [{"livenessProbe": {"httpGet": {"port": 80}}}]}}
    )["spec"]["containers"][0]["livenessProbe"]
    ctr["livenessProbe"]["successThreshold"] = 2
    ctr["readinessProbe"] = {
        "periodSeconds": -1,
        "timeoutSeconds": 1,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    ctr["startupProbe"] = {
        "exec": {"command": ["true"]},
        "tcpSocket": {"port": "http"},
        "successThreshold": 1,
    }
    causes = validate("Pod", p)
    has(causes, "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1")
    has(causes, "spec.containers[0].readinessProbe: Required value: must specify a handler type")
    has(
        causes,
        "spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
    )
    has(
        causes,
        "spec.containers[0].startupProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
    )
    p = pod()
    p["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 0}, "successThreshold": 1}
    has(
        validate("Pod", p),
        "spec.containers[0].readinessProbe.tcpSocket.port: Invalid value: 0: must be between 1 and 65535, inclusive",
    )


def test_pod_env_and_tolerations():
    p = pod(tolerations=[{"operator": "Equal", "value": "x"}, {"key": "k", "effect": "Sometimes"}])
    p["spec"]["containers"][0]["env"] = [
        {"name": "A=B", "value": "x"},
        {
            "name": "B",
            "value": "x",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        },
        {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s"}}},
    ]
    causes = validate("Pod", p)
    has(
        causes,
        'spec.containers[0].env[0].name: Invalid value: "A=B": a valid environment variable name must consist '
        "only of printable ASCII characters other than '='",
    )
    has(
        causes,
        'spec.containers[0].env[1].valueFrom: Invalid value: "": may not be specified when `value` is not empty',
    )
    has(causes, "spec.containers[0].env[2].valueFrom.secretKeyRef.key: Required value")
    has(
        causes,
        'spec.tolerations[0].operator: Invalid value: "Equal": operator must be Exists when `key` is empty, '
        'which means "match all values and all keys"',
    )
    has(
        causes,
        'spec.tolerations[1].effect: Unsupported value: "Sometimes": supported values: "NoSchedule", '
        '"PreferNoSchedule", "NoExecute"',
    )


def test_pod_update_is_mostly_immutable():
    old = pod()
    old["metadata"]["resourceVersion"] = "5"
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "nginx:1.26"
    new["spec"]["activeDeadlineSeconds"] = 30
    new["spec"]["tolerations"].append({"key": "extra", "operator": "Exists"})
    new["metadata"]["labels"]["new"] = "label"
    assert validate_update("Pod", new, old) == []

    new = copy.deepcopy(old)
    new["spec"]["restartPolicy"] = "Never"
    causes = validate_update("Pod", new, old)
    assert len(causes) == 1
    assert causes[0].field == "spec" and causes[0].reason == "FieldValueForbidden"
    assert causes[0].message.startswith(
        "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
        "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
        "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
        "previously negative)\n"
    )
    assert "restartPolicy" in causes[0].message

    new = copy.deepcopy(old)
    new["spec"]["tolerations"] = new["spec"]["tolerations"][:1]
    has(
        validate_update("Pod", new, old),
        "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds",
    )

    old["spec"]["activeDeadlineSeconds"] = 10
    new = copy.deepcopy(old)
    new["spec"]["activeDeadlineSeconds"] = 20
    has(
        validate_update("Pod", new, old),
        "spec.activeDeadlineSeconds: Invalid value: 20: must be less than or equal to previous value",
    )
    new["metadata"]["name"] = "other"
    has(validate_update("Pod", new, old), 'metadata.name: Invalid value: "other": field is immutable')


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


def test_deployment_selector_rules():
    d = deployment()
    del d["spec"]["selector"]
    causes = messages(validate("Deployment", d))
    assert causes == [
        "spec.selector: Required value",
        (
            'spec.template.metadata.labels: Invalid value: map[string]string{"app":"web"}: '
            "`selector` does not match template `labels`"
        ),
    ]
    d = deployment(selector={})
    has(
        validate("Deployment", d),
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
    )
    d = deployment(selector={"matchExpressions": [{"key": "app", "operator": "Has", "values": []}]})
    has(
        validate("Deployment", d),
        'spec.selector.matchExpressions[0].operator: Invalid value: "Has": not a valid selector operator',
    )
    causes = messages(validate("Deployment", d))
    assert any(
        c.startswith("spec.selector: Invalid value: v1.LabelSelector{")
        and c.endswith(": invalid label selector")
        for c in causes
    )
    d = deployment(selector={"matchExpressions": [{"key": "app", "operator": "In"}]})
    has(
        validate("Deployment", d),
        "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
    )


def test_deployment_spec_rules():
    d = deployment(replicas=-1, revisionHistoryLimit=-2, minReadySeconds=700)
    d["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    causes = validate("Deployment", d)
    has(causes, "spec.replicas: Invalid value: -1: must be greater than or equal to 0")
    has(causes, "spec.revisionHistoryLimit: Invalid value: -2: must be greater than or equal to 0")
    has(causes, "spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds")
    has(causes, 'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"')
    d = deployment(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    has(
        validate("Deployment", d),
        'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:""}: '
        "may not be 0 when `maxSurge` is 0",
    )
    d = deployment(
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x%", "maxUnavailable": "150%"}}
    )
    causes = messages(validate("Deployment", d))
    assert any(
        c.startswith(
            'spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"x%"}: a valid percent string'
        )
        for c in causes
    )
    assert (
        'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:"150%"}: '
        "must not be greater than 100%" in causes
    )
    d = deployment(strategy={"type": "Recreate", "rollingUpdate": {}})
    has(
        validate("Deployment", d),
        "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
    )
    d = deployment(strategy={"type": "BlueGreen"})
    has(
        validate("Deployment", d),
        'spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:"BlueGreen", '
        'RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: "Recreate", "RollingUpdate"',
    )
    d = deployment()
    d["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    has(validate("Deployment", d), "spec.template.spec.containers[0].image: Required value")


def test_workload_selector_is_immutable():
    old = deployment()
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web2"}}
    new["spec"]["template"]["metadata"]["labels"] = {"app": "web2"}
    has(
        validate_update("Deployment", new, old),
        'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web2"}, '
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
    )
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    assert validate_update("Deployment", new, old) == []
    rs = apply_defaults("ReplicaSet", {**deployment(), "kind": "ReplicaSet"})
    rs["spec"] = {k: v for k, v in rs["spec"].items() if k in ("replicas", "selector", "template")}
    assert validate("ReplicaSet", rs) == []
    rs2 = copy.deepcopy(rs)
    rs2["spec"]["selector"]["matchLabels"]["extra"] = "x"
    rs2["spec"]["template"]["metadata"]["labels"]["extra"] = "x"
    assert [c.field for c in validate_update("ReplicaSet", rs2, rs)] == ["spec.selector"]


def test_daemonset_rules():
    ds = apply_defaults(
        "DaemonSet",
        {
            "metadata": {"name": "agent", "namespace": "kube-system"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "a", "image": "a"}]},
                },
            },
        },
    )
    assert validate("DaemonSet", ds) == []
    bad = copy.deepcopy(ds)
    bad["spec"]["updateStrategy"]["rollingUpdate"] = {"maxUnavailable": 0, "maxSurge": 0}
    has(
        validate("DaemonSet", bad),
        "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0",
    )
    bad["spec"]["updateStrategy"] = {"type": "Sometimes"}
    has(
        validate("DaemonSet", bad),
        'spec.updateStrategy: Unsupported value: apps.DaemonSetUpdateStrategy{Type:"Sometimes", '
        'RollingUpdate:(*apps.RollingUpdateDaemonSet)(nil)}: supported values: "RollingUpdate", "OnDelete"',
    )
    bad = copy.deepcopy(ds)
    bad["spec"]["selector"] = {}
    has(
        validate("DaemonSet", bad),
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
        "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for daemonset",
    )


# --------------------------------------------------------------------------------------------
# Services and endpoints
# --------------------------------------------------------------------------------------------


def test_service_name_is_dns1035():
    s = service()
    s["metadata"]["name"] = "1web"
    has(validate("Service", s), f'metadata.name: Invalid value: "1web": {DNS1035_MSG}')


def test_service_ports():
    has(validate("Service", service(ports=[])), "spec.ports: Required value")
    assert validate("Service", service(ports=[], clusterIP="None")) == []
    s = service(
        ports=[
            {"port": 0, "name": "a"},
            {"port": 80, "name": "a", "targetPort": 70000},
            {"port": 80, "protocol": "TCP"},
            {"port": 81, "name": "c", "protocol": "ICMP", "targetPort": "not_a_name"},
        ]
    )
    causes = validate("Service", s)
    has(causes, "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive")
    has(causes, 'spec.ports[1].name: Duplicate value: "a"')
    has(causes, "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive")
    has(causes, "spec.ports[2].name: Required value")
    has(
        causes,
        'spec.ports[2]: Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), '
        'Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}',
    )
    has(causes, 'spec.ports[3].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"')
    has(
        causes,
        'spec.ports[3].targetPort: Invalid value: "not_a_name": '
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    )


def test_service_types_and_node_ports():
    has(
        validate("Service", service(type="Magic")),
        'spec.type: Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
    )
    s = service(ports=[{"port": 80, "nodePort": 30080}])
    has(
        validate("Service", s),
        "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
    )
    s = service(type="NodePort", ports=[{"port": 80, "nodePort": 80}])
    has(
        validate("Service", s),
        "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. "
        "The range of valid ports is 30000-32767",
    )
    assert validate("Service", service(type="NodePort", ports=[{"port": 80, "nodePort": 30080}])) == []
    ext = apply_defaults(
        "Service", {"metadata": {"name": "db", "namespace": "default"}, "spec": {"type": "ExternalName"}}
    )
    has(validate("Service", ext), "spec.externalName: Required value")
    ext["spec"]["externalName"] = "db.example.com."
    assert validate("Service", ext) == []


def test_service_cluster_ip():
    s = service(clusterIP="10.0.0.300")
    has(
        validate("Service", s),
        'spec.clusterIPs[0]: Invalid value: "10.0.0.300": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
    )
    s = service(type="NodePort", clusterIP="None")
    has(
        validate("Service", s),
        "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
    )
    old = service(clusterIP="10.0.0.10")
    new = copy.deepcopy(old)
    new["spec"]["clusterIP"] = "10.0.0.11"
    new["spec"]["clusterIPs"] = ["10.0.0.11"]
    has(
        validate_update("Service", new, old),
        'spec.clusterIPs[0]: Invalid value: []string{"10.0.0.11"}: may not change once set',
    )
    new = copy.deepcopy(old)
    new["spec"]["ports"][0]["port"] = 8080
    new["spec"]["ports"][0]["targetPort"] = 8080
    assert validate_update("Service", new, old) == []


def test_endpoints():
    ep = apply_defaults(
        "Endpoints",
        {
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.1.0.5"}], "ports": [{"port": 80}]}],
        },
    )
    assert validate("Endpoints", ep) == []
    ep["subsets"].append({"ports": [{"port": 80}, {"port": 0, "name": "b"}]})
    ep["subsets"][0]["addresses"].append({"ip": "nope"})
    causes = validate("Endpoints", ep)
    has(
        causes,
        'subsets[0].addresses[1].ip: Invalid value: "nope": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)',
    )
    has(causes, "subsets[1]: Required value: must specify `addresses` or `notReadyAddresses`")
    has(causes, "subsets[1].ports[0].name: Required value")
    has(causes, "subsets[1].ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive")


# --------------------------------------------------------------------------------------------
# ConfigMaps, secrets, namespaces, nodes, leases, events
# --------------------------------------------------------------------------------------------

CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
    "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


def test_configmap_keys():
    cm = {"metadata": {"name": "c", "namespace": "d"}, "data": {"ok.key": "1", "bad key": "2", "..x": "3"}}
    causes = validate("ConfigMap", cm)
    has(causes, f'data[bad key]: Invalid value: "bad key": {CONFIG_KEY_MSG}')
    has(causes, "data[..x]: Invalid value: \"..x\": must not start with '..'")
    cm = {"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "1"}, "binaryData": {"a": "MQ=="}}
    has(validate("ConfigMap", cm), 'data[a]: Invalid value: "a": duplicate of key present in binaryData')
    cm = {"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "x" * (1024 * 1024 + 1)}}
    has(validate("ConfigMap", cm), ": Too long: must have at most 1048576 bytes")


def test_immutable_configmap_and_secret():
    old = {"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "1"}, "immutable": True}
    new = copy.deepcopy(old)
    new["data"]["a"] = "2"
    has(validate_update("ConfigMap", new, old), "data: Forbidden: field is immutable when `immutable` is set")
    new = copy.deepcopy(old)
    new["immutable"] = False
    has(
        validate_update("ConfigMap", new, old),
        "immutable: Forbidden: field is immutable when `immutable` is set",
    )
    secret = apply_defaults("Secret", {"metadata": {"name": "s", "namespace": "d"}, "data": {"a": "MQ=="}})
    changed = copy.deepcopy(secret)
    changed["type"] = "kubernetes.io/tls"
    causes = validate_update("Secret", changed, secret)
    has(causes, 'type: Invalid value: "kubernetes.io/tls": field is immutable')
    has(causes, "data[tls.crt]: Required value")
    has(causes, "data[tls.key]: Required value")


def test_secret_data():
    s = apply_defaults("Secret", {"metadata": {"name": "s", "namespace": "d"}, "data": {"k": "not base64!"}})
    has(validate("Secret", s), 'data[k]: Invalid value: "<secret contents redacted>": illegal base64 data')
    token = base64.b64encode(b"{}").decode()
    s = {
        "metadata": {"name": "s", "namespace": "d"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": token},
    }
    assert validate("Secret", s) == []


def test_namespace_node_lease_event():
    ns = apply_defaults("Namespace", {"metadata": {"name": "Team.A"}})
    causes = validate("Namespace", ns)
    assert any(str(c).startswith('metadata.name: Invalid value: "Team.A": ') for c in causes)
    ns = apply_defaults("Namespace", {"metadata": {"name": "team-a"}})
    assert validate("Namespace", ns) == []
    renamed = copy.deepcopy(ns)
    renamed["metadata"]["name"] = "team-b"
    has(
        validate_update("Namespace", renamed, ns),
        'metadata.name: Invalid value: "team-b": field is immutable',
    )

    node = {
        "metadata": {"name": "node-1"},
        "spec": {"taints": [{"key": "k", "effect": "Bad"}, {"key": "k2"}], "podCIDRs": ["10.0.0.0/33"]},
    }
    causes = validate("Node", node)
    has(
        causes,
        'spec.taints[0].effect: Unsupported value: "Bad": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"',
    )
    has(causes, "spec.taints[1].effect: Required value")
    has(
        causes,
        'spec.podCIDRs[0]: Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)',
    )

    lease = {
        "metadata": {"name": "kube-scheduler", "namespace": "kube-system"},
        "spec": {"leaseDurationSeconds": 0},
    }
    has(validate("Lease", lease), "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0")
    lease["spec"] = {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0}
    assert validate("Lease", lease) == []

    event = {
        "metadata": {"name": "web.17f", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "other"},
        "reason": "Scheduled",
    }
    has(
        validate("Event", event),
        'involvedObject.namespace: Invalid value: "other": does not match event.namespace',
    )
    event["involvedObject"]["namespace"] = "default"
    assert validate("Event", event) == []
    event["eventTime"] = "2024-01-01T00:00:00.000000Z"
    causes = validate("Event", event)
    has(causes, "reportingComponent: Required value")
    has(causes, "action: Required value")


def test_unknown_kind_gets_metadata_checks_only():
    assert validate("Widget", {"metadata": {"name": "ok"}, "spec": {"anything": True}}) == []
    has(
        validate("Widget", {"metadata": {"name": "Not OK"}}),
        f'metadata.name: Invalid value: "Not OK": {DNS_SUBDOMAIN_MSG}',
    )
