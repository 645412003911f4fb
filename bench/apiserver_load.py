"""Load on the API server's scheduler path: create N pods, bind each through `pods/binding`, and
patch its status to Running the way a (hollow) node agent does.

Issue 6's scheduler benchmark is bounded by what the API server (and the store under it) can do
per pod: one create, one binding, and the watch events both fan out. This script measures just
that, with K requests in flight, and reports for each phase the rate and — so runs stay
comparable on a busy 2-core machine — the CPU milliseconds per operation of the API server
process and of each store member, read from /proc/<pid>/stat before and after the phase.

It starts what it needs (a 3-member store, one `grove apiserver`, both on free loopback ports)
unless `--server URL --server-pid PID --store-pids P,P,P` point it at running ones. Optional
watchers put the usual readers on the path: `--watchers` watches of all pods (the scheduler's
informer), `--node-watchers` watches of pods with `spec.nodeName=<node>` (node agents).
`--py-spy DIR` records a py-spy profile of the API server per phase (py-spy is not a grove
dependency: `pip install py-spy`).

    .venv/bin/python bench/apiserver_load.py --pods 5000 --inflight 64
    .venv/bin/python bench/apiserver_load.py --pods 5000 --node-watchers 200 --json out.json

The client is a small HTTP/1.1 keep-alive client over asyncio streams (one connection per request
in flight), so its own cost per request is a fraction of the server's; its CPU is reported too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kvstore.localcluster import GroveCluster, free_port  # noqa: E402

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children are not counted), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- a small HTTP/1.1 client ---------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        self.status = status
        self.body = body


class Connection:
    """One keep-alive connection: request, read the whole answer (Content-Length or chunked)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: application/json\r\n"
            "User-Agent: apiserver-load/1\r\n"
        )
        if body is not None:
            kind = "merge-patch+json" if method == "PATCH" else "json"
            head += f"Content-Type: application/{kind}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        reader = self.reader
        assert reader is not None
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = None
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            lname = name.strip().lower()
            if lname == b"content-length":
                length = int(value)
            elif lname == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(data[:-2])
            data = b"".join(parts)
        else:
            data = await reader.readexactly(length or 0)
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Target:
    url: str
    apiserver_pid: int
    store_pids: list[int]
    cleanup: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        for fn in reversed(self.cleanup):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - keep tearing down
                print(f"cleanup: {exc}", file=sys.stderr)


def start_target(extra_args: list[str], log_dir: str, root: str = ROOT) -> Target:
    """A 3-member store and an API server on free ports (stopped by Target.stop), both run from
    the source tree `root` (another checkout, for before/after comparisons)."""
    cluster = GroveCluster(3, log_dir=log_dir)
    target = Target("", 0, [], [])
    target.cleanup.append(cluster.stop)
    try:
        cluster.start()
        port = free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        log = open(os.path.join(log_dir, "apiserver.log"), "ab")  # noqa: SIM115 - closed by cleanup
        target.cleanup.append(log.close)
        args = [
            sys.executable, "-m", "orchestrator", "apiserver",
            "--etcd-servers", ",".join(cluster.client_urls),
            "--port", str(port), *extra_args,
        ]  # fmt: skip
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=root
        )

        def stop_proc() -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

        target.cleanup.append(stop_proc)
        target.url = f"http://127.0.0.1:{port}"
        target.apiserver_pid = proc.pid
        target.store_pids = [p.pid for p in cluster.procs if p is not None]
        wait_ready(target.url, proc)
    except BaseException:
        target.stop()
        raise
    return target


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"apiserver exited with {proc.returncode}")
        try:
            if requests.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"apiserver at {url} not ready within {timeout}s")


# --- the load --------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    phase: str
    ops: int
    errors: int
    seconds: float
    ops_per_s: float
    apiserver_cpu_ms_per_op: float
    store_cpu_ms_per_op: list[float]
    store_cpu_ms_per_op_total: float
    client_cpu_ms_per_op: float
    p50_ms: float
    p99_ms: float
    apiserver_rss_mb: float = 0.0
    first_error: str = ""


def pod_manifest(namespace: str, name: str) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench", "bench": "load"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox:latest",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }
                ]
            },
        }
    )


def binding_manifest(name: str, node: str) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
    )


def running_status(node: str, index: int) -> bytes:
    """The merge patch a (hollow) node agent sends to pods/status once the pod runs."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ip = f"10.{128 + index // 65536 % 64}.{index // 256 % 256}.{index % 256}"
    conditions = [
        {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
        for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    return orjson.dumps(
        {
            "status": {
                "phase": "Running",
                "conditions": conditions,
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "containerStatuses": [
                    {
                        "name": "app",
                        "state": {"running": {"startedAt": now}},
                        "lastState": {},
                        "ready": True,
                        "restartCount": 0,
                        "image": "busybox:latest",
                        "imageID": "fake://busybox:latest",
                        "containerID": f"fake://{node}-{index}",
                        "started": True,
                    }
                ],
            }
        }
    )


class Load:
    def __init__(self, target: Target, args: argparse.Namespace) -> None:
        self.target = target
        self.args = args
        host_port = target.url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.namespace = f"bench-{secrets.token_hex(3)}"
        self.watch_events = 0
        self.watch_tasks: list[asyncio.Task[None]] = []

    async def one(self, method: str, path: str, body: bytes | None = None) -> bytes:
        conn = Connection(self.host, self.port)
        try:
            status, data = await conn.request(method, path, body)
        finally:
            conn.close()
        if status >= 300:
            raise HttpError(status, data)
        return data

    async def phase(self, name: str, requests: list[tuple[str, str, bytes | None]]) -> PhaseResult:
        inflight = self.args.inflight
        conns = [Connection(self.host, self.port) for _ in range(inflight)]
        latencies: list[float] = []
        errors: list[str] = []
        next_index = 0

        async def worker(conn: Connection) -> None:
            nonlocal next_index
            while next_index < len(requests):
                method, path, body = requests[next_index]
                next_index += 1
                t0 = time.perf_counter()
                try:
                    status, data = await conn.request(method, path, body)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors.append(f"{method} {path}: {exc}")
                    conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                if status >= 300:
                    errors.append(f"{method} {path}: HTTP {status} {data[:200].decode(errors='replace')}")

        profiler = self._start_profiler(name)
        pids = [self.target.apiserver_pid, *self.target.store_pids]
        cpu0 = [cpu_seconds(p) for p in pids]
        client0 = time.process_time()
        t0 = time.perf_counter()
        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            for c in conns:
                c.close()
        elapsed = time.perf_counter() - t0
        client = time.process_time() - client0
        cpu = [cpu_seconds(p) - c0 for p, c0 in zip(pids, cpu0, strict=True)]
        self._stop_profiler(profiler)
        ops = len(requests)
        latencies.sort()

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

        store = [round(c * 1000 / ops, 3) for c in cpu[1:]]
        return PhaseResult(
            phase=name,
            ops=ops,
            errors=len(errors),
            seconds=round(elapsed, 3),
            ops_per_s=round(ops / elapsed, 1),
            apiserver_cpu_ms_per_op=round(cpu[0] * 1000 / ops, 3),
            store_cpu_ms_per_op=store,
            store_cpu_ms_per_op_total=round(sum(store), 3),
            client_cpu_ms_per_op=round(client * 1000 / ops, 3),
            p50_ms=round(pct(0.5), 2),
            p99_ms=round(pct(0.99), 2),
            apiserver_rss_mb=round(rss_mb(self.target.apiserver_pid), 1),
            first_error=errors[0] if errors else "",
        )

    def _start_profiler(self, phase: str) -> list[subprocess.Popen]:
        """py-spy on the API server (DIR/<phase>.txt) and, with --py-spy-store, on each store
        member (DIR/<phase>-store<i>.txt): raw collapsed stacks, one line per stack."""
        out_dir = self.args.py_spy
        if not out_dir:
            return []
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        os.makedirs(out_dir, exist_ok=True)
        targets = [(self.target.apiserver_pid, f"{phase}.txt")]
        if self.args.py_spy_store:
            targets += [(pid, f"{phase}-store{i}.txt") for i, pid in enumerate(self.target.store_pids)]
        procs = [
            subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--format",
                    "raw",
                    "--output",
                    os.path.join(out_dir, name),
                    "--rate",
                    "250",
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for pid, name in targets
        ]
        time.sleep(0.5)  # py-spy attaches before the load starts
        return procs

    @staticmethod
    def _stop_profiler(procs: list[subprocess.Popen]) -> None:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def _watch(self, query: str) -> None:
        """A watch of pods that counts events until cancelled."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            path = f"/api/v1/pods?watch=1&allowWatchBookmarks=true{query}"
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            await reader.readuntil(b"\r\n\r\n")
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    return
                self.watch_events += data.count(b"\n") - 1
        finally:
            writer.close()

    async def run(self) -> list[PhaseResult]:
        a = self.args
        ns_body = orjson.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        )
        await self.one("POST", "/api/v1/namespaces", ns_body)
        nodes = [f"{a.node_prefix}{i}" for i in range(a.nodes)]
        for _ in range(a.watchers):
            self.watch_tasks.append(asyncio.create_task(self._watch("")))
        for node in nodes[: a.node_watchers]:
            self.watch_tasks.append(
                asyncio.create_task(self._watch(f"&fieldSelector=spec.nodeName%3D{node}"))
            )
        await asyncio.sleep(0.5 if self.watch_tasks else 0)
        base = f"/api/v1/namespaces/{self.namespace}/pods"
        names = [f"load-{i}" for i in range(a.pods)]
        results = []
        results.append(
            await self.phase("create", [("POST", base, pod_manifest(self.namespace, n)) for n in names])
        )
        results.append(
            await self.phase(
                "bind",
                [
                    ("POST", f"{base}/{n}/binding", binding_manifest(n, nodes[i % len(nodes)]))
                    for i, n in enumerate(names)
                ],
            )
        )
        if a.status:
            results.append(
                await self.phase(
                    "status",
                    [
                        ("PATCH", f"{base}/{n}/status", running_status(nodes[i % len(nodes)], i))
                        for i, n in enumerate(names)
                    ],
                )
            )
        if a.delete:
            results.append(
                await self.phase(
                    "delete", [("DELETE", f"{base}/{n}?gracePeriodSeconds=0", None) for n in names]
                )
            )
        for t in self.watch_tasks:
            t.cancel()
        await asyncio.gather(*self.watch_tasks, return_exceptions=True)
        return results


def print_results(results: list[PhaseResult], watch_events: int) -> None:
    header = f"{'phase':8} {'ops':>6} {'err':>4} {'ops/s':>8} {'p50ms':>7} {'p99ms':>7} " \
             f"{'api ms/op':>9} {'store ms/op (each; sum)':>28} {'client ms/op':>12} {'api MiB':>8}"  # fmt: skip
    print(header)
    for r in results:
        each = "/".join(f"{c:.2f}" for c in r.store_cpu_ms_per_op)
        print(
            f"{r.phase:8} {r.ops:>6} {r.errors:>4} {r.ops_per_s:>8.0f} {r.p50_ms:>7.1f} {r.p99_ms:>7.1f} "
            f"{r.apiserver_cpu_ms_per_op:>9.3f} {each + '; ' + format(r.store_cpu_ms_per_op_total, '.2f'):>28} "
            f"{r.client_cpu_ms_per_op:>12.3f} {r.apiserver_rss_mb:>8.0f}"
        )
        if r.first_error:
            print(f"  first error: {r.first_error}")
    if watch_events:
        print(f"watch events received: {watch_events}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, default=5000)
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--nodes", type=int, default=1000, help="node names bindings spread over")
    p.add_argument("--node-prefix", default="hollow-")
    p.add_argument("--watchers", type=int, default=1, help="watches of all pods (the scheduler's)")
    p.add_argument("--node-watchers", type=int, default=0, help="watches of pods by spec.nodeName")
    p.add_argument(
        "--status",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after binding, merge-patch each pod's status to Running (as a node agent does)",
    )
    p.add_argument("--delete", action="store_true", help="also delete the pods (gracePeriodSeconds=0)")
    p.add_argument("--server", help="a running API server's URL (else one is started)")
    p.add_argument("--server-pid", type=int)
    p.add_argument("--store-pids", default="", help="comma-separated pids of the store members")
    p.add_argument("--apiserver-arg", action="append", default=[], help="extra flag for a started API server")
    p.add_argument("--root", default=ROOT, help="source tree to run a started API server from")
    p.add_argument("--repeat", type=int, default=1, help="run the phases this many times (fresh namespace)")
    p.add_argument("--py-spy", metavar="DIR", help="record a py-spy profile of the API server per phase")
    p.add_argument("--py-spy-store", action="store_true", help="with --py-spy: profile the store members too")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    a = p.parse_args(argv)
    if a.pods < 1 or a.inflight < 1 or a.nodes < 1:
        p.error("--pods, --inflight and --nodes must be at least 1")

    log_dir = tempfile.mkdtemp(prefix="grove-apiload-")
    if a.server:
        if not a.server_pid:
            p.error("--server needs --server-pid (and --store-pids) to measure CPU")
        target = Target(a.server.rstrip("/"), a.server_pid, [int(x) for x in a.store_pids.split(",") if x])
    else:
        target = start_target(a.apiserver_arg, log_dir, os.path.abspath(a.root))
    try:
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        results = []
        watch_events = 0
        for _ in range(a.repeat):
            load = Load(target, a)
            results += runner(load.run())
            watch_events += load.watch_events
        print_results(results, watch_events)
        if a.json:
            with open(a.json, "wb") as f:
                f.write(
                    orjson.dumps(
                        {
                            "args": vars(a),
                            "results": [asdict(r) for r in results],
                            "watch_events": watch_events,
                        },
                        option=orjson.OPT_INDENT_2,
                    )
                )
    finally:
        target.stop()
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
