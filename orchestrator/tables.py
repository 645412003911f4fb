"""Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` renders.

kubectl asks the server for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints
whatever columns come back, so the familiar `kubectl get pods` output (READY, STATUS,
RESTARTS "(5m ago)", AGE "3m2s", ...) is computed here, the way kube-apiserver's printers
compute it. Like kube-apiserver, every row carries the `-o wide` cells too; columns with
priority 1 are the ones kubectl only shows with `-o wide`. Pure functions of the objects and
a clock reading, so they test without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.openapi import SchemaDataMissing, field_description
from orchestrator.resources import DEFAULT_REGISTRY, Registry, Resource

INCLUDE_OBJECT_CHOICES = ("None", "Metadata", "Object")

_NONE = "<none>"
_UNKNOWN = "<unknown>"
_LB_WIDTH = 16
_ROLE_PREFIX = "node-role.kubernetes.io/"
_ROLE_LABEL = "kubernetes.io/role"


@dataclass(frozen=True)
class Column:
    """One TableColumnDefinition: `priority` 0 is always shown, 1 only with `-o wide`."""

    name: str
    type: str = "string"
    format: str = ""
    description: str = ""
    priority: int = 0
    # Where the description comes from: (definition, field) in the upstream schemas.
    doc: tuple[str, str] | None = None

    def definition(self) -> dict[str, Any]:
        description = self.description or _field_doc(self.doc)
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": description,
            "priority": self.priority,
        }


def _field_doc(doc: tuple[str, str] | None) -> str:
    if doc is None:
        return ""
    try:
        return field_description(*doc)
    except SchemaDataMissing:
        return ""


_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_CORE = "io.k8s.api.core.v1"
_APPS = "io.k8s.api.apps.v1"
_DISCOVERY = "io.k8s.api.discovery.v1"
_BATCH = "io.k8s.api.batch.v1"

NAME = Column("Name", format="name", doc=(_META, "name"))
AGE = Column("Age", doc=(_META, "creationTimestamp"))
CONTAINERS = Column("Containers", priority=1, description="The names of the pod template's containers.")
IMAGES = Column("Images", priority=1, description="The images the pod template's containers run.")

# ---------------------------------------------------------------------------------------------
# Formatting helpers shared by the printers


def parse_time(value: Any) -> datetime | None:
    """Parse an RFC 3339 timestamp (Time or MicroTime); None when absent or malformed."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """kubectl's short duration (`5s`, `3m2s`, `2d3h`, `4y12d`): ~2-3 significant figures."""
    whole = int(seconds)  # truncates toward zero, like Go's int(d.Seconds())
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 120:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = whole // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any, now: datetime) -> str:
    """Time since an RFC 3339 timestamp in kubectl's short form; `<unknown>` when there is none."""
    when = parse_time(timestamp)
    if when is None:
        return _UNKNOWN
    return human_duration((now - when).total_seconds())


def format_labels(labels: Mapping[str, str] | None) -> str:
    """`a=b,c=d` sorted by key, or `<none>`."""
    if not labels:
        return _NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as kube's selector string: requirements sorted by key."""
    if not selector:
        return ""
    reqs: list[tuple[str, str]] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        reqs.append((key, f"{key}={value}"))
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(sorted(expr.get("values") or []))
        if op == "In":
            reqs.append((key, f"{key} in ({values})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({values})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
        else:
            return "<invalid>"
    return ",".join(text for _, text in sorted(reqs, key=lambda r: r[0]))


def _containers_and_images(pod_spec: Mapping[str, Any] | None) -> list[str]:
    containers = (pod_spec or {}).get("containers") or []
    return [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


def _template_spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


# ---------------------------------------------------------------------------------------------
# Pods


def _restartable_init(container: Mapping[str, Any] | None) -> bool:
    return bool(container) and container.get("restartPolicy") == "Always"


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status") == "True"
    return False


def _later(current: datetime | None, candidate: Any) -> datetime | None:
    when = parse_time(candidate)
    if when is None:
        return current
    return when if current is None or when > current else current


def pod_summary(pod: Mapping[str, Any], now: datetime) -> tuple[str, str, str]:
    """READY, STATUS and RESTARTS of a pod as kubectl shows them: `1/2`, `CrashLoopBackOff`, `5 (3m ago)`."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    meta = pod.get("metadata") or {}
    restarts = 0
    restartable_init_restarts = 0
    total = len(spec.get("containers") or [])
    ready = 0
    last_restart: datetime | None = None
    last_restartable_init_restart: datetime | None = None

    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_specs = spec.get("initContainers") or []
    init_by_name = {c.get("name"): c for c in init_specs}
    total += sum(1 for c in init_specs if _restartable_init(c))

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        count = _int(cs.get("restartCount"))
        restarts += count
        finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
        last_restart = _later(last_restart, finished)
        restartable = _restartable_init(init_by_name.get(cs.get("name")))
        if restartable:
            restartable_init_restarts += count
            last_restartable_init_restart = _later(last_restartable_init_restart, finished)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated is not None and _int(terminated.get("exitCode")) == 0:
            continue
        if restartable and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if terminated is not None:
            if not terminated.get("reason"):
                if _int(terminated.get("signal")):
                    reason = f"Init:Signal:{_int(terminated.get('signal'))}"
                else:
                    reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
            else:
                reason = "Init:" + terminated["reason"]
        elif waiting is not None and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(status, "Initialized"):
        restarts = restartable_init_restarts
        last_restart = last_restartable_init_restart
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += _int(cs.get("restartCount"))
            finished = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt")
            last_restart = _later(last_restart, finished)
            state = cs.get("state") or {}
            terminated, waiting = state.get("terminated"), state.get("waiting")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                if _int(terminated.get("signal")):
                    reason = f"Signal:{_int(terminated.get('signal'))}"
                else:
                    reason = f"ExitCode:{_int(terminated.get('exitCode'))}"
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    return f"{ready}/{total}", reason, restarts_text


def _pod_cells(pod: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ready, reason, restarts = pod_summary(pod, now)
    ips = status.get("podIPs") or []
    pod_ip = (ips[0].get("ip") if ips else status.get("podIP")) or _NONE
    gates = spec.get("readinessGates") or []
    readiness = _NONE
    if gates:
        conditions = {c.get("type"): c.get("status") for c in reversed(status.get("conditions") or [])}
        passed = sum(1 for g in gates if conditions.get(g.get("conditionType")) == "True")
        readiness = f"{passed}/{len(gates)}"
    return [
        _name(pod),
        ready,
        reason,
        restarts,
        age(_created(pod), now),
        pod_ip,
        spec.get("nodeName") or _NONE,
        status.get("nominatedNodeName") or _NONE,
        readiness,
    ]


def _pod_conditions(pod: Mapping[str, Any]) -> list[dict[str, str]] | None:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Succeeded",
                "message": "The pod has completed successfully.",
            }
        ]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return None


# ---------------------------------------------------------------------------------------------
# Other kinds


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def _created(obj: Mapping[str, Any]) -> Any:
    return (obj.get("metadata") or {}).get("creationTimestamp")


def _node_cells(node: Mapping[str, Any], now: datetime) -> list[Any]:
    status = node.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    states = []
    if "Ready" in conditions:
        states.append("Ready" if conditions["Ready"].get("status") == "True" else "NotReady")
    if not states:
        states.append("Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        states.append("SchedulingDisabled")
    roles = set()
    for key, value in ((node.get("metadata") or {}).get("labels") or {}).items():
        if key.startswith(_ROLE_PREFIX) and key[len(_ROLE_PREFIX) :]:
            roles.add(key[len(_ROLE_PREFIX) :])
        elif key == _ROLE_LABEL and value:
            roles.add(value)
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        for addr in status.get("addresses") or []:
            if addr.get("type") == kind:
                return addr.get("address", "")
        return _NONE

    return [
        _name(node),
        ",".join(states),
        ",".join(sorted(roles)) or _NONE,
        age(_created(node), now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or _UNKNOWN,
        info.get("kernelVersion") or _UNKNOWN,
        info.get("containerRuntimeVersion") or _UNKNOWN,
    ]


def _load_balancer_ips(status: Mapping[str, Any], wide: bool) -> str:
    found = set()
    for ingress in ((status.get("loadBalancer") or {}).get("ingress")) or []:
        if ingress.get("ip"):
            found.add(ingress["ip"])
        elif ingress.get("hostname"):
            found.add(ingress["hostname"])
    text = ",".join(sorted(found))
    if not wide and len(text) > _LB_WIDTH:
        text = text[: _LB_WIDTH - 3] + "..."
    return text


def _service_external_ip(svc: Mapping[str, Any], kind: str) -> str:
    spec = svc.get("spec") or {}
    external = spec.get("externalIPs") or []
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else _NONE
    if kind == "LoadBalancer":
        lb = _load_balancer_ips(svc.get("status") or {}, wide=True)
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + external)
        return lb or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName", "")
    return _UNKNOWN


def _service_cells(svc: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = svc.get("spec") or {}
    kind = spec.get("type") or "ClusterIP"  # the API server defaults it; tolerate undefaulted objects
    cluster_ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    ports = []
    for port in spec.get("ports") or []:
        protocol = port.get("protocol") or "TCP"
        if _int(port.get("nodePort")) > 0:
            ports.append(f"{_int(port.get('port'))}:{_int(port.get('nodePort'))}/{protocol}")
        else:
            ports.append(f"{_int(port.get('port'))}/{protocol}")
    return [
        _name(svc),
        kind,
        cluster_ips[0] if cluster_ips else _NONE,
        _service_external_ip(svc, kind),
        ",".join(ports) or _NONE,
        age(_created(svc), now),
        format_labels(spec.get("selector")),
    ]


def _endpoints_text(endpoints: Mapping[str, Any]) -> str:
    subsets = endpoints.get("subsets") or []
    if not subsets:
        return _NONE
    shown: list[str] = []
    limit = 3
    more = False
    count = 0
    for subset in subsets:
        addresses = subset.get("addresses") or []
        ports = subset.get("ports") or []
        if not ports:
            count += len(addresses)
            for addr in addresses:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(addr.get("ip", ""))
            continue
        for port in ports:
            count += len(addresses)
            for addr in addresses:
                if len(shown) == limit:
                    more = True
                    break
                ip = addr.get("ip", "")
                host = f"[{ip}]" if ":" in ip else ip
                shown.append(f"{host}:{_int(port.get('port'))}")
    text = ",".join(shown)
    return f"{text} + {count - limit} more..." if more else text


def _event_cells(event: Mapping[str, Any], now: datetime) -> list[Any]:
    ev = _as_core_event(event)

    def since(value: Any) -> str:
        return age(value, now)

    first = (
        since(ev.get("firstTimestamp"))
        if parse_time(ev.get("firstTimestamp"))
        else since(ev.get("eventTime"))
    )
    last = since(ev.get("lastTimestamp")) if parse_time(ev.get("lastTimestamp")) else first
    count = _int(ev.get("count"))
    series = ev.get("series")
    if series:
        last = since(series.get("lastObservedTime"))
        count = _int(series.get("count"))
    elif count == 0:
        count = 1
    involved = ev.get("involvedObject") or {}
    target = involved.get("kind", "").lower()
    if involved.get("name"):
        target = f"{target}/{involved['name']}"
    source = ev.get("source") or {}
    component = source.get("component") or ev.get("reportingComponent") or ""
    instance = source.get("host") or ev.get("reportingInstance") or ""
    return [
        last,
        ev.get("type", ""),
        ev.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {instance}" if instance else component,
        (ev.get("message") or "").strip(),
        first,
        count,
        _name(ev),
    ]


def _as_core_event(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """Read an events.k8s.io/v1 Event through core/v1 field names (as kube's printer does)."""
    if not str(event.get("apiVersion", "")).startswith("events.k8s.io/"):
        return event
    return {
        "metadata": event.get("metadata"),
        "firstTimestamp": event.get("deprecatedFirstTimestamp"),
        "lastTimestamp": event.get("deprecatedLastTimestamp"),
        "count": event.get("deprecatedCount"),
        "eventTime": event.get("eventTime"),
        "series": event.get("series"),
        "involvedObject": event.get("regarding"),
        "source": event.get("deprecatedSource"),
        "reportingComponent": event.get("reportingController"),
        "reportingInstance": event.get("reportingInstance"),
        "type": event.get("type"),
        "reason": event.get("reason"),
        "message": event.get("note"),
    }


def _deployment_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    desired = _int(spec.get("replicas", 1))
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{desired}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        age(_created(obj), now),
        *_containers_and_images(_template_spec(obj)),
        format_label_selector(spec.get("selector")),
    ]


def _replicaset_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _name(obj),
        _int(spec.get("replicas", 1)),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        age(_created(obj), now),
        *_containers_and_images(_template_spec(obj)),
        format_label_selector(spec.get("selector")),
    ]


def _statefulset_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas', 1))}",
        age(_created(obj), now),
        *_containers_and_images(_template_spec(obj)),
    ]


def _daemonset_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _name(obj),
        _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")),
        _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")),
        _int(status.get("numberAvailable")),
        format_labels(_template_spec(obj).get("nodeSelector")),
        age(_created(obj), now),
        *_containers_and_images(_template_spec(obj)),
        format_label_selector(spec.get("selector")),
    ]


def _namespace_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), (obj.get("status") or {}).get("phase", ""), age(_created(obj), now)]


def _secret_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), obj.get("type") or "Opaque", len(obj.get("data") or {}), age(_created(obj), now)]


def _configmap_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    count = len(obj.get("data") or {}) + len(obj.get("binaryData") or {})
    return [_name(obj), count, age(_created(obj), now)]


def _endpoints_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), _endpoints_text(obj), age(_created(obj), now)]


def _listed(items: list[str], count: int, limit: int = 3) -> str:
    """kube's listWithMoreString: the first few, "+ N more...", or <unset> for none."""
    text = ",".join(items[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or "<unset>"


def _slice_ports_text(ports: Any) -> str:
    shown = []
    for port in ports or ():
        number = port.get("port")
        shown.append(str(number) if number is not None else port.get("name") or "*")
    return _listed(shown, len(shown))


def _slice_endpoints_text(endpoints: Any) -> str:
    addresses = [str(a) for ep in endpoints or () for a in ep.get("addresses") or ()]
    return _listed(addresses, len(addresses))


def _endpointslice_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    return [
        _name(obj),
        obj.get("addressType") or "",
        _slice_ports_text(obj.get("ports")),
        _slice_endpoints_text(obj.get("endpoints")),
        age(_created(obj), now),
    ]


def _controllerrevision_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    """printControllerRevision: the controller as `<kind>.<group>/<name>`, or <none>."""
    controller = "<none>"
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            group = str(ref.get("apiVersion") or "").rpartition("/")[0]
            kind = str(ref.get("kind") or "").lower()
            controller = f"{kind}.{group}/{ref.get('name')}" if group else f"{kind}/{ref.get('name')}"
            break
    return [_name(obj), controller, _int(obj.get("revision")), age(_created(obj), now)]


def _lease_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    return [_name(obj), (obj.get("spec") or {}).get("holderIdentity") or "", age(_created(obj), now)]


def _job_condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or ())


def _job_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    """printJob: the job's state, succeeded/completions, and how long it ran (or has run)."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    succeeded = _int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec.get('completions'))}"
    elif _int(spec.get("parallelism")) > 1:
        completions = f"{succeeded}/1 of {_int(spec.get('parallelism'))}"
    else:
        completions = f"{succeeded}/1"
    started, finished = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
    duration = ""
    if started is not None:
        duration = human_duration(((finished or now) - started).total_seconds())
    state = "Running"
    for condition, shown in (("Complete", "Complete"), ("Failed", "Failed")):
        if _job_condition_true(status, condition):
            state = shown
            break
    else:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            state = "Terminating"
        else:
            for condition in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
                if _job_condition_true(status, condition):
                    state = condition
                    break
    return [
        _name(obj),
        state,
        completions,
        duration,
        age(_created(obj), now),
        *_containers_and_images(_template_spec(obj)),
        format_label_selector(spec.get("selector")),
    ]


def _cronjob_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    job_spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    suspend = spec.get("suspend")
    last = status.get("lastScheduleTime")
    return [
        _name(obj),
        spec.get("schedule") or "",
        spec.get("timeZone") if spec.get("timeZone") is not None else _NONE,
        "<unset>" if suspend is None else ("True" if suspend else "False"),
        len(status.get("active") or ()),
        age(last, now) if last else _NONE,
        age(_created(obj), now),
        *_containers_and_images((job_spec.get("template") or {}).get("spec")),
        format_label_selector(job_spec.get("selector")),
    ]


_HPA_METRICS_SHOWN = 2


def _hpa_current_target(target: Mapping[str, Any], current: Mapping[str, Any] | None) -> str:
    """`12%/50%` for a utilization target, `150m/200m` for a value (kube's formatHPAMetrics)."""
    current = current or {}
    if target.get("type") in ("AverageValue", "Value") or "averageUtilization" not in target:
        key = "value" if target.get("type") == "Value" else "averageValue"
        now = current.get(key)
        return f"{now if now is not None else _UNKNOWN}/{target.get(key, _UNKNOWN)}"
    now = current.get("averageUtilization")
    return f"{f'{now}%' if now is not None else _UNKNOWN}/{target['averageUtilization']}%"


def format_hpa_metrics(specs: Any, statuses: Any) -> str:
    """The TARGETS cell: one `name: current/target` per metric, the first two and `+ N more...`."""
    specs = [m for m in specs or () if isinstance(m, Mapping)]
    if not specs:
        return _NONE
    statuses = [m if isinstance(m, Mapping) else {} for m in statuses or ()]
    shown = []
    for i, spec in enumerate(specs):
        kind = str(spec.get("type") or "")
        field = kind[:1].lower() + kind[1:]
        source = spec.get(field) or {}
        status = statuses[i].get(field) if i < len(statuses) and statuses[i].get("type") == kind else None
        status = status or {}
        if kind in ("Resource", "ContainerResource"):
            label = str(source.get("name") or "")
        else:
            label = str((source.get("metric") or {}).get("name") or "")
        text = _hpa_current_target(source.get("target") or {}, status.get("current"))
        shown.append(f"{label}: {text}" if label else text)
    if len(shown) > _HPA_METRICS_SHOWN:
        rest = len(shown) - _HPA_METRICS_SHOWN
        return ", ".join(shown[:_HPA_METRICS_SHOWN]) + f" + {rest} more..."
    return ", ".join(shown)


def _hpa_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("scaleTargetRef") or {}
    min_replicas = spec.get("minReplicas")
    return [
        _name(obj),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        format_hpa_metrics(spec.get("metrics"), status.get("currentMetrics")),
        "<unset>" if min_replicas is None else min_replicas,
        spec.get("maxReplicas") or 0,
        status.get("currentReplicas") or 0,
        age(_created(obj), now),
    ]


def _default_cells(obj: Mapping[str, Any], now: datetime) -> list[Any]:
    when = parse_time(_created(obj))
    return [_name(obj), when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None]


@dataclass(frozen=True)
class Printer:
    """The columns of one resource and the function that fills a row's cells."""

    columns: tuple[Column, ...]
    cells: Callable[[Mapping[str, Any], datetime], list[Any]]
    conditions: Callable[[Mapping[str, Any]], list[dict[str, str]] | None] = lambda obj: None


_STATUS_DOC = (f"{_CORE}.PodStatus", "podIP")
PRINTERS: Mapping[str, Printer] = {
    "pods": Printer(
        (
            NAME,
            Column("Ready", description="The number of ready containers out of all containers of the pod."),
            Column("Status", description="The aggregate status of the pod, as computed from its containers."),
            Column(
                "Restarts", description="Container restarts in the pod, and how long ago the last one was."
            ),
            AGE,
            Column("IP", priority=1, doc=_STATUS_DOC),
            Column("Node", priority=1, doc=(f"{_CORE}.PodSpec", "nodeName")),
            Column("Nominated Node", priority=1, doc=(f"{_CORE}.PodStatus", "nominatedNodeName")),
            Column("Readiness Gates", priority=1, doc=(f"{_CORE}.PodSpec", "readinessGates")),
        ),
        _pod_cells,
        _pod_conditions,
    ),
    "nodes": Printer(
        (
            NAME,
            Column("Status", description="Whether the node is Ready, and whether it takes new pods."),
            Column("Roles", description="Roles from the node-role.kubernetes.io/<role> labels."),
            AGE,
            Column("Version", doc=(f"{_CORE}.NodeSystemInfo", "kubeletVersion")),
            Column("Internal-IP", priority=1, doc=(f"{_CORE}.NodeStatus", "addresses")),
            Column("External-IP", priority=1, doc=(f"{_CORE}.NodeStatus", "addresses")),
            Column("OS-Image", priority=1, doc=(f"{_CORE}.NodeSystemInfo", "osImage")),
            Column("Kernel-Version", priority=1, doc=(f"{_CORE}.NodeSystemInfo", "kernelVersion")),
            Column(
                "Container-Runtime", priority=1, doc=(f"{_CORE}.NodeSystemInfo", "containerRuntimeVersion")
            ),
        ),
        _node_cells,
    ),
    "services": Printer(
        (
            NAME,
            Column("Type", doc=(f"{_CORE}.ServiceSpec", "type")),
            Column("Cluster-IP", doc=(f"{_CORE}.ServiceSpec", "clusterIP")),
            Column("External-IP", doc=(f"{_CORE}.ServiceSpec", "externalIPs")),
            Column("Port(s)", doc=(f"{_CORE}.ServiceSpec", "ports")),
            AGE,
            Column("Selector", priority=1, doc=(f"{_CORE}.ServiceSpec", "selector")),
        ),
        _service_cells,
    ),
    "endpoints": Printer(
        (NAME, Column("Endpoints", doc=(f"{_CORE}.Endpoints", "subsets")), AGE), _endpoints_cells
    ),
    "namespaces": Printer(
        (NAME, Column("Status", description="The phase of the namespace: Active or Terminating."), AGE),
        _namespace_cells,
    ),
    "secrets": Printer(
        (
            NAME,
            Column("Type", doc=(f"{_CORE}.Secret", "type")),
            Column("Data", doc=(f"{_CORE}.Secret", "data")),
            AGE,
        ),
        _secret_cells,
    ),
    "configmaps": Printer((NAME, Column("Data", doc=(f"{_CORE}.ConfigMap", "data")), AGE), _configmap_cells),
    "events": Printer(
        (
            Column("Last Seen", doc=(f"{_CORE}.Event", "lastTimestamp")),
            Column("Type", doc=(f"{_CORE}.Event", "type")),
            Column("Reason", doc=(f"{_CORE}.Event", "reason")),
            Column("Object", doc=(f"{_CORE}.Event", "involvedObject")),
            Column("Subobject", priority=1, doc=(f"{_CORE}.ObjectReference", "fieldPath")),
            Column("Source", priority=1, doc=(f"{_CORE}.Event", "source")),
            Column("Message", doc=(f"{_CORE}.Event", "message")),
            Column("First Seen", priority=1, doc=(f"{_CORE}.Event", "firstTimestamp")),
            Column("Count", priority=1, doc=(f"{_CORE}.Event", "count")),
            Column("Name", priority=1, format="name", doc=(_META, "name")),
        ),
        _event_cells,
    ),
    "endpointslices": Printer(
        (
            NAME,
            Column("AddressType", doc=(f"{_DISCOVERY}.EndpointSlice", "addressType")),
            Column("Ports", doc=(f"{_DISCOVERY}.EndpointSlice", "ports")),
            Column("Endpoints", doc=(f"{_DISCOVERY}.EndpointSlice", "endpoints")),
            AGE,
        ),
        _endpointslice_cells,
    ),
    "leases": Printer(
        (NAME, Column("Holder", doc=("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity")), AGE),
        _lease_cells,
    ),
    "deployments": Printer(
        (
            NAME,
            Column("Ready", description="Ready pods out of the desired replicas."),
            Column("Up-to-date", doc=(f"{_APPS}.DeploymentStatus", "updatedReplicas")),
            Column("Available", doc=(f"{_APPS}.DeploymentStatus", "availableReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            Column("Selector", priority=1, doc=(f"{_APPS}.DeploymentSpec", "selector")),
        ),
        _deployment_cells,
    ),
    "replicasets": Printer(
        (
            NAME,
            Column("Desired", type="integer", doc=(f"{_APPS}.ReplicaSetSpec", "replicas")),
            Column("Current", type="integer", doc=(f"{_APPS}.ReplicaSetStatus", "replicas")),
            Column("Ready", type="integer", doc=(f"{_APPS}.ReplicaSetStatus", "readyReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            Column("Selector", priority=1, doc=(f"{_APPS}.ReplicaSetSpec", "selector")),
        ),
        _replicaset_cells,
    ),
    "daemonsets": Printer(
        (
            NAME,
            Column("Desired", type="integer", doc=(f"{_APPS}.DaemonSetStatus", "desiredNumberScheduled")),
            Column("Current", type="integer", doc=(f"{_APPS}.DaemonSetStatus", "currentNumberScheduled")),
            Column("Ready", type="integer", doc=(f"{_APPS}.DaemonSetStatus", "numberReady")),
            Column("Up-to-date", type="integer", doc=(f"{_APPS}.DaemonSetStatus", "updatedNumberScheduled")),
            Column("Available", type="integer", doc=(f"{_APPS}.DaemonSetStatus", "numberAvailable")),
            Column("Node Selector", doc=(f"{_CORE}.PodSpec", "nodeSelector")),
            AGE,
            CONTAINERS,
            IMAGES,
            Column("Selector", priority=1, doc=(f"{_APPS}.DaemonSetSpec", "selector")),
        ),
        _daemonset_cells,
    ),
    "statefulsets": Printer(
        (
            NAME,
            Column("Ready", description="Number of the pod with ready state"),
            AGE,
            CONTAINERS,
            IMAGES,
        ),
        _statefulset_cells,
    ),
    "controllerrevisions": Printer(
        (
            NAME,
            Column("Controller", description="The controller of this revision (kind.group/name)."),
            Column("Revision", type="integer", doc=(f"{_APPS}.ControllerRevision", "revision")),
            AGE,
        ),
        _controllerrevision_cells,
    ),
    "jobs": Printer(
        (
            NAME,
            Column("Status", description="Status of the job."),
            Column("Completions", doc=(f"{_BATCH}.JobStatus", "succeeded")),
            Column("Duration", description="Time required to complete the job."),
            AGE,
            CONTAINERS,
            IMAGES,
            Column("Selector", priority=1, doc=(f"{_BATCH}.JobSpec", "selector")),
        ),
        _job_cells,
    ),
    "cronjobs": Printer(
        (
            NAME,
            Column("Schedule", doc=(f"{_BATCH}.CronJobSpec", "schedule")),
            Column("Timezone", doc=(f"{_BATCH}.CronJobSpec", "timeZone")),
            Column("Suspend", type="boolean", doc=(f"{_BATCH}.CronJobSpec", "suspend")),
            Column("Active", type="integer", doc=(f"{_BATCH}.CronJobStatus", "active")),
            Column("Last Schedule", doc=(f"{_BATCH}.CronJobStatus", "lastScheduleTime")),
            AGE,
            CONTAINERS,
            IMAGES,
            Column("Selector", priority=1, doc=(f"{_BATCH}.JobSpec", "selector")),
        ),
        _cronjob_cells,
    ),
    "horizontalpodautoscalers": Printer(
        (
            NAME,
            Column("Reference", description="Reference to the target resource (kind/name)."),
            Column("Targets", description="The current and target values of each metric."),
            Column("MinPods", description="The lower limit of replicas the autoscaler can scale down to."),
            Column("MaxPods", type="integer", description="The upper limit of replicas it can scale up to."),
            Column("Replicas", type="integer", description="Current number of replicas of the target."),
            AGE,
        ),
        _hpa_cells,
    ),
}
DEFAULT_PRINTER = Printer(
    (NAME, Column("Created At", type="date", doc=(_META, "creationTimestamp"))), _default_cells
)


def printer_for(resource: Resource | str) -> Printer:
    """The printer of a resource (by Resource or plural name); a Name/Created At table otherwise."""
    name = resource.resource if isinstance(resource, Resource) else resource
    return PRINTERS.get(name, DEFAULT_PRINTER)


def column_definitions(resource: Resource | str) -> list[dict[str, Any]]:
    return [c.definition() for c in printer_for(resource).columns]


def _row_object(
    obj: Mapping[str, Any], include_object: str, resource: Resource | None
) -> dict[str, Any] | None:
    if include_object == "None":
        return None
    if include_object == "Object":
        full = dict(obj)
        if resource is not None:
            full.setdefault("apiVersion", resource.api_version)
            full.setdefault("kind", resource.kind)
        return full
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def to_table(
    resource: Resource | str,
    objects: Iterable[Mapping[str, Any]],
    *,
    include_object: str = "Metadata",
    now: datetime | None = None,
    resource_version: str | None = None,
    continue_token: str | None = None,
    no_headers: bool = False,
    registry: Registry = DEFAULT_REGISTRY,
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of `objects` with kube-apiserver's columns for `resource`.

    `include_object` is the request's `includeObject` (None, Metadata or Object: what each row's
    `object` holds); `no_headers` leaves out the column definitions, as watch events after the
    first do. Cells always include the `-o wide` ones (priority 1), as kube-apiserver sends them.
    """
    if include_object not in INCLUDE_OBJECT_CHOICES:
        raise ValueError(
            f"includeObject must be one of {', '.join(INCLUDE_OBJECT_CHOICES)}, not {include_object!r}"
        )
    res = resource if isinstance(resource, Resource) else registry.resolve(resource)
    printer = printer_for(res if res is not None else resource)
    now = now or datetime.now(UTC)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": printer.cells(obj, now)}
        conditions = printer.conditions(obj)
        if conditions:
            row["conditions"] = conditions
        body = _row_object(obj, include_object, res)
        if body is not None:
            row["object"] = body
        rows.append(row)
    metadata: dict[str, str] = {}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    if continue_token:
        metadata["continue"] = continue_token
    table: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata}
    table["columnDefinitions"] = [] if no_headers else [c.definition() for c in printer.columns]
    table["rows"] = rows
    return table


def wants_table(accept: str | None) -> bool:
    """Whether an Accept header asks for a meta.k8s.io Table (v1 or v1beta1) before plain JSON."""
    for clause in (accept or "").split(","):
        media, *raw = (p.strip() for p in clause.split(";"))
        params = dict(p.split("=", 1) for p in raw if "=" in p)
        if (
            params.get("as") == "Table"
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in ("v1", "v1beta1")
        ):
            return media in ("application/json", "*/*")
        if media == "application/json" and "as" not in params:
            return False
    return False
