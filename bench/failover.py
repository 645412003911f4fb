"""`grove bench failover`: what clients see when the leader dies, grove and etcd in one run.

A load process (its own uvloop loop, so the killing and waiting here cannot delay it) runs a paced,
steady mix through `kvstore.client.KVClient`, which retries across endpoints:
  - closed-loop clients that write a unique value to one of 200 keys and read it back;
  - a write prober that starts a new write every 10 ms, each with its own retries, so the first
    moment the cluster accepts writes again is seen within ~10 ms whatever old requests still hang;
  - a few single-key registers with quorum reads, writes and compare-and-swaps whose invocations
    and completions go into a `bench.linearizability.History`. These clients do not retry (a retried
    CAS can succeed twice and look like a store bug); a timeout or error is an indeterminate op.
Meanwhile this process SIGKILLs the current leader `--kills` times, restarts it after `--down-time`,
waits until every member is healthy and agrees on a leader, lets the load run `--settle` seconds,
and kills again. A kill's unavailability window ends with the first acknowledged write whose
request was sent after the kill. Afterwards every key is read back with quorum=true: an
acknowledged write is lost when the key holds the value of a write that finished before it started
(or a value nobody wrote). The register history is then checked for linearizability.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import multiprocessing
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection

from bench.kv import BenchError, LocalCluster, ensure_etcd, get_json, leader_of, started
from bench.loadgen import percentile

STEADY_KEYS = 200
KEY_PREFIX = "/bench/failover/k"
REGISTER_PREFIX = "/bench/failover/reg"
REGISTER_INITIAL = "init"
REGISTER_CLIENTS = 3  # concurrent clients per register
BUCKET_S = 0.1  # timeline resolution
_POLL = 0.05


@dataclass
class FailoverConfig:
    targets: list[str]
    kills: int = 20
    down_time: float = 1.0
    settle: float = 1.0
    clients: int = 8
    registers: int = 4
    rate: float = 50.0  # ops/s per steady client and per register client
    probe_interval: float = 0.01  # seconds between two prober writes
    request_timeout: float = 2.0  # per attempt, for the retrying clients
    register_timeout: float = 1.0  # per op of the register clients (no retry)
    install_etcd: bool = False
    history_dir: str | None = None
    stable_timeout: float = 60.0


@dataclass
class LoadPlan:
    """What the load process runs; sent to it when it starts."""

    endpoints: list[str]
    clients: int
    registers: int
    rate: float
    probe_interval: float
    request_timeout: float
    register_timeout: float
    seed: int


@dataclass
class LoadRecord:
    """Everything the load process saw: writes with their timing, every ack, the register history."""

    writes: list[tuple[str, str, float, float | None]]  # key, value, invoke, complete (None: not acked)
    acks: list[tuple[float, bool]]  # completion time of every acknowledged op, is it a write
    history_json: str
    started_at: float
    cpu: float = 0.0  # the load process's CPU seconds per wall second while the load ran


@dataclass
class FailoverResult:
    """One target's figures; `to_dict()` is its entry in the JSON file."""

    target: str
    windows_ms: list[float]
    p50_ms: float
    p99_ms: float
    max_ms: float
    acked: int  # acknowledged writes
    acked_ops: int  # acknowledged ops of every kind
    lost: int
    linearizable: bool | None
    linearizability_detail: str
    history_ops: int
    indeterminate_writes: int
    recovery_ms: list[float]  # kill -> restarted member healthy and every member agrees on a leader
    max_gap_after_recovery_ms: float  # longest stretch without an acked write between windows
    loadgen_cpu: float  # the load process's CPU seconds per wall second (1.0 = it was the limit)
    lost_examples: list[str] = field(default_factory=list)
    kill_times_s: list[float] = field(default_factory=list)
    restart_times_s: list[float] = field(default_factory=list)
    timeline: list[int] = field(default_factory=list)  # acked ops per bucket since the load started
    bucket_s: float = BUCKET_S
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- the load process -----------------------------------------------------------------------


class _Load:
    """The asyncio side of the load process."""

    def __init__(self, plan: LoadPlan, pipe: Connection) -> None:
        from bench.linearizability import History

        self.plan = plan
        self.pipe = pipe
        self.history = History(time.monotonic)
        self.writes: list[list] = []  # [key, value, invoke, complete]
        self.acks: list[tuple[float, bool]] = []
        self.stopping = False
        self.stop = asyncio.Event()
        self.rng = random.Random(plan.seed)
        self.clients: list = []

    def _client(self, offset: int, *, retry: bool):
        from kvstore.client import KVClient

        endpoints = self.plan.endpoints
        rotated = endpoints[offset % len(endpoints) :] + endpoints[: offset % len(endpoints)]
        if retry:
            client = KVClient(rotated, timeout=self.plan.request_timeout, retry_deadline=120.0)
        else:
            client = KVClient(rotated, timeout=self.plan.register_timeout, retry_deadline=0.0)
        self.clients.append(client)
        return client

    async def _write(self, client, key: str, value: str) -> bool:
        record = [key, value, time.monotonic(), None]
        self.writes.append(record)
        try:
            await client.set(key, value)
        except Exception:  # noqa: BLE001 - any failure leaves the write unacknowledged (indeterminate)
            return False
        record[3] = now = time.monotonic()
        self.acks.append((now, True))
        return True

    async def _paced(self, body: Callable, rate: float) -> None:
        """Run `body()` `rate` times a second until stopped (no catch-up bursts after a stall)."""
        interval = 1.0 / rate
        next_at = time.monotonic() + self.rng.random() * interval
        while not self.stopping:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, time.monotonic())
            if self.stopping:
                return
            await body()

    async def steady(self, n: int) -> None:
        from kvstore.client import ClusterUnavailable, EtcdError

        client = self._client(n, retry=True)
        seq = 0
        rng = random.Random(self.plan.seed * 1000 + n)

        async def one() -> None:
            nonlocal seq
            seq += 1
            key = f"{KEY_PREFIX}{rng.randrange(STEADY_KEYS)}"
            if await self._write(client, key, f"s{n}-{seq}"):
                try:
                    await client.get(key)
                except (TimeoutError, EtcdError, ClusterUnavailable, OSError):
                    return
                self.acks.append((time.monotonic(), False))

        await self._paced(one, self.plan.rate)

    async def prober(self) -> None:
        client = self._client(0, retry=True)
        inflight: set[asyncio.Task] = set()
        seq = 0
        while not self.stopping:
            if len(inflight) < 200:
                seq += 1
                key = f"{KEY_PREFIX}{self.rng.randrange(STEADY_KEYS)}"
                task = asyncio.ensure_future(self._write(client, key, f"p-{seq}"))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            await asyncio.sleep(self.plan.probe_interval)
        if inflight:
            await asyncio.wait(inflight, timeout=self.plan.request_timeout * 2)

    async def register_client(self, reg: int, n: int) -> None:
        from kvstore.client import EtcdError

        history = self.history
        key = f"{REGISTER_PREFIX}{reg}"
        client = self._client(reg * REGISTER_CLIENTS + n, retry=False)
        rng = random.Random(self.plan.seed * 7919 + reg * 31 + n)
        generation = 0
        seen = REGISTER_INITIAL
        seq = 0

        async def one() -> None:
            nonlocal generation, seen, seq
            seq += 1
            # After an indeterminate op the client counts as a new process (Jepsen's convention).
            process = (reg * REGISTER_CLIENTS + n) * 100_000 + generation
            kind = rng.choice(("read", "write", "cas"))
            value = f"r{reg}c{n}-{seq}"
            record = None
            if kind != "read":
                record = [key, value, time.monotonic(), None]
                self.writes.append(record)
            if kind == "read":
                op = history.invoke(process, key, "read")
            elif kind == "write":
                op = history.invoke(process, key, "write", value=value)
            else:
                op = history.invoke(process, key, "cas", value=value, expected=seen)
            try:
                if kind == "read":
                    resp = await client.get(key, quorum=True)
                    history.ok(op, resp.value)
                    seen = resp.value
                elif kind == "write":
                    await client.set(key, value)
                    history.ok(op, None)
                    seen = value
                else:
                    await client.compare_and_swap(key, value, prev_value=seen)
                    history.ok(op, True)
                    seen = value
                now = time.monotonic()
                self.acks.append((now, kind != "read"))
                if record is not None:
                    record[3] = now
            except EtcdError as exc:
                if kind == "cas" and exc.error_code in (100, 101):  # key missing / compare failed
                    history.ok(op, False)
                    self.acks.append((time.monotonic(), False))
                    self.writes.remove(record)  # it wrote nothing
                elif kind == "read" and exc.error_code == 100:
                    history.ok(op, None)
                    seen = None
                else:
                    history.info(op)
                    generation += 1
            except Exception:  # noqa: BLE001 - timeout, connection lost, no endpoint: unknown outcome
                history.info(op)
                generation += 1

        await self._paced(one, self.plan.rate)

    def _on_message(self) -> None:
        msg = self.pipe.recv()
        if msg[0] == "stop":
            self.stopping = True
            self.stop.set()
        elif msg[0] == "first_ack":
            self.pipe.send(("first_ack", first_ack_after([(w[2], w[3]) for w in self.writes], msg[1])))

    async def run(self) -> None:
        from kvstore.client import KVClient

        async with KVClient(self.plan.endpoints, timeout=2.0, retry_deadline=60.0) as setup:
            for reg in range(self.plan.registers):
                invoke = time.monotonic()
                await setup.set(f"{REGISTER_PREFIX}{reg}", REGISTER_INITIAL)
                self.writes.append([f"{REGISTER_PREFIX}{reg}", REGISTER_INITIAL, invoke, time.monotonic()])
        loop = asyncio.get_running_loop()
        loop.add_reader(self.pipe.fileno(), self._on_message)
        # The loop made the pipe non-blocking; pickled replies (the record is megabytes) need blocking writes.
        os.set_blocking(self.pipe.fileno(), True)
        started_at, cpu0 = time.monotonic(), time.process_time()
        self.pipe.send(("ready", started_at))
        tasks = [asyncio.ensure_future(self.steady(n)) for n in range(self.plan.clients)]
        tasks.append(asyncio.ensure_future(self.prober()))
        for reg in range(self.plan.registers):
            tasks += [asyncio.ensure_future(self.register_client(reg, n)) for n in range(REGISTER_CLIENTS)]
        await self.stop.wait()
        cpu = (time.process_time() - cpu0) / max(1e-9, time.monotonic() - started_at)
        _, pending = await asyncio.wait(tasks, timeout=self.plan.request_timeout * 3 + 2)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        loop.remove_reader(self.pipe.fileno())
        os.set_blocking(self.pipe.fileno(), True)
        for client in self.clients:
            await client.close()
        record = LoadRecord(
            writes=[(k, v, i, c) for k, v, i, c in self.writes],
            acks=self.acks,
            history_json=self.history.to_json(),
            started_at=started_at,
            cpu=cpu,
        )
        self.pipe.send(("done", record))


def _load_main(pipe: Connection, plan: LoadPlan) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_Load(plan, pipe).run())
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        loop.close()


class LoadProcess:
    """The parent's handle on the load process."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_load_main, args=(child, plan), daemon=True, name="grove-bench-failover"
        )
        self.proc.start()
        child.close()
        self.started_at = 0.0

    def _recv(self, timeout: float) -> tuple:
        try:
            if self.pipe.poll(timeout):
                return self.pipe.recv()
        except (EOFError, OSError):
            pass
        raise BenchError(f"the failover load process stopped answering (exit code {self.proc.exitcode})")

    def wait_ready(self, timeout: float = 90.0) -> float:
        reply = self._recv(timeout)
        self.started_at = reply[1]
        return self.started_at

    def first_ack_after(self, t: float) -> float | None:
        self.pipe.send(("first_ack", t))
        return self._recv(30.0)[1]

    def stop(self) -> LoadRecord:
        self.pipe.send(("stop",))
        reply = self._recv(120.0)
        self.proc.join(timeout=10)
        return reply[1]

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.pipe.close()


# --- analysis (pure) --------------------------------------------------------------------------


def first_ack_after(writes: list[tuple[float, float | None]], t: float) -> float | None:
    """Earliest completion of an acknowledged write (invoke, complete) invoked at or after t."""
    best = None
    for invoke, complete in writes:
        if complete is not None and invoke >= t and (best is None or complete < best):
            best = complete
    return best


def lost_writes(
    writes: list[tuple[str, str, float, float | None]], final: dict[str, str | None]
) -> tuple[int, list[str]]:
    """Acknowledged writes the final state contradicts: (count, a few descriptions).

    With unique values, the value a key holds at the end names the write w_f that put it there. An
    acknowledged write w is lost when w started after w_f had completed (w should have replaced
    it), or when the key holds nothing anybody wrote. Writes concurrent with w_f may go either way.
    """
    by_key: dict[str, list[tuple[str, float, float | None]]] = {}
    for key, value, invoke, complete in writes:
        by_key.setdefault(key, []).append((value, invoke, complete))
    lost = 0
    examples: list[str] = []
    for key, items in by_key.items():
        holds = final.get(key)
        acked = [(v, i, c) for v, i, c in items if c is not None]
        source = next(((v, i, c) for v, i, c in items if v == holds), None)
        if source is None:
            bad = acked
            why = f"key holds {holds!r}, which no write of this run wrote"
        else:
            done = source[2] if source[2] is not None else float("inf")
            bad = [(v, i, c) for v, i, c in acked if i > done]
            why = f"key holds {holds!r}, written before it"
        lost += len(bad)
        for v, _, _ in bad[: max(0, 5 - len(examples))]:
            examples.append(f"{key}: acknowledged write {v!r} is gone ({why})")
    return lost, examples


def timeline(acks: list[tuple[float, bool]], start: float, end: float, bucket: float = BUCKET_S) -> list[int]:
    """Acknowledged ops per `bucket` seconds from start to end."""
    counts = [0] * max(1, int((end - start) / bucket) + 1)
    for t, _ in acks:
        i = int((t - start) / bucket)
        if 0 <= i < len(counts):
            counts[i] += 1
    return counts


def max_gap(times: list[float], start: float, end: float) -> float:
    """Longest interval between consecutive sorted `times` inside [start, end] (edges included)."""
    lo = bisect.bisect_left(times, start)
    hi = bisect.bisect_right(times, end)
    points = [start, *times[lo:hi], end]
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


# --- the procedure ----------------------------------------------------------------------------


def wait_stable(urls: list[str], cluster: LocalCluster, timeout: float) -> None:
    """Every member answers /health and all agree on one leader."""
    deadline = time.monotonic() + timeout
    while True:
        healthy = all((get_json(u + "/health") or {}).get("health") in ("true", True) for u in urls)
        if healthy and leader_of(urls, require_all=True) is not None:
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- member {i}\n{cluster.log_tail(i)}" for i in range(len(urls)))
            raise BenchError(
                f"{cluster.target} did not become stable within {timeout:g}s after a restart:\n{logs}"
            )
        time.sleep(_POLL)


def read_final(urls: list[str], keys: list[str]) -> dict[str, str | None]:
    """Every key's value, read with quorum=true (None when absent)."""
    from kvstore.client import EtcdError, KVClient

    async def run() -> dict[str, str | None]:
        async with KVClient(urls, timeout=5.0, retry_deadline=60.0) as client:
            limit = asyncio.Semaphore(16)

            async def one(key: str) -> tuple[str, str | None]:
                async with limit:
                    try:
                        return key, (await client.get(key, quorum=True)).value
                    except EtcdError as exc:
                        if exc.error_code == 100:
                            return key, None
                        raise

            return dict(await asyncio.gather(*(one(k) for k in keys)))

    return asyncio.run(run())


def run_target(
    target: str, config: FailoverConfig, step: Callable[[str], None], killed: Callable[[str], None]
) -> FailoverResult:
    from bench.linearizability import History, check

    step(f"{target}: starting 3 members on loopback")
    with started(target) as cluster:
        urls = cluster.client_urls
        wait_stable(urls, cluster, config.stable_timeout)
        plan = LoadPlan(
            endpoints=urls,
            clients=config.clients,
            registers=config.registers,
            rate=config.rate,
            probe_interval=config.probe_interval,
            request_timeout=config.request_timeout,
            register_timeout=config.register_timeout,
            seed=len(target),
        )
        step(f"{target}: starting the load")
        load = LoadProcess(plan)
        kill_times: list[float] = []
        restart_times: list[float] = []
        windows: list[float] = []
        recovery: list[float] = []
        notes: list[str] = []
        try:
            load.wait_ready()
            for k in range(config.kills):
                step(f"{target}: steady load before kill {k + 1}/{config.kills}")
                time.sleep(config.settle)  # the load runs undisturbed for this long, by design
                leader = leader_of(urls, require_all=True)
                if leader is None:
                    wait_stable(urls, cluster, config.stable_timeout)
                    leader = leader_of(urls, require_all=True)
                    assert leader is not None
                step(f"{target}: kill {k + 1}/{config.kills}: SIGKILL member {leader} (the leader)")
                t_kill = time.monotonic()
                cluster.kill(leader)
                kill_times.append(t_kill)
                time.sleep(
                    max(0.0, t_kill + config.down_time - time.monotonic())
                )  # the outage lasts this long
                restart_times.append(time.monotonic())
                cluster.restart(leader)
                wait_stable(urls, cluster, config.stable_timeout)
                recovery.append((time.monotonic() - t_kill) * 1000)
                ack = load.first_ack_after(t_kill)
                deadline = time.monotonic() + config.stable_timeout
                while ack is None and time.monotonic() < deadline:
                    time.sleep(_POLL)  # stable, but the first write sent after the kill is not answered yet
                    ack = load.first_ack_after(t_kill)
                if ack is None:
                    windows.append((time.monotonic() - t_kill) * 1000)
                    notes.append(
                        f"kill {k + 1}: no write sent after the kill was acknowledged within "
                        f"{config.stable_timeout:g}s of the cluster being stable again"
                    )
                else:
                    windows.append((ack - t_kill) * 1000)
                killed(
                    f"{target} kill {k + 1:2}/{config.kills}: member {leader} SIGKILLed, first write acknowledged "
                    f"after {windows[-1]:7.1f} ms, cluster stable again after {recovery[-1]:7.0f} ms"
                )
            step(f"{target}: steady load after the last kill")
            time.sleep(config.settle)
            step(f"{target}: stopping the load")
            end = time.monotonic()
            record = load.stop()
        finally:
            load.kill()
        step(f"{target}: reading every key back with quorum=true")
        keys = sorted({w[0] for w in record.writes})
        final = read_final(urls, keys)
    step(f"{target}: checking the register history for linearizability")
    lost, examples = lost_writes(record.writes, final)
    history = History.from_json(record.history_json)
    ops = history.ops()
    if config.history_dir:
        os.makedirs(config.history_dir, exist_ok=True)
        path = os.path.join(config.history_dir, f"failover-{target}-history.json")
        with open(path, "w", encoding="utf-8") as f:
            f.write(record.history_json)
        notes.append(
            f"register history saved to {path} "
            f"(check again: python -m bench.linearizability {path} --initial {REGISTER_INITIAL})"
        )
    initial = {f"{REGISTER_PREFIX}{r}": REGISTER_INITIAL for r in range(config.registers)}
    verdict = check(ops, initial=initial, timeout_s=600)
    ack_writes = sorted(t for t, is_write in record.acks if is_write)
    gaps = [
        max_gap(
            ack_writes,
            kill_times[i] + windows[i] / 1000,
            kill_times[i + 1] if i + 1 < len(kill_times) else end,
        )
        for i in range(len(kill_times))
    ]
    ordered = sorted(windows)
    if examples:
        notes += examples
    if verdict.linearizable is not True:
        notes.append(verdict.detail)
    return FailoverResult(
        target=target,
        windows_ms=[round(w, 1) for w in windows],
        p50_ms=round(percentile(ordered, 50), 1),
        p99_ms=round(percentile(ordered, 99), 1),
        max_ms=round(max(windows, default=0.0), 1),
        acked=len(ack_writes),
        acked_ops=len(record.acks),
        lost=lost,
        linearizable=verdict.linearizable,
        linearizability_detail=verdict.detail,
        history_ops=len(ops),
        indeterminate_writes=sum(1 for w in record.writes if w[3] is None),
        recovery_ms=[round(r) for r in recovery],
        max_gap_after_recovery_ms=round(max(gaps, default=0.0) * 1000, 1),
        loadgen_cpu=round(record.cpu, 3),
        lost_examples=examples,
        kill_times_s=[round(t - record.started_at, 3) for t in kill_times],
        restart_times_s=[round(t - record.started_at, 3) for t in restart_times],
        timeline=timeline(record.acks, record.started_at, end),
        notes=notes,
    )


def run_failover(
    config: FailoverConfig,
    step: Callable[[str], None] = lambda text: None,
    killed: Callable[[str], None] = lambda text: None,
) -> list[FailoverResult]:
    """The whole benchmark, one target after the other."""
    if "etcd" in config.targets:
        ensure_etcd(config.install_etcd)
    return [run_target(target, config, step, killed) for target in config.targets]
