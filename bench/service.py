"""`grove bench service`: what a Service's cluster IP costs compared with talking to pods directly.

One client, one run, three targets measured in alternating rounds so drift hits all of them alike:

- `pod IPs`: the client itself takes the three backend pods in turn (no proxy at all);
- `cluster IP`: the same pods behind a Service, through grove's proxy (iptables DNAT);
- `userspace`: (optional) the same pods behind a small asyncio TCP forwarder on 127.0.0.1, the
  other way a proxy could have been built, for comparison.

Every request is a fresh TCP connection (HTTP/1.0 GET to busybox httpd), so each one goes through
the proxy's per-connection work: the round robin, the DNAT, conntrack. Per target and concurrency
the table shows requests/s, latency percentiles, errors, and how evenly connections spread over
the backends (max/min of the per-backend counts; 1.00 is perfectly even). The client reports its
own CPU use: near 1.0 means it, not the proxy, was the limit.

By default everything it needs is started here and removed afterwards: a one-member store, the API
server, `grove proxy`, and three backend containers on the pod network (a Service without selector,
its Endpoints written by the bench). With `--server` it uses a
running cluster instead (e.g. `grove up`): it creates a Deployment and a Service in the namespace
`grove-bench`, and deletes the namespace at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMESPACE = "grove-bench"
HTTP_PORT = 8080
BACKENDS = 3

FORWARDER = r"""
import asyncio, itertools, sys
backends = itertools.cycle([(h, int(p)) for h, p in (b.split(":") for b in sys.argv[2].split(","))])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def handle(reader, writer):
    try:
        up_reader, up_writer = await asyncio.open_connection(*next(backends))
    except OSError:
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


@dataclass
class ServiceCell:
    target: str
    concurrency: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    spread: dict[str, int] = field(default_factory=dict)
    client_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def spread_ratio(self) -> float | None:
        counts = list(self.spread.values())
        if len(counts) < BACKENDS or min(counts) == 0:
            return None
        return max(counts) / min(counts)

    def summary(self) -> dict:
        doc = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        doc.update(
            rps=self.rps,
            p50_ms=self.percentile(50),
            p99_ms=self.percentile(99),
            spread_max_min=self.spread_ratio,
        )
        return doc


# --- the client ----------------------------------------------------------------------------------------


async def _one_request(host: str, port: int, timeout: float) -> str:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
        data = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"bad answer: {head[:60]!r}")
    return body.decode(errors="replace").strip()


async def measure(
    cell: ServiceCell, targets: list[tuple[str, int]], duration: float, timeout: float = 5.0
) -> None:
    """Closed-loop clients (cell.concurrency of them) for `duration` seconds; each request goes to
    the next target in turn."""
    stop = time.perf_counter() + duration
    turn = 0
    spread: Counter = Counter(cell.spread)

    async def client() -> None:
        nonlocal turn
        while time.perf_counter() < stop:
            host, port = targets[turn % len(targets)]
            turn += 1
            started = time.perf_counter()
            try:
                name = await _one_request(host, port, timeout)
            except (OSError, TimeoutError, ConnectionError):
                cell.errors += 1
                continue
            cell.latencies_ms.append((time.perf_counter() - started) * 1000)
            cell.requests += 1
            spread[name] += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client() for _ in range(cell.concurrency)))
    wall = time.perf_counter() - wall0
    cell.seconds += wall
    cpu = (time.process_time() - cpu0) / wall if wall else 0.0
    cell.client_cpu = max(cell.client_cpu, cpu)
    cell.spread = dict(spread)


# --- the backends and the service ------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _api(url: str, method: str, path: str, body: dict | None = None, ok404: bool = False) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        if ok404 and e.code in (404, 409):
            return {}
        raise click.ClickException(
            f"{method} {path}: HTTP {e.code} {e.read()[:300].decode(errors='replace')}"
        ) from None
    except OSError as e:
        raise click.ClickException(f"cannot reach the API server at {url}: {e}") from None


def _wait(what: str, cond: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def _programmed(ip: str) -> bool:
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    return f"-d {ip}/32 " in out


@dataclass
class Setup:
    cluster_ip: str
    pod_ips: list[str]


@contextmanager
def own_cluster(progress: Callable[[str], None]) -> Iterator[Setup]:
    """A store member, the API server, the proxy and three httpd backends on Docker; all removed after."""
    import docker

    from kvstore.localcluster import GroveCluster, free_port
    from node.images import BUSYBOX_IMAGE, build_images
    from node.runtime import DockerRuntime

    work = tempfile.mkdtemp(prefix="grove-bench-service-")
    store = GroveCluster(1, os.path.join(work, "kv"))
    procs: list[subprocess.Popen] = []
    containers: list = []
    try:
        progress("starting a store member and the API server")
        store.start(timeout=60)
        port = free_port()
        url = f"http://127.0.0.1:{port}"

        def spawn(name: str, args: list[str]) -> None:
            log = open(os.path.join(work, f"{name}.log"), "wb")
            procs.append(subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT))  # fmt: skip

        spawn("apiserver", ["orchestrator", "apiserver", "--etcd-servers", ",".join(store.client_urls),
                            "--bind-address", "127.0.0.1", "--port", str(port)])  # fmt: skip

        def api_ready() -> bool:
            if procs[0].poll() is not None:
                raise click.ClickException(f"the API server exited; see {work}/apiserver.log")
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        _wait("the API server", api_ready, 60)
        progress("starting grove proxy")
        spawn("proxy", ["node.proxy_cli", "proxy", "--server", url, "--node", "bench",
                        "--state-dir", os.path.join(work, "proxy-state")])  # fmt: skip
        progress("starting three backends")
        client = docker.from_env(timeout=60)
        build_images(client)
        runtime = DockerRuntime(client)
        runtime.ensure_network()
        pod_ips = []
        for i in range(BACKENDS):
            name = f"backend-{i}"
            script = f"mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p {HTTP_PORT} -h /www"
            # Plain containers on the pod network, not grove pods: a node agent running on this
            # engine would take pods it does not know for orphans and remove them.
            c = client.containers.run(BUSYBOX_IMAGE, ["sh", "-c", script], network=runtime.network, detach=True,
                                      name=f"grove-bench-{name}-{uuid.uuid4().hex[:6]}",
                                      labels={"io.grove.bench": "service"})  # fmt: skip
            containers.append(c)
            c.reload()
            pod_ips.append(c.attrs["NetworkSettings"]["Networks"][runtime.network]["IPAddress"])
        _api(url, "POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}}, ok404=True)
        svc = _api(url, "POST", f"/api/v1/namespaces/{NAMESPACE}/services",
                   {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "targetPort": HTTP_PORT}]}})  # fmt: skip
        _api(url, "POST", f"/api/v1/namespaces/{NAMESPACE}/endpoints",
             {"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": ip} for ip in pod_ips],
                                                        "ports": [{"port": HTTP_PORT}]}]})  # fmt: skip
        ip = svc["spec"]["clusterIP"]
        _wait("the proxy to program the cluster IP", lambda: procs[1].poll() is None and _programmed(ip), 30)
        yield Setup(ip, pod_ips)
    finally:
        for c in containers:
            try:
                c.remove(force=True)
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                print(f"cannot remove bench container {c.name}: {e}", file=sys.stderr)
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        store.stop()
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def existing_cluster(url: str, progress: Callable[[str], None]) -> Iterator[Setup]:
    """A Deployment of three httpd pods and a Service on a running cluster (its own proxy)."""
    progress(f"creating namespace {NAMESPACE} on {url}")
    _api(url, "POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}}, ok404=True)
    try:
        script = f"mkdir -p /www && hostname > /www/index.html && exec httpd -f -p {HTTP_PORT} -h /www"
        _api(url, "POST", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", {
            "metadata": {"name": "web"},
            "spec": {"replicas": BACKENDS, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                         "name": "web", "image": "grove/busybox:1.35", "command": ["sh", "-c", script],
                         "ports": [{"containerPort": HTTP_PORT}],
                         "readinessProbe": {"tcpSocket": {"port": HTTP_PORT}, "periodSeconds": 1}}]}}},
        })  # fmt: skip
        svc = _api(url, "POST", f"/api/v1/namespaces/{NAMESPACE}/services",
                   {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"},
                                                          "ports": [{"port": 80, "targetPort": HTTP_PORT}]}})  # fmt: skip

        def ready_ips() -> list[str]:
            ep = _api(url, "GET", f"/api/v1/namespaces/{NAMESPACE}/endpoints/web", ok404=True)
            ips = [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
            return ips if len(ips) == BACKENDS else []

        progress("waiting for three ready pods")
        pod_ips = _wait("three ready endpoints", ready_ips, 180)
        ip = svc["spec"]["clusterIP"]
        _wait("the proxy to program the cluster IP (is `grove proxy` running?)", lambda: _programmed(ip), 30)
        yield Setup(ip, list(pod_ips))
    finally:
        _api(url, "DELETE", f"/api/v1/namespaces/{NAMESPACE}", ok404=True)


@contextmanager
def userspace_forwarder(pod_ips: list[str]) -> Iterator[tuple[str, int]]:
    from kvstore.localcluster import free_port

    port = free_port()
    backends = ",".join(f"{ip}:{HTTP_PORT}" for ip in pod_ips)
    proc = subprocess.Popen([sys.executable, "-c", FORWARDER, str(port), backends], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=_env())  # fmt: skip
    try:
        if proc.stdout is None or proc.stdout.readline().strip() != b"ready":
            raise click.ClickException("the userspace forwarder did not start")
        yield "127.0.0.1", port
    finally:
        proc.kill()
        proc.wait()


# --- running it -----------------------------------------------------------------------------------------------


def run_bench(
    setup: Setup,
    concurrency: list[int],
    duration: float,
    rounds: int,
    userspace: bool,
    progress: Callable[[str], None],
) -> list[ServiceCell]:
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    with _maybe_forwarder(userspace, setup.pod_ips) as forwarder:
        targets: dict[str, list[tuple[str, int]]] = {
            "pod IPs": [(ip, HTTP_PORT) for ip in setup.pod_ips],
            "cluster IP": [(setup.cluster_ip, 80)],
        }
        if forwarder is not None:
            targets["userspace"] = [forwarder]
        cells = {(t, c): ServiceCell(t, c) for c in concurrency for t in targets}
        progress("warming up")
        for name, addrs in targets.items():
            run(measure(ServiceCell(name, 1), addrs, 0.3))
        for c in concurrency:
            for r in range(rounds):
                for name, addrs in targets.items():
                    progress(f"{name}: {c} connection(s), round {r + 1}/{rounds}")
                    run(measure(cells[(name, c)], addrs, duration))
        return list(cells.values())


@contextmanager
def _maybe_forwarder(enabled: bool, pod_ips: list[str]) -> Iterator[tuple[str, int] | None]:
    if not enabled:
        yield None
        return
    with userspace_forwarder(pod_ips) as addr:
        yield addr


def render(cells: list[ServiceCell]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    table = Table(title="Service cost: fresh TCP connection per request (HTTP/1.0 GET, busybox httpd)",
                  title_justify="left")  # fmt: skip
    for col, justify in (("target", "left"), ("connections", "right"), ("req/s", "right"), ("p50 ms", "right"),
                         ("p99 ms", "right"), ("errors", "right"), ("spread max/min", "right"),
                         ("client cpu", "right")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for cell in cells:
        p50, p99, ratio = cell.percentile(50), cell.percentile(99), cell.spread_ratio
        table.add_row(
            cell.target, str(cell.concurrency), f"{cell.rps:,.0f}",
            f"{p50:.2f}" if p50 is not None else "-", f"{p99:.2f}" if p99 is not None else "-",
            str(cell.errors), f"{ratio:.2f}" if ratio else "-", f"{cell.client_cpu:.2f}",
        )  # fmt: skip
    console.print(table)
    by = {(c.target, c.concurrency): c for c in cells}
    for c in sorted({c.concurrency for c in cells}):
        pod, svc = by.get(("pod IPs", c)), by.get(("cluster IP", c))
        if pod and svc and pod.percentile(50) is not None and svc.percentile(50) is not None and pod.rps:
            console.print(
                f"{c} connection(s): cluster IP adds {svc.percentile(50) - pod.percentile(50):+.3f} ms at p50, "
                f"{svc.percentile(99) - pod.percentile(99):+.3f} ms at p99; throughput {svc.rps / pod.rps:.2f}x "
                "of straight to the pods",
                highlight=False,
            )
    console.print(
        f"Machine: {os.cpu_count()} CPU cores shared by the client, the pods and the proxy.", highlight=False
    )


@click.command("service")
@click.option("--duration", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds per target, concurrency and round.")  # fmt: skip
@click.option(
    "--concurrency", default="1,16", show_default=True, help="Concurrent connections, comma-separated."
)
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True,
              help="Alternating rounds over the targets (drift hits all alike).")  # fmt: skip
@click.option("--userspace/--no-userspace", default=True, show_default=True,
              help="Also measure an asyncio userspace forwarder, for comparison.")  # fmt: skip
@click.option(
    "--server", default=None, help="Use this running cluster (e.g. from `grove up`) instead of starting one."
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write the cells here."
)
def service_command(
    duration: float, concurrency: str, rounds: int, userspace: bool, server: str | None, json_path: str | None
) -> None:
    """Requests/s and added latency through a Service's cluster IP versus straight to the pods,
    and how evenly the proxy spreads connections."""
    try:
        levels = [int(x) for x in concurrency.split(",") if x.strip()]
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter("give positive integers, e.g. 1,16", param_hint="--concurrency") from None
    if os.geteuid() != 0:
        raise click.ClickException("the service bench needs root (Docker, iptables), like `grove proxy`")

    def progress(text: str) -> None:
        click.echo(f"  {text}", err=True)

    setup_cm = existing_cluster(server, progress) if server else own_cluster(progress)
    with setup_cm as setup:
        cells = run_bench(setup, levels, duration, rounds, userspace, progress)
    render(cells)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump({"cells": [c.summary() for c in cells], "cpus": os.cpu_count()}, f, indent=2)
            f.write("\n")
