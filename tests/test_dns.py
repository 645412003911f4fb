"""Cluster DNS: the zone's answers (pure), the UDP/TCP server with forwarding to a real upstream
server on loopback, and `grove dns` as a process against a real API server, following Services
and Endpoints as they change."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord

from kvstore.localcluster import free_port
from node.dns import ClusterDNSServer, ClusterZone, bind_pair, parse_address, resolv_conf_nameservers
from tests import waiting
from tests.apiserver_fixture import ROOT, ApiServerProcess, apiserver  # noqa: F401 - pytest fixture

SERVICES = [
    {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}],
        },
    },
    {
        "metadata": {"name": "db", "namespace": "prod"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]},
    },
    {
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "example.org"},
    },
    {
        "metadata": {"name": "alias", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"},
    },
]
ENDPOINTS = [
    {
        "metadata": {"name": "db", "namespace": "prod"},
        "subsets": [
            {
                "addresses": [{"ip": "10.88.0.5", "hostname": "db-0"}, {"ip": "10.88.0.6"}],
                "notReadyAddresses": [{"ip": "10.88.0.7", "hostname": "db-2"}],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            }
        ],
    }
]


@pytest.fixture
def zone() -> ClusterZone:
    z = ClusterZone()
    z.load(SERVICES, ENDPOINTS)
    return z


def ask(zone: ClusterZone, name: str, qtype: str = "A") -> DNSRecord | None:
    return zone.answer(DNSRecord.question(name, qtype))


def values(reply: DNSRecord, qtype: str | None = None) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if qtype is None or QTYPE.get(rr.rtype) == qtype]


def test_cluster_ip_service_has_an_a_record(zone):
    reply = ask(zone, "web.default.svc.cluster.local")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa
    assert values(reply) == ["10.96.0.10"]
    assert reply.rr[0].ttl == 5
    # Names are case-insensitive, and the answer keeps the asker's spelling.
    upper = ask(zone, "WEB.Default.SVC.cluster.local.")
    assert values(upper) == ["10.96.0.10"] and str(upper.rr[0].rname) == "WEB.Default.SVC.cluster.local."


def test_headless_service_answers_ready_endpoints_and_their_hostnames(zone):
    assert sorted(values(ask(zone, "db.prod.svc.cluster.local"))) == ["10.88.0.5", "10.88.0.6"]
    assert values(ask(zone, "db-0.db.prod.svc.cluster.local")) == ["10.88.0.5"]
    assert values(ask(zone, "10-88-0-6.db.prod.svc.cluster.local")) == ["10.88.0.6"]
    assert ask(zone, "db-2.db.prod.svc.cluster.local").header.rcode == RCODE.NXDOMAIN  # not ready


def test_srv_records_for_named_ports(zone):
    reply = ask(zone, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert values(reply) == ["0 100 80 web.default.svc.cluster.local."]
    assert [str(rr.rdata) for rr in reply.ar] == ["10.96.0.10"]
    headless = ask(zone, "_pg._tcp.db.prod.svc.cluster.local", "SRV")
    assert sorted(values(headless)) == [
        "0 50 5432 10-88-0-6.db.prod.svc.cluster.local.",
        "0 50 5432 db-0.db.prod.svc.cluster.local.",
    ]
    assert sorted(str(rr.rdata) for rr in headless.ar) == ["10.88.0.5", "10.88.0.6"]
    # The unnamed port 81 has no SRV name; asking the service itself lists the named ports.
    assert values(ask(zone, "web.default.svc.cluster.local", "SRV")) == [
        "0 100 80 web.default.svc.cluster.local."
    ]
    assert ask(zone, "_http._udp.web.default.svc.cluster.local", "SRV").header.rcode == RCODE.NXDOMAIN


def test_unknown_cluster_names_are_nxdomain_and_missing_types_are_nodata(zone):
    for name in (
        "nope.default.svc.cluster.local",
        "web.other.svc.cluster.local",
        "google.com.default.svc.cluster.local",
    ):
        reply = ask(zone, name)
        assert reply.header.rcode == RCODE.NXDOMAIN, name
        assert QTYPE.get(reply.auth[0].rtype) == "SOA"
    nodata = ask(zone, "web.default.svc.cluster.local", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr and nodata.auth
    # Empty non-terminals exist: NOERROR without answers.
    assert ask(zone, "default.svc.cluster.local").header.rcode == RCODE.NOERROR


def test_external_name_is_a_cname(zone):
    reply = ask(zone, "ext.default.svc.cluster.local")
    assert values(reply) == ["example.org."]
    # A CNAME into the cluster is followed at once.
    assert values(ask(zone, "alias.default.svc.cluster.local")) == [
        "web.default.svc.cluster.local.",
        "10.96.0.10",
    ]


def test_pod_names_and_reverse_lookups(zone):
    assert values(ask(zone, "10-88-0-9.default.pod.cluster.local")) == ["10.88.0.9"]
    assert values(ask(zone, "10.0.96.10.in-addr.arpa", "PTR")) == ["web.default.svc.cluster.local."]
    assert values(ask(zone, "5.0.88.10.in-addr.arpa", "PTR")) == ["db-0.db.prod.svc.cluster.local."]
    assert ask(zone, "1.2.0.192.in-addr.arpa", "PTR") is None  # not ours: forwarded
    assert ask(zone, "example.org") is None


def test_zone_follows_reloads(zone):
    zone.load(SERVICES[1:], [])
    assert ask(zone, "web.default.svc.cluster.local").header.rcode == RCODE.NXDOMAIN
    assert values(ask(zone, "db.prod.svc.cluster.local")) == []


def test_address_parsing_and_resolv_conf(tmp_path):
    assert parse_address("10.88.0.1:5353") == ("10.88.0.1", 5353)
    assert parse_address("10.88.0.1") == ("10.88.0.1", 53)
    assert parse_address("[::1]:53") == ("::1", 53)
    for bad in ("dns.local:53", "10.0.0.1:99999"):
        with pytest.raises(ValueError):
            parse_address(bad)
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch example.org\nnameserver 10.0.0.2\nnameserver bogus\nnameserver ::1\n")
    assert resolv_conf_nameservers(str(conf)) == [("10.0.0.2", 53), ("::1", 53)]


# --- the server over real sockets ---------------------------------------------------------------


class Upstream:
    """A real DNS server on loopback standing in for the host's resolver: every A query gets
    192.0.2.<n>; `big.example` gets enough TXT records to need TCP."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []

    def answer(self, data: bytes, proto: str) -> bytes:
        request = DNSRecord.parse(data)
        name = str(request.q.qname)
        self.queries.append((name, proto))
        reply = request.reply()
        if name == "big.example.":
            for i in range(40):
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT("x" * 60 + str(i)), ttl=60))
        else:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(f"192.0.2.{len(self.queries)}"), ttl=60))
        packed = reply.pack()
        if proto == "udp" and len(packed) > 512:
            packed = reply.truncate().pack()
        return packed

    async def start(self) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        upstream = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                self.transport.sendto(upstream.answer(data, "udp"), addr)

        udp, tcp = bind_pair("127.0.0.1", 0)
        self.udp, _ = await loop.create_datagram_endpoint(Proto, sock=udp)
        port = udp.getsockname()[1]

        async def serve(reader, writer):
            (n,) = struct.unpack("!H", await reader.readexactly(2))
            reply = self.answer(await reader.readexactly(n), "tcp")
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
            writer.close()

        tcp.listen(16)
        tcp.setblocking(False)
        self.tcp = await asyncio.start_server(serve, sock=tcp)
        return "127.0.0.1", port

    async def stop(self) -> None:
        self.udp.close()
        self.tcp.close()
        await self.tcp.wait_closed()


async def udp_query(addr, name, qtype="A", raw: bytes | None = None) -> DNSRecord:
    loop = asyncio.get_running_loop()
    data = raw or DNSRecord.question(name, qtype).pack()
    done = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, d, a):
            if not done.done():
                done.set_result(d)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=addr)
    try:
        transport.sendto(data)
        return DNSRecord.parse(await asyncio.wait_for(done, 5))
    finally:
        transport.close()


async def tcp_query(addr, name, qtype="A") -> DNSRecord:
    reader, writer = await asyncio.open_connection(*addr)
    data = DNSRecord.question(name, qtype).pack()
    writer.write(struct.pack("!H", len(data)) + data)
    (n,) = struct.unpack("!H", await reader.readexactly(2))
    reply = DNSRecord.parse(await reader.readexactly(n))
    writer.close()
    return reply


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_server_answers_cluster_names_and_forwards_the_rest(zone):
    async def scenario():
        upstream = Upstream()
        up_addr = await upstream.start()
        server = ClusterDNSServer(zone, [("127.0.0.1", 0)], [up_addr], timeout=1.0)
        await server.start()
        addr = server.bound[0]
        try:
            assert values(await udp_query(addr, "web.default.svc.cluster.local")) == ["10.96.0.10"]
            assert values(await tcp_query(addr, "web.default.svc.cluster.local")) == ["10.96.0.10"]
            assert (await udp_query(addr, "nope.default.svc.cluster.local")).header.rcode == RCODE.NXDOMAIN
            assert upstream.queries == []  # cluster names never leave the node
            forwarded = await udp_query(addr, "example.org")
            assert values(forwarded) == ["192.0.2.1"] and upstream.queries == [("example.org.", "udp")]
            assert values(await tcp_query(addr, "example.net")) == ["192.0.2.2"]
            assert upstream.queries[-1] == ("example.net.", "tcp")
            # A truncated answer reaches the UDP client truncated; over TCP it comes whole.
            big = await udp_query(addr, "big.example", "TXT")
            assert upstream.queries[-1] == ("big.example.", "udp")
            assert big.header.tc == 1 and len(big.rr) < 40
            assert len((await tcp_query(addr, "big.example", "TXT")).rr) == 40
            assert upstream.queries[-1] == ("big.example.", "tcp")
            # ExternalName: the CNAME, then its target resolved upstream.
            ext = await udp_query(addr, "ext.default.svc.cluster.local")
            assert values(ext)[0] == "example.org." and values(ext, "A")[0].startswith("192.0.2.")
            bad = await udp_query(addr, "", raw=b"\x12\x34" + b"\x00" * 10 + b"\xff")
            assert bad.header.rcode == RCODE.FORMERR and bad.header.id == 0x1234
            assert server.stats.answered >= 4 and server.stats.forwarded >= 4
        finally:
            await server.stop()
            await upstream.stop()

    run(scenario())


def test_server_says_servfail_when_no_upstream_answers(zone):
    async def scenario():
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dead.bind(("127.0.0.1", 0))  # bound, never answers
        server = ClusterDNSServer(zone, [("127.0.0.1", 0)], [dead.getsockname()], timeout=0.2)
        await server.start()
        try:
            reply = await udp_query(server.bound[0], "example.org")
            assert reply.header.rcode == RCODE.SERVFAIL
            # The zone still answers.
            assert values(await udp_query(server.bound[0], "web.default.svc.cluster.local")) == ["10.96.0.10"]
        finally:
            await server.stop()
            dead.close()

    run(scenario())


def test_server_never_forwards_to_itself(zone):
    server = ClusterDNSServer(zone, [("10.88.0.1", 53)], [("10.88.0.1", 53), ("10.0.0.2", 53)])
    assert server.upstreams == [("10.0.0.2", 53)]


# --- `grove dns` against a real API server ------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def dns_process(apiserver: ApiServerProcess, tmp_path) -> Iterator[tuple[tuple[str, int], subprocess.Popen]]:  # noqa: F811
    port = free_port()
    log = open(tmp_path / "dns.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.proxy_cli", "dns", "--server", apiserver.url,
         "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9"],
        stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
    )  # fmt: skip
    try:
        yield ("127.0.0.1", port), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def sync_query(addr, name, qtype="A") -> DNSRecord | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(DNSRecord.question(name, qtype).pack(), addr)
        try:
            return DNSRecord.parse(s.recv(4096))
        except TimeoutError:
            return None


def nxdomain(reply: DNSRecord | None) -> bool:
    """The server answered that the name does not exist (a timeout is no answer)."""
    return reply is not None and reply.header.rcode == RCODE.NXDOMAIN


def wait_answer(addr, name, want, qtype="A", timeout=15.0):
    last = [None]

    def answered():
        last[0] = got = sync_query(addr, name, qtype)
        return got if got is not None and sorted(values(got, qtype)) == sorted(want) else None

    return waiting.wait_for(
        answered, f"{name} {qtype} to be {want}", timeout, detail=lambda: f"last: {last[0]}"
    )


def api(server: ApiServerProcess, method: str, path: str, body=None, ctype="application/json"):
    data = json.dumps(body) if body is not None else None
    r = requests.request(method, server.url + path, data=data, headers={"Content-Type": ctype}, timeout=10)
    assert r.status_code < 300, r.text
    return r.json()


def test_grove_dns_follows_services_and_endpoints(apiserver, dns_process):  # noqa: F811
    addr, proc = dns_process
    ns = "dnstest"
    api(apiserver, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    svc = api(apiserver, "POST", f"/api/v1/namespaces/{ns}/services",
              {"metadata": {"name": "web"}, "spec": {"ports": [{"name": "http", "port": 80}]}})  # fmt: skip
    cluster_ip = svc["spec"]["clusterIP"]
    wait_answer(addr, f"web.{ns}.svc.cluster.local", [cluster_ip])
    wait_answer(
        addr, f"_http._tcp.web.{ns}.svc.cluster.local", [f"0 100 80 web.{ns}.svc.cluster.local."], "SRV"
    )
    # A headless service: its A records follow the ready endpoints.
    api(apiserver, "POST", f"/api/v1/namespaces/{ns}/services",
        {"metadata": {"name": "hl"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})  # fmt: skip
    api(apiserver, "POST", f"/api/v1/namespaces/{ns}/endpoints",
        {"metadata": {"name": "hl"}, "subsets": [{"addresses": [{"ip": "10.88.0.5"}, {"ip": "10.88.0.6"}],
                                                  "ports": [{"port": 80}]}]})  # fmt: skip
    wait_answer(addr, f"hl.{ns}.svc.cluster.local", ["10.88.0.5", "10.88.0.6"])
    api(apiserver, "PATCH", f"/api/v1/namespaces/{ns}/endpoints/hl",
        {"subsets": [{"addresses": [{"ip": "10.88.0.6"}], "notReadyAddresses": [{"ip": "10.88.0.5"}], "ports": [{"port": 80}]}]},
        "application/merge-patch+json")  # fmt: skip
    wait_answer(addr, f"hl.{ns}.svc.cluster.local", ["10.88.0.6"])
    api(apiserver, "DELETE", f"/api/v1/namespaces/{ns}/services/web")
    waiting.wait_for(
        lambda: nxdomain(sync_query(addr, f"web.{ns}.svc.cluster.local")),
        f"web.{ns} to go after its deletion",
        15,
    )
    assert proc.poll() is None
