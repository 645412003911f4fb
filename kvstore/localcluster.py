"""Start and stop a local cluster of store members as separate processes.

Used by `grove kv cluster`, `grove up`, the benchmarks and the tests: every member is a real
`grove kv serve` process on free loopback ports with its own data dir, so killing one with
SIGKILL is a real crash and restarting it is a real recovery from disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free a moment ago: all bound at once, then released (ports
    picked one at a time can repeat, and two members on one port share a member id)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http_json(url: str, timeout: float = 1.0, context: ssl.SSLContext | None = None) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read() or b"{}")
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


class ClusterError(RuntimeError):
    pass


@dataclass
class ClusterTLS:
    """https on every member's client port (peers stay pysyncobj's own protocol).

    Every member gets `cert_file`/`key_file`; `trusted_ca_file` (as with etcd 3.4, it makes client
    certificates mandatory) and `client_cert_auth` are passed on as given. `ca_file` is what
    clients verify the members with (default: `trusted_ca_file`, else `cert_file` itself, right for
    a self-signed one). `auto_tls` makes one self-signed certificate for the cluster's host under
    DATA_DIR/tls (kept across restarts) for every member, so clients verify them with
    `--ca-file DATA_DIR/tls/cert.pem`; with `client_cert_auth` it is also the trusted CA and the
    client certificate. The launcher's own health checks identify themselves with
    `client_cert_file`/`client_key_file` (default: the member certificate, which then needs the
    clientAuth usage).
    """

    cert_file: str | None = None
    key_file: str | None = None
    trusted_ca_file: str | None = None
    client_cert_auth: bool = False
    auto_tls: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None
    ca_file: str | None = None


class GroveCluster:
    def __init__(
        self,
        size: int = 3,
        data_dir: str | None = None,
        *,
        host: str = "127.0.0.1",
        snapshot_count: int | None = None,
        history_size: int | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        log_dir: str | None = None,
        ports: list[tuple[int, int]] | None = None,
        name_prefix: str = "m",
        tls: ClusterTLS | None = None,
    ):
        self.size = size
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="grove-kv-")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_dir = log_dir or self.data_dir
        self.host = host
        self.snapshot_count = snapshot_count
        self.history_size = history_size
        self.extra_args = list(extra_args)
        self.names = [f"{name_prefix}{i}" for i in range(size)]
        ports = ports or self._load_or_pick_ports()
        self.client_ports = [c for c, _ in ports]
        self.peer_ports = [p for _, p in ports]
        self.tls = self._prepare_tls(tls) if tls is not None else None
        self.scheme = "https" if self.tls is not None else "http"
        self.ssl_context = self._probe_context() if self.tls is not None else None
        self.client_urls = [f"{self.scheme}://{host}:{p}" for p in self.client_ports]
        self.peer_urls = [f"http://{host}:{p}" for p in self.peer_ports]
        self.procs: list[subprocess.Popen | None] = [None] * size
        self._logs: list = [None] * size

    def _load_or_pick_ports(self) -> list[tuple[int, int]]:
        """Reuse the ports of an earlier run on the same data dir, so members find each other again."""
        path = os.path.join(self.data_dir, "ports.json")
        if os.path.exists(path):
            with open(path) as f:
                saved = json.load(f)
            if len(saved) == self.size:
                return [tuple(p) for p in saved]  # type: ignore[misc]
        picked = free_ports(2 * self.size, self.host)
        ports = [(picked[2 * i], picked[2 * i + 1]) for i in range(self.size)]
        with open(path, "w") as f:
            json.dump(ports, f)
        return ports

    def _prepare_tls(self, tls: ClusterTLS) -> ClusterTLS:
        if tls.auto_tls and not tls.cert_file:
            from .server import write_self_signed_cert

            base = os.path.join(self.data_dir, "tls")
            cert, key = os.path.join(base, "cert.pem"), os.path.join(base, "key.pem")
            if not (os.path.exists(cert) and os.path.exists(key)):
                write_self_signed_cert(cert, key, [self.host, "localhost", "127.0.0.1"])
            tls = dataclasses.replace(
                tls, cert_file=cert, key_file=key, auto_tls=False,
                trusted_ca_file=tls.trusted_ca_file or (cert if tls.client_cert_auth else None),
            )  # fmt: skip
        if not (tls.cert_file and tls.key_file):
            raise ClusterError("TLS needs --cert-file and --key-file (or --auto-tls)")
        if tls.client_cert_auth and not tls.trusted_ca_file:
            raise ClusterError("--client-cert-auth needs --trusted-ca-file")
        return dataclasses.replace(tls, ca_file=tls.ca_file or tls.trusted_ca_file or tls.cert_file)

    def _probe_context(self) -> ssl.SSLContext:
        tls = self.tls
        assert tls is not None
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        ctx.load_cert_chain(tls.client_cert_file or tls.cert_file, tls.client_key_file or tls.key_file)  # type: ignore[arg-type]
        return ctx

    @property
    def ca_file(self) -> str | None:
        """What clients pass as --ca-file (None for plain http)."""
        return self.tls.ca_file if self.tls is not None else None

    def tls_args(self) -> list[str]:
        tls = self.tls
        if tls is None:
            return []
        a = ["--cert-file", tls.cert_file, "--key-file", tls.key_file]  # type: ignore[list-item]
        if tls.trusted_ca_file:
            a += ["--trusted-ca-file", tls.trusted_ca_file]
        if tls.client_cert_auth:
            a.append("--client-cert-auth")
        return a

    def _json(self, url: str) -> dict | None:
        return http_json(url, context=self.ssl_context)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{n}={u}" for n, u in zip(self.names, self.peer_urls))

    def args(self, i: int) -> list[str]:
        a = [
            sys.executable,
            "-m",
            "kvstore",
            "serve",
            "--name",
            self.names[i],
            "--data-dir",
            os.path.join(self.data_dir, self.names[i]),
            "--listen-client-urls",
            self.client_urls[i],
            "--advertise-client-urls",
            self.client_urls[i],
            "--listen-peer-urls",
            self.peer_urls[i],
            "--initial-advertise-peer-urls",
            self.peer_urls[i],
            "--initial-cluster",
            self.initial_cluster,
            "--initial-cluster-state",
            "new",
        ]
        if self.snapshot_count is not None:
            a += ["--snapshot-count", str(self.snapshot_count)]
        if self.history_size is not None:
            a += ["--history-size", str(self.history_size)]
        return a + self.tls_args() + self.extra_args

    def log_path(self, i: int) -> str:
        return os.path.join(self.log_dir, f"{self.names[i]}.log")

    def _spawn(self, i: int) -> None:
        log = open(self.log_path(i), "ab")
        self._logs[i] = log
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.procs[i] = subprocess.Popen(
            self.args(i),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def start(self, timeout: float = 30.0, progress: Callable[[str], None] | None = None) -> GroveCluster:
        try:
            for i in range(self.size):
                self._spawn(i)
                if progress:
                    progress(f"started member {self.names[i]} (client {self.client_urls[i]})")
            self.wait_healthy(timeout)
            if progress:
                progress("members elected a leader")
        except BaseException:
            self.stop()
            raise
        return self

    def is_running(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.poll() is None

    def _check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p is not None and p.poll() is not None:
                raise ClusterError(
                    f"member {self.names[i]} exited with {p.returncode}:\n{self.log(i)[-3000:]}"
                )

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        members = (
            members if members is not None else [i for i in range(self.size) if self.procs[i] is not None]
        )
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            ok = all(
                (self._json(self.client_urls[i] + "/health") or {}).get("health") == "true" for i in members
            )
            if ok:
                # Every member has published its client URLs (etcdctl discovers endpoints from them).
                listed = (self._json(self.client_urls[members[0]] + "/v2/members") or {}).get("members", [])
                published = {u for m in listed for u in m.get("clientURLs", [])}
                ok = all(self.client_urls[i] in published for i in members)
            if ok:
                try:
                    self.leader_index(timeout=max(0.5, deadline - time.monotonic()), members=members)
                    return
                except ClusterError:
                    pass
            if time.monotonic() > deadline:
                raise ClusterError(
                    "cluster did not become healthy in time:\n"
                    + "\n".join(f"--- {self.names[i]}\n{self.log(i)[-2000:]}" for i in members)
                )
            time.sleep(0.05)

    def leader_index(self, timeout: float = 10.0, members: list[int] | None = None) -> int:
        """Index of the leader once every running member names the same one."""
        deadline = time.monotonic() + timeout
        while True:
            running = members if members is not None else [i for i in range(self.size) if self.is_running(i)]
            leaders = set()
            leader_i = None
            for i in running:
                st = self._json(self.client_urls[i] + "/v2/stats/self") or {}
                leaders.add(st.get("leaderInfo", {}).get("leader") or None)
                if st.get("state") == "StateLeader":
                    leader_i = i
            if leader_i is not None and len(leaders) == 1 and None not in leaders:
                return leader_i
            if time.monotonic() > deadline:
                raise ClusterError(f"members do not agree on a leader (saw {leaders})")
            time.sleep(0.05)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[i]
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def restart(self, i: int, timeout: float = 30.0) -> None:
        """Start member i again; wait until it is healthy (or, without a quorum running, serving)."""
        self.kill(i)
        self._spawn(i)
        deadline = time.monotonic() + timeout
        quorum = sum(self.is_running(j) for j in range(self.size)) > self.size // 2
        url = self.client_urls[i] + ("/health" if quorum else "/version")
        while True:
            answer = self._json(url) or {}
            if answer.get("health") == "true" or (not quorum and answer):
                return
            p = self.procs[i]
            if p is not None and p.poll() is not None:
                raise ClusterError(
                    f"member {self.names[i]} exited with {p.returncode}:\n{self.log(i)[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(f"member {self.names[i]} did not come back:\n{self.log(i)[-2000:]}")
            time.sleep(0.05)

    def log(self, i: int) -> str:
        try:
            with open(self.log_path(i), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in self._logs:
            if f is not None:
                f.close()
        self.procs = [None] * self.size
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> GroveCluster:
        if all(p is None for p in self.procs):
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
