"""LoadBalancer services get an address from a pool, the way MetalLB or k3s's klipper-lb do.

The pool comes from a flag (`--lb-pool 10.89.0.0/24`, ranges `a-b` too). `allocate` is pure: given
every Service it decides which LoadBalancer service holds which address — keeping existing
assignments, honouring `spec.loadBalancerIP` when it is in the pool and free, otherwise the lowest
free address — so every proxy that runs it on the same picture reaches the same answer, and two
services that ended up with one address (two proxies racing) are untangled deterministically:
the older service keeps it. `LoadBalancerController` is the level-triggered loop around it that
writes `status.loadBalancer.ingress` and records IPAllocated / AllocationFailed events. Making
the addresses reachable is the proxy's job (iptables rules, and the addresses on `lo`).

Services with a `spec.loadBalancerClass` belong to another implementation and are left alone.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.apiclient import SERVICES, ApiClient, ApiError, Conflict, NotFound
from orchestrator.watchers import Controller, Informer

from .model import service_key

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class AddressPool:
    """IPv4 addresses for load balancers: CIDRs (without network and broadcast addresses for
    prefixes shorter than /31) and inclusive ranges."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, specs: Iterable[str]) -> AddressPool:
        ranges: list[tuple[int, int]] = []
        for raw in specs:
            for spec in (s.strip() for s in raw.split(",")):
                if not spec:
                    continue
                try:
                    if "-" in spec:
                        lo, hi = (ipaddress.IPv4Address(x.strip()) for x in spec.split("-", 1))
                        if int(hi) < int(lo):
                            raise ValueError("the range ends before it starts")
                        ranges.append((int(lo), int(hi)))
                    else:
                        net = ipaddress.IPv4Network(spec, strict=False)
                        first, last = int(net.network_address), int(net.broadcast_address)
                        if net.prefixlen < 31:
                            first, last = first + 1, last - 1
                        ranges.append((first, last))
                except ValueError as e:
                    raise ValueError(
                        f"load balancer pool {spec!r} is not an IPv4 CIDR or a range a.b.c.d-e.f.g.h: {e}"
                    ) from None
        return cls(tuple(ranges))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, ip: object) -> bool:
        try:
            value = int(ipaddress.IPv4Address(str(ip)))
        except ValueError:
            return False
        return any(lo <= value <= hi for lo, hi in self.ranges)

    def addresses(self) -> Iterator[str]:
        seen: set[int] = set()
        for lo, hi in self.ranges:
            for value in range(lo, hi + 1):
                if value not in seen:
                    seen.add(value)
                    yield str(ipaddress.IPv4Address(value))

    def __str__(self) -> str:
        return ",".join(
            f"{ipaddress.IPv4Address(lo)}-{ipaddress.IPv4Address(hi)}"
            if lo != hi
            else str(ipaddress.IPv4Address(lo))
            for lo, hi in self.ranges
        )


def wants_address(service: Obj) -> bool:
    """A LoadBalancer service this allocator is responsible for."""
    spec = service.get("spec") or {}
    meta = service.get("metadata") or {}
    return (
        spec.get("type") == "LoadBalancer"
        and not spec.get("loadBalancerClass")
        and not meta.get("deletionTimestamp")
    )


def ingress_ips(service: Obj) -> list[str]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    return [str(i["ip"]) for i in ingress if isinstance(i, Mapping) and i.get("ip")]


def _age_key(service: Obj) -> tuple[str, str]:
    meta = service.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), service_key(service))


def allocate(services: Iterable[Obj], pool: AddressPool) -> dict[str, str | None]:
    """`namespace/name` -> address (None: the pool is exhausted) for every LoadBalancer service."""
    lbs = sorted((s for s in services if wants_address(s)), key=_age_key)
    taken: dict[str, str] = {}
    result: dict[str, str | None] = {}
    # Existing assignments first, oldest service first: a duplicate goes to the older one.
    for svc in lbs:
        key = service_key(svc)
        for ip in ingress_ips(svc):
            if ip in pool and ip not in taken:
                taken[ip] = key
                result[key] = ip
                break
    for svc in lbs:
        key = service_key(svc)
        if key in result:
            continue
        requested = (svc.get("spec") or {}).get("loadBalancerIP")
        if requested and requested in pool and requested not in taken:
            taken[requested] = key
            result[key] = requested
            continue
        if requested:
            result[key] = None  # asked for an address we cannot give: do not hand out another
            continue
        free = next((ip for ip in pool.addresses() if ip not in taken), None)
        if free is not None:
            taken[free] = key
        result[key] = free
    return result


class LoadBalancerController:
    """Writes `status.loadBalancer.ingress` of LoadBalancer services from `allocate`."""

    def __init__(self, client: ApiClient, services: Informer, pool: AddressPool, node_name: str = "") -> None:
        self.client = client
        self.services = services
        self.pool = pool
        self.node_name = node_name
        self.controller = Controller("loadbalancer", self.sync)
        self.controller.watch(services, self._keys)
        self._failed: set[str] = set()

    def _keys(self, obj: Obj) -> list[str]:
        # A change to one service can free or take an address another one is waiting for.
        keys = [service_key(obj)]
        keys += [service_key(s) for s in self.services.list() if wants_address(s) and not ingress_ips(s)]
        return keys

    async def run(self) -> None:
        await self.controller.run()

    async def sync(self, key: str) -> None:
        svc = self.services.get(key)
        if svc is None:
            return
        current = ingress_ips(svc)
        if not wants_address(svc):
            if any(ip in self.pool for ip in current) and not (svc.get("spec") or {}).get(
                "loadBalancerClass"
            ):
                await self._write(svc, [])  # no longer a LoadBalancer: give the address back
            return
        wanted = allocate(self.services.list(), self.pool).get(key)
        if wanted is None:
            if current and not any(ip in self.pool for ip in current):
                return  # someone else's address (set by hand); leave it
            if key not in self._failed:
                self._failed.add(key)
                requested = (svc.get("spec") or {}).get("loadBalancerIP")
                reason = (
                    f"requested address {requested} is not free in pool {self.pool}"
                    if requested
                    else f"no free address left in pool {self.pool}"
                )
                await self._event(
                    svc, "AllocationFailed", f"Failed to allocate IP for {key}: {reason}", "Warning"
                )
            return
        self._failed.discard(key)
        if current == [wanted]:
            return
        await self._write(svc, [wanted])
        await self._event(svc, "IPAllocated", f"Assigned IP [{wanted}]")

    async def _write(self, svc: Obj, ips: list[str]) -> None:
        obj = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": dict(svc.get("metadata") or {}),
            "spec": svc.get("spec") or {},
            "status": {
                **(svc.get("status") or {}),
                "loadBalancer": {"ingress": [{"ip": ip} for ip in ips]} if ips else {},
            },
        }
        try:
            try:
                await self.client.update_status(*SERVICES, obj)
            except NotFound:
                # An API server without services/status takes status through the object itself.
                await self.client.update(*SERVICES, obj)
        except NotFound:
            return  # deleted meanwhile
        except Conflict:
            self.controller.enqueue_after(service_key(svc), 0.05)  # the watch brings the newer one
            return
        log.info("service %s: load balancer ingress %s", service_key(svc), ips or "cleared")

    async def _event(self, svc: Obj, reason: str, message: str, kind: str = "Normal") -> None:
        try:
            await self.client.create_event(
                {"apiVersion": "v1", "kind": "Service", "metadata": svc.get("metadata") or {}},
                reason,
                message,
                type=kind,
                component="grove-lb",
                host=self.node_name or None,
            )
        except ApiError as e:
            log.info("cannot record event %s on %s: %s", reason, service_key(svc), e)
