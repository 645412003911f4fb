"""`grove certs`: the certificates a grove cluster needs for TLS, as `kubeadm init phase certs` makes them.

One CA signs an API server serving certificate (SANs: loopback, this host, the first service
cluster IP and the `kubernetes.default.svc...` names) and one client certificate per component,
whose subject says who it is the way the API server reads it: CN = user, O = groups
(`admin` in `system:masters`, `system:kube-scheduler`, `system:node:<name>` in `system:nodes`, ...).

The builders are pure (keys, names and a clock in; certificates out); `write_bundle` and the
command do the file I/O. An existing CA in the directory is reused, so certificates for a new node
or an extra SAN can be added later without re-trusting anything.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kvstore.pki import build_certificate, write_private

PrivateKey = rsa.RSAPrivateKey

CA_VALIDITY = datetime.timedelta(days=3650)  # kubeadm: 10 years for the CA
CERT_VALIDITY = datetime.timedelta(days=365)  # kubeadm: 1 year for the rest
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
CLUSTER_DOMAIN = "cluster.local"


@dataclass
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


@dataclass
class ClientIdentity:
    """Who a client certificate says its holder is: user (CN) and groups (O)."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


@dataclass
class Bundle:
    """Everything `grove certs` writes: the CA, the serving pair and the client pairs by file stem."""

    ca: KeyPair
    apiserver: KeyPair
    clients: dict[str, KeyPair] = field(default_factory=dict)
    servers: dict[str, KeyPair] = field(default_factory=dict)  # other serving pairs (the store's)


def new_key() -> PrivateKey:
    """An RSA 2048 key, kubeadm's default."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def build_ca(
    now: datetime.datetime, common_name: str = "kubernetes", key: PrivateKey | None = None
) -> KeyPair:
    """A self-signed CA (kubeadm names it `kubernetes`), valid ten years from `now`."""
    key = key or new_key()
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = build_certificate(
        name, key.public_key(), name, key, now, now + CA_VALIDITY, ca=True, extensions=[ski]
    )
    return KeyPair(cert, key)


def _leaf(
    ca: KeyPair,
    subject: x509.Name,
    usage: x509.ObjectIdentifier | tuple[x509.ObjectIdentifier, ...],
    now: datetime.datetime,
    key: PrivateKey | None,
    sans: list[x509.GeneralName] | None = None,
    validity: datetime.timedelta = CERT_VALIDITY,
) -> KeyPair:
    key = key or new_key()
    cert = build_certificate(
        subject,
        key.public_key(),
        ca.cert.subject,
        ca.key,
        now,
        min(now + validity, ca.cert.not_valid_after_utc),
        ca=False,
        usages=usage if isinstance(usage, tuple) else [usage],
        sans=sans or (),
        extensions=[x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())],
    )
    return KeyPair(cert, key)


def first_service_ip(service_cidr: str = DEFAULT_SERVICE_CIDR) -> str:
    """The `kubernetes` service's cluster IP: the first address of the service range (10.96.0.1)."""
    net = ipaddress.ip_network(service_cidr, strict=False)
    return str(net.network_address + 1)


def apiserver_sans(
    host_name: str,
    service_cidr: str = DEFAULT_SERVICE_CIDR,
    extra: Iterable[str] = (),
    cluster_domain: str = CLUSTER_DOMAIN,
) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) the serving certificate must name; `extra` entries that parse as
    IP addresses go to the IPs, the rest to the names. Duplicates are dropped, order kept."""
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    names.append(f"kubernetes.default.svc.{cluster_domain}")
    if host_name:
        names.insert(0, host_name)
    ips = ["127.0.0.1", first_service_ip(service_cidr)]
    for san in extra:
        san = san.strip()
        if not san:
            continue
        try:
            ips.append(str(ipaddress.ip_address(san)))
        except ValueError:
            names.append(san)
    return list(dict.fromkeys(names)), list(dict.fromkeys(ips))


def build_serving_cert(
    ca: KeyPair,
    dns_names: Iterable[str],
    ips: Iterable[str],
    now: datetime.datetime,
    common_name: str = "kube-apiserver",
    key: PrivateKey | None = None,
) -> KeyPair:
    """The API server's serving certificate (serverAuth) for these names and addresses."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return _leaf(ca, _name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, now, key, sans)


def build_store_cert(
    ca: KeyPair, host_name: str, now: datetime.datetime, key: PrivateKey | None = None
) -> KeyPair:
    """The store members' certificate (kubeadm's etcd/server): serverAuth for their client port and
    clientAuth for the calls members make to each other's client port; loopback and this host."""
    names = list(dict.fromkeys(n for n in ("localhost", host_name) if n))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    usages = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    return _leaf(ca, _name("kube-etcd"), usages, now, key, sans)


def build_client_cert(
    ca: KeyPair,
    user: str,
    groups: Iterable[str],
    now: datetime.datetime,
    key: PrivateKey | None = None,
) -> KeyPair:
    """A client certificate (clientAuth) for `user` (CN) in `groups` (one O each)."""
    return _leaf(ca, _name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH, now, key)


def cluster_identities(node_names: Iterable[str]) -> list[ClientIdentity]:
    """The client identities of a cluster, named as kubeadm and kube's components name them."""
    out = [
        ClientIdentity("admin", "kubernetes-admin", ("system:masters",)),
        ClientIdentity("kube-scheduler", "system:kube-scheduler"),
        ClientIdentity("kube-controller-manager", "system:kube-controller-manager"),
        ClientIdentity("kube-proxy", "system:kube-proxy"),
        # the API server's identity towards the store (kubeadm's apiserver-etcd-client)
        ClientIdentity("apiserver-etcd-client", "kube-apiserver-etcd-client", ("system:masters",)),
    ]
    for node in dict.fromkeys(node_names):
        out.append(ClientIdentity(f"node-{node}", f"system:node:{node}", ("system:nodes",)))
    return out


def build_bundle(
    now: datetime.datetime,
    host_name: str,
    node_names: Iterable[str] = (),
    extra_sans: Iterable[str] = (),
    service_cidr: str = DEFAULT_SERVICE_CIDR,
    ca: KeyPair | None = None,
) -> Bundle:
    """A CA (or the given one), the API server's serving pair and every client pair."""
    ca = ca or build_ca(now)
    names, ips = apiserver_sans(host_name, service_cidr, extra_sans)
    bundle = Bundle(ca, build_serving_cert(ca, names, ips, now))
    for who in cluster_identities(node_names):
        bundle.clients[who.file_stem] = build_client_cert(ca, who.user, who.groups, now)
    bundle.servers["store"] = build_store_cert(ca, host_name, now)
    return bundle


# --- files ------------------------------------------------------------------------------------


def load_ca(directory: str) -> KeyPair | None:
    """The CA in `directory` (ca.crt + ca.key), or None when there is none."""
    crt, key = os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key")
    if not (os.path.exists(crt) and os.path.exists(key)):
        return None
    with open(crt, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key, "rb") as f:
        private = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"{key} is not an RSA key")
    return KeyPair(cert, private)


def write_bundle(directory: str, bundle: Bundle) -> list[str]:
    """Write `<stem>.crt` / `<stem>.key` for the CA, `apiserver` and each client; the paths written."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    pairs = {"ca": bundle.ca, "apiserver": bundle.apiserver, **bundle.clients, **bundle.servers}
    written = []
    for stem, pair in pairs.items():
        for ext, data in (("crt", pair.cert_pem()), ("key", pair.key_pem())):
            path = os.path.join(directory, f"{stem}.{ext}")
            write_private(path, data)
            written.append(path)
    return written


@click.command("certs")
@click.option(
    "--dir",
    "--cert-dir",
    "directory",
    default="grove-pki",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory to write ca.crt/ca.key, apiserver.*, admin.* and the other client pairs to.",
)
@click.option(
    "--san",
    "sans",
    multiple=True,
    help="Extra name or IP for the API server certificate (repeatable, or comma-separated).",
)
@click.option(
    "--node",
    "nodes",
    multiple=True,
    help="Node name to make a system:node:<name> client certificate for (repeatable) [default: host name].",
)
@click.option("--host-name", default=None, help="This host's name in the SANs [default: the host name].")
@click.option(
    "--service-cluster-ip-range",
    default=DEFAULT_SERVICE_CIDR,
    show_default=True,
    help="Service CIDR; its first address (the `kubernetes` service) goes into the SANs.",
)
def certs(
    directory: str,
    sans: tuple[str, ...],
    nodes: tuple[str, ...],
    host_name: str | None,
    service_cluster_ip_range: str,
) -> None:
    """Make a CA and the API server and client certificates (kubeadm's `init phase certs`).

    An existing ca.crt/ca.key in the directory is reused; the other pairs are made anew.
    """
    host = host_name if host_name is not None else socket.gethostname()
    extra = [s for item in sans for s in item.split(",")]
    try:
        ipaddress.ip_network(service_cluster_ip_range, strict=False)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--service-cluster-ip-range") from None
    try:
        ca = load_ca(directory)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the CA in {directory}: {exc}") from None
    now = datetime.datetime.now(datetime.UTC)
    try:
        bundle = build_bundle(now, host, nodes or [host], extra, service_cluster_ip_range, ca)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--san") from None
    try:
        written = write_bundle(directory, bundle)
    except OSError as exc:
        raise click.ClickException(f"cannot write to {directory}: {exc.strerror or exc}") from None
    click.echo(f"[certs] {'using existing' if ca else 'generated'} CA in {directory}")
    names, ips = apiserver_sans(host, service_cluster_ip_range, extra)
    click.echo(f"[certs] apiserver serving certificate for DNS names {names} and IPs {ips}")
    click.echo(f"[certs] wrote {len(written)} files (mode 0600) to {directory}")
