"""A real control-plane front door for tests: a 3-member store cluster and `grove apiserver`.

`apiserver` is a module-scoped pytest fixture (import it into a test module). It starts a
GroveCluster (real member processes), then the API server as its own process on a free port,
waits for /readyz, writes a kubeconfig to a temp file (with `grove kubeconfig`), and tears
everything down even when a test fails. `ApiServerProcess.kubectl(...)` runs the real kubectl
1.32 against it with a private discovery cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests

from kvstore.localcluster import GroveCluster, free_port
from tests import waiting

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclass
class ApiServerProcess:
    cluster: GroveCluster
    port: int
    workdir: str
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    # A `grove certs` directory: the server is HTTPS (the caller passes the TLS flags in
    # extra_args), readiness is checked against its CA and the kubeconfig is the admin's.
    certs_dir: str | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.certs_dir else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> str | bool:
        """What `requests` should verify the server against."""
        return os.path.join(self.certs_dir, "ca.crt") if self.certs_dir else True

    @property
    def kubeconfig(self) -> str:
        return os.path.join(self.workdir, "kubeconfig")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "apiserver.log")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        args = [
            sys.executable, "-m", "orchestrator", "apiserver",
            "--etcd-servers", ",".join(self.cluster.client_urls),
            "--bind-address", "127.0.0.1",
            "--port", str(self.port),
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT
            )

        def alive() -> None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"apiserver exited with {self.proc.returncode}:\n{self.log()[-3000:]}")

        def ready() -> bool:
            return requests.get(self.url + "/readyz", timeout=1, verify=self.ca_file).status_code == 200

        if not waiting.poll(ready, timeout, check=alive, errors=(requests.RequestException,))[0]:
            raise RuntimeError(f"apiserver not ready in {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def write_kubeconfig(self) -> None:
        tls = ["--certs-dir", self.certs_dir] if self.certs_dir else []
        args = ["kubeconfig", "--server", self.url, "-o", self.kubeconfig, *tls]
        subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            check=True,
            env=_env(),
            cwd=ROOT,
            capture_output=True,
        )

    def kubectl_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["KUBECACHEDIR"] = os.path.join(self.workdir, "kube-cache")
        env["HOME"] = self.workdir
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess:
        """Run kubectl; raise with its output when it fails and `check` is set."""
        full_env = self.kubectl_env()
        full_env.update(env or {})
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", self.kubeconfig, *args],
            check=False,
            input=input,
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result


def start_apiserver(
    extra_args: list[str] | None = None, cluster_args: dict | None = None, certs_dir: str | None = None
) -> ApiServerProcess:
    """A started cluster + API server; the caller must call `stop_apiserver` (even on failure)."""
    cluster = GroveCluster(3, **(cluster_args or {}))
    workdir = tempfile.mkdtemp(prefix="grove-apiserver-")
    server = ApiServerProcess(cluster, free_port(), workdir, list(extra_args or []), certs_dir=certs_dir)
    try:
        cluster.start()
        server.start()
        server.write_kubeconfig()
    except BaseException:
        stop_apiserver(server)
        raise
    return server


def stop_apiserver(server: ApiServerProcess) -> None:
    try:
        server.stop()
    finally:
        try:
            server.cluster.stop()
        finally:
            shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def apiserver(request: pytest.FixtureRequest) -> Iterator[ApiServerProcess]:
    """One store cluster + API server for a whole test module.

    A module can set `APISERVER_ARGS` (extra flags) and `CLUSTER_ARGS` (GroveCluster keyword
    arguments, e.g. a small history_size) at module level.
    """
    extra = getattr(request.module, "APISERVER_ARGS", [])
    cluster_args = getattr(request.module, "CLUSTER_ARGS", {})
    server = start_apiserver(extra, cluster_args)
    try:
        yield server
    finally:
        stop_apiserver(server)
