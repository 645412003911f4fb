"""The service proxy loop: Services + Endpoints in, iptables rules (and friends) out.

Informers on Services and Endpoints wake one sync task; a sync reads both caches, computes every
service port (`model`), the rules for them (`rules`), and hands iptables-restore only the chains
that changed — typically a few milliseconds, so a change in the API is in the kernel well within a
second. Like kube-proxy's, the sync is level-triggered: it never depends on which event woke it,
and a failed sync is simply retried with a full rewrite. Around the rules it keeps the host in
shape: hairpin mode on the bridge's ports, route_localnet on the bridge (for 127.0.0.1:<nodePort>),
load balancer addresses on `lo`, and stale UDP conntrack entries deleted when endpoints change.
Every `sync_period` it checks that its chains and jumps are still in place (a `docker` restart or
an `iptables -F` removes them) and rewrites everything if not.

The optional `LoadBalancerController` runs in the same process and assigns addresses from the
pool; the Proxier then makes them reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from orchestrator.apiclient import ENDPOINTS, SERVICES, ApiClient
from orchestrator.watchers import InformerFactory, object_key

from . import netfilter
from .conntrack import IPPROTO_UDP, Conntrack, Flow
from .loadbalancer import AddressPool, LoadBalancerController
from .model import ServicePort, all_service_ports
from .netfilter import HostLock, HostState, Iptables, NetfilterError
from .rules import JUMPS, RuleConfig, Ruleset, compute_rules, restore_steps

log = logging.getLogger(__name__)

DEFAULT_POD_CIDR = "10.88.0.0/16"  # node.runtime's DEFAULT_SUBNET: Docker's `grove` network


@dataclass
class ProxyConfig:
    node_name: str
    pod_cidr: str = DEFAULT_POD_CIDR
    lb_pool: AddressPool = field(default_factory=lambda: AddressPool(()))
    localhost_nodeports: bool = True
    sync_period: float = 30.0
    retry_delay: float = 1.0
    state_dir: str = netfilter.DEFAULT_STATE_DIR
    cleanup_on_exit: bool = True


@dataclass
class SyncStats:
    syncs: int = 0
    failures: int = 0
    service_ports: int = 0
    chains_written: int = 0
    last_duration: float = 0.0
    last_error: str = ""
    conntrack_deleted: int = 0


# A frontend is (IP, port) — or (None, node port): any local address at that port.
Frontend = tuple[str | None, int]


@dataclass(frozen=True, slots=True)
class StaleFlows:
    """UDP conntrack state a change made stale (kube-proxy's conntrack clean-up):

    - `gone`: (frontend, endpoint) pairs that no longer exist — a flow DNATed from that frontend to
      that endpoint keeps going to a backend that left (the same endpoint may still serve other
      services; their flows are kept);
    - `fresh`: frontends that just got their first endpoint — a flow that started while they had
      none was never DNATed and never will be, unless its entry goes.
    """

    gone: frozenset[tuple[Frontend, tuple[str, int]]] = frozenset()
    fresh: frozenset[Frontend] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.gone or self.fresh)

    def matches(self, flow: Flow) -> bool:
        if flow.orig.proto != IPPROTO_UDP:
            return False
        if flow.dnat:
            backend = (flow.reply.src, flow.reply.sport)
            return ((flow.orig.dst, flow.orig.dport), backend) in self.gone or (
                (None, flow.orig.dport),
                backend,
            ) in self.gone
        return (flow.orig.dst, flow.orig.dport) in self.fresh or (None, flow.orig.dport) in self.fresh


def _frontends(sp: ServicePort) -> set[Frontend]:
    out: set[Frontend] = {(ip, sp.port) for ip in sp.frontends}
    if sp.node_port:
        out.add((None, sp.node_port))
    return out


def stale_udp_flows(old: Iterable[ServicePort], new: Iterable[ServicePort]) -> StaleFlows:
    """What a change from `old` to `new` service ports makes stale in the UDP conntrack table."""
    before = {(sp.id, sp.protocol): sp for sp in old if sp.protocol == "UDP"}
    after = {(sp.id, sp.protocol): sp for sp in new if sp.protocol == "UDP"}

    def pairs(ports: Iterable[ServicePort]) -> set[tuple[Frontend, tuple[str, int]]]:
        return {(f, (e.ip, e.port)) for sp in ports for f in _frontends(sp) for e in sp.endpoints}

    gone = pairs(before.values()) - pairs(after.values())
    fresh: set[Frontend] = set()
    for key, sp in after.items():
        prev = before.get(key)
        if sp.endpoints and (prev is None or not prev.endpoints):
            fresh |= _frontends(sp)
    return StaleFlows(frozenset(gone), frozenset(fresh))


class Proxier:
    """Makes the cluster's services reachable on this host. `await proxier.run()` until cancelled."""

    def __init__(self, client: ApiClient, config: ProxyConfig, iptables: Iptables | None = None) -> None:
        self.client = client
        self.config = config
        self.iptables = iptables or Iptables()
        self.rule_config = RuleConfig(
            pod_cidr=config.pod_cidr, localhost_nodeports=config.localhost_nodeports
        )
        self.factory = InformerFactory(client)
        self.services = self.factory.informer(*SERVICES)
        self.endpoints = self.factory.informer(*ENDPOINTS)
        self.stats = SyncStats()
        self.synced = asyncio.Event()  # set after the first successful sync
        self._wake = asyncio.Event()
        self._applied: Ruleset | None = None
        self._ports: list[ServicePort] = []
        self._bridge: str | None = None
        self._lb_addresses: set[str] = set()
        self._lock = HostLock()
        self._host = HostState.load(config.state_dir)
        for informer in (self.services, self.endpoints):
            informer.add_handler(self._changed, lambda old, new: self._changed(new), self._changed)
        self.lb: LoadBalancerController | None = None
        if config.lb_pool:
            self.lb = LoadBalancerController(client, self.services, config.lb_pool, config.node_name)

    def _changed(self, _obj: object) -> None:
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        self._lock.acquire()
        try:
            self.factory.start()
            async with asyncio.TaskGroup() as tasks:
                if self.lb is not None:
                    tasks.create_task(self.lb.run(), name="loadbalancer")
                tasks.create_task(self._sync_loop(), name="proxy sync")
        finally:
            await self.factory.stop()
            if self.config.cleanup_on_exit:
                await asyncio.shield(self.cleanup())
            self._lock.release()

    async def _sync_loop(self) -> None:
        await asyncio.gather(self.services.wait_synced(), self.endpoints.wait_synced())
        log.info("caches synced; programming services")
        next_check = time.monotonic() + self.config.sync_period
        while True:
            self._wake.clear()
            try:
                await self.sync()
            except Exception as e:  # noqa: BLE001 - the proxy must keep going; say why and retry
                self.stats.failures += 1
                self.stats.last_error = str(e)
                self._applied = None  # rewrite everything next time
                if isinstance(e, NetfilterError | OSError):
                    log.error("sync failed, retrying in %.1fs: %s", self.config.retry_delay, e)
                else:
                    log.exception("sync failed, retrying in %.1fs", self.config.retry_delay)
                await asyncio.sleep(self.config.retry_delay)
                self._wake.set()
                continue
            timeout = max(0.0, next_check - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + self.config.sync_period
                if not await self._rules_intact():
                    log.warning("grove's iptables chains or jumps were changed by someone; rewriting them")
                    self._applied = None

    async def _rules_intact(self) -> bool:
        """Every chain holds as many rules as we wrote and every jump is there. (Counting rather
        than comparing text: iptables prints rules back in its own normal form.)"""
        if self._applied is None:
            return False
        try:
            present = await self.iptables.rule_counts()
            for (table, chain), rules in self._applied.chains.items():
                if present.get(table, {}).get(chain) != len(rules):
                    return False
            for jump in JUMPS:
                if not await self.iptables.has_jump(jump):
                    return False
        except Exception as e:  # noqa: BLE001 - a failed check means: rewrite
            log.warning("cannot check the rules: %s", e)
            return False
        return True

    async def sync(self) -> None:
        """One pass: rules, then conntrack, then host tweaks. Raises on failure."""
        started = time.perf_counter()
        endpoints_by_key = {object_key(ep): ep for ep in self.endpoints.list()}
        ports = all_service_ports(self.services.list(), endpoints_by_key)
        desired = compute_rules(ports, self.rule_config)
        first = self._applied is None
        existing = await self.iptables.chains() if first else None
        steps = restore_steps(self._applied, desired, existing)
        for text in steps:
            await self.iptables.restore(text)
        if first:
            added = await self.iptables.ensure_jumps()
            if added:
                log.info("inserted %d jump(s) into built-in chains", len(added))
        written = sum(1 for text in steps for line in text.splitlines() if line.startswith(":"))
        self._applied = desired
        rules_done = time.perf_counter()
        old_ports, self._ports = self._ports, ports
        stale = stale_udp_flows(old_ports, ports)
        if stale:
            try:
                deleted = await asyncio.to_thread(_delete_flows, stale)
                self.stats.conntrack_deleted += deleted
                if deleted:
                    log.info("deleted %d stale UDP conntrack entries", deleted)
            except OSError as e:
                log.warning("cannot clean up UDP conntrack entries: %s", e)
        await self._tend_host(ports, first)
        duration = time.perf_counter() - started
        self.stats.syncs += 1
        self.stats.service_ports = len(ports)
        self.stats.chains_written += written
        self.stats.last_duration = duration
        if written:
            log.info(
                "synced %d service ports (%d chains written): rules in %.1f ms, all in %.1f ms",
                len(ports),
                written,
                (rules_done - started) * 1000,
                duration * 1000,
            )
        self.synced.set()

    async def _tend_host(self, ports: list[ServicePort], first: bool) -> None:
        if self._bridge is None:
            self._bridge = await netfilter.find_bridge(self.config.pod_cidr)
            if self._bridge:
                log.info("pod network %s is on bridge %s", self.config.pod_cidr, self._bridge)
        if self._bridge:
            try:
                netfilter.set_hairpin(self._bridge)
                if self.config.localhost_nodeports:
                    self._host.set_sysctl(netfilter.route_localnet_path(self._bridge), "1")
            except OSError as e:
                log.warning("bridge %s: %s", self._bridge, e)
                self._bridge = None  # look for it again: Docker may have recreated the network
        if self.config.lb_pool:
            wanted = {ip for sp in ports for ip in sp.load_balancer_ips if ip in self.config.lb_pool}
            if wanted == self._lb_addresses and not first:
                return
            added, removed = await netfilter.sync_lb_addresses(wanted)
            self._lb_addresses = wanted
            if added or removed:
                log.info("load balancer addresses on lo: +%s -%s", sorted(added), sorted(removed))

    async def cleanup(self) -> None:
        """Remove everything this proxy put on the host."""
        await cleanup_host(self.config.state_dir, self.iptables, lock=False)  # we hold the lock
        self._applied = None


def _delete_flows(stale: StaleFlows) -> int:
    with Conntrack() as ct:
        return ct.delete_where(stale.matches, IPPROTO_UDP)


async def cleanup_host(
    state_dir: str = netfilter.DEFAULT_STATE_DIR, iptables: Iptables | None = None, *, lock: bool = True
) -> None:
    """Remove grove's jumps, chains, load balancer addresses and sysctl changes (idempotent; what
    `grove proxy --cleanup` does after a crash). Refuses while a proxy is running (`lock`)."""
    host_lock = HostLock() if lock else None
    if host_lock is not None:
        try:
            host_lock.acquire()
        except NetfilterError as e:
            raise NetfilterError(f"{e}; stop that proxy (it removes its rules itself) instead") from None
    try:
        errors = []
        try:
            await (iptables or Iptables()).cleanup()
        except NetfilterError as e:
            errors.append(str(e))
        try:
            await netfilter.sync_lb_addresses(())
        except NetfilterError as e:
            errors.append(str(e))
        HostState.load(state_dir).restore()
        if errors:
            raise NetfilterError("; ".join(errors))
    finally:
        if host_lock is not None:
            host_lock.release()
