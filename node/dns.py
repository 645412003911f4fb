"""Cluster DNS: names for Services, served from the API's Services and Endpoints (CoreDNS's job).

Answers, under the cluster domain (default `cluster.local`), the records Kubernetes' DNS
specification lists:

    <svc>.<ns>.svc.<domain>               A      the cluster IP; for a headless service, the ready
                                                 endpoint IPs; ExternalName: CNAME
    <host>.<svc>.<ns>.svc.<domain>        A      a headless service's endpoint by hostname, or by
                                                 its dashed IP (10-88-0-5)
    _<port>._<proto>.<svc>.<ns>.svc...    SRV    named ports (one per endpoint when headless)
    <a-b-c-d>.<ns>.pod.<domain>           A      pod names by IP, as kube-dns' "pods insecure"
    <reversed IP>.in-addr.arpa            PTR    cluster IPs and headless endpoints

Any other name under the domain is NXDOMAIN (a name that exists without the asked type: NOERROR,
no answer, SOA), which is what makes `ndots:5` search lists cheap. Everything else — including PTR
queries for addresses that are not the cluster's — is forwarded to the host's resolvers from
/etc/resolv.conf (over UDP or TCP, as the query came). dnslib does the wire
format; `ClusterZone` is pure (objects in, answers out) and the server around it is asyncio UDP +
TCP on an address pods can reach, bound with IP_FREEBIND so it can start before the bridge exists.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    A,
    DNSError,
    DNSHeader,
    DNSRecord,
)

from orchestrator.apiclient import ENDPOINTS, SERVICES, AlreadyExists, ApiClient, NotFound
from orchestrator.watchers import InformerFactory

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
DEFAULT_DOMAIN = "cluster.local"
DEFAULT_TTL = 5  # seconds, as CoreDNS's kubernetes plugin
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record of the zone: type name and its rdata fields."""

    rtype: str  # A, AAAA, CNAME, SRV, PTR
    value: str  # address, or target name (absolute, no trailing dot)
    port: int = 0
    weight: int = 0


def _labels(name: str) -> str:
    return name.rstrip(".").lower()


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _valid_ip(value: Any) -> str | None:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        return None


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


@dataclass
class ClusterZone:
    """The cluster's DNS records, rebuilt from Services and Endpoints with `load`."""

    domain: str = DEFAULT_DOMAIN
    ttl: int = DEFAULT_TTL
    records: dict[str, list[Record]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # every existing name, empty non-terminals too
    ptr: dict[str, str] = field(default_factory=dict)  # reverse name -> target
    serial: int = 1

    def __post_init__(self) -> None:
        self.domain = _labels(self.domain)

    # --- building -----------------------------------------------------------------------------

    def load(self, services: Iterable[Obj], endpoints: Iterable[Obj]) -> None:
        """Replace the records with those of these objects."""
        eps = {}
        for ep in endpoints:
            meta = ep.get("metadata") or {}
            eps[(meta.get("namespace"), meta.get("name"))] = ep
        records: dict[str, list[Record]] = {}
        ptr: dict[str, str] = {}
        for svc in services:
            meta = svc.get("metadata") or {}
            ns, name = meta.get("namespace"), meta.get("name")
            if not ns or not name:
                continue
            self._add_service(
                svc, eps.get((ns, name)), f"{name}.{ns}.svc.{self.domain}".lower(), records, ptr
            )
        names = {self.domain, f"svc.{self.domain}", f"pod.{self.domain}"}
        for n in records:
            parts = n.split(".")
            for i in range(len(parts)):
                suffix = ".".join(parts[i:])
                names.add(suffix)
                if suffix == self.domain:
                    break
        self.records, self.ptr, self.names = records, ptr, names
        self.serial += 1

    def _add_service(
        self, svc: Obj, ep: Obj | None, base: str, records: dict[str, list[Record]], ptr: dict[str, str]
    ) -> None:
        spec = svc.get("spec") or {}
        add = lambda n, r: records.setdefault(n, []).append(r)  # noqa: E731
        records.setdefault(base, [])
        if spec.get("type") == "ExternalName":
            if spec.get("externalName"):
                add(base, Record("CNAME", _labels(spec["externalName"])))
            return
        ports = [p for p in spec.get("ports") or () if isinstance(p, Mapping)]
        cluster_ip = spec.get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            ips = [ip for ip in (_valid_ip(i) for i in spec.get("clusterIPs") or [cluster_ip]) if ip]
            for ip in ips:
                add(base, Record("AAAA" if ":" in ip else "A", ip))
                ptr[reverse_name(ip)] = base
            for p in ports:
                if p.get("name") and isinstance(p.get("port"), int):
                    srv = Record("SRV", base, port=p["port"], weight=100)
                    add(f"_{p['name']}._{str(p.get('protocol') or 'TCP').lower()}.{base}".lower(), srv)
                    add(base, srv)
            return
        # Headless: the ready endpoints themselves.
        for subset in (ep or {}).get("subsets") or ():
            if not isinstance(subset, Mapping):
                continue
            hosts = []
            for address in subset.get("addresses") or ():
                ip = _valid_ip(address.get("ip")) if isinstance(address, Mapping) else None
                if not ip:
                    continue
                host = f"{str(address.get('hostname') or _dashed(ip)).lower()}.{base}"
                hosts.append(host)
                kind = "AAAA" if ":" in ip else "A"
                add(base, Record(kind, ip))
                add(host, Record(kind, ip))
                ptr.setdefault(reverse_name(ip), host)
            for p in subset.get("ports") or ():
                if not isinstance(p, Mapping) or not p.get("name") or not isinstance(p.get("port"), int):
                    continue
                name = f"_{p['name']}._{str(p.get('protocol') or 'TCP').lower()}.{base}".lower()
                weight = max(1, 100 // max(1, len(hosts)))
                for host in hosts:
                    srv = Record("SRV", host, port=p["port"], weight=weight)
                    add(name, srv)
                    add(base, srv)

    # --- answering ------------------------------------------------------------------------------

    def is_cluster_name(self, qname: str) -> bool:
        name = _labels(qname)
        return name == self.domain or name.endswith("." + self.domain)

    def _pod_record(self, name: str) -> Record | None:
        # a-b-c-d.<ns>.pod.<domain>
        suffix = f".pod.{self.domain}"
        if not name.endswith(suffix):
            return None
        parts = name[: -len(suffix)].split(".")
        if len(parts) != 2:
            return None
        ip = _valid_ip(parts[0].replace("-", "."))
        return Record("A", ip) if ip and ":" not in ip else None

    def soa(self) -> RR:
        return RR(
            self.domain + ".",
            QTYPE.SOA,
            ttl=self.ttl,
            rdata=SOA(
                f"ns.dns.{self.domain}.",
                f"hostmaster.{self.domain}.",
                (self.serial, 7200, 1800, 86400, self.ttl),
            ),
        )

    def _rr(self, owner: Any, rec: Record) -> RR:
        if rec.rtype == "A":
            return RR(owner, QTYPE.A, ttl=self.ttl, rdata=A(rec.value))
        if rec.rtype == "AAAA":
            return RR(owner, QTYPE.AAAA, ttl=self.ttl, rdata=AAAA(rec.value))
        if rec.rtype == "CNAME":
            return RR(owner, QTYPE.CNAME, ttl=self.ttl, rdata=CNAME(rec.value + "."))
        if rec.rtype == "SRV":
            return RR(owner, QTYPE.SRV, ttl=self.ttl, rdata=SRV(0, rec.weight, rec.port, rec.value + "."))
        return RR(owner, QTYPE.PTR, ttl=self.ttl, rdata=PTR(rec.value + "."))

    def answer(self, request: DNSRecord) -> DNSRecord | None:
        """The reply for a query this zone is authoritative for, or None to forward it."""
        if not request.questions:
            return None
        q = request.q
        name = _labels(str(q.qname))
        qtype = QTYPE.get(q.qtype)
        if name.endswith((".in-addr.arpa", ".ip6.arpa")):
            target = self.ptr.get(name)
            if target is None:
                return None
            reply = request.reply()
            if qtype in ("PTR", "ANY"):
                reply.add_answer(self._rr(q.qname, Record("PTR", target)))
            return reply
        if not self.is_cluster_name(name):
            return None
        reply = request.reply()
        found = self.records.get(name)
        if found is None:
            pod = self._pod_record(name)
            found = [pod] if pod else None
        if found is None and name not in self.names:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(self.soa())
            return reply
        found = found or []
        cname = next((r for r in found if r.rtype == "CNAME"), None)
        if cname is not None and qtype != "CNAME":
            reply.add_answer(self._rr(q.qname, cname))
            if self.is_cluster_name(cname.value):
                # Follow a CNAME inside the cluster ourselves; outside, the server asks upstream.
                for rec in self.records.get(cname.value, ()):
                    if rec.rtype == qtype:
                        reply.add_answer(self._rr(cname.value + ".", rec))
            return reply
        matches = [r for r in found if qtype == "ANY" or r.rtype == qtype]
        for rec in matches:
            reply.add_answer(self._rr(q.qname, rec))
        for rec in matches:
            if rec.rtype == "SRV":
                for target in self.records.get(rec.value, ()):
                    if target.rtype in ("A", "AAAA"):
                        reply.add_ar(self._rr(rec.value + ".", target))
        if not matches:
            reply.add_auth(self.soa())
        return reply


# --- upstream resolvers ---------------------------------------------------------------------------


def parse_address(text: str, default_port: int = 53, allow_zero: bool = False) -> tuple[str, int]:
    """`10.88.0.1:53`, `10.88.0.1` or `[::1]:53` -> (host, port); ValueError when malformed.
    With `allow_zero`, port 0 (pick a free one) is accepted."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if _valid_ip(host) is None:
        raise ValueError(f"{text!r} is not an IP address (with an optional :port)")
    number = int(port) if port else default_port
    if not (0 if allow_zero else 1) <= number < 65536:
        raise ValueError(f"port {port} in {text!r} is out of range")
    return host, number


def resolv_conf_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The nameservers a resolv.conf lists (port 53)."""
    out = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and _valid_ip(parts[1]):
                    out.append((parts[1], 53))
    except OSError as e:
        log.warning("cannot read %s (%s): names outside the cluster will fail", path, e)
    return out


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == self.query_id and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _ask_udp(data: bytes, server: tuple[str, int], timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    query_id = struct.unpack("!H", data[:2])[0]
    transport, proto = await loop.create_datagram_endpoint(lambda: _UdpExchange(query_id), remote_addr=server)
    try:
        transport.sendto(data)
        return await asyncio.wait_for(proto.done, timeout)
    finally:
        transport.close()


async def _ask_tcp(data: bytes, server: tuple[str, int], timeout: float) -> bytes:
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(*server)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            return await reader.readexactly(length)
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)


# --- the server -------------------------------------------------------------------------------------


@dataclass
class DNSStats:
    queries: int = 0
    answered: int = 0  # from the cluster zone
    forwarded: int = 0
    failed: int = 0


class ClusterDNSServer:
    """UDP + TCP DNS on `listen` addresses: the zone first, upstream resolvers for the rest."""

    def __init__(
        self,
        zone: ClusterZone,
        listen: Sequence[tuple[str, int]],
        upstreams: Sequence[tuple[str, int]] = (),
        timeout: float = 2.0,
    ) -> None:
        self.zone = zone
        self.listen = list(listen)
        own = set(self.listen)
        self.upstreams = [u for u in upstreams if u not in own]
        self.timeout = timeout
        self.stats = DNSStats()
        self.bound: list[tuple[str, int]] = []  # actual (host, port) per listen address
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[asyncio.base_events.Server] = []
        self.before_query: Any = None  # a callable run before answering (lazy zone rebuilds)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self.listen:
            udp, tcp = bind_pair(host, port)
            port = udp.getsockname()[1]
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpServer(self), sock=udp)
            self._transports.append(transport)
            tcp.listen(128)
            tcp.setblocking(False)
            self._servers.append(await asyncio.start_server(self._serve_tcp, sock=tcp))
            self.bound.append((host, port))
            log.info("cluster DNS for %s listening on %s:%d (UDP, TCP)", self.zone.domain, host, port)

    async def stop(self) -> None:
        for t in self._transports:
            t.close()
        for s in self._servers:
            s.close()
            await s.wait_closed()
        self._transports.clear()
        self._servers.clear()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                reply = await self.handle(data, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        finally:
            writer.close()

    async def handle(self, data: bytes, tcp: bool = False) -> bytes | None:
        """The reply to one query message (None: drop it)."""
        self.stats.queries += 1
        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            return _formerr(data)
        if request.header.qr or not request.questions:
            return _formerr(data)
        if self.before_query is not None:
            self.before_query()
        reply = self.zone.answer(request)
        if reply is not None:
            self.stats.answered += 1
            await self._chase_external_cname(request, reply)
            return self._finish(request, reply, tcp)
        self.stats.forwarded += 1
        return await self.forward(data, tcp) or self._servfail(request)

    async def _chase_external_cname(self, request: DNSRecord, reply: DNSRecord) -> None:
        """An ExternalName service answers with a CNAME out of the cluster; resolve its target
        upstream as a recursive resolver would."""
        if not reply.rr or QTYPE.get(request.q.qtype) not in ("A", "AAAA"):
            return
        last = reply.rr[-1]
        if last.rtype != QTYPE.CNAME or self.zone.is_cluster_name(str(last.rdata.label)):
            return
        sub = DNSRecord.question(str(last.rdata.label), QTYPE.get(request.q.qtype)).pack()
        raw = await self.forward(sub, False)
        if raw and len(raw) > 2 and raw[2] & 0x02:  # truncated: this answer is ours to complete
            raw = await self.forward(sub, True)
        if raw:
            try:
                for rr in DNSRecord.parse(raw).rr:
                    reply.add_answer(rr)
            except DNSError:
                pass

    def _finish(self, request: DNSRecord, reply: DNSRecord, tcp: bool) -> bytes:
        opt = next((r for r in request.ar if r.rtype == QTYPE.OPT), None)
        limit = 512
        if opt is not None:
            limit = max(512, min(int(opt.rclass), 4096))
            reply.add_ar(EDNS0(udp_len=limit))
        packed = reply.pack()
        if not tcp and len(packed) > limit:
            packed = reply.truncate().pack()
        return packed

    def _servfail(self, request: DNSRecord) -> bytes:
        self.stats.failed += 1
        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply.pack()

    async def forward(self, data: bytes, tcp: bool) -> bytes | None:
        """Ask the upstream resolvers in turn; the first answer (None if none answers)."""
        for server in self.upstreams:
            try:
                # The query goes on as it came, EDNS buffer size included: a truncated answer
                # reaches a UDP client truncated, and it asks again over TCP, as it would anyway.
                if tcp:
                    return await _ask_tcp(data, server, self.timeout)
                return await _ask_udp(data, server, self.timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("upstream %s:%d failed: %s", *server, e)
        return None


def bind_pair(host: str, port: int, attempts: int = 50) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to one address and port (port 0: a free number both take)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(attempts if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for s in (udp, tcp):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET:
                    # Bind even before the address exists (the bridge may come up after us).
                    s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            udp.bind((host, port))
            tcp.bind((host, udp.getsockname()[1]))
            return udp, tcp
        except OSError as e:
            udp.close()
            tcp.close()
            if port == 0 and e.errno == errno.EADDRINUSE and attempt < attempts - 1:
                continue  # the UDP number is taken for TCP: pick another
            raise OSError(e.errno, f"cannot listen for DNS on {host}:{port}: {e.strerror}") from None
    raise AssertionError("unreachable")


def _formerr(data: bytes) -> bytes | None:
    if len(data) < 12:
        return None
    query_id = struct.unpack("!H", data[:2])[0]
    return DNSRecord(DNSHeader(id=query_id, qr=1, rcode=RCODE.FORMERR)).pack()


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        asyncio.ensure_future(self._answer(data, addr))

    async def _answer(self, data: bytes, addr: Any) -> None:
        reply = await self.server.handle(data, tcp=False)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


# --- running it against the API -------------------------------------------------------------------


class ClusterDNS:
    """The zone kept current from Service and Endpoints informers, and the server answering from it."""

    def __init__(
        self,
        client: ApiClient,
        listen: Sequence[tuple[str, int]],
        upstreams: Sequence[tuple[str, int]],
        domain: str = DEFAULT_DOMAIN,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.client = client
        self.zone = ClusterZone(domain=domain, ttl=ttl)
        self.server = ClusterDNSServer(self.zone, listen, upstreams)
        self.server.before_query = self._rebuild_if_dirty
        self.factory = InformerFactory(client)
        self.services = self.factory.informer(*SERVICES)
        self.endpoints = self.factory.informer(*ENDPOINTS)
        self._dirty = True
        for informer in (self.services, self.endpoints):
            informer.add_handler(self._changed, lambda old, new: self._changed(new), self._changed)

    def _changed(self, _obj: object) -> None:
        self._dirty = True

    def _rebuild_if_dirty(self) -> None:
        # Rebuilt lazily at the next query: a burst of changes costs one rebuild.
        if self._dirty:
            self._dirty = False
            started = time.perf_counter()
            self.zone.load(self.services.list(), self.endpoints.list())
            log.debug("zone rebuilt in %.1f ms", (time.perf_counter() - started) * 1000)

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled (`ready` is set once the caches are synced and sockets bound)."""
        self.factory.start()
        try:
            await asyncio.gather(self.services.wait_synced(), self.endpoints.wait_synced())
            await self.server.start()
            if ready is not None:
                ready.set()
            await asyncio.Event().wait()
        finally:
            await self.server.stop()
            await self.factory.stop()


async def publish_service(
    client: ApiClient,
    namespace: str,
    name: str,
    address: str,
    port: int,
    cluster_ip: str | None = None,
) -> str:
    """Create or update a selector-less Service (DNS over UDP and TCP on port 53) with Endpoints
    pointing at this server, like the `kube-dns` service pods use as their nameserver. Returns
    the service's cluster IP."""
    ports = [
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
    ]
    labels = {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "app.kubernetes.io/managed-by": "grove"}
    try:
        svc = await client.get("", "v1", "services", name, namespace=namespace)
        if cluster_ip and svc["spec"].get("clusterIP") != cluster_ip:
            raise ValueError(
                f"service {namespace}/{name} has cluster IP {svc['spec'].get('clusterIP')}, not {cluster_ip}; "
                "delete it to change the address"
            )
        if svc["spec"].get("ports") != ports or svc["spec"].get("selector"):
            svc["spec"]["ports"] = ports
            svc["spec"].pop("selector", None)
            svc = await client.update(*SERVICES, svc)
    except NotFound:
        spec: dict[str, Any] = {"ports": ports, "type": "ClusterIP"}
        if cluster_ip:
            spec["clusterIP"] = cluster_ip
        svc = await client.create(
            *SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": spec,
            },
        )
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "subsets": [
            {
                "addresses": [{"ip": address}],
                "ports": [
                    {"name": "dns", "port": port, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": port, "protocol": "TCP"},
                ],
            }
        ],
    }
    try:
        await client.create(*ENDPOINTS, endpoints)
    except AlreadyExists:
        current = await client.get("", "v1", "endpoints", name, namespace=namespace)
        endpoints["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await client.update(*ENDPOINTS, endpoints)
    return str(svc["spec"]["clusterIP"])
