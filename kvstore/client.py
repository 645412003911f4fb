"""Asyncio client for the etcd v2 HTTP API, with endpoint failover and retry.

The API server, the CLI and the benchmarks reach the key-value store only through this module, and
it speaks the same protocol to grove's store and to real etcd 3.4 (`--enable-v2`), so benchmarks
compare like with like. The hot path is one aiohttp request, a pre-encoded URL and one orjson parse.

Retry: connection errors, timeouts and 5xx answers (etcd's 300-series raft errors, e.g. a leader
election in progress) move the client to the next endpoint, with exponential back-off once every
endpoint has failed, until `retry_deadline`; then `ClusterUnavailable`. 4xx etcd errors raise
`EtcdError` at once. As with etcd's own clients, a write that is not conditional (set without
prev_*, append, add_member) may be applied twice if the connection drops after the server applied it.

Watches: `watch_stream` uses grove's `wait=true&stream=true` (chunked NDJSON, one event per line)
only when the server answers with `X-Grove-Stream: 1`. etcd 3.4 also accepts `stream=true`, but from
a past `waitIndex` it sends one event and then stays silent, so without that header the client chains
long-polls with `waitIndex = last modifiedIndex + 1`. Either way no event is skipped: reconnects
resume at the next index, and a watch started without an index resumes after the store index the
server reported when the watch began (`X-Etcd-Index`).

TLS: https endpoints are verified against `ca_file` (else the system's CAs); `cert_file`/`key_file`
identify the client to a store started with `--client-cert-auth` (etcdctl v2's --ca-file,
--cert-file, --key-file). A certificate the client rejects is a connection error like any other.

A client belongs to the event loop it is first used in; `SyncKVClient` wraps one for blocking code.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Self, TypeVar
from urllib.parse import quote, quote_plus

import aiohttp
import orjson
from yarl import URL

__all__ = ["ClusterUnavailable", "EtcdError", "EtcdResponse", "KVClient", "SyncKVClient", "tls_context"]

T = TypeVar("T")
P = ParamSpec("P")

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def form_escape(value: str) -> str:
    """Escape a form value cheaply: only the bytes that mean something in a form body.

    quote_plus escapes every non-alphanumeric byte, which costs 50-100 µs on a 2 KB JSON value
    (and the server pays again decoding it); the receiving parser (Go's ParseQuery, or grove's)
    reads other bytes, UTF-8 included, as they are.
    """
    return value.replace("%", "%25").replace("&", "%26").replace("+", "%2B").replace(";", "%3B")


_JSON = {"Content-Type": "application/json"}
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0
_MAX_CONNECTIONS = 256  # per client, for requests (watches have their own pool)
# Raised by aiohttp (or the socket under it) when an endpoint is down, unreachable or hangs up.
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
# HTTP status etcd gives each error code (default 400); used for errors sent inside a stream.
_ERROR_STATUS = {100: 404, 101: 412, 102: 403, 105: 412, 108: 403, 110: 401, 300: 500, 301: 500}


class EtcdError(Exception):
    """An error answered by the store: etcd's `errorCode`, `message`, `cause` and `index`.

    `error_code` is 0 for answers that carry no etcd error body (e.g. /v2/members errors).
    """

    def __init__(self, error_code: int, message: str, cause: str = "", index: int = 0, status: int = 0):
        super().__init__(error_code, message, cause, index, status)
        self.error_code = error_code
        self.message = message
        self.cause = cause
        self.index = index
        self.status = status

    def __str__(self) -> str:
        text = f"etcd error {self.error_code}: {self.message}" if self.error_code else self.message
        return f"{text} ({self.cause})" if self.cause else text


class ClusterUnavailable(Exception):
    """No endpoint answered before the retry deadline."""


@dataclass(slots=True)
class EtcdResponse:
    """One answer of /v2/keys, or one watch event."""

    action: str
    node: dict[str, Any]
    prev_node: dict[str, Any] | None = None
    etcd_index: int = 0  # X-Etcd-Index; for watch events: the event's modifiedIndex
    raft_index: int | None = None
    raft_term: int | None = None

    @property
    def key(self) -> str:
        return self.node.get("key", "/")

    @property
    def value(self) -> str | None:
        return self.node.get("value")


def key_path(key: str) -> str:
    """URL path of a key: "/v2/keys" + the key with a leading "/", percent-encoded."""
    if not key.startswith("/"):
        key = "/" + key
    return "/v2/keys" + quote(key)


def parse_endpoints(endpoints: list[str] | tuple[str, ...] | str) -> list[str]:
    """Normalise a list (or a comma-separated string) of client URLs; ValueError when unusable."""
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    result = []
    for raw in endpoints:
        endpoint = raw.strip().rstrip("/")
        if not endpoint:
            continue
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {raw!r} is not a URL like http://127.0.0.1:2379")
        result.append(endpoint)
    if not result:
        raise ValueError("no endpoint given; pass client URLs like http://127.0.0.1:2379")
    return result


def error_from_response(status: int, headers: Any, body: bytes, path: str = "") -> EtcdError:
    """The EtcdError for a non-2xx answer, whatever shape its body has."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    index = _int_header(headers, "X-Etcd-Index") or 0
    if isinstance(doc, dict) and "errorCode" in doc:
        return EtcdError(
            int(doc["errorCode"]),
            str(doc.get("message", "")),
            str(doc.get("cause") or ""),
            int(doc.get("index") or index),
            status,
        )
    if isinstance(doc, dict) and "message" in doc:
        return EtcdError(0, str(doc["message"]), "", index, status)
    text = body.decode("utf-8", "replace").strip()[:200] or f"HTTP {status}"
    if status == 404 and path.startswith("/v2/"):
        text = f"{path.split('?')[0]}: {text} (is the v2 API enabled? etcd 3.4 needs --enable-v2)"
    return EtcdError(0, text, "", index, status)


def _int_header(headers: Any, name: str) -> int | None:
    value = headers.get(name) if headers is not None else None
    return int(value) if value else None


def _event(line: bytes, raft_index: int | None, raft_term: int | None) -> EtcdResponse | None:
    """Parse one watch event (None for a blank keep-alive line); EtcdError for an error object."""
    if not line or line.isspace():
        return None
    doc = orjson.loads(line)
    if "errorCode" in doc:
        code = int(doc["errorCode"])
        raise EtcdError(
            code,
            str(doc.get("message", "")),
            str(doc.get("cause") or ""),
            int(doc.get("index") or 0),
            _ERROR_STATUS.get(code, 400),
        )
    node = doc["node"]
    return EtcdResponse(
        doc["action"], node, doc.get("prevNode"), node["modifiedIndex"], raft_index, raft_term
    )


class LineSplitter:
    """Splits a byte stream into newline-terminated lines, whatever the chunk boundaries."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if b"\n" not in chunk:
            if chunk:
                self._pending.append(chunk)
            return []
        if self._pending:
            self._pending.append(chunk)
            chunk = b"".join(self._pending)
        lines = chunk.split(b"\n")
        tail = lines.pop()
        self._pending = [tail] if tail else []
        return lines

    def rest(self) -> bytes:
        """What came after the last newline (a final line without one)."""
        rest = b"".join(self._pending)
        self._pending = []
        return rest


def tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext | None:
    """The client's TLS context (etcdctl's --ca-file, --cert-file, --key-file); None when none given.

    ValueError, naming the flag, when a file cannot be loaded or a key pair is half given.
    """
    if not (ca_file or cert_file or key_file):
        return None
    if bool(cert_file) != bool(key_file):
        raise ValueError("--cert-file and --key-file must be given together")
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load --ca-file {ca_file}: {exc}") from None
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load --cert-file {cert_file} / --key-file {key_file}: {exc}") from None
    return ctx


class _Retry:
    """Back-off and deadline for one operation that keeps failing over."""

    __slots__ = ("_attempt", "_deadline", "_deadline_s", "_endpoints", "failures")

    def __init__(self, deadline_s: float, endpoints: list[str]) -> None:
        self._attempt = 0
        self._deadline_s = deadline_s
        self._deadline = time.monotonic() + deadline_s
        self._endpoints = endpoints
        self.failures: list[str] = []

    async def pause(self, endpoint: str, failure: BaseException) -> None:
        """Wait before the next attempt, or raise ClusterUnavailable when out of time."""
        self._attempt += 1
        self.failures.append(f"{endpoint}: {str(failure) or type(failure).__name__}")
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            last = self.failures[-len(self._endpoints) :]
            raise ClusterUnavailable(
                f"no endpoint of {', '.join(self._endpoints)} answered within {self._deadline_s:g}s "
                f"({self._attempt} attempts); last errors: {'; '.join(last)}"
            ) from failure
        # Try every endpoint once at once, then back off exponentially.
        n = len(self._endpoints)
        if self._attempt >= n:
            delay = min(_BACKOFF_FIRST * 2 ** (self._attempt - n), _BACKOFF_MAX, remaining)
            await asyncio.sleep(delay)


class KVClient:
    """etcd v2 client over a list of endpoints; sticks to one and moves on when it fails."""

    def __init__(
        self,
        endpoints: list[str] | str,
        *,
        timeout: float = 5.0,
        retry_deadline: float = 10.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        # https endpoints: verified against ca_file (default: the system's CAs), and cert_file/
        # key_file identify this client to a store started with --client-cert-auth.
        self._ssl: ssl.SSLContext | bool = ssl_context or tls_context(ca_file, cert_file, key_file) or True
        self.timeout = timeout
        self.retry_deadline = retry_deadline
        self._current = 0
        # Bound the endpoint (connecting, silence while answering), not time queued for a pooled
        # connection: a long queue in this process is no reason to fail over.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        # A watch may wait for its event as long as it likes; only connecting is bounded.
        self._watch_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._streams: dict[str, bool] = {}  # endpoint -> does it stream (X-Grove-Stream)?

    @property
    def current_endpoint(self) -> str:
        """The endpoint the next request goes to first."""
        return self.endpoints[self._current]

    def _open_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            # Bounded: a burst of thousands of requests reuses connections instead of opening one each.
            connector = aiohttp.TCPConnector(limit=_MAX_CONNECTIONS, ttl_dns_cache=300, ssl=self._ssl)
            session = self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return session

    def _open_watch_session(self) -> aiohttp.ClientSession:
        session = self._watch_session
        if session is None or session.closed:
            # Unbounded and apart from requests: each watch holds its connection while it waits.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=self._ssl)
            session = self._watch_session = aiohttp.ClientSession(
                connector=connector, timeout=self._watch_timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return session

    def _fail_over(self, index: int) -> None:
        # Concurrent requests failing on the same endpoint move the client one step, not several.
        if self._current == index:
            self._current = (index + 1) % len(self.endpoints)

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        """One request with failover; returns (status, headers, body) of the first non-5xx answer."""
        session = self._session
        if session is None or session.closed:
            session = self._open_session()
        retry = None
        while True:
            index = self._current
            endpoint = self.endpoints[index]
            try:
                async with session.request(
                    method, URL(endpoint + path, encoded=True), data=body, headers=headers
                ) as resp:
                    data = await resp.read()
                    if resp.status < 500:
                        return resp.status, resp.headers, data
                    failure: BaseException = error_from_response(resp.status, resp.headers, data, path)
            except _CONNECTION_ERRORS as exc:
                failure = exc
            self._fail_over(index)
            if retry is None:
                retry = _Retry(self.retry_deadline, self.endpoints)
            await retry.pause(endpoint, failure)

    async def _call_one(self, endpoint: str, path: str) -> tuple[int, bytes]:
        """GET from one given endpoint, no failover."""
        session = self._open_session()
        async with session.get(URL(endpoint.rstrip("/") + path, encoded=True)) as resp:
            return resp.status, await resp.read()

    async def _keys(self, method: str, path: str, body: bytes | None = None) -> EtcdResponse:
        status, headers, data = await self._call(method, path, body, _FORM if body is not None else None)
        if status >= 300:
            raise error_from_response(status, headers, data, path)
        doc = orjson.loads(data)
        node = doc["node"]
        index = headers.get("X-Etcd-Index")
        raft_index = headers.get("X-Raft-Index")
        raft_term = headers.get("X-Raft-Term")
        return EtcdResponse(
            doc["action"],
            node,
            doc.get("prevNode"),
            int(index) if index else node.get("modifiedIndex", 0),
            int(raft_index) if raft_index else None,
            int(raft_term) if raft_term else None,
        )

    # --- keys -------------------------------------------------------------------------------

    async def get(
        self, key: str, *, recursive: bool = False, sorted: bool = False, quorum: bool = False
    ) -> EtcdResponse:
        path = key_path(key)
        if recursive or sorted or quorum:
            query = []
            if recursive:
                query.append("recursive=true")
            if sorted:
                query.append("sorted=true")
            if quorum:
                query.append("quorum=true")
            path += "?" + "&".join(query)
        return await self._keys("GET", path)

    async def set(
        self,
        key: str,
        value: str,
        *,
        ttl: int | None = None,
        prev_exist: bool | None = None,
        prev_value: str | None = None,
        prev_index: int | None = None,
        refresh: bool = False,
    ) -> EtcdResponse:
        """PUT a value. With refresh=True only the TTL is renewed: the value is not sent (etcd refuses one)."""
        form = ["refresh=true"] if refresh else ["value=" + form_escape(value)]
        if ttl is not None:
            form.append(f"ttl={int(ttl)}")
        if prev_exist is not None:
            form.append("prevExist=true" if prev_exist else "prevExist=false")
        if prev_value is not None:
            form.append("prevValue=" + form_escape(prev_value))
        if prev_index is not None:
            form.append(f"prevIndex={int(prev_index)}")
        return await self._keys("PUT", key_path(key), "&".join(form).encode())

    async def create(self, key: str, value: str, *, ttl: int | None = None) -> EtcdResponse:
        """Set only if the key does not exist (EtcdError 105 otherwise)."""
        return await self.set(key, value, ttl=ttl, prev_exist=False)

    async def update(self, key: str, value: str, *, ttl: int | None = None) -> EtcdResponse:
        """Set only if the key exists (EtcdError 100 otherwise)."""
        return await self.set(key, value, ttl=ttl, prev_exist=True)

    async def compare_and_swap(
        self,
        key: str,
        value: str,
        *,
        prev_value: str | None = None,
        prev_index: int | None = None,
        ttl: int | None = None,
    ) -> EtcdResponse:
        """Set only if the current value / modifiedIndex match (EtcdError 101 otherwise)."""
        if prev_value is None and prev_index is None:
            raise ValueError("compare_and_swap needs prev_value or prev_index")
        return await self.set(key, value, ttl=ttl, prev_value=prev_value, prev_index=prev_index)

    async def mkdir(self, key: str, *, ttl: int | None = None) -> EtcdResponse:
        """Create a directory (EtcdError 105 if the key exists)."""
        form = "dir=true&prevExist=false" if ttl is None else f"dir=true&prevExist=false&ttl={int(ttl)}"
        return await self._keys("PUT", key_path(key), form.encode())

    async def append(self, dir_key: str, value: str, *, ttl: int | None = None) -> EtcdResponse:
        """Create an in-order key under `dir_key` (POST); its name is the store index."""
        form = "value=" + form_escape(value)
        if ttl is not None:
            form += f"&ttl={int(ttl)}"
        return await self._keys("POST", key_path(dir_key), form.encode())

    async def delete(
        self,
        key: str,
        *,
        recursive: bool = False,
        dir: bool = False,
        prev_value: str | None = None,
        prev_index: int | None = None,
    ) -> EtcdResponse:
        path = key_path(key)
        query = []
        if recursive:
            query.append("recursive=true")
        if dir:
            query.append("dir=true")
        if prev_value is not None:
            query.append("prevValue=" + quote_plus(prev_value))
        if prev_index is not None:
            query.append(f"prevIndex={int(prev_index)}")
        if query:
            path += "?" + "&".join(query)
        return await self._keys("DELETE", path)

    # --- watches ------------------------------------------------------------------------------

    async def watch(
        self, key: str, *, index: int | None = None, recursive: bool = False, timeout: float | None = None
    ) -> EtcdResponse:
        """The first event at or after `index` (long-poll). TimeoutError after `timeout` seconds."""
        events = self._events(key, index, recursive, stream=False)
        try:
            if timeout is None:
                return await anext(events)
            async with asyncio.timeout(timeout):
                return await anext(events)
        finally:
            await events.aclose()

    def watch_stream(
        self, key: str, *, index: int | None = None, recursive: bool = False
    ) -> AsyncIterator[EtcdResponse]:
        """Every event from `index` on, in index order, none dropped; EtcdError 401 if it was cleared."""
        return self._events(key, index, recursive, stream=True)

    async def _events(
        self, key: str, index: int | None, recursive: bool, stream: bool
    ) -> AsyncIterator[EtcdResponse]:
        base = key_path(key) + ("?wait=true&recursive=true" if recursive else "?wait=true")
        session = self._open_watch_session()
        next_index = index
        retry = None
        idle = 0  # answers in a row that ended without an event
        while True:
            endpoint_index = self._current
            endpoint = self.endpoints[endpoint_index]
            ask_stream = stream and self._streams.get(endpoint, True)
            url = endpoint + base
            if next_index is not None:
                url += f"&waitIndex={next_index}"
            if ask_stream:
                url += "&stream=true"
            failure: BaseException | None = None
            event = None
            read_all = False  # a fully read answer leaves its connection reusable
            try:
                resp = await session.get(URL(url, encoded=True))
            except _CONNECTION_ERRORS as exc:
                failure = exc
            else:
                try:
                    if resp.status != 200:
                        data = await resp.read()
                        read_all = True
                        failure = error_from_response(resp.status, resp.headers, data, base)
                        if resp.status < 500:
                            raise failure
                    else:
                        retry = None  # the cluster answers: the deadline starts again at the next failure
                        headers = resp.headers
                        raft_index = _int_header(headers, "X-Raft-Index")
                        raft_term = _int_header(headers, "X-Raft-Term")
                        if next_index is None:
                            # The store index when the watch began: resuming after it misses nothing.
                            start = _int_header(headers, "X-Etcd-Index")
                            if start is not None:
                                next_index = start + 1
                        if ask_stream and headers.get("X-Grove-Stream") == "1":
                            idle += 1  # until an event arrives on this connection
                            lines = LineSplitter()
                            async for chunk in resp.content.iter_any():
                                for line in lines.feed(chunk):
                                    item = _event(line, raft_index, raft_term)
                                    if item is not None:
                                        idle = 0
                                        next_index = item.etcd_index + 1
                                        yield item
                            item = _event(lines.rest(), raft_index, raft_term)
                            if item is not None:
                                idle = 0
                                next_index = item.etcd_index + 1
                                yield item
                            # The server ended the stream: reconnect and resume at next_index.
                        else:
                            if ask_stream:
                                # Not grove: take the first event and hang up, as etcd may keep streaming
                                # (or stay silent after one historic event); long-poll from now on.
                                self._streams[endpoint] = False
                                event = await _first_event(resp, raft_index, raft_term)
                            else:
                                event = _event(await resp.read(), raft_index, raft_term)
                                read_all = True
                            if event is None:
                                idle += 1
                except EtcdError as exc:
                    if not 300 <= exc.error_code < 400:
                        raise
                    failure = exc  # raft trouble (e.g. leader election) reported inside a stream
                except _CONNECTION_ERRORS as exc:
                    failure = exc
                finally:
                    if read_all:
                        resp.release()
                    else:
                        resp.close()
            if event is not None:
                idle = 0
                next_index = event.etcd_index + 1
                yield event
                continue
            if failure is not None:
                self._fail_over(endpoint_index)
                if retry is None:
                    retry = _Retry(self.retry_deadline, self.endpoints)
                await retry.pause(endpoint, failure)
            elif idle:
                # A clean answer without an event: don't spin if the server keeps doing that.
                await asyncio.sleep(min(_BACKOFF_FIRST * 2 ** (idle - 1), _BACKOFF_MAX))

    # --- cluster ------------------------------------------------------------------------------

    async def members(self) -> list[dict[str, Any]]:
        """The cluster's members: [{id, name, peerURLs, clientURLs}]."""
        status, headers, data = await self._call("GET", "/v2/members")
        if status != 200:
            raise error_from_response(status, headers, data, "/v2/members")
        return orjson.loads(data)["members"]

    async def add_member(self, peer_urls: list[str]) -> dict[str, Any]:
        """Announce a new member by its peer URLs; returns its member entry (with its id)."""
        body = orjson.dumps({"peerURLs": list(peer_urls)})
        status, headers, data = await self._call("POST", "/v2/members", body, _JSON)
        if status not in (200, 201):
            raise error_from_response(status, headers, data, "/v2/members")
        return orjson.loads(data)

    async def remove_member(self, member_id: str) -> None:
        status, headers, data = await self._call("DELETE", f"/v2/members/{quote(member_id, safe='')}")
        if status not in (200, 204):
            raise error_from_response(status, headers, data, "/v2/members")

    async def leader(self) -> dict[str, Any] | None:
        """The member entry of the current leader, as the answering member sees it; None if none."""
        status, headers, data = await self._call("GET", "/v2/stats/self")
        if status != 200:
            raise error_from_response(status, headers, data, "/v2/stats/self")
        leader_id = (orjson.loads(data).get("leaderInfo") or {}).get("leader")
        if not leader_id:
            return None
        for member in await self.members():
            if member.get("id") == leader_id:
                return member
        return None

    async def health(self, endpoint: str | None = None) -> bool:
        """/health of one endpoint; without one, True if any endpoint reports healthy. Never raises
        for an endpoint that does not answer."""
        endpoints = (
            [endpoint] if endpoint else self.endpoints[self._current :] + self.endpoints[: self._current]
        )
        for candidate in endpoints:
            try:
                status, data = await self._call_one(candidate, "/health")
                if status == 200 and orjson.loads(data).get("health") in ("true", True):
                    return True
            except (*_CONNECTION_ERRORS, orjson.JSONDecodeError, AttributeError):
                continue
        return False

    async def version(self, endpoint: str | None = None) -> dict[str, Any]:
        """/version, e.g. {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}."""
        if endpoint is None:
            status, headers, data = await self._call("GET", "/version")
        else:
            try:
                status, data = await self._call_one(endpoint, "/version")
            except _CONNECTION_ERRORS as exc:
                raise ClusterUnavailable(f"{endpoint} did not answer: {exc}") from exc
            headers = None
        if status != 200:
            raise error_from_response(status, headers, data, "/version")
        return orjson.loads(data)

    async def close(self) -> None:
        sessions = (self._session, self._watch_session)
        self._session = self._watch_session = None
        for session in sessions:
            if session is not None:
                await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def _first_event(
    resp: aiohttp.ClientResponse, raft_index: int | None, raft_term: int | None
) -> EtcdResponse | None:
    """The first event of a body that may go on (etcd's own stream=true): read up to its newline."""
    lines = LineSplitter()
    async for chunk in resp.content.iter_any():
        for line in lines.feed(chunk):
            event = _event(line, raft_index, raft_term)
            if event is not None:
                return event
    return _event(lines.rest(), raft_index, raft_term)


async def _next_or_none(events: AsyncIterator[T]) -> T | None:
    return await anext(events, None)


async def _aclose(events: Any) -> None:
    await events.aclose()


def _blocking(
    method: Callable[Concatenate[KVClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncKVClient, P], T]:
    """SyncKVClient's version of a KVClient coroutine method: same signature and docs, blocking."""

    @functools.wraps(method)
    def run(self: SyncKVClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._client, *args, **kwargs))

    return run


class SyncKVClient:
    """Blocking wrapper of KVClient for scripts and tests: an event loop of its own in a thread."""

    def __init__(
        self,
        endpoints: list[str] | str,
        *,
        timeout: float = 5.0,
        retry_deadline: float = 10.0,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._client = KVClient(
            endpoints, timeout=timeout, retry_deadline=retry_deadline, ca_file=ca_file, cert_file=cert_file,
            key_file=key_file, ssl_context=ssl_context,
        )  # fmt: skip
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grove-kv-client", daemon=True)
        self._thread.start()

    @property
    def endpoints(self) -> list[str]:
        return self._client.endpoints

    @property
    def current_endpoint(self) -> str:
        return self._client.current_endpoint

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop.is_closed():
            coro.close()
            raise RuntimeError("SyncKVClient is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: stop the work in the loop too
            raise

    # Each blocking method is the async one of the same name, run on this client's loop.
    get = _blocking(KVClient.get)
    set = _blocking(KVClient.set)
    create = _blocking(KVClient.create)
    update = _blocking(KVClient.update)
    compare_and_swap = _blocking(KVClient.compare_and_swap)
    mkdir = _blocking(KVClient.mkdir)
    append = _blocking(KVClient.append)
    delete = _blocking(KVClient.delete)
    watch = _blocking(KVClient.watch)
    members = _blocking(KVClient.members)
    add_member = _blocking(KVClient.add_member)
    remove_member = _blocking(KVClient.remove_member)
    leader = _blocking(KVClient.leader)
    health = _blocking(KVClient.health)
    version = _blocking(KVClient.version)

    def watch_stream(
        self, key: str, *, index: int | None = None, recursive: bool = False
    ) -> Iterator[EtcdResponse]:
        events = self._client.watch_stream(key, index=index, recursive=recursive)
        try:
            while True:
                event = self._run(_next_or_none(events))
                if event is None:
                    return
                yield event
        finally:
            if not self._loop.is_closed():
                try:
                    self._run(_aclose(events))
                except RuntimeError:
                    pass  # still finishing a cancelled step; the loop's shutdown closes it

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
            self._run(self._loop.shutdown_asyncgens())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
