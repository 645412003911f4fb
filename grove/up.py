"""`grove up` / `grove down`: a whole cluster on this machine from one command.

This is the one place that knows how the parts are started together. Every part runs as its
own process (`python -m grove.cli <part> ...`) with its log in `STATE/logs/`: three store
members, the API server, the scheduler, the controller manager, the service proxy and DNS, and
the node agents. The state dir keeps the store's data and the ports, so a second `grove up` on
the same dir comes back with the same objects. Ctrl-C (or `grove down`) stops everything and
removes the containers the nodes made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec

import click
from rich.console import Console

from kvstore.localcluster import ClusterError, GroveCluster, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PID_FILE = "grove-up.pid"


def _get_json(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read() or b"{}")
    except (OSError, ValueError, urllib.error.HTTPError):
        return None


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            return r.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: str
    ready: Callable[[], bool] | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grove.cli", *self.argv], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        log.close()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class UpError(Exception):
    pass


def _has(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def check_docker() -> str | None:
    """None if a Docker Engine answers, else one line saying what to do."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return None
    except Exception as exc:  # any failure means: no usable engine
        hint = "sudo bash scripts/ensure-docker.sh" if os.path.exists(os.path.join(ROOT, "scripts")) else (
            "sudo apt-get install -y docker.io && sudo dockerd &"
        )
        return f"no Docker Engine answers ({exc.__class__.__name__}); install and start it with: {hint}"


class Cluster:
    """Everything `grove up` runs, in start order."""

    def __init__(self, state_dir: str, nodes: int, runtime: str, api_port: int | None, console: Console):
        self.state_dir = os.path.abspath(state_dir)
        self.logs = os.path.join(self.state_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.nodes = nodes
        self.runtime = runtime
        self.console = console
        self.ports = self._ports(api_port)
        self.kv = GroveCluster(3, os.path.join(self.state_dir, "kv"), log_dir=self.logs, name_prefix="kv")
        self.components: list[Component] = []
        self.api_url = f"http://127.0.0.1:{self.ports['apiserver']}"
        self.kubeconfig = os.path.join(self.state_dir, "kubeconfig")

    def _ports(self, api_port: int | None) -> dict:
        path = os.path.join(self.state_dir, "ports.json")
        ports = {}
        if os.path.exists(path):
            with open(path) as f:
                ports = json.load(f)
        if api_port:
            ports["apiserver"] = api_port
        ports.setdefault("apiserver", 6443 if _port_free(6443) else free_port())
        for k in ("scheduler", "controllers", "dns"):
            ports.setdefault(k, free_port())
        with open(path, "w") as f:
            json.dump(ports, f)
        return ports

    def _component(self, name: str, argv: list[str], ready: Callable[[], bool] | None = None) -> Component:
        c = Component(name, argv, os.path.join(self.logs, f"{name}.log"), ready)
        self.components.append(c)
        return c

    def _wait(self, what: str, cond: Callable[[], bool], timeout: float, comps: list[Component]) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            for c in comps:
                if not c.running():
                    raise UpError(f"{c.name} exited while waiting for {what}:\n{c.tail()}")
            if time.monotonic() > deadline:
                raise UpError(f"timed out waiting for {what}; logs in {self.logs}")
            time.sleep(0.1)

    def start(self, progress: Callable[[str], None]) -> dict[str, float]:
        timings: dict[str, float] = {}
        t0 = time.monotonic()
        progress("starting the store (3 members)…")
        try:
            self.kv.start(timeout=60)
        except ClusterError as exc:
            raise UpError(str(exc)) from None
        timings["store"] = time.monotonic() - t0
        eps = ",".join(self.kv.client_urls)

        progress("starting the API server…")
        api = self._component(
            "apiserver",
            ["apiserver", "--etcd-servers", eps, "--bind-address", "127.0.0.1", "--port",
             str(self.ports["apiserver"])],
        )
        api.start()
        self._wait("the API server", lambda: _ok(self.api_url + "/readyz"), 60, [api])
        self._write_kubeconfig()
        timings["apiserver"] = time.monotonic() - t0

        control = []
        if _has("orchestrator.scheduler.cli"):
            control.append(self._component("scheduler", ["scheduler", "--server", self.api_url]))
        if _has("orchestrator.controllers.cli"):
            control.append(self._component("controllers", ["controllers", "--server", self.api_url]))
        if _has("node.proxy_cli"):
            control.append(self._component(
                "dns", ["dns", "--server", self.api_url]
            ))
        for c in control:
            progress(f"starting {c.name}…")
            c.start()

        node_comps = []
        if _has("node.cli"):
            if self.runtime == "fake":
                node_comps.append(self._component(
                    "nodes-fake",
                    ["node", "--server", self.api_url, "--runtime", "fake", "--count", str(self.nodes),
                     "--name-prefix", "hollow-"],
                ))
            else:
                for i in range(self.nodes):
                    node_comps.append(self._component(
                        f"node-{i}", ["node", "--server", self.api_url, "--name", f"grove-node-{i}",
                                      "--runtime", "docker"],
                    ))
            if _has("node.proxy_cli"):
                names = [f"grove-node-{i}" for i in range(self.nodes)] if self.runtime != "fake" else []
                for name in names[:1]:  # one proxy serves this host's addresses
                    node_comps.append(self._component("proxy", ["proxy", "--server", self.api_url, "--node", name]))
            for c in node_comps:
                progress(f"starting {c.name}…")
                c.start()
            progress(f"waiting for {self.nodes} node(s) to be Ready…")
            self._wait(f"{self.nodes} Ready nodes", lambda: self.ready_nodes() >= self.nodes, 120,
                       control + node_comps)
        timings["ready"] = time.monotonic() - t0
        return timings

    def ready_nodes(self) -> int:
        data = _get_json(self.api_url + "/api/v1/nodes") or {}
        n = 0
        for node in data.get("items", []):
            for cond in node.get("status", {}).get("conditions", []):
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    n += 1
        return n

    def _write_kubeconfig(self) -> None:
        import yaml

        from orchestrator.cli import kubeconfig_document

        with open(self.kubeconfig, "w") as f:
            f.write(yaml.safe_dump(kubeconfig_document(self.api_url), sort_keys=False))

    def first_pod_seconds(self, image: str) -> float | None:
        """Create a throwaway pod and time it to Running (what a user waits for first)."""
        ns, name = "kube-system", f"grove-up-check-{int(time.time())}"
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "check", "image": image, "command": ["sleep", "3600"]}],
                     "terminationGracePeriodSeconds": 0},
        }
        url = f"{self.api_url}/api/v1/namespaces/{ns}/pods"
        t0 = time.monotonic()
        req = urllib.request.Request(url, data=json.dumps(pod).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except (OSError, urllib.error.HTTPError):
            return None
        took = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = _get_json(f"{url}/{name}") or {}
            if got.get("status", {}).get("phase") == "Running":
                took = time.monotonic() - t0
                break
            time.sleep(0.05)
        req = urllib.request.Request(f"{url}/{name}?gracePeriodSeconds=0", method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except (OSError, urllib.error.HTTPError):
            pass
        return took

    def check_components(self) -> list[str]:
        return [c.name for c in self.components if not c.running()]

    def stop(self, progress: Callable[[str], None]) -> None:
        for c in reversed(self.components):
            if c.running():
                progress(f"stopping {c.name}…")
            c.stop()
        if self.runtime == "docker":
            progress("removing the containers grove made…")
            remove_grove_containers()
        progress("stopping the store…")
        self.kv.stop()


def remove_grove_containers() -> int:
    """Remove every container carrying grove's pod label (and only those)."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        n = 0
        for c in client.containers.list(all=True, filters={"label": "io.grove.pod.uid"}):
            c.remove(force=True)
            n += 1
        return n
    except Exception:
        return 0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@click.command("up")
@click.option("--state-dir", default=".grove", show_default=True, help="Data, logs and kubeconfig live here.")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(0, 5000))
@click.option("--runtime", type=click.Choice(["docker", "fake"]), default="docker", show_default=True)
@click.option("--api-port", default=None, type=int, help="API server port (default 6443 if free).")
def up(state_dir: str, nodes: int, runtime: str, api_port: int | None) -> None:
    """Start a whole cluster here: store, API server, scheduler, controllers, nodes."""
    console = Console(stderr=True, soft_wrap=True)
    if runtime == "docker" and nodes:
        problem = check_docker()
        if problem:
            console.print(f"[red]grove up:[/red] {problem}")
            sys.exit(1)
        import docker

        from node.images import build_images

        with console.status("building grove's base images (offline)…"):
            built = build_images(docker.from_env())
        if built:
            console.print(f"built images: {', '.join(built)}")
    pid_path = os.path.join(state_dir, PID_FILE)
    if os.path.exists(pid_path):
        try:
            with open(pid_path) as f:
                other = int(f.read().strip())
            os.kill(other, 0)
            console.print(f"[red]grove up:[/red] already running (pid {other}) on {state_dir}; `grove down --state-dir "
                          f"{state_dir}` first")
            sys.exit(1)
        except (OSError, ValueError):
            pass
    cluster = Cluster(state_dir, nodes, runtime, api_port, console)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with console.status("starting…") as status:
            timings = cluster.start(status.update)
            first = None
            if nodes and _has("orchestrator.scheduler.cli"):
                status.update("timing a first pod to Running…")
                first = cluster.first_pod_seconds("grove/busybox:1.35")
    except UpError as exc:
        console.print(f"[red]grove up failed:[/red] {exc}")
        cluster.stop(lambda m: None)
        sys.exit(1)
    with open(pid_path, "w") as f:
        f.write(str(os.getpid()))
    console.print(f"[green]grove is up[/green]: Ready in {timings['ready']:.1f}s"
                  + (f", first pod Running {first:.1f}s later" if first is not None else ""))
    console.print(f"  kubeconfig   {cluster.kubeconfig}")
    console.print(f"  API server   {cluster.api_url}")
    console.print(f"  store        {','.join(cluster.kv.client_urls)}")
    console.print(f"  logs         {cluster.logs}/")
    console.print(f"\n  export KUBECONFIG={cluster.kubeconfig}\n  kubectl get nodes -o wide")
    console.print(f"\nCtrl-C, or `grove down --state-dir {state_dir}` from another shell, stops everything.")
    try:
        while not stop["now"]:
            dead = cluster.check_components()
            if dead:
                for name in dead:
                    comp = next(c for c in cluster.components if c.name == name)
                    console.print(f"[yellow]{name} exited; restarting it (log {comp.log_path})[/yellow]")
                    comp.start()
            for i in range(cluster.kv.size):
                if not cluster.kv.is_running(i) and not stop["now"]:
                    console.print(f"[yellow]store member {cluster.kv.names[i]} exited; restarting it[/yellow]")
                    cluster.kv.restart(i)
            time.sleep(0.5)
    finally:
        console.print("stopping…")
        cluster.stop(lambda m: console.print(f"  {m}"))
        try:
            os.remove(pid_path)
        except OSError:
            pass
        console.print("stopped.")


@click.command("down")
@click.option("--state-dir", default=".grove", show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
def down(state_dir: str, timeout: float) -> None:
    """Stop the cluster `grove up` runs on STATE_DIR."""
    pid_path = os.path.join(state_dir, PID_FILE)
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        click.echo(f"grove down: nothing is running on {state_dir} (no {PID_FILE})", err=True)
        sys.exit(1)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        os.remove(pid_path)
        click.echo(f"grove down: the grove up process ({pid}) is gone; cleaned up", err=True)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            click.echo("stopped.")
            return
        time.sleep(0.2)
    click.echo(f"grove down: process {pid} did not stop within {timeout:.0f}s", err=True)
    sys.exit(1)

