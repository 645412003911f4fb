"""A lean HTTP/1.1 server for the client port: httptools' parser under an asyncio Protocol.

A member's reads are cheap (a dict walk and one orjson dump), so with a general web framework in
front most of a request's time went into the framework: request objects, routing, middleware,
header multidicts, a task per request. This module does only what the etcd v2 client API needs:
keep-alive, pipelining (answers go out in request order), bodies by Content-Length or chunked,
HEAD, `Expect: 100-continue`, and chunked streaming responses for watches. With an SSL context a
listening socket serves https: the event loop's TLS transport sits under the same Protocol.

The handler is one callable `handler(request)`. It answers synchronously with a `Response` when it
can (a default read never leaves the `data_received` call that brought it in), or returns an
awaitable that resolves to a `Response`, or to None after streaming its answer through
`request.stream(...)`. A connection runs at most one awaitable at a time; requests that arrive
meanwhile wait their turn, so pipelined writes keep their order.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate

import httptools
from yarl import URL

log = logging.getLogger("grove.kv.http")

_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
    413: "Request Entity Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}  # fmt: skip
_STATUS_LINES: dict[int, bytes] = {}
_MAX_QUEUED = 32  # pipelined requests held per connection before reading from it pauses
_MAX_HEAD = 64 * 1024  # request line plus headers; more is refused (Go's default limit is 1 MiB)
_SPLIT_WRITE = 64 * 1024  # bodies at least this large go out without being copied behind the head


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()
    return line


class _HeadTooLarge(Exception):
    """Raised inside the parser's callbacks to stop reading an oversized request head."""


class _Clock:
    """The `Date` header, formatted once per second rather than once per response."""

    __slots__ = ("second", "header")

    def __init__(self) -> None:
        self.second = -1
        self.header = b""

    def date(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.second = second
            self.header = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.header


class Response:
    """A complete answer: status, headers and body.

    Headers are a dict (name -> value) or, on hot paths, a block already encoded for the wire
    (`b"Name: value\\r\\n..."`).
    """

    __slots__ = ("status", "headers", "body")

    def __init__(self, body: bytes = b"", status: int = 200, headers: dict[str, str] | bytes | None = None):
        self.body = body
        self.status = status
        self.headers = headers if headers is not None else {}


def text_response(text: str, status: int, headers: dict[str, str] | None = None) -> Response:
    h = {"Content-Type": "text/plain; charset=utf-8"}
    if headers:
        h.update(headers)
    return Response(text.encode(), status, h)


class Request:
    """What a handler sees of one request. `path` is percent-decoded, `query` is the raw query."""

    __slots__ = ("method", "raw_path", "path", "query", "headers", "body", "body_too_large", "version",
                 "keep_alive", "match", "_conn")  # fmt: skip

    def __init__(self, conn: HttpProtocol, method: str, target: str, headers: dict[str, str], body: bytes,
                 body_too_large: bool, version: str, keep_alive: bool) -> None:  # fmt: skip
        self._conn = conn
        self.method = method
        if not target.startswith("/"):  # absolute form: GET http://host/path HTTP/1.1
            url = URL(target)
            target = url.raw_path_qs
        raw_path, _, query = target.partition("?")
        self.raw_path = raw_path.partition("#")[0]
        self.query = query.partition("#")[0]
        # Decode the path as aiohttp (yarl) does: %2F becomes "/", invalid UTF-8 escapes stay as they are.
        self.path = (
            self.raw_path if "%" not in self.raw_path else URL.build(path=self.raw_path, encoded=True).path
        )
        self.headers = headers
        self.body = body
        self.body_too_large = body_too_large
        self.version = version
        self.keep_alive = keep_alive
        self.match: dict[str, str] = {}

    @property
    def path_qs(self) -> str:
        return self.raw_path + ("?" + self.query if self.query else "")

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower case; `application/octet-stream` when absent."""
        value = self.headers.get("content-type")
        if value is None:
            return "application/octet-stream"
        return value.partition(";")[0].strip().lower()

    def stream(self, status: int, headers: dict[str, str]) -> StreamWriter:
        """Send the status and headers now; the body follows in chunks (see `StreamWriter`)."""
        return self._conn.start_stream(self, status, headers)


class StreamWriter:
    """The body of a streamed answer: chunked on HTTP/1.1, until the connection closes on 1.0."""

    __slots__ = ("_conn", "_chunked", "_head", "closed")

    def __init__(self, conn: HttpProtocol, chunked: bool, head: bool) -> None:
        self._conn = conn
        self._chunked = chunked
        self._head = head
        self.closed = False

    async def write(self, data: bytes) -> None:
        if not data or self._head:
            return
        conn = self._conn
        if conn.transport is None or conn.transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        conn.transport.write(data)
        if conn.write_paused:
            await conn.drained()

    def end(self) -> None:
        if self.closed:
            return
        self.closed = True
        conn = self._conn
        if (
            conn.transport is not None
            and not conn.transport.is_closing()
            and self._chunked
            and not self._head
        ):
            conn.transport.write(b"0\r\n\r\n")


Handler = Callable[[Request], "Response | Awaitable[Response | None]"]


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.write_paused = False
        self._drain: asyncio.Future | None = None
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task | None = None  # the awaitable answer now running, if any
        self._streaming: StreamWriter | None = None
        self._reading_paused = False
        self._closing = False

    # ------------------------------------------------------------- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # a watch waiting for events has nobody to tell any more
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the client closed the connection"))
            self._drain.exception()  # retrieved here, so an unawaited one is not reported

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drained(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()
        await self._drain

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the request was answered as plain HTTP/1.1; grove speaks no other protocol here
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._bad_request(f"431: Request Header Fields Too Large (limit {_MAX_HEAD} bytes)", 431)
            else:
                self._bad_request(f"400: Bad Request ({exc.__context__ or exc})")
        except httptools.HttpParserError as exc:
            self._bad_request(f"400: Bad Request ({exc})")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # --------------------------------------------------------- parser events
    def on_message_begin(self) -> None:
        self._url = []
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > _MAX_HEAD:
            raise _HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > _MAX_HEAD:
            raise _HeadTooLarge
        key = name.decode("latin-1").lower()
        if key not in self._headers:  # the first value wins, like Go's Header.Get
            self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if (
            self._headers.get("expect", "").lower() == "100-continue"
            and self.parser.get_http_version() == "1.1"
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size <= self.server.max_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        size = self._body_size
        too_large = size > self.server.max_body
        body = b"" if too_large else (self._body[0] if len(self._body) == 1 else b"".join(self._body))
        req = Request(
            self,
            parser.get_method().decode("latin-1"),
            b"".join(self._url).decode("utf-8", "surrogateescape"),
            self._headers,
            body,
            too_large,
            parser.get_http_version(),
            parser.should_keep_alive(),
        )
        if self._closing:
            return
        if self._task is not None or self._queue:
            self._queue.append(req)
            if len(self._queue) >= _MAX_QUEUED and self.transport is not None:
                self.transport.pause_reading()
                self._reading_paused = True
            return
        self._dispatch(req)

    # ----------------------------------------------------------- answering
    def _dispatch(self, req: Request) -> None:
        try:
            result = self.server.handler(req)
        except Exception as exc:
            result = self.server.internal_error(req, exc)
        if type(result) is Response:
            self._send(req, result)
        else:
            self._task = self.loop.create_task(self._run(req, result))  # type: ignore[arg-type]

    async def _run(self, req: Request, answer: Awaitable[Response | None]) -> None:
        try:
            try:
                result = await answer
            except asyncio.CancelledError:
                raise
            except ConnectionError:  # the client went away mid-stream: nobody left to answer
                self._closing = True
                self.close()
                return
            except Exception as exc:
                if self._streaming is not None:
                    log.exception("internal error streaming %s %s", req.method, req.path)
                    self._closing = True
                    self.close()
                    return
                result = self.server.internal_error(req, exc)
            if result is not None:
                self._send(req, result)
            elif self._streaming is not None:
                self._end_stream()
        finally:
            self._task = None
        self._next()

    def _next(self) -> None:
        while self._queue and self._task is None and not self._closing and self.transport is not None:
            self._dispatch(self._queue.popleft())
        if self._reading_paused and len(self._queue) < _MAX_QUEUED // 2 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def _head(self, status: int, headers: dict[str, str] | bytes, extra: bytes) -> bytes:
        if type(headers) is bytes:
            return b"".join((_status_line(status), self.server.clock.date(), headers, extra))
        parts = [_status_line(status), self.server.clock.date()]
        for name, value in headers.items():  # type: ignore[union-attr]
            parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        parts.append(extra)
        return b"".join(parts)

    def _send(self, req: Request, resp: Response) -> None:
        self.server.count(req.method, resp.status)
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = resp.body
        keep_alive = req.keep_alive and not self._closing
        head_only = req.method == "HEAD"
        # A HEAD answer built without a body says nothing about length, as etcd's do not either.
        extra = b"Content-Length: %d\r\n" % len(body) if body or not head_only else b""
        if not keep_alive:
            extra += b"Connection: close\r\n"
        elif req.version == "1.0":
            extra += b"Connection: keep-alive\r\n"
        head = self._head(resp.status, resp.headers, extra + b"\r\n")
        if head_only or not body:
            transport.write(head)
        elif len(body) < _SPLIT_WRITE:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        if not keep_alive:
            self._closing = True
            transport.close()

    def start_stream(self, req: Request, status: int, headers: dict[str, str]) -> StreamWriter:
        self.server.count(req.method, status)
        head = req.method == "HEAD"
        chunked = req.version == "1.1"
        if head:  # no body follows, so no framing either
            extra = b"" if req.keep_alive else b"Connection: close\r\n"
        else:
            extra = b"Transfer-Encoding: chunked\r\n" if chunked else b"Connection: close\r\n"
        if not req.keep_alive or not (chunked or head):
            self._closing = True
        writer = self._streaming = StreamWriter(self, chunked, head)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._head(status, headers, extra + b"\r\n"))
        return writer

    def _end_stream(self) -> None:
        writer, self._streaming = self._streaming, None
        if writer is not None:
            writer.end()
        if self._closing:
            self.close()

    def _bad_request(self, text: str, status: int = 400) -> None:
        self.server.count("UNKNOWN", status)
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            if self._task is None and not self._queue:
                body = text.encode()
                self.transport.write(
                    self._head(status, {"Content-Type": "text/plain; charset=utf-8"},
                               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)) + body
                )  # fmt: skip
            self.transport.close()


class HttpServer:
    """Serves `handler` on one or more listening sockets of this event loop."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body: int,
        count: Callable[[str, int], None] | None = None,
        internal_error: Callable[[Request, Exception], Response] | None = None,
    ) -> None:
        self.handler = handler
        self.max_body = max_body
        self.count = count or (lambda method, status: None)
        self.internal_error = internal_error or _internal_error
        self.clock = _Clock()
        self.connections: set[HttpProtocol] = set()
        self.loop = asyncio.get_running_loop()
        self._servers: list[asyncio.base_events.Server] = []

    async def listen(
        self, host: str | None, port: int, backlog: int = 1024, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        """Accept connections on host:port; with `ssl`, every connection is TLS (https)."""
        srv = await self.loop.create_server(
            lambda: HttpProtocol(self), host, port, backlog=backlog, reuse_address=True, ssl=ssl,
            ssl_handshake_timeout=10.0 if ssl is not None else None,
        )  # fmt: skip
        self._servers.append(srv)

    @property
    def ports(self) -> list[int]:
        return [s.getsockname()[1] for srv in self._servers for s in srv.sockets]

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            conn.close()
        for srv in self._servers:
            await srv.wait_closed()
        self._servers.clear()


def _internal_error(req: Request, exc: Exception) -> Response:
    log.error("internal error serving %s %s", req.method, req.path, exc_info=exc)
    return text_response("500: Internal Server Error", 500)
