"""ClusterIPs and NodePorts for Services, allocated in the store so they are never handed out twice.

Each allocation is one key, `/registry/ranges/serviceips/<ip>` or
`/registry/ranges/servicenodeports/<port>`, created with prevExist=false and holding the owning
service's `namespace/name`: the store's create is the lock, several API servers can allocate at
once, and allocations survive restarts. A release deletes the key only while it still names the
same owner. Random picks keep the common case to one write; a crowded range falls back to
reading the taken keys and taking the first free one.
"""

from __future__ import annotations

import abc
import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .storage import Storage

SERVICE_IPS = "/registry/ranges/serviceips"
NODE_PORTS = "/registry/ranges/servicenodeports"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORT_RANGE = (30000, 32767)
_RANDOM_TRIES = 8


class AllocationError(Exception):
    """A requested value is taken or out of range; `field` and `value` name it for a 422 cause."""

    def __init__(self, field_path: str, value: Any, detail: str, full: bool = False) -> None:
        super().__init__(detail)
        self.field = field_path
        self.value = value
        self.detail = detail
        self.full = full


def parse_port_range(text: str) -> tuple[int, int]:
    """`30000-32767` -> (30000, 32767); ValueError for anything else."""
    lo, sep, hi = text.partition("-")
    if not sep:
        raise ValueError(f"port range {text!r} must look like 30000-32767")
    first, last = int(lo), int(hi)
    if not 0 < first <= last < 65536:
        raise ValueError(f"port range {text!r} must be within 1-65535, low to high")
    return first, last


class _KeyRange(abc.ABC):
    """Values of a range, each claimed by creating one store key."""

    def __init__(self, storage: Storage, prefix: str, size: int, what: str) -> None:
        self.storage = storage
        self.prefix = prefix
        self.size = size
        self.what = what

    @abc.abstractmethod
    def _value(self, offset: int) -> str:
        """The range's value at `offset` (an IP address, a port)."""

    async def claim(self, value: str, owner: str) -> bool:
        key = f"{self.prefix}/{value}"
        if await self.storage.claim(key, owner):
            return True
        # Taken — by this very owner (e.g. a retried request) counts as ours.
        return await self.storage.read_value(key) == owner

    async def allocate_next(self, owner: str) -> str:
        for _ in range(min(_RANDOM_TRIES, self.size)):
            value = self._value(random.randrange(self.size))
            if await self.storage.claim(f"{self.prefix}/{value}", owner):
                return value
        taken = await self.storage.read_dir(self.prefix)
        start = random.randrange(self.size)
        for i in range(self.size):
            value = self._value((start + i) % self.size)
            if value not in taken and await self.storage.claim(f"{self.prefix}/{value}", owner):
                return value
        raise AllocationError("", None, f"range is full: no free {self.what} left", full=True)

    async def release(self, value: str, owner: str) -> None:
        await self.storage.release(f"{self.prefix}/{value}", owner)


class ServiceIPRange(_KeyRange):
    def __init__(self, storage: Storage, cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.version != 4:
            raise ValueError(f"--service-cluster-ip-range {cidr}: only IPv4 ranges are supported")
        if net.num_addresses < 4:
            raise ValueError(f"--service-cluster-ip-range {cidr} is too small; use at least a /30")
        self.network = net
        # Neither the network nor the broadcast address is handed out.
        super().__init__(storage, SERVICE_IPS, net.num_addresses - 2, "cluster IP")

    def _value(self, offset: int) -> str:
        return str(self.network.network_address + 1 + offset)

    def first(self) -> str:
        return self._value(0)

    def contains(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return (
            addr in self.network
            and addr != self.network.network_address
            and addr != self.network.broadcast_address
        )


class NodePortRange(_KeyRange):
    def __init__(self, storage: Storage, ports: tuple[int, int] = DEFAULT_NODE_PORT_RANGE) -> None:
        self.low, self.high = ports
        super().__init__(storage, NODE_PORTS, self.high - self.low + 1, "node port")

    def _value(self, offset: int) -> str:
        return str(self.low + offset)

    def contains(self, port: int) -> bool:
        return self.low <= port <= self.high


@dataclass
class Allocation:
    """What one write allocated (to roll back if the write fails) and what it frees (once it succeeds)."""

    ips: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    free_ips: list[str] = field(default_factory=list)
    free_ports: list[int] = field(default_factory=list)


def _owner(svc: dict[str, Any]) -> str:
    meta = svc["metadata"]
    return f"{meta.get('namespace', '')}/{meta['name']}"


def _wants_node_ports(spec: dict[str, Any]) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


def _has_cluster_ip(spec: dict[str, Any]) -> bool:
    return spec.get("type") != "ExternalName"


class ServiceAllocator:
    """Assigns clusterIP(s) and nodePorts to services on create and update, frees them on delete."""

    def __init__(self, ips: ServiceIPRange, ports: NodePortRange) -> None:
        self.ips = ips
        self.ports = ports

    async def _ip(self, spec: dict[str, Any], owner: str, alloc: Allocation) -> None:
        ip = spec.get("clusterIP") or ""
        if not ip and spec.get("clusterIPs"):
            ip = spec["clusterIPs"][0] or ""
        if ip == "None":
            spec["clusterIP"] = "None"
            spec["clusterIPs"] = ["None"]
            return
        if ip:
            if not self.ips.contains(ip):
                raise AllocationError(
                    "spec.clusterIPs",
                    [ip],
                    f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. "
                    f"The range of valid IPs is {self.ips.network}",
                )
            if not await self.ips.claim(ip, owner):
                raise AllocationError(
                    "spec.clusterIPs", [ip], f"failed to allocate IP {ip}: provided IP is already allocated"
                )
        else:
            try:
                ip = await self.ips.allocate_next(owner)
            except AllocationError as exc:
                raise AllocationError(
                    "spec.clusterIPs", [], f"failed to allocate a serviceIP: {exc.detail}", True
                )
        alloc.ips.append(ip)
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")

    async def _node_ports(self, spec: dict[str, Any], owner: str, alloc: Allocation, keep: set[int]) -> None:
        ports = spec.get("ports") or []
        used_here: set[int] = set()
        for i, port in enumerate(ports):
            if not isinstance(port, dict):
                continue
            node_port = port.get("nodePort")
            if node_port:
                if not isinstance(node_port, int):
                    continue  # validation reports it
                if node_port in keep or node_port in used_here:
                    used_here.add(node_port)
                    continue
                if not self.ports.contains(node_port):
                    raise AllocationError(
                        f"spec.ports[{i}].nodePort",
                        node_port,
                        f"provided port is not in the valid range. The range of valid ports is "
                        f"{self.ports.low}-{self.ports.high}",
                    )
                if not await self.ports.claim(str(node_port), owner):
                    raise AllocationError(
                        f"spec.ports[{i}].nodePort", node_port, "provided port is already allocated"
                    )
                alloc.ports.append(node_port)
                used_here.add(node_port)
            else:
                try:
                    value = int(await self.ports.allocate_next(owner))
                except AllocationError as exc:
                    raise AllocationError(
                        f"spec.ports[{i}].nodePort",
                        None,
                        f"failed to allocate a nodePort: {exc.detail}",
                        True,
                    )
                port["nodePort"] = value
                alloc.ports.append(value)
                used_here.add(value)

    async def on_create(self, svc: dict[str, Any]) -> Allocation:
        spec = svc.setdefault("spec", {})
        owner = _owner(svc)
        alloc = Allocation()
        try:
            if _has_cluster_ip(spec):
                await self._ip(spec, owner, alloc)
            if _wants_node_ports(spec):
                await self._node_ports(spec, owner, alloc, set())
        except BaseException:
            await self.rollback(svc, alloc)
            raise
        return alloc

    async def on_update(self, new: dict[str, Any], old: dict[str, Any]) -> Allocation:
        spec = new.setdefault("spec", {})
        old_spec = old.get("spec") or {}
        owner = _owner(new)
        alloc = Allocation()
        old_ip = old_spec.get("clusterIP") or ""
        try:
            if _has_cluster_ip(spec):
                if (
                    not spec.get("clusterIP")
                    and not spec.get("clusterIPs")
                    and old_ip
                    and _has_cluster_ip(old_spec)
                ):
                    # An update that leaves the allocated IP out keeps it (kube's patchAllocatedValues).
                    spec["clusterIP"] = old_ip
                    spec["clusterIPs"] = list(old_spec.get("clusterIPs") or [old_ip])
                    for key in ("ipFamilies", "ipFamilyPolicy"):
                        if key in old_spec:
                            spec.setdefault(key, old_spec[key])
                elif not _has_cluster_ip(old_spec) or not old_ip:
                    await self._ip(spec, owner, alloc)
            elif old_ip and old_ip != "None":
                alloc.free_ips.append(old_ip)
            old_ports = {
                p.get("nodePort")
                for p in old_spec.get("ports") or []
                if isinstance(p, dict) and isinstance(p.get("nodePort"), int)
            }
            if _wants_node_ports(spec):
                if _wants_node_ports(old_spec):
                    _keep_node_ports(spec, old_spec)
                await self._node_ports(
                    spec, owner, alloc, old_ports if _wants_node_ports(old_spec) else set()
                )
            elif _wants_node_ports(old_spec):
                # Leaving NodePort/LoadBalancer: the node ports it had are dropped with it.
                for p in spec.get("ports") or []:
                    if isinstance(p, dict) and p.get("nodePort") in old_ports:
                        p.pop("nodePort")
            new_ports = {
                p.get("nodePort")
                for p in spec.get("ports") or []
                if isinstance(p, dict) and isinstance(p.get("nodePort"), int)
            }
            if _wants_node_ports(old_spec):
                alloc.free_ports.extend(sorted(old_ports - new_ports))
        except BaseException:
            await self.rollback(new, alloc)
            raise
        return alloc

    async def rollback(self, svc: dict[str, Any], alloc: Allocation) -> None:
        owner = _owner(svc)
        for ip in alloc.ips:
            await self.ips.release(ip, owner)
        for port in alloc.ports:
            await self.ports.release(str(port), owner)

    async def commit(self, svc: dict[str, Any], alloc: Allocation) -> None:
        owner = _owner(svc)
        for ip in alloc.free_ips:
            await self.ips.release(ip, owner)
        for port in alloc.free_ports:
            await self.ports.release(str(port), owner)

    async def on_delete(self, svc: dict[str, Any]) -> None:
        spec = svc.get("spec") or {}
        owner = _owner(svc)
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip and ip != "None":
                await self.ips.release(ip, owner)
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and isinstance(p.get("nodePort"), int):
                await self.ports.release(str(p["nodePort"]), owner)


def _keep_node_ports(spec: dict[str, Any], old_spec: dict[str, Any]) -> None:
    """Ports sent without a nodePort keep the one they had (matched by port and protocol)."""
    old = {
        (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
        for p in old_spec.get("ports") or []
        if isinstance(p, dict)
    }
    for p in spec.get("ports") or []:
        if isinstance(p, dict) and not p.get("nodePort"):
            previous = old.get((p.get("port"), p.get("protocol", "TCP")))
            if previous:
                p["nodePort"] = previous


def allocation_error(res: Any, name: str, exc: AllocationError) -> errors.ApiError:
    if exc.full:
        return errors.internal(f"Internal error occurred: {exc.detail}")
    value = exc.value
    shown = (
        "[]string{" + ", ".join(f'"{v}"' for v in value) + "}"
        if isinstance(value, list)
        else (f'"{value}"' if isinstance(value, str) else str(value))
    )
    return errors.invalid(
        res,
        name,
        [
            {
                "reason": "FieldValueInvalid",
                "message": f"Invalid value: {shown}: {exc.detail}",
                "field": exc.field,
            }
        ],
    )
