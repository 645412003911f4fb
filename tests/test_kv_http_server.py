"""HTTP/1.1 on the client port, spoken over raw sockets, against real etcd 3.4 and against grove.

grove answers the client port with its own small HTTP server (kvstore/httpserver.py), so the
protocol details a framework used to take care of are tested here on both backends: pipelined
requests answered in order, HTTP/1.0 and `Connection: close`, chunked request bodies,
`Expect: 100-continue`, chunked watch streams and what a client closing a watch leaves behind.
The last tests cover the request parsing helpers without sockets.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import orjson
import pytest
import requests

pytest.register_assert_rewrite("tests.kvbackends")  # before the import: keep pytest's assert messages

from kvstore.httpserver import Request  # noqa: E402
from tests.kvbackends import KVBackend, wait_for  # noqa: E402

pytest_plugins = ["tests.kvbackends"]  # the kv_cluster, kv_prefix, ... fixtures


class RawConnection:
    """One TCP connection to a member: send raw bytes, read framed HTTP/1.1 responses."""

    def __init__(self, url: str) -> None:
        u = urlparse(url)
        self.host = f"{u.hostname}:{u.port}"
        self.sock = socket.create_connection((u.hostname, u.port), timeout=10)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError("closed in the middle of a response")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed in the middle of a body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        """Status and headers (names in lower case) of the next response."""
        status = int(self._line().split(b" ")[1])
        headers = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def chunk(self) -> bytes:
        """The next chunk of a chunked body (b"" at its end)."""
        size = int(self._line().split(b";")[0], 16)
        data = self._exactly(size)
        assert self._line() == b"", "a chunk must end with CRLF"
        return data

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        if status == 100:
            return self.response()
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while data := self.chunk():  # the last chunk's CRLF ends the (empty) trailer too
                body += data
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        else:  # until the server closes the connection
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return status, headers, body

    def closed_by_peer(self) -> bool:
        """True once the server has closed its end (reads return EOF)."""
        try:
            return not self.buf and not self._fill()
        except ConnectionResetError:
            return True


@pytest.fixture
def conn_to(kv_cluster: KVBackend):
    conns: list[RawConnection] = []

    def connect(i: int = 0) -> RawConnection:
        c = RawConnection(kv_cluster.url(i))
        conns.append(c)
        return c

    try:
        yield connect
    finally:
        for c in conns:
            c.close()


def form_put(host: str, path: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def test_pipelined_requests_are_answered_in_order(kv_cluster: KVBackend, kv_prefix: str, conn_to) -> None:
    b = kv_cluster
    c = conn_to(b.leader_index())
    path = f"/v2/keys{kv_prefix}/p"
    requests_ = [
        f"GET {path} HTTP/1.1\r\nHost: {c.host}\r\n\r\n".encode(),
        form_put(c.host, path, b"value=1"),
        form_put(c.host, path + "?prevValue=1", b"value=2"),
        form_put(c.host, path + "?prevValue=1", b"value=3"),  # fails: the value is 2 by now
        f"GET {path} HTTP/1.1\r\nHost: {c.host}\r\n\r\n".encode(),
        f"HEAD {path} HTTP/1.1\r\nHost: {c.host}\r\n\r\n".encode(),
        f"DELETE {path}?prevValue=2 HTTP/1.1\r\nHost: {c.host}\r\n\r\n".encode(),
    ]
    c.send(b"".join(requests_))
    answers = []
    for r in requests_:
        if r.startswith(b"HEAD"):
            status, headers = c.head()
            assert int(headers.get("content-length", "0")) >= 0
            answers.append((status, None))
            continue
        status, headers, body = c.response()
        doc = orjson.loads(body)
        answers.append((status, doc.get("node", {}).get("value") if "node" in doc else doc.get("errorCode")))
    assert answers == [(404, 100), (201, "1"), (200, "2"), (412, 101), (200, "2"), (200, None), (200, None)]
    # and the connection is still good for another request
    c.send(f"GET {path} HTTP/1.1\r\nHost: {c.host}\r\n\r\n".encode())
    assert c.response()[0] == 404


def test_many_pipelined_writes_keep_their_order(kv_cluster: KVBackend, kv_prefix: str, conn_to) -> None:
    """More requests in one go than grove holds per connection: reading pauses, nothing is lost."""
    b = kv_cluster
    c = conn_to(b.leader_index())
    path = f"/v2/keys{kv_prefix}/seq"
    n = 100
    c.send(b"".join(form_put(c.host, path, f"value={i}".encode()) for i in range(n)))
    answers = []
    for _ in range(n):
        status, _, body = c.response()
        node = orjson.loads(body)["node"]
        answers.append((status, node["value"], node["modifiedIndex"]))
    assert [v for _, v, _ in answers] == [str(i) for i in range(n)]
    assert [s for s, _, _ in answers] == [201] + [200] * (n - 1)
    indexes = [i for _, _, i in answers]
    assert indexes == sorted(indexes) and len(set(indexes)) == n, "each write applied once, in order"


def test_http_1_0_and_connection_close_end_the_connection(
    kv_cluster: KVBackend, kv_prefix: str, conn_to
) -> None:
    for request in (
        f"GET /v2/keys{kv_prefix}/x HTTP/1.0\r\n\r\n",
        f"GET /v2/keys{kv_prefix}/x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    ):
        c = conn_to()
        c.send(request.encode())
        status, headers, body = c.response()
        assert status == 404 and orjson.loads(body)["errorCode"] == 100
        assert wait_for(c.closed_by_peer, 10, "the member to close the connection")


def test_chunked_request_body_is_a_form(kv_cluster: KVBackend, kv_prefix: str, conn_to) -> None:
    b = kv_cluster
    c = conn_to(b.leader_index())
    path = f"/v2/keys{kv_prefix}/chunked"
    c.send(
        f"PUT {path} HTTP/1.1\r\nHost: {c.host}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        "Transfer-Encoding: chunked\r\n\r\n4\r\nvalu\r\n8\r\ne=hello%\r\n2\r\n21\r\n0\r\n\r\n".encode()
    )
    status, _, body = c.response()
    assert status == 201 and orjson.loads(body)["node"]["value"] == "hello!", body


def test_expect_100_continue(kv_cluster: KVBackend, kv_prefix: str, conn_to) -> None:
    """curl sends `Expect: 100-continue` before large bodies and waits for the interim answer."""
    b = kv_cluster
    c = conn_to(b.leader_index())
    body = b"value=" + b"v" * 2048
    c.send(form_put(c.host, f"/v2/keys{kv_prefix}/big", body, "Expect: 100-continue\r\n")[: -len(body)])
    status, _ = c.head()
    assert status == 100
    c.send(body)
    status, headers, got = c.response()
    assert status == 201 and orjson.loads(got)["node"]["value"] == "v" * 2048
    assert headers["content-type"].startswith("application/json") and "x-etcd-index" in headers


def test_stream_watch_is_chunked_and_a_closed_watch_is_forgotten(
    kv_cluster: KVBackend, kv_prefix: str, conn_to
) -> None:
    b = kv_cluster
    leader = b.leader_index()
    stats = b.url(leader) + "/v2/stats/store"
    before = requests.get(stats, timeout=10).json()["watchers"]
    c = conn_to(leader)
    c.send(
        f"GET /v2/keys{kv_prefix}/dir?wait=true&recursive=true&stream=true HTTP/1.1\r\nHost: {c.host}\r\n\r\n"
        .encode()
    )  # fmt: skip
    status, headers = c.head()
    assert status == 200 and headers.get("transfer-encoding") == "chunked", headers
    assert "x-etcd-index" in headers
    wait_for(
        lambda: requests.get(stats, timeout=10).json()["watchers"] > before, 10, "the watch to be counted"
    )
    for v in ("1", "2"):
        r = requests.put(b.keys_url(f"{kv_prefix}/dir/k", leader), data={"value": v}, timeout=10)
        assert r.status_code in (200, 201)
    seen: list[str] = []
    pending = b""
    while len(seen) < 2:
        pending += c.chunk()
        *lines, pending = pending.split(b"\n")
        seen += [orjson.loads(line)["node"]["value"] for line in lines if line.strip()]
    assert seen == ["1", "2"]
    c.close()
    wait_for(
        lambda: requests.get(stats, timeout=10).json()["watchers"] == before,
        10,
        "the closed watch to go away",
    )


def test_long_poll_watch_then_keep_alive(kv_cluster: KVBackend, kv_prefix: str, conn_to) -> None:
    """After a long-poll answer the same connection serves the next request."""
    b = kv_cluster
    leader = b.leader_index()
    r = requests.put(b.keys_url(f"{kv_prefix}/w", leader), data={"value": "a"}, timeout=10)
    index = r.json()["node"]["modifiedIndex"]
    c = conn_to(leader)
    c.send(
        f"GET /v2/keys{kv_prefix}/w?wait=true&waitIndex={index} HTTP/1.1\r\nHost: {c.host}\r\n\r\n".encode()
    )
    status, _, body = c.response()
    assert status == 200 and orjson.loads(body)["node"]["value"] == "a"
    c.send(f"GET /v2/keys{kv_prefix}/w HTTP/1.1\r\nHost: {c.host}\r\n\r\n".encode())
    status, _, body = c.response()
    assert status == 200 and orjson.loads(body)["node"]["value"] == "a"


def test_oversized_request_head_is_refused_and_the_member_stays_up(grove_cluster: KVBackend) -> None:
    b = grove_cluster
    c = RawConnection(b.url())
    try:
        c.send(f"GET /v2/keys/x HTTP/1.1\r\nHost: {c.host}\r\nX-Big: {'a' * 70000}\r\n\r\n".encode())
        status, headers, _ = c.response()
        assert status == 431 and headers.get("connection") == "close"
    finally:
        c.close()
    b.assert_alive()


# --- request parsing, no sockets ------------------------------------------------------------------


def _request(target: str, headers: dict[str, str] | None = None) -> Request:
    return Request(None, "GET", target, headers or {}, b"", False, "1.1", True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target,path,query",
    [
        ("/v2/keys/a?recursive=true", "/v2/keys/a", "recursive=true"),
        ("/v2/keys/a%2Fb", "/v2/keys/a/b", ""),
        ("/v2/keys/x%20y?a=%25", "/v2/keys/x y", "a=%25"),
        ("/v2/keys/%C3%BC", "/v2/keys/ü", ""),
        ("/v2/keys/a%ffb", "/v2/keys/a%ffb", ""),  # not UTF-8: left as it came
        ("/v2/keys/a%00", "/v2/keys/a\x00", ""),
        ("/v2/keys/a+b", "/v2/keys/a+b", ""),
        ("http://host:2379/v2/keys/a?b=1", "/v2/keys/a", "b=1"),
    ],
)
def test_request_path_is_decoded_and_query_kept_raw(target: str, path: str, query: str) -> None:
    req = _request(target)
    assert (req.path, req.query) == (path, query)


@pytest.mark.parametrize(
    "header,expected",
    [
        (None, "application/octet-stream"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", "application/x-www-form-urlencoded"),
        ("application/json", "application/json"),
    ],
)
def test_content_type_is_the_bare_media_type(header: str | None, expected: str) -> None:
    req = _request("/v2/keys/a", {"content-type": header} if header is not None else {})
    assert req.content_type == expected
