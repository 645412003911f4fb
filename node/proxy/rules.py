"""The iptables rules that make service ports reachable, computed from `ServicePort` records.

This is kube-proxy's iptables mode, in grove's own chains so nothing else on the host is touched:

    nat    PREROUTING, OUTPUT -> GROVE-SERVICES     one rule per (frontend IP, port) -> GROVE-SVC-*,
                                                    then local addresses -> GROVE-NODEPORTS
           GROVE-NODEPORTS                          one rule per node port -> GROVE-SVC-*
           GROVE-SVC-<hash>                         mark for SNAT when the client is outside the pod
                                                    network; ClientIP affinity (`recent` match);
                                                    round robin over GROVE-SEP-* (`statistic nth`)
           GROVE-SEP-<hash>                         mark hairpin traffic; remember the client for
                                                    affinity; DNAT to the endpoint
           POSTROUTING -> GROVE-POSTROUTING         MASQUERADE what was marked
    filter INPUT, FORWARD, OUTPUT (NEW) -> GROVE-FILTER   REJECT ports without ready endpoints
           FORWARD -> GROVE-FORWARD                 accept proxied traffic (Docker's FORWARD drops it)
           INPUT -> GROVE-FIREWALL                  drop martian 127/8 traffic (localhost node ports)

Round robin is exact: the nat table sees only the first packet of each connection (or UDP flow),
and `statistic --mode nth` rules `every n, every n-1, ..., 2, rest` hand out connections in turn.
Chain names hash the service port (and endpoint), so an unchanged service keeps its chains — and
its round-robin counters and affinity lists — when others change: `restore_text` rewrites only
the chains that differ. Pure: the same input always gives the same text.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .model import ServicePort

PREFIX = "GROVE-"
SERVICES = "GROVE-SERVICES"
NODEPORTS = "GROVE-NODEPORTS"
POSTROUTING = "GROVE-POSTROUTING"
FILTER = "GROVE-FILTER"
FORWARD = "GROVE-FORWARD"
FIREWALL = "GROVE-FIREWALL"
TABLES = ("nat", "filter")
BASE_CHAINS: dict[str, tuple[str, ...]] = {
    "nat": (SERVICES, NODEPORTS, POSTROUTING),
    "filter": (FILTER, FORWARD, FIREWALL),
}
DEFAULT_MARK = 0x4000


@dataclass(frozen=True, slots=True)
class Jump:
    """A rule in a built-in chain that sends packets into one of grove's chains."""

    table: str
    chain: str
    target: str
    match: tuple[str, ...] = ()

    def args(self) -> list[str]:
        return [*self.match, "-m", "comment", "--comment", "grove service proxy", "-j", self.target]


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
JUMPS: tuple[Jump, ...] = (
    Jump("nat", "PREROUTING", SERVICES),
    Jump("nat", "OUTPUT", SERVICES),
    Jump("nat", "POSTROUTING", POSTROUTING),
    Jump("filter", "INPUT", FILTER, _NEW),
    Jump("filter", "FORWARD", FILTER, _NEW),
    Jump("filter", "OUTPUT", FILTER, _NEW),
    Jump("filter", "FORWARD", FORWARD),
    Jump("filter", "INPUT", FIREWALL),
)


@dataclass(frozen=True, slots=True)
class RuleConfig:
    pod_cidr: str = "10.88.0.0/16"
    localhost_nodeports: bool = True
    mark: int = DEFAULT_MARK

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.pod_cidr, strict=False)
        if net.version != 4:
            raise ValueError(f"pod CIDR {self.pod_cidr!r} must be IPv4")

    @property
    def mark_mask(self) -> str:
        return f"{self.mark:#x}/{self.mark:#x}"


@dataclass
class Ruleset:
    """Chains and their rules: `chains[(table, chain)]` is the rule list (the text after `-A CHAIN`)."""

    chains: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    def rules(self, table: str, chain: str) -> tuple[str, ...]:
        return self.chains.get((table, chain), ())

    def __len__(self) -> int:
        return sum(len(r) for r in self.chains.values())


def chain_name(kind: str, *parts: str) -> str:
    """`GROVE-<kind>-<16 base32 chars of sha256(parts)>`: stable, unique, within the 28-char limit."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return f"{PREFIX}{kind}-{base64.b32encode(digest).decode()[:16]}"


def service_chain(sp: ServicePort) -> str:
    return chain_name("SVC", sp.id, sp.protocol)


def endpoint_chain(sp: ServicePort, ip: str, port: int) -> str:
    return chain_name("SEP", sp.id, sp.protocol, f"{ip}:{port}")


def _proto(sp: ServicePort) -> str:
    p = sp.protocol.lower()
    return f"-p {p} -m {p}"


def _reject(sp: ServicePort) -> str:
    how = "tcp-reset" if sp.protocol == "TCP" else "icmp-port-unreachable"
    return f"-j REJECT --reject-with {how}"


def _what(ip: str, sp: ServicePort) -> str:
    if ip == sp.cluster_ip:
        return "cluster IP"
    if ip in sp.load_balancer_ips:
        return "load balancer IP"
    return "external IP"


def compute_rules(ports: Sequence[ServicePort], config: RuleConfig = RuleConfig()) -> Ruleset:
    """Every grove chain (the base chains always, even empty) and its rules for these service ports."""
    chains: dict[tuple[str, str], list[str]] = {
        (table, chain): [] for table, names in BASE_CHAINS.items() for chain in names
    }
    services = chains[("nat", SERVICES)]
    nodeports = chains[("nat", NODEPORTS)]
    reject = chains[("filter", FILTER)]
    mark = f"-j MARK --set-xmark {config.mark_mask}"
    for sp in ports:
        if not sp.endpoints:
            for ip in sp.frontends:
                reject.append(
                    f'-d {ip}/32 {_proto(sp)} --dport {sp.port} -m comment --comment "{sp.id} has no endpoints" '
                    + _reject(sp)
                )
            if sp.node_port:
                reject.append(
                    f"-m addrtype --dst-type LOCAL {_proto(sp)} --dport {sp.node_port} "
                    f'-m comment --comment "{sp.id} has no endpoints" ' + _reject(sp)
                )
            continue
        svc = service_chain(sp)
        for ip in sp.frontends:
            services.append(
                f'-d {ip}/32 {_proto(sp)} --dport {sp.port} -m comment --comment "{sp.id} {_what(ip, sp)}" -j {svc}'
            )
        if sp.node_port:
            nodeports.append(f'{_proto(sp)} --dport {sp.node_port} -m comment --comment "{sp.id}" -j {svc}')
        rules = [f"! -s {config.pod_cidr} {mark}"]
        seps = [(ep, endpoint_chain(sp, ep.ip, ep.port)) for ep in sp.endpoints]
        if sp.affinity_timeout:
            for _, sep in seps:
                rules.append(
                    f"-m recent --name {sep} --rcheck --seconds {sp.affinity_timeout} --reap -j {sep}"
                )
        n = len(seps)
        for i, (_, sep) in enumerate(seps):
            if i < n - 1:
                rules.append(f"-m statistic --mode nth --every {n - i} --packet 0 -j {sep}")
            else:
                rules.append(f"-j {sep}")
        chains[("nat", svc)] = rules
        for ep, sep in seps:
            sep_rules = [f"-s {ep.ip}/32 {mark}"]  # a pod reaching itself: hairpin, needs SNAT
            if sp.affinity_timeout:
                sep_rules.append(f"-m recent --name {sep} --set --rsource")
            sep_rules.append(f"{_proto(sp)} -j DNAT --to-destination {ep.ip}:{ep.port}")
            chains[("nat", sep)] = sep_rules
    local = "-m addrtype --dst-type LOCAL"
    if not config.localhost_nodeports:
        local = "! -d 127.0.0.0/8 " + local
    services.append(f'{local} -m comment --comment "node ports" -j {NODEPORTS}')
    chains[("nat", POSTROUTING)] = [
        f"-m mark ! --mark {config.mark_mask} -j RETURN",
        f"-j MARK --xor-mark {config.mark:#x}",
        '-m comment --comment "grove service traffic needing SNAT" -j MASQUERADE',
    ]
    chains[("filter", FORWARD)] = [
        f'-m mark --mark {config.mark_mask} -m comment --comment "proxied service traffic" -j ACCEPT',
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    if config.localhost_nodeports:
        # route_localnet lets 127.0.0.1:<nodePort> be DNATed to a pod; it must not also let
        # other hosts or pods reach the host's loopback-only services (CVE-2020-8558).
        chains[("filter", FIREWALL)] = [
            "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT "
            '-m comment --comment "block martian localhost traffic" -j DROP'
        ]
    return Ruleset({key: tuple(rules) for key, rules in chains.items()})


def restore_text(
    old: Ruleset | None, new: Ruleset, existing: Mapping[str, Iterable[str]] | None = None
) -> str:
    """The `iptables-restore --noflush` input turning `old` into `new` ("" when nothing changes).

    Only chains whose rules differ are flushed and rewritten; chains of `old` (or, when `old` is
    None, grove chains that `existing` lists as present in the kernel) missing from `new` are
    flushed and deleted. With `old` None every chain of `new` is written.
    """
    out: list[str] = []
    for table in TABLES:
        changed = [
            chain
            for (t, chain), rules in new.chains.items()
            if t == table and (old is None or old.chains.get((t, chain)) != rules)
        ]
        if old is not None:
            before = {chain for (t, chain) in old.chains if t == table}
        else:
            before = {c for c in (existing or {}).get(table, ()) if c.startswith(PREFIX)}
        removed = sorted(c for c in before if (table, c) not in new.chains)
        if not changed and not removed:
            continue
        out.append(f"*{table}")
        out.extend(f":{chain} - [0:0]" for chain in [*changed, *removed])
        for chain in changed:
            out.extend(f"-A {chain} {rule}" for rule in new.chains[(table, chain)])
        out.extend(f"-X {chain}" for chain in removed)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def restore_steps(
    old: Ruleset | None, new: Ruleset, existing: Mapping[str, Iterable[str]] | None = None
) -> list[str]:
    """`restore_text`, split so that no frontend is ever left without a rule in between.

    A frontend losing its last endpoint moves from a DNAT (nat) to a REJECT (filter); one gaining
    its first moves back. Were the tables written one after the other, a packet could slip
    through between the two writes and follow the default route off the host. So when the
    rejections change, the filter table first gets the old and the new ones together (a DNATed
    packet never matches a rejection of the address it no longer has), then nat is written,
    then filter is trimmed to the new set.
    """
    if old is None or old.chains.get(("filter", FILTER)) == new.chains.get(("filter", FILTER)):
        text = restore_text(old, new, existing)
        return [text] if text else []
    before, after = old.rules("filter", FILTER), new.rules("filter", FILTER)
    union = Ruleset(dict(old.chains))
    union.chains[("filter", FILTER)] = before + tuple(r for r in after if r not in before)
    only_filter = Ruleset({k: v for k, v in union.chains.items() if k[0] == "filter"})
    steps = [
        restore_text(Ruleset({k: v for k, v in old.chains.items() if k[0] == "filter"}), only_filter),
        restore_text(
            Ruleset({k: v for k, v in old.chains.items() if k[0] == "nat"}),
            Ruleset({k: v for k, v in new.chains.items() if k[0] == "nat"}),
        ),
        restore_text(
            union, Ruleset({**union.chains, **{k: v for k, v in new.chains.items() if k[0] == "filter"}})
        ),
    ]
    return [s for s in steps if s]


def cleanup_text(existing: Mapping[str, Iterable[str]]) -> str:
    """`iptables-restore --noflush` input deleting every grove chain listed in `existing`
    (the jumps into them must be gone first)."""
    out: list[str] = []
    for table in TABLES:
        chains = sorted(c for c in existing.get(table, ()) if c.startswith(PREFIX))
        if not chains:
            continue
        out.append(f"*{table}")
        out.extend(f":{c} - [0:0]" for c in chains)
        out.extend(f"-X {c}" for c in chains)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""
