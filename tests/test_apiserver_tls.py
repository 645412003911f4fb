"""HTTPS and authentication of the API server, end to end, plus the pure parts of authn.py.

One store cluster and one API server for the module, started with a `grove certs` bundle:
`--tls-cert-file/--tls-private-key-file`, `--client-ca-file` and `--token-auth-file` (so anonymous
requests are refused). kubectl 1.32, the kubernetes Python client, plain `requests`, and a real
scheduler and hollow node started with `--kubeconfig` talk to it.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import requests
import yaml
from dnslib import QTYPE, DNSRecord

from grove.certs import build_bundle, write_bundle
from kvstore.localcluster import free_port
from orchestrator.apiclient import ApiClient, ClientConfig, KubeconfigError, parse_kubeconfig
from orchestrator.apiserver import authn
from orchestrator.apiserver.config import ServerConfig
from orchestrator.apiserver.errors import ApiError
from tests import waiting
from tests.apiserver_fixture import ROOT, ApiServerProcess, _env, start_apiserver, stop_apiserver

TOKENS = '# token,user,uid,"groups"\ntok-alice,alice,1001,"dev,ops"\ntok-bob,bob,1002\n'
NODE = "tls-node-0"


# --- pure logic -------------------------------------------------------------------------------


def test_token_csv_parses_users_and_groups() -> None:
    tokens = authn.parse_token_csv(TOKENS)
    assert tokens["tok-alice"] == authn.UserInfo("alice", "1001", ("dev", "ops", "system:authenticated"))
    assert tokens["tok-bob"].groups == ("system:authenticated",)
    assert set(tokens) == {"tok-alice", "tok-bob"}


@pytest.mark.parametrize("text", ["tok,alice\n", ",alice,1\n", "t,a,1\nt,b,2\n"])
def test_token_csv_rejects_bad_lines(text: str) -> None:
    with pytest.raises(authn.AuthnConfigError, match="line"):
        authn.parse_token_csv(text)


def test_peercert_subject_is_user_and_groups() -> None:
    peercert = {
        "subject": (
            (("organizationName", "system:nodes"),),
            (("organizationName", "extra"),),
            (("commonName", "system:node:n1"),),
        )
    }
    user = authn.user_from_peercert(peercert)
    assert user == authn.UserInfo("system:node:n1", "", ("system:nodes", "extra", "system:authenticated"))
    assert authn.user_from_peercert({"subject": ((("organizationName", "x"),),)}) is None
    assert authn.user_from_peercert(None) is None


def test_authenticator_order_and_anonymous() -> None:
    tokens = authn.parse_token_csv(TOKENS)
    cert = {"subject": ((("commonName", "carol"),),)}
    strict = authn.Authenticator(tokens, client_certs=True, anonymous=False)
    assert strict.authenticate(None, cert).name == "carol"
    assert strict.authenticate("Bearer tok-bob", None).name == "bob"
    for header in (None, "Bearer nope", "Basic Zm9vOmJhcg=="):
        with pytest.raises(ApiError) as info:
            strict.authenticate(header, None)
        assert info.value.code == 401 and info.value.reason == "Unauthorized"
    lenient = authn.Authenticator(tokens, client_certs=False, anonymous=True)
    assert lenient.authenticate(None, None) == authn.ANONYMOUS
    with pytest.raises(ApiError) as wrong:  # a wrong token is refused even with anonymous on
        lenient.authenticate("Bearer nope", None)
    assert wrong.value.code == 401


def test_anonymous_default_follows_configured_authentication(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert not authn.load_authenticator(ServerConfig()).enabled  # plain setup: everyone anonymous
    tokens = tmp_path / "tokens.csv"
    tokens.write_text(TOKENS)
    assert authn.load_authenticator(ServerConfig(token_auth_file=str(tokens))).anonymous is False
    opened = authn.load_authenticator(ServerConfig(token_auth_file=str(tokens), anonymous_auth=True))
    assert opened.anonymous is True
    with pytest.raises(authn.AuthnConfigError, match="--client-ca-file needs HTTPS"):
        authn.load_authenticator(ServerConfig(client_ca_file=str(tokens)))
    with pytest.raises(authn.AuthnConfigError, match="cannot read"):
        authn.load_authenticator(ServerConfig(token_auth_file=str(tmp_path / "missing.csv")))
    with pytest.raises(authn.AuthnConfigError, match="go together"):
        authn.server_ssl_context(ServerConfig(tls_cert_file=str(tokens)))


def test_parse_kubeconfig_data_files_and_token() -> None:
    files = {"/pki/ca.crt": b"CA", "/pki/admin.crt": b"CERT", "/pki/admin.key": b"KEY"}
    doc = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [
            {"name": "k", "cluster": {"server": "https://h:6443/", "certificate-authority": "/pki/ca.crt"}}
        ],
        "users": [
            {"name": "u", "user": {"client-certificate": "/pki/admin.crt", "client-key-data": "S0VZ"}},
        ],
    }
    config = parse_kubeconfig(doc, files.__getitem__)
    assert config == ClientConfig("https://h:6443", ca_data=b"CA", cert_data=b"CERT", key_data=b"KEY")
    doc["users"] = [{"name": "u", "user": {"token": "t0k"}}]
    assert parse_kubeconfig(doc, files.__getitem__).token == "t0k"
    with pytest.raises(KubeconfigError, match="no context named 'other'"):
        parse_kubeconfig(doc, files.__getitem__, context="other")


# --- a real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server() -> Iterator[ApiServerProcess]:
    pki = tempfile.mkdtemp(prefix="grove-pki-")
    try:
        bundle = build_bundle(datetime.datetime.now(datetime.UTC), "localhost", [NODE])
        write_bundle(pki, bundle)
        with open(os.path.join(pki, "tokens.csv"), "w") as f:
            f.write(TOKENS)
        args = [
            "--tls-cert-file", os.path.join(pki, "apiserver.crt"),
            "--tls-private-key-file", os.path.join(pki, "apiserver.key"),
            "--client-ca-file", os.path.join(pki, "ca.crt"),
            "--token-auth-file", os.path.join(pki, "tokens.csv"),
        ]  # fmt: skip
        server = start_apiserver(args, certs_dir=pki)
        try:
            yield server
        finally:
            stop_apiserver(server)
    finally:
        shutil.rmtree(pki, ignore_errors=True)


def kubeconfig_for(server: ApiServerProcess, name: str, *args: str) -> str:
    """Write a kubeconfig with `grove kubeconfig ... args` into the server's work dir."""
    path = os.path.join(server.workdir, f"{name}.kubeconfig")
    subprocess.run(
        [sys.executable, "-m", "orchestrator", "kubeconfig", "--server", server.url, "-o", path, *args],
        check=True,
        env=_env(),
        cwd=ROOT,
        capture_output=True,
    )
    return path


def test_kubectl_admin_works_and_whoami_shows_the_certificate_user(tls_server: ApiServerProcess) -> None:
    assert oct(os.stat(tls_server.kubeconfig).st_mode & 0o777) == "0o600"
    names = tls_server.kubectl("get", "ns", "-o", "name").stdout.split()
    assert "namespace/default" in names and "namespace/kube-system" in names
    review = json.loads(tls_server.kubectl("auth", "whoami", "-o", "json").stdout)
    assert review["kind"] == "SelfSubjectReview"
    assert review["status"]["userInfo"]["username"] == "kubernetes-admin"
    assert review["status"]["userInfo"]["groups"] == ["system:masters", "system:authenticated"]
    table = tls_server.kubectl("auth", "whoami").stdout
    assert "kubernetes-admin" in table and "system:masters" in table


def test_kubectl_without_credentials_is_unauthorized(tls_server: ApiServerProcess) -> None:
    path = kubeconfig_for(tls_server, "nobody", "--ca", os.path.join(tls_server.certs_dir or "", "ca.crt"))
    # With no user at all kubectl would prompt for a password on the terminal; a bare user name
    # (no password, no certificate, no token) is a request grove cannot authenticate.
    with open(path) as f:
        doc = yaml.safe_load(f)
    doc["users"][0]["user"] = {"username": "nobody"}
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)
    result = tls_server.kubectl("--kubeconfig", path, "get", "ns", check=False)
    assert result.returncode == 1
    assert "You must be logged in to the server (Unauthorized)" in result.stderr
    ca = os.path.join(tls_server.certs_dir or "", "ca.crt")
    bare = requests.get(tls_server.url + "/api/v1/namespaces", verify=ca)
    assert bare.status_code == 401 and bare.json()["reason"] == "Unauthorized"


def test_token_user_and_wrong_token(tls_server: ApiServerProcess) -> None:
    ca = os.path.join(tls_server.certs_dir or "", "ca.crt")
    path = kubeconfig_for(tls_server, "alice", "--ca", ca, "--token", "tok-alice")
    review = json.loads(tls_server.kubectl("--kubeconfig", path, "auth", "whoami", "-o", "json").stdout)
    assert review["status"]["userInfo"] == {
        "username": "alice",
        "uid": "1001",
        "groups": ["dev", "ops", "system:authenticated"],
    }
    tls_server.kubectl("--kubeconfig", path, "create", "namespace", "alice-ns")
    ok = requests.get(
        tls_server.url + "/api/v1/namespaces/alice-ns",
        headers={"Authorization": "Bearer tok-alice"},
        verify=ca,
    )
    assert ok.status_code == 200 and ok.json()["metadata"]["name"] == "alice-ns"
    bad = requests.get(
        tls_server.url + "/api/v1/namespaces", headers={"Authorization": "Bearer nope"}, verify=ca
    )
    assert bad.status_code == 401
    assert bad.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert requests.get(tls_server.url + "/metrics", verify=ca).status_code == 401


def test_health_stays_open_and_plain_http_fails(tls_server: ApiServerProcess) -> None:
    ca = os.path.join(tls_server.certs_dir or "", "ca.crt")
    for path in ("/healthz", "/livez", "/readyz", "/readyz/etcd", "/version"):
        resp = requests.get(tls_server.url + path, verify=ca, headers={"Authorization": "Bearer nope"})
        assert resp.status_code == 200, (path, resp.text)
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{tls_server.port}/healthz", timeout=5)
    with pytest.raises(requests.exceptions.SSLError):  # and a client that does not trust the CA stops
        requests.get(tls_server.url + "/healthz", timeout=5)


def test_kubernetes_python_client_with_kubeconfig(tls_server: ApiServerProcess) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=tls_server.kubeconfig)
    try:
        names = [ns.metadata.name for ns in client.CoreV1Api(api_client).list_namespace().items]
        assert "kube-system" in names
        review = client.AuthenticationV1Api(api_client).create_self_subject_review(
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        )
        assert review.status.user_info.username == "kubernetes-admin"
    finally:
        api_client.close()


def test_apiclient_from_kubeconfig(tls_server: ApiServerProcess) -> None:
    async def main() -> tuple[dict, str]:
        async with ApiClient.from_kubeconfig(tls_server.kubeconfig) as api:
            ns = await api.get("", "v1", "namespaces", "default")
            review = await api.request("POST", authn.SELF_SUBJECT_REVIEW_PATH, body={})
            return ns, review["status"]["userInfo"]["username"]

    ns, user = asyncio.run(main())
    assert ns["metadata"]["name"] == "default" and user == "kubernetes-admin"


def _proc(workdir: str, name: str, module: str, *args: str) -> tuple[subprocess.Popen, str]:
    log_path = os.path.join(workdir, f"{name}.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_env(),
            cwd=ROOT,
        )
    return proc, log_path


def _stop(procs: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _alive(procs: list[tuple[subprocess.Popen, str]]) -> None:
    for proc, log in procs:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                pytest.fail(f"{log} exited {proc.returncode}:\n{f.read()[-3000:]}")


def test_components_with_kubeconfig_run_a_deployment(tls_server: ApiServerProcess) -> None:
    """Controllers, scheduler and a hollow node started with only --kubeconfig (each with its own
    client certificate) take a Deployment to a running pod."""
    pki = tls_server.certs_dir or ""
    work = tls_server.workdir
    kc = {
        who: kubeconfig_for(tls_server, who, "--certs-dir", pki, "--client", who)
        for who in ("kube-scheduler", "kube-controller-manager", f"node-{NODE}")
    }
    procs: list[tuple[subprocess.Popen, str]] = []
    try:
        procs.append(
            _proc(work, "scheduler", "orchestrator.scheduler.cli", "--kubeconfig", kc["kube-scheduler"],
                  "--no-leader-elect")
        )  # fmt: skip
        procs.append(
            _proc(work, "controllers", "orchestrator.controllers.cli", "--kubeconfig",
                  kc["kube-controller-manager"], "--no-leader-elect", "--port", "0")
        )  # fmt: skip
        procs.append(
            _proc(work, "node", "node.cli", "--kubeconfig", kc[f"node-{NODE}"], "--runtime", "fake",
                  "--name", NODE, "--node-ip", "127.0.0.1", "--port", "0",
                  "--root-dir", os.path.join(work, "node-root"))
        )  # fmt: skip
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "tls-web", "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "tls-web"}},
                "template": {
                    "metadata": {"labels": {"app": "tls-web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }
        tls_server.kubectl("apply", "-f", "-", input=json.dumps(deployment))

        def running_on_node() -> bool:
            out = tls_server.kubectl("get", "pods", "-l", "app=tls-web", "-o", "json").stdout
            pods = json.loads(out)["items"]
            return any(
                p["status"].get("phase") == "Running" and p["spec"].get("nodeName") == NODE for p in pods
            )

        waiting.wait_for(
            running_on_node,
            "the deployment's pod to be created, scheduled and running on the hollow node",
            check=lambda: _alive(procs),
        )
    finally:
        _stop(procs)


def test_dns_with_kubeconfig(tls_server: ApiServerProcess) -> None:
    """`grove dns --kubeconfig` answers from the cluster it reads over TLS."""
    port = free_port()
    kc = kubeconfig_for(
        tls_server, "dns", "--certs-dir", tls_server.certs_dir or "", "--client", "kube-proxy"
    )
    procs = [
        _proc(tls_server.workdir, "dns", "node.proxy_cli", "dns", "--kubeconfig", kc,
              "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9")
    ]  # fmt: skip

    def answer() -> list[str]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.sendto(
                DNSRecord.question("kubernetes.default.svc.cluster.local", "A").pack(), ("127.0.0.1", port)
            )
            try:
                reply = DNSRecord.parse(s.recv(4096))
            except TimeoutError:
                return []
        return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]

    try:
        got = waiting.wait_for(answer, "an A record for the kubernetes service", check=lambda: _alive(procs))
        assert got == ["10.96.0.1"]
    finally:
        _stop(procs)
