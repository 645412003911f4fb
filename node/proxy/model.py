"""What the proxy has to make reachable, as plain records built from Service and Endpoints objects.

kube-proxy's unit of work is the *service port* (`namespace/name:port-name`): one frontend address
set (cluster IP, external IPs, load balancer IPs, a node port) of one protocol, and the ready
endpoints behind it. `service_ports` turns one Service and its Endpoints (as the API server returns
them) into those records; everything after this — rules, conntrack clean-up, DNS — works on them.
Pure: no I/O, no clocks, so the whole mapping is unit-tested.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]

PROTOCOLS = ("TCP", "UDP")
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds; Kubernetes' default for sessionAffinity: ClientIP


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """One ready backend of a service port."""

    ip: str
    port: int
    node_name: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of one Service with every address it answers on and its ready endpoints."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    port: int
    cluster_ip: str | None = None
    node_port: int | None = None
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    affinity_timeout: int | None = None  # seconds when sessionAffinity is ClientIP
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def id(self) -> str:
        """`namespace/name:port-name` — kube-proxy's ServicePortName (`namespace/name` if unnamed)."""
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port_name}" if self.port_name else base

    @property
    def frontends(self) -> tuple[str, ...]:
        """Every IP this port listens on at `port` (the node port is separate)."""
        ips = ((self.cluster_ip,) if self.cluster_ip else ()) + self.external_ips + self.load_balancer_ips
        return tuple(dict.fromkeys(ips))


def _valid_ipv4(value: Any) -> bool:
    try:
        return ipaddress.ip_address(str(value)).version == 4
    except ValueError:
        return False


def _port_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 < value < 65536:
        return value
    if isinstance(value, str) and value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    return None


def is_headless(service: Obj) -> bool:
    spec = service.get("spec") or {}
    return spec.get("clusterIP") == "None"


def service_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def ready_endpoints(endpoints: Obj | None, port_name: str, protocol: str) -> tuple[Endpoint, ...]:
    """The ready (`subsets[].addresses`, not `notReadyAddresses`) endpoints of one named port.

    The Endpoints object names its ports after the Service's ports (the endpoints controller
    resolves named targetPorts per pod), so matching is by name and protocol, as kube-proxy does.
    """
    if not endpoints:
        return ()
    found: set[Endpoint] = set()
    for subset in endpoints.get("subsets") or ():
        if not isinstance(subset, Mapping):
            continue
        ports = [
            p
            for p in subset.get("ports") or ()
            if isinstance(p, Mapping)
            and (p.get("name") or "") == port_name
            and (p.get("protocol") or "TCP") == protocol
        ]
        for p in ports:
            number = _port_number(p.get("port"))
            if number is None:
                continue
            for address in subset.get("addresses") or ():
                if isinstance(address, Mapping) and _valid_ipv4(address.get("ip")):
                    found.add(Endpoint(str(address["ip"]), number, str(address.get("nodeName") or "")))
    return tuple(sorted(found))


def service_ports(service: Obj, endpoints: Obj | None) -> list[ServicePort]:
    """The service ports of one Service that the proxy must program (none for headless and
    ExternalName services, which only DNS serves). Ports of other protocols (SCTP) are skipped."""
    meta = service.get("metadata") or {}
    spec = service.get("spec") or {}
    status = service.get("status") or {}
    stype = spec.get("type") or "ClusterIP"
    if stype == "ExternalName" or is_headless(service):
        return []
    cluster_ip = spec.get("clusterIP")
    cluster_ip = str(cluster_ip) if _valid_ipv4(cluster_ip) else None
    external_ips = tuple(dict.fromkeys(str(ip) for ip in spec.get("externalIPs") or () if _valid_ipv4(ip)))
    lb_ips: tuple[str, ...] = ()
    if stype == "LoadBalancer":
        ingress = (status.get("loadBalancer") or {}).get("ingress") or ()
        lb_ips = tuple(
            dict.fromkeys(
                str(i["ip"]) for i in ingress if isinstance(i, Mapping) and _valid_ipv4(i.get("ip"))
            )
        )
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
        affinity = config if isinstance(config, int) and config > 0 else DEFAULT_AFFINITY_TIMEOUT
    out = []
    for p in spec.get("ports") or ():
        if not isinstance(p, Mapping):
            continue
        protocol = p.get("protocol") or "TCP"
        number = _port_number(p.get("port"))
        if protocol not in PROTOCOLS or number is None:
            continue
        node_port = _port_number(p.get("nodePort")) if stype in ("NodePort", "LoadBalancer") else None
        port_name = str(p.get("name") or "")
        out.append(
            ServicePort(
                namespace=str(meta.get("namespace") or "default"),
                name=str(meta.get("name") or ""),
                port_name=port_name,
                protocol=protocol,
                port=number,
                cluster_ip=cluster_ip,
                node_port=node_port,
                external_ips=external_ips,
                load_balancer_ips=lb_ips,
                affinity_timeout=affinity,
                endpoints=ready_endpoints(endpoints, port_name, protocol),
            )
        )
    return out


def all_service_ports(services: Iterable[Obj], endpoints_by_key: Mapping[str, Obj]) -> list[ServicePort]:
    """Every service port of the cluster, in a stable order (so generated rules are stable)."""
    out: list[ServicePort] = []
    for svc in services:
        out.extend(service_ports(svc, endpoints_by_key.get(service_key(svc))))
    out.sort(key=lambda sp: (sp.namespace, sp.name, sp.port_name, sp.protocol))
    return out
