"""`grove up` / `grove down`: a whole cluster on this machine from one command.

This is the one place that knows how the parts are started together. Every part runs as its
own process (`python -m grove.cli <part> ...`) with its log in `STATE/logs/`: three store
members, the API server, the scheduler, the controller manager, cluster DNS, the service proxy
and the node agents. The state dir keeps the store's data and the ports, so a second `grove up`
on the same dir comes back with the same objects. Ctrl-C (or `grove down`) stops everything and
removes the containers this cluster's nodes made (and only those: other clusters may share the
engine).

While it runs, `STATE/grove-up.pid` names the `grove up` process, `STATE/components.json` every
process it started (so `grove down` can stop them even if `grove up` itself was killed) and
`STATE/status.json` says where things are once the cluster is Ready (what `make demo` waits for).

By default the cluster is secured as kubeadm secures one: `STATE/pki` holds a CA and certificates
(`grove certs`), the API server speaks HTTPS only and authenticates clients by certificate, and
every component gets a kubeconfig with its own identity (`system:kube-scheduler`,
`system:node:<name>`, ...). `--insecure` runs plain HTTP without authentication instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from typing import Any

import click
from rich.console import Console

from kvstore.localcluster import ClusterError, ClusterTLS, GroveCluster, free_port, free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PID_FILE = "grove-up.pid"
COMPONENTS_FILE = "components.json"
STATUS_FILE = "status.json"
FIRST_POD_IMAGE = "grove/busybox:1.35"
DOCKER_NODE_PREFIX = "grove-node-"
FAKE_NODE_PREFIX = "hollow-"
POD_UID_LABEL = "io.grove.pod.uid"
OPTIONAL = ("dns", "proxy")
LEADS = {"scheduler": "scheduler", "controllers": "controller manager"}


# --- small HTTP helpers (urllib: `grove up` must not depend on an event loop) -----------------------


def _request(
    method: str, url: str, body: Any = None, timeout: float = 5.0, context: ssl.SSLContext | None = None
) -> dict | None:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return json.loads(r.read() or b"{}")
    except (OSError, ValueError, urllib.error.HTTPError):
        return None


def _get_json(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> dict | None:
    return _request("GET", url, timeout=timeout, context=context)


def _ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0, context=context) as r:
            return r.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def client_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """What a client of a secured cluster presents: trust the cluster's CA, show its certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    context.load_cert_chain(cert_file, key_file)
    return context


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        # As the servers do: connections of an earlier run in TIME_WAIT do not make it busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _has(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped by its parent) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _is_grove_process(pid: int) -> bool:
    """Guard against a recycled pid: only signal processes that run grove or its store."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ")
    except OSError:
        return False
    return b"grove" in cmdline or b"kvstore" in cmdline


# --- processes --------------------------------------------------------------------------------------


@dataclass
class Component:
    """One process `grove up` runs: `python -m grove.cli ARGV`, output appended to its log."""

    name: str
    argv: list[str]
    log_path: str
    restarts: int = 0
    next_restart: float = 0.0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} grove {' '.join(self.argv)}\n".encode())
            log.flush()
            # A session of its own: Ctrl-C in the terminal reaches `grove up` only, which stops
            # the parts in order (nodes first, store last).
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "grove.cli", *self.argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
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
    """`grove up` cannot go on; the message says why and where to look."""


# --- prerequisites ----------------------------------------------------------------------------------


def check_docker() -> str | None:
    """None if a Docker Engine answers, else one line saying what to do."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        script = os.path.join(ROOT, "scripts", "ensure-docker.sh")
        hint = (
            f"sudo bash {script}"
            if os.path.exists(script)
            else "sudo apt-get install -y docker.io && sudo dockerd &"
        )
        return f"no Docker Engine answers ({exc.__class__.__name__}); install and start it with: {hint}"


def ensure_images() -> list[str]:
    """Build grove's offline base images when missing; the references built now."""
    import docker

    from node.images import ImageBuildError, build_images

    try:
        return build_images(docker.from_env(timeout=60))
    except ImageBuildError as exc:
        raise UpError(f"{exc} (grove builds its images from Debian's busybox-static: "
                      "sudo apt-get install -y busybox-static)") from None  # fmt: skip


def pod_network() -> tuple[str, str]:
    """Create grove's bridge network if needed; (subnet, gateway). DNS listens on the gateway."""
    from node.runtime import DockerRuntime
    from node.runtime.types import EngineUnavailableError, NetworkError

    try:
        info = DockerRuntime.from_env().ensure_network()
    except (EngineUnavailableError, NetworkError) as exc:
        raise UpError(str(exc)) from None
    return info.subnet, info.gateway


# --- the cluster ------------------------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds since `grove up` began, at each milestone."""

    store: float = 0.0
    apiserver: float = 0.0
    ready: float = 0.0
    first_pod: float | None = None  # seconds from creating a first pod to Running


class Cluster:
    """Everything `grove up` runs, in start order; stop() undoes it in reverse."""

    def __init__(
        self,
        state_dir: str,
        nodes: int,
        runtime: str,
        api_port: int | None = None,
        *,
        proxy: bool | None = None,
        dns: bool = True,
        controllers: bool = True,
        secure: bool = True,
    ) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.logs = os.path.join(self.state_dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.nodes = nodes
        self.runtime = runtime
        self.want_proxy = proxy
        self.want_dns = dns
        self.want_controllers = controllers
        self.pod_subnet = ""
        self.ports = self._ports(api_port)
        self.pki = os.path.join(self.state_dir, "pki")
        store_tls = None
        if secure:
            self._ensure_certs()
        if secure:  # members serve https and take only clients with a certificate from the CA
            store_tls = ClusterTLS(
                cert_file=os.path.join(self.pki, "store.crt"),
                key_file=os.path.join(self.pki, "store.key"),
                trusted_ca_file=os.path.join(self.pki, "ca.crt"),
                client_cert_auth=True,
            )
        self.kv = GroveCluster(
            3, os.path.join(self.state_dir, "kv"), log_dir=self.logs, name_prefix="kv", tls=store_tls
        )
        self.components: list[Component] = []
        self.secure = secure
        self.api_url = f"{'https' if secure else 'http'}://127.0.0.1:{self.ports['apiserver']}"
        self.kubeconfig = os.path.join(self.state_dir, "kubeconfig")
        self.context: ssl.SSLContext | None = None  # the admin's, for up's own API calls
        self.identity = f"{socket.gethostname()}_{os.path.basename(self.state_dir)}"
        self.dns_address = ""
        self.notes: list[str] = []
        self.timings = Timings()

    # ports are kept in the state dir so kubeconfigs and scripts stay valid across restarts
    def _ports(self, api_port: int | None) -> dict[str, int]:
        path = os.path.join(self.state_dir, "ports.json")
        ports: dict[str, int] = {}
        if os.path.exists(path):
            with open(path) as f:
                ports = json.load(f)
        if api_port is not None:
            ports["apiserver"] = api_port or free_port()
        if "apiserver" not in ports:
            ports["apiserver"] = 6443 if _port_free(6443) else free_port()
        missing = [k for k in ("controllers", "scheduler", "dns") if k not in ports]
        for k, port in zip(missing, free_ports(len(missing)), strict=True):
            ports[k] = port
        with open(path, "w") as f:
            json.dump(ports, f)
        return ports

    @property
    def node_names(self) -> list[str]:
        prefix = FAKE_NODE_PREFIX if self.runtime == "fake" else DOCKER_NODE_PREFIX
        return [f"{prefix}{i}" for i in range(self.nodes)]

    def _component(self, name: str, argv: list[str]) -> Component:
        c = Component(name, argv, os.path.join(self.logs, f"{name}.log"))
        self.components.append(c)
        return c

    def _wait(self, what: str, cond: Callable[[], bool], timeout: float, comps: list[Component]) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            for c in comps:
                if not c.running():
                    raise UpError(f"{c.name} exited while waiting for {what} (log {c.log_path}):\n{c.tail()}")
            if time.monotonic() > deadline:
                raise UpError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {self.logs}/")
            time.sleep(0.1)

    def record_pids(self) -> None:
        """Every process started so far, for `grove down` when `grove up` itself is gone."""
        pids = {c.name: c.pid for c in self.components if c.running()}
        for i in range(self.kv.size):
            p = self.kv.procs[i]
            if p is not None and p.poll() is None:
                pids[self.kv.names[i]] = p.pid
        with open(os.path.join(self.state_dir, COMPONENTS_FILE), "w") as f:
            json.dump(pids, f)

    def start(self, progress: Callable[[str], None], t0: float | None = None) -> Timings:
        """Start every part and wait until the cluster is Ready; timings count from t0 (default now)."""
        t0 = time.monotonic() if t0 is None else t0
        t = self.timings
        for name, port in (
            ("API server", self.ports["apiserver"]),
            ("controller manager", self.ports["controllers"]),
            ("scheduler", self.ports["scheduler"]),
        ):
            if not _port_free(port):
                raise UpError(
                    f"port {port} for the {name} is in use (saved in {self.state_dir}/ports.json); "
                    "stop what uses it or remove that file"
                )
        if self.secure:
            progress(f"certificates in {self.pki} (CA, API server, store, one identity per component)…")
            self._ensure_pki()
        progress("starting the store (3 members)…")
        try:
            self.kv.start(timeout=60, progress=lambda m: progress(f"store: {m}"))
        except ClusterError as exc:
            raise UpError(f"{exc}; logs in {self.logs}/") from None
        self.record_pids()
        t.store = time.monotonic() - t0
        eps = ",".join(self.kv.client_urls)

        progress("starting the API server…")
        api = self._component(
            "apiserver",
            [
                "apiserver",
                "--etcd-servers",
                eps,
                "--bind-address",
                "127.0.0.1",
                "--port",
                str(self.ports["apiserver"]),
                *self._apiserver_tls(),
            ],
        )
        api.start()
        self.record_pids()
        self._wait("the API server", lambda: _ok(self.api_url + "/readyz", self.context), 60, [api])
        self._write_kubeconfig()
        t.apiserver = time.monotonic() - t0

        docker_nodes = self.runtime == "docker" and self.nodes > 0
        gateway = ""
        if docker_nodes:
            progress("creating the pod network…")
            subnet, gateway = pod_network()
            self.pod_subnet = subnet
        control = self._control_plane(gateway)
        for c in control:
            progress(f"starting {c.name}…")
            c.start()
        node_comps = self._node_agents(gateway)
        for c in node_comps:
            progress(f"starting {c.name}…")
            c.start()
        self.record_pids()
        # DNS and the proxy are helpers: if one cannot run (port 53 taken, another proxy owns this
        # host's rules) the cluster still works; the supervisor retries it and the user is told.
        watched = [c for c in [api, *control, *node_comps] if c.name not in OPTIONAL]
        if self.nodes and node_comps:
            progress(f"waiting for {self.nodes} node(s) to be Ready…")
            self._wait(f"{self.nodes} Ready node(s)", lambda: self.ready_nodes() >= self.nodes, 120, watched)
        for c in control:
            lease = {"scheduler": "kube-scheduler", "controllers": "kube-controller-manager"}.get(c.name)
            if lease:
                progress(f"waiting for the {LEADS[c.name]} to take its Lease…")
                self._wait(f"the {c.name} to lead", lambda n=lease, c=c: self.lease_holder(n) == self._id(c.name),
                           60, watched)  # fmt: skip
        t.ready = time.monotonic() - t0
        for c in control + node_comps:
            if c.name in OPTIONAL and not c.running():
                last = c.tail(1).strip() or "no output"
                self.notes.append(f"{c.name} is not running ({last}); it is retried, log {c.log_path}")
        return t

    def _id(self, component: str) -> str:
        # A stable identity: a restarted `grove up` takes its own Lease back at once instead of
        # waiting for the old one to expire.
        return f"{self.identity}_{component}"

    def _control_plane(self, gateway: str) -> list[Component]:
        control = []
        if _has("orchestrator.scheduler.cli"):
            control.append(
                self._component(
                    "scheduler",
                    [
                        "scheduler",
                        *self._conn("kube-scheduler"),
                        "--name",
                        self._id("scheduler"),
                        "--metrics-port",
                        str(self.ports["scheduler"]),
                    ],  # fmt: skip
                )
            )
        if self.want_controllers and _has("orchestrator.controllers.cli"):
            control.append(self._component(
                "controllers",
                ["controllers", *self._conn("kube-controller-manager"), "--name", self._id("controllers"), "--port", str(self.ports["controllers"])],
            ))  # fmt: skip
        if self.want_dns and _has("node.proxy_cli"):
            if gateway and os.geteuid() == 0:
                # On the bridge's gateway every pod reaches it; pods get it as their nameserver.
                self.dns_address = gateway
                argv = ["dns", *self._conn("kube-proxy"), "--listen", f"{gateway}:53",
                        "--publish-service", "kube-system/kube-dns"]  # fmt: skip
            elif gateway:
                self.notes.append(
                    "cluster DNS is off: it must listen on port 53 of the pod bridge, which needs root"
                )
                argv = []
            else:  # no pods run on hollow nodes: answer on loopback, for lookups from this host
                self.dns_address = f"127.0.0.1:{self.ports['dns']}"
                argv = ["dns", *self._conn("kube-proxy"), "--listen", self.dns_address]
            if argv:
                control.append(self._component("dns", argv))
        return control

    def _node_agents(self, gateway: str) -> list[Component]:
        if not _has("node.cli") or not self.nodes:
            return []
        comps = []
        root = os.path.join(self.state_dir, "nodes")
        if self.runtime == "fake":
            comps.append(self._component(
                "nodes-fake",
                ["node", *self._conn(f"node-{self.node_names[0]}"), "--runtime", "fake", "--count", str(self.nodes),
                 "--name-prefix", FAKE_NODE_PREFIX, "--port", "0", "--root-dir", os.path.join(root, "hollow")],
            ))  # fmt: skip
            return comps
        for name in self.node_names:
            # Every agent on this host gets its own endpoint port (0: the kernel picks one, the
            # agent advertises it in its Node's daemonEndpoints) and its own volume directory.
            argv = ["node", *self._conn(f"node-{name}"), "--name", name, "--runtime", "docker", "--port", "0",
                    "--root-dir", os.path.join(root, name)]  # fmt: skip
            if self.dns_address:
                argv += ["--cluster-dns", self.dns_address]
            # Agents share this host's engine; each one only cleans up pods it started itself
            # (recorded under its own --root-dir), so they leave each other's containers alone.
            comps.append(self._component(name, argv))
        proxy = self.want_proxy if self.want_proxy is not None else True
        if proxy and _has("node.proxy_cli"):
            if os.geteuid() != 0:
                self.notes.append("the service proxy is off: it programs iptables, which needs root")
            else:
                # One proxy serves this host's addresses for every node on it.
                comps.append(
                    self._component(
                        "proxy", ["proxy", *self._conn("kube-proxy"), "--node", self.node_names[0]]
                    )
                )
        return comps

    # --- what the API says -----------------------------------------------------------------------

    def ready_nodes(self) -> int:
        data = _get_json(self.api_url + "/api/v1/nodes", context=self.context) or {}
        n = 0
        for node in data.get("items", []):
            if node.get("metadata", {}).get("name") not in self.node_names:
                continue
            for cond in node.get("status", {}).get("conditions", []):
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    n += 1
        return n

    def lease_holder(self, name: str) -> str:
        lease = (
            _get_json(
                f"{self.api_url}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{name}",
                context=self.context,
            )
            or {}
        )
        return str((lease.get("spec") or {}).get("holderIdentity") or "")

    def _write_kubeconfig(self) -> None:
        """The admin's kubeconfig (what the user's kubectl reads)."""
        self._write_kubeconfig_for("admin", self.kubeconfig)

    def _write_kubeconfig_for(self, identity: str, path: str) -> None:
        import yaml

        from orchestrator.cli import kubeconfig_document

        tls: dict[str, bytes] = {}
        if self.secure:
            tls = {
                "ca_data": _read(os.path.join(self.pki, "ca.crt")),
                "client_cert_data": _read(os.path.join(self.pki, f"{identity}.crt")),
                "client_key_data": _read(os.path.join(self.pki, f"{identity}.key")),
            }
        doc = yaml.safe_dump(kubeconfig_document(self.api_url, **tls), sort_keys=False)
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(doc)
        os.replace(path + ".tmp", path)

    # --- certificates ------------------------------------------------------------------------------

    def _identities(self) -> list[str]:
        nodes = self.node_names[:1] if self.runtime == "fake" else self.node_names
        return [
            "admin",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-proxy",
            *(f"node-{n}" for n in nodes),
        ]

    def _ensure_certs(self) -> None:
        """CA and certificates in STATE/pki: made once, kept across restarts; a missing one is added."""
        import datetime

        from grove import certs

        wanted = ["ca", "apiserver", "store", "apiserver-etcd-client", *self._identities()]
        if not all(
            os.path.exists(os.path.join(self.pki, f"{w}.{e}")) for w in wanted for e in ("crt", "key")
        ):
            nodes = self.node_names[:1] if self.runtime == "fake" else self.node_names
            bundle = certs.build_bundle(
                datetime.datetime.now(datetime.UTC), socket.gethostname(), nodes,
                ca=certs.load_ca(self.pki),
            )  # fmt: skip
            certs.write_bundle(self.pki, bundle)

    def _ensure_pki(self) -> None:
        """The admin's TLS context for up's own calls, and one kubeconfig per component identity."""
        self.context = client_context(
            os.path.join(self.pki, "ca.crt"),
            os.path.join(self.pki, "admin.crt"),
            os.path.join(self.pki, "admin.key"),
        )
        for identity in self._identities()[1:]:
            self._write_kubeconfig_for(identity, os.path.join(self.pki, f"{identity}.kubeconfig"))

    def _apiserver_tls(self) -> list[str]:
        if not self.secure:
            return []
        return [
            "--etcd-cafile", os.path.join(self.pki, "ca.crt"),
            "--etcd-certfile", os.path.join(self.pki, "apiserver-etcd-client.crt"),
            "--etcd-keyfile", os.path.join(self.pki, "apiserver-etcd-client.key"),
            "--tls-cert-file", os.path.join(self.pki, "apiserver.crt"),
            "--tls-private-key-file", os.path.join(self.pki, "apiserver.key"),
            "--client-ca-file", os.path.join(self.pki, "ca.crt"),
        ]  # fmt: skip

    def _conn(self, identity: str) -> list[str]:
        """How a component reaches the API server: its own kubeconfig, or the plain URL."""
        if not self.secure:
            return ["--server", self.api_url]
        return ["--kubeconfig", os.path.join(self.pki, f"{identity}.kubeconfig")]

    def first_pod_seconds(self, image: str = FIRST_POD_IMAGE, timeout: float = 60.0) -> float | None:
        """Create a throwaway pod and time it from creation to Running (what a user waits for first)."""
        ns, name = "default", f"grove-up-check-{int(time.time())}"
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "grove-up"}},
            "spec": {"containers": [{"name": "check", "image": image, "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}],
                     "terminationGracePeriodSeconds": 0},
        }  # fmt: skip
        url = f"{self.api_url}/api/v1/namespaces/{ns}/pods"
        t0 = time.monotonic()
        if _request("POST", url, pod, timeout=10, context=self.context) is None:
            return None
        took = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = _get_json(f"{url}/{name}", context=self.context) or {}
            if got.get("status", {}).get("phase") == "Running":
                took = time.monotonic() - t0
                break
            time.sleep(0.02)
        _request("DELETE", f"{url}/{name}?gracePeriodSeconds=0", timeout=10, context=self.context)
        return took

    def dead_components(self) -> list[Component]:
        return [c for c in self.components if not c.running()]

    def pod_uids(self) -> set[str]:
        """uids of this cluster's pods: from the API, and the nodes' pod directories."""
        uids: set[str] = set()
        data = _get_json(self.api_url + "/api/v1/pods", timeout=10, context=self.context) or {}
        for pod in data.get("items", []):
            uid = (pod.get("metadata") or {}).get("uid")
            if uid:
                uids.add(str(uid))
        nodes_dir = os.path.join(self.state_dir, "nodes")
        if os.path.isdir(nodes_dir):
            for node in os.listdir(nodes_dir):
                pods_dir = os.path.join(nodes_dir, node, "pods")
                if os.path.isdir(pods_dir):
                    uids.update(os.listdir(pods_dir))
        return uids

    def write_status(self) -> None:
        doc = {
            "pid": os.getpid(),
            "api_url": self.api_url,
            "kubeconfig": self.kubeconfig,
            # what a script needs to call the API as the admin (empty with --insecure)
            "ca_file": os.path.join(self.pki, "ca.crt") if self.secure else "",
            "client_cert": os.path.join(self.pki, "admin.crt") if self.secure else "",
            "client_key": os.path.join(self.pki, "admin.key") if self.secure else "",
            "store": self.kv.client_urls,
            "logs": self.logs,
            "runtime": self.runtime,
            "nodes": self.node_names,
            "dns": self.dns_address,
            "components": {c.name: c.running() for c in self.components},
            "notes": self.notes,
            "timings": asdict(self.timings),
        }
        path = os.path.join(self.state_dir, STATUS_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(doc, f, indent=2)
        os.replace(path + ".tmp", path)

    def stop(self, progress: Callable[[str], None]) -> None:
        uids = self.pod_uids() if self.runtime == "docker" and self.nodes else set()
        for c in reversed(self.components):
            if c.running():
                progress(f"stopping {c.name}…")
            c.stop()
        if self.runtime == "docker" and self.nodes:
            progress("removing the containers of this cluster's pods…")
            remove_pod_containers(uids)
        progress("stopping the store…")
        self.kv.stop()
        for name in (STATUS_FILE, COMPONENTS_FILE):
            try:
                os.remove(os.path.join(self.state_dir, name))
            except OSError:
                pass


def remove_pod_containers(uids: set[str]) -> int:
    """Remove the containers of these pods (by grove's pod uid label) and nothing else."""
    if not uids:
        return 0
    try:
        import docker

        client = docker.from_env(timeout=30)
        n = 0
        for c in client.containers.list(all=True, filters={"label": POD_UID_LABEL}, ignore_removed=True):
            if (c.labels or {}).get(POD_UID_LABEL) in uids:
                try:
                    c.remove(force=True)
                    n += 1
                except docker.errors.NotFound:
                    pass
        return n
    except Exception:  # noqa: BLE001 - stopping must go on; the next `grove up` adopts leftovers
        return 0


# --- the commands -----------------------------------------------------------------------------------


class _Interrupted(Exception):
    pass


def _running_pid(state_dir: str) -> int | None:
    try:
        with open(os.path.join(state_dir, PID_FILE)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _pid_alive(pid) and _is_grove_process(pid) else None


def _steps(console: Console) -> tuple[Callable[[str], None], Callable[[], None]]:
    """A spinner on a terminal; one line per step otherwise (e.g. `make demo` tailing a log)."""
    if console.is_terminal:
        status = console.status("starting…")
        status.start()
        return status.update, status.stop
    t0 = time.monotonic()
    return (lambda m: console.print(f"[{time.monotonic() - t0:5.1f}s] {m}", highlight=False)), (lambda: None)


@click.command("up")
@click.option("--state-dir", default=".grove", show_default=True, help="Data, logs and kubeconfig live here.")
@click.option(
    "--nodes", default=2, show_default=True, type=click.IntRange(0, 5000), help="Node agents to run."
)
@click.option("--runtime", type=click.Choice(["docker", "fake"]), default="docker", show_default=True,
              help="docker: pods are containers; fake: hollow nodes that only pretend (for scale).")  # fmt: skip
@click.option(
    "--api-port", default=None, type=int, help="API server port (default 6443 if free; 0: any free port)."
)
@click.option(
    "--proxy/--no-proxy", default=True, show_default=True, help="Run the service proxy (docker, root)."
)
@click.option("--first-pod/--no-first-pod", default=True, show_default=True,
              help="Time a first pod from creation to Running once the cluster is Ready.")  # fmt: skip
@click.option(
    "--insecure",
    is_flag=True,
    help="Plain HTTP and no authentication (default: TLS and client certificates).",
)
def up(
    state_dir: str,
    nodes: int,
    runtime: str,
    api_port: int | None,
    proxy: bool,
    first_pod: bool,
    insecure: bool,
) -> None:
    """Start a whole cluster here: store, API server, scheduler, controllers, DNS, proxy and nodes."""
    began = time.monotonic()  # "Ready in" counts the prerequisite checks and image builds too
    console = Console(stderr=True, soft_wrap=True)
    os.makedirs(state_dir, exist_ok=True)
    other = _running_pid(state_dir)
    if other:
        console.print(f"[red]grove up:[/red] already running (pid {other}) on {state_dir}; "
                      f"`grove down --state-dir {state_dir}` first")  # fmt: skip
        sys.exit(1)
    left = _stop_leftovers(state_dir)
    if left:
        console.print(f"stopped {left} process(es) an earlier `grove up` on {state_dir} left running")
    if runtime == "docker" and nodes:
        problem = check_docker()
        if problem:
            console.print(f"[red]grove up:[/red] {problem}")
            sys.exit(1)
        try:
            with console.status("building grove's base images (offline)…"):
                built = ensure_images()
        except UpError as exc:
            console.print(f"[red]grove up:[/red] {exc}")
            sys.exit(1)
        if built:
            console.print(f"built images: {', '.join(built)}")
    pid_path = os.path.join(state_dir, PID_FILE)
    with open(pid_path, "w") as f:
        f.write(str(os.getpid()))
    cluster = Cluster(state_dir, nodes, runtime, api_port, proxy=proxy, secure=not insecure)
    stop = {"now": False}

    def interrupt_start(signum: int, frame: Any) -> None:
        raise _Interrupted

    # While starting, Ctrl-C or `grove down` aborts the start; afterwards they end the watch loop.
    signal.signal(signal.SIGINT, interrupt_start)
    signal.signal(signal.SIGTERM, interrupt_start)
    step, done = _steps(console)
    try:
        try:
            timings = cluster.start(step, began)
            if first_pod and nodes and _has("orchestrator.scheduler.cli") and _has("node.cli"):
                step("timing a first pod from creation to Running…")
                timings.first_pod = cluster.first_pod_seconds()
                if timings.first_pod is None:
                    cluster.notes.append(
                        f"the first pod did not reach Running within 60s; see {cluster.logs}/"
                    )
        finally:
            done()
    except (UpError, _Interrupted) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if isinstance(exc, UpError):
            console.print(f"[red]grove up failed:[/red] {exc}")
        cluster.stop(lambda m: None)
        _remove(pid_path)
        console.print(f"stopped; logs in {cluster.logs}/")
        sys.exit(1 if isinstance(exc, UpError) else 130)

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster.write_status()
    msg = f"[green]grove is up[/green]: Ready in {timings.ready:.1f}s"
    if timings.first_pod is not None:
        msg += f", first pod Running {timings.first_pod:.2f}s after its creation"
    console.print(msg)
    console.print(f"  kubeconfig   {cluster.kubeconfig}")
    console.print(f"  API server   {cluster.api_url}")
    console.print(f"  store        {','.join(cluster.kv.client_urls)}")
    nodes_line = ", ".join(cluster.node_names) if nodes <= 5 else f"{nodes} ({cluster.node_names[0]} …)"
    console.print(f"  nodes        {nodes_line or 'none'} ({runtime} runtime)")
    if cluster.dns_address:
        console.print(f"  cluster DNS  {cluster.dns_address}")
    console.print(f"  logs         {cluster.logs}/")
    for note in cluster.notes:
        console.print(f"  [yellow]note:[/yellow] {note}")
    console.print(f"\n  export KUBECONFIG={cluster.kubeconfig}\n  kubectl get nodes -o wide")
    console.print(f"\nCtrl-C, or `grove down --state-dir {state_dir}` from another shell, stops everything.")
    try:
        while not stop["now"]:
            _supervise(cluster, console)
            time.sleep(0.5)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("stopping…")
        cluster.stop(lambda m: console.print(f"  {m}"))
        _remove(pid_path)
        console.print("stopped.")


def _supervise(cluster: Cluster, console: Console) -> None:
    """Restart parts that exited, with back-off (1 s, 2 s, 4 s … 60 s), like a crash-looping pod."""
    now = time.monotonic()
    changed = False
    for comp in cluster.dead_components():
        if comp.next_restart == 0.0:
            comp.next_restart = now + min(60.0, 2.0**comp.restarts)
            code = comp.proc.returncode if comp.proc else None
            console.print(f"[yellow]{comp.name} exited (code {code}); restarting it in "
                          f"{comp.next_restart - now:.0f}s — log {comp.log_path}[/yellow]")  # fmt: skip
        elif now >= comp.next_restart:
            comp.restarts += 1
            comp.next_restart = 0.0
            comp.start()
            changed = True
    for i in range(cluster.kv.size):
        if not cluster.kv.is_running(i):
            console.print(f"[yellow]store member {cluster.kv.names[i]} exited; restarting it[/yellow]")
            try:
                cluster.kv.restart(i)
                changed = True
            except ClusterError as exc:
                console.print(f"[red]store member {cluster.kv.names[i]} did not come back: {exc}[/red]")
    if changed:
        cluster.record_pids()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


@click.command("down")
@click.option("--state-dir", default=".grove", show_default=True)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for everything to stop.")
def down(state_dir: str, timeout: float) -> None:
    """Stop the cluster `grove up` runs on STATE_DIR (its data stays for the next `grove up`)."""
    pid = _running_pid(state_dir)
    if pid is None:
        left = _stop_leftovers(state_dir)
        _remove(os.path.join(state_dir, PID_FILE))
        if left:
            click.echo(f"grove down: `grove up` was gone; stopped {left} process(es) it had started")
            return
        click.echo(f"grove down: nothing is running on {state_dir}", err=True)
        sys.exit(1)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            click.echo("stopped.")
            return
        time.sleep(0.1)
    click.echo(f"grove down: process {pid} did not stop within {timeout:.0f}s", err=True)
    sys.exit(1)


def _stop_leftovers(state_dir: str) -> int:
    """`grove up` died without cleaning up (SIGKILL): stop the processes it recorded."""
    path = os.path.join(state_dir, COMPONENTS_FILE)
    try:
        with open(path) as f:
            pids = {name: int(pid) for name, pid in json.load(f).items()}
    except (OSError, ValueError):
        return 0
    alive = [p for p in pids.values() if _pid_alive(p) and _is_grove_process(p)]
    for p in alive:
        os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_pid_alive(p) for p in alive):
        time.sleep(0.1)
    for p in alive:
        if _pid_alive(p):
            os.kill(p, signal.SIGKILL)
    _remove(path)
    _remove(os.path.join(state_dir, STATUS_FILE))
    return len(alive)
