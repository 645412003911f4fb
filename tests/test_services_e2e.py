"""Services end to end on real Docker: `grove proxy` and `grove dns` as processes against a real API
server, pods on the grove bridge, traffic from the host and from inside pods.

Backends are three busybox httpd containers (TCP 8080) on the pod network, each with a UDP
responder (5353) that answers every DNS query with a TXT record naming its backend — the venv's
Python run inside the container's network namespace (nsenter), because busybox has no UDP server.
The client is a real pod (busybox `wget` for TCP, `nslookup` for UDP, the cluster DNS in its
resolv.conf). Their Services have no selector and hand-written Endpoints, so each test controls
readiness exactly. The rollout test at the end uses real pods of a Deployment, with the real
scheduler, controllers and node agent.

Only loopback, the grove bridge (10.88.0.0/16) and addresses that exist only on this host
(cluster IPs, the test's load balancer pool) ever receive traffic.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from dnslib import QTYPE, DNSRecord

from node.runtime import DockerRuntime
from tests.apiserver_fixture import ROOT, ApiServerProcess, apiserver  # noqa: F401 - pytest fixture
from tests.cluster import delete_namespace_and_wait
from tests.dockerutil import Pods, make_pod, wait_for

pytest_plugins = ("tests.dockerutil",)
pytestmark = [pytest.mark.docker, pytest.mark.slow]

LB_POOL = "10.89.255.0/29"  # exists only on this host, as addresses on lo
GATEWAY = "10.88.0.1"
HTTP_PORT, UDP_PORT = 8080, 5353

UDP_RESPONDER = r"""
import socket, sys
from dnslib import DNSRecord, QTYPE, RR, TXT
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
while True:
    data, addr = s.recvfrom(4096)
    try:
        q = DNSRecord.parse(data)
    except Exception:
        continue
    r = q.reply()
    r.add_answer(RR(q.q.qname, QTYPE.TXT, rdata=TXT(name), ttl=0))
    s.sendto(r.pack(), addr)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def iptables_save() -> str:
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Daemon:
    """A `python -m node.proxy_cli ...` process with its log."""

    args: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    bridge: str = ""
    route_localnet: str = ""

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "node.proxy_cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_env(),
                cwd=ROOT,
            )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="grove-services-"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture(scope="module")
def proxy(apiserver: ApiServerProcess, workdir: Path, docker_runtime: DockerRuntime) -> Iterator[Daemon]:  # noqa: F811
    state = workdir / "proxy-state"
    daemon = Daemon(
        ["proxy", "--server", apiserver.url, "--node", "e2e-node", "--lb-pool", LB_POOL,
         "--state-dir", str(state), "--sync-period", "1"],
        workdir / "proxy.log",
    )  # fmt: skip
    bridge = next(
        p.name for p in Path("/sys/class/net").iterdir() if (p / "brif").exists() and _has_gateway(p.name)
    )
    daemon.route_localnet = Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").read_text().strip()
    daemon.bridge = bridge
    daemon.start()
    try:
        wait_for(lambda: "synced" in daemon.log() or not daemon.alive(), 30, "the proxy's first sync")
        assert daemon.alive(), daemon.log()
        yield daemon
    finally:
        daemon.stop()
        # Whatever happened, leave no rules, addresses or sysctls behind.
        subprocess.run(
            [sys.executable, "-m", "node.proxy_cli", "proxy", "--cleanup", "--state-dir", str(state)],
            env=_env(), cwd=ROOT, capture_output=True, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cluster_dns(apiserver: ApiServerProcess, proxy: Daemon, workdir: Path) -> Iterator[str]:  # noqa: F811
    """`grove dns` on the bridge gateway (a free port), published as kube-system/kube-dns: pods
    use its cluster IP on port 53, which the proxy forwards. Its cluster IP is returned."""
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))  # the "host resolver": nothing outside the cluster is looked up
    daemon = Daemon(
        ["dns", "--server", apiserver.url, "--listen", f"{GATEWAY}:0", "--publish-service", "kube-system/kube-dns",
         "--upstream", f"127.0.0.1:{dead.getsockname()[1]}"],
        workdir / "dns.log",
    )  # fmt: skip
    daemon.start()
    try:
        found = wait_for(
            lambda: re.search(r"cluster IP (\S+)", daemon.log()) or not daemon.alive(), 30, "dns"
        )
        assert daemon.alive(), daemon.log()
        wait_programmed(found.group(1))
        yield found.group(1)
    finally:
        daemon.stop()
        dead.close()


# --- backends -------------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    ip: str
    container: str  # the app container's id (for exec)
    responder: subprocess.Popen


@dataclass
class Backends:
    pods: Pods
    runtime: DockerRuntime
    docker: object
    items: list[Backend] = field(default_factory=list)
    client_container: str = ""
    plain: list[str] = field(default_factory=list)  # ids of the backend containers

    @property
    def ips(self) -> list[str]:
        return [b.ip for b in self.items]

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.items]

    def exec(self, container: str, script: str) -> str:
        return (
            self.docker.containers.get(container)
            .exec_run(["sh", "-c", script])
            .output.decode(errors="replace")
        )

    def from_client(self, script: str) -> str:
        return self.exec(self.client_container, script)


def udp_ask(ip: str, port: int, timeout: float = 2.0, sock: socket.socket | None = None) -> str | None:
    """The TXT answer of a UDP responder (None on timeout)."""
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        q = DNSRecord.question("who.example", "TXT")
        if sock is None:
            s.sendto(q.pack(), (ip, port))
        else:
            s.send(q.pack())
        while True:
            reply = DNSRecord.parse(s.recv(4096))
            if reply.header.id == q.header.id:
                return str(reply.rr[0].rdata).strip('"') if reply.rr else None
    except TimeoutError:
        return None
    finally:
        if own:
            s.close()


def http_get(ip: str, port: int, timeout: float = 5.0) -> str:
    with socket.create_connection((ip, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[-1].decode().strip()


@pytest.fixture(scope="class")
def backends(docker_client, grove_images, cluster_dns: str) -> Iterator[Backends]:
    """Three backends and a client pod. The backends are plain containers on the pod network (their
    Endpoints are written by hand; as plain containers no node agent on this engine takes them for
    orphans); the client is a real pod, with the cluster DNS in its resolv.conf."""
    runtime = DockerRuntime(docker_client, cluster_dns=[cluster_dns])
    runtime.ensure_network()
    tmp = Path(tempfile.mkdtemp(prefix="grove-backends-"))
    pods = Pods(runtime, docker_client, tmp)
    result = Backends(pods, runtime, docker_client)
    try:
        for i in range(3):
            name = f"backend-{i}-{uuid.uuid4().hex[:4]}"
            script = f"mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p {HTTP_PORT} -h /www"
            c = docker_client.containers.run(
                "grove/busybox:1.35", ["sh", "-c", script], name=f"grove-e2e-{name}", network=runtime.network,
                labels={"io.grove.test": "services-e2e"}, detach=True,
            )  # fmt: skip
            result.plain.append(c.id)
            c.reload()
            ip = c.attrs["NetworkSettings"]["Networks"][runtime.network]["IPAddress"]
            responder = subprocess.Popen(
                ["nsenter", f"--net=/proc/{c.attrs['State']['Pid']}/ns/net", sys.executable, "-c", UDP_RESPONDER,
                 name, str(UDP_PORT)],
                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            result.items.append(Backend(name, ip, c.id, responder))
        client = pods.run(make_pod(f"client-{uuid.uuid4().hex[:4]}", [{"name": "sh", "image": "grove/busybox:1.35",
                                                                        "command": ["sleep", "3600"]}]))  # fmt: skip
        result.client_container = client.ids["sh"]
        for b in result.items:
            wait_for(lambda b=b: _quiet(http_get, b.ip, HTTP_PORT) == b.name, 20, f"httpd in {b.name}")
            wait_for(lambda b=b: udp_ask(b.ip, UDP_PORT, 0.3) == b.name, 20, f"the UDP responder in {b.name}")
        yield result
    finally:
        for b in result.items:
            b.responder.kill()
            b.responder.wait()
        for cid in result.plain:
            try:
                docker_client.api.remove_container(cid, force=True)
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                print(f"cannot remove {cid[:12]}: {e}")
        pods.cleanup()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def _quiet(fn, *args):
    try:
        return fn(*args)
    except OSError:
        return None


# --- API helpers ------------------------------------------------------------------------------------


class Api:
    def __init__(self, server: ApiServerProcess) -> None:
        self.url = server.url

    def request(self, method: str, path: str, body=None, ctype: str = "application/json") -> dict:
        data = json.dumps(body) if body is not None else None
        r = requests.request(method, self.url + path, data=data, headers={"Content-Type": ctype}, timeout=10)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()

    def service(self, name: str, stype: str = "ClusterIP", ns: str = "default", **spec) -> dict:
        body = {
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "type": stype,
                "ports": [
                    {"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"},
                    {"name": "echo", "port": 53, "targetPort": UDP_PORT, "protocol": "UDP"},
                ],
                **spec,
            },
        }
        return self.request("POST", f"/api/v1/namespaces/{ns}/services", body)

    def endpoints(self, name: str, ready: list[str], not_ready: list[str] = (), ns: str = "default") -> None:
        subsets = []
        if ready or not_ready:
            subsets = [
                {
                    "addresses": [{"ip": ip} for ip in ready],
                    "notReadyAddresses": [{"ip": ip} for ip in not_ready],
                    "ports": [
                        {"name": "http", "port": HTTP_PORT, "protocol": "TCP"},
                        {"name": "echo", "port": UDP_PORT, "protocol": "UDP"},
                    ],
                }
            ]
        body = {"metadata": {"name": name, "namespace": ns}, "subsets": subsets}
        r = requests.get(f"{self.url}/api/v1/namespaces/{ns}/endpoints/{name}", timeout=10)
        if r.status_code == 404:
            self.request("POST", f"/api/v1/namespaces/{ns}/endpoints", body)
        else:
            body["metadata"]["resourceVersion"] = r.json()["metadata"]["resourceVersion"]
            self.request("PUT", f"/api/v1/namespaces/{ns}/endpoints/{name}", body)

    def delete(self, resource: str, name: str, ns: str = "default") -> None:
        requests.delete(f"{self.url}/api/v1/namespaces/{ns}/{resource}/{name}", timeout=10)


@pytest.fixture(scope="module")
def api(apiserver: ApiServerProcess) -> Api:  # noqa: F811
    return Api(apiserver)


def programmed(ip: str) -> bool:
    """The proxy has a rule (DNAT or REJECT) for this address: only then may traffic go to it —
    before, it would follow the host's default route off the machine."""
    return f"-d {ip}/32 " in iptables_save()


def wait_programmed(ip: str) -> None:
    wait_for(lambda: programmed(ip), 10, f"the proxy to program {ip}")


def spread(answers: list[str | None]) -> Counter:
    return Counter(answers)


def http_spread(ip: str, port: int, n: int = 9) -> Counter:
    return Counter(_quiet(http_get, ip, port) for _ in range(n))


def udp_spread(ip: str, port: int, n: int = 9) -> Counter:
    return Counter(udp_ask(ip, port) for _ in range(n))


def pod_http(backends: Backends, url: str, n: int = 9, container: str | None = None) -> Counter:
    out = backends.exec(container or backends.client_container,
                        f"for i in $(seq {n}); do timeout 5 wget -qO- {url} || echo FAILED; done")  # fmt: skip
    return Counter(line.strip() for line in out.splitlines() if line.strip())


def pod_udp(backends: Backends, server: str, n: int = 9) -> Counter:
    out = backends.from_client(f"for i in $(seq {n}); do nslookup -type=txt who.example {server}; done")
    return Counter(re.findall(r'text = "([^"]+)"', out)) + Counter(
        "FAILED" for line in out.splitlines() if "timed out" in line or "can't find" in line
    )


def even(counter: Counter, names: list[str], each: int) -> bool:
    return counter == Counter({n: each for n in names})


# --- the tests ------------------------------------------------------------------------------------------


class TestTraffic:
    """Hand-made backends (their Endpoints written by the tests); the client pod is removed when the
    class is done, before the node agent of the rollout test starts (an agent removes grove
    containers of pods it does not know)."""

    def test_cluster_ip_round_robin_over_tcp_and_udp_from_host_and_pod(self, api, backends, proxy):
        svc = api.service("rr")
        ip = svc["spec"]["clusterIP"]
        api.endpoints("rr", backends.ips)
        wait_programmed(ip)
        wait_for(lambda: _quiet(http_get, ip, 80) in backends.names, 10, "the cluster IP to answer")
        assert even(http_spread(ip, 80), backends.names, 3)
        assert even(udp_spread(ip, 53), backends.names, 3)
        assert even(pod_http(backends, f"http://{ip}/"), backends.names, 3)
        assert even(pod_udp(backends, ip), backends.names, 3)

    def test_node_port_over_tcp_and_udp_from_host_and_pod(self, api, backends, proxy):
        svc = api.service("np", "NodePort")
        ports = {p["name"]: p["nodePort"] for p in svc["spec"]["ports"]}
        assert all(30000 <= p <= 32767 for p in ports.values())
        api.endpoints("np", backends.ips)
        wait_for(lambda: _quiet(http_get, "127.0.0.1", ports["http"]) in backends.names, 10, "the node port")
        for host in ("127.0.0.1", GATEWAY):
            assert even(http_spread(host, ports["http"], 6), backends.names, 2), host
            assert even(udp_spread(host, ports["echo"], 6), backends.names, 2), host
        assert even(pod_http(backends, f"http://{GATEWAY}:{ports['http']}/", 6), backends.names, 2)
        assert even(pod_udp(backends, f"{GATEWAY}:{ports['echo']}", 6), backends.names, 2)

    def test_load_balancer_gets_an_address_from_the_pool(self, api, apiserver, backends, proxy):  # noqa: F811
        api.service("lb", "LoadBalancer")
        api.endpoints("lb", backends.ips)

        def ingress():
            svc = api.request("GET", "/api/v1/namespaces/default/services/lb")
            return [i.get("ip") for i in svc["status"].get("loadBalancer", {}).get("ingress", [])]

        (lb_ip,) = wait_for(ingress, 10, "an ingress address")
        assert lb_ip.startswith("10.89.255.")
        wait_programmed(lb_ip)
        wait_for(
            lambda: _quiet(http_get, lb_ip, 80) in backends.names, 10, "the load balancer address to answer"
        )
        assert even(http_spread(lb_ip, 80), backends.names, 3)
        assert even(udp_spread(lb_ip, 53), backends.names, 3)
        assert even(pod_http(backends, f"http://{lb_ip}/"), backends.names, 3)
        assert even(pod_udp(backends, lb_ip), backends.names, 3)
        assert (
            lb_ip
            in subprocess.run(
                ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
            ).stdout
        )
        table = apiserver.kubectl("get", "svc", "lb", "-o", "wide").stdout
        assert re.search(
            rf"^lb\s+LoadBalancer\s+\S+\s+{re.escape(lb_ip)}\s+80:\d+/TCP,53:\d+/UDP", table, re.M
        ), table
        events = apiserver.kubectl("get", "events", "--field-selector", "involvedObject.name=lb").stdout
        assert "IPAllocated" in events
        # No longer a LoadBalancer: the address goes back to the pool and off the host.
        ports = [
            {"name": "http", "port": 80, "targetPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "echo", "port": 53, "targetPort": UDP_PORT, "protocol": "UDP"},
        ]  # without node ports
        api.request("PATCH", "/api/v1/namespaces/default/services/lb",
                    {"spec": {"type": "ClusterIP", "externalTrafficPolicy": None, "ports": ports}},
                    "application/merge-patch+json")  # fmt: skip
        wait_for(lambda: not ingress(), 10, "the ingress address to be released")
        wait_for(
            lambda: lb_ip not in subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout,
            10, "the address to leave lo",
        )  # fmt: skip

    def test_session_affinity_client_ip(self, api, backends, proxy):
        svc = api.service("sticky", sessionAffinity="ClientIP")
        ip = svc["spec"]["clusterIP"]
        api.endpoints("sticky", backends.ips)
        wait_programmed(ip)
        wait_for(lambda: _quiet(http_get, ip, 80) in backends.names, 10, "the cluster IP to answer")
        host = http_spread(ip, 80, 6)
        assert len(host) == 1 and next(iter(host)) in backends.names, host
        pod = pod_http(backends, f"http://{ip}/", 6)
        assert len(pod) == 1 and next(iter(pod)) in backends.names, pod
        udp = udp_spread(ip, 53, 6)
        assert len(udp) == 1 and next(iter(udp)) in backends.names, udp

    def test_service_without_endpoints_refuses_connections(self, api, backends, proxy):
        svc = api.service("empty")
        ip = svc["spec"]["clusterIP"]
        api.endpoints("empty", [])

        def refused() -> bool:
            try:
                http_get(ip, 80, timeout=5)
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
            return False

        wait_programmed(ip)
        wait_for(refused, 10, "connections to be refused")
        with pytest.raises(ConnectionRefusedError):  # refused, not left to time out
            socket.create_connection((ip, 80), timeout=5).close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((ip, 53))
            # The host's own datagram is rejected on its way out: the send fails with EPERM (as with
            # kube-proxy); a pod's gets ICMP port unreachable, i.e. "Connection refused".
            with pytest.raises((ConnectionRefusedError, PermissionError)):
                udp_ask(ip, 53, timeout=5, sock=s)
        out = backends.from_client(
            f"wget -qO- http://{ip}/ 2>&1; nslookup -type=txt who.example {ip} 2>&1; true"
        )
        assert "can't connect to remote host" in out and "Connection refused" in out, out
        assert "read: Connection refused" in out, out
        # Its first endpoint makes it work at once, and its last one leaving refuses again.
        api.endpoints("empty", backends.ips[:1])
        wait_for(lambda: _quiet(http_get, ip, 80) == backends.names[0], 10, "the first endpoint to be used")
        api.endpoints("empty", [], backends.ips[:1])
        wait_for(refused, 10, "connections to be refused again")

    def test_only_ready_endpoints_get_traffic(self, api, backends, proxy):
        svc = api.service("ready")
        ip = svc["spec"]["clusterIP"]
        api.endpoints("ready", backends.ips)
        wait_programmed(ip)
        wait_for(lambda: len(http_spread(ip, 80, 3)) == 3, 10, "all three backends")
        # A UDP client that keeps its socket: its flow is pinned to one backend by conntrack.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((ip, 53))
            first = udp_ask(ip, 53, sock=s)
            assert first in backends.names
            assert {udp_ask(ip, 53, sock=s) for _ in range(3)} == {first}
            pinned = backends.names.index(first)
            ready = [b for i, b in enumerate(backends.ips) if i != pinned]
            api.endpoints("ready", ready, [backends.ips[pinned]])
            others = {n for i, n in enumerate(backends.names) if i != pinned}
            wait_for(
                lambda: set(http_spread(ip, 80, 4)) == others, 10, "traffic to leave the unready backend"
            )
            assert set(udp_spread(ip, 53, 4)) == others
            # The kept socket moves too: its stale conntrack entry is deleted.
            wait_for(
                lambda: udp_ask(ip, 53, sock=s) in others,
                10,
                "the kept UDP socket to leave the unready backend",
            )
            assert {udp_ask(ip, 53, sock=s) for _ in range(3)} <= others
        api.endpoints("ready", backends.ips)
        wait_for(lambda: len(http_spread(ip, 80, 3)) == 3, 10, "the backend to come back")

    def test_a_pod_reaches_itself_through_its_service(self, api, backends, proxy):
        svc = api.service("self")
        ip = svc["spec"]["clusterIP"]
        me = backends.items[0]
        api.endpoints("self", [me.ip])
        wait_programmed(ip)
        wait_for(lambda: _quiet(http_get, ip, 80) == me.name, 10, "the cluster IP to answer")
        assert pod_http(backends, f"http://{ip}/", 3, container=me.container) == Counter({me.name: 3})

    def test_cluster_dns_from_inside_a_pod(self, api, backends, proxy, cluster_dns):
        svc = api.service("named")
        ip = svc["spec"]["clusterIP"]
        api.endpoints("named", backends.ips)
        wait_programmed(ip)
        api.request("POST", "/api/v1/namespaces/default/services", {
            "metadata": {"name": "headless"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT}]},
        })  # fmt: skip
        api.endpoints("headless", backends.ips[:2], backends.ips[2:])
        resolv = backends.from_client("cat /etc/resolv.conf")
        assert f"nameserver {cluster_dns}" in resolv and "default.svc.cluster.local" in resolv, resolv

        def lookup(name: str, qtype: str = "a") -> str:
            return backends.from_client(f"nslookup -type={qtype} {name}")

        def lookup_until(name: str, wanted: str) -> str:
            def attempt() -> str | None:
                out = lookup(name)
                return out if wanted in out else None

            return wait_for(attempt, 15, f"nslookup {name} to show {wanted}")

        out = lookup_until("named.default.svc.cluster.local", ip)
        assert f"Address: {ip}" in out
        # The search path finds the short name; wget goes through DNS and the cluster IP.
        assert set(pod_http(backends, "http://named/", 3)) <= set(backends.names)
        assert set(pod_http(backends, "http://named.default/", 3)) <= set(backends.names)
        headless = lookup_until("headless.default.svc.cluster.local", backends.ips[0])
        assert sorted(re.findall(r"Address: (10\.88\.\S+)", headless)) == sorted(backends.ips[:2]), headless
        srv = lookup("_http._tcp.named.default.svc.cluster.local", "srv")
        assert "80 named.default.svc.cluster.local" in srv, srv
        assert "NXDOMAIN" in lookup("missing.default.svc.cluster.local")
        # Over TCP too (the published service carries both).
        with socket.create_connection((cluster_dns, 53), timeout=5) as s:
            q = DNSRecord.question("named.default.svc.cluster.local").pack()
            s.sendall(len(q).to_bytes(2, "big") + q)
            n = int.from_bytes(s.recv(2), "big")
            reply = DNSRecord.parse(s.recv(n))
        assert [str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A] == [ip]

    def test_rules_come_back_after_someone_removes_them(self, api, backends, proxy):
        svc = api.service("robust")
        ip = svc["spec"]["clusterIP"]
        api.endpoints("robust", backends.ips)
        wait_programmed(ip)
        wait_for(lambda: _quiet(http_get, ip, 80) in backends.names, 10, "the cluster IP to answer")
        jump = ["-m", "comment", "--comment", "grove service proxy", "-j", "GROVE-SERVICES"]
        # A flushed chain is noticed...
        subprocess.run(["iptables", "-t", "nat", "-F", "GROVE-SERVICES"], check=True)
        wait_for(lambda: programmed(ip), 15, "the proxy to refill its chain")
        # ...and so is a missing jump.
        subprocess.run(["iptables", "-t", "nat", "-D", "PREROUTING", *jump], check=True)
        # No traffic while the rules are gone (it would leave the host); wait for the proxy's check.
        wait_for(
            lambda: (
                programmed(ip)
                and subprocess.run(
                    ["iptables", "-t", "nat", "-C", "PREROUTING", *jump], capture_output=True
                ).returncode
                == 0
            ),
            15,
            "the proxy to put its rules back",
        )
        assert even(pod_http(backends, f"http://{ip}/"), backends.names, 3)
        assert "rewriting them" in proxy.log()


# --- the zero-downtime rollout, with the real scheduler, controllers and node agent ----------------------


@dataclass
class ControlPlane:
    procs: list[tuple[str, subprocess.Popen, Path]] = field(default_factory=list)

    def start(self, name: str, module: str, args: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT)  # fmt: skip
        self.procs.append((name, proc, log))

    def check(self) -> None:
        for name, proc, log in self.procs:
            assert proc.poll() is None, f"{name} exited:\n{log.read_text(errors='replace')[-3000:]}"

    def stop(self) -> None:
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


ROLLOUT_NS = "rollout"


@pytest.fixture
def control_plane(apiserver, proxy, cluster_dns, workdir, docker_client, grove_images):  # noqa: F811
    """Scheduler, controllers and one Docker node agent as processes; every pod they made is gone
    afterwards."""
    from kvstore.localcluster import free_port

    plane = ControlPlane()
    node = "e2e-node"
    try:
        plane.start(
            "scheduler",
            "orchestrator.scheduler.cli",
            ["--server", apiserver.url, "--no-leader-elect"],
            workdir / "scheduler.log",
        )
        plane.start(
            "controllers",
            "orchestrator.controllers.cli",
            ["--server", apiserver.url, "--no-leader-elect", "--port", "0"],
            workdir / "controllers.log",
        )
        plane.start("node", "node.cli",
                    ["--server", apiserver.url, "--name", node, "--runtime", "docker", "--node-ip", "127.0.0.1",
                     "--address", "127.0.0.1", "--port", str(free_port()), "--root-dir", str(workdir / "node"),
                     "--cluster-dns", cluster_dns], workdir / "node.log")  # fmt: skip

        def node_ready() -> bool:
            plane.check()
            r = requests.get(f"{apiserver.url}/api/v1/nodes/{node}", timeout=5)
            conditions = r.json().get("status", {}).get("conditions", []) if r.ok else []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        wait_for(node_ready, 60, "the node to be Ready")
        yield plane
    finally:
        try:
            delete_namespace_and_wait(apiserver.url, ROLLOUT_NS, 30)
        finally:
            plane.stop()
            runtime = DockerRuntime(docker_client)
            for uid, pc in runtime.list_pod_containers().items():
                if pc.namespace == ROLLOUT_NS:
                    runtime.remove_pod(uid)


def deployment(version: str, replicas: int = 3) -> dict:
    # An app that stops at once on SIGTERM, as most do: without the preStop pause, requests in
    # flight or just DNATed to it would fail.
    script = (
        f"mkdir -p /www && echo {version} > /www/index.html && httpd -f -p {HTTP_PORT} -h /www & "
        'trap "kill $!; exit 0" TERM; wait'
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ROLLOUT_NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "web",
                        "image": "grove/busybox:1.35",
                        "command": ["sh", "-c", script],
                        "ports": [{"name": "http", "containerPort": HTTP_PORT}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                        # Keep serving while the endpoint removal reaches every proxy (kube's advice).
                        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
                    }],
                },
            },
        },
    }  # fmt: skip


class Prober:
    """Sends HTTP requests back to back from a thread and records every answer or error."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.answers: Counter = Counter()
        self.errors: list[str] = []
        self._stop = False
        import threading

        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop:
            try:
                self.answers[http_get(self.ip, self.port, timeout=5)] += 1
            except OSError as e:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {e!r}")

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(10)

    @property
    def total(self) -> int:
        return sum(self.answers.values()) + len(self.errors)


def test_zero_downtime_rollout_and_scaling(apiserver, api, control_plane):  # noqa: F811
    api.request("POST", "/api/v1/namespaces", {"metadata": {"name": ROLLOUT_NS}})
    apiserver.kubectl("apply", "-f", "-", input=json.dumps(deployment("v1")))
    apiserver.kubectl("rollout", "status", f"-n={ROLLOUT_NS}", "deployment/web", "--timeout=90s", timeout=120)
    apiserver.kubectl("expose", "deployment", "web", f"-n={ROLLOUT_NS}", "--port=80", "--target-port=http")
    svc = api.request("GET", f"/api/v1/namespaces/{ROLLOUT_NS}/services/web")
    ip = svc["spec"]["clusterIP"]

    def endpoints() -> list[str]:
        r = requests.get(f"{apiserver.url}/api/v1/namespaces/{ROLLOUT_NS}/endpoints/web", timeout=5)
        subsets = r.json().get("subsets") or [] if r.ok else []
        return [a["ip"] for s in subsets for a in s.get("addresses") or []]

    wait_for(lambda: len(endpoints()) == 3, 30, "three ready endpoints")
    wait_programmed(ip)
    wide = apiserver.kubectl("get", "svc,ep", f"-n={ROLLOUT_NS}", "-o", "wide").stdout
    assert re.search(rf"service/web\s+ClusterIP\s+{re.escape(ip)}\s+<none>\s+80/TCP\s+\S+\s+app=web", wide), (
        wide
    )
    assert all(f"{e}:{HTTP_PORT}" in wide for e in endpoints()), wide
    described = apiserver.kubectl("describe", "svc", "web", f"-n={ROLLOUT_NS}").stdout
    assert re.search(rf"IP:\s+{re.escape(ip)}\n", described) and re.search(
        r"TargetPort:\s+http/TCP", described
    )
    assert re.search(r"Selector:\s+app=web", described), described
    # kubectl 1.32 takes this line from EndpointSlices (discovery.k8s.io/v1), not from Endpoints.
    if requests.get(f"{apiserver.url}/apis/discovery.k8s.io/v1", timeout=5).ok:
        assert re.search(r"Endpoints:\s+10\.88\.", described), described

    def rolled(version: str, replicas: int) -> bool:
        control_plane.check()
        d = api.request("GET", f"/apis/apps/v1/namespaces/{ROLLOUT_NS}/deployments/web")
        st = d.get("status", {})
        done = (
            st.get("observedGeneration") == d["metadata"]["generation"]
            and st.get("updatedReplicas") == replicas
            and st.get("availableReplicas") == replicas
            and st.get("replicas") == replicas
        )
        return done and len(endpoints()) == replicas

    with Prober(ip, 80) as prober:
        wait_for(lambda: prober.total >= 20, 30, "the prober to get going")
        apiserver.kubectl("apply", "-f", "-", input=json.dumps(deployment("v2")))
        wait_for(lambda: rolled("v2", 3), 120, "the rollout to v2")
        wait_for(lambda: prober.answers["v2"] >= 20, 30, "v2 answers")
        apiserver.kubectl("scale", f"-n={ROLLOUT_NS}", "deployment/web", "--replicas=1")
        wait_for(lambda: rolled("v2", 1), 60, "the scale-down to 1")
        apiserver.kubectl("scale", f"-n={ROLLOUT_NS}", "deployment/web", "--replicas=3")
        wait_for(lambda: rolled("v2", 3), 60, "the scale-up to 3")
        seen = prober.answers["v2"]
        wait_for(lambda: prober.answers["v2"] >= seen + 20, 30, "more v2 answers")
    assert not prober.errors, f"{len(prober.errors)} of {prober.total} requests failed: {prober.errors[:10]}"
    assert set(prober.answers) == {"v1", "v2"}, prober.answers
    assert prober.total > 100, prober.answers


def test_stopping_the_proxy_removes_its_rules_and_addresses(api, proxy):
    # Runs last in this module: the proxy is gone afterwards.
    assert "GROVE-SERVICES" in iptables_save()
    api.service("last", "LoadBalancer")
    wait_for(lambda: "10.89.255." in subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"],
                                                    capture_output=True, text=True).stdout, 10, "an LB address on lo")  # fmt: skip
    assert proxy.stop() == 0, proxy.log()[-3000:]
    assert "GROVE" not in iptables_save()
    assert (
        "10.89.255."
        not in subprocess.run(
            ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
        ).stdout
    )
    assert (
        Path(f"/proc/sys/net/ipv4/conf/{proxy.bridge}/route_localnet").read_text().strip()
        == proxy.route_localnet
    )


def _has_gateway(dev: str) -> bool:
    out = subprocess.run(["ip", "-4", "addr", "show", "dev", dev], capture_output=True, text=True).stdout
    return f"inet {GATEWAY}/" in out
