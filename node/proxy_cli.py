"""`grove proxy` and `grove dns`: the service proxy and cluster DNS as long-running commands.

Both talk to the API server only (list + watch of Services and Endpoints) and stop cleanly on
SIGTERM or Ctrl-C: the proxy then removes every rule and address it installed. Errors a user can
fix (a second proxy on the host, no iptables, a port taken) end in one line, not a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import click

from orchestrator.apiclient import ApiClient
from orchestrator.clientflags import connection, kubeconfig_option


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _run_until_signalled(main: Callable[[], Awaitable[None]]) -> None:
    """Run `main()` under uvloop until it ends or SIGTERM/SIGINT arrives (then cancel it, so its
    `finally` blocks clean up)."""

    async def runner() -> None:
        task = asyncio.ensure_future(main())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        import uvloop

        uvloop.run(runner())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(runner())


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.command("proxy")
@click.option("--server", default="http://127.0.0.1:6443", show_default=True, help="API server URL.")
@kubeconfig_option
@click.option("--node", "node_name", required=False, default=None, help="This node's name (for events).")
@click.option(
    "--lb-pool",
    multiple=True,
    metavar="CIDR|FIRST-LAST",
    help="Addresses for LoadBalancer services (repeatable, comma-separated ok). Without it, "
    "LoadBalancer services keep EXTERNAL-IP <pending>, as on a cluster without a load balancer.",
)
@click.option(
    "--pod-cidr",
    default="10.88.0.0/16",
    show_default=True,
    help="The pod network; traffic from outside it is masqueraded on its way to a pod.",
)
@click.option(
    "--localhost-nodeports/--no-localhost-nodeports",
    default=True,
    show_default=True,
    help="Make node ports answer on 127.0.0.1 (sets route_localnet on the pod bridge).",
)
@click.option(
    "--sync-period",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    help="Seconds between checks that the rules are still installed.",
)
@click.option(
    "--state-dir",
    default="/run/grove",
    show_default=True,
    help="Where host settings the proxy changed are saved (for --cleanup).",
)
@click.option(
    "--cleanup", is_flag=True, help="Remove every rule, address and setting a proxy left, and exit."
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def proxy(
    server: str,
    kubeconfig: str | None,
    node_name: str | None,
    lb_pool: tuple[str, ...],
    pod_cidr: str,
    localhost_nodeports: bool,
    sync_period: float,
    state_dir: str,
    cleanup: bool,
    verbose: bool,
) -> None:
    """Make Services reachable on this host: cluster IPs, node ports and load balancer addresses,
    TCP and UDP, round robin over ready endpoints (iptables DNAT in grove's own chains)."""
    from node.proxy import AddressPool, NetfilterError, Proxier, ProxyConfig, RuleConfig, cleanup_host

    _setup_logging(verbose)
    if cleanup:
        try:
            asyncio.run(cleanup_host(state_dir))
        except NetfilterError as e:
            _fail(str(e))
        click.echo("removed grove's service rules")
        return
    if not node_name:
        _fail("--node is required: the name of the node this proxy runs on")
    try:
        pool = AddressPool.parse(lb_pool)
        RuleConfig(pod_cidr=pod_cidr)
    except ValueError as e:
        _fail(str(e))
    api = connection(server, kubeconfig)
    config = ProxyConfig(
        node_name=node_name,
        pod_cidr=pod_cidr,
        lb_pool=pool,
        localhost_nodeports=localhost_nodeports,
        sync_period=sync_period,
        state_dir=state_dir,
    )

    async def main() -> None:
        async with ApiClient(api, user_agent=f"grove-proxy/{node_name}") as client:
            await Proxier(client, config).run()

    try:
        _run_until_signalled(main)
    except NetfilterError as e:
        _fail(str(e))
    except ExceptionGroup as group:
        matched, rest = group.split(NetfilterError)
        if matched is None or rest is not None:
            raise
        _fail("; ".join(str(e) for e in matched.exceptions))


@click.command("dns")
@click.option("--server", default="http://127.0.0.1:6443", show_default=True, help="API server URL.")
@kubeconfig_option
@click.option(
    "--listen",
    multiple=True,
    default=("10.88.0.1:53",),
    show_default=True,
    metavar="ADDR:PORT",
    help="Where to answer, UDP and TCP (repeatable). The default is the grove bridge's gateway, "
    "which every pod can reach.",
)
@click.option("--domain", default="cluster.local", show_default=True, help="The cluster domain.")
@click.option(
    "--resolv-conf",
    default="/etc/resolv.conf",
    show_default=True,
    help="Where the upstream resolvers for other names come from.",
)
@click.option(
    "--upstream", multiple=True, metavar="ADDR[:PORT]", help="Upstream resolvers (instead of --resolv-conf)."
)
@click.option(
    "--ttl", type=click.IntRange(min=0), default=5, show_default=True, help="TTL of cluster records."
)
@click.option(
    "--publish-service",
    default=None,
    metavar="NAMESPACE/NAME",
    help="Also create a Service (e.g. kube-system/kube-dns) whose cluster IP reaches this server.",
)
@click.option("--service-ip", default=None, help="The cluster IP to ask for with --publish-service.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def dns(
    server: str,
    kubeconfig: str | None,
    listen: tuple[str, ...],
    domain: str,
    resolv_conf: str,
    upstream: tuple[str, ...],
    ttl: int,
    publish_service: str | None,
    service_ip: str | None,
    verbose: bool,
) -> None:
    """Cluster DNS: <svc>.<ns>.svc.cluster.local and friends from the API; other names forwarded."""
    from node.dns import ClusterDNS, parse_address, resolv_conf_nameservers
    from node.dns import publish_service as publish

    _setup_logging(verbose)
    try:
        addresses = [parse_address(a, allow_zero=True) for a in listen]
        upstreams = [parse_address(u) for u in upstream] if upstream else resolv_conf_nameservers(resolv_conf)
    except ValueError as e:
        _fail(str(e))
    api = connection(server, kubeconfig)
    target = None
    if publish_service:
        namespace, sep, name = publish_service.partition("/")
        if not sep or not namespace or not name:
            _fail(f"--publish-service must look like NAMESPACE/NAME, not {publish_service!r}")
        target = (namespace, name)
        if addresses[0][0] in ("0.0.0.0", "::"):
            _fail("--publish-service needs the first --listen address to be a specific IP pods can reach")

    async def main() -> None:
        async with ApiClient(api, user_agent="grove-dns") as client:
            dns_server = ClusterDNS(client, addresses, upstreams, domain=domain, ttl=ttl)
            ready = asyncio.Event()
            task = asyncio.ensure_future(dns_server.run(ready))
            try:
                waiter = asyncio.ensure_future(ready.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if task.done():
                    task.result()
                if target is not None:
                    host, port = dns_server.server.bound[0]
                    ip = await publish(client, target[0], target[1], host, port, service_ip)
                    logging.getLogger("node.dns").info("published as %s/%s, cluster IP %s", *target, ip)
                await task
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    try:
        _run_until_signalled(main)
    except (OSError, ValueError) as e:
        _fail(str(e))


@click.group()
def main() -> None:
    """The service proxy and cluster DNS (also reachable as `grove proxy` and `grove dns`)."""


main.add_command(proxy)
main.add_command(dns)

if __name__ == "__main__":
    main()
