"""`grove apiserver` and `grove kubeconfig`: run the API server, and point kubectl at it.

Flag names follow kube-apiserver's (`--etcd-servers`, `--bind-address`,
`--service-cluster-ip-range`, ...), so a Kubernetes operator reads them without a manual.
"""

from __future__ import annotations

import logging
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
@click.option("--bind-address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    "--secure-port",
    "port",
    type=int,
    default=6443,
    show_default=True,
    help="Port to listen on (plain HTTP for now).",
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
    "--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]), show_default=True
)
def apiserver(
    etcd_servers: str,
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
    log_level: str,
) -> None:
    """Run the Kubernetes-compatible API server over grove's store."""
    try:
        servers = parse_endpoints(etcd_servers)
        ports = parse_port_range(service_node_port_range)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    config = ServerConfig(
        etcd_servers=servers,
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
    )
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


def kubeconfig_document(server: str, name: str = "grove", namespace: str = "default") -> dict:
    """A kubeconfig with one cluster, user and context, for a plain-HTTP API server."""
    context: dict = {"cluster": name, "user": name}
    if namespace != "default":
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }


@click.command("kubeconfig")
@click.option("--server", required=True, help="URL of the API server, e.g. http://127.0.0.1:6443.")
@click.option("--name", default="grove", show_default=True, help="Name of the cluster, user and context.")
@click.option("--namespace", default="default", show_default=True, help="The context's default namespace.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to FILE instead of stdout.",
)
def kubeconfig(server: str, name: str, namespace: str, output: str | None) -> None:
    """Print a kubeconfig that points kubectl at a grove API server."""
    if not re.match(r"^https?://[^/\s]+", server):
        raise click.BadParameter(f"{server!r} is not a URL like http://127.0.0.1:6443", param_hint="--server")
    text = yaml.safe_dump(kubeconfig_document(server.rstrip("/"), name, namespace), sort_keys=False)
    if output:
        with open(output, "w") as f:
            f.write(text)
    else:
        click.echo(text, nl=False)
