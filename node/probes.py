"""Liveness, readiness and startup probes, run the way the kubelet runs them.

Two layers. The pure one — `ProbeSpec` (a probe with its defaults) and `ProbeCounter` (consecutive
successes and failures against successThreshold / failureThreshold) — decides what a stream of
probe outcomes means and is tested without a clock. The I/O one — `run_probe` (exec, httpGet,
tcpSocket) and `ProbeManager`, one asyncio task per (container instance, probe kind) — does the
probing: it waits initialDelaySeconds after the container started, probes every periodSeconds with
timeoutSeconds, and calls back when a result changes so the agent re-syncs the pod.

Results belong to one container *instance* (its container id): a restarted container starts over
— readiness false, liveness true, not started — as in Kubernetes. Liveness and readiness probes
wait until the startup probe, if any, has succeeded.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

__all__ = [
    "LIVENESS",
    "READINESS",
    "STARTUP",
    "ExecFn",
    "ProbeCounter",
    "ProbeManager",
    "ProbeSpec",
    "Result",
    "http_get",
    "resolve_port",
    "run_probe",
    "tcp_connect",
]

LIVENESS = "liveness"
READINESS = "readiness"
STARTUP = "startup"
KINDS = (STARTUP, LIVENESS, READINESS)
_FIELD = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}
USER_AGENT = "kube-probe/1.32"

# (container id, command, timeout seconds) -> (exit code, output); raises on timeout or failure.
ExecFn = Callable[[str, Sequence[str], float], Awaitable[tuple[int, str]]]


class Result(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"  # not probed yet (startup), or the probe could not run at all


@dataclass(frozen=True)
class ProbeSpec:
    """A container's probe with Kubernetes' defaults applied."""

    kind: str
    handler: Mapping[str, Any]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def of(cls, container: Mapping[str, Any], kind: str) -> ProbeSpec | None:
        """The container's probe of this kind, or None when it has none."""
        probe = container.get(_FIELD[kind])
        if not probe:
            return None

        def num(key: str, default: float) -> float:
            value = probe.get(key)
            return float(value) if value else default

        success = int(num("successThreshold", 1))
        if kind in (LIVENESS, STARTUP):
            success = 1  # the API insists on 1 for these
        return cls(
            kind=kind,
            handler=probe,
            initial_delay=num("initialDelaySeconds", 0.0),
            period=num("periodSeconds", 10.0),
            timeout=num("timeoutSeconds", 1.0),
            success_threshold=success,
            failure_threshold=int(num("failureThreshold", 3)),
        )

    @property
    def initial_result(self) -> Result:
        """What the probe says before it has run: live, not ready, not started."""
        return {LIVENESS: Result.SUCCESS, READINESS: Result.FAILURE, STARTUP: Result.UNKNOWN}[self.kind]


@dataclass
class ProbeCounter:
    """Consecutive outcomes of one probe of one container instance, and what they amount to."""

    spec: ProbeSpec
    result: Result = Result.UNKNOWN
    successes: int = 0
    failures: int = 0
    message: str = ""

    def __post_init__(self) -> None:
        if self.result is Result.UNKNOWN:
            self.result = self.spec.initial_result

    def record(self, outcome: Result, message: str = "") -> bool:
        """Count one probe outcome; True when the probe's result changed.

        An UNKNOWN outcome (the probe could not run) changes nothing, as in the kubelet.
        """
        if outcome is Result.UNKNOWN:
            return False
        if outcome is Result.SUCCESS:
            self.successes += 1
            self.failures = 0
            threshold = self.spec.success_threshold
        else:
            self.failures += 1
            self.successes = 0
            self.message = message
            threshold = self.spec.failure_threshold
        count = self.successes if outcome is Result.SUCCESS else self.failures
        if count >= threshold and self.result is not outcome:
            self.result = outcome
            return True
        return False


# --- probing -------------------------------------------------------------------------------------


def resolve_port(port: int | str | None, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, a numeric string, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    text = str(port or "")
    if text.isdigit():
        return int(text)
    for p in container.get("ports") or []:
        if p.get("name") == text:
            return int(p["containerPort"])
    raise ValueError(f"port {text!r} is not a number and names none of the container's ports")


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE  # the kubelet does not verify probe certificates either


async def http_get(
    host: str,
    port: int,
    path: str = "/",
    scheme: str = "HTTP",
    headers: Mapping[str, str] | None = None,
    timeout: float = 1.0,
) -> tuple[Result, str]:
    """Kubernetes' httpGet probe: a status from 200 to 399 is a success."""
    host_part = f"[{host}]" if ":" in host else host
    if not path.startswith("/"):
        path = "/" + path
    url = f"{scheme.lower()}://{host_part}:{port}{path}"
    hdrs = {"User-Agent": USER_AGENT, "Accept": "*/*", **(headers or {})}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(
                url, headers=hdrs, ssl=_INSECURE if scheme.upper() == "HTTPS" else None, allow_redirects=True
            ) as resp:
                body = (await resp.content.read(10 * 1024)).decode("utf-8", "replace")
                if 200 <= resp.status < 400:
                    return Result.SUCCESS, ""
                return Result.FAILURE, f"HTTP probe failed with statuscode: {resp.status}{_tail(body)}"
    except TimeoutError:
        return Result.FAILURE, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded)'
    except (aiohttp.ClientError, OSError) as e:
        return Result.FAILURE, f'Get "{url}": {e}'


def _tail(body: str) -> str:
    body = body.strip()
    return f", body: {body[:200]}" if body else ""


async def tcp_connect(host: str, port: int, timeout: float = 1.0) -> tuple[Result, str]:
    """Kubernetes' tcpSocket probe: success when a connection can be opened."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return Result.FAILURE, f"dial tcp {host}:{port}: i/o timeout"
    except OSError as e:
        return Result.FAILURE, f"dial tcp {host}:{port}: {e.strerror or e}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return Result.SUCCESS, ""


async def run_probe(
    spec: ProbeSpec,
    container: Mapping[str, Any],
    container_id: str,
    pod_ip: str,
    exec_fn: ExecFn,
) -> tuple[Result, str]:
    """Run a probe once: (outcome, message for an Unhealthy event)."""
    h = spec.handler
    try:
        if "exec" in h:
            command = [str(a) for a in (h["exec"] or {}).get("command") or []]
            if not command:
                return Result.UNKNOWN, "exec probe without a command"
            try:
                code, output = await exec_fn(container_id, command, spec.timeout)
            except TimeoutError:
                return Result.FAILURE, f"command {command!r} timed out"
            if code == 0:
                return Result.SUCCESS, ""
            return Result.FAILURE, output.strip()[:1024] or f"command {command!r} exited with {code}"
        if "httpGet" in h:
            g = h["httpGet"] or {}
            headers = {str(x.get("name")): str(x.get("value")) for x in g.get("httpHeaders") or []}
            return await http_get(
                str(g.get("host") or pod_ip),
                resolve_port(g.get("port"), container),
                str(g.get("path") or "/"),
                str(g.get("scheme") or "HTTP"),
                headers,
                spec.timeout,
            )
        if "tcpSocket" in h:
            t = h["tcpSocket"] or {}
            return await tcp_connect(
                str(t.get("host") or pod_ip), resolve_port(t.get("port"), container), spec.timeout
            )
        if "grpc" in h:
            return Result.UNKNOWN, "grpc probes are not supported by grove"
        return Result.UNKNOWN, "probe has no handler"
    except ValueError as e:
        return Result.UNKNOWN, str(e)
    except Exception as e:  # noqa: BLE001 - a probe that cannot run is a failed probe, not a crash
        return Result.FAILURE, str(e) or type(e).__name__


# --- the manager ---------------------------------------------------------------------------------


@dataclass
class _Worker:
    key: tuple[str, str, str]  # (pod uid, container name, kind)
    container_id: str
    counter: ProbeCounter
    task: asyncio.Task[None] | None = None


@dataclass
class RunningContainer:
    """What the prober needs to know about a container instance."""

    name: str
    container_id: str
    started_at: float  # epoch seconds
    spec: Mapping[str, Any] = field(default_factory=dict)


class ProbeManager:
    """Probe workers for the containers of one node's pods.

    `update(pod_key, uid, pod_ip, running)` after every pod sync starts workers for new container
    instances and stops those of instances that are gone; `on_change(pod_key)` is called when a
    result changes (and on each liveness or startup failure that crosses its threshold), so the
    agent syncs the pod again. Results are read with `readiness`, `started` and `failed`.
    """

    def __init__(
        self,
        exec_fn: ExecFn,
        on_change: Callable[[str], None],
        on_failure: Callable[[str, str, str, str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.exec_fn = exec_fn
        self.on_change = on_change
        self.on_failure = on_failure  # (pod key, container name, kind, message): an Unhealthy event
        self.clock = clock
        self.started_at = clock()  # containers that started before this are adopted ones
        self._workers: dict[tuple[str, str, str], _Worker] = {}
        self._seeded: dict[tuple[str, str], bool] = {}  # (container id, kind) -> initial result

    def seed_ready(self, container_id: str, ready: bool) -> None:
        """Start an adopted container's readiness from what the API last said (no flap to
        NotReady when the agent restarts)."""
        self._seeded[(container_id, READINESS)] = ready

    def update(self, pod_key: str, uid: str, pod_ip: str, running: Sequence[RunningContainer]) -> None:
        wanted: set[tuple[str, str, str]] = set()
        for rc in running:
            for kind in KINDS:
                spec = ProbeSpec.of(rc.spec, kind)
                if spec is None:
                    continue
                key = (uid, rc.name, kind)
                wanted.add(key)
                worker = self._workers.get(key)
                if worker is not None and worker.container_id == rc.container_id:
                    continue
                if worker is not None:
                    self._stop(worker)
                counter = ProbeCounter(spec)
                seeded = self._seeded.pop((rc.container_id, kind), None)
                if seeded is not None:
                    counter.result = Result.SUCCESS if seeded else Result.FAILURE
                worker = _Worker(key, rc.container_id, counter)
                self._workers[key] = worker
                worker.task = asyncio.create_task(
                    self._run(pod_key, worker, rc, pod_ip), name=f"probe {kind} {pod_key}/{rc.name}"
                )
        for key in [k for k in self._workers if k[0] == uid and k not in wanted]:
            self._stop(self._workers.pop(key))

    def remove_pod(self, uid: str) -> None:
        for key in [k for k in self._workers if k[0] == uid]:
            self._stop(self._workers.pop(key))

    async def close(self) -> None:
        tasks = [w.task for w in self._workers.values() if w.task is not None]
        for w in list(self._workers.values()):
            self._stop(w)
        self._workers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self, worker: _Worker) -> None:
        if worker.task is not None and not worker.task.done():
            worker.task.cancel()

    def _result(self, uid: str, name: str, container_id: str, kind: str) -> Result | None:
        worker = self._workers.get((uid, name, kind))
        if worker is None or worker.container_id != container_id:
            return None
        return worker.counter.result

    def started(self, uid: str, name: str, container_id: str, has_probe: bool) -> bool:
        """Whether the startup probe passed (true at once without one)."""
        if not has_probe:
            return True
        return self._result(uid, name, container_id, STARTUP) is Result.SUCCESS

    def readiness(self, uid: str, name: str, container_id: str) -> bool:
        """The readiness probe's verdict (false until it has succeeded)."""
        return self._result(uid, name, container_id, READINESS) is Result.SUCCESS

    def failed(self, uid: str, name: str, container_id: str) -> str | None:
        """Why the container must be killed (liveness or startup probe failed), or None."""
        for kind in (STARTUP, LIVENESS):
            worker = self._workers.get((uid, name, kind))
            if worker is not None and worker.container_id == container_id:
                if worker.counter.result is Result.FAILURE:
                    return f"Container {name} failed {kind} probe, will be restarted"
        return None

    async def _run(self, pod_key: str, worker: _Worker, rc: RunningContainer, pod_ip: str) -> None:
        spec = worker.counter.spec
        uid, name, kind = worker.key
        try:
            # Startup and liveness/readiness share the initial delay counted from the start.
            wait = rc.started_at + spec.initial_delay - self.clock()
            await asyncio.sleep(max(0.0, wait) + self.first_probe_jitter(rc, spec))
            while True:
                if kind != STARTUP and not self._startup_passed(uid, name, rc):
                    await asyncio.sleep(min(spec.period, 1.0))
                    continue
                outcome, message = await run_probe(spec, rc.spec, rc.container_id, pod_ip, self.exec_fn)
                changed = worker.counter.record(outcome, message)
                if outcome is Result.FAILURE and self.on_failure is not None:
                    self.on_failure(pod_key, name, kind, message)
                if changed:
                    self.on_change(pod_key)
                if kind == STARTUP and worker.counter.result is Result.SUCCESS:
                    return  # a startup probe stops once it has passed
                if kind in (LIVENESS, STARTUP) and worker.counter.result is Result.FAILURE:
                    return  # the container is about to be killed; its successor gets a new worker
                await asyncio.sleep(spec.period)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s probe of %s/%s stopped", kind, pod_key, name)

    def first_probe_jitter(self, rc: RunningContainer, spec: ProbeSpec) -> float:
        """Seconds to wait beyond the initial delay before the first probe. Only containers adopted
        after an agent restart are spread out (they would all be probed at once), as the kubelet
        does in its first probe period; a new container's readiness is not made to wait."""
        if rc.started_at >= self.started_at:
            return 0.0
        return random.uniform(0, min(spec.period, 1.0)) * 0.1

    def _startup_passed(self, uid: str, name: str, rc: RunningContainer) -> bool:
        if ProbeSpec.of(rc.spec, STARTUP) is None:
            return True
        return self._result(uid, name, rc.container_id, STARTUP) is Result.SUCCESS
