"""The scheduler's picture of the cluster: nodes, the pods on them, and what those pods request.

Filters and scores read it; nothing in it does I/O. Pod and node objects are parsed once, when
they arrive from a watch, into `PodInfo` and `NodeInfo` records holding exactly what
scheduling needs (requests in millicores and bytes, tolerations, parsed selectors), and each
node keeps running totals of what its pods request, so checking whether a pod fits a node is a
few integer comparisons rather than a walk over its pods. Assumed pods (bound by us, not yet
seen bound through the watch) live here like any other pod; `assume.py` tracks which they are.
Single-threaded by design: the scheduler mutates it only between scheduling cycles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from orchestrator.selectors import (
    DOES_NOT_EXIST,
    EXISTS,
    GREATER_THAN,
    IN,
    LESS_THAN,
    NOT_IN,
    LabelSelector,
    Requirement,
    SelectorError,
    selector_from_object,
)
from orchestrator.validation import QuantityError, parse_quantity

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"

# What LeastAllocated and spreading assume a container uses when it requests nothing
# (kube-scheduler's DefaultMilliCPURequest / DefaultMemoryRequest).
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"

TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE = "NoSchedule", "NoExecute", "PreferNoSchedule"

DO_NOT_SCHEDULE, SCHEDULE_ANYWAY = "DoNotSchedule", "ScheduleAnyway"
HONOR, IGNORE = "Honor", "Ignore"


# ---------------------------------------------------------------------------------------------
# Quantities
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _quantity(value: str | float) -> Any:
    return parse_quantity(value)


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float))


@lru_cache(maxsize=4096, typed=True)
def _milli_value(value: str | float) -> int:
    try:
        return math.ceil(_quantity(value) * 1000)
    except (QuantityError, TypeError):
        return 0


@lru_cache(maxsize=4096, typed=True)
def _int_value(value: str | float) -> int:
    try:
        return math.ceil(_quantity(value))
    except (QuantityError, TypeError):
        return 0


# The integers are cached as well as the parsed quantities: the exact Fraction arithmetic that
# turns "10m" into 10 costs several microseconds, and every pod of a burst asks the same few.
def milli_value(value: Any) -> int:
    """A quantity in thousandths, rounded up ("100m" -> 100, "1.5" -> 1500), as Quantity.MilliValue."""
    return _milli_value(value) if _hashable(value) else 0


def int_value(value: Any) -> int:
    """A quantity as a whole number, rounded up ("128Mi" -> 134217728, "1G" -> 10**9, "2e3" -> 2000)."""
    return _int_value(value) if _hashable(value) else 0


@dataclass(slots=True)
class Resources:
    """Amounts of the resources the scheduler counts: cpu in millicores, the rest in units."""

    cpu: int = 0
    memory: int = 0
    ephemeral: int = 0
    scalar: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_list(cls, resources: Mapping[str, Any] | None) -> Resources:
        """A Kubernetes ResourceList (`{"cpu": "100m", "memory": "64Mi"}`); `pods` is left out."""
        out = cls()
        for name, value in (resources or {}).items():
            if name == CPU:
                out.cpu = milli_value(value)
            elif name == MEMORY:
                out.memory = int_value(value)
            elif name == EPHEMERAL_STORAGE:
                out.ephemeral = int_value(value)
            elif name != PODS:
                out.scalar[name] = int_value(value)
        return out

    def add(self, other: Resources, sign: int = 1) -> None:
        self.cpu += sign * other.cpu
        self.memory += sign * other.memory
        self.ephemeral += sign * other.ephemeral
        for name, value in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + sign * value

    def max_with(self, other: Resources) -> None:
        self.cpu = max(self.cpu, other.cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral = max(self.ephemeral, other.ephemeral)
        for name, value in other.scalar.items():
            self.scalar[name] = max(self.scalar.get(name, 0), value)

    def copy(self) -> Resources:
        return Resources(self.cpu, self.memory, self.ephemeral, dict(self.scalar))

    @property
    def zero(self) -> bool:
        return not (self.cpu or self.memory or self.ephemeral or any(self.scalar.values()))


def _container_requests(container: Mapping[str, Any]) -> tuple[Resources, Resources]:
    """A container's requests, as they are and with request-less cpu/memory counted as
    100m/200Mi; limits stand in for missing requests (as API defaulting does)."""
    resources = container.get("resources") or {}
    merged = dict(resources.get("limits") or {})
    merged.update(resources.get("requests") or {})
    out = Resources.from_list(merged)
    non_zero = out.copy()
    if CPU not in merged:
        non_zero.cpu = DEFAULT_MILLI_CPU_REQUEST
    if MEMORY not in merged:
        non_zero.memory = DEFAULT_MEMORY_REQUEST
    return out, non_zero


def pod_requests_pair(spec: Mapping[str, Any]) -> tuple[Resources, Resources]:
    """`pod_requests(spec)` and `pod_requests(spec, non_zero=True)`, each container parsed once."""
    containers = [_container_requests(c) for c in spec.get("containers") or []]
    inits = [
        (c.get("restartPolicy") == "Always", _container_requests(c)) for c in spec.get("initContainers") or []
    ]
    overhead = spec.get("overhead")
    if not inits and not overhead:
        requests, non_zero = Resources(), Resources()
        for plain, counted in containers:
            requests.add(plain)
            non_zero.add(counted)
        return requests, non_zero
    out = []
    for which in (0, 1):
        total = Resources()
        for pair in containers:
            total.add(pair[which])
        sidecars = Resources()
        init_peak = Resources()
        for restartable, pair in inits:
            requests = pair[which].copy()
            if restartable:
                total.add(requests)
                sidecars.add(requests)
                needed = sidecars.copy()
            else:
                needed = requests
                needed.add(sidecars)
            init_peak.max_with(needed)
        total.max_with(init_peak)
        if overhead:
            total.add(Resources.from_list(overhead))
        out.append(total)
    return out[0], out[1]


def pod_requests(spec: Mapping[str, Any], non_zero: bool = False) -> Resources:
    """What a pod occupies on a node: its containers' requests summed, at least what any init
    container needs (restartable "sidecar" init containers keep running and add up), plus
    `overhead`. With `non_zero`, containers that request no cpu or memory count as 100m/200Mi."""
    return pod_requests_pair(spec)[1 if non_zero else 0]


# ---------------------------------------------------------------------------------------------
# Taints, tolerations, node selectors, affinity terms
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """v1.Toleration.ToleratesTaint: an empty key with Exists tolerates every taint."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.key and self.key != taint.key:
            return False
        if self.operator == "Exists":
            return True
        return self.operator in ("", "Equal") and self.value == taint.value


def tolerated(tolerations: tuple[Toleration, ...], taint: Taint) -> bool:
    return any(t.tolerates(taint) for t in tolerations)


@dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    """One term of a NodeSelector: label expressions and `metadata.name` field expressions, ANDed.
    A term with neither matches no node, as in Kubernetes."""

    expressions: tuple[Requirement, ...]
    fields: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str], name: str) -> bool:
        if not self.expressions and not self.fields:
            return False
        return all(r.matches(labels) for r in self.expressions) and all(
            r.matches({"metadata.name": name}) for r in self.fields
        )


_NODE_OPERATORS = {
    "In": IN,
    "NotIn": NOT_IN,
    "Exists": EXISTS,
    "DoesNotExist": DOES_NOT_EXIST,
    "Gt": GREATER_THAN,
    "Lt": LESS_THAN,
}


def _node_requirements(expressions: Any, fields: bool) -> tuple[Requirement, ...] | None:
    out = []
    for expr in expressions or []:
        if not isinstance(expr, Mapping):
            return None
        operator = _NODE_OPERATORS.get(str(expr.get("operator")))
        key = str(expr.get("key", ""))
        if operator is None or (fields and (key != "metadata.name" or operator not in (IN, NOT_IN))):
            return None  # an invalid requirement makes the term match nothing, as in Kubernetes
        out.append(Requirement(key, operator, tuple(str(v) for v in expr.get("values") or ())))
    return tuple(out)


def parse_node_selector_term(term: Mapping[str, Any] | None) -> NodeSelectorTerm:
    term = term or {}
    expressions = _node_requirements(term.get("matchExpressions"), fields=False)
    fields = _node_requirements(term.get("matchFields"), fields=True)
    if expressions is None or fields is None:
        return NodeSelectorTerm((), ())
    return NodeSelectorTerm(expressions, fields)


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A PodAffinityTerm: pods selected by `selector` in `namespaces` (or in namespaces whose
    labels match `namespace_selector`), counted per value of `topology_key`."""

    selector: LabelSelector
    namespaces: frozenset[str]
    namespace_selector: LabelSelector | None
    topology_key: str
    weight: int = 0

    def matches(self, pod: PodInfo, namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
        if pod.namespace not in self.namespaces:
            if self.namespace_selector is None:
                return False
            if not self.namespace_selector.empty and not self.namespace_selector.matches(
                namespace_labels.get(pod.namespace)
            ):
                return False
        return self.selector.matches(pod.labels)


def _label_selector(obj: Any) -> LabelSelector:
    try:
        return selector_from_object(obj)
    except SelectorError:
        return selector_from_object(None)  # matches nothing


def _with_match_label_keys(
    selector: LabelSelector, keys: Any, labels: Mapping[str, str], operator: str
) -> LabelSelector:
    """matchLabelKeys / mismatchLabelKeys: pin (or exclude) the incoming pod's own label values."""
    extra = [Requirement(str(k), operator, (labels[k],)) for k in keys or () if k in labels]
    if not extra or selector.nothing:
        return selector
    return LabelSelector(tuple(sorted(selector.requirements + tuple(extra), key=lambda r: r.key)))


def _affinity_term(term: Any, namespace: str, labels: Mapping[str, str], weight: int = 0) -> AffinityTerm:
    term = term if isinstance(term, Mapping) else {}
    selector = _label_selector(term.get("labelSelector"))
    selector = _with_match_label_keys(selector, term.get("matchLabelKeys"), labels, IN)
    selector = _with_match_label_keys(selector, term.get("mismatchLabelKeys"), labels, NOT_IN)
    namespaces = frozenset(str(n) for n in term.get("namespaces") or ())
    ns_selector_obj = term.get("namespaceSelector")
    ns_selector = None if ns_selector_obj is None else _label_selector(ns_selector_obj)
    if not namespaces and ns_selector is None:
        namespaces = frozenset((namespace,))
    return AffinityTerm(selector, namespaces, ns_selector, str(term.get("topologyKey", "")), weight)


def _weighted_terms(
    items: Any, namespace: str, labels: Mapping[str, str], key: str
) -> tuple[AffinityTerm, ...]:
    out = []
    for item in items or ():
        if isinstance(item, Mapping):
            out.append(_affinity_term(item.get(key), namespace, labels, int(item.get("weight") or 0)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    """A topologySpreadConstraint, with its selector already narrowed by matchLabelKeys."""

    max_skew: int
    topology_key: str
    when_unsatisfiable: str
    selector: LabelSelector
    min_domains: int = 1
    node_affinity_policy: str = HONOR
    node_taints_policy: str = IGNORE


def _spread_constraints(items: Any, labels: Mapping[str, str]) -> tuple[SpreadConstraint, ...]:
    out = []
    for item in items or ():
        if not isinstance(item, Mapping):
            continue
        selector = _label_selector(item.get("labelSelector"))
        selector = _with_match_label_keys(selector, item.get("matchLabelKeys"), labels, IN)
        out.append(
            SpreadConstraint(
                max_skew=int(item.get("maxSkew") or 1),
                topology_key=str(item.get("topologyKey", "")),
                when_unsatisfiable=str(item.get("whenUnsatisfiable") or DO_NOT_SCHEDULE),
                selector=selector,
                min_domains=int(item.get("minDomains") or 1),
                node_affinity_policy=str(item.get("nodeAffinityPolicy") or HONOR),
                node_taints_policy=str(item.get("nodeTaintsPolicy") or IGNORE),
            )
        )
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Pods
# ---------------------------------------------------------------------------------------------

HostPort = tuple[str, str, int]  # (hostIP, protocol, hostPort)
_MISSING = object()


def pod_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name', '')}"


@dataclass(eq=False, slots=True)
class PodInfo:
    """A pod as scheduling sees it, parsed once per version of the object."""

    key: str
    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    node_name: str
    scheduler_name: str
    priority: int
    preemption_policy: str
    owner_uid: str | None
    terminating: bool
    requests: Resources
    non_zero_cpu: int
    non_zero_memory: int
    host_ports: tuple[HostPort, ...]
    tolerations: tuple[Toleration, ...]
    node_selector: dict[str, str]
    required_node_terms: tuple[NodeSelectorTerm, ...] | None  # None: no required node affinity
    preferred_node_terms: tuple[tuple[int, NodeSelectorTerm], ...]
    required_affinity: tuple[AffinityTerm, ...]
    required_anti_affinity: tuple[AffinityTerm, ...]
    preferred_affinity: tuple[AffinityTerm, ...]
    preferred_anti_affinity: tuple[AffinityTerm, ...]
    spread_constraints: tuple[SpreadConstraint, ...]
    obj: Mapping[str, Any]

    @classmethod
    def from_pod(cls, obj: Mapping[str, Any]) -> PodInfo:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        namespace = meta.get("namespace") or "default"
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        owner_uid = None
        for ref in meta.get("ownerReferences") or ():
            if isinstance(ref, Mapping) and ref.get("controller"):
                owner_uid = ref.get("uid")
                break
        requests, non_zero = pod_requests_pair(spec)

        host_ports = []
        containers = list(spec.get("containers") or [])
        containers += [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
        for container in containers:
            for port in container.get("ports") or ():
                host_port = port.get("hostPort") or (
                    port.get("containerPort") if spec.get("hostNetwork") else 0
                )
                if host_port:
                    ip = port.get("hostIP") or "0.0.0.0"
                    host_ports.append((ip, port.get("protocol") or "TCP", int(host_port)))

        tolerations = tuple(
            Toleration(
                key=str(t.get("key") or ""),
                operator=str(t.get("operator") or "Equal"),
                value=str(t.get("value") or ""),
                effect=str(t.get("effect") or ""),
            )
            for t in spec.get("tolerations") or ()
            if isinstance(t, Mapping)
        )

        affinity = spec.get("affinity") or {}
        node_affinity = affinity.get("nodeAffinity") or {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        required_terms = None
        if required is not None:
            required_terms = tuple(
                parse_node_selector_term(t) for t in (required.get("nodeSelectorTerms") or ())
            )
        preferred_terms = tuple(
            (int(p.get("weight") or 0), parse_node_selector_term(p.get("preference")))
            for p in node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ()
            if isinstance(p, Mapping)
        )
        pod_affinity = affinity.get("podAffinity") or {}
        pod_anti = affinity.get("podAntiAffinity") or {}
        req_key, pref_key = (
            "requiredDuringSchedulingIgnoredDuringExecution",
            "preferredDuringSchedulingIgnoredDuringExecution",
        )

        return cls(
            key=f"{namespace}/{meta.get('name', '')}",
            namespace=namespace,
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            labels=labels,
            node_name=str(spec.get("nodeName") or ""),
            scheduler_name=str(spec.get("schedulerName") or "default-scheduler"),
            priority=int(spec.get("priority") or 0),
            preemption_policy=str(spec.get("preemptionPolicy") or "PreemptLowerPriority"),
            owner_uid=owner_uid,
            terminating=bool(meta.get("deletionTimestamp")),
            requests=requests,
            non_zero_cpu=non_zero.cpu,
            non_zero_memory=non_zero.memory,
            host_ports=tuple(host_ports),
            tolerations=tolerations,
            node_selector={str(k): str(v) for k, v in (spec.get("nodeSelector") or {}).items()},
            required_node_terms=required_terms,
            preferred_node_terms=preferred_terms,
            required_affinity=tuple(
                _affinity_term(t, namespace, labels) for t in pod_affinity.get(req_key) or ()
            ),
            required_anti_affinity=tuple(
                _affinity_term(t, namespace, labels) for t in pod_anti.get(req_key) or ()
            ),
            preferred_affinity=_weighted_terms(
                pod_affinity.get(pref_key), namespace, labels, "podAffinityTerm"
            ),
            preferred_anti_affinity=_weighted_terms(
                pod_anti.get(pref_key), namespace, labels, "podAffinityTerm"
            ),
            spread_constraints=_spread_constraints(spec.get("topologySpreadConstraints"), labels),
            obj=obj,
        )

    @property
    def has_affinity(self) -> bool:
        """Kubernetes' "pod with affinity": any pod (anti-)affinity term, required or preferred."""
        return bool(
            self.required_affinity
            or self.required_anti_affinity
            or self.preferred_affinity
            or self.preferred_anti_affinity
        )

    def bound_to(self, node_name: str) -> PodInfo:
        """A copy of this pod placed on `node_name` (what the assumed cache records)."""
        return dataclasses.replace(self, node_name=node_name)

    def rebound(self, obj: Mapping[str, Any]) -> PodInfo | None:
        """This record for `obj`, a later version of the pod it was parsed from that differs only
        where binding writes (spec.nodeName, status, annotations, resourceVersion), without
        parsing it again; None when anything else changed (then parse it with `from_pod`)."""
        before = self.obj
        meta, old_meta = obj.get("metadata") or {}, before.get("metadata") or {}
        spec, old_spec = obj.get("spec") or {}, before.get("spec") or {}
        for key in ("name", "namespace", "uid", "labels", "ownerReferences", "deletionTimestamp"):
            if meta.get(key) != old_meta.get(key):
                return None
        node_name = spec.get("nodeName") or ""
        if len(spec) - ("nodeName" in spec) != len(old_spec) - ("nodeName" in old_spec):
            return None
        for key, value in spec.items():
            if key != "nodeName" and old_spec.get(key, _MISSING) != value:
                return None
        return dataclasses.replace(self, node_name=str(node_name), obj=obj)


def is_terminal(obj: Mapping[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")


# ---------------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class NodeInfo:
    """A node and the running totals of the pods placed on it (bound or assumed)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    allocatable: Resources = field(default_factory=Resources)
    allowed_pods: int = 0
    unschedulable: bool = False
    ready: str = "Unknown"  # status of the Ready condition: True, False or Unknown (missing)
    taints: tuple[Taint, ...] = ()  # NoSchedule and NoExecute: these filter
    prefer_taints: tuple[Taint, ...] = ()  # PreferNoSchedule: these only score
    obj: Mapping[str, Any] | None = None  # None: pods reference a node we have not seen yet
    pods: dict[str, PodInfo] = field(default_factory=dict)
    requested: Resources = field(default_factory=Resources)
    non_zero_cpu: int = 0
    non_zero_memory: int = 0
    used_ports: dict[tuple[str, int], list[str]] = field(default_factory=dict)  # (proto, port) -> IPs

    def set_node(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        self.obj = obj
        self.labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        allocatable = status.get("allocatable") or status.get("capacity") or {}
        self.allocatable = Resources.from_list(allocatable)
        self.allowed_pods = int_value(allocatable.get(PODS, 0))
        self.unschedulable = bool(spec.get("unschedulable"))
        self.ready = "Unknown"
        for condition in status.get("conditions") or ():
            if isinstance(condition, Mapping) and condition.get("type") == "Ready":
                self.ready = str(condition.get("status") or "Unknown")
        taints = [
            Taint(str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", "")))
            for t in spec.get("taints") or ()
            if isinstance(t, Mapping)
        ]
        self.taints = tuple(t for t in taints if t.effect in (NO_SCHEDULE, NO_EXECUTE))
        self.prefer_taints = tuple(t for t in taints if t.effect == PREFER_NO_SCHEDULE)

    @property
    def readiness_taint(self) -> Taint | None:
        """The taint the node lifecycle controller puts on a node that is not Ready
        (TaintNodesByCondition); the scheduler applies it itself so it never waits for that."""
        if self.ready == "True":
            return None
        key = TAINT_NOT_READY if self.ready == "False" else TAINT_UNREACHABLE
        return Taint(key, "", NO_SCHEDULE)

    def _account(self, pod: PodInfo, sign: int) -> None:
        self.requested.add(pod.requests, sign)
        self.non_zero_cpu += sign * pod.non_zero_cpu
        self.non_zero_memory += sign * pod.non_zero_memory
        for ip, protocol, port in pod.host_ports:
            ips = self.used_ports.setdefault((protocol, port), [])
            if sign > 0:
                ips.append(ip)
            else:
                ips.remove(ip)
                if not ips:
                    del self.used_ports[(protocol, port)]

    def add_pod(self, pod: PodInfo) -> None:
        self.pods[pod.key] = pod
        self._account(pod, 1)

    def remove_pod(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is not None:
            self._account(pod, -1)
        return pod

    def port_conflict(self, ip: str, protocol: str, port: int) -> bool:
        """HostPortInfo.CheckConflict: 0.0.0.0 conflicts with every address on that port."""
        ips = self.used_ports.get((protocol, port))
        if not ips:
            return False
        return ip == "0.0.0.0" or "0.0.0.0" in ips or ip in ips


# ---------------------------------------------------------------------------------------------
# The snapshot
# ---------------------------------------------------------------------------------------------


class Snapshot:
    """Nodes and the pods bound (or assumed) to them, kept current by watch events.

    `node_list` holds the nodes that exist, in a stable order the framework walks round-robin;
    pods that reference a node we have not seen yet are kept on a placeholder so they are
    counted as soon as the node appears.
    """

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.node_list: list[NodeInfo] = []
        self.pod_nodes: dict[str, str] = {}
        # Indexes that let scheduling skip work that cannot matter for most pods.
        self.pods_with_affinity: dict[str, PodInfo] = {}
        self.pods_with_required_anti_affinity: dict[str, PodInfo] = {}
        self.owner_pods_per_node: dict[str, dict[str, int]] = {}
        # How many nodes are cordoned, not Ready, tainted: filters that can only fail on such
        # nodes are skipped outright while there are none (the usual healthy cluster).
        self.cordoned_nodes = 0
        self.not_ready_nodes = 0
        self.tainted_nodes = 0
        self.prefer_no_schedule_nodes = 0
        self.namespace_labels: dict[str, dict[str, str]] = {}
        self.generation = 0

    # -- nodes -------------------------------------------------------------------------------

    def set_node(self, obj: Mapping[str, Any]) -> NodeInfo:
        name = str((obj.get("metadata") or {}).get("name", ""))
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name)
        if info.obj is None:
            self.node_list.append(info)
        else:
            self._count_node(info, -1)
        info.set_node(obj)
        self._count_node(info, 1)
        self.generation += 1
        return info

    def _count_node(self, info: NodeInfo, sign: int) -> None:
        self.cordoned_nodes += sign * info.unschedulable
        self.not_ready_nodes += sign * (info.ready != "True")
        self.tainted_nodes += sign * bool(info.taints)
        self.prefer_no_schedule_nodes += sign * bool(info.prefer_taints)

    def remove_node(self, name: str) -> None:
        info = self.nodes.get(name)
        if info is None or info.obj is None:
            return
        self.node_list.remove(info)
        self._count_node(info, -1)
        self.generation += 1
        if info.pods:
            # Its pods still hold their places until they are deleted; keep them counted.
            info.obj = None
            info.labels, info.taints, info.prefer_taints = {}, (), ()
        else:
            del self.nodes[name]

    def get_node(self, name: str) -> NodeInfo | None:
        info = self.nodes.get(name)
        return info if info is not None and info.obj is not None else None

    # -- pods --------------------------------------------------------------------------------

    def add_pod(self, pod: PodInfo) -> None:
        """Place a bound (or assumed) pod; a pod already known under the same key is replaced."""
        if pod.key in self.pod_nodes:
            self.remove_pod(pod.key)
        if not pod.node_name:
            return
        info = self.nodes.get(pod.node_name)
        if info is None:
            info = self.nodes[pod.node_name] = NodeInfo(pod.node_name)
        info.add_pod(pod)
        self.pod_nodes[pod.key] = pod.node_name
        if pod.has_affinity:
            self.pods_with_affinity[pod.key] = pod
        if pod.required_anti_affinity:
            self.pods_with_required_anti_affinity[pod.key] = pod
        if pod.owner_uid:
            per_node = self.owner_pods_per_node.setdefault(pod.owner_uid, {})
            per_node[pod.node_name] = per_node.get(pod.node_name, 0) + 1
        self.generation += 1

    def remove_pod(self, key: str) -> PodInfo | None:
        node_name = self.pod_nodes.pop(key, None)
        if node_name is None:
            return None
        info = self.nodes[node_name]
        pod = info.remove_pod(key)
        if info.obj is None and not info.pods:
            del self.nodes[node_name]
        self.pods_with_affinity.pop(key, None)
        self.pods_with_required_anti_affinity.pop(key, None)
        if pod is not None and pod.owner_uid:
            per_node = self.owner_pods_per_node[pod.owner_uid]
            per_node[node_name] -= 1
            if not per_node[node_name]:
                del per_node[node_name]
                if not per_node:
                    del self.owner_pods_per_node[pod.owner_uid]
        self.generation += 1
        return pod

    def get_pod(self, key: str) -> PodInfo | None:
        node_name = self.pod_nodes.get(key)
        return None if node_name is None else self.nodes[node_name].pods.get(key)

    def pods(self) -> Iterator[tuple[PodInfo, NodeInfo]]:
        """Every placed pod with its node (nodes we have not seen yet included)."""
        for info in self.nodes.values():
            for pod in info.pods.values():
                yield pod, info

    def set_namespace(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        self.namespace_labels[str(meta.get("name", ""))] = dict(meta.get("labels") or {})

    def remove_namespace(self, name: str) -> None:
        self.namespace_labels.pop(name, None)

    def __len__(self) -> int:
        return len(self.node_list)
