"""https on the store's client port, with etcd's flags, driven by etcdctl v2, KVClient and `grove kv`.

The test makes its own small PKI with `cryptography` (a CA, a member certificate for 127.0.0.1 and
localhost, a client certificate, and a client certificate from a CA nobody trusts), starts real
3-member grove clusters over https (members still talk Raft over pysyncobj's own peer protocol),
and checks what an etcd user would: etcdctl with --ca-file, client certificates required by
--client-cert-auth, plain http refused on the https port, and member-to-member requests (a
follower forwarding the removal of the leader) over https.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvstore.client import ClusterUnavailable, KVClient, SyncKVClient
from kvstore.localcluster import ClusterTLS, GroveCluster, free_port
from tests import waiting
from tests.kvbackends import require_etcd, require_etcdctl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- a small PKI --------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    rogue_cert: str  # a client certificate signed by a CA the cluster does not trust
    rogue_key: str
    rogue_ca: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    hosts: tuple[str, ...] = (),
    usages: tuple[x509.ObjectIdentifier, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usages:
        b = b.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    return b.sign(issuer_key, hashes.SHA256()), key


def _write(
    directory: str, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[str, str]:
    cert_path, key_path = os.path.join(directory, f"{stem}.pem"), os.path.join(directory, f"{stem}-key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


def make_pki(directory: str) -> Pki:
    """A CA; a member certificate (serverAuth and clientAuth, as members also call each other); clients."""
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    ca_cert, ca_key = _issue("grove test CA", None, ca=True)
    issuer = (ca_cert.subject, ca_key)
    ca, _ = _write(directory, "ca", ca_cert, ca_key)
    server_cert, server_key = _write(
        directory,
        "member",
        *_issue("member", issuer, hosts=("127.0.0.1", "localhost"), usages=(server, client)),
    )
    client_cert, client_key = _write(directory, "client", *_issue("client", issuer, usages=(client,)))
    rogue_ca_cert, rogue_ca_key = _issue("rogue CA", None, ca=True)
    rogue_ca, _ = _write(directory, "rogue-ca", rogue_ca_cert, rogue_ca_key)
    rogue_cert, rogue_key = _write(
        directory, "rogue", *_issue("rogue", (rogue_ca_cert.subject, rogue_ca_key), usages=(client,))
    )
    return Pki(ca, server_cert, server_key, client_cert, client_key, rogue_cert, rogue_key, rogue_ca)


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    d = tempfile.mkdtemp(prefix="grove-kv-pki-")
    try:
        yield make_pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _tls_cluster(pki: Pki, client_cert_auth: bool) -> GroveCluster:
    if client_cert_auth:
        tls = ClusterTLS(
            pki.server_cert, pki.server_key, pki.ca, client_cert_auth=True,
            client_cert_file=pki.client_cert, client_key_file=pki.client_key,
        )  # fmt: skip
    else:  # no --trusted-ca-file: with etcd 3.4 it alone already requires client certificates
        tls = ClusterTLS(pki.server_cert, pki.server_key, ca_file=pki.ca)
    return GroveCluster(3, tls=tls).start(timeout=60)


@pytest.fixture(scope="module")
def https_cluster(pki: Pki) -> Iterator[GroveCluster]:
    """https, server certificate only (no client certificates asked for)."""
    c = _tls_cluster(pki, client_cert_auth=False)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def mtls_cluster(pki: Pki) -> Iterator[GroveCluster]:
    """https with --client-cert-auth: only clients with a certificate from the trusted CA."""
    c = _tls_cluster(pki, client_cert_auth=True)
    try:
        yield c
    finally:
        c.stop()


def etcdctl(endpoints: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    binary = require_etcdctl()  # a skip outside CI, a failure in it
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "2"
    return subprocess.run(
        [binary, "--endpoints", endpoints, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def grove_kv(*args: str, timeout: float = 30, cwd: str = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "GROVE_KV_"))}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "kvstore", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


# --- etcdctl v2 -------------------------------------------------------------------------------


def test_etcdctl_set_get_over_https(https_cluster: GroveCluster, pki: Pki) -> None:
    eps = ",".join(https_cluster.client_urls)
    assert all(u.startswith("https://") for u in https_cluster.client_urls)
    p = etcdctl(eps, "--ca-file", pki.ca, "set", "/tls/etcdctl", "hello")
    assert p.returncode == 0 and p.stdout.strip() == "hello", p.stderr
    p = etcdctl(eps, "--ca-file", pki.ca, "get", "/tls/etcdctl")
    assert p.returncode == 0 and p.stdout.strip() == "hello", p.stderr
    # etcdctl syncs the member list first: the advertised client URLs are the https ones
    p = etcdctl(eps, "--ca-file", pki.ca, "member", "list")
    assert p.returncode == 0 and p.stdout.count("clientURLs=https://") == 3, p.stdout + p.stderr


def test_etcdctl_without_the_ca_is_refused(https_cluster: GroveCluster, pki: Pki) -> None:
    p = etcdctl(https_cluster.client_urls[0], "--ca-file", pki.rogue_ca, "get", "/tls/etcdctl", timeout=60)
    assert p.returncode != 0
    assert "certificate" in p.stderr.lower(), p.stderr


def test_etcdctl_client_certificate_required(mtls_cluster: GroveCluster, pki: Pki) -> None:
    eps = ",".join(mtls_cluster.client_urls)
    without = etcdctl(eps, "--ca-file", pki.ca, "set", "/mtls/k", "v", timeout=60)
    assert without.returncode != 0, without.stdout
    rogue = etcdctl(
        eps, "--ca-file", pki.ca, "--cert-file", pki.rogue_cert, "--key-file", pki.rogue_key,
        "set", "/mtls/k", "v", timeout=60,
    )  # fmt: skip
    assert rogue.returncode != 0, rogue.stdout
    ok = etcdctl(eps, "--ca-file", pki.ca, "--cert-file", pki.client_cert, "--key-file", pki.client_key,
                 "set", "/mtls/k", "v")  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.strip() == "v", ok.stderr
    got = etcdctl(eps, "--ca-file", pki.ca, "--cert-file", pki.client_cert, "--key-file", pki.client_key,
                  "get", "/mtls/k")  # fmt: skip
    assert got.returncode == 0 and got.stdout.strip() == "v", got.stderr


# --- plain http and raw https ------------------------------------------------------------------


def test_plain_http_to_the_https_port_fails(https_cluster: GroveCluster, pki: Pki) -> None:
    url = https_cluster.client_urls[0]
    with pytest.raises(requests.RequestException):
        requests.get(url.replace("https://", "http://") + "/version", timeout=5)
    # the same port answers https, and verifies against the CA
    assert requests.get(url + "/version", timeout=5, verify=pki.ca).json()["etcdserver"]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url + "/version", timeout=5, verify=pki.rogue_ca)


def test_https_port_requires_a_trusted_client_certificate(mtls_cluster: GroveCluster, pki: Pki) -> None:
    url = mtls_cluster.client_urls[0] + "/v2/keys/"
    with pytest.raises(requests.RequestException):
        requests.get(url, timeout=5, verify=pki.ca)
    with pytest.raises(requests.RequestException):
        requests.get(url, timeout=5, verify=pki.ca, cert=(pki.rogue_cert, pki.rogue_key))
    r = requests.get(url, timeout=5, verify=pki.ca, cert=(pki.client_cert, pki.client_key))
    assert r.status_code == 200 and r.json()["node"]["dir"] is True


# --- KVClient -----------------------------------------------------------------------------------


def test_kvclient_over_tls(mtls_cluster: GroveCluster, pki: Pki) -> None:
    async def scenario() -> None:
        c = KVClient(
            mtls_cluster.client_urls, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key,
            retry_deadline=10,
        )  # fmt: skip
        try:
            r = await c.set("/mtls/async", "a")
            assert r.value == "a"
            assert (await c.get("/mtls/async")).value == "a"
            assert len(await c.members()) == 3
            # a watch has its own connection pool, which must use the same TLS settings
            watch = asyncio.ensure_future(c.watch("/mtls/async", index=r.node["modifiedIndex"] + 1))
            await c.set("/mtls/async", "b")
            assert (await asyncio.wait_for(watch, 10)).value == "b"
        finally:
            await c.close()
        no_cert = KVClient(mtls_cluster.client_urls, ca_file=pki.ca, retry_deadline=1.0)
        try:
            with pytest.raises(ClusterUnavailable):
                await no_cert.get("/mtls/async")
        finally:
            await no_cert.close()

    asyncio.run(scenario())


def test_sync_client_and_bad_flags(https_cluster: GroveCluster, pki: Pki) -> None:
    with SyncKVClient(https_cluster.client_urls, ca_file=pki.ca) as c:
        assert c.set("/tls/sync", "s").value == "s"
    with SyncKVClient(https_cluster.client_urls, retry_deadline=1.0) as c:  # system CAs do not know ours
        with pytest.raises(ClusterUnavailable, match="certificate"):
            c.get("/tls/sync")
    with pytest.raises(ValueError, match="--cert-file and --key-file"):
        KVClient(https_cluster.client_urls, cert_file=pki.client_cert)
    with pytest.raises(ValueError, match="--ca-file"):
        KVClient(https_cluster.client_urls, ca_file=os.path.join(ROOT, "no-such-ca.pem"))


def test_write_on_a_follower_over_https(https_cluster: GroveCluster, pki: Pki) -> None:
    leader = https_cluster.leader_index()
    follower = next(i for i in range(3) if i != leader)
    with SyncKVClient([https_cluster.client_urls[follower]], ca_file=pki.ca) as c:
        r = c.set("/tls/follower", "f")
    with SyncKVClient([https_cluster.client_urls[leader]], ca_file=pki.ca) as c:
        assert c.get("/tls/follower", quorum=True).node["modifiedIndex"] == r.node["modifiedIndex"]


# --- grove kv -----------------------------------------------------------------------------------


def test_grove_kv_commands_take_etcdctl_tls_flags(mtls_cluster: GroveCluster, pki: Pki) -> None:
    eps = ",".join(mtls_cluster.client_urls)
    flags = ["--ca-file", pki.ca, "--cert-file", pki.client_cert, "--key-file", pki.client_key]
    p = grove_kv("set", "--endpoints", eps, *flags, "/mtls/cli", "c")
    assert p.returncode == 0 and p.stdout.strip() == "c", p.stderr
    p = grove_kv("get", "--endpoints", eps, *flags, "/mtls/cli")
    assert p.returncode == 0 and p.stdout.strip() == "c", p.stderr
    p = grove_kv("member", "list", "--endpoints", eps, *flags)
    assert p.returncode == 0 and p.stdout.count("clientURLs=https://") == 3, p.stderr
    # without the client certificate: etcdctl's one-line error, no traceback
    p = grove_kv("get", "--endpoints", eps, "--ca-file", pki.ca, "/mtls/cli")
    assert p.returncode == 4 and p.stderr.startswith("Error:  cluster unavailable"), p.stderr
    assert "Traceback" not in p.stderr
    p = grove_kv("get", "--endpoints", eps, "--cert-file", pki.client_cert, "/mtls/cli")
    assert p.returncode == 2 and "--cert-file and --key-file" in p.stderr and "Traceback" not in p.stderr


# --- member to member ---------------------------------------------------------------------------


def test_follower_forwards_removal_of_the_leader_over_https(pki: Pki) -> None:
    """Removing the leader through a follower: the follower forwards the request to the leader's
    https client URL, showing its own member certificate (the cluster requires client certificates)."""
    c = _tls_cluster(pki, client_cert_auth=True)
    try:
        leader = c.leader_index()
        follower = next(i for i in range(3) if i != leader)
        with SyncKVClient(
            [c.client_urls[follower]], ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key
        ) as kv:
            leader_id = next(m["id"] for m in kv.members() if c.client_urls[leader] in m["clientURLs"])
            kv.remove_member(leader_id)
            waiting.wait_for(lambda: len(kv.members()) == 2, "the old leader to leave the member list", 30)
            assert kv.set("/tls/after-removal", "x").value == "x"
        waiting.wait_for(lambda: not c.is_running(leader), "the removed member to shut down", 30)
    finally:
        c.stop()


# --- grove kv cluster --------------------------------------------------------------------------


def test_local_cluster_with_auto_tls(tmp_path) -> None:
    """`grove kv cluster --auto-tls` prints https endpoints; `grove kv` there needs no TLS flags."""
    state = tmp_path / ".grove" / "kv"
    state.mkdir(parents=True)
    (state / "ports.json").write_text(json.dumps([[free_port(), free_port()] for _ in range(3)]))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "GROVE_KV_"))}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = open(tmp_path / "cluster.out", "w+")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvstore", "cluster", "--auto-tls", "--client-cert-auth"],
        stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:

        def up() -> str:
            assert proc.poll() is None, (tmp_path / "cluster.out").read_text()
            text = (tmp_path / "cluster.out").read_text()
            return text if "Ctrl-C stops every member" in text else ""

        text = waiting.wait_for(up, "grove kv cluster --auto-tls to come up", 60)
        assert text.count("client https://127.0.0.1:") == 3, text
        ca = str(state / "tls" / "cert.pem")
        assert "--ca-file .grove/kv/tls/cert.pem" in text, text
        p = grove_kv("set", "/local/tls", "yes", cwd=str(tmp_path))
        assert p.returncode == 0 and p.stdout.strip() == "yes", p.stderr
        eps = (state / "endpoints").read_text()
        p = etcdctl(eps, "--ca-file", ca, "--cert-file", ca, "--key-file", str(state / "tls" / "key.pem"),
                    "get", "/local/tls")  # fmt: skip
        assert p.returncode == 0 and p.stdout.strip() == "yes", p.stderr
        assert (
            etcdctl(eps, "--ca-file", ca, "get", "/local/tls", timeout=60).returncode != 0
        )  # no client cert
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()


# --- serve's flags ------------------------------------------------------------------------------


def test_https_url_without_a_certificate_is_one_clear_error(tmp_path) -> None:
    port = free_port()
    p = grove_kv(
        "serve", "--data-dir", str(tmp_path / "m"), "--listen-client-urls", f"https://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert (
        f"TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:{port}"
        in (p.stderr)
    )
    p = grove_kv("serve", "--data-dir", str(tmp_path / "m"), "--client-cert-auth", "--auto-tls")
    assert p.returncode == 2 and "--client-cert-auth needs --trusted-ca-file" in p.stderr


def test_auto_tls_member(tmp_path) -> None:
    """--auto-tls: a self-signed certificate in DATA_DIR/fixtures/client, as etcd places it."""
    data = tmp_path / "auto"
    client, peer = free_port(), free_port()
    url = f"https://127.0.0.1:{client}"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(tmp_path / "auto.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvstore", "serve", "--name", "auto", "--data-dir", str(data), "--auto-tls",
         "--listen-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{peer}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        cert = data / "fixtures" / "client" / "cert.pem"

        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "auto.log").read_text()
            return cert.exists() and requests.get(url + "/health", timeout=2, verify=str(cert)).ok

        waiting.wait_for(
            healthy, "the --auto-tls member to serve https", 30, errors=(requests.RequestException,)
        )
        with SyncKVClient([url], ca_file=str(cert)) as c:
            assert c.set("/auto", "tls").value == "tls"
    finally:
        _stop(proc)
        log.close()


# --- side by side with etcd 3.4 -----------------------------------------------------------------


def _start_member(kind: str, directory: str, pki: Pki, *tls_flags: str) -> tuple[subprocess.Popen, str]:
    """One etcd or grove member with the same certificate flags; returns (process, client URL)."""
    client, peer = free_port(), free_port()
    url, peer_url = f"https://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    common = [
        "--name", "one", "--data-dir", os.path.join(directory, "data"),
        "--listen-client-urls", url, "--advertise-client-urls", url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"one={peer_url}",
        "--cert-file", pki.server_cert, "--key-file", pki.server_key, *tls_flags,
    ]  # fmt: skip
    if kind == "etcd":
        argv = [require_etcd(), "--enable-v2", *common]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    else:
        argv = [sys.executable, "-m", "kvstore", "serve", *common]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(os.path.join(directory, "member.log"), "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log.close()
    return proc, url


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _answers(url: str, **kw) -> str:
    """ "200", or the kind of failure: "tls" (handshake refused) or "closed" (no HTTP answer)."""
    try:
        return str(requests.get(url + "/v2/keys/", timeout=5, **kw).status_code)
    except requests.exceptions.SSLError:
        return "tls"
    except requests.exceptions.ConnectionError:
        return "closed"


@pytest.mark.parametrize("kind", ["etcd", "grove"])
@pytest.mark.parametrize("flags", [(), ("--trusted-ca-file",), ("--trusted-ca-file", "--client-cert-auth")])
def test_same_answers_as_etcd(kind: str, flags: tuple[str, ...], pki: Pki, tmp_path) -> None:
    """etcd 3.4 is the reference: a trusted CA alone already requires client certificates."""
    tls_flags = [a for f in flags for a in ((f, pki.ca) if f == "--trusted-ca-file" else (f,))]
    proc, url = _start_member(kind, str(tmp_path), pki, *tls_flags)
    good = {"verify": pki.ca, "cert": (pki.client_cert, pki.client_key)}
    try:

        def serving() -> bool:
            assert proc.poll() is None, (tmp_path / "member.log").read_text()[-2000:]
            return requests.get(url + "/health", timeout=2, **good).ok

        waiting.wait_for(serving, f"{kind} to serve https", 30, errors=(requests.RequestException,))
        # A refused handshake: etcd sends a "bad certificate" alert ("tls"); grove's event loop
        # closes the connection without flushing the alert ("closed"). Either way: no answer.
        refused = {"tls", "closed"}
        no_cert = _answers(url, verify=pki.ca)
        rogue = _answers(url, verify=pki.ca, cert=(pki.rogue_cert, pki.rogue_key))
        if flags:
            assert no_cert in refused and rogue in refused
        else:
            assert no_cert == rogue == "200"
        assert _answers(url, verify=pki.rogue_ca) == "tls"  # the client refuses the member
        assert _answers(url.replace("https://", "http://")) == "closed"
        assert _answers(url, **good) == "200"  # and the member still serves
    finally:
        _stop(proc)
