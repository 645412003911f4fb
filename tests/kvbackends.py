"""Fixtures that run the same black-box store tests against real etcd 3.4 and against grove.

etcd is the reference: a test of etcd v2 behaviour runs on both backends (`kv_cluster` is
parametrized over "etcd" and "grove"), so a test that fails on etcd is a wrong test and one that
fails only on grove is a compatibility bug. Shared clusters live for the whole session and every
test works under its own key prefix (`kv_prefix`); tests that kill members or change membership
start their own clusters with `start_backend`. When etcd is missing the etcd cases are skipped,
except in CI (env CI set), where they fail loudly.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import requests

from bench.etcd import ETCD_INSTALL_HINT, EtcdCluster, find_etcd, free_ports
from kvstore.localcluster import GroveCluster
from tests import waiting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ["etcd", "grove"]
ETCD_HISTORY_SIZE = 1000  # etcd v2's event history is fixed at 1000 events
SHARED_GROVE_HISTORY = ETCD_HISTORY_SIZE  # so the "index cleared" test means the same on both
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "condition",
    interval: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy; fail the test with `what` at the deadline.

    Request and parse errors count as "not yet"; `detail` adds context (e.g. a member's log)."""
    return waiting.wait_for(
        predicate, what, timeout, detail=detail, interval=interval, max_interval=max(interval, 0.25),
        errors=(requests.RequestException, OSError, ValueError, KeyError),
    )  # fmt: skip


def get_json(url: str, timeout: float = 2.0) -> dict | None:
    try:
        r = requests.get(url, timeout=timeout)
        return r.json()
    except (requests.RequestException, ValueError):
        return None


def require_etcd() -> str:
    """Path of etcd; skip without it, but fail in CI where the reference must run."""
    path = find_etcd()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {ETCD_INSTALL_HINT}", pytrace=False)
        pytest.skip(ETCD_INSTALL_HINT)
    return path


def require_etcdctl() -> str:
    path = shutil.which("etcdctl")
    if path is None:
        hint = "etcdctl is not installed: apt-get install etcd-client"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {hint}", pytrace=False)
        pytest.skip(hint)
    return path


@dataclass
class KVBackend:
    """A running cluster of either kind, seen through the same small interface."""

    kind: str  # "etcd" or "grove"
    cluster: Any  # bench.etcd.EtcdCluster or kvstore.localcluster.GroveCluster
    history_size: int = ETCD_HISTORY_SIZE
    extra_members: list[MemberProcess] = field(default_factory=list)

    # --- addresses -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.client_urls)

    @property
    def client_urls(self) -> list[str]:
        return list(self.cluster.client_urls)

    @property
    def peer_urls(self) -> list[str]:
        if self.kind == "etcd":
            return [m.peer_url for m in self.cluster.members]
        return list(self.cluster.peer_urls)

    @property
    def names(self) -> list[str]:
        if self.kind == "etcd":
            return [m.name for m in self.cluster.members]
        return list(self.cluster.names)

    @property
    def endpoints(self) -> str:
        return ",".join(self.client_urls)

    def url(self, i: int = 0) -> str:
        return self.client_urls[i]

    def keys_url(self, key: str, i: int = 0) -> str:
        return f"{self.client_urls[i]}/v2/keys/{key.lstrip('/')}"

    # --- processes -------------------------------------------------------------------------

    def is_running(self, i: int) -> bool:
        if self.kind == "etcd":
            return self.cluster.members[i].running
        return self.cluster.is_running(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        self.cluster.kill(i, sig)

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start member i again on its ports and data dir; wait until it answers /health."""
        if self.kind == "etcd":
            self.cluster.restart(i)
            return
        # GroveCluster.restart(i) gives up when any *other* member is down (it checks them all),
        # which is exactly the situation several tests create; so spawn and wait here.
        self.cluster.kill(i)
        self.cluster._spawn(i)
        wait_for(
            lambda: (
                self.is_running(i) and (get_json(self.url(i) + "/health", 1.0) or {}).get("health") == "true"
            ),
            timeout,
            f"grove member {self.names[i]} to come back",
            detail=lambda: self.log(i)[-2000:],
        )

    def log(self, i: int) -> str:
        if self.kind == "etcd":
            return self.cluster.members[i].log_tail(40)
        return self.cluster.log(i)[-4000:]

    def running(self) -> list[int]:
        return [i for i in range(self.size) if self.is_running(i)]

    def assert_alive(self, members: list[int] | None = None) -> None:
        """Every member (default: all) is still running and answers /health."""
        for i in members if members is not None else range(self.size):
            assert self.is_running(i), f"{self.kind} member {self.names[i]} died:\n{self.log(i)}"
            health = wait_for(
                lambda i=i: get_json(self.url(i) + "/health"), 10, f"/health of {self.names[i]}"
            )
            assert health.get("health") in ("true", True), health

    def leader_index(self, timeout: float = 15.0, members: list[int] | None = None) -> int:
        """The member every running member names as leader (waits through elections)."""

        def probe() -> int | None:
            idx = members if members is not None else self.running()
            stats = [get_json(self.url(i) + "/v2/stats/self", 1.0) or {} for i in idx]
            leaders = {(s.get("leaderInfo") or {}).get("leader") for s in stats}
            says = [i for i, s in zip(idx, stats) if s.get("state") == "StateLeader"]
            if len(says) == 1 and len(leaders) == 1 and None not in leaders and "" not in leaders:
                return says[0] + 1  # +1: member 0 must count as found
            return None

        return wait_for(probe, timeout, f"{self.kind} members to agree on a leader") - 1

    def follower_index(self) -> int:
        leader = self.leader_index()
        return next(i for i in self.running() if i != leader)

    def member_ids(self) -> dict[str, str]:
        """name -> member id, from /v2/members."""
        doc = wait_for(lambda: get_json(self.url(self.running()[0]) + "/v2/members"), 10, "/v2/members")
        return {m["name"]: m["id"] for m in doc["members"]}


def _start_etcd(
    size: int, snapshot_count: int | None = None, extra_args: list[str] | None = None
) -> KVBackend:
    require_etcd()
    args = list(extra_args or [])
    if snapshot_count is not None:
        args += ["--snapshot-count", str(snapshot_count)]
    cluster = EtcdCluster(size, extra_args=args).start()
    return KVBackend("etcd", cluster, ETCD_HISTORY_SIZE)


def _start_grove(
    size: int,
    snapshot_count: int | None = None,
    history_size: int | None = None,
    extra_args: list[str] | None = None,
) -> KVBackend:
    cluster = GroveCluster(
        size, snapshot_count=snapshot_count, history_size=history_size, extra_args=extra_args or []
    ).start()
    return KVBackend("grove", cluster, history_size or 100_000)


def start_backend(
    kind: str,
    size: int = 3,
    *,
    snapshot_count: int | None = None,
    history_size: int | None = None,
    extra_args: list[str] | None = None,
) -> KVBackend:
    """Start a fresh cluster of `kind`; the caller stops it with `stop_backend`.

    `history_size` only applies to grove (etcd's v2 history is fixed at 1000 events).
    """
    if kind == "etcd":
        return _start_etcd(size, snapshot_count, extra_args)
    if kind == "grove":
        return _start_grove(size, snapshot_count, history_size, extra_args)
    raise ValueError(f"unknown backend {kind!r}")


def stop_backend(backend: KVBackend) -> None:
    try:
        for extra in backend.extra_members:
            extra.stop()
    finally:
        backend.cluster.stop()


@contextlib.contextmanager
def backend_running(kind: str, size: int = 3, **kw: Any) -> Iterator[KVBackend]:
    backend = start_backend(kind, size, **kw)
    try:
        yield backend
    finally:
        stop_backend(backend)


# --- extra member processes (membership changes, discovery) -----------------------------------


@dataclass
class MemberProcess:
    """One store member started by hand (a 4th member, or a member bootstrapped by discovery)."""

    kind: str
    name: str
    client_url: str
    peer_url: str
    data_dir: str
    log_path: str
    args: list[str]
    process: subprocess.Popen | None = None

    def start(self) -> MemberProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=ROOT
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            if not self.running:
                pytest.fail(f"{self.kind} member {self.name} exited:\n{self.log()}")
            return (get_json(self.client_url + "/health", 1.0) or {}).get("health") in ("true", True)

        waiting.wait_for(healthy, f"{self.kind} member {self.name} to be healthy", timeout, detail=self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def spawn_member(
    kind: str,
    name: str,
    base_dir: str,
    *,
    initial_cluster: str | None = None,
    initial_cluster_state: str = "new",
    discovery: str | None = None,
    token: str | None = None,
    start: bool = True,
) -> MemberProcess:
    """One member of `kind` on fresh loopback ports with etcd's flags (grove mirrors them).

    `{self}` in `initial_cluster` stands for the new member's own peer URL. With `start=False` the
    process is only prepared (e.g. to learn its peer URL for `member add`); call `.start()` later.
    """
    client_port, peer_port = free_ports(2)
    client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    data_dir = os.path.join(base_dir, f"{name}.data")
    if kind == "etcd":
        cmd = [require_etcd(), "--enable-v2"]
    else:
        cmd = [sys.executable, "-m", "kvstore", "serve"]
    cmd += [
        "--name", name,
        "--data-dir", data_dir,
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
    ]  # fmt: skip
    if discovery:
        cmd += ["--discovery", discovery]
    else:
        assert initial_cluster is not None
        cmd += ["--initial-cluster", initial_cluster.replace("{self}", peer_url)]
        cmd += ["--initial-cluster-state", initial_cluster_state]
    if token:
        cmd += ["--initial-cluster-token", token]
    member = MemberProcess(
        kind, name, client_url, peer_url, data_dir, os.path.join(base_dir, f"{name}.log"), cmd
    )
    return member.start() if start else member


# --- command-line tools ----------------------------------------------------------------------


def etcdctl(backend: KVBackend | str, *args: str, timeout: float = 15.0, member: int | None = None):
    """Run `ETCDCTL_API=2 etcdctl --endpoints ... ARGS`; returns the CompletedProcess."""
    binary = require_etcdctl()
    if isinstance(backend, str):
        endpoints = backend
    else:
        endpoints = backend.url(member) if member is not None else backend.endpoints
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "2"
    return subprocess.run(
        [binary, "--endpoints", endpoints, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def grove_kv(*args: str, timeout: float = 20.0, env: dict | None = None):
    """Run `grove kv ARGS` (as `python -m grove.cli kv`); returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "grove.cli", "kv", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


# etcdctl's (and `grove kv`'s) `member list` line
MEMBER_LINE = re.compile(r"([0-9a-f]+): name=(\S+) peerURLs=(\S+) clientURLs=(\S+) isLeader=(true|false)")


class LineReader:
    """Lines of a long-running subprocess, read in a thread so the test can wait with a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def read(self, n: int, timeout: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < n:
            try:
                self.seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"expected {n} lines, got {self.seen} (exit code {self.proc.poll()})")
        return self.seen[:n]


# --- fixtures ------------------------------------------------------------------------------


class _Pool:
    """Session-wide clusters, started on first use and stopped at the end of the session."""

    def __init__(self) -> None:
        self.backends: dict[str, KVBackend] = {}
        self.failures: dict[str, str] = {}

    def get(self, kind: str) -> KVBackend:
        if kind == "etcd":
            require_etcd()
        if kind in self.failures:
            pytest.fail(f"the shared {kind} cluster did not start: {self.failures[kind]}", pytrace=False)
        if kind not in self.backends:
            try:
                if kind == "grove":
                    self.backends[kind] = start_backend("grove", history_size=SHARED_GROVE_HISTORY)
                else:
                    self.backends[kind] = start_backend(kind)
            except Exception as exc:
                self.failures[kind] = str(exc)
                raise
        backend = self.backends[kind]
        trouble = self._trouble(backend)
        if trouble:
            # The test that broke it has failed already (bad-input tests check the members stay up);
            # later tests get a fresh cluster instead of failing one after another for the same cause.
            warnings.warn(f"shared {kind} cluster replaced: {trouble}", stacklevel=1)
            stop_backend(backend)
            del self.backends[kind]
            return self.get(kind)
        return backend

    @staticmethod
    def _trouble(backend: KVBackend) -> str | None:
        for i in range(backend.size):
            if not backend.is_running(i):
                return f"member {backend.names[i]} died:\n{backend.log(i)}"
        bad: list = []

        def all_healthy() -> bool:
            bad[:] = [
                (backend.names[i], doc)
                for i in range(backend.size)
                if ((doc := get_json(backend.url(i) + "/health", 2.0)) or {}).get("health")
                not in ("true", True)
            ]
            return not bad

        # a leader election in progress is not trouble
        return None if waiting.poll(all_healthy, 10)[0] else f"unhealthy members: {bad}"

    def close(self) -> None:
        for backend in self.backends.values():
            stop_backend(backend)
        self.backends.clear()


@pytest.fixture(scope="session")
def _kv_pool() -> Iterator[_Pool]:
    pool = _Pool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(params=BACKENDS)
def kv_cluster(request: pytest.FixtureRequest, _kv_pool: _Pool) -> KVBackend:
    """A shared three-member cluster of each backend; tests must stay under `kv_prefix`."""
    return _kv_pool.get(request.param)


@pytest.fixture
def grove_cluster(_kv_pool: _Pool) -> KVBackend:
    """The shared three-member grove cluster (for behaviour etcd does not have)."""
    return _kv_pool.get("grove")


@pytest.fixture
def kv_prefix(request: pytest.FixtureRequest) -> str:
    """A key directory no other test uses, e.g. `/test_cas-etcd-1a2b3c`."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")
    return f"/{name[:60]}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def tmp_base() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="grove-kvtest-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def etcd_body(resp: requests.Response) -> dict:
    """The JSON body of a response, with a readable failure when it is not JSON."""
    try:
        return resp.json()
    except ValueError:
        pytest.fail(f"{resp.request.method} {resp.url} -> {resp.status_code}, not JSON: {resp.text[:300]!r}")
