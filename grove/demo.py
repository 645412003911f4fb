"""`make demo`: a working cluster on this machine, a web server on it, and how to go on from there.

    python -m grove.demo            # the cluster tour (what `make demo` runs)
    python -m grove.demo kv         # the store tour: writes, a watch stream, the leader killed

The cluster tour starts `grove up` in the background (state in `.grove`, reused when it is
already running), applies the web server example from `examples/` with kubectl, waits — with
deadlines and progress — for its pods to run, shows `kubectl get nodes,pods -o wide` and an HTTP
answer from a pod, and says how to use and stop the cluster. Any failure ends with a non-zero
exit and the place of the logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console

from grove.up import PID_FILE, ROOT, STATUS_FILE, _pid_alive, check_docker, client_context

EXAMPLES = ("web-configmap.yaml", "web-deployment.yaml", "web-service.yaml")
APP = "web"
UP_TIMEOUT = 240.0
PODS_TIMEOUT = 180.0


class DemoError(Exception):
    """The demo cannot go on; the message says why and where the logs are."""


@dataclass
class Running:
    """What `grove up` wrote to STATE/status.json once its cluster was Ready."""

    pid: int
    api_url: str
    kubeconfig: str
    logs: str
    store: list[str]
    timings: dict[str, Any]
    notes: list[str]
    components: dict[str, bool]
    context: ssl.SSLContext | None = None  # the admin's certificate, when the cluster is secured


def _read_status(state_dir: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(state_dir, STATUS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _up_pid(state_dir: str) -> int | None:
    try:
        with open(os.path.join(state_dir, PID_FILE)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _wait(what: str, cond: Callable[[], Any], timeout: float, tick: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if tick:
            tick()
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


class ClusterTour:
    def __init__(self, console: Console, state_dir: str, nodes: int) -> None:
        self.console = console
        self.state_dir = os.path.abspath(state_dir)
        self.nodes = nodes
        self.logs = os.path.join(self.state_dir, "logs")
        self.up_log = os.path.join(self.logs, "up.log")
        self.running: Running | None = None

    # --- grove up in the background ---------------------------------------------------------------

    def start_cluster(self) -> Running:
        pid = _up_pid(self.state_dir)
        status = _read_status(self.state_dir)
        if pid is not None:
            if status and status.get("pid") == pid:
                self.console.print(
                    f"a grove cluster is already running on {self.state_dir} (pid {pid}); using it"
                )
                return self._running(status)
            self.console.print(f"`grove up` (pid {pid}) is starting on {self.state_dir}; waiting for it")
        else:
            pid = self._spawn_up()
        status = self._follow_up(pid)
        return self._running(status)

    def _running(self, status: dict[str, Any]) -> Running:
        return Running(
            pid=int(status["pid"]),
            api_url=status["api_url"],
            kubeconfig=status["kubeconfig"],
            logs=status["logs"],
            store=list(status.get("store") or ()),
            timings=status.get("timings") or {},
            notes=list(status.get("notes") or ()),
            components=dict(status.get("components") or {}),
            context=(
                client_context(status["ca_file"], status["client_cert"], status["client_key"])
                if status.get("ca_file")
                else None
            ),
        )

    def _spawn_up(self) -> int:
        os.makedirs(self.logs, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        argv = [
            sys.executable,
            "-m",
            "grove.cli",
            "up",
            "--state-dir",
            self.state_dir,
            "--nodes",
            str(self.nodes),
        ]
        self.console.print(f"[bold]$ grove up --state-dir {_short(self.state_dir)} --nodes {self.nodes} &[/bold]"
                           f"   (output: {_short(self.up_log)})")  # fmt: skip
        with open(self.up_log, "ab") as log:
            # Its own session: the cluster outlives this demo, until `grove down`.
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._proc = proc
        return proc.pid

    def _follow_up(self, pid: int) -> dict[str, Any]:
        """Echo grove up's progress lines until its status file names it, or it fails."""
        offset = os.path.getsize(self.up_log) if os.path.exists(self.up_log) else 0
        proc = getattr(self, "_proc", None)

        def echo() -> None:
            nonlocal offset
            try:
                with open(self.up_log, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                return
            if b"\n" not in chunk:
                return
            chunk = chunk[: chunk.rindex(b"\n") + 1]
            offset += len(chunk)
            for line in chunk.decode(errors="replace").splitlines():
                self.console.print(f"  {line}", highlight=False, markup=False)

        def ready() -> dict[str, Any] | None:
            status = _read_status(self.state_dir)
            if status and status.get("pid") == pid:
                echo()
                return status
            exited = proc.poll() is not None if proc is not None else not _pid_alive(pid)
            if exited:
                echo()
                raise DemoError(
                    f"`grove up` exited before the cluster was Ready; see {self.up_log} and {self.logs}/"
                )
            return None

        return _wait("`grove up` to report the cluster Ready", ready, UP_TIMEOUT, echo)

    # --- kubectl --------------------------------------------------------------------------------

    def kubectl(self, *args: str, show: bool = True, check: bool = True) -> str:
        assert self.running is not None
        env = dict(os.environ, KUBECONFIG=self.running.kubeconfig)
        if show:
            self.console.print(f"[bold]$ kubectl {' '.join(args)}[/bold]")
        try:
            done = subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise DemoError(f"kubectl {' '.join(args)} did not answer within 60s") from None
        if check and done.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
        if show:
            self.console.print(done.stdout.rstrip(), highlight=False, markup=False)
        return done.stdout

    def get(self, path: str) -> dict[str, Any]:
        assert self.running is not None
        try:
            with urllib.request.urlopen(
                self.running.api_url + path, timeout=10, context=self.running.context
            ) as r:
                return json.loads(r.read())
        except (OSError, ValueError) as exc:
            raise DemoError(f"the API server does not answer GET {path}: {exc}") from None

    # --- the tour -------------------------------------------------------------------------------

    def run(self) -> None:
        c = self.console
        c.rule("[bold]grove demo: a cluster on this machine")
        problem = check_docker()
        if problem:
            raise DemoError(problem)
        if shutil.which("kubectl") is None:
            raise DemoError(
                "kubectl is not on PATH; install kubectl 1.32 (e.g. from pkgs.k8s.io) and run again"
            )
        self.running = self.start_cluster()
        t = self.running.timings
        if t.get("ready"):
            first = f", first pod Running {t['first_pod']:.2f}s after creation" if t.get("first_pod") else ""
            c.print(f"cluster Ready {t['ready']:.1f}s after `grove up` began{first}")
        for note in self.running.notes:
            c.print(f"[yellow]note:[/yellow] {note}")

        c.rule("[bold]a small web server: Deployment (3 × busybox httpd) + Service")
        files = [os.path.join(ROOT, "examples", name) for name in EXAMPLES]
        args = ["apply"]
        for f in files:
            args += ["-f", _short(f)]
        self.kubectl(*args)
        pods = self.wait_pods()
        c.print()
        self.kubectl("get", "nodes,pods", "-o", "wide")
        c.rule("[bold]an HTTP answer from a pod")
        self.http(pods)
        self.usage()

    def wait_pods(self) -> list[dict[str, Any]]:
        """The Deployment's pods, once as many as it wants are Running and Ready."""
        shown = {"last": ""}

        def check() -> list[dict[str, Any]] | None:
            dep = self.get(f"/apis/apps/v1/namespaces/default/deployments/{APP}")
            want = int((dep.get("spec") or {}).get("replicas") or 0)
            items = self.get(f"/api/v1/namespaces/default/pods?labelSelector=app%3D{APP}").get("items") or []
            live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
            running = [p for p in live if (p.get("status") or {}).get("phase") == "Running"]
            ready = [p for p in running if _ready(p)]
            line = f"  pods: {len(live)} created, {len(running)} Running, {len(ready)} Ready (want {want})"
            waiting = sorted({r for p in live for r in _waiting_reasons(p)})
            if waiting:
                line += f" — waiting: {', '.join(waiting)}"
            if line != shown["last"]:
                self.console.print(line, highlight=False)
                shown["last"] = line
            return ready if want and len(ready) >= want else None

        return _wait(f"the {APP} pods to be Running and Ready", check, PODS_TIMEOUT)

    def http(self, pods: list[dict[str, Any]]) -> None:
        c = self.console
        pod = pods[0]
        ip = pod["status"].get("podIP")
        if not ip:
            raise DemoError(f"pod {pod['metadata']['name']} is Running but has no IP")
        url = f"http://{ip}:8080/"
        c.print(
            f"[bold]$ curl {url}[/bold]   (pod {pod['metadata']['name']} on {pod['spec'].get('nodeName')})"
        )
        status, body = _http_get(url)
        if status != 200:
            raise DemoError(f"GET {url} answered {status or 'nothing'}: {body[:200]}")
        c.print(f"HTTP {status}\n{body.strip()}", highlight=False, markup=False)

        if not self.running.components.get("proxy"):  # type: ignore[union-attr]
            c.print(
                "[yellow]the service proxy is not running, so the Service's addresses do not answer here[/yellow]"
            )
            return
        svc = self.get(f"/api/v1/namespaces/default/services/{APP}")
        spec = svc.get("spec") or {}
        targets = []
        if spec.get("clusterIP"):
            targets.append(("cluster IP", f"http://{spec['clusterIP']}:80/"))
        node_port = next((p.get("nodePort") for p in spec.get("ports") or () if p.get("nodePort")), None)
        if node_port:
            targets.append(("node port", f"http://127.0.0.1:{node_port}/"))
        for what, target in targets:
            # The proxy may need a moment to see the new endpoints; give it a few seconds.
            deadline = time.monotonic() + 10
            status, body = _http_get(target, timeout=2)
            while status != 200 and time.monotonic() < deadline:
                time.sleep(0.5)
                status, body = _http_get(target, timeout=2)
            if status == 200:
                c.print(
                    f"through the Service's {what}: [bold]curl {target}[/bold] -> HTTP 200 ({len(body)} bytes)"
                )
            else:
                c.print(f"[yellow]through the Service's {what} {target}: no answer ({body[:80]})[/yellow]")

    def _store_tls(self) -> str:
        """grove kv's TLS flags for this cluster's store (the API server's client identity)."""
        assert self.running is not None
        pki = os.path.join(self.state_dir, "pki")
        if not any(u.startswith("https://") for u in self.running.store):
            return ""
        return (
            f" \\\n      --ca-file {_short(os.path.join(pki, 'ca.crt'))}"
            f" --cert-file {_short(os.path.join(pki, 'apiserver-etcd-client.crt'))}"
            f" --key-file {_short(os.path.join(pki, 'apiserver-etcd-client.key'))}"
        )

    def usage(self) -> None:
        assert self.running is not None
        c = self.console
        state = _short(self.state_dir)
        grove = _short(os.path.join(os.path.dirname(sys.executable), "grove"))
        c.rule("[bold]your turn")
        c.print(
            f"The cluster keeps running in the background (API {self.running.api_url}, logs {_short(self.logs)}/).\n\n"
            f"  export KUBECONFIG={os.path.abspath(self.running.kubeconfig)}\n"
            "  kubectl get all -o wide\n"
            f"  kubectl scale deployment {APP} --replicas=5\n"
            f"  kubectl logs deployment/{APP}\n"
            "  kubectl get events --sort-by=.lastTimestamp\n"
            f"  {grove} kv ls /registry/pods --recursive --endpoints {','.join(self.running.store)}{self._store_tls()}\n\n"
            f"Stop it (the data stays in {state}; `grove up --state-dir {state}` brings it all back):\n"
            f"  {grove} down --state-dir {state}",
            highlight=False,
        )


def _short(path: str) -> str:
    """Relative to the working directory when inside it (what a user types), else absolute."""
    rel = os.path.relpath(path)
    return os.path.abspath(path) if rel.startswith("..") else rel


def _ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _waiting_reasons(pod: dict[str, Any]) -> list[str]:
    out = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or ():
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            out.append(str(waiting["reason"]))
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            out.append(str(cond.get("reason") or "Unschedulable"))
    return out


def _http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, str(exc)
    except OSError as exc:
        return 0, str(exc)


# --- the store tour (the first demo, kept for the curious) ------------------------------------------


def kv_tour(console: Console, state_dir: str) -> None:
    """Start a local three-member store, show writes, a watch and a failover, keep it running.

    Keys written through one member and read through another, a watch stream receiving changes,
    the leader killed and the cluster carrying on. Set GROVE_DEMO_EXIT=1 to stop after the tour.
    """
    from kvstore.client import SyncKVClient
    from kvstore.localcluster import GroveCluster

    kv_dir = os.path.join(state_dir, "demo-kv")
    console.rule("[bold]grove demo: a three-member Raft key-value store (etcd v2 API)")
    os.makedirs(kv_dir, exist_ok=True)
    cluster = GroveCluster(3, kv_dir)
    t0 = time.monotonic()
    with console.status("starting three members…") as status:
        cluster.start(timeout=60, progress=status.update)
    leader = cluster.leader_index()
    console.print(f"cluster up in {time.monotonic() - t0:.1f}s; leader is {cluster.names[leader]}")
    for i, url in enumerate(cluster.client_urls):
        console.print(f"  {cluster.names[i]}  {url}")
    eps = ",".join(cluster.client_urls)
    try:
        with SyncKVClient(cluster.client_urls) as kv:
            seen: list[str] = []
            start = kv.set("/demo/_start", "x").etcd_index + 1
            kv_watch = SyncKVClient(cluster.client_urls)

            def watch() -> None:
                for ev in kv_watch.watch_stream("/demo", index=start, recursive=True):
                    seen.append(f"{ev.action} {ev.node['key']} = {ev.node.get('value')}")
                    if len(seen) >= 5:
                        return

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            console.print("\n[bold]writes through different members[/bold]")
            for i, (k, v) in enumerate([("/demo/greeting", "hello"), ("/demo/config/replicas", "3")]):
                one = SyncKVClient([cluster.client_urls[i]])
                r = one.set(k, v)
                one.close()
                console.print(
                    f"  set {k}={v} via {cluster.names[i]} -> modifiedIndex {r.node['modifiedIndex']}"
                )
            r = kv.compare_and_swap("/demo/config/replicas", "5", prev_value="3")
            console.print(f"  compareAndSwap 3->5 -> {r.node['value']}")
            r = kv.set("/demo/session", "alive", ttl=2)
            console.print(f"  set /demo/session with ttl={r.node['ttl']}s (it will expire)")

            console.print("\n[bold]the leader dies[/bold]")
            leader = cluster.leader_index()
            t_kill = time.monotonic()
            cluster.kill(leader)
            r = kv.set("/demo/after-failover", "still-writable")
            console.print(
                f"  killed {cluster.names[leader]} (SIGKILL); next write acknowledged after "
                f"{(time.monotonic() - t_kill) * 1000:.0f} ms at index {r.node['modifiedIndex']}"
            )
            cluster.restart(leader)
            console.print(f"  restarted {cluster.names[leader]}; it catches up from its data dir")
            watcher.join(timeout=10)
            kv_watch.close()
            console.print("\n[bold]a recursive watch stream on /demo saw[/bold]")
            for line in seen:
                console.print(f"  {line}")
    except Exception as exc:  # noqa: BLE001 - show why, keep the members' logs for the user
        console.print(f"[red]demo failed:[/red] {exc}")
        for i in range(cluster.size):
            console.print(f"  log: {cluster.log_path(i)}")
        cluster.stop()
        raise SystemExit(1) from None

    console.print("\n[bold]talk to it yourself[/bold]")
    console.print(f"  .venv/bin/grove kv ls / --recursive --endpoints {eps}")
    console.print(f"  ETCDCTL_API=2 etcdctl --endpoints {eps} watch --forever --recursive /demo")
    console.print(f"  curl -s {cluster.client_urls[0]}/v2/keys/demo?recursive=true")
    if os.environ.get("GROVE_DEMO_EXIT"):
        cluster.stop()
        return
    console.print(f"\nthe cluster keeps running; Ctrl-C stops it (data stays in {kv_dir})")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass
    console.print("stopping…")
    cluster.stop()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("tour", type=click.Choice(["cluster", "kv"]), default="cluster")
@click.option(
    "--state-dir", default=".grove", show_default=True, help="Where `grove up` keeps its data and logs."
)
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 10), help="Docker node agents.")
def main(tour: str, state_dir: str, nodes: int) -> None:
    """grove's guided tours: `cluster` (default) or `kv` (the store alone)."""
    console = Console(soft_wrap=True)
    if tour == "kv":
        kv_tour(console, state_dir)
        return
    demo = ClusterTour(console, state_dir, nodes)
    try:
        demo.run()
    except KeyboardInterrupt:
        console.print(
            f"\ninterrupted; if `grove up` started, stop it with: grove down --state-dir {state_dir}"
        )
        sys.exit(130)
    except DemoError as exc:
        console.print(f"\n[red]demo failed:[/red] {exc}")
        if os.path.isdir(demo.logs):
            console.print(f"logs: {_short(demo.logs)}/ (grove up's own output: {_short(demo.up_log)})")
        if demo.running is not None or _up_pid(demo.state_dir):
            console.print(
                f"the cluster is still running; stop it with: .venv/bin/grove down --state-dir {state_dir}"
            )
        sys.exit(1)


if __name__ == "__main__":
    main()
