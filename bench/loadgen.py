"""The load generator of `grove bench kv`: etcd v2 HTTP requests from worker processes.

A benchmark is only as good as its client. This one must not be the bottleneck, and a reader must be
able to check that, so the load runs in separate worker processes (2 by default), each an uvloop event
loop with one keep-alive HTTP/1.1 connection per simulated client, speaking raw `asyncio.Protocol`
(no HTTP library on the hot path: requests are pre-encoded bytes, responses are framed by
Content-Length or chunked encoding and only the status code is parsed). Every worker reports the CPU
seconds it used over the wall seconds it ran, so a worker near 1.0 (one full core) says "the client
was the limit here".

Clients are closed loops: send, wait for the answer, send again. Ops that complete inside the
measured window (after a warm-up) count; latencies are per request.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Self
from urllib.parse import urlsplit

OPS = ("write", "read", "quorum-read")
KEY_PREFIX = "/bench/kv/k"
_WATCHDOG_PERIOD = 0.1  # seconds between two looks for requests that outlived the timeout
_RECONNECT_PAUSE = 0.05  # back-off after a failed connect, so a dead member is not hammered


@dataclass
class LoadSpec:
    """One cell: `clients` closed-loop clients doing `op`; client i talks to endpoints[i % len]."""

    op: str
    clients: int
    endpoints: list[str]
    duration: float = 3.0
    warmup: float = 0.5
    keys: int = 1000
    value_size: int = 64
    timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {', '.join(OPS)}, not {self.op!r}")
        if self.clients < 1:
            raise ValueError("clients must be at least 1")
        if not self.endpoints:
            raise ValueError("at least one endpoint is needed")


@dataclass
class WorkerReport:
    """What one worker process measured in the window."""

    ok: int
    errors: int
    latencies: bytes  # array('d') of seconds, one per ok op
    cpu_s: float
    wall_s: float
    error_samples: list[str] = field(default_factory=list)


@dataclass
class LoadResult:
    """A cell's outcome, merged over the workers."""

    spec: LoadSpec
    ok: int
    errors: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    worker_cpu: list[float]  # CPU seconds / wall seconds, per worker that had clients
    error_samples: list[str]
    probe_rates: dict[str, float] = field(default_factory=dict)

    @property
    def loadgen_cpu(self) -> float:
        """The busiest worker's share of one core (1.0 = saturated)."""
        return max(self.worker_cpu, default=0.0)


def key_name(i: int) -> str:
    return f"{KEY_PREFIX}{i:04d}"


def value_for(i: int, size: int = 64) -> str:
    """A `size`-byte value that differs per key (form-safe characters only)."""
    return f"v{i:04d}".ljust(size, "x")[:size]


def percentile(sorted_values: list[float] | array, q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0 when empty)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = max(1, min(n, int(q / 100.0 * n + 0.999999)))
    return sorted_values[rank - 1]


# --- requests ---------------------------------------------------------------------------------


def build_requests(spec: LoadSpec, endpoint: str) -> list[bytes]:
    """Pre-encoded requests, one per key, for `spec.op` against `endpoint`."""
    parts = urlsplit(endpoint)
    host = parts.netloc
    requests = []
    for i in range(spec.keys):
        path = "/v2/keys" + key_name(i)
        if spec.op == "write":
            body = b"value=" + value_for(i, spec.value_size).encode()
            requests.append(
                f"PUT {path} HTTP/1.1\r\nHost: {host}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        else:
            query = "?quorum=true" if spec.op == "quorum-read" else ""
            requests.append(f"GET {path}{query} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return requests


def response_length(buf: bytes | bytearray) -> int:
    """Bytes of the first complete HTTP/1.1 response in `buf`, or 0 if it is not complete yet."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = bytes(buf[:end]).lower()
    body_start = end + 4
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        total = body_start + length
        return total if len(buf) >= total else 0
    if b"transfer-encoding: chunked" in head:
        pos = body_start
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return 0
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", line_end)  # no trailers: right after "0\r\n"
                if trailer_end < 0:
                    return 0
                return trailer_end + 4
            pos = line_end + 2 + size + 2
            if pos > len(buf):
                return 0
    return body_start  # no body (204, 304) — the servers here never close-delimit


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.sent_at = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        n = response_length(buf)
        if n:
            status = int(buf[9:12])
            del buf[:n]
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def abort(self, exc: BaseException) -> None:
        self.closed = True
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def request(self, data: bytes) -> asyncio.Future[int]:
        """Send one request; the future resolves to the response's status code."""
        waiter = self.waiter = self.loop.create_future()
        self.sent_at = time.monotonic()
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter


# --- the worker process -------------------------------------------------------------------------


class _Worker:
    """The clients of one worker process for one cell."""

    def __init__(self, spec: LoadSpec, client_ids: list[int]) -> None:
        self.spec = spec
        self.client_ids = client_ids
        self.loop = asyncio.get_event_loop()
        self.endpoint_of = {c: spec.endpoints[c % len(spec.endpoints)] for c in client_ids}
        self.requests = {e: build_requests(spec, e) for e in set(self.endpoint_of.values())}
        self.conns: dict[int, HttpConnection] = {}
        self.latencies = array("d")
        self.ok = 0
        self.errors = 0
        self.error_samples: list[str] = []

    async def connect(self, client: int) -> HttpConnection:
        parts = urlsplit(self.endpoint_of[client])
        _, conn = await self.loop.create_connection(
            lambda: HttpConnection(self.loop), parts.hostname, parts.port
        )
        self.conns[client] = conn
        return conn

    async def open_all(self) -> None:
        await asyncio.gather(*(self.connect(c) for c in self.client_ids))

    def _error(self, counted: bool, what: str) -> None:
        if counted:
            self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    async def client(self, client: int, t_measure: float, t_end: float) -> None:
        requests = self.requests[self.endpoint_of[client]]
        n = len(requests)
        rng = random.Random(client)
        latencies = self.latencies
        monotonic = time.monotonic
        conn = self.conns[client]
        while True:
            t0 = monotonic()
            if t0 >= t_end:
                return
            if conn.closed:
                try:
                    conn = await self.connect(client)
                except OSError as exc:
                    self._error(monotonic() >= t_measure, f"connect: {exc}")
                    await asyncio.sleep(_RECONNECT_PAUSE)
                    continue
                t0 = monotonic()
            try:
                status = await conn.request(requests[rng.randrange(n)])
            except (OSError, TimeoutError) as exc:
                conn.abort(exc)
                self._error(t_measure <= monotonic() <= t_end, f"{type(exc).__name__}: {exc}")
                continue
            t1 = monotonic()
            if t_measure <= t1 <= t_end:
                if 200 <= status < 300:
                    latencies.append(t1 - t0)
                    self.ok += 1
                else:
                    self._error(True, f"HTTP {status}")

    async def watchdog(self, t_stop: float) -> None:
        """Fail requests that outlived the timeout (one timer for all, not one per request)."""
        timeout = self.spec.timeout
        while time.monotonic() < t_stop:
            await asyncio.sleep(_WATCHDOG_PERIOD)
            now = time.monotonic()
            for conn in list(self.conns.values()):
                if conn.waiter is not None and now - conn.sent_at > timeout:
                    conn.abort(TimeoutError(f"no answer within {timeout:g}s"))

    async def drive(self, t_start: float) -> WorkerReport:
        spec = self.spec
        t_measure = t_start + spec.warmup
        t_end = t_measure + spec.duration
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        watchdog = asyncio.ensure_future(self.watchdog(t_end + spec.timeout + 1.0))
        cpu = asyncio.ensure_future(_cpu_in_window(t_measure, t_end))
        try:
            await asyncio.gather(*(self.client(c, t_measure, t_end) for c in self.client_ids))
        finally:
            watchdog.cancel()
        cpu_s, wall_s = await cpu
        for conn in self.conns.values():
            if conn.transport is not None:
                conn.transport.close()
        return WorkerReport(self.ok, self.errors, self.latencies.tobytes(), cpu_s, wall_s, self.error_samples)


async def _cpu_in_window(t_from: float, t_to: float) -> tuple[float, float]:
    """CPU seconds this process used between two monotonic instants, and the wall seconds between."""
    await asyncio.sleep(max(0.0, t_from - time.monotonic()))
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(max(0.0, t_to - time.monotonic()))
    return time.process_time() - cpu0, time.monotonic() - wall0


def _worker_main(pipe: Connection) -> None:
    """Entry point of a worker process: run cells the parent sends until told to exit."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        while True:
            msg = pipe.recv()
            if msg[0] == "exit":
                return
            if msg[0] != "cell":
                continue  # a "cancel" for a cell this worker already gave up on
            _, spec, client_ids = msg
            worker = _Worker(spec, client_ids)
            try:
                loop.run_until_complete(worker.open_all())
            except OSError as exc:
                for conn in worker.conns.values():
                    conn.abort(ConnectionAbortedError("cancelled"))
                pipe.send(("error", f"cannot connect to {', '.join(spec.endpoints)}: {exc}"))
                continue
            pipe.send(("ready", None))
            go = pipe.recv()
            if go[0] != "go":
                for conn in worker.conns.values():
                    conn.abort(ConnectionAbortedError("cancelled"))
                continue
            pipe.send(("done", loop.run_until_complete(worker.drive(go[1]))))
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        loop.close()


class LoadGenerator:
    """A pool of worker processes that run one cell after another.

    with LoadGenerator(workers=2) as gen:
        result = gen.run(LoadSpec("write", 64, ["http://127.0.0.1:2379"]))
    """

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._pipes: list[Connection] = []

    def start(self) -> LoadGenerator:
        ctx = multiprocessing.get_context("spawn")  # no inherited threads or event loops
        for _ in range(self.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child,), daemon=True, name="grove-bench-loadgen")
            proc.start()
            child.close()
            self._procs.append(proc)
            self._pipes.append(parent)
        return self

    def run(self, spec: LoadSpec, probe: Callable[[], dict[str, float]] | None = None) -> LoadResult:
        """Run one cell on all workers at once and merge what they measured.

        `probe` returns cumulative figures by name (e.g. CPU seconds of the servers); it is read at
        the start and the end of the measured window and their rates are `LoadResult.probe_rates`.
        """
        if not self._procs:
            self.start()
        assignments = [
            (w, [c for c in range(spec.clients) if c % self.workers == w]) for w in range(self.workers)
        ]
        busy = [(w, ids) for w, ids in assignments if ids]
        for w, ids in busy:
            self._pipes[w].send(("cell", spec, ids))
        failures = []
        for w, _ in busy:
            reply = self._recv(w, 30.0 + spec.timeout)
            if reply[0] != "ready":
                failures.append(reply[1])
        if failures:
            for w, _ in busy:
                self._pipes[w].send(("cancel",))
            raise ConnectionError(failures[0])
        t_start = time.monotonic() + 0.05  # CLOCK_MONOTONIC is the same clock in every process
        for w, _ in busy:
            self._pipes[w].send(("go", t_start))
        probe_rates: dict[str, float] = {}
        if probe is not None:
            t_measure = t_start + spec.warmup
            time.sleep(max(0.0, t_measure - time.monotonic()))  # sample at the window's edges
            first, wall0 = probe(), time.monotonic()
            time.sleep(max(0.0, t_measure + spec.duration - time.monotonic()))
            last, wall = probe(), max(1e-9, time.monotonic() - wall0)
            probe_rates = {name: (last[name] - first[name]) / wall for name in first}
        reports: list[WorkerReport] = []
        for w, _ in busy:
            reply = self._recv(w, spec.warmup + spec.duration + 2 * spec.timeout + 30.0)
            reports.append(reply[1])
        latencies = array("d")
        for report in reports:
            latencies.frombytes(report.latencies)
        ordered = sorted(latencies)
        ok = sum(r.ok for r in reports)
        return LoadResult(
            spec=spec,
            ok=ok,
            errors=sum(r.errors for r in reports),
            ops_per_s=ok / spec.duration,
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            worker_cpu=[r.cpu_s / r.wall_s if r.wall_s > 0 else 0.0 for r in reports],
            error_samples=[s for r in reports for s in r.error_samples][:5],
            probe_rates=probe_rates,
        )

    def _recv(self, w: int, timeout: float) -> tuple:
        pipe = self._pipes[w]
        try:
            if not pipe.poll(timeout):
                raise TimeoutError(f"load generator worker {w} did not answer within {timeout:g}s")
            return pipe.recv()
        except (EOFError, OSError):
            code = self._procs[w].exitcode
            raise RuntimeError(
                f"load generator worker {w} exited (code {code}); see its output above"
            ) from None

    def close(self) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(("exit",))
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self._pipes:
            pipe.close()
        self._procs, self._pipes = [], []

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
