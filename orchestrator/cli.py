"""`grove apiserver` and `grove kubeconfig`: run the API server, and point kubectl at it.

Flag names follow kube-apiserver's (`--etcd-servers`, `--bind-address`,
`--service-cluster-ip-range`, ...), so a Kubernetes operator reads them without a manual.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sys

import click
import yaml

from kvstore.client import parse_endpoints

from .apiserver.allocators import parse_port_range
from .apiserver.config import ServerConfig

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> int:
    """`1h`, `30m`, `1h30m`, `90s` or plain seconds -> seconds."""
    if text.isdigit():
        return int(text)
    match = _DURATION.match(text)
    if not text or not match:
        raise click.BadParameter(f"{text!r} is not a duration like 1h, 30m or 90s")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


@click.command("apiserver")
@click.option(
    "--etcd-servers",
    default="http://127.0.0.1:2379",
    show_default=True,
    help="Comma-separated client URLs of the store members (grove's store or etcd with --enable-v2).",
)
@click.option("--etcd-cafile", default=None, help="CA bundle to verify the store members' TLS certificates.")
@click.option("--etcd-certfile", default=None, help="Client certificate to present to the store (TLS).")
@click.option("--etcd-keyfile", default=None, help="Key of --etcd-certfile.")
@click.option("--bind-address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    "--secure-port",
    "port",
    type=int,
    default=6443,
    show_default=True,
    help="Port to listen on (HTTPS with --tls-cert-file, plain HTTP without).",
)
@click.option(
    "--advertise-address",
    default=None,
    help="Address other components reach this server at (default: --bind-address).",
)
@click.option(
    "--service-cluster-ip-range",
    default="10.96.0.0/12",
    show_default=True,
    help="CIDR Service cluster IPs come from.",
)
@click.option(
    "--service-node-port-range", default="30000-32767", show_default=True, help="Range NodePorts come from."
)
@click.option("--event-ttl", default="1h", show_default=True, help="How long Events are kept.")
@click.option(
    "--min-request-timeout",
    type=int,
    default=1800,
    show_default=True,
    help="Seconds a watch without timeoutSeconds lasts at least.",
)
@click.option(
    "--watch-cache-size",
    type=int,
    default=10000,
    show_default=True,
    help="Recent events kept per resource for watches (0 disables the cache).",
)
@click.option(
    "--bookmark-interval",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between BOOKMARK events on watches that allow them.",
)
@click.option(
    "--quorum-reads/--no-quorum-reads",
    default=False,
    show_default=True,
    help="Read through the Raft log (linearizable, slower).",
)
@click.option(
    "--tls-cert-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Serving certificate (PEM); with --tls-private-key-file the server speaks HTTPS only.",
)
@click.option("--tls-private-key-file", type=click.Path(dir_okay=False), default=None, help="Its key (PEM).")
@click.option(
    "--client-ca-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Authenticate client certificates signed by this CA: user = CN, groups = O.",
)
@click.option(
    "--token-auth-file",
    type=click.Path(dir_okay=False),
    default=None,
    help='Static bearer tokens, a CSV of token,user,uid,"group1,group2".',
)
@click.option(
    "--anonymous-auth",
    type=click.BOOL,
    default=None,
    help="Serve requests without credentials as system:anonymous "
    "[default: true only when no authentication is configured].",
)
@click.option(
    "--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True
)
def apiserver(
    etcd_servers: str,
    etcd_cafile: str | None,
    etcd_certfile: str | None,
    etcd_keyfile: str | None,
    bind_address: str,
    port: int,
    advertise_address: str | None,
    service_cluster_ip_range: str,
    service_node_port_range: str,
    event_ttl: str,
    min_request_timeout: int,
    watch_cache_size: int,
    bookmark_interval: float,
    quorum_reads: bool,
    tls_cert_file: str | None,
    tls_private_key_file: str | None,
    client_ca_file: str | None,
    token_auth_file: str | None,
    anonymous_auth: bool | None,
    log_level: str,
) -> None:
    """Run the Kubernetes-compatible API server over grove's store.

    Authorization is allow-all: any authenticated user may do anything (no RBAC)."""
    try:
        servers = parse_endpoints(etcd_servers)
        ports = parse_port_range(service_node_port_range)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    config = ServerConfig(
        etcd_servers=servers,
        etcd_cafile=etcd_cafile,
        etcd_certfile=etcd_certfile,
        etcd_keyfile=etcd_keyfile,
        bind_address=bind_address,
        port=port,
        advertise_address=advertise_address,
        service_cluster_ip_range=service_cluster_ip_range,
        service_node_port_range=ports,
        event_ttl=parse_duration(event_ttl),
        min_request_timeout=min_request_timeout,
        watch_cache_size=watch_cache_size,
        bookmark_interval=bookmark_interval,
        quorum_reads=quorum_reads,
        tls_cert_file=tls_cert_file,
        tls_private_key_file=tls_private_key_file,
        client_ca_file=client_ca_file,
        token_auth_file=token_auth_file,
        anonymous_auth=anonymous_auth,
    )
    from kvstore.client import tls_context

    from .apiserver import authn

    try:  # fail on a bad file here, with one line, not in the server's startup
        if etcd_cafile or etcd_certfile or etcd_keyfile:
            tls_context(etcd_cafile, etcd_certfile, etcd_keyfile)
        authn.server_ssl_context(config)
        authn.load_authenticator(config)
    except (authn.AuthnConfigError, ValueError) as exc:
        raise click.UsageError(
            str(exc)
            .replace("--cert-file", "--etcd-certfile")
            .replace("--key-file", "--etcd-keyfile")
            .replace("--ca-file", "--etcd-cafile")
        ) from None
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .apiserver.allocators import ServiceIPRange

    try:
        ServiceIPRange(None, service_cluster_ip_range)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.UsageError(f"--service-cluster-ip-range: {exc}") from None
    from .apiserver.app import run

    try:
        run(config)
    except OSError as exc:
        raise click.ClickException(f"cannot serve on {bind_address}:{port}: {exc.strerror or exc}") from None


def kubeconfig_document(
    server: str,
    name: str = "grove",
    namespace: str = "default",
    *,
    ca_data: bytes | None = None,
    client_cert_data: bytes | None = None,
    client_key_data: bytes | None = None,
    token: str | None = None,
) -> dict:
    """A kubeconfig with one cluster, user and context; PEM data is embedded (`*-data`, base64)."""
    context: dict = {"cluster": name, "user": name}
    if namespace != "default":
        context["namespace"] = namespace
    cluster: dict = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = base64.b64encode(ca_data).decode()
    user: dict = {}
    if client_cert_data:
        user["client-certificate-data"] = base64.b64encode(client_cert_data).decode()
    if client_key_data:
        user["client-key-data"] = base64.b64encode(client_key_data).decode()
    if token:
        user["token"] = token
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }


def _read_pem(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint=flag) from None
    if b"-----BEGIN " not in data:
        raise click.BadParameter(f"{path} is not PEM", param_hint=flag)
    return data


@click.command("kubeconfig")
@click.option("--server", required=True, help="URL of the API server, e.g. https://127.0.0.1:6443.")
@click.option("--name", default="grove", show_default=True, help="Name of the cluster, user and context.")
@click.option("--namespace", default="default", show_default=True, help="The context's default namespace.")
@click.option(
    "--certs-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="A `grove certs` directory: ca.crt and the --client pair are embedded.",
)
@click.option(
    "--client",
    default="admin",
    show_default=True,
    help="Which client pair of --certs-dir: admin, kube-scheduler, kube-controller-manager, kube-proxy, "
    "node-<name>.",
)
@click.option("--ca", type=click.Path(dir_okay=False), default=None, help="CA certificate (PEM) to trust.")
@click.option(
    "--client-cert", type=click.Path(dir_okay=False), default=None, help="Client certificate (PEM)."
)
@click.option("--client-key", type=click.Path(dir_okay=False), default=None, help="Its key (PEM).")
@click.option("--token", default=None, help="Bearer token (a --token-auth-file entry).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to FILE (mode 0600) instead of stdout.",
)
def kubeconfig(
    server: str,
    name: str,
    namespace: str,
    certs_dir: str | None,
    client: str,
    ca: str | None,
    client_cert: str | None,
    client_key: str | None,
    token: str | None,
    output: str | None,
) -> None:
    """Print a kubeconfig that points kubectl at a grove API server (with its CA and credentials)."""
    if not re.match(r"^https?://[^/\s]+", server):
        raise click.BadParameter(
            f"{server!r} is not a URL like https://127.0.0.1:6443", param_hint="--server"
        )
    if certs_dir:
        ca = ca or os.path.join(certs_dir, "ca.crt")
        if not (client_cert or client_key or token):
            client_cert = os.path.join(certs_dir, f"{client}.crt")
            client_key = os.path.join(certs_dir, f"{client}.key")
    if bool(client_cert) != bool(client_key):
        raise click.UsageError("--client-cert and --client-key go together")
    document = kubeconfig_document(
        server.rstrip("/"),
        name,
        namespace,
        ca_data=_read_pem(ca, "--ca") if ca else None,
        client_cert_data=_read_pem(client_cert, "--client-cert") if client_cert else None,
        client_key_data=_read_pem(client_key, "--client-key") if client_key else None,
        token=token,
    )
    text = yaml.safe_dump(document, sort_keys=False)
    if output:
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None
    else:
        click.echo(text, nl=False)
