"""Unit tests of the service proxy's pure parts: Service/Endpoints -> service ports, the iptables
rules and their minimal rewrites, round robin and ClientIP affinity (checked by running the
generated nat rules through a small interpreter of the matches they use), load balancer address
allocation, and the ctnetlink wire format and stale-flow selection."""

from __future__ import annotations

import ipaddress
import shlex
import struct
from dataclasses import dataclass, field

import pytest

from node.proxy.conntrack import (
    CTA_TUPLE_ORIG,
    CTA_TUPLE_REPLY,
    IPPROTO_TCP,
    IPPROTO_UDP,
    Flow,
    Tuple,
    _nested,
    decode_flow,
    delete_request,
    dump_request,
    encode_tuple,
    messages,
)
from node.proxy.loadbalancer import AddressPool, allocate
from node.proxy.model import DEFAULT_AFFINITY_TIMEOUT, Endpoint, ServicePort, all_service_ports, service_ports
from node.proxy.proxier import stale_udp_flows
from node.proxy.rules import (
    FILTER,
    FIREWALL,
    NODEPORTS,
    SERVICES,
    RuleConfig,
    Ruleset,
    chain_name,
    compute_rules,
    endpoint_chain,
    restore_steps,
    restore_text,
    service_chain,
)

POD_CIDR = "10.88.0.0/16"


def svc(name="web", ns="default", ports=None, **spec) -> dict:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("clusterIP", "10.96.0.10")
    spec["ports"] = ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]
    status = spec.pop("status", {})
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec, "status": status}


def eps(name="web", ns="default", subsets=None) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "subsets": subsets or []}


def subset(ips, ports=(("http", 8080, "TCP"),), not_ready=()) -> dict:
    return {
        "addresses": [{"ip": ip} for ip in ips],
        "notReadyAddresses": [{"ip": ip} for ip in not_ready],
        "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
    }


def sp(endpoints=("10.88.0.2", "10.88.0.3", "10.88.0.4"), **kw) -> ServicePort:
    defaults = dict(
        namespace="default", name="web", port_name="http", protocol="TCP", port=80, cluster_ip="10.96.0.10"
    )
    defaults.update(kw)
    return ServicePort(endpoints=tuple(Endpoint(ip, 8080) for ip in endpoints), **defaults)


# --- model ---------------------------------------------------------------------------------------


def test_service_ports_match_endpoint_ports_by_name_and_skip_unready_addresses():
    service = svc(
        ports=[
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "sctp", "port": 9, "protocol": "SCTP"},
        ]
    )
    endpoints = eps(
        subsets=[
            subset(
                ["10.88.0.3", "10.88.0.2"],
                [("http", 8080, "TCP"), ("dns", 5353, "UDP")],
                not_ready=["10.88.0.9"],
            ),
            subset(["10.88.0.4"], [("http", 9090, "TCP")]),
        ]
    )
    ports = {p.port_name: p for p in service_ports(service, endpoints)}
    assert set(ports) == {"http", "dns"}
    assert ports["http"].endpoints == (
        Endpoint("10.88.0.2", 8080),
        Endpoint("10.88.0.3", 8080),
        Endpoint("10.88.0.4", 9090),
    )
    assert ports["dns"].protocol == "UDP"
    assert ports["dns"].endpoints == (Endpoint("10.88.0.2", 5353), Endpoint("10.88.0.3", 5353))
    assert ports["http"].id == "default/web:http"
    assert ports["http"].node_port is None and ports["http"].load_balancer_ips == ()


def test_service_ports_protocol_must_match_too():
    service = svc(ports=[{"name": "x", "port": 53, "protocol": "UDP"}])
    endpoints = eps(subsets=[subset(["10.88.0.2"], [("x", 53, "TCP")])])
    assert service_ports(service, endpoints)[0].endpoints == ()


def test_headless_and_external_name_services_are_not_proxied():
    assert service_ports(svc(clusterIP="None"), eps(subsets=[subset(["10.88.0.2"])])) == []
    assert service_ports(svc(type="ExternalName", externalName="example.org", clusterIP=None), None) == []


def test_load_balancer_and_node_port_fields_follow_the_type():
    ports = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]
    status = {"loadBalancer": {"ingress": [{"ip": "10.89.0.1"}, {"hostname": "lb.example"}]}}
    lb = service_ports(svc(type="LoadBalancer", ports=ports, status=status, externalIPs=["10.90.0.1"]), None)[
        0
    ]
    assert lb.node_port == 30080
    assert lb.load_balancer_ips == ("10.89.0.1",)
    assert lb.frontends == ("10.96.0.10", "10.90.0.1", "10.89.0.1")
    # A ClusterIP service keeps no node port or load balancer address even if the fields linger.
    plain = service_ports(svc(type="ClusterIP", ports=ports, status=status), None)[0]
    assert plain.node_port is None and plain.load_balancer_ips == ()


def test_affinity_timeout_defaults_to_kubernetes_value():
    assert (
        service_ports(svc(sessionAffinity="ClientIP"), None)[0].affinity_timeout == DEFAULT_AFFINITY_TIMEOUT
    )
    custom = svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}})
    assert service_ports(custom, None)[0].affinity_timeout == 30
    assert service_ports(svc(sessionAffinity="None"), None)[0].affinity_timeout is None


def test_unnamed_single_port_matches_unnamed_endpoint_port():
    service = svc(ports=[{"port": 80, "protocol": "TCP"}])
    endpoints = eps(
        subsets=[{"addresses": [{"ip": "10.88.0.2"}], "ports": [{"port": 8080, "protocol": "TCP"}]}]
    )
    (only,) = service_ports(service, endpoints)
    assert only.id == "default/web" and only.endpoints == (Endpoint("10.88.0.2", 8080),)


def test_all_service_ports_is_sorted_and_joins_endpoints_by_key():
    services = [svc("b"), svc("a", clusterIP="10.96.0.11")]
    endpoints = {"default/a": eps("a", subsets=[subset(["10.88.0.5"])])}
    ports = all_service_ports(services, endpoints)
    assert [p.name for p in ports] == ["a", "b"]
    assert ports[0].endpoints and not ports[1].endpoints


# --- rules ---------------------------------------------------------------------------------------


def test_chain_names_are_stable_unique_and_short():
    a, b = sp(), sp(protocol="UDP")
    assert service_chain(a) == service_chain(sp())
    assert service_chain(a) != service_chain(b)
    assert endpoint_chain(a, "10.88.0.2", 8080) != endpoint_chain(a, "10.88.0.3", 8080)
    for name in (service_chain(a), endpoint_chain(a, "10.88.0.2", 8080), chain_name("SVC", "x" * 300)):
        assert len(name) <= 28 and name.startswith("GROVE-")


def test_rules_for_a_service_with_endpoints():
    port = sp(node_port=30080, external_ips=("10.90.0.1",), load_balancer_ips=("10.89.0.1",))
    rules = compute_rules([port], RuleConfig(pod_cidr=POD_CIDR))
    svc_chain = service_chain(port)
    dispatch = rules.rules("nat", SERVICES)
    for ip in ("10.96.0.10", "10.90.0.1", "10.89.0.1"):
        assert any(
            r.startswith(f"-d {ip}/32 -p tcp -m tcp --dport 80 ") and r.endswith(f"-j {svc_chain}")
            for r in dispatch
        )
    assert dispatch[-1].endswith(f"-j {NODEPORTS}") and "--dst-type LOCAL" in dispatch[-1]
    assert rules.rules("nat", NODEPORTS) == (
        f'-p tcp -m tcp --dport 30080 -m comment --comment "default/web:http" -j {svc_chain}',
    )
    chain = rules.rules("nat", svc_chain)
    assert chain[0] == f"! -s {POD_CIDR} -j MARK --set-xmark 0x4000/0x4000"
    assert "--every 3" in chain[1] and "--every 2" in chain[2] and "statistic" not in chain[3]
    sep = rules.rules("nat", endpoint_chain(port, "10.88.0.2", 8080))
    assert sep == (
        "-s 10.88.0.2/32 -j MARK --set-xmark 0x4000/0x4000",
        "-p tcp -m tcp -j DNAT --to-destination 10.88.0.2:8080",
    )
    assert rules.rules("filter", FILTER) == ()


def test_a_service_without_endpoints_is_rejected_on_every_frontend():
    tcp = sp(endpoints=(), node_port=30080, load_balancer_ips=("10.89.0.1",))
    udp = sp(endpoints=(), protocol="UDP", port_name="dns", port=53)
    rules = compute_rules([tcp, udp])
    reject = rules.rules("filter", FILTER)
    assert any(
        r.startswith("-d 10.96.0.10/32 -p tcp -m tcp --dport 80 ") and r.endswith("--reject-with tcp-reset")
        for r in reject
    )
    assert any(r.startswith("-d 10.89.0.1/32 -p tcp") for r in reject)
    assert any("--dst-type LOCAL -p tcp -m tcp --dport 30080" in r for r in reject)
    assert any(
        r.startswith("-d 10.96.0.10/32 -p udp -m udp --dport 53 ") and r.endswith("icmp-port-unreachable")
        for r in reject
    )
    assert not any(chain.startswith("GROVE-SVC-") for _, chain in rules.chains)
    assert len(rules.rules("nat", SERVICES)) == 1  # only the node-port jump


def test_localhost_node_ports_can_be_turned_off():
    on = compute_rules([], RuleConfig(localhost_nodeports=True))
    off = compute_rules([], RuleConfig(localhost_nodeports=False))
    assert on.rules("filter", FIREWALL) and not off.rules("filter", FIREWALL)
    assert off.rules("nat", SERVICES)[0].startswith("! -d 127.0.0.0/8 ")


def test_restore_text_rewrites_only_changed_chains_and_deletes_stale_ones():
    a = sp()
    b = sp(name="api", cluster_ip="10.96.0.20", endpoints=("10.88.0.7",))
    before = compute_rules([a, b])
    # b loses its endpoint 10.88.0.7 and gains 10.88.0.8: a's chains must not be touched.
    b2 = sp(name="api", cluster_ip="10.96.0.20", endpoints=("10.88.0.8",))
    after = compute_rules([a, b2])
    text = restore_text(before, after)
    declared = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    assert service_chain(b2) in declared
    assert endpoint_chain(b2, "10.88.0.8", 8080) in declared
    assert endpoint_chain(b, "10.88.0.7", 8080) in declared  # flushed, then deleted
    assert f"-X {endpoint_chain(b, '10.88.0.7', 8080)}" in text.splitlines()
    assert not declared & {service_chain(a), *(endpoint_chain(a, e.ip, e.port) for e in a.endpoints)}
    assert SERVICES not in declared  # api's cluster IP did not change
    assert text.startswith("*nat\n") and text.rstrip().endswith("COMMIT")
    assert restore_text(after, compute_rules([a, b2])) == ""


def test_first_write_replaces_everything_and_removes_leftover_chains():
    rules = compute_rules([sp()])
    text = restore_text(None, rules, {"nat": {"GROVE-SVC-LEFTOVER", SERVICES, "DOCKER"}, "filter": set()})
    lines = text.splitlines()
    assert "-X GROVE-SVC-LEFTOVER" in lines
    assert not any("DOCKER" in line for line in lines)  # never touches chains that are not grove's
    assert sum(1 for line in lines if line.startswith(":")) == len(rules.chains) + 1
    assert "*filter" in lines


def apply_restore(state: dict[tuple[str, str], list[str]], text: str) -> None:
    """What `iptables-restore --noflush` does with our texts: declared chains are flushed (or
    created), -A appends, -X deletes."""
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            state[(table, line[1:].split()[0])] = []
        elif line.startswith("-A "):
            _, chain, rule = line.split(" ", 2)
            state[(table, chain)].append(rule)
        elif line.startswith("-X "):
            del state[(table, line[3:])]


def covered(state: dict[tuple[str, str], list[str]], ip: str) -> bool:
    rules = state.get(("nat", SERVICES), []) + state.get(("filter", FILTER), [])
    return any(r.startswith(f"-d {ip}/32 ") for r in rules)


@pytest.mark.parametrize("direction", ["losing", "gaining"])
def test_no_frontend_is_ever_left_without_a_rule_between_restore_steps(direction):
    served, empty = sp(), sp(endpoints=())
    other = sp(name="other", cluster_ip="10.96.0.99", endpoints=())
    before, after = (
        ([served, other], [empty, other]) if direction == "losing" else ([empty, other], [served, other])
    )
    old, new = compute_rules(before), compute_rules(after)
    state = {k: list(v) for k, v in old.chains.items()}
    steps = restore_steps(old, new)
    assert len(steps) == (3 if direction == "losing" else 2)  # gaining: no rejection to add first
    for text in steps:
        apply_restore(state, text)
        assert covered(state, "10.96.0.10") and covered(state, "10.96.0.99")
    assert state == {k: list(v) for k, v in new.chains.items()}
    # Without a change of rejections it is one step, the plain diff.
    assert restore_steps(new, compute_rules(after)) == []
    more = compute_rules([*after, sp(name="x", cluster_ip="10.96.0.77")])
    assert restore_steps(new, more) == [restore_text(new, more)]


# --- an interpreter for the nat rules, to check what the kernel will do with them -------------


@dataclass
class NatSim:
    """Runs connections through GROVE-SERVICES of a Ruleset the way netfilter's nat table does
    for a connection's first packet: nth counters per rule, `recent` lists per name, marks."""

    rules: Ruleset
    local: set[str] = field(default_factory=lambda: {"127.0.0.1", "10.88.0.1", "192.0.2.2"})
    now: float = 0.0
    counters: dict = field(default_factory=dict)
    recent: dict = field(default_factory=dict)

    def connect(self, src: str, dst: str, dport: int, proto: str = "tcp") -> tuple[str | None, bool]:
        """(DNAT destination or None, masquerade mark set)."""
        self.mark = False
        self.dnat = None
        self._chain(SERVICES, dict(src=src, dst=dst, dport=dport, proto=proto))
        return self.dnat, self.mark

    def _chain(self, chain: str, pkt: dict) -> bool:
        """True when a terminal target (DNAT) was reached."""
        for i, rule in enumerate(self.rules.rules("nat", chain)):
            target = self._match(chain, i, shlex.split(rule), pkt)
            if target is None:
                continue
            name, args = target
            if name == "MARK":
                self.mark = True
                continue
            if name == "RETURN":
                return False
            if name == "DNAT":
                self.dnat = args[args.index("--to-destination") + 1]
                return True
            if self._chain(name, pkt):
                return True
        return False

    def _match(self, chain: str, index: int, words: list[str], pkt: dict):
        negate = False
        i = 0
        while i < len(words):
            w = words[i]
            if w == "!":
                negate = True
                i += 1
                continue
            if w in ("-d", "-s"):
                net = ipaddress.ip_network(words[i + 1])
                ok = ipaddress.ip_address(pkt["dst" if w == "-d" else "src"]) in net
                i += 2
            elif w == "-p":
                ok = pkt["proto"] == words[i + 1]
                i += 2
            elif w == "--dport":
                ok = pkt["dport"] == int(words[i + 1])
                i += 2
            elif w == "-m":
                module = words[i + 1]
                i += 2
                if module == "addrtype":
                    assert words[i : i + 2] == ["--dst-type", "LOCAL"]
                    ok = pkt["dst"] in self.local
                    i += 2
                elif module == "comment":
                    ok = True
                    i += 2
                elif module == "statistic":
                    assert words[i : i + 2] == ["--mode", "nth"]
                    every = int(words[i + 3])
                    key = (chain, index)
                    # iptables starts the counter at the last packet, so the first one matches.
                    self.counters[key] = (self.counters.get(key, every - 1) + 1) % every
                    ok = self.counters[key] == 0
                    i += 6
                elif module == "recent":
                    name = words[words.index("--name") + 1]
                    table = self.recent.setdefault(name, {})
                    if "--rcheck" in words:
                        seconds = int(words[words.index("--seconds") + 1])
                        seen = table.get(pkt["src"])
                        ok = seen is not None and self.now - seen <= seconds
                        if ok:
                            table[pkt["src"]] = self.now
                    else:
                        table[pkt["src"]] = self.now
                        ok = True
                    while i < len(words) and words[i] != "-j":
                        i += 1
                else:
                    ok = True  # tcp/udp/mark modules: their options are handled on their own
            elif w == "-j":
                return words[i + 1], words[i + 2 :]
            else:
                i += 1
                continue
            if ok == negate:
                return None
            negate = False
        return None


def test_round_robin_hands_connections_out_in_turn():
    port = sp()
    sim = NatSim(compute_rules([port]))
    got = [sim.connect("10.88.0.50", "10.96.0.10", 80)[0] for _ in range(9)]
    assert sorted(set(got)) == ["10.88.0.2:8080", "10.88.0.3:8080", "10.88.0.4:8080"]
    assert got[:3] * 3 == got  # a fixed rotation, not a random spread
    assert got[:3] == [str(e) for e in port.endpoints]
    assert sim.connect("10.88.0.50", "10.96.0.10", 81) == (None, False)  # other port: untouched


def test_round_robin_is_shared_by_cluster_ip_and_node_port():
    sim = NatSim(compute_rules([sp(node_port=30080)]))
    got = [sim.connect("10.88.0.50", "10.96.0.10", 80)[0], sim.connect("10.88.0.50", "10.88.0.1", 30080)[0]]
    got.append(sim.connect("10.88.0.50", "127.0.0.1", 30080)[0])
    assert len(set(got)) == 3
    assert sim.connect("10.88.0.50", "10.20.0.1", 30080) == (None, False)  # not a local address


def test_masquerade_for_traffic_from_outside_the_pod_network_and_hairpin():
    sim = NatSim(compute_rules([sp(endpoints=("10.88.0.2",))]))
    assert sim.connect("10.88.0.50", "10.96.0.10", 80) == ("10.88.0.2:8080", False)
    assert sim.connect("192.0.2.2", "10.96.0.10", 80) == ("10.88.0.2:8080", True)
    assert sim.connect("10.88.0.2", "10.96.0.10", 80) == ("10.88.0.2:8080", True)  # to itself


def test_client_ip_affinity_sticks_until_the_timeout():
    sim = NatSim(compute_rules([sp(affinity_timeout=60)]))
    first = {
        client: sim.connect(client, "10.96.0.10", 80)[0]
        for client in ("10.88.0.50", "10.88.0.51", "10.88.0.52")
    }
    assert len(set(first.values())) == 3  # new clients still go round robin
    for _ in range(5):
        sim.now += 10
        for client, backend in first.items():
            assert sim.connect(client, "10.96.0.10", 80)[0] == backend
    sim.now += 61
    again = [sim.connect("10.88.0.50", "10.96.0.10", 80)[0] for _ in range(3)]
    assert again[1] == again[0] == again[2]  # sticky again, to whichever it got after expiry
    assert NatSim(compute_rules([sp()])).recent == {}


# --- load balancer addresses ------------------------------------------------------------------------


def test_address_pool_parsing():
    pool = AddressPool.parse(["10.89.0.0/30", "10.90.0.5-10.90.0.6,10.91.0.1/32"])
    assert list(pool.addresses()) == ["10.89.0.1", "10.89.0.2", "10.90.0.5", "10.90.0.6", "10.91.0.1"]
    assert "10.89.0.0" not in pool and "10.89.0.3" not in pool and "10.90.0.6" in pool and "bogus" not in pool
    assert not AddressPool.parse([])
    for bad in ("10.89.0.0/33", "10.0.0.9-10.0.0.1", "fe80::/64", "pool"):
        with pytest.raises(ValueError, match="load balancer pool"):
            AddressPool.parse([bad])


def lb(name, created, ips=(), requested=None, **spec) -> dict:
    spec = {"type": "LoadBalancer", **spec}
    if requested:
        spec["loadBalancerIP"] = requested
    return {
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
    }


def test_allocate_keeps_assignments_and_hands_out_the_lowest_free_address():
    pool = AddressPool.parse(["10.89.0.0/29"])
    services = [
        lb("a", "2024-01-01T00:00:00Z", ips=["10.89.0.2"]),
        lb("b", "2024-01-02T00:00:00Z"),
        lb("c", "2024-01-03T00:00:00Z", requested="10.89.0.5"),
        lb("d", "2024-01-04T00:00:00Z", requested="10.89.0.2"),  # taken by a
        lb("e", "2024-01-05T00:00:00Z", loadBalancerClass="example.com/other"),
        {"metadata": {"name": "f", "namespace": "default"}, "spec": {"type": "ClusterIP"}},
    ]
    assert allocate(services, pool) == {
        "default/a": "10.89.0.2",
        "default/b": "10.89.0.1",
        "default/c": "10.89.0.5",
        "default/d": None,
    }


def test_allocate_resolves_a_duplicate_in_favour_of_the_older_service():
    pool = AddressPool.parse(["10.89.0.0/29"])
    services = [
        lb("young", "2024-02-01T00:00:00Z", ips=["10.89.0.1"]),
        lb("old", "2024-01-01T00:00:00Z", ips=["10.89.0.1"]),
    ]
    assert allocate(services, pool) == {"default/old": "10.89.0.1", "default/young": "10.89.0.2"}


def test_allocate_reports_an_exhausted_pool_and_ignores_foreign_addresses():
    pool = AddressPool.parse(["10.89.0.1-10.89.0.1"])
    services = [lb("a", "1", ips=["192.0.2.50"]), lb("b", "2")]
    assert allocate(services, pool) == {"default/a": "10.89.0.1", "default/b": None}


# --- conntrack ----------------------------------------------------------------------------------------


def test_flow_round_trips_through_the_ctnetlink_wire_format():
    flow = Flow(
        Tuple("10.88.0.5", "10.96.0.10", 40000, 53, IPPROTO_UDP),
        Tuple("10.88.0.2", "10.88.0.5", 5353, 40000, IPPROTO_UDP),
    )
    body = _nested(CTA_TUPLE_ORIG, encode_tuple(flow.orig)) + _nested(
        CTA_TUPLE_REPLY, encode_tuple(flow.reply)
    )
    assert decode_flow(body) == flow
    assert flow.dnat and not Flow(flow.orig, Tuple("10.96.0.10", "10.88.0.5", 53, 40000, IPPROTO_UDP)).dnat
    ((kind, flags, seq, payload),) = list(messages(delete_request(flow, 7)))
    assert kind == (1 << 8) | 2 and seq == 7 and flags & 0x4  # ctnetlink DELETE, ACK requested
    assert decode_flow(payload[4:] + _nested(CTA_TUPLE_REPLY, encode_tuple(flow.reply))) == flow
    ((kind, flags, _, payload),) = list(messages(dump_request(1, IPPROTO_UDP)))
    assert kind == (1 << 8) | 1 and flags & 0x300 == 0x300 and struct.unpack("=BBH", payload[:4])[0] == 2


def udp_flow(src_port, dst, dport, backend, bport, proto=IPPROTO_UDP) -> Flow:
    return Flow(
        Tuple("10.88.0.5", dst, src_port, dport, proto), Tuple(backend, "10.88.0.5", bport, src_port, proto)
    )


def test_stale_udp_flows_after_endpoint_changes():
    dns = dict(protocol="UDP", port_name="dns", port=53, node_port=30053)
    old = [
        sp(endpoints=("10.88.0.2", "10.88.0.3"), **dns),
        sp(name="other", cluster_ip="10.96.0.50", endpoints=("10.88.0.2",), **{**dns, "node_port": None}),
        sp(name="new", cluster_ip="10.96.0.30", endpoints=(), **{**dns, "node_port": None}),
        sp(name="tcp", cluster_ip="10.96.0.40", endpoints=("10.88.0.9",)),
    ]
    new = [
        sp(endpoints=("10.88.0.3",), **dns),
        sp(name="other", cluster_ip="10.96.0.50", endpoints=("10.88.0.2",), **{**dns, "node_port": None}),
        sp(name="new", cluster_ip="10.96.0.30", endpoints=("10.88.0.7",), **{**dns, "node_port": None}),
    ]
    stale = stale_udp_flows(old, new)
    assert stale.gone == {(("10.96.0.10", 53), ("10.88.0.2", 8080)), ((None, 30053), ("10.88.0.2", 8080))}
    assert stale.fresh == {("10.96.0.30", 53)}  # TCP services never need any of this
    cases = {
        "to the endpoint that left": (udp_flow(4000, "10.96.0.10", 53, "10.88.0.2", 8080), True),
        "through the node port to it": (udp_flow(4001, "10.88.0.1", 30053, "10.88.0.2", 8080), True),
        "to the endpoint that stays": (udp_flow(4002, "10.96.0.10", 53, "10.88.0.3", 8080), False),
        "same endpoint, other service": (udp_flow(4003, "10.96.0.50", 53, "10.88.0.2", 8080), False),
        "straight to the pod": (udp_flow(4004, "10.88.0.2", 8080, "10.88.0.2", 8080), False),
        "never DNATed, first endpoint now": (udp_flow(4005, "10.96.0.30", 53, "10.96.0.30", 53), True),
        "TCP": (udp_flow(4006, "10.96.0.10", 53, "10.88.0.2", 8080, IPPROTO_TCP), False),
    }
    assert {name: stale.matches(flow) for name, (flow, _) in cases.items()} == {
        n: w for n, (_, w) in cases.items()
    }
    assert not stale_udp_flows(new, new)
