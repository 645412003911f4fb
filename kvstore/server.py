"""One member of the store: the etcd v2 HTTP API in front of a Raft-replicated key tree.

Requests are parsed the way etcd's v2 API parses them (query string and form body, the same
error codes for bad input), writes become replicated commands, default reads are served from the
local tree, `quorum=true` reads go through the log. Watches read the replicated event history
(see kvstore/watch.py). Everything here runs in one asyncio loop; the Raft tick thread is only
reached through `RaftNode.propose` and the state lock. The handlers are framework-neutral
(`Request` in, `Response` out) and served by the lean HTTP/1.1 server in kvstore/httpserver.py;
a default read is answered without leaving the call that parsed it.

TLS (client port only, etcd's flags): `ClientTLS` holds --cert-file/--key-file/--trusted-ca-file/
--client-cert-auth/--auto-tls; `server_ssl_context` serves https with it and `outgoing_ssl_context`
is what this member's own requests to other members (forwarding to the leader, asking whether it
was removed) use. Peer traffic is pysyncobj's own protocol, not TLS (`--peer-password-file`
encrypts it).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import re
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlparse

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from . import errors as E
from .errors import EtcdError
from .httpserver import HttpServer, Request, Response, text_response
from .raft import ProposalFailed, RaftNode, RaftTuning
from .statemachine import StateMachine
from .tree import CREATE, DEFAULT_HISTORY_SIZE, SET, clean_key
from .watch import Waiter, WatchHub

log = logging.getLogger("grove.kv")

SERVER_VERSION = "3.4.0"  # the etcd API level grove's v2 API follows
MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes default (1.5 MiB)
JSON = "application/json"
MAX_UINT64 = 2**64 - 1
MAX_TTL = 100 * 365 * 86400  # longer TTLs are clamped to a century; expiry times stay representable

# Proposal failures after which the command surely is either applied once or not at all, so
# proposing it again (same request id) is safe.
_RETRYABLE = {"LEADER_CHANGED", "DISCARDED", "NOT_LEADER", "MISSING_LEADER", "REQUEST_DENIED"}

_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def member_id(peer_urls: list[str], token: str) -> str:
    """A stable 64-bit member id (hex), derived like etcd's from peer URLs and the cluster token."""
    h = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()
    return h[:8].hex()


def cluster_id_of(member_ids: list[str]) -> str:
    h = hashlib.sha1("".join(sorted(member_ids)).encode()).digest()
    return h[:8].hex()


def peer_addr(url: str) -> str:
    """`http://127.0.0.1:2380` -> `127.0.0.1:2380` (the address pysyncobj speaks to)."""
    u = urlparse(url)
    if not u.hostname or not u.port:
        raise ValueError(f"peer URL {url!r} must look like http://HOST:PORT")
    return f"{u.hostname}:{u.port}"


def parse_initial_cluster(spec: str) -> list[tuple[str, str]]:
    """`a=http://h:1,b=http://h:2` -> [("a", "http://h:1"), ("b", "http://h:2")]."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "=" not in part:
            raise ValueError(f"--initial-cluster entry {part!r} must be NAME=PEER_URL")
        name, url = part.split("=", 1)
        peer_addr(url)
        out.append((name, url))
    return out


@dataclass
class ClientTLS:
    """etcd's client transport security flags."""

    cert_file: str | None = None
    key_file: str | None = None
    trusted_ca_file: str | None = None
    # etcd 3.4 requires a client certificate signed by trusted_ca_file when either is given
    client_cert_auth: bool = False
    auto_tls: bool = False  # without cert_file: a self-signed certificate made at start

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.auto_tls)


class TLSConfigError(ValueError):
    """TLS flags that cannot work together; the message names the flag to fix."""


def check_client_tls(urls: list[str], tls: ClientTLS) -> None:
    """Refuse https client URLs without a certificate (etcd's wording), and half-given key pairs."""
    if bool(tls.cert_file) != bool(tls.key_file):
        raise TLSConfigError("--cert-file and --key-file must be given together")
    if tls.client_cert_auth and not tls.trusted_ca_file:
        raise TLSConfigError(
            "--client-cert-auth needs --trusted-ca-file (the CA that signs client certificates)"
        )
    for url in urls:
        if urlparse(url).scheme not in ("http", "https"):
            raise TLSConfigError(f"client URL {url!r} must start with http:// or https://")
        if urlparse(url).scheme == "https" and not tls.enabled:
            raise TLSConfigError(
                f"TLS key/cert (--cert-file, --key-file) must be provided for client url {url} "
                "with HTTPS scheme (or pass --auto-tls)"
            )


def write_self_signed_cert(cert_path: str, key_path: str, hosts: list[str], days: int = 365) -> None:
    """A self-signed certificate (its own CA) for `hosts`, as etcd's --auto-tls makes one.

    It carries both serverAuth and clientAuth usages, so the same pair also identifies a member
    in its requests to other members.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from .pki import build_certificate, write_private

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "grove autogenerated cert")])
    now = datetime.datetime.now(datetime.UTC)
    cert = build_certificate(
        subject,
        key.public_key(),
        subject,
        key,
        now,
        now + datetime.timedelta(days=days),
        ca=True,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        sans=names,
    )
    os.makedirs(os.path.dirname(os.path.abspath(cert_path)), exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(key_path, key_pem)
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def resolve_auto_tls(tls: ClientTLS, data_dir: str, urls: list[str]) -> ClientTLS:
    """With --auto-tls and no --cert-file: make the pair under DATA_DIR/fixtures/client (etcd's place)."""
    if not tls.auto_tls or tls.cert_file:
        return tls
    base = os.path.join(data_dir, "fixtures", "client")
    cert, key = os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):  # kept across restarts, as etcd keeps it
        log.info("auto-tls: using the self-signed certificate in %s", cert)
    else:
        hosts = [urlparse(u).hostname or "localhost" for u in urls] + ["localhost", "127.0.0.1"]
        write_self_signed_cert(cert, key, hosts)
        log.info("auto-tls: self-signed certificate for %s in %s", ", ".join(dict.fromkeys(hosts)), cert)
    return ClientTLS(cert, key, tls.trusted_ca_file, tls.client_cert_auth, auto_tls=True)


def server_ssl_context(tls: ClientTLS) -> ssl.SSLContext:
    """The context of the https client port; raises TLSConfigError for unreadable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # etcd's minimum
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)  # type: ignore[arg-type]
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(
            f"cannot load --cert-file {tls.cert_file} / --key-file {tls.key_file}: {exc}"
        ) from None
    if tls.trusted_ca_file:
        try:
            ctx.load_verify_locations(cafile=tls.trusted_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load --trusted-ca-file {tls.trusted_ca_file}: {exc}") from None
    if tls.client_cert_auth or tls.trusted_ca_file:
        # As etcd 3.4 does: a trusted CA alone already makes client certificates mandatory.
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def outgoing_ssl_context(tls: ClientTLS) -> ssl.SSLContext:
    """For this member's requests to other members' https client URLs.

    It trusts the system's CAs, --trusted-ca-file, and this member's own certificate (so members
    sharing one self-signed certificate verify each other), and shows that certificate (other
    members may require one). A member with --auto-tls and no trusted CA cannot verify the others'
    own self-signed certificates, so, like etcd's auto-TLS, it does not check them.
    """
    ctx = ssl.create_default_context()
    for path in (tls.trusted_ca_file, tls.cert_file):
        if path:
            ctx.load_verify_locations(cafile=path)
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a trusted leaf (the shared cert) is enough
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.auto_tls and not tls.trusted_ca_file:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class MemberConfig:
    name: str = "default"
    data_dir: str = "default.grove"
    listen_client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    advertise_client_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    listen_peer_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2380"])
    initial_advertise_peer_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2380"])
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "grove-cluster"
    discovery: str | None = None
    history_size: int = DEFAULT_HISTORY_SIZE
    request_timeout: float = 5.0
    peer_password: str | None = None
    batch_proposals: bool = True
    tuning: RaftTuning = field(default_factory=RaftTuning)
    client_tls: ClientTLS = field(default_factory=ClientTLS)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.http = Counter(
            "etcd_http_requests", "HTTP requests by method and code", ["method", "code"], registry=r
        )
        self.leader_changes = Gauge(
            "etcd_server_leader_changes_seen_total", "Leader changes seen by this member", registry=r
        )
        self.has_leader = Gauge("etcd_server_has_leader", "1 if a leader is known", registry=r)
        self.is_leader = Gauge("etcd_server_is_leader", "1 if this member is the leader", registry=r)
        self.proposals_committed = Gauge(
            "etcd_server_proposals_committed_total", "Committed Raft entries (commit index)", registry=r
        )
        self.proposals_applied = Gauge(
            "etcd_server_proposals_applied_total", "Raft entries applied by this member", registry=r
        )
        self.proposals_failed = Counter(
            "etcd_server_proposals_failed", "Proposals that failed or timed out", registry=r
        )
        self.proposals_pending = Gauge("etcd_server_proposals_pending", "Proposals in flight", registry=r)
        self.watchers = Gauge("etcd_debugging_store_watchers", "Open watchers", registry=r)
        self.term = Gauge("etcd_server_raft_term", "Current Raft term", registry=r)
        self.batch_size = Histogram(
            "grove_kv_proposal_batch_size",
            "Client commands per Raft entry",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.http_pending: dict[tuple[str, int], int] = {}  # counted, not yet in `http`
        self.latency = Histogram(
            "grove_kv_write_duration_seconds",
            "Time from receiving a write to its commit",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )

    def flush_http(self) -> None:
        """Move the request counts gathered since the last scrape into `etcd_http_requests`."""
        pending = self.http_pending
        for (method, status), n in list(pending.items()):
            if n:
                self.http.labels(method, str(status)).inc(n)
                pending[(method, status)] = 0


class Member:
    def __init__(self, cfg: MemberConfig):
        self.cfg = cfg
        self.state = StateMachine(cfg.history_size)
        self.hub = WatchHub()
        self.metrics = Metrics()
        self.raft: RaftNode | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.start_time = time.time()
        self.id = member_id(cfg.initial_advertise_peer_urls, cfg.initial_cluster_token)
        self.initial_members: list[dict] = []
        self.local_cluster_id = ""
        self.pending = 0
        self._tasks: list[asyncio.Task] = []
        self.removed = False
        self._rid = 0
        self._rid_prefix = f"{self.id}:{self.start_time:.6f}:"
        self._batch: list[tuple[dict, asyncio.Future]] = []
        self._flush_scheduled = False
        self._block_cluster_id = ""
        self._block_prefix = b""
        self._outgoing_ssl: ssl.SSLContext | None = None

    def client_session(self, timeout: float):
        """An aiohttp session for requests to other members' client URLs (https ones too)."""
        import aiohttp

        tls = self.cfg.client_tls
        if self._outgoing_ssl is None and (tls.enabled or tls.trusted_ca_file):
            self._outgoing_ssl = outgoing_ssl_context(tls)
        connector = aiohttp.TCPConnector(ssl=self._outgoing_ssl if self._outgoing_ssl is not None else True)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))

    # -------------------------------------------------------------- lifecycle
    def _initial_members(self, entries: list[tuple[str, str]]) -> list[dict]:
        by_name: dict[str, list[str]] = {}
        for name, url in entries:
            by_name.setdefault(name, []).append(url)
        members = []
        for name, urls in by_name.items():
            members.append(
                {
                    "id": member_id(urls, self.cfg.initial_cluster_token),
                    "name": name,
                    "peerURLs": urls,
                    "clientURLs": [],
                }
            )
        return members

    async def start(self) -> None:
        cfg = self.cfg
        self.loop = asyncio.get_running_loop()
        os.makedirs(cfg.data_dir, exist_ok=True)
        if cfg.discovery and not self._has_data():
            from .discovery import discover

            cfg.initial_cluster = await discover(
                cfg.discovery, self.id, cfg.name, cfg.initial_advertise_peer_urls[0]
            )
            log.info("discovery found cluster %s", cfg.initial_cluster)
        if not cfg.initial_cluster:
            cfg.initial_cluster = f"{cfg.name}={cfg.initial_advertise_peer_urls[0]}"
        entries = parse_initial_cluster(cfg.initial_cluster)
        self.initial_members = self._initial_members(entries)
        if self.id not in {m["id"] for m in self.initial_members}:
            raise SystemExit(
                f"grove kv: this member ({cfg.name}, {cfg.initial_advertise_peer_urls}) is not in "
                f"--initial-cluster {cfg.initial_cluster!r}"
            )
        self.local_cluster_id = cluster_id_of([m["id"] for m in self.initial_members])
        self_addr = peer_addr(cfg.listen_peer_urls[0])
        advertised = peer_addr(cfg.initial_advertise_peer_urls[0])
        others = sorted({peer_addr(u) for m in self.initial_members for u in m["peerURLs"]} - {advertised})
        self.raft = RaftNode(
            advertised if self_addr == advertised else self_addr,
            others,
            cfg.data_dir,
            self.state,
            tuning=cfg.tuning,
            password=cfg.peer_password,
            on_events=self._events_from_raft,
            on_leader_change=self._leader_changed_from_raft,
            on_recover=self._recovered_from_raft,
        )
        self._tasks.append(asyncio.create_task(self._bootstrap_and_publish()))
        self._tasks.append(asyncio.create_task(self._expire_loop()))

    def _has_data(self) -> bool:
        return os.path.exists(os.path.join(self.cfg.data_dir, "raft.journal"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self.raft is not None:
            raft = self.raft
            await asyncio.get_running_loop().run_in_executor(None, raft.destroy_synchronous)

    # ------------------------------------------------- callbacks (tick thread)
    def _events_from_raft(self, events: list) -> None:
        self.loop.call_soon_threadsafe(self.hub.publish, events)  # type: ignore[union-attr]

    def _leader_changed_from_raft(self) -> None:
        self.loop.call_soon_threadsafe(self.metrics.leader_changes.inc)  # type: ignore[union-attr]

    def _recovered_from_raft(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.hub.wake_all)

    # ------------------------------------------------------------ background
    async def _bootstrap_and_publish(self) -> None:
        """Record the initial membership once, publish this member's name and client URLs, and
        notice when this member has been removed from the cluster (then shut down, as etcd does)."""
        known = False
        leaderless_since: float | None = None
        while True:
            try:
                raft = self.raft
                leader = raft._getLeader() if raft is not None else None
                # A removed member may keep believing in its old leader: nobody talks to it any more.
                cut_off = leader is not None and not raft.is_leader and not raft.isNodeConnected(leader)
                if raft is not None and leader is not None and not cut_off:
                    leaderless_since = None
                    if self.state.cluster_id is None and raft.is_leader:
                        await self.propose(
                            {
                                "op": "bootstrap",
                                "cluster_id": self.local_cluster_id,
                                "members": self.initial_members,
                            }
                        )
                    me = self.state.members.get(self.id)
                    if me is not None and (
                        me.get("name") != self.cfg.name
                        or me.get("clientURLs") != self.cfg.advertise_client_urls
                    ):
                        await self.propose(
                            {
                                "op": "member_publish",
                                "id": self.id,
                                "name": self.cfg.name,
                                "clientURLs": self.cfg.advertise_client_urls,
                            }
                        )
                    elif me is not None:
                        known = True
                    elif known and self.state.cluster_id is not None:
                        self._shut_down_removed("the cluster's membership no longer lists it")
                        return
                elif known:
                    # Without a leader for a while: a removed member stops hearing from the
                    # cluster before it can apply its own removal. Ask the others.
                    now = time.monotonic()
                    leaderless_since = leaderless_since or now
                    if now - leaderless_since > 3.0 and await self._removed_per_peers():
                        self._shut_down_removed("the other members no longer list it")
                        return
            except (TimeoutError, EtcdError, ProposalFailed):
                pass
            await asyncio.sleep(0.2 if not known else 1.0)

    async def _removed_per_peers(self) -> bool:
        """Do members that are at least as far along as this one say it is no longer a member?"""
        import aiohttp

        raft = self.raft
        applied = raft.raftLastApplied if raft is not None else 0
        urls = [
            u for mid, m in self.state.members.items() if mid != self.id for u in m.get("clientURLs", [])[:1]
        ]
        async with self.client_session(2.0) as http:
            for url in urls:
                try:
                    async with http.get(url + "/v2/members") as resp:
                        if resp.status != 200 or resp.headers.get("X-Etcd-Cluster-ID") != self.cluster_id:
                            continue
                        if int(resp.headers.get("X-Raft-Index", "0")) < applied:
                            continue  # that member lags behind what this one knows
                        members = (await resp.json()).get("members", [])
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    continue
                if members and all(m.get("id") != self.id for m in members):
                    return True
        return False

    def _shut_down_removed(self, why: str) -> None:
        log.warning("this member (%s) was removed from the cluster (%s); shutting down", self.id, why)
        self.removed = True
        os.kill(os.getpid(), signal.SIGTERM)

    async def _expire_loop(self) -> None:
        """The leader turns elapsed TTLs into a replicated `expire` command with its own clock."""
        while True:
            delay = 0.5
            raft = self.raft
            if raft is not None and raft.is_leader:
                with raft.lock:
                    nxt = self.state.tree.next_expiry()
                now = time.time()
                if nxt is not None and nxt <= now:
                    try:
                        await self.propose({"op": "expire", "now": now})
                    except (TimeoutError, ProposalFailed):
                        pass
                    delay = 0.05
                elif nxt is not None:
                    delay = min(0.5, max(0.01, nxt - now))
            await asyncio.sleep(delay)

    # ---------------------------------------------------------------- raft io
    async def propose(self, cmd: dict):
        """Replicate a command and wait for its result.

        Writes carry a request id, so when a leader change loses track of one (the old leader
        died holding it, or its entry was overwritten) it is safe to propose it again: the state
        machine applies an id once. That turns a failover into a delay instead of an error.
        """
        raft = self.raft
        assert raft is not None
        if cmd["op"] not in ("get", "expire", "noop"):
            self._rid += 1
            cmd["rid"] = f"{self._rid_prefix}{self._rid}"
        self.pending += 1
        loop = self.loop
        assert loop is not None
        deadline = loop.time() + self.cfg.request_timeout
        try:
            while True:
                if deadline <= loop.time():
                    raise TimeoutError()
                fut = self._submit(cmd)
                # A timer that fails the future is all a deadline needs here; asyncio.timeout()
                # costs several times more per write (context, task lookups, cancel bookkeeping).
                timer = loop.call_at(deadline, _time_out, fut)
                try:
                    return await fut
                except ProposalFailed as exc:
                    if exc.reason not in _RETRYABLE:
                        raise
                    await asyncio.sleep(0.01)
                finally:
                    timer.cancel()
        except (TimeoutError, ProposalFailed):
            self.metrics.proposals_failed.inc()
            raise
        finally:
            self.pending -= 1

    def _submit(self, cmd: dict) -> asyncio.Future:
        """Queue a command for the next Raft entry.

        Commands that arrive in the same turn of the event loop go to Raft as one `batch` entry:
        one log append, one message per follower, one fsync-free journal write for all of them.
        A lone command goes as it is, so batching adds no latency when the load is light.
        """
        loop = self.loop
        assert loop is not None
        fut = loop.create_future()
        if not self.cfg.batch_proposals:
            assert self.raft is not None
            return self.raft.propose(cmd, loop)
        self._batch.append((cmd, fut))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        batch = [(c, f) for c, f in batch if not f.done()]
        if not batch:
            return
        raft = self.raft
        assert raft is not None
        if len(batch) == 1:
            cmd = batch[0][0]
        else:
            cmd = {"op": "batch", "cmds": [c for c, _ in batch]}
        self.metrics.batch_size.observe(len(batch))
        try:
            inner = raft.propose(cmd, self.loop)
        except Exception as exc:  # e.g. a value JSON cannot carry: fail these requests, not the member
            log.exception("could not propose a command")
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(ProposalFailed(f"cannot encode command: {exc}"))
            return

        def done(inner: asyncio.Future) -> None:
            exc = inner.exception()
            results = None if exc is not None else inner.result()
            if len(batch) == 1:
                results = [results]
            for i, (_, fut) in enumerate(batch):
                if fut.done():
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(results[i])  # type: ignore[index]

        inner.add_done_callback(done)

    @property
    def cluster_id(self) -> str:
        return self.state.cluster_id or self.local_cluster_id

    def leader_member(self) -> dict | None:
        raft = self.raft
        addr = raft.leader_addr if raft is not None else None
        if addr is None:
            return None
        for m in self.state.members.values():
            if any(peer_addr(u) == addr for u in m["peerURLs"]):
                return m
        return None

    def headers(self, etcd_index: int | None = None) -> dict:
        raft = self.raft
        h = {"X-Etcd-Cluster-ID": self.cluster_id, "Content-Type": JSON}
        if raft is not None:
            h["X-Raft-Index"] = str(raft.raftCommitIndex)
            h["X-Raft-Term"] = str(raft.term)
        h["X-Etcd-Index"] = str(self.state.tree.index if etcd_index is None else etcd_index)
        return h

    def header_block(self, etcd_index: int | None = None) -> bytes:
        """`headers()` already encoded for the wire: every key response carries it."""
        cluster_id = self.cluster_id
        if cluster_id != self._block_cluster_id:
            self._block_cluster_id = cluster_id
            self._block_prefix = f"X-Etcd-Cluster-ID: {cluster_id}\r\nContent-Type: {JSON}\r\n".encode()
        index = self.state.tree.index if etcd_index is None else etcd_index
        raft = self.raft
        if raft is None:
            return self._block_prefix + b"X-Etcd-Index: %d\r\n" % index
        return self._block_prefix + b"X-Raft-Index: %d\r\nX-Raft-Term: %d\r\nX-Etcd-Index: %d\r\n" % (
            raft.raftCommitIndex,
            raft.term,
            index,
        )


def _time_out(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


# ------------------------------------------------------------------ parsing
def _bool(form, name: str) -> bool:
    v = form.get(name)
    if v is None or v == "":
        return False
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise EtcdError(E.INVALID_FIELD, f'invalid value for "{name}"')


def _uint(form, name: str, code: int) -> int | None:
    v = form.get(name)
    if v is None:
        return None
    try:
        n = int(v, 10)
        if n < 0 or n > MAX_UINT64:
            raise ValueError
        return n
    except ValueError:
        raise EtcdError(code, f'invalid value for "{name}"') from None


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_form(raw: bytes) -> dict[str, str]:
    """Decode `a=1&b=2` strictly, as Go's ParseForm does: a bad %-escape is etcd's error 210."""
    bad = _BAD_ESCAPE.search(raw)
    if bad:
        snippet = raw[bad.start() : bad.start() + 3].decode("utf-8", "replace")
        raise EtcdError(E.INVALID_FORM, f'invalid URL escape "{snippet}"')
    form: dict[str, str] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        k, _, v = part.partition(b"=")
        name = unquote_to_bytes(k.replace(b"+", b" ")).decode("utf-8", "replace")
        if name not in form:  # the first value wins, like r.FormValue
            form[name] = unquote_to_bytes(v.replace(b"+", b" ")).decode("utf-8", "replace")
    return form


def error_response(member: Member, err: EtcdError, head: bool = False) -> Response:
    if not err.index:
        err.index = member.state.tree.index
    body = b"" if head else orjson.dumps(err.to_dict()) + b"\n"
    return Response(body, err.status, member.header_block(err.index))


def raft_error(member: Member, exc: Exception) -> EtcdError:
    if isinstance(exc, asyncio.TimeoutError):
        return EtcdError(E.RAFT_INTERNAL, "etcdserver: request timed out", member.state.tree.index)
    if isinstance(exc, ProposalFailed) and exc.reason in ("MISSING_LEADER", "LEADER_CHANGED"):
        return EtcdError(E.LEADER_ELECT, f"etcdserver: {exc.reason.lower().replace('_', ' ')}")
    return EtcdError(E.RAFT_INTERNAL, f"etcdserver: {exc}")


def _is_clean(key: str) -> bool:
    """Is `key` already what `clean_key` would make of it? (True for nearly every real key.)"""
    return key[:1] == "/" and key[-1] != "/" and "//" not in key and "/." not in key


_FORM_TYPES = ("application/x-www-form-urlencoded", "application/octet-stream", "")


class KeysAPI:
    """`/v2/keys/...`

    `handle` answers synchronously whenever it can (default reads, every rejected request) and
    returns a coroutine only for what must wait: writes, quorum reads and watches.
    """

    def __init__(self, member: Member):
        self.m = member

    def handle(self, request: Request) -> Response | Awaitable[Response | None]:
        method = request.method
        head = method == "HEAD"
        try:
            if request.body_too_large:
                raise EtcdError(
                    E.INVALID_FORM,
                    f"request is too large (limit {MAX_REQUEST_BYTES} bytes)",
                    0,
                    message="Invalid POST form",
                )
            query = request.query
            form = parse_form(query.encode()) if query else {}
            if method in ("PUT", "POST", "DELETE") and request.body:
                if request.content_type in _FORM_TYPES:
                    form.update(parse_form(request.body))  # the body wins over the query string, as in Go
            raw_key = request.path[8:]  # after "/v2/keys"
            if "\x00" in raw_key:
                raise EtcdError(E.INVALID_FIELD, "key must not contain a NUL byte")
            key = raw_key if _is_clean(raw_key) else clean_key(raw_key)
            if method == "GET" or head:
                return self.get(request, key, form, head)
            if method == "PUT":
                return self.put(key, form)
            if method == "POST":
                return self.post(key, form)
            if method == "DELETE":
                return self.delete(key, form)
        except EtcdError as err:
            return error_response(self.m, err, head)
        return text_response("Method Not Allowed", 405, {"Allow": "GET, HEAD, PUT, POST, DELETE"})

    def _respond(self, result, head: bool = False) -> Response:
        m = self.m
        if isinstance(result, EtcdError):
            return error_response(m, result, head)
        status = 200
        action = result["action"]
        if action == CREATE or (action == SET and "prevNode" not in result):
            status = 201
        idx = getattr(result, "index", None)
        body = b"" if head else orjson.dumps(result) + b"\n"
        return Response(body, status, m.header_block(idx))

    async def _write(self, cmd: dict) -> Response:
        m = self.m
        t0 = time.perf_counter()
        try:
            result = await m.propose(cmd)
        except (TimeoutError, ProposalFailed) as exc:
            return error_response(m, raft_error(m, exc))
        m.metrics.latency.observe(time.perf_counter() - t0)
        return self._respond(result)

    # --------------------------------------------------------------- GET
    def get(
        self, request: Request, key: str, form: dict, head: bool
    ) -> Response | Awaitable[Response | None]:
        m = self.m
        if form:
            recursive = _bool(form, "recursive")
            sort = _bool(form, "sorted")
            wait = _bool(form, "wait")
            quorum = _bool(form, "quorum")
            stream = _bool(form, "stream")
            wait_index = _uint(form, "waitIndex", E.INDEX_NAN)
            if stream and not wait:
                raise EtcdError(E.INVALID_FIELD, "stream can only be true when wait is true")
            if wait:
                return self.watch(request, key, recursive, wait_index, stream)
            if quorum:
                return self._quorum_get(key, recursive, sort, head)
        else:
            recursive = sort = False
        raft = m.raft
        assert raft is not None
        with raft.lock:
            result = m.state.tree.get(key, recursive, sort, time.time())
            index = m.state.tree.index
        body = b"" if head else orjson.dumps(result) + b"\n"
        return Response(body, 200, m.header_block(index))

    async def _quorum_get(self, key: str, recursive: bool, sort: bool, head: bool) -> Response:
        m = self.m
        try:
            result = await m.propose(
                {"op": "get", "key": key, "recursive": recursive, "sorted": sort, "now": time.time()}
            )
        except (TimeoutError, ProposalFailed) as exc:
            return error_response(m, raft_error(m, exc), head)
        return self._respond(result, head)

    def watch(
        self, request: Request, key: str, recursive: bool, wait_index: int | None, stream: bool
    ) -> Awaitable[None]:
        m = self.m
        raft = m.raft
        assert raft is not None
        tree_index = m.state.tree.index
        since = wait_index if wait_index else tree_index + 1
        with raft.lock:
            m.state.tree.history.check(since, m.state.tree.index)  # a cleared index is answered at once
        return self._watch(request, key, recursive, since, stream, tree_index)

    async def _watch(
        self, request: Request, key: str, recursive: bool, since: int, stream: bool, tree_index: int
    ) -> None:
        m = self.m
        raft = m.raft
        assert raft is not None
        waiter = Waiter(key, recursive)
        m.hub.add(waiter)
        m.metrics.watchers.set(m.hub.count)
        headers = m.headers(tree_index)
        if stream:
            headers["X-Grove-Stream"] = "1"
        try:
            out = request.stream(200, headers)
            while True:
                waiter.wake.clear()
                found = []
                with raft.lock:
                    tree = m.state.tree
                    try:
                        for ev in tree.history.iter_from(since, tree.index):
                            if ev.matches(key, recursive):
                                found.append(ev)
                                if not stream:
                                    break
                    except EtcdError as err:
                        err.index = tree.index
                        cleared = err
                    else:
                        cleared = None
                    scanned_to = tree.history.last_index
                if cleared is not None:
                    await out.write(orjson.dumps(cleared.to_dict()) + b"\n")
                    return
                if found and not stream:
                    await out.write(orjson.dumps(found[0]) + b"\n")
                    return
                if found:
                    await out.write(b"".join(orjson.dumps(ev) + b"\n" for ev in found))
                since = max(since, scanned_to + 1)
                if not found:
                    await waiter.wake.wait()
        finally:
            m.hub.remove(waiter)
            m.metrics.watchers.set(m.hub.count)

    # --------------------------------------------------------------- writes
    def _ttl(self, form: dict) -> int | None:
        v = form.get("ttl")
        if v is None or v == "":
            return None
        try:
            n = int(v, 10)
        except ValueError:
            raise EtcdError(E.TTL_NAN, 'invalid value for "ttl"') from None
        if n < 0 or n > MAX_UINT64:
            raise EtcdError(E.TTL_NAN, 'invalid value for "ttl"')
        return min(n, MAX_TTL)

    def _value(self, form: dict) -> str:
        v = form.get("value", "")
        if len(v.encode()) > MAX_REQUEST_BYTES:
            raise EtcdError(
                E.INVALID_FORM,
                f"value is larger than the {MAX_REQUEST_BYTES}-byte limit",
                0,
            )
        return v

    def put(self, key: str, form: dict) -> Awaitable[Response]:
        ttl = self._ttl(form)
        is_dir = _bool(form, "dir")
        refresh = _bool(form, "refresh")
        for name in ("recursive", "sorted", "quorum", "stream"):
            _bool(form, name)
        if _bool(form, "wait"):
            raise EtcdError(E.INVALID_FIELD, "wait can only be used with GET requests")
        prev_exist = None
        if form.get("prevExist") not in (None, ""):
            prev_exist = _bool(form, "prevExist")
        prev_index = _uint(form, "prevIndex", E.INDEX_NAN)
        prev_value = form.get("prevValue")
        if prev_value is not None and prev_value == "":
            raise EtcdError(E.PREV_VALUE_REQUIRED, '"prevValue" cannot be empty')
        if prev_index == 0:
            prev_index = None
        value = self._value(form)
        if is_dir and value:
            raise EtcdError(E.INVALID_FIELD, '"value" cannot be set with "dir"')
        if refresh:
            if "value" in form:
                raise EtcdError(E.REFRESH_VALUE, "A value was provided on a refresh")
            if ttl is None:
                raise EtcdError(E.REFRESH_TTL_REQUIRED, "No TTL value set")
        cmd: dict = {"key": key, "now": time.time(), "ttl": ttl}
        if refresh:
            cmd["refresh"] = True
        if prev_value is not None or prev_index is not None:
            if is_dir:
                raise EtcdError(E.NOT_FILE, key)
            cmd.update(op="cas", value=value, prevValue=prev_value, prevIndex=prev_index)
        elif prev_exist is True:
            cmd.update(op="update", value=value, dir=is_dir)
        else:
            cmd.update(op="set", value=value, dir=is_dir)
            if prev_exist is False:
                cmd["prevExist"] = False
        return self._write(cmd)

    def post(self, key: str, form: dict) -> Awaitable[Response]:
        ttl = self._ttl(form)
        value = self._value(form)
        is_dir = _bool(form, "dir")
        return self._write(
            {"op": "append", "key": key, "value": value, "ttl": ttl, "dir": is_dir, "now": time.time()}
        )

    def delete(self, key: str, form: dict) -> Awaitable[Response]:
        recursive = _bool(form, "recursive")
        is_dir = _bool(form, "dir")
        prev_index = _uint(form, "prevIndex", E.INDEX_NAN)
        prev_value = form.get("prevValue")
        if prev_value is not None and prev_value == "":
            raise EtcdError(E.PREV_VALUE_REQUIRED, '"prevValue" cannot be empty')
        if prev_index == 0:
            prev_index = None
        if prev_value is not None or prev_index is not None:
            return self._write(
                {
                    "op": "cad",
                    "key": key,
                    "prevValue": prev_value,
                    "prevIndex": prev_index,
                    "now": time.time(),
                }
            )
        return self._write(
            {"op": "delete", "key": key, "recursive": recursive, "dir": is_dir, "now": time.time()}
        )


class ClusterAPI:
    """`/v2/members`, `/v2/stats/*`, `/version`, `/health`, `/metrics`, `/v2/machines`."""

    def __init__(self, member: Member):
        self.m = member

    def _json(self, data, status: int = 200) -> Response:
        headers = {"Content-Type": JSON, "X-Etcd-Cluster-ID": self.m.cluster_id}
        if self.m.raft is not None:
            headers["X-Raft-Index"] = str(self.m.raft.raftLastApplied)
        return Response(orjson.dumps(data), status, headers)

    def _members(self) -> list[dict]:
        ms = self.m.state.members or {m["id"]: m for m in self.m.initial_members}
        return [
            {
                "id": m["id"],
                "name": m.get("name", ""),
                "peerURLs": m["peerURLs"],
                "clientURLs": m.get("clientURLs", []),
            }
            for m in sorted(ms.values(), key=lambda x: x["id"])
        ]

    def members(self, request: Request) -> Response:
        return self._json({"members": self._members()})

    def leader(self, request: Request) -> Response:
        lm = self.m.leader_member()
        if lm is None:
            return self._json({"message": "During Leader Election"}, 503)
        return self._json(lm)

    async def add_member(self, request: Request) -> Response:
        m = self.m
        try:
            if request.body_too_large:
                raise ValueError
            body = orjson.loads(request.body)
            urls = body["peerURLs"]
            if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
                raise ValueError
            for u in urls:
                peer_addr(u)
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return self._json(
                {"message": 'expected a JSON body like {"peerURLs": ["http://HOST:PORT"]}'}, 400
            )
        for other in m.state.members.values():
            if set(other["peerURLs"]) & set(urls):
                return self._json({"message": "Peer URLs already exists"}, 409)
        new = {
            "id": member_id(urls, m.cfg.initial_cluster_token),
            "name": "",
            "peerURLs": urls,
            "clientURLs": [],
        }
        raft = m.raft
        assert raft is not None
        try:
            await asyncio.wait_for(
                raft.membership_change("add", peer_addr(urls[0]), m.loop), m.cfg.request_timeout
            )
            result = await m.propose({"op": "member_add", "member": new})
        except (TimeoutError, ProposalFailed) as exc:
            return self._json({"message": f"could not add member: {exc or 'timed out'}"}, 500)
        if isinstance(result, EtcdError):
            return self._json({"message": result.message}, 409)
        return self._json(result, 201)

    async def remove_member(self, request: Request) -> Response:
        """Remove a member. Raft cannot remove its own leader, so the leader first hands over."""
        m = self.m
        mid = request.match["id"]
        target = m.state.members.get(mid)
        if target is None:
            return self._json({"message": f"No such member: {mid}"}, 404)
        raft = m.raft
        assert raft is not None and m.loop is not None
        addr = peer_addr(target["peerURLs"][0])
        deadline = m.loop.time() + m.cfg.request_timeout * 2
        try:
            while raft.leader_addr == addr or raft.leader_addr is None:
                if m.loop.time() > deadline:
                    raise TimeoutError()
                if raft.is_leader:
                    try:
                        await asyncio.wait_for(raft.transfer_leadership(m.loop), 1.0)
                    except ProposalFailed:
                        pass  # the follower is not caught up yet; try again
                    await asyncio.sleep(0.1)
                elif raft.leader_addr == addr:
                    return await self._forward_to_leader(request)
                else:
                    await asyncio.sleep(0.05)
            if mid == m.id:
                # This member handed leadership over (or never had it): the leader removes it,
                # rather than a member proposing its own removal while the leadership moves.
                return await self._forward_to_leader(request)
            # Record the removal first, while the member still receives the log: that is how it
            # learns it was removed and shuts itself down.
            await m.propose({"op": "member_remove", "id": mid})
            await asyncio.wait_for(raft.membership_change("remove", addr, m.loop), m.cfg.request_timeout)
        except (TimeoutError, ProposalFailed) as exc:
            return self._json({"message": f"could not remove member: {exc or 'timed out'}"}, 500)
        return Response(b"", 204, {"X-Etcd-Cluster-ID": m.cluster_id})

    async def _forward_to_leader(self, request: Request) -> Response:
        import aiohttp

        leader = self.m.leader_member()
        if leader is None or not leader.get("clientURLs"):
            return self._json({"message": "During Leader Election"}, 503)
        url = leader["clientURLs"][0] + request.path_qs
        try:
            async with self.m.client_session(self.m.cfg.request_timeout * 3) as http:
                async with http.request(request.method, url, data=request.body) as resp:
                    body = await resp.read()
                    status, content_type = resp.status, resp.headers.get("Content-Type", JSON)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # e.g. the leader's certificate is not signed by this member's --trusted-ca-file
            log.warning(
                "forwarding %s %s to the leader at %s failed: %s", request.method, request.path, url, exc
            )
            return self._json({"message": f"could not reach the leader at {url}: {exc}"}, 503)
        return Response(body, status, {"Content-Type": content_type, "X-Etcd-Cluster-ID": self.m.cluster_id})

    def update_member(self, request: Request) -> Response:
        return self._json(
            {"message": "changing a member's peer URLs is not supported; remove and add it"}, 501
        )

    def machines(self, request: Request) -> Response:
        urls = [u for mm in self._members() for u in mm["clientURLs"]]
        return text_response(", ".join(urls), 200, {"X-Etcd-Cluster-ID": self.m.cluster_id})

    def stats_self(self, request: Request) -> Response:
        m = self.m
        raft = m.raft
        lm = m.leader_member()
        state = "StateLeader" if raft is not None and raft.is_leader else "StateFollower"
        return self._json(
            {
                "name": m.cfg.name,
                "id": m.id,
                "state": state,
                "startTime": _rfc3339(m.start_time),
                "leaderInfo": {
                    "leader": lm["id"] if lm else "",
                    "uptime": f"{time.time() - m.start_time:.3f}s",
                    "startTime": _rfc3339(m.start_time),
                },
                "recvAppendRequestCnt": 0,
                "sendAppendRequestCnt": 0,
                "raftIndex": raft.raftCommitIndex if raft else 0,
                "raftTerm": raft.term if raft else 0,
            }
        )

    def stats_leader(self, request: Request) -> Response:
        m = self.m
        raft = m.raft
        if raft is None or not raft.is_leader:
            return self._json({"message": "not current leader"}, 403)
        followers = {}
        status = raft.getStatus()
        for mm in m.state.members.values():
            if mm["id"] == m.id:
                continue
            addr = peer_addr(mm["peerURLs"][0])
            connected = status.get(f"partner_node_status_server_{addr}", 0) == 2
            followers[mm["id"]] = {
                "latency": {},
                "counts": {
                    "fail": 0 if connected else 1,
                    "success": status.get(f"match_idx_server_{addr}", 0),
                },
                "matchIndex": status.get(f"match_idx_server_{addr}", 0),
                "connected": connected,
            }
        return self._json({"leader": m.id, "followers": followers})

    def stats_store(self, request: Request) -> Response:
        m = self.m
        stats = {
            k: 0
            for k in (
                "getsSuccess",
                "getsFail",
                "setsSuccess",
                "setsFail",
                "deleteSuccess",
                "deleteFail",
                "updateSuccess",
                "updateFail",
                "createSuccess",
                "createFail",
                "compareAndSwapSuccess",
                "compareAndSwapFail",
                "compareAndDeleteSuccess",
                "compareAndDeleteFail",
                "expireCount",
            )
        }
        stats.update(m.state.tree.stats)
        stats["watchers"] = m.hub.count
        return self._json(stats)

    def version(self, request: Request) -> Response:
        from grove import __version__

        return self._json({"etcdserver": SERVER_VERSION, "etcdcluster": "3.4.0", "grove": __version__})

    def health(self, request: Request) -> Response:
        raft = self.m.raft
        ok = raft is not None and raft.leader_addr is not None
        if ok:
            return self._json({"health": "true", "reason": ""})
        return self._json({"health": "false", "reason": "RAFT NO LEADER"}, 503)

    def metrics(self, request: Request) -> Response:
        m = self.m
        raft = m.raft
        if raft is not None:
            m.metrics.has_leader.set(1 if raft.leader_addr else 0)
            m.metrics.is_leader.set(1 if raft.is_leader else 0)
            m.metrics.proposals_committed.set(raft.raftCommitIndex)
            m.metrics.proposals_applied.set(raft.raftLastApplied)
            m.metrics.term.set(raft.term)
        m.metrics.proposals_pending.set(m.pending)
        m.metrics.watchers.set(m.hub.count)
        m.metrics.flush_http()
        return Response(
            generate_latest(m.metrics.registry), 200, {"Content-Type": "text/plain; version=0.0.4"}
        )


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def build_handler(member: Member) -> Callable[[Request], Response | Awaitable[Response | None]]:
    """Route a request of the client port: `/v2/keys` first (the hot path), then the cluster API.

    Routing follows the aiohttp router grove used before: exact paths, GET routes also answer
    HEAD, a known path with another method is 405 with `Allow`, anything else 404.
    """
    keys = KeysAPI(member)
    cluster = ClusterAPI(member)
    routes: dict[str, dict[str, Callable]] = {
        "/v2/members": {"GET": cluster.members, "POST": cluster.add_member},
        "/v2/members/": {"GET": cluster.members, "POST": cluster.add_member},
        "/v2/members/leader": {"GET": cluster.leader},
        "/v2/machines": {"GET": cluster.machines},
        "/v2/stats/self": {"GET": cluster.stats_self},
        "/v2/stats/leader": {"GET": cluster.stats_leader},
        "/v2/stats/store": {"GET": cluster.stats_store},
        "/version": {"GET": cluster.version},
        "/health": {"GET": cluster.health},
        "/metrics": {"GET": cluster.metrics},
    }
    member_routes = {"DELETE": cluster.remove_member, "PUT": cluster.update_member}
    keys_handle = keys.handle

    def handle(request: Request) -> Response | Awaitable[Response | None]:
        path = request.path
        if path.startswith("/v2/keys"):
            return keys_handle(request)
        methods = routes.get(path)
        rest = path[len("/v2/members/") :] if path.startswith("/v2/members/") else ""
        if rest and "/" not in rest:  # /v2/members/{id}, where "leader" is also an id to DELETE or PUT
            methods = {**member_routes, **(methods or {})}
            request.match["id"] = rest
        elif methods is None:
            return text_response("404: Not Found", 404)
        fn = methods.get(request.method)
        if fn is None and request.method == "HEAD":
            fn = methods.get("GET")
        if fn is None:
            allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            return text_response("405: Method Not Allowed", 405, {"Allow": ",".join(allowed)})
        return fn(request)

    return handle


def start_counting(member: Member) -> Callable[[str, int], None]:
    """Count a request for `etcd_http_requests{method, code}`.

    A plain dict per request; the Prometheus counter (a lookup and a lock per update) gets the
    sums when /metrics is read (`Metrics.flush_http`).
    """
    pending = member.metrics.http_pending

    def count(method: str, status: int) -> None:
        key = (method, status)
        n = pending.get(key)
        if n is not None:
            pending[key] = n + 1
        elif len(pending) < 256:  # garbage methods must not grow the metric without bound
            pending[key] = 1
        else:
            key = ("OTHER", status)
            pending[key] = pending.get(key, 0) + 1

    return count


async def start_client_server(member: Member, urls: list[str]) -> HttpServer:
    """Serve the etcd v2 client API of `member` on every URL in `urls`."""

    def internal_error(request: Request, exc: Exception) -> Response:
        log.error("internal error serving %s %s", request.method, request.path, exc_info=exc)
        err = EtcdError(E.RAFT_INTERNAL, "internal server error", member.state.tree.index)
        return error_response(member, err, request.method == "HEAD")

    tls = member.cfg.client_tls
    check_client_tls(urls, tls)
    context = server_ssl_context(tls) if any(urlparse(u).scheme == "https" for u in urls) else None
    if tls.cert_file and context is None:
        log.warning("scheme is HTTP while key and cert files are present; ignoring key and cert files")
    server = HttpServer(
        build_handler(member),
        max_body=MAX_REQUEST_BYTES,
        count=start_counting(member),
        internal_error=internal_error,
    )
    try:
        for url in urls:
            u = urlparse(url)
            https = u.scheme == "https"
            await server.listen(u.hostname, u.port or 2379, ssl=context if https else None)
    except BaseException:
        await server.close()
        raise
    return server


async def serve(cfg: MemberConfig, ready: asyncio.Event | None = None) -> None:
    """Run one member until SIGINT/SIGTERM."""
    check_client_tls(cfg.listen_client_urls + cfg.advertise_client_urls, cfg.client_tls)
    cfg.client_tls = resolve_auto_tls(
        cfg.client_tls, cfg.data_dir, cfg.listen_client_urls + cfg.advertise_client_urls
    )
    if any(urlparse(u).scheme == "https" for u in cfg.listen_client_urls):
        server_ssl_context(cfg.client_tls)  # unreadable or mismatched files: fail before Raft starts
    member = Member(cfg)
    await member.start()
    # The tree and its event history are many long-lived small objects: full collections over
    # them stalled writes for 0.1-0.3 s every few seconds. Freeze what is loaded, collect rarely.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    server = await start_client_server(member, cfg.listen_client_urls)
    log.info("member %s (%s) serving clients on %s", cfg.name, member.id, ", ".join(cfg.listen_client_urls))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("member %s stopping", cfg.name)
        await server.close()
        await member.stop()
