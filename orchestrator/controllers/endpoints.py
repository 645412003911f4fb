"""The Endpoints controller: for each Service with a selector, the addresses of its pods.

`sync(namespace/name)` of a Service lists the pods its selector matches (from the pod cache),
keeps those that have an IP and are neither finished nor (unless publishNotReadyAddresses)
terminating, and writes an Endpoints object of the same name: ready pods under `addresses`,
the others under `notReadyAddresses`, each with its node and a targetRef to the pod, and for
every service port the pod's port — a numbered targetPort as is, a named one looked up among
the pod's container ports of the same protocol (a pod without it is left out of that port).
Headless services (clusterIP None) without ports get address-only subsets and the
`service.kubernetes.io/headless` label. Subsets are packed the way kube's RepackSubsets does
(addresses grouped by the set of ports they serve) and sorted, so an unchanged set of pods
never causes a write. A Service that goes away takes its Endpoints along.

`build_subsets` and `desired_endpoints` are the pure part; the controller only reads caches,
compares and writes.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.apiclient import ENDPOINTS, PODS, SERVICES, AlreadyExists, ApiError, Conflict, NotFound, Obj

from .base import BY_NAMESPACE, BaseController, ControllerContext
from .util import (
    being_deleted,
    is_pod_ready,
    is_pod_terminal,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

COMPONENT = "endpoint-controller"
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


# --- pure part -------------------------------------------------------------------------------------


def service_selects(service: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    selector = spec(service).get("selector") or {}
    if not selector:
        return False
    labels = labels_of(pod)
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ip(pod: Mapping[str, Any]) -> str:
    st = status(pod)
    if st.get("podIP"):
        return str(st["podIP"])
    for entry in st.get("podIPs") or ():
        if isinstance(entry, Mapping) and entry.get("ip"):
            return str(entry["ip"])
    return ""


def should_be_in_endpoints(pod: Mapping[str, Any], include_terminating: bool) -> bool:
    """endpointsliceutil.ShouldPodBeInEndpoints."""
    if is_pod_terminal(pod) or not pod_ip(pod):
        return False
    return include_terminating or not being_deleted(pod)


def find_port(pod: Mapping[str, Any], service_port: Mapping[str, Any]) -> int | None:
    """podutil.FindPort: the container port a service port's targetPort means for this pod."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if not isinstance(target, str) or not target:
        return None
    protocol = service_port.get("protocol") or "TCP"
    pod_spec = spec(pod)
    containers = list(pod_spec.get("containers") or [])
    # Sidecars (init containers that keep running) serve ports too.
    containers += [c for c in pod_spec.get("initContainers") or () if c.get("restartPolicy") == "Always"]
    for container in containers:
        for port in container.get("ports") or ():
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                value = port.get("containerPort")
                return value if isinstance(value, int) else None
    return None


def pod_reference(service: Mapping[str, Any], pod: Mapping[str, Any]) -> Obj:
    """What an endpoint says of its pod, in Endpoints and EndpointSlices alike: its hostname when
    the pod sets the Service as its subdomain (a headless Service's DNS names it), its node and a
    targetRef to it."""
    out: Obj = {}
    pspec = spec(pod)
    if (
        pspec.get("hostname")
        and pspec.get("subdomain") == name_of(service)
        and namespace_of(service) == namespace_of(pod)
    ):
        out["hostname"] = pspec["hostname"]
    if pspec.get("nodeName"):
        out["nodeName"] = pspec["nodeName"]
    out["targetRef"] = {
        "kind": "Pod",
        "namespace": namespace_of(pod),
        "name": name_of(pod),
        "uid": uid_of(pod),
    }
    return out


def endpoint_address(service: Mapping[str, Any], pod: Mapping[str, Any]) -> Obj:
    return {"ip": pod_ip(pod), **pod_reference(service, pod)}


def endpoint_port(service_port: Mapping[str, Any], number: int) -> Obj:
    port: Obj = {}
    if service_port.get("name"):
        port["name"] = service_port["name"]
    port["port"] = number
    port["protocol"] = service_port.get("protocol") or "TCP"
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def _addr_key(addr: Mapping[str, Any]) -> tuple[str, str]:
    return (str(addr.get("ip", "")), str((addr.get("targetRef") or {}).get("uid", "")))


def _port_key(port: Mapping[str, Any]) -> tuple[str, int, str, str]:
    return (
        str(port.get("name", "")),
        int(port.get("port", 0)),
        str(port.get("protocol", "")),
        str(port.get("appProtocol", "")),
    )


def repack(entries: Sequence[tuple[Obj, bool, Obj | None]]) -> list[Obj]:
    """RepackSubsets: group addresses by the exact set of ports they serve; an address ready in
    any entry is ready. Sorted, so equal inputs give equal output."""
    sentinel = ("", -1, "", "")
    ports: dict[tuple[str, int, str, str], Obj] = {}
    by_port: dict[tuple[str, int, str, str], dict[tuple[str, str], bool]] = {}
    addrs: dict[tuple[str, str], Obj] = {}
    for addr, ready, port in entries:
        pkey = _port_key(port) if port is not None else sentinel
        if port is not None:
            ports[pkey] = port
        akey = _addr_key(addr)
        addrs.setdefault(akey, addr)
        group = by_port.setdefault(pkey, {})
        group[akey] = group.get(akey, False) or ready
    groups: dict[frozenset[tuple[tuple[str, str], bool]], list[tuple[str, int, str, str]]] = {}
    for pkey, members in by_port.items():
        groups.setdefault(frozenset(members.items()), []).append(pkey)
    subsets = []
    for members, pkeys in groups.items():
        ready = sorted((addrs[k] for k, r in members if r), key=_addr_key)
        not_ready = sorted((addrs[k] for k, r in members if not r), key=_addr_key)
        subset: Obj = {}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        real_ports = sorted((ports[p] for p in pkeys if p != sentinel), key=_port_key)
        if real_ports:
            subset["ports"] = real_ports
        subsets.append(subset)

    def subset_key(s: Obj) -> tuple[Any, ...]:
        first = (s.get("addresses") or s.get("notReadyAddresses") or [{}])[0]
        return (_addr_key(first), [_port_key(p) for p in s.get("ports") or ()])

    return sorted(subsets, key=subset_key)


def build_subsets(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[Obj]:
    """The Endpoints subsets a Service's pods make."""
    tolerate_unready = bool(spec(service).get("publishNotReadyAddresses"))
    headless = spec(service).get("clusterIP") == "None"
    service_ports = [p for p in spec(service).get("ports") or () if isinstance(p, Mapping)]
    entries: list[tuple[Obj, bool, Obj | None]] = []
    for pod in pods:
        if not service_selects(service, pod) or not should_be_in_endpoints(pod, tolerate_unready):
            continue
        addr = endpoint_address(service, pod)
        ready = tolerate_unready or is_pod_ready(pod)
        if not service_ports:
            if headless:
                entries.append((addr, ready, None))
            continue
        for sp in service_ports:
            number = find_port(pod, sp)
            if number is None:
                log.debug(
                    "no port %s on pod %s for service %s", sp.get("targetPort"), key_of(pod), key_of(service)
                )
                continue
            entries.append((addr, ready, endpoint_port(sp, number)))
    return repack(entries)


def endpoints_labels(service: Mapping[str, Any]) -> dict[str, str]:
    labels = {k: v for k, v in labels_of(service).items() if k != HEADLESS_LABEL}
    if spec(service).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def desired_endpoints(
    service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], current: Mapping[str, Any] | None
) -> Obj | None:
    """The Endpoints object to write, or None when `current` is already right."""
    subsets = build_subsets(service, pods)
    labels = endpoints_labels(service)
    if current is not None and (current.get("subsets") or []) == subsets and labels_of(current) == labels:
        return None
    md: Obj = {"name": name_of(service), "namespace": namespace_of(service), "labels": labels}
    if current is not None:
        cmeta = meta(current)
        for k in ("resourceVersion", "uid", "creationTimestamp"):
            if cmeta.get(k):
                md[k] = cmeta[k]
        annotations = {
            k: v for k, v in (cmeta.get("annotations") or {}).items() if k != TRIGGER_TIME_ANNOTATION
        }
        if annotations:
            md["annotations"] = annotations
    body: Obj = {"apiVersion": "v1", "kind": "Endpoints", "metadata": md}
    if subsets:
        body["subsets"] = subsets
    return body


# --- the controller ------------------------------------------------------------------------------


def _pod_view(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a pod can change its endpoints."""
    return (
        pod_ip(pod),
        is_pod_ready(pod),
        being_deleted(pod),
        is_pod_terminal(pod),
        spec(pod).get("nodeName"),
        spec(pod).get("hostname"),
        spec(pod).get("subdomain"),
    )


def _index_by_namespace(obj: Obj) -> str | None:
    return (obj.get("metadata") or {}).get("namespace")


class ServicePodsController(BaseController):
    """A controller keyed by Service that follows the pods its Services select (Endpoints,
    EndpointSlices): the Service and pod informers (pods indexed by namespace), and handlers
    that enqueue every Service selecting a pod that changed in a way `pod_changed` says counts
    — a label change re-examines the Services of the old and the new labels. With
    --endpoint-updates-batch-period the keys wait that long, so a burst is one write."""

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.batch = ctx.options.endpoint_updates_batch_period
        self.svc_informer = self.informer(SERVICES)
        self.pod_informer = self.informer(PODS, indexers={BY_NAMESPACE: _index_by_namespace})
        self.svc_informer.add_handler(self.enqueue_obj, lambda o, c: self.enqueue_obj(c), self.enqueue_obj)
        self.pod_informer.add_handler(self._pod_added, self._pod_updated, self._pod_added)

    @abc.abstractmethod
    def pod_changed(self, old: Mapping[str, Any], cur: Mapping[str, Any]) -> bool:
        """Whether a pod update (same labels) can change what the Services show of it."""

    def services_for(self, pod: Mapping[str, Any]) -> list[Obj]:
        """The cached Services of the pod's namespace whose selector matches it."""
        return [s for s in self.svc_informer.list(namespace_of(pod)) if service_selects(s, pod)]

    def _enqueue_services(self, services: Iterable[Obj]) -> None:
        for svc in services:
            if self.batch > 0:
                self.enqueue_after(key_of(svc), self.batch)
            else:
                self.enqueue_obj(svc)

    def _pod_added(self, pod: Obj) -> None:
        self._enqueue_services(self.services_for(pod))

    def _pod_updated(self, old: Obj, cur: Obj) -> None:
        if labels_of(old) != labels_of(cur):
            seen = {key_of(s): s for s in self.services_for(old) + self.services_for(cur)}
            self._enqueue_services(seen.values())
        elif self.pod_changed(old, cur):
            self._enqueue_services(self.services_for(cur))


class EndpointsController(ServicePodsController):
    name = "endpoint"
    default_workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.ep_informer = self.informer(ENDPOINTS)
        self.ep_informer.add_handler(None, lambda o, c: self._endpoints_changed(c), self._endpoints_changed)

    def pod_changed(self, old: Mapping[str, Any], cur: Mapping[str, Any]) -> bool:
        return _pod_view(old) != _pod_view(cur) or spec(old) != spec(cur)

    def _endpoints_changed(self, ep: Obj) -> None:
        if key_of(ep) in self.svc_informer:
            self.enqueue_obj(ep)

    async def sync(self, key: str) -> None:
        svc = self.svc_informer.get(key)
        ns, _, name = key.partition("/")
        if svc is None:
            try:
                await self.client.delete(*ENDPOINTS, name, namespace=ns)
            except NotFound:
                pass
            return
        if spec(svc).get("type") == "ExternalName" or not spec(svc).get("selector"):
            return  # no endpoints from this controller (user-managed or a DNS name)
        pods = self.pod_informer.by_index(BY_NAMESPACE, ns)
        current = self.ep_informer.get(key)
        body = desired_endpoints(svc, pods, current)
        if body is None:
            return
        try:
            if current is None:
                try:
                    await self.client.create(*ENDPOINTS, body, namespace=ns)
                except AlreadyExists:
                    await self._update_fresh(svc, pods, ns, name)
            else:
                try:
                    await self.client.update(*ENDPOINTS, body, namespace=ns)
                except Conflict:
                    await self._update_fresh(svc, pods, ns, name)
        except ApiError as exc:
            reason = "FailedToCreateEndpoint" if current is None else "FailedToUpdateEndpoint"
            verb = "create" if current is None else "update"
            self.recorder.warning(svc, reason, f"Failed to {verb} endpoint {key}: {exc.message}")
            raise

    async def _update_fresh(self, svc: Obj, pods: Sequence[Obj], ns: str, name: str) -> None:
        """Our Endpoints cache is behind (typically our own last write is still on its way):
        read the object and write against that, rather than wait for the watch through retries
        with growing back-off while clients keep a stale address list."""
        try:
            existing = await self.client.get(*ENDPOINTS, name, namespace=ns)
        except NotFound:
            existing = None
        body = desired_endpoints(svc, pods, existing)
        if body is None:
            return
        if existing is None:
            await self.client.create(*ENDPOINTS, body, namespace=ns)
        else:
            await self.client.update(*ENDPOINTS, body, namespace=ns)
