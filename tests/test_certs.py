"""`grove certs`: the CA, the API server's serving certificate and the client certificates.

Pure builders are checked field by field (SANs, key usages, subjects, the chain); the command is
run through click's runner into a temp directory (files 0600, an existing CA reused), and an
in-process TLS handshake shows Python's ssl accepts the chain for both server and client roles.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import threading

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from grove.certs import (
    apiserver_sans,
    build_bundle,
    build_ca,
    build_client_cert,
    certs,
    first_service_ip,
    write_bundle,
)

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def bundle():  # type: ignore[no-untyped-def]
    return build_bundle(NOW, "grove-host", ["n1", "n2"], ["10.0.0.5", "api.example.com"])


def _ext(cert: x509.Certificate, kind: type) -> object:
    return cert.extensions.get_extension_for_class(kind).value


def test_first_service_ip() -> None:
    assert first_service_ip() == "10.96.0.1"
    assert first_service_ip("10.100.0.0/16") == "10.100.0.1"


def test_apiserver_sans_defaults_and_extras() -> None:
    names, ips = apiserver_sans("h1", extra=["192.168.1.9", "api.example.com", "h1", " ", "::1"])
    assert names == [
        "h1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "api.example.com",
    ]
    assert ips == ["127.0.0.1", "10.96.0.1", "192.168.1.9", "::1"]


def test_serving_cert_names_and_usage(bundle) -> None:  # type: ignore[no-untyped-def]
    cert = bundle.apiserver.cert
    san = _ext(cert, x509.SubjectAlternativeName)
    assert set(san.get_values_for_type(x509.DNSName)) >= {
        "grove-host",
        "localhost",
        "kubernetes.default.svc.cluster.local",
        "api.example.com",
    }
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "10.96.0.1",
        "10.0.0.5",
    }
    usage = _ext(cert, x509.KeyUsage)
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _ext(cert, x509.BasicConstraints).ca is False
    assert cert.not_valid_after_utc - NOW <= datetime.timedelta(days=365)


def test_ca_is_a_ca_and_signs_everything(bundle) -> None:  # type: ignore[no-untyped-def]
    ca = bundle.ca.cert
    assert _ext(ca, x509.BasicConstraints).ca is True
    assert _ext(ca, x509.KeyUsage).key_cert_sign
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    for pair in [bundle.apiserver, *bundle.clients.values()]:
        pair.cert.verify_directly_issued_by(ca)
        assert pair.cert.public_key().public_numbers() == pair.key.public_key().public_numbers()
    other = build_ca(NOW)
    with pytest.raises(InvalidSignature):  # same issuer name, another key
        bundle.apiserver.cert.verify_directly_issued_by(other.cert)


def test_client_subjects_as_kube_reads_them(bundle) -> None:  # type: ignore[no-untyped-def]
    def who(stem: str) -> tuple[str, list[str]]:
        subject = bundle.clients[stem].cert.subject
        cn = subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return cn, [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]

    assert who("admin") == ("kubernetes-admin", ["system:masters"])
    assert who("kube-scheduler") == ("system:kube-scheduler", [])
    assert who("kube-controller-manager") == ("system:kube-controller-manager", [])
    assert who("kube-proxy") == ("system:kube-proxy", [])
    assert who("node-n1") == ("system:node:n1", ["system:nodes"])
    assert who("node-n2") == ("system:node:n2", ["system:nodes"])
    for pair in bundle.clients.values():
        assert list(_ext(pair.cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_store_cert_serves_loopback_and_calls_other_members(bundle) -> None:  # type: ignore[no-untyped-def]
    cert = bundle.servers["store"].cert
    sans = _ext(cert, x509.SubjectAlternativeName)
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "grove-host"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    usages = list(_ext(cert, x509.ExtendedKeyUsage))
    assert usages == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    client = bundle.clients["apiserver-etcd-client"].cert
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kube-apiserver-etcd-client"


def test_a_client_cert_with_several_groups() -> None:
    ca = build_ca(NOW)
    cert = build_client_cert(ca, "jane", ["dev", "ops"], NOW).cert
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["dev", "ops"]


def test_tls_handshake_with_the_bundle(tmp_path, bundle) -> None:  # type: ignore[no-untyped-def]
    """Python's ssl verifies the chain both ways: server by name, client by the CA."""
    write_bundle(str(tmp_path), bundle)
    p = lambda name: str(tmp_path / name)  # noqa: E731
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(p("apiserver.crt"), p("apiserver.key"))
    server_ctx.load_verify_locations(p("ca.crt"))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=p("ca.crt"))
    client_ctx.load_cert_chain(p("node-n1.crt"), p("node-n1.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen["peer"] = tls.getpeercert()
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls:
                assert tls.recv(2) == b"ok"
    finally:
        thread.join(timeout=10)
        listener.close()
    assert (("commonName", "system:node:n1"),) in seen["peer"]["subject"]


def test_certs_command_writes_private_files_and_reuses_the_ca(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "pki")
    runner = CliRunner()
    result = runner.invoke(certs, ["--dir", out, "--node", "w1", "--san", "10.1.2.3", "--host-name", "h"])
    assert result.exit_code == 0, result.output
    files = sorted(os.listdir(out))
    assert "ca.crt" in files and "apiserver.key" in files and "node-w1.crt" in files and "admin.key" in files
    for name in files:
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o600, name
    with open(os.path.join(out, "ca.crt"), "rb") as f:
        first_ca = f.read()
    with open(os.path.join(out, "apiserver.crt"), "rb") as f:
        first_server = f.read()
    result = runner.invoke(certs, ["--dir", out, "--san", "extra.example.com", "--host-name", "h"])
    assert result.exit_code == 0, result.output
    assert "using existing CA" in result.output
    with open(os.path.join(out, "ca.crt"), "rb") as f:
        assert f.read() == first_ca
    with open(os.path.join(out, "apiserver.crt"), "rb") as f:
        server_pem = f.read()
    assert server_pem != first_server  # made anew, with the new SAN
    server = x509.load_pem_x509_certificate(server_pem)
    assert "extra.example.com" in _ext(server, x509.SubjectAlternativeName).get_values_for_type(x509.DNSName)
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(first_ca))


def test_certs_command_bad_input_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(certs, ["--dir", str(tmp_path), "--service-cluster-ip-range", "nope"])
    assert result.exit_code == 2 and "--service-cluster-ip-range" in result.output
    assert "Traceback" not in result.output
