"""Probes: threshold counting (pure), the httpGet/tcpSocket probes against real loopback servers,
and the ProbeManager's workers driven by a scripted exec function."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from aiohttp import web

from node.probes import (
    LIVENESS,
    READINESS,
    STARTUP,
    ProbeCounter,
    ProbeManager,
    ProbeSpec,
    Result,
    RunningContainer,
    http_get,
    resolve_port,
    run_probe,
    tcp_connect,
)

T = TypeVar("T")


# --- pure -------------------------------------------------------------------------------------


def test_spec_defaults_and_initial_results() -> None:
    c = {
        "readinessProbe": {"tcpSocket": {"port": 80}},
        "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 5},
    }
    ready = ProbeSpec.of(c, READINESS)
    assert ready is not None
    assert (
        ready.period,
        ready.timeout,
        ready.failure_threshold,
        ready.success_threshold,
        ready.initial_delay,
    ) == (10, 1, 3, 1, 0)
    live = ProbeSpec.of(c, LIVENESS)
    assert live is not None and live.success_threshold == 1  # must be 1 for liveness
    assert ProbeSpec.of(c, STARTUP) is None
    assert ProbeCounter(ready).result is Result.FAILURE  # not ready until proven
    assert ProbeCounter(live).result is Result.SUCCESS  # alive until proven dead


def test_thresholds() -> None:
    spec = ProbeSpec(READINESS, {}, success_threshold=2, failure_threshold=3)
    counter = ProbeCounter(spec)
    assert not counter.record(Result.SUCCESS)  # 1 of 2
    assert counter.record(Result.SUCCESS) and counter.result is Result.SUCCESS
    assert not counter.record(Result.FAILURE, "a") and not counter.record(Result.FAILURE, "b")
    assert not counter.record(Result.UNKNOWN)  # a probe that could not run changes nothing
    assert counter.record(Result.FAILURE, "c") and counter.result is Result.FAILURE and counter.message == "c"
    assert not counter.record(Result.SUCCESS)  # one success is not enough to be ready again
    assert not counter.record(Result.FAILURE)  # and a failure in between starts the count over


def test_resolve_port() -> None:
    c = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port(81, c) == 81 and resolve_port("82", c) == 82 and resolve_port("http", c) == 8080
    with pytest.raises(ValueError, match="names none"):
        resolve_port("admin", c)


# --- real probes on loopback --------------------------------------------------------------------


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def with_server(routes: Callable[[web.Application], None], body: Callable[[int], Awaitable[T]]) -> T:
    app = web.Application()
    routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        return await body(port)
    finally:
        await runner.cleanup()


def test_http_get() -> None:
    seen: dict[str, Any] = {}

    async def ok(request: web.Request) -> web.Response:
        seen["ua"] = request.headers.get("User-Agent")
        seen["x"] = request.headers.get("X-Probe")
        return web.Response(text="fine")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/healthz")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(text="late")

    def routes(app: web.Application) -> None:
        app.router.add_get("/healthz", ok)
        app.router.add_get("/broken", broken)
        app.router.add_get("/moved", moved)
        app.router.add_get("/slow", slow)

    async def body(port: int) -> None:
        assert await http_get("127.0.0.1", port, "/healthz", headers={"X-Probe": "1"}) == (Result.SUCCESS, "")
        assert seen == {"ua": "kube-probe/1.32", "x": "1"}
        result, message = await http_get("127.0.0.1", port, "/broken")
        assert (
            result is Result.FAILURE and message == "HTTP probe failed with statuscode: 503, body: overloaded"
        )
        assert (await http_get("127.0.0.1", port, "moved"))[0] is Result.SUCCESS
        result, message = await http_get("127.0.0.1", port, "/slow", timeout=0.1)
        assert result is Result.FAILURE and "deadline exceeded" in message

    run(with_server(routes, body))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_get_connection_refused() -> None:
    result, message = run(http_get("127.0.0.1", closed_port(), "/"))
    assert result is Result.FAILURE and "127.0.0.1" in message


def test_tcp_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert run(tcp_connect("127.0.0.1", port)) == (Result.SUCCESS, "")
    result, message = run(tcp_connect("127.0.0.1", closed_port()))
    assert result is Result.FAILURE and message.startswith("dial tcp 127.0.0.1:")


def test_run_probe_exec_and_named_ports() -> None:
    calls: list[tuple[str, list[str], float]] = []

    async def exec_fn(cid: str, cmd: Sequence[str], timeout: float) -> tuple[int, str]:
        calls.append((cid, list(cmd), timeout))
        if cmd[0] == "slow":
            raise TimeoutError
        return (0, "") if cmd[0] == "true" else (1, "not healthy\n")

    def spec(cmd: str) -> ProbeSpec:
        return ProbeSpec(LIVENESS, {"exec": {"command": [cmd]}}, timeout=2)

    assert run(run_probe(spec("true"), {}, "c1", "", exec_fn)) == (Result.SUCCESS, "")
    assert run(run_probe(spec("false"), {}, "c1", "", exec_fn)) == (Result.FAILURE, "not healthy")
    assert run(run_probe(spec("slow"), {}, "c1", "", exec_fn))[0] is Result.FAILURE
    assert calls[0] == ("c1", ["true"], 2)
    unknown = ProbeSpec(READINESS, {"httpGet": {"port": "admin"}})
    assert run(run_probe(unknown, {"ports": []}, "c1", "127.0.0.1", exec_fn))[0] is Result.UNKNOWN
    grpc = ProbeSpec(READINESS, {"grpc": {"port": 9000}})
    assert run(run_probe(grpc, {}, "c1", "127.0.0.1", exec_fn))[0] is Result.UNKNOWN


# --- the manager ------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_manager_readiness_liveness_and_restart() -> None:
    async def body() -> None:
        healthy = {"ready": False, "live": True}
        changes: list[str] = []
        failures: list[tuple[str, str, str]] = []

        async def exec_fn(cid: str, cmd: Sequence[str], timeout: float) -> tuple[int, str]:
            return (0 if healthy[cmd[0]] else 1), ""

        manager = ProbeManager(
            exec_fn, changes.append, lambda key, name, kind, msg: failures.append((key, name, kind))
        )
        spec = {
            "name": "app",
            "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 0.02},
            "livenessProbe": {"exec": {"command": ["live"]}, "periodSeconds": 0.02, "failureThreshold": 2},
        }
        rc = RunningContainer("app", "cid-1", time.time(), spec)
        manager.update("ns/p", "uid", "10.0.0.1", [rc])
        try:
            await until(lambda: bool(failures))  # readiness failing: reported, still not ready
            assert not manager.readiness("uid", "app", "cid-1")
            healthy["ready"] = True
            await until(lambda: manager.readiness("uid", "app", "cid-1"))
            assert "ns/p" in changes
            assert manager.failed("uid", "app", "cid-1") is None
            healthy["live"] = False
            await until(lambda: manager.failed("uid", "app", "cid-1") is not None)
            assert (
                manager.failed("uid", "app", "cid-1")
                == "Container app failed liveness probe, will be restarted"
            )
            # A new instance of the container starts over: not ready, alive.
            healthy["live"] = True
            manager.update("ns/p", "uid", "10.0.0.1", [RunningContainer("app", "cid-2", time.time(), spec)])
            assert manager.failed("uid", "app", "cid-2") is None and not manager.readiness(
                "uid", "app", "cid-2"
            )
            assert not manager.readiness("uid", "app", "cid-1")  # results belong to one instance
            await until(lambda: manager.readiness("uid", "app", "cid-2"))
            manager.remove_pod("uid")
            assert not manager.readiness("uid", "app", "cid-2")
        finally:
            await manager.close()

    run(body())


def test_manager_startup_probe_gates_the_others_and_initial_delay() -> None:
    async def body() -> None:
        probed: list[str] = []
        state = {"started": False}

        async def exec_fn(cid: str, cmd: Sequence[str], timeout: float) -> tuple[int, str]:
            probed.append(cmd[0])
            if cmd[0] == "start":
                return (0 if state["started"] else 1), ""
            return 0, ""

        manager = ProbeManager(exec_fn, lambda key: None)
        spec = {
            "name": "app",
            "startupProbe": {"exec": {"command": ["start"]}, "periodSeconds": 0.02, "failureThreshold": 1000},
            "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 0.02},
        }
        manager.update("ns/p", "uid", "", [RunningContainer("app", "c", time.time(), spec)])
        try:
            await until(lambda: probed.count("start") >= 3)
            assert "ready" not in probed and not manager.started("uid", "app", "c", True)
            state["started"] = True
            await until(lambda: manager.readiness("uid", "app", "c"))
            assert manager.started("uid", "app", "c", True)
            # initialDelaySeconds: nothing runs before the delay has passed since the start.
            delayed = {
                "name": "late",
                "readinessProbe": {"exec": {"command": ["late"]}, "initialDelaySeconds": 60},
            }
            manager.update("ns/q", "uid2", "", [RunningContainer("late", "d", time.time(), delayed)])
            before = probed.count("ready")
            await until(lambda: probed.count("ready") >= before + 5)  # time passes: the others probe on
            assert "late" not in probed and not manager.readiness("uid2", "late", "d")
        finally:
            await manager.close()

    run(body())


def test_manager_seeded_readiness_for_adopted_containers() -> None:
    async def body() -> None:
        async def exec_fn(cid: str, cmd: Sequence[str], timeout: float) -> tuple[int, str]:
            return 0, ""

        manager = ProbeManager(exec_fn, lambda key: None)
        manager.seed_ready("cid", True)
        spec = {"name": "app", "readinessProbe": {"exec": {"command": ["x"]}, "initialDelaySeconds": 60}}
        manager.update("ns/p", "uid", "", [RunningContainer("app", "cid", time.time(), spec)])
        try:
            assert manager.readiness("uid", "app", "cid")  # no flap to NotReady after an agent restart
        finally:
            await manager.close()

    run(body())


def test_only_adopted_containers_wait_for_their_first_probe() -> None:
    async def body() -> None:
        async def exec_fn(cid: str, cmd: Sequence[str], timeout: float) -> tuple[int, str]:
            return 0, ""

        manager = ProbeManager(exec_fn, lambda key: None)
        spec = ProbeSpec(READINESS, {"exec": {"command": ["x"]}}, period=5)
        try:
            new = RunningContainer("app", "c1", manager.started_at + 1, {})
            adopted = RunningContainer("app", "c0", manager.started_at - 60, {})
            assert manager.first_probe_jitter(new, spec) == 0.0
            jitters = {manager.first_probe_jitter(adopted, spec) for _ in range(20)}
            assert all(0.0 <= j <= 0.1 for j in jitters) and len(jitters) > 1
        finally:
            await manager.close()

    run(body())
