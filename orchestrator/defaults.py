"""Defaulting: the fields kube-apiserver fills in before it validates and stores an object.

Clients read these back (`kubectl get -o yaml` shows `restartPolicy: Always`,
`imagePullPolicy: IfNotPresent`, a deployment's `25%` surge) and controllers rely on them
being set, so grove fills the same values Kubernetes does: the `SetDefaults_*` functions of
`pkg/apis/core/v1` and `pkg/apis/apps/v1`, plus what the built-in admission plugins and
registry strategies add on create (pod priority and not-ready/unreachable tolerations, a
namespace's `kubernetes` finalizer and name label, a service's IP family, a secret's
`stringData` folded into `data`). `apply_defaults(kind, obj)` returns a defaulted copy and
never overwrites a value the client set.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
from collections.abc import Mapping
from typing import Any

from orchestrator.validation import QuantityError, canonical_kind, parse_quantity

DEFAULT_TOLERATION_SECONDS = 300
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """parent[key] as a dict, creating it (or replacing a non-dict) when needed."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _unset(obj: Mapping[str, Any], key: str) -> bool:
    """Go's zero-value test: missing, null or the empty string."""
    return obj.get(key) in (None, "")


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, IfNotPresent otherwise (a digest has no tag)."""
    name = image.split("@", 1)[0] if "@" in image else image
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.rsplit(":", 1)[1]
    else:
        tag = "" if "@" in image else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_probe(probe: Any) -> None:
    if not isinstance(probe, dict):
        return
    for key, value in (
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ):
        if not probe.get(key):
            probe[key] = value
    _default_handler(probe)


def _default_handler(handler: Any) -> None:
    if not isinstance(handler, dict):
        return
    http = handler.get("httpGet")
    if isinstance(http, dict):
        if _unset(http, "path"):
            http["path"] = "/"
        if _unset(http, "scheme"):
            http["scheme"] = "HTTP"


def _default_field_ref(ref: Any) -> None:
    if isinstance(ref, dict) and _unset(ref, "apiVersion"):
        ref["apiVersion"] = "v1"


def _default_container(ctr: Any) -> None:
    if not isinstance(ctr, dict):
        return
    if _unset(ctr, "imagePullPolicy"):
        ctr["imagePullPolicy"] = image_pull_policy(str(ctr.get("image") or ""))
    if _unset(ctr, "terminationMessagePath"):
        ctr["terminationMessagePath"] = "/dev/termination-log"
    if _unset(ctr, "terminationMessagePolicy"):
        ctr["terminationMessagePolicy"] = "File"
    # ResourceRequirements is a struct, not a pointer: it always serializes, as `{}` when empty.
    if not isinstance(ctr.get("resources"), dict):
        ctr["resources"] = {}
    for port in _list(ctr.get("ports")):
        if isinstance(port, dict) and _unset(port, "protocol"):
            port["protocol"] = "TCP"
    for var in _list(ctr.get("env")):
        value_from = var.get("valueFrom") if isinstance(var, dict) else None
        if isinstance(value_from, dict):
            _default_field_ref(value_from.get("fieldRef"))
            resource_ref = value_from.get("resourceFieldRef")
            if isinstance(resource_ref, dict) and resource_ref.get("divisor") is None:
                resource_ref["divisor"] = "0"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(ctr.get(probe))
    lifecycle = ctr.get("lifecycle")
    if isinstance(lifecycle, dict):
        _default_handler(lifecycle.get("postStart"))
        _default_handler(lifecycle.get("preStop"))


_VOLUME_SOURCES = (
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
)


def _default_volume(vol: Any) -> None:
    if not isinstance(vol, dict):
        return
    if all(vol.get(source) is None for source in _VOLUME_SOURCES):
        vol["emptyDir"] = {}
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        body = vol.get(source)
        if isinstance(body, dict) and body.get("defaultMode") is None:
            body["defaultMode"] = 420  # 0644
    host_path = vol.get("hostPath")
    if isinstance(host_path, dict) and host_path.get("type") is None:
        host_path["type"] = ""
    downward = vol.get("downwardAPI")
    if isinstance(downward, dict):
        for item in _list(downward.get("items")):
            if isinstance(item, dict):
                _default_field_ref(item.get("fieldRef"))
    projected = vol.get("projected")
    if isinstance(projected, dict):
        for source in _list(projected.get("sources")):
            if not isinstance(source, dict):
                continue
            token = source.get("serviceAccountToken")
            if isinstance(token, dict) and token.get("expirationSeconds") is None:
                token["expirationSeconds"] = 3600
            downward_source = source.get("downwardAPI")
            if isinstance(downward_source, dict):
                for item in _list(downward_source.get("items")):
                    if isinstance(item, dict):
                        _default_field_ref(item.get("fieldRef"))


def default_pod_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """SetDefaults_PodSpec and the defaults of everything inside it (also for templates)."""
    if _unset(spec, "dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if _unset(spec, "restartPolicy"):
        spec["restartPolicy"] = "Always"
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    if _unset(spec, "schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for ctr in _list(spec.get(group)):
            _default_container(ctr)
    for vol in _list(spec.get("volumes")):
        _default_volume(vol)
    return spec


def _tolerates(tolerations: list[Any], taint_key: str) -> bool:
    for tol in tolerations:
        if not isinstance(tol, dict):
            continue
        key, effect = tol.get("key") or "", tol.get("effect") or ""
        if key in ("", taint_key) and effect in ("", "NoExecute"):
            return True
    return False


def _default_pod(pod: dict[str, Any], creating: bool) -> None:
    spec = _dict(pod, "spec")
    # SetDefaults_Pod: requests default to limits (pods only, not templates).
    for group in ("containers", "initContainers"):
        for ctr in _list(spec.get(group)):
            if not isinstance(ctr, dict):
                continue
            resources = ctr.get("resources")
            if isinstance(resources, dict) and isinstance(resources.get("limits"), dict):
                requests = _dict(resources, "requests")
                for name, value in resources["limits"].items():
                    requests.setdefault(name, value)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    if spec.get("hostNetwork") is True:
        for group in ("containers", "initContainers"):
            for ctr in _list(spec.get(group)):
                for port in _list(ctr.get("ports") if isinstance(ctr, dict) else None):
                    if isinstance(port, dict) and not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")
    default_pod_spec(spec)
    if not creating:
        return
    # The Priority admission plugin (no PriorityClasses in grove: every pod gets priority 0).
    if not spec.get("priorityClassName"):
        spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    # The DefaultTolerationSeconds admission plugin.
    tolerations = _list(spec.get("tolerations"))
    added = []
    for taint in (NOT_READY_TAINT, UNREACHABLE_TAINT):
        if not _tolerates(tolerations, taint):
            added.append(
                {
                    "key": taint,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
                }
            )
    if added:
        spec["tolerations"] = tolerations + added
    # The pod registry's PrepareForCreate: a new pod is Pending with its QoS class computed.
    status = pod.get("status")
    if not isinstance(status, dict) or not status:
        pod["status"] = {"phase": "Pending", "qosClass": pod_qos_class(pod)}


def _quantity(value: Any) -> Any:
    try:
        return parse_quantity(value)
    except QuantityError:
        return None


def pod_qos_class(pod: Mapping[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort from cpu/memory requests and limits (ComputePodQOS)."""
    spec = pod.get("spec") if isinstance(pod.get("spec"), Mapping) else {}
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    guaranteed = True
    for ctr in _list(spec.get("containers")) + _list(spec.get("initContainers")):
        resources = ctr.get("resources") if isinstance(ctr, Mapping) else None
        resources = resources if isinstance(resources, Mapping) else {}
        found_limits = set()
        for group, totals in (("requests", requests), ("limits", limits)):
            values = resources.get(group)
            for name, value in values.items() if isinstance(values, Mapping) else ():
                quantity = _quantity(value)
                if name not in ("cpu", "memory") or quantity is None or quantity <= 0:
                    continue
                totals[name] = totals.get(name, 0) + quantity
                if group == "limits":
                    found_limits.add(name)
        if found_limits != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    matched = all(limits.get(name) == value for name, value in requests.items())
    if guaranteed and matched and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


def _default_template(spec: dict[str, Any]) -> None:
    template = _dict(spec, "template")
    default_pod_spec(_dict(template, "spec"))


def _default_deployment(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    strategy = _dict(spec, "strategy")
    if _unset(strategy, "type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        if rolling.get("maxUnavailable") is None:
            rolling["maxUnavailable"] = "25%"
        if rolling.get("maxSurge") is None:
            rolling["maxSurge"] = "25%"
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    _default_template(spec)


def _default_replicaset(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    _default_template(spec)


def _default_daemonset(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    strategy = _dict(spec, "updateStrategy")
    if _unset(strategy, "type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        rolling = _dict(strategy, "rollingUpdate")
        if rolling.get("maxUnavailable") is None:
            rolling["maxUnavailable"] = 1
        if rolling.get("maxSurge") is None:
            rolling["maxSurge"] = 0
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    _default_template(spec)


def _default_statefulset(obj: dict[str, Any]) -> None:
    """SetDefaults_StatefulSet (1.32 gates: StatefulSetAutoDeletePVC on, MaxUnavailableStatefulSet off)."""
    spec = _dict(obj, "spec")
    if _unset(spec, "podManagementPolicy"):
        spec["podManagementPolicy"] = "OrderedReady"
    strategy = _dict(spec, "updateStrategy")
    if _unset(strategy, "type"):
        strategy["type"] = "RollingUpdate"
        if strategy.get("rollingUpdate") is None:
            strategy["rollingUpdate"] = {}
    rolling = strategy.get("rollingUpdate")
    if strategy["type"] == "RollingUpdate" and isinstance(rolling, dict) and rolling.get("partition") is None:
        rolling["partition"] = 0
    retention = _dict(spec, "persistentVolumeClaimRetentionPolicy")
    for key in ("whenDeleted", "whenScaled"):
        if _unset(retention, key):
            retention[key] = "Retain"
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10
    _default_template(spec)


JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL = "job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"


def _generate_job_selector(obj: dict[str, Any]) -> None:
    """The job registry's generateSelector: label the template with the job's name and uid and
    select on the uid, so the job's pods are its own even when another job has the same labels."""
    meta = _dict(obj, "metadata")
    spec = _dict(obj, "spec")
    labels = _dict(_dict(_dict(spec, "template"), "metadata"), "labels")
    for key in (LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL):
        labels.setdefault(key, str(meta.get("name") or ""))
    for key in (LEGACY_CONTROLLER_UID_LABEL, CONTROLLER_UID_LABEL):
        labels.setdefault(key, str(meta.get("uid") or ""))
    match = _dict(_dict(spec, "selector"), "matchLabels")
    match.setdefault(CONTROLLER_UID_LABEL, str(meta.get("uid") or ""))


def _default_job_spec(spec: dict[str, Any]) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    if _unset(spec, "completionMode"):
        spec["completionMode"] = "NonIndexed"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if _unset(spec, "podReplacementPolicy"):
        spec["podReplacementPolicy"] = "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    policy = spec.get("podFailurePolicy")
    for rule in _list(policy.get("rules") if isinstance(policy, dict) else None):
        for pattern in _list(rule.get("onPodConditions") if isinstance(rule, dict) else None):
            if isinstance(pattern, dict) and _unset(pattern, "status"):
                pattern["status"] = "True"


def _default_job(obj: dict[str, Any], creating: bool) -> None:
    spec = _dict(obj, "spec")
    _default_job_spec(spec)
    if creating and spec.get("manualSelector") is not True:
        _generate_job_selector(obj)
    meta = _dict(obj, "metadata")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    if isinstance(template_labels, dict) and template_labels and not meta.get("labels"):
        meta["labels"] = dict(template_labels)
    _default_template(spec)
    if creating:
        obj["status"] = {}  # the job registry's PrepareForCreate: status is the controller's


def _default_cronjob(obj: dict[str, Any], creating: bool) -> None:
    if creating:
        obj["status"] = {}  # the cronjob registry's PrepareForCreate
    spec = _dict(obj, "spec")
    if _unset(spec, "concurrencyPolicy"):
        spec["concurrencyPolicy"] = "Allow"
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("successfulJobsHistoryLimit") is None:
        spec["successfulJobsHistoryLimit"] = 3
    if spec.get("failedJobsHistoryLimit") is None:
        spec["failedJobsHistoryLimit"] = 1
    _default_template(_dict(_dict(spec, "jobTemplate"), "spec"))


# --- HorizontalPodAutoscaler (autoscaling/v2 stored; v1 bodies converted) ----------------------

HPA_DEFAULT_CPU_UTILIZATION = 80  # autoscaling.DefaultCPUUtilization
HPA_SCALE_UP_STABILIZATION_SECONDS = 0
HPA_SCALE_DOWN_STABILIZATION_SECONDS = 300


def hpa_default_scale_up_rules() -> dict[str, Any]:
    """kube's GenerateHPAScaleUpRules(nil): add 4 pods or double, whichever is more, every 15 s."""
    return {
        "stabilizationWindowSeconds": HPA_SCALE_UP_STABILIZATION_SECONDS,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }


def hpa_default_scale_down_rules() -> dict[str, Any]:
    """kube's GenerateHPAScaleDownRules(nil): remove up to all pods every 15 s, after 5 minutes."""
    return {
        "stabilizationWindowSeconds": HPA_SCALE_DOWN_STABILIZATION_SECONDS,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }


def hpa_scaling_rules(given: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """The rules of one direction with kube's defaults filled in where the client left them out."""
    if not isinstance(given, Mapping):
        return defaults
    rules = dict(given)
    for key in ("stabilizationWindowSeconds", "selectPolicy", "policies"):
        if rules.get(key) is None:
            rules[key] = defaults[key]
    return rules


def hpa_v1_to_v2(obj: dict[str, Any]) -> None:
    """Turn an autoscaling/v1 HPA into the stored autoscaling/v2 shape (in place)."""
    obj["apiVersion"] = "autoscaling/v2"
    spec = _dict(obj, "spec")
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}},
            }
        ]
    status = obj.get("status")
    if isinstance(status, dict):
        current = status.pop("currentCPUUtilizationPercentage", None)
        if current is not None:
            status["currentMetrics"] = [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}
            ]


def hpa_v2_to_v1(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 view of a stored autoscaling/v2 HPA (its CPU utilization target only),
    for the API server to answer v1 requests with."""
    result = copy.deepcopy(dict(obj))
    result["apiVersion"] = "autoscaling/v1"
    spec = _dict(result, "spec")
    metrics = spec.pop("metrics", None) or []
    spec.pop("behavior", None)
    for metric in metrics:
        resource = (metric or {}).get("resource") or {}
        target = resource.get("target") or {}
        if (
            metric.get("type") == "Resource"
            and resource.get("name") == "cpu"
            and target.get("type") == "Utilization"
        ):
            spec["targetCPUUtilizationPercentage"] = target.get("averageUtilization")
    status = result.get("status")
    if isinstance(status, dict):
        status.pop("conditions", None)
        for metric in status.pop("currentMetrics", None) or []:
            resource = (metric or {}).get("resource") or {}
            current = resource.get("current") or {}
            if resource.get("name") == "cpu" and current.get("averageUtilization") is not None:
                status["currentCPUUtilizationPercentage"] = current["averageUtilization"]
        status.setdefault("currentReplicas", 0)
    return result


def to_served_version(api_version: str, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A stored object as a client of `api_version` must see it (the API server should call this on
    every object it answers with); objects stored in the requested version come back unchanged."""
    if (
        api_version == "autoscaling/v1"
        and obj.get("kind") == "HorizontalPodAutoscaler"
        and obj.get("apiVersion") != api_version
    ):
        return hpa_v2_to_v1(obj)
    return obj


def _default_hpa(obj: dict[str, Any], creating: bool) -> None:
    if creating:  # the HPA registry's PrepareForCreate: status is the controller's
        obj["status"] = {"desiredReplicas": 0}
    if obj.get("apiVersion") == "autoscaling/v1":
        hpa_v1_to_v2(obj)
    spec = _dict(obj, "spec")
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not _list(spec.get("metrics")):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": HPA_DEFAULT_CPU_UTILIZATION},
                },
            }
        ]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):  # like kube: only a given behavior gets its missing parts
        behavior["scaleUp"] = hpa_scaling_rules(behavior.get("scaleUp"), hpa_default_scale_up_rules())
        behavior["scaleDown"] = hpa_scaling_rules(behavior.get("scaleDown"), hpa_default_scale_down_rules())


def _ip_family(ip: str) -> str | None:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def _default_service(obj: dict[str, Any], old: Mapping[str, Any] | None) -> None:
    spec = _dict(obj, "spec")
    if _unset(spec, "sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        config = spec.get("sessionAffinityConfig")
        client_ip = config.get("clientIP") if isinstance(config, dict) else None
        if not isinstance(client_ip, dict) or client_ip.get("timeoutSeconds") is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    if _unset(spec, "type"):
        spec["type"] = "ClusterIP"
    stype = spec["type"]
    for port in _list(spec.get("ports")):
        if not isinstance(port, dict):
            continue
        if _unset(port, "protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    externally_accessible = stype in ("NodePort", "LoadBalancer") or (
        stype == "ClusterIP" and bool(_list(spec.get("externalIPs")))
    )
    if externally_accessible and _unset(spec, "externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if spec.get("internalTrafficPolicy") is None and stype in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec["internalTrafficPolicy"] = "Cluster"
    if stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    if old is not None:
        _carry_over_allocations(spec, old)
    _dict(obj, "status").setdefault("loadBalancer", {})
    if stype == "ExternalName":
        return
    # The service registry: clusterIPs mirror clusterIP, and the IP family follows from them.
    if not _list(spec.get("clusterIPs")) and not _unset(spec, "clusterIP"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    if _unset(spec, "clusterIP") and _list(spec.get("clusterIPs")):
        spec["clusterIP"] = spec["clusterIPs"][0]
    if not _list(spec.get("ipFamilies")):
        families = [f for f in (_ip_family(ip) for ip in _list(spec.get("clusterIPs"))) if f]
        spec["ipFamilies"] = families or ["IPv4"]
    if spec.get("ipFamilyPolicy") is None:
        spec["ipFamilyPolicy"] = "SingleStack" if len(spec["ipFamilies"]) < 2 else "RequireDualStack"


def _carry_over_allocations(spec: dict[str, Any], old: Mapping[str, Any]) -> None:
    """An update that omits allocated values keeps them (kube's service REST patches them in)."""
    old_spec = old.get("spec") if isinstance(old.get("spec"), Mapping) else {}
    if spec.get("type") == "ExternalName" or old_spec.get("type") == "ExternalName":
        return
    if _unset(spec, "clusterIP") and not _list(spec.get("clusterIPs")):
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
            if old_spec.get(key) is not None:
                spec.setdefault(key, copy.deepcopy(old_spec[key]))
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        old_ports = {
            (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
            for p in _list(old_spec.get("ports"))
            if isinstance(p, dict)
        }
        for port in _list(spec.get("ports")):
            if isinstance(port, dict) and not port.get("nodePort"):
                node_port = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
                if node_port:
                    port["nodePort"] = node_port


def _default_endpoints(obj: dict[str, Any]) -> None:
    for subset in _list(obj.get("subsets")):
        for port in _list(subset.get("ports") if isinstance(subset, dict) else None):
            if isinstance(port, dict) and _unset(port, "protocol"):
                port["protocol"] = "TCP"


def _default_endpointslice(obj: dict[str, Any]) -> None:
    # SetDefaults_EndpointPort: a port without a name has the empty name; TCP unless told.
    for port in _list(obj.get("ports")):
        if isinstance(port, dict):
            if port.get("name") is None:
                port["name"] = ""
            if port.get("protocol") is None:
                port["protocol"] = "TCP"


def _default_namespace(obj: dict[str, Any]) -> None:
    meta = _dict(obj, "metadata")
    name = meta.get("name")
    if name:
        _dict(meta, "labels")["kubernetes.io/metadata.name"] = name
    spec = _dict(obj, "spec")
    if spec.get("finalizers") is None:
        spec["finalizers"] = ["kubernetes"]
    status = _dict(obj, "status")
    if _unset(status, "phase"):
        status["phase"] = "Active"


def _default_secret(obj: dict[str, Any]) -> None:
    if _unset(obj, "type"):
        obj["type"] = "Opaque"
    # v1 -> internal conversion: stringData is written into data (winning over it), then dropped.
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = _dict(obj, "data")
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_node(obj: dict[str, Any]) -> None:
    status = obj.get("status")
    if (
        isinstance(status, dict)
        and status.get("allocatable") is None
        and isinstance(status.get("capacity"), dict)
    ):
        status["allocatable"] = dict(status["capacity"])


def _default_event(obj: dict[str, Any]) -> None:
    # Non-omitempty strings of core/v1 Event: they always serialize.
    obj.setdefault("reportingComponent", "")
    obj.setdefault("reportingInstance", "")


def _tree_copy(value: Any) -> Any:
    """A deep copy of decoded JSON/YAML, several times faster than copy.deepcopy: dicts and
    lists are rebuilt, immutable scalars shared, anything else deep-copied. (A YAML alias
    becomes two independent copies, as it does when Kubernetes converts YAML to JSON.)"""
    kind = type(value)
    if kind is dict:
        return {k: _tree_copy(v) for k, v in value.items()}
    if kind is list:
        return [_tree_copy(v) for v in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)


def apply_defaults(kind: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `obj` with Kubernetes' defaults filled in; `old` is the stored object on update."""
    result = _tree_copy(dict(obj))
    name = canonical_kind(kind)
    if name == "Pod":
        _default_pod(result, creating=old is None)
    elif name == "Deployment":
        _default_deployment(result)
    elif name == "ReplicaSet":
        _default_replicaset(result)
    elif name == "DaemonSet":
        _default_daemonset(result)
    elif name == "StatefulSet":
        _default_statefulset(result)
    elif name == "Job":
        _default_job(result, creating=old is None)
    elif name == "CronJob":
        _default_cronjob(result, creating=old is None)
    elif name == "HorizontalPodAutoscaler":
        _default_hpa(result, creating=old is None)
    elif name == "Service":
        _default_service(result, old)
    elif name == "Endpoints":
        _default_endpoints(result)
    elif name == "EndpointSlice":
        _default_endpointslice(result)
    elif name == "Namespace":
        _default_namespace(result)
    elif name == "Secret":
        _default_secret(result)
    elif name == "Node":
        _default_node(result)
    elif name == "Event":
        _default_event(result)
    return result
