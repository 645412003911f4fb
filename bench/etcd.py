"""A real etcd 3.4 cluster on loopback, for side-by-side benchmarks and for tests of the client.

grove's store claims etcd v2 compatibility and is measured against etcd itself, so `grove bench kv`
and the client tests start genuine etcd members (Debian's `etcd-server`, with `--enable-v2`) on free
loopback ports in a temporary directory, wait until every member reports healthy, and remove
processes and data again whatever happens. `EtcdCluster` also kills and restarts members so failover
can be exercised.

    with EtcdCluster(3) as cluster:
        client = KVClient(cluster.client_urls)

`python -m bench.etcd --size 3` runs a cluster until Ctrl-C and prints its endpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

from kvstore.localcluster import free_ports

ETCD_INSTALL_HINT = (
    "etcd is not installed: install etcd 3.4 with `apt-get install etcd-server` "
    "(or set GROVE_ETCD_BIN to the path of an etcd binary)"
)
_STOP_GRACE = 10.0  # seconds a member gets to exit on SIGTERM before SIGKILL


class EtcdNotFound(RuntimeError):
    """No etcd binary on this machine."""


class EtcdStartError(RuntimeError):
    """A member did not come up; the message carries the end of its log."""


def find_etcd() -> str | None:
    """Path of the etcd binary: $GROVE_ETCD_BIN, else `etcd` on PATH, else None."""
    explicit = os.environ.get("GROVE_ETCD_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("etcd") or next(
        (p for p in ("/usr/bin/etcd", "/usr/local/bin/etcd") if os.access(p, os.X_OK)), None
    )


@dataclass
class EtcdMember:
    """One etcd process of the cluster."""

    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class EtcdCluster:
    """N etcd members on free loopback ports, in a temporary directory removed by `stop()`."""

    def __init__(
        self,
        size: int = 3,
        *,
        binary: str | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        startup_timeout: float = 30.0,
        host: str = "127.0.0.1",
    ) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.size = size
        self.binary = binary
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.host = host
        self.members: list[EtcdMember] = []
        self.base_dir: Path | None = None

    @property
    def client_urls(self) -> list[str]:
        return [member.client_url for member in self.members]

    @property
    def endpoints(self) -> str:
        """Client URLs as one comma-separated string, as etcdctl and grove's flags take them."""
        return ",".join(self.client_urls)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every member and wait until all report healthy; cleans up and raises on failure."""
        binary = self.binary or find_etcd()
        if binary is None:
            raise EtcdNotFound(ETCD_INSTALL_HINT)
        self.binary = binary
        # Ports are free when picked but may be taken before etcd binds them: retry with new ones.
        for attempt in range(3):
            try:
                self._launch()
                self.wait_healthy()
                return self
            except EtcdStartError:
                port_clash = any("address already in use" in m.log_tail(50) for m in self.members)
                self.stop()
                if not port_clash or attempt == 2:
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="grove-etcd-"))
        ports = free_ports(2 * self.size, self.host)
        self.members = []
        for i in range(self.size):
            name = f"etcd{i}"
            self.members.append(
                EtcdMember(
                    name=name,
                    client_url=f"http://{self.host}:{ports[2 * i]}",
                    peer_url=f"http://{self.host}:{ports[2 * i + 1]}",
                    data_dir=self.base_dir / f"{name}.data",
                    log_path=self.base_dir / f"{name}.log",
                    args=[],
                )
            )
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.args = [
                "--enable-v2",
                "--name", member.name,
                "--data-dir", str(member.data_dir),
                "--listen-client-urls", member.client_url,
                "--advertise-client-urls", member.client_url,
                "--listen-peer-urls", member.peer_url,
                "--initial-advertise-peer-urls", member.peer_url,
                "--initial-cluster", initial_cluster,
                "--initial-cluster-token", f"grove-bench-{self.base_dir.name}",
                "--initial-cluster-state", "new",
                *self.extra_args,
            ]  # fmt: skip
            self._spawn(member)

    def _spawn(self, member: EtcdMember) -> None:
        assert self.binary is not None
        # etcd reads ETCD_* variables as flags (and refuses to start if one duplicates a flag).
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        member.log_file = open(member.log_path, "ab")  # noqa: SIM115 - closed in _reap
        member.process = subprocess.Popen(
            [self.binary, *member.args],
            stdin=subprocess.DEVNULL,
            stdout=member.log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_healthy(self, indices: list[int] | None = None, timeout: float | None = None) -> None:
        """Block until /health is true on the given members (default: all); EtcdStartError if not."""
        indices = list(range(len(self.members))) if indices is None else indices
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        pending = set(indices)
        while pending:
            for i in sorted(pending):
                member = self.members[i]
                if not member.running:
                    code = member.process.returncode if member.process else None
                    raise EtcdStartError(
                        f"etcd member {member.name} exited with code {code}; end of {member.log_path}:\n"
                        f"{member.log_tail()}"
                    )
                if _healthy(member.client_url):
                    pending.discard(i)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(self.members[i].name for i in sorted(pending))
                tail = self.members[min(pending)].log_tail()
                raise EtcdStartError(f"etcd members not healthy in time: {names}; end of log:\n{tail}")
            time.sleep(0.05)  # polling interval of the health check, not a wait for an outcome

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to member i; for SIGKILL/SIGTERM/SIGINT wait until it has exited."""
        member = self.members[i]
        if not member.running or member.process is None:
            return
        member.process.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self._reap(member)

    def restart(self, i: int, *, wait: bool = True) -> None:
        """(Re)start member i on its old ports and data; wait until it reports healthy."""
        member = self.members[i]
        if member.running:
            self.kill(i, signal.SIGTERM)
        self._spawn(member)
        if wait:
            self.wait_healthy([i])

    def leader_index(self) -> int | None:
        """Index of the member that says it is the leader (from /v2/stats/self), or None."""
        for i, member in enumerate(self.members):
            if not member.running:
                continue
            stats = _get_json(member.client_url + "/v2/stats/self")
            if stats and stats.get("state") == "StateLeader":
                return i
        return None

    def stop(self) -> None:
        """Kill every member and remove the temporary directory with their data.

        SIGKILL, not SIGTERM: the data is thrown away anyway, and a leader stopped together with its
        followers spends seconds trying to hand over leadership first.
        """
        for member in self.members:
            if member.running and member.process is not None:
                member.process.kill()
        for member in self.members:
            self._reap(member)
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None

    def _reap(self, member: EtcdMember) -> None:
        process = member.process
        if process is not None:
            try:
                process.wait(timeout=_STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if member.log_file is not None:
            member.log_file.close()
            member.log_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _get_json(url: str, timeout: float = 1.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):  # connection refused, HTTP errors (URLError is an OSError), bad JSON
        return None


def _healthy(client_url: str) -> bool:
    doc = _get_json(client_url + "/health")
    return bool(doc) and doc.get("health") in ("true", True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local etcd 3.4 cluster until Ctrl-C.")
    parser.add_argument("--size", type=int, default=3, help="number of members (default 3)")
    args = parser.parse_args()
    if find_etcd() is None:
        raise SystemExit(ETCD_INSTALL_HINT)
    try:
        with EtcdCluster(args.size) as cluster:
            print(f"etcd cluster up: ETCDCTL_API=2 etcdctl --endpoints {cluster.endpoints}", flush=True)
            stop_signals = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after the spawns: members keep theirs
            signal.sigwait(stop_signals)
    except EtcdStartError as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
