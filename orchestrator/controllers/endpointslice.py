"""The EndpointSlice controller: a Service's pods as discovery.k8s.io/v1 EndpointSlices.

kubectl 1.32 (`describe svc`), kube-proxy and DNS servers read endpoints from EndpointSlices,
not from the older Endpoints object. For each Service with a selector, `sync(namespace/name)`
computes one endpoint per selected pod that has an IP and is not finished — terminating pods
included, marked `terminating` (and not `ready`) — with `ready`/`serving` from the pod's Ready
condition, its node, zone, hostname and a targetRef to the pod. Pods are grouped by address
type (IPv4/IPv6: the Service's ipFamilies, both for a headless Service that names none) and
by the ports they serve (a named targetPort is resolved per pod, so pods that resolve it
differently land in different slices), at most 100 endpoints per slice.

`plan_slices` is the pure part, kube's reconciler in small: keep endpoints where they are,
drop the ones gone, fill slices already being rewritten before touching unchanged ones,
create the rest (generateName `<service>-`, owned by the Service, labelled
`kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`), turn a delete plus
a create into one update, and keep one empty placeholder slice for a Service without
endpoints. An unchanged set of pods makes no write. The controller only reads caches,
compares and writes; a `SliceTracker` remembers its own writes, so a sync that runs before the
slice cache has seen them waits for it instead of creating duplicates. A Service that goes away
takes its slices along.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import (
    ENDPOINTSLICES,
    NODES,
    AlreadyExists,
    ApiError,
    Conflict,
    NotFound,
    Obj,
)

from .base import BY_NAMESPACE, ControllerContext
from .endpoints import ServicePodsController, find_port, pod_reference, service_selects
from .util import (
    being_deleted,
    is_pod_ready,
    is_pod_terminal,
    labels_of,
    meta,
    name_of,
    namespace_of,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

API_VERSION = "discovery.k8s.io/v1"
COMPONENT = "endpoint-slice-controller"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100
IPV4, IPV6 = "IPv4", "IPv6"

PortsKey = tuple[tuple[str, int, str, str], ...]
GroupKey = tuple[str, PortsKey]


# --- pure part -------------------------------------------------------------------------------------


def address_types(service: Mapping[str, Any]) -> list[str]:
    """getAddressTypesForService: the ipFamilies; else the cluster IP's family; a headless
    Service that names no family gets both (its pods decide which slices have endpoints)."""
    sp = spec(service)
    families = [f for f in sp.get("ipFamilies") or () if f in (IPV4, IPV6)]
    if families:
        return list(dict.fromkeys(families))
    cluster_ip = sp.get("clusterIP") or ""
    if cluster_ip and cluster_ip != "None":
        return [IPV6 if ":" in cluster_ip else IPV4]
    return [IPV4, IPV6]


def _family(ip: str) -> str | None:
    try:
        return IPV6 if ipaddress.ip_address(ip).version == 6 else IPV4
    except ValueError:
        return None


def pod_addresses(pod: Mapping[str, Any], address_type: str) -> list[str]:
    """getEndpointAddresses: the pod's IPs of the slice's family (podIPs, else podIP)."""
    st = status(pod)
    ips = [str(e["ip"]) for e in st.get("podIPs") or () if isinstance(e, Mapping) and e.get("ip")]
    if not ips and st.get("podIP"):
        ips = [str(st["podIP"])]
    return [ip for ip in ips if _family(ip) == address_type]


def should_be_in_slices(pod: Mapping[str, Any]) -> bool:
    """ShouldPodBeInEndpoints(pod, includeTerminating=true): has an IP and is not finished."""
    st = status(pod)
    return not is_pod_terminal(pod) and bool(st.get("podIP") or st.get("podIPs"))


def endpoint_ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> list[Obj]:
    """getEndpointPorts: the service ports this pod serves, with its own port numbers."""
    ports: list[Obj] = []
    for sp in spec(service).get("ports") or ():
        if not isinstance(sp, Mapping):
            continue
        number = find_port(pod, sp)
        if number is None:
            continue
        port: Obj = {"name": sp.get("name") or "", "port": number, "protocol": sp.get("protocol") or "TCP"}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        ports.append(port)
    return ports


def ports_key(ports: Iterable[Mapping[str, Any]] | None) -> PortsKey:
    """The identity of a set of ports, order aside (kube's port map key)."""
    return tuple(
        sorted(
            (
                str(p.get("name") or ""),
                int(p["port"]) if isinstance(p.get("port"), int) else -1,
                str(p.get("protocol") or "TCP"),
                str(p.get("appProtocol") or ""),
            )
            for p in ports or ()
        )
    )


def pod_to_endpoint(
    service: Mapping[str, Any], pod: Mapping[str, Any], address_type: str, node: Mapping[str, Any] | None
) -> Obj:
    """podToEndpoint: a terminating pod is never ready (unless publishNotReadyAddresses)."""
    serving = is_pod_ready(pod)
    terminating = being_deleted(pod)
    ready = bool(spec(service).get("publishNotReadyAddresses")) or (serving and not terminating)
    endpoint: Obj = {
        "addresses": pod_addresses(pod, address_type),
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
    }
    endpoint.update(pod_reference(service, pod))
    zone = labels_of(node).get(ZONE_LABEL) if node is not None else None
    if zone:
        endpoint["zone"] = zone
    return endpoint


def endpoint_id(endpoint: Mapping[str, Any]) -> tuple[str, ...]:
    """Which pod an endpoint stands for (its addresses when it has no targetRef)."""
    ref = endpoint.get("targetRef") or {}
    if ref.get("uid") or ref.get("name"):
        return ("pod", str(ref.get("namespace", "")), str(ref.get("name", "")), str(ref.get("uid", "")))
    return ("addresses", *sorted(str(a) for a in endpoint.get("addresses") or ()))


def slice_labels(service: Mapping[str, Any]) -> dict[str, str]:
    """setEndpointSliceLabels: the Service's labels plus the controller's own."""
    reserved = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
    labels = {k: v for k, v in labels_of(service).items() if k not in reserved}
    labels[SERVICE_NAME_LABEL] = name_of(service)
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    if spec(service).get("clusterIP") in ("None", "", None):  # !isServiceIPSet
        labels[HEADLESS_LABEL] = ""
    return labels


def service_owner_ref(service: Mapping[str, Any]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": name_of(service),
        "uid": uid_of(service),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(slice_: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    return any(
        r.get("uid") == uid_of(service) and r.get("kind") == "Service" and r.get("apiVersion") == "v1"
        for r in meta(slice_).get("ownerReferences") or ()
    )


def managed_by_controller(slice_: Mapping[str, Any]) -> bool:
    return labels_of(slice_).get(MANAGED_BY_LABEL) == CONTROLLER_NAME


@dataclass
class DesiredGroup:
    """The endpoints of one (address type, ports) group, in pod-name order."""

    address_type: str
    ports: list[Obj]
    endpoints: dict[tuple[str, ...], Obj] = field(default_factory=dict)


@dataclass
class SlicePlan:
    """What one sync writes: slices to create (no name yet), update (with resourceVersion), delete."""

    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)
    # Pods left out because the node they name is not known (yet): sync again later.
    missing_nodes: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def desired_groups(
    service: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]] | None = None,
    missing_nodes: set[str] | None = None,
) -> dict[GroupKey, DesiredGroup]:
    """The endpoints a Service's pods make, by (address type, ports). `nodes` None: nodes are not
    looked at (no zones); otherwise a pod whose node is unknown is left out and its node noted in
    `missing_nodes`, unless the Service publishes not-ready addresses."""
    groups: dict[GroupKey, DesiredGroup] = {}
    publish_not_ready = bool(spec(service).get("publishNotReadyAddresses"))
    selected = sorted(
        (p for p in pods if service_selects(service, p) and should_be_in_slices(p)), key=name_of
    )
    for address_type in address_types(service):
        for pod in selected:
            node_name = spec(pod).get("nodeName")
            node = None
            if nodes is not None and node_name:
                node = nodes.get(node_name)
                if node is None and not publish_not_ready:
                    if missing_nodes is not None:
                        missing_nodes.add(node_name)
                    continue
            endpoint = pod_to_endpoint(service, pod, address_type, node)
            if not endpoint["addresses"]:
                continue
            ports = endpoint_ports(service, pod)
            key = (address_type, ports_key(ports))
            group = groups.setdefault(key, DesiredGroup(address_type, ports))
            group.endpoints.setdefault(endpoint_id(endpoint), endpoint)
    return groups


def _new_slice(service: Mapping[str, Any], address_type: str, ports: list[Obj], endpoints: list[Obj]) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": f"{name_of(service)}-",
            "namespace": namespace_of(service),
            "labels": slice_labels(service),
            "ownerReferences": [service_owner_ref(service)],
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [dict(p) for p in ports],
    }


def _with(existing: Mapping[str, Any], service: Mapping[str, Any], endpoints: list[Obj], ports: Any) -> Obj:
    """`existing` rewritten with new endpoints (and ports), and the Service's labels and owner."""
    body = {k: v for k, v in existing.items() if k not in ("endpoints", "ports")}
    md = dict(meta(existing))
    md["labels"] = slice_labels(service)
    others = [r for r in md.get("ownerReferences") or () if r.get("uid") != uid_of(service)]
    md["ownerReferences"] = [r for r in others if not r.get("controller")] + [service_owner_ref(service)]
    body["metadata"] = md
    body["apiVersion"] = API_VERSION
    body["kind"] = "EndpointSlice"
    body["endpoints"] = endpoints
    body["ports"] = [dict(p) for p in ports or ()]
    return body


def _metadata_current(existing: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    refs = [r for r in meta(existing).get("ownerReferences") or () if r.get("controller")]
    return labels_of(existing) == slice_labels(service) and refs == [service_owner_ref(service)]


def _is_placeholder(slice_: Mapping[str, Any], address_type: str) -> bool:
    return (
        slice_.get("addressType") == address_type and not slice_.get("endpoints") and not slice_.get("ports")
    )


def plan_slices(
    service: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    existing: Sequence[Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]] | None = None,
    max_endpoints: int = MAX_ENDPOINTS_PER_SLICE,
) -> SlicePlan:
    """The writes that turn a Service's `existing` managed slices into what its pods make."""
    plan = SlicePlan()
    groups = desired_groups(service, pods, nodes, plan.missing_nodes)
    by_group: dict[GroupKey, list[Mapping[str, Any]]] = {}
    for slice_ in sorted(existing, key=name_of):
        if being_deleted(slice_):
            continue  # on its way out; never build on it
        key = (str(slice_.get("addressType") or ""), ports_key(slice_.get("ports")))
        if not owned_by(slice_, service) or key not in groups:
            plan.delete.append(slice_)
        else:
            by_group.setdefault(key, []).append(slice_)
    kept = 0
    for key, group in groups.items():
        remaining = dict(group.endpoints)
        rewriting: list[tuple[Mapping[str, Any], list[Obj]]] = []
        unchanged: list[Mapping[str, Any]] = []
        for slice_ in by_group.get(key, []):
            current = list(slice_.get("endpoints") or [])
            wanted = [remaining.pop(i) for i in (endpoint_id(e) for e in current) if i in remaining]
            if not wanted:
                plan.delete.append(slice_)
            elif wanted != current or not _metadata_current(slice_, service):
                rewriting.append((slice_, wanted))
            else:
                unchanged.append(slice_)
        queue = list(remaining.values())
        # Fill the slices that are being written anyway before anything else.
        for _, eps in rewriting:
            room = max_endpoints - len(eps)
            if room > 0 and queue:
                eps.extend(queue[:room])
                queue = queue[room:]
        # The rest fits into one unchanged slice: one update rather than a new slice.
        if queue and len(queue) < max_endpoints:
            fits = [s for s in unchanged if max_endpoints - len(s.get("endpoints") or []) >= len(queue)]
            if fits:
                target = max(fits, key=lambda s: len(s.get("endpoints") or []))
                unchanged.remove(target)
                rewriting.append((target, list(target.get("endpoints") or []) + queue))
                queue = []
        for slice_, eps in rewriting:
            plan.update.append(_with(slice_, service, eps, slice_.get("ports")))
        for i in range(0, len(queue), max_endpoints):
            plan.create.append(
                _new_slice(service, group.address_type, group.ports, queue[i : i + max_endpoints])
            )
        kept += len(rewriting) + len(unchanged)
    if kept == 0 and not plan.create:
        # No endpoints at all: one empty slice says so (kube's placeholder).
        address_type = address_types(service)[0]
        reuse = next(
            (s for s in plan.delete if owned_by(s, service) and _is_placeholder(s, address_type)), None
        )
        if reuse is None:
            plan.create.append(_new_slice(service, address_type, [], []))
        else:
            plan.delete.remove(reuse)
            if not _metadata_current(reuse, service):
                plan.update.append(_with(reuse, service, [], []))
    # A delete and a create of the same address type: rewrite the doomed slice instead.
    for new in list(plan.create):
        doomed = next((s for s in plan.delete if s.get("addressType") == new["addressType"]), None)
        if doomed is None:
            continue
        plan.delete.remove(doomed)
        plan.create.remove(new)
        plan.update.append(_with(doomed, service, new["endpoints"], new["ports"]))
    return plan


# --- the controller ------------------------------------------------------------------------------


def _slice_service_key(obj: Obj) -> str | None:
    """Managed slices by the `namespace/service` they belong to."""
    if not managed_by_controller(obj):
        return None
    service = labels_of(obj).get(SERVICE_NAME_LABEL)
    return f"{namespace_of(obj)}/{service}" if service else None


BY_SERVICE = "byService"


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int(meta(obj).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class SliceTracker:
    """The controller's own recent writes per Service (kube's endpointSliceTracker): a slice
    cache that has not caught up with them is stale, and a sync on it would write twice."""

    def __init__(self) -> None:
        self._written: dict[
            str, dict[str, int | None]
        ] = {}  # service key -> slice name -> rv (None: deleted)

    def wrote(self, service_key: str, slice_: Mapping[str, Any]) -> None:
        self._written.setdefault(service_key, {})[name_of(slice_)] = _rv(slice_)

    def deleted(self, service_key: str, slice_: Mapping[str, Any]) -> None:
        self._written.setdefault(service_key, {})[name_of(slice_)] = None

    def gone(self, service_key: str, slice_name: str) -> None:
        """The cache saw the slice deleted: no write of ours to it is still to come."""
        written = self._written.get(service_key)
        if written is not None:
            written.pop(slice_name, None)

    def forget(self, service_key: str) -> None:
        self._written.pop(service_key, None)

    def stale(self, service_key: str, cached: Mapping[str, Mapping[str, Any]]) -> bool:
        """True while the cache (slice name -> slice) misses one of our writes; entries the
        cache has caught up with are dropped."""
        written = self._written.get(service_key)
        if not written:
            return False
        for name, rv in list(written.items()):
            seen = cached.get(name)
            if rv is None:
                caught_up = seen is None or being_deleted(seen)
            else:
                caught_up = seen is not None and _rv(seen) >= rv
            if caught_up:
                del written[name]
        if not written:
            self._written.pop(service_key, None)
            return False
        return True


class EndpointSliceController(ServicePodsController):
    name = "endpointslice"
    default_workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.max_endpoints = MAX_ENDPOINTS_PER_SLICE
        self.tracker = SliceTracker()
        self.node_informer = self.informer(NODES)
        self.slice_informer = self.informer(ENDPOINTSLICES, indexers={BY_SERVICE: _slice_service_key})
        self.node_informer.add_handler(None, self._node_updated, None)
        self.slice_informer.add_handler(
            self._slice_changed, lambda o, c: self._slice_changed(c), self._slice_deleted
        )

    # --- event handlers: which services to look at -------------------------------------------

    def pod_changed(self, old: Mapping[str, Any], cur: Mapping[str, Any]) -> bool:
        return (
            status(old) != status(cur) or spec(old) != spec(cur) or being_deleted(old) != being_deleted(cur)
        )

    def _node_updated(self, old: Obj, cur: Obj) -> None:
        if labels_of(old).get(ZONE_LABEL) != labels_of(cur).get(ZONE_LABEL):
            for svc in self.svc_informer.list():
                self.enqueue_obj(svc)

    def _slice_changed(self, slice_: Obj) -> None:
        key = _slice_service_key(slice_)
        if key is not None:
            self.enqueue(key)

    def _slice_deleted(self, slice_: Obj) -> None:
        key = _slice_service_key(slice_)
        if key is not None:
            # Whatever we last wrote to it, the cache will not show it any more.
            self.tracker.gone(key, name_of(slice_))
            self.enqueue(key)

    # --- sync ------------------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        ns, _, name = key.partition("/")
        svc = self.svc_informer.get(key)
        existing = self.slice_informer.by_index(BY_SERVICE, key)
        if svc is None:
            await self._delete_all(key, existing)
            return
        sp = spec(svc)
        if sp.get("type") == "ExternalName" or not sp.get("selector"):
            return  # no slices from this controller (a DNS name, or slices the user writes)
        if self.tracker.stale(key, {name_of(s): s for s in existing}):
            # Our last writes are still on their way to the cache; their events bring us back.
            self.enqueue_after(key, 1.0)
            return
        pods = self.pod_informer.by_index(BY_NAMESPACE, ns)
        nodes = {name_of(n): n for n in self.node_informer.list()}
        plan = plan_slices(svc, pods, existing, nodes, self.max_endpoints)
        if plan.missing_nodes:
            log.info(
                "service %s: pods on unknown node(s) %s left out for now", key, sorted(plan.missing_nodes)
            )
            self.enqueue_after(key, 1.0)
        try:
            for body in plan.create:
                self.tracker.wrote(key, await self.client.create(*ENDPOINTSLICES, body, namespace=ns))
            for body in plan.update:
                self.tracker.wrote(key, await self.client.update(*ENDPOINTSLICES, body, namespace=ns))
            for slice_ in plan.delete:
                await self._delete(key, slice_)
        except (Conflict, NotFound, AlreadyExists):
            raise  # a cache behind the store: routine, retried without an event
        except ApiError as exc:
            self.recorder.warning(
                svc,
                "FailedToUpdateEndpointSlices",
                f"Error updating Endpoint Slices for Service {key}: {exc}",
            )
            raise

    async def _delete(self, key: str, slice_: Mapping[str, Any]) -> None:
        try:
            await self.client.delete(*ENDPOINTSLICES, name_of(slice_), namespace=namespace_of(slice_))
        except NotFound:
            pass
        self.tracker.deleted(key, slice_)

    async def _delete_all(self, key: str, slices: Sequence[Mapping[str, Any]]) -> None:
        """The Service is gone: so are its slices (the garbage collector would get there too)."""
        for slice_ in slices:
            if not being_deleted(slice_):
                await self._delete(key, slice_)
        if not slices:
            self.tracker.forget(key)
