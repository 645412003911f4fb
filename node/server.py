"""The node agent's own HTTP endpoint — what the kubelet serves on its port.

The API server forwards `pods/log` and `pods/exec` here (the node's daemonEndpoints port), so
kubectl reaches containers with the protocols it speaks to a real cluster:

- `GET /containerLogs/{namespace}/{pod}/{container}` with follow, tailLines, sinceSeconds,
  sinceTime, timestamps, previous and limitBytes: plain text, streamed when following;
- `GET|POST /exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`: the
  WebSocket remote-command protocol (v5.channel.k8s.io, which kubectl 1.32 speaks first, and the
  older v4/v1 framings). Each binary message starts with a channel byte — 0 stdin, 1 stdout,
  2 stderr, 3 the final Status (exit code), 4 terminal resize, 255 "close this channel" (v5);
- `POST /run/{namespace}/{pod}/{container}?cmd=...`: a command's output in one answer;
- `GET /stats/summary` (the Summary API as JSON), `GET /metrics/cadvisor` and
  `GET /metrics/resource` (Prometheus text with cAdvisor's and metrics-server's metric names);
- `GET /pods` (the pods bound to this node) and `GET /healthz`.

Errors are `kind: Status` bodies, so the API server can pass them straight to kubectl. The
endpoint has no authentication yet: bind it to an address only the API server can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import docker.errors
from aiohttp import WSMsgType, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from node import podsync
from node.agent import NodeAgent, NodeHost
from node.fake import FakeRuntime
from node.runtime.types import ContainerInfo, ContainerRuntimeError, ContainerStats

log = logging.getLogger("grove.node.server")

__all__ = ["AgentServer", "exec_status"]

STREAM_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


class HTTPStatusError(web.HTTPException):
    """An error answered as a Kubernetes Status body."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        self.status_code = code
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        super().__init__(text=json.dumps(body), content_type="application/json")


def bad_request(message: str) -> HTTPStatusError:
    return HTTPStatusError(400, "BadRequest", message)


def not_found(message: str) -> HTTPStatusError:
    return HTTPStatusError(404, "NotFound", message)


def exec_status(exit_code: int | None, command: list[str], error: str = "") -> dict[str, Any]:
    """The Status a remote-command session ends with (what kubectl turns into its exit code)."""
    if error:
        return {"metadata": {}, "status": "Failure", "message": error, "reason": "InternalError", "code": 500}
    if exit_code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {command}, exit code {exit_code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
    }


def _flag(query: Mapping[str, str], *names: str, default: bool = False) -> bool:
    for n in names:
        if n in query:
            return query[n].lower() in ("1", "true", "yes", "")
    return default


def _int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"{name}: invalid integer {value!r}") from None


class AgentServer:
    """aiohttp application serving the agents of one NodeHost."""

    def __init__(self, host: NodeHost, address: str = "127.0.0.1", port: int = 10250) -> None:
        self.host = host
        self.address = address
        self.port = port
        self._runner: web.AppRunner | None = None
        self._cpu_samples: dict[str, tuple[float, int]] = {}
        self._node_cpu: tuple[float, int] | None = None
        self.app = web.Application()
        r = self.app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/pods", self.pods)
        r.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        for path in ("/exec/{namespace}/{pod}/{container}", "/exec/{namespace}/{pod}/{uid}/{container}"):
            r.add_get(path, self.exec)
            r.add_post(path, self.exec)
        r.add_post("/run/{namespace}/{pod}/{container}", self.run_command)
        r.add_get("/stats/summary", self.stats_summary)
        r.add_get("/metrics/cadvisor", self.metrics_cadvisor)
        r.add_get("/metrics/resource", self.metrics_resource)

    async def start(self) -> int:
        """Listen; returns the port (useful with port 0)."""
        self._runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- finding containers --------------------------------------------------------------------

    async def _find(
        self,
        namespace: str,
        pod_name: str,
        container: str | None,
        *,
        previous: bool = False,
        running: bool = False,
    ) -> tuple[NodeAgent, dict[str, Any], ContainerInfo]:
        found = self.host.find_pod(namespace, pod_name)
        if found is None:
            raise not_found(f'pods "{pod_name}" not found')
        agent, pod = found
        spec = pod.get("spec") or {}
        names = [str(c.get("name")) for c in spec.get("containers") or []]
        all_names = names + [str(c.get("name")) for c in spec.get("initContainers") or []]
        if not container:
            if len(names) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {pod_name}, choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        if container not in all_names:
            raise bad_request(f"container {container} is not valid for pod {pod_name}")
        uid = str(pod["metadata"].get("uid"))
        observed = await agent._observe(uid)
        hist = podsync.history(observed, container)
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        statuses += (pod.get("status") or {}).get("initContainerStatuses") or []
        status = next((s for s in statuses if s.get("name") == container), {})
        if previous:
            last_id = ((status.get("lastState") or {}).get("terminated") or {}).get("containerID", "")
            target = next((c for c in hist if c.container_id == last_id), None) if last_id else None
            if target is None and hist:
                target = hist[0] if not hist[0].state.running else (hist[1] if len(hist) > 1 else None)
            if target is None:
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{pod_name}" not found'
                )
            return agent, pod, target
        if not hist:
            reason = ((status.get("state") or {}).get("waiting") or {}).get("reason") or "ContainerCreating"
            raise bad_request(f'container "{container}" in pod "{pod_name}" is waiting to start: {reason}')
        if running and not hist[0].state.running:
            raise bad_request(f"container {container} is not running (state: {hist[0].state.status})")
        return agent, pod, hist[0]

    # --- simple endpoints ---------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pods(self, request: web.Request) -> web.Response:
        items = [p for a in self.host.agents.values() for p in a.my_pods()]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    # --- logs ---------------------------------------------------------------------------------

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        m = request.match_info
        follow = _flag(q, "follow")
        agent, _pod, target = await self._find(
            m["namespace"], m["pod"], m["container"], previous=_flag(q, "previous")
        )
        tail = _int(q, "tailLines")
        limit = _int(q, "limitBytes")
        since: float | None = None
        if (seconds := _int(q, "sinceSeconds")) is not None:
            since = time.time() - max(0, seconds)
        elif q.get("sinceTime"):
            since = podsync.parse_time(q["sinceTime"])
            if since is None:
                raise bad_request(f"sinceTime: {q['sinceTime']!r} is not an RFC 3339 time")
        timestamps = _flag(q, "timestamps")
        runtime = agent.runtime
        try:
            result = await agent._rt(runtime.logs, target.id, tail, since, timestamps, follow)
        except ContainerRuntimeError as e:
            raise bad_request(str(e)) from e
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        sent = 0

        async def write(chunk: bytes) -> bool:
            nonlocal sent
            if limit is not None:
                chunk = chunk[: max(0, limit - sent)]
            if chunk:
                await resp.write(chunk)
                sent += len(chunk)
            return limit is None or sent < limit

        if isinstance(result, bytes):
            await write(result)
        else:
            await self._pump(result, write, blocking=agent.blocking)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def _pump(self, chunks: Any, write: Any, *, blocking: bool) -> None:
        """Copy a blocking iterator of chunks (a followed log) to `write` until either side ends."""
        if not blocking:
            for chunk in chunks:
                if not await write(chunk):
                    return
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

        def reader() -> None:
            try:
                for chunk in chunks:
                    asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            except Exception:  # noqa: BLE001 - the stream was closed under us, or the engine went
                pass
            finally:
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(queue.put(None), loop)

        thread = threading.Thread(target=reader, name="log-follow", daemon=True)
        thread.start()
        try:
            while (chunk := await queue.get()) is not None:
                if not await write(chunk):
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await loop.run_in_executor(None, close)
            while not queue.empty():
                queue.get_nowait()

    # --- exec --------------------------------------------------------------------------------

    async def run_command(self, request: web.Request) -> web.Response:
        m = request.match_info
        cmd = request.query.getall("cmd", [])
        if not cmd:
            form = await request.post()
            cmd = [str(v) for v in form.getall("cmd", [])]
        if len(cmd) == 1:
            cmd = ["sh", "-c", cmd[0]]
        if not cmd:
            raise bad_request("cmd is required")
        agent, _pod, target = await self._find(m["namespace"], m["pod"], m["container"], running=True)
        try:
            code, output = await agent._rt(agent.runtime.exec, target.id, cmd, 300.0)
        except ContainerRuntimeError as e:
            raise HTTPStatusError(500, "InternalError", str(e)) from e
        return web.Response(text=output, headers={"X-Exit-Code": str(code)})

    async def exec(self, request: web.Request) -> web.StreamResponse:
        m = request.match_info
        q = request.query
        command = q.getall("command", [])
        if not command:
            raise bad_request("you must specify at least one command for the container")
        stdin = _flag(q, "stdin", "input")
        stdout = _flag(q, "stdout", "output", default=True)
        stderr = _flag(q, "stderr", "error", default=True)
        tty = _flag(q, "tty")
        if tty:
            stderr = False  # a terminal has one output stream
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade != "websocket":
            if upgrade.startswith("spdy"):
                raise bad_request(
                    "grove's node agent speaks the WebSocket remote-command protocol (v5.channel.k8s.io), not SPDY"
                )
            raise bad_request("Upgrade request required")
        agent, _pod, target = await self._find(m["namespace"], m["pod"], m["container"], running=True)
        ws = web.WebSocketResponse(protocols=STREAM_PROTOCOLS, autoping=True, max_msg_size=0, compress=False)
        if not ws.can_prepare(request).ok:
            raise bad_request(f"none of the offered subprotocols is supported: {', '.join(STREAM_PROTOCOLS)}")
        await ws.prepare(request)
        session = _ExecSession(ws, agent, target, list(command), stdin, stdout, stderr, tty)
        try:
            await session.run()
        except Exception as e:  # noqa: BLE001 - the session ends with an error Status, never a traceback
            log.info("exec %s in %s failed: %s", command, target.name, e)
            await session.finish(None, str(e) or type(e).__name__)
        return ws

    # --- stats ----------------------------------------------------------------------------------

    async def _samples(
        self, agents: Iterable[NodeAgent] | None = None
    ) -> list[tuple[NodeAgent, dict[str, Any], ContainerInfo, ContainerStats]]:
        """One stats sample per running container of every pod on these nodes (or only `agents`')."""
        out: list[tuple[NodeAgent, dict[str, Any], ContainerInfo, ContainerStats]] = []
        limit = asyncio.Semaphore(8)

        async def one(agent: NodeAgent, pod: dict[str, Any], c: ContainerInfo) -> None:
            async with limit:
                try:
                    out.append((agent, pod, c, await agent._rt(agent.runtime.stats, c.id)))
                except (ContainerRuntimeError, docker.errors.APIError) as e:
                    log.debug("stats of %s failed: %s", c.name, e)

        jobs = []
        for agent in self.host.agents.values() if agents is None else agents:
            on_engine = await agent._rt(agent.runtime.list_pod_containers)
            for pod in agent.my_pods():
                pc = on_engine.get(str(pod["metadata"].get("uid")))
                for c in pc.containers if pc is not None else []:
                    if c.state.running:
                        jobs.append(one(agent, pod, c))
        await asyncio.gather(*jobs)
        return out

    def _nano_cores(self, key: str, cpu_ns: int) -> int:
        now = time.monotonic()
        prev = self._cpu_samples.get(key)
        self._cpu_samples[key] = (now, cpu_ns)
        if prev is None or now <= prev[0] or cpu_ns < prev[1]:
            return 0
        return int((cpu_ns - prev[1]) / (now - prev[0]))

    def _node_usage(self) -> dict[str, Any]:
        cpu_ns = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)
            cpu_ns = busy * (10**9 // (os.sysconf("SC_CLK_TCK") or 100))
        mem: dict[str, int] = {}
        with contextlib.suppress(OSError):
            with open("/proc/meminfo") as f:
                for line in f:
                    key, _, rest = line.partition(":")
                    mem[key] = int(rest.split()[0]) * 1024
        total, available = mem.get("MemTotal", 0), mem.get("MemAvailable", 0)
        usage = total - mem.get("MemFree", 0)
        working = max(0, usage - mem.get("Inactive(file)", 0))
        return {
            "cpu_ns": cpu_ns,
            "nano_cores": self._nano_cores("node", cpu_ns),
            "memory": {
                "availableBytes": available,
                "usageBytes": usage,
                "workingSetBytes": working,
                "rssBytes": total - available,
            },
        }

    def _hollow(self, agent: NodeAgent) -> bool:
        return isinstance(agent.runtime, FakeRuntime)

    async def stats_summary(self, request: web.Request) -> web.Response:
        now = podsync.rfc3339(time.time())
        node_name = request.query.get("node") or next(iter(self.host.agents))
        agent = self.host.agents.get(node_name)
        if agent is None:
            raise not_found(f'nodes "{node_name}" not found')
        samples = await self._samples([agent])
        # A hollow node has no machine of its own: its usage is what its pods use, not the host's.
        node = None if self._hollow(agent) else self._node_usage()
        pods: dict[str, dict[str, Any]] = {}
        for a, pod, c, s in samples:
            if a is not agent:
                continue
            meta = pod["metadata"]
            uid = str(meta.get("uid"))
            entry = pods.setdefault(
                uid,
                {
                    "podRef": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": uid},
                    "startTime": (pod.get("status") or {}).get("startTime") or now,
                    "containers": [],
                    "cpu": {"time": now, "usageNanoCores": 0, "usageCoreNanoSeconds": 0},
                    "memory": {"time": now, "usageBytes": 0, "workingSetBytes": 0, "rssBytes": 0},
                },
            )
            cpu = {
                "time": now,
                "usageNanoCores": self._nano_cores(c.id, s.cpu_usage_nanoseconds),
                "usageCoreNanoSeconds": s.cpu_usage_nanoseconds,
            }
            memory = {
                "time": now,
                "usageBytes": s.memory_usage_bytes,
                "workingSetBytes": s.memory_working_set_bytes,
                "rssBytes": s.memory_rss_bytes,
            }
            entry["containers"].append(
                {
                    "name": c.container_name,
                    "startTime": c.state.started_at or now,
                    "cpu": cpu,
                    "memory": memory,
                }
            )
            for k in ("usageNanoCores", "usageCoreNanoSeconds"):
                entry["cpu"][k] += cpu[k]
            for k in ("usageBytes", "workingSetBytes", "rssBytes"):
                entry["memory"][k] += memory[k]
        if node is None:
            cpu_ns = sum(p["cpu"]["usageCoreNanoSeconds"] for p in pods.values())
            working = sum(p["memory"]["workingSetBytes"] for p in pods.values())
            node = {
                "cpu_ns": cpu_ns,
                "nano_cores": sum(p["cpu"]["usageNanoCores"] for p in pods.values()),
                "memory": {
                    "usageBytes": sum(p["memory"]["usageBytes"] for p in pods.values()),
                    "workingSetBytes": working,
                    "rssBytes": sum(p["memory"]["rssBytes"] for p in pods.values()),
                },
            }
        body = {
            "node": {
                "nodeName": agent.name,
                "startTime": podsync.rfc3339(agent.started_at),
                "cpu": {
                    "time": now,
                    "usageNanoCores": node["nano_cores"],
                    "usageCoreNanoSeconds": node["cpu_ns"],
                },
                "memory": {"time": now, **node["memory"]},
                "systemContainers": [],
            },
            "pods": list(pods.values()),
        }
        return web.json_response(body)

    async def metrics_cadvisor(self, request: web.Request) -> web.Response:
        samples = await self._samples()
        labels = ["container", "id", "image", "name", "namespace", "pod"]
        cpu = CounterMetricFamily(
            "container_cpu_usage_seconds", "Cumulative cpu time consumed in seconds.", labels=labels
        )
        working = GaugeMetricFamily(
            "container_memory_working_set_bytes", "Current working set in bytes.", labels=labels
        )
        usage = GaugeMetricFamily(
            "container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed",
            labels=labels,
        )  # fmt: skip
        rss = GaugeMetricFamily("container_memory_rss", "Size of RSS in bytes.", labels=labels)
        start = GaugeMetricFamily(
            "container_start_time_seconds",
            "Start time of the container since unix epoch in seconds.",
            labels=labels,
        )
        totals: dict[tuple[str, str], list[float]] = {}
        for _agent, pod, c, s in samples:
            meta = pod["metadata"]
            ns, name = str(meta.get("namespace")), str(meta.get("name"))
            values = [c.container_name, f"/docker/{c.id}", c.image, c.name, ns, name]
            ts = podsync.parse_time(s.timestamp[:19] + "Z") if s.timestamp else None
            cpu.add_metric(values, s.cpu_usage_nanoseconds / 1e9, timestamp=ts)
            working.add_metric(values, s.memory_working_set_bytes, timestamp=ts)
            usage.add_metric(values, s.memory_usage_bytes, timestamp=ts)
            rss.add_metric(values, s.memory_rss_bytes, timestamp=ts)
            started = podsync.parse_time(c.state.started_at)
            if started is not None:
                start.add_metric(values, started)
            t = totals.setdefault((ns, name), [0.0, 0.0, 0.0, 0.0])
            t[0] += s.cpu_usage_nanoseconds / 1e9
            t[1] += s.memory_working_set_bytes
            t[2] += s.memory_usage_bytes
            t[3] += s.memory_rss_bytes
        for (ns, name), t in totals.items():  # the pod's cgroup, as cAdvisor reports it: container=""
            values = ["", f"/kubepods/{ns}/{name}", "", "", ns, name]
            cpu.add_metric(values, t[0])
            working.add_metric(values, t[1])
            usage.add_metric(values, t[2])
            rss.add_metric(values, t[3])
        return self._prometheus(cpu, working, usage, rss, start)

    async def metrics_resource(self, request: web.Request) -> web.Response:
        samples = await self._samples()
        node = self._node_usage()
        node_cpu = CounterMetricFamily(
            "node_cpu_usage_seconds", "Cumulative cpu time consumed by the node in core-seconds"
        )
        node_cpu.add_metric([], node["cpu_ns"] / 1e9)
        node_mem = GaugeMetricFamily(
            "node_memory_working_set_bytes", "Current working set of the node in bytes"
        )
        node_mem.add_metric([], node["memory"]["workingSetBytes"])
        labels = ["container", "namespace", "pod"]
        c_cpu = CounterMetricFamily(
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed by the container in core-seconds",
            labels=labels,
        )
        c_mem = GaugeMetricFamily(
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes",
            labels=labels,
        )
        p_cpu = CounterMetricFamily(
            "pod_cpu_usage_seconds",
            "Cumulative cpu time consumed by the pod in core-seconds",
            labels=["namespace", "pod"],
        )
        p_mem = GaugeMetricFamily(
            "pod_memory_working_set_bytes",
            "Current working set of the pod in bytes",
            labels=["namespace", "pod"],
        )
        pods: dict[tuple[str, str], list[float]] = {}
        for _agent, pod, c, s in samples:
            ns, name = str(pod["metadata"].get("namespace")), str(pod["metadata"].get("name"))
            c_cpu.add_metric([c.container_name, ns, name], s.cpu_usage_nanoseconds / 1e9)
            c_mem.add_metric([c.container_name, ns, name], s.memory_working_set_bytes)
            t = pods.setdefault((ns, name), [0.0, 0.0])
            t[0] += s.cpu_usage_nanoseconds / 1e9
            t[1] += s.memory_working_set_bytes
        for (ns, name), t in pods.items():
            p_cpu.add_metric([ns, name], t[0])
            p_mem.add_metric([ns, name], t[1])
        scrape = GaugeMetricFamily(
            "scrape_error", "1 if there was an error while getting container metrics, 0 otherwise"
        )
        scrape.add_metric([], 0)
        return self._prometheus(node_cpu, node_mem, c_cpu, c_mem, p_cpu, p_mem, scrape)

    @staticmethod
    def _prometheus(*families: Any) -> web.Response:
        class _Collector:
            def collect(self) -> Any:
                return iter(families)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())  # type: ignore[arg-type]
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")


# --- remote command sessions ----------------------------------------------------------------------------


class _ExecSession:
    """One `kubectl exec` over a WebSocket: a Docker exec with its raw stream on a socket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        agent: NodeAgent,
        target: ContainerInfo,
        command: list[str],
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> None:
        self.ws = ws
        self.agent = agent
        self.target = target
        self.command = command
        self.stdin, self.stdout, self.stderr, self.tty = stdin, stdout, stderr, tty
        self.protocol = ws.ws_protocol or "channel.k8s.io"
        self._finished = False
        self._send_lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        async with self._send_lock:
            if not self.ws.closed:
                await self.ws.send_bytes(bytes([channel]) + data)

    async def finish(self, exit_code: int | None, error: str = "") -> None:
        if self._finished:
            return
        self._finished = True
        if self.protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io"):
            payload = json.dumps(exec_status(exit_code, self.command, error)).encode()
        elif error or exit_code not in (0, None):
            payload = (error or f"command terminated with non-zero exit code: exit code {exit_code}").encode()
        else:
            payload = b""
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            if payload:
                await self.send(ERROR, payload)
            await self.ws.close()

    async def run(self) -> None:
        client = getattr(self.agent.runtime, "client", None)
        if client is None:
            # A runtime without an engine (the fake one): run the command without streams.
            try:
                code, output = await self.agent._rt(
                    self.agent.runtime.exec, self.target.id, self.command, 300.0
                )
            except ContainerRuntimeError as e:
                await self.finish(None, str(e))
                return
            if output and self.stdout:
                await self.send(STDOUT, output.encode())
            await self.finish(code)
            return
        await self._run_docker(client)

    async def _run_docker(self, client: Any) -> None:
        loop = asyncio.get_running_loop()
        api = client.api
        exec_id = (
            await loop.run_in_executor(
                None,
                lambda: api.exec_create(
                    self.target.id, self.command, stdin=self.stdin, stdout=True, stderr=True, tty=self.tty
                ),
            )
        )["Id"]
        raw = await loop.run_in_executor(None, lambda: api.exec_start(exec_id, socket=True, tty=self.tty))
        sock: socket.socket = getattr(raw, "_sock", raw)
        output: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()

        def put(item: tuple[int, bytes] | None) -> None:
            loop.call_soon_threadsafe(output.put_nowait, item)

        def read_exactly(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = sock.recv(n - len(buf))
                if not chunk:
                    return b""
                buf += chunk
            return buf

        def reader() -> None:
            try:
                if self.tty:
                    while chunk := sock.recv(65536):
                        put((STDOUT, chunk))
                else:
                    while header := read_exactly(8):
                        stream, size = header[0], struct.unpack(">I", header[4:])[0]
                        data = read_exactly(size) if size else b""
                        if size and not data:
                            break
                        put((STDERR if stream == 2 else STDOUT, data))
            except OSError:
                pass
            finally:
                put(None)

        threading.Thread(target=reader, name=f"exec-{self.target.id[:12]}", daemon=True).start()
        inbound = asyncio.create_task(self._inbound(api, exec_id, sock))
        try:
            while (item := await output.get()) is not None:
                channel, data = item
                if (channel == STDOUT and self.stdout) or (channel == STDERR and self.stderr):
                    await self.send(channel, data)
            inbound.cancel()  # the process is done: stop reading the client before closing
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await inbound
            code = await loop.run_in_executor(None, lambda: self._wait_exit(api, exec_id))
            await self.finish(code)
        finally:
            inbound.cancel()
            with contextlib.suppress(OSError):
                sock.close()

    @staticmethod
    def _wait_exit(api: Any, exec_id: str) -> int | None:
        deadline = time.monotonic() + 5
        while True:
            info = api.exec_inspect(exec_id)
            if not info.get("Running") or time.monotonic() > deadline:
                return info.get("ExitCode")
            time.sleep(0.01)

    async def _inbound(self, api: Any, exec_id: str, sock: socket.socket) -> None:
        """Client messages: stdin data, stdin close (v5), terminal resizes."""
        loop = asyncio.get_running_loop()
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and self.stdin and data:
                await loop.run_in_executor(None, sock.sendall, data)
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            elif channel == RESIZE and self.tty:
                try:
                    size = json.loads(data)
                    width, height = int(size.get("Width") or 0), int(size.get("Height") or 0)
                except (ValueError, AttributeError):
                    continue
                if width and height:
                    with contextlib.suppress(docker.errors.APIError):
                        await loop.run_in_executor(
                            None, lambda: api.exec_resize(exec_id, height=height, width=width)
                        )
