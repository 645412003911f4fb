"""`grove node`: run a node agent (or hundreds of hollow ones) against an API server.

    grove node --server http://127.0.0.1:6443 --name node-1
    grove node --server http://127.0.0.1:6443 --runtime fake --count 200 --name-prefix hollow-

Flag names follow the kubelet's where there is one (`--node-ip`, `--address`, `--port`,
`--root-dir`, `--node-labels`, `--sync-frequency`, `--node-status-update-frequency`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click

from orchestrator.clientflags import connection, kubeconfig_option

_LABEL = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_./]*)=([-A-Za-z0-9_.]*)$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = _LABEL.match(part)
        if not m:
            raise click.BadParameter(f"{part!r} is not key=value")
        out[m.group(1)] = m.group(2)
    return out


def _quantity(kind: str, value: str | None) -> str | None:
    if value is None:
        return None
    from node.runtime.spec import parse_quantity

    try:
        parse_quantity(value)
    except ValueError as e:
        raise click.BadParameter(f"{kind}: {e}") from None
    return value


@click.command("node")
@click.option("--server", default=None, help="URL of the API server, e.g. http://127.0.0.1:6443.")
@kubeconfig_option
@click.option("--name", default=None, help="Node name (default: this host's name).")
@click.option("--runtime", type=click.Choice(["docker", "fake"]), default="docker", show_default=True)
@click.option(
    "--count",
    type=click.IntRange(1, 5000),
    default=1,
    show_default=True,
    help="Nodes in this process (fake runtime).",
)
@click.option(
    "--name-prefix",
    default="hollow-",
    show_default=True,
    help="With --count: nodes are <prefix>0 .. <prefix>N-1.",
)
@click.option("--cpu", default=None, help="cpu capacity to report (default: this host's cores).")
@click.option("--memory", default=None, help="Memory capacity to report, e.g. 8Gi (default: this host's).")
@click.option(
    "--pods", type=click.IntRange(1, 10000), default=110, show_default=True, help="Most pods this node takes."
)
@click.option(
    "--node-ip", default=None, help="InternalIP to report and hostIP of pods (default: the default route's)."
)
@click.option("--address", default=None, help="Address the agent's endpoint listens on (default: --node-ip).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=10250,
    show_default=True,
    help="Port of the agent's endpoint (0: any).",
)
@click.option(
    "--root-dir",
    type=click.Path(file_okay=False),
    default="/var/lib/grove/node",
    show_default=True,
    help="Pod volumes live here.",
)
@click.option("--node-labels", default="", help="Extra labels, key=value,key2=value2.")
@click.option(
    "--node-lease-duration-seconds", "lease_duration", type=click.IntRange(1), default=40, show_default=True
)
@click.option(
    "--node-status-update-frequency",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between status checks.",
)
@click.option(
    "--sync-frequency",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between full resyncs of every pod.",
)
@click.option("--housekeeping-interval", type=float, default=10.0, show_default=True, hidden=True)
@click.option("--crashloop-backoff-base", type=float, default=10.0, show_default=True, hidden=True)
@click.option("--crashloop-backoff-max", type=float, default=300.0, show_default=True, hidden=True)
@click.option("--image-pull-backoff-base", type=float, default=10.0, show_default=True, hidden=True)
@click.option("--image-pull-backoff-max", type=float, default=300.0, show_default=True, hidden=True)
@click.option("--network", default=None, help="Docker network of the pods (default: grove).")
@click.option("--pod-subnet", default=None, help="Subnet of that network (default: 10.88.0.0/16).")
@click.option("--cluster-dns", default="", help="Comma-separated DNS server IPs for ClusterFirst pods.")
@click.option("--cluster-domain", default="cluster.local", show_default=True)
@click.option("--no-events", is_flag=True, help="Record no Events (the fake runtime records none anyway).")
@click.option(
    "-v", "--verbose", count=True, help="More logging (-v grove's debug messages, -vv everything's)."
)
def node(**opts: Any) -> None:
    """Run the node agent: register the Node, run the pods bound to it, serve logs, exec and stats."""
    from node.agent import AgentConfig, detect_node_ip, hollow_machine_id, host_capacity
    from node.runtime.types import EngineUnavailableError, NetworkError

    verbose = opts["verbose"]
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("grove").setLevel(logging.DEBUG if verbose else logging.INFO)
    opts["connection"] = connection(opts["server"], opts["kubeconfig"])
    fake = opts["runtime"] == "fake"
    count = opts["count"]
    if count > 1 and not fake:
        raise click.UsageError("--count > 1 needs --runtime fake: one Docker Engine belongs to one node")
    if count > 1:
        names = [f"{opts['name_prefix']}{i}" for i in range(count)]
    else:
        names = [opts["name"] or (f"{opts['name_prefix']}0" if fake else socket.gethostname().lower())]
    for n in names:
        if not _NAME.match(n) or len(n) > 253:
            raise click.BadParameter(
                f"{n!r} is not a valid node name (lowercase letters, digits, '-' and '.')",
                param_hint="--name",
            )
    node_ip = opts["node_ip"] or detect_node_ip()
    root_dir = Path(opts["root_dir"])
    capacity = host_capacity(root_dir if root_dir.exists() else "/")
    if fake and not opts["cpu"] and not opts["memory"]:
        capacity.update(cpu="4", memory="16Gi")  # hollow nodes claim a modest, uniform machine
    capacity["cpu"] = _quantity("--cpu", opts["cpu"]) or capacity["cpu"]
    capacity["memory"] = _quantity("--memory", opts["memory"]) or capacity["memory"]
    capacity["pods"] = str(opts["pods"])
    labels = _labels(opts["node_labels"])
    if fake:
        labels.setdefault("grove.io/hollow", "true")
    configs = []
    from node.fake import fake_pod_subnet

    for i, n in enumerate(names):
        configs.append(
            AgentConfig(
                name=n,
                node_ip=node_ip,
                port=opts["port"],
                capacity=dict(capacity),
                labels=labels,
                root_dir=root_dir,
                lease_duration=opts["lease_duration"],
                status_update_frequency=opts["node_status_update_frequency"],
                sync_frequency=opts["sync_frequency"],
                housekeeping_interval=opts["housekeeping_interval"],
                crashloop_backoff=(opts["crashloop_backoff_base"], opts["crashloop_backoff_max"]),
                image_pull_backoff=(opts["image_pull_backoff_base"], opts["image_pull_backoff_max"]),
                workers=1 if fake else 4,
                events=not (fake or opts["no_events"]),
                pod_cidr=str(fake_pod_subnet(i)) if fake else "",
                machine_id=hollow_machine_id(n) if fake else "",
            )
        )
    try:
        _run(_serve(opts, configs, fake, opts["address"] or node_ip))
    except (EngineUnavailableError, NetworkError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(
            f"cannot listen on {opts['address'] or node_ip}:{opts['port']}: {e.strerror or e}"
        ) from None


def _run(coro: Any) -> None:
    """One event loop for the process: uvloop's when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        asyncio.run(coro)
        return
    uvloop.run(coro)


async def _serve(opts: dict[str, Any], configs: list[Any], fake: bool, address: str) -> None:
    from node.agent import NodeHost
    from node.server import AgentServer
    from orchestrator.apiclient import ApiClient

    loop = asyncio.get_running_loop()
    client = ApiClient(opts["connection"], user_agent="grove-node/v1.32.0")
    host_ref: dict[str, Any] = {}

    def runtime_for(index: int, config: Any) -> Any:
        if fake:
            from node.fake import FakeRuntime

            def on_exit(namespace: str, name: str) -> None:
                agent = host_ref["host"].agents.get(config.name)
                if agent is not None:
                    agent.engine_event(namespace, name)

            return FakeRuntime(node_index=index, on_exit=on_exit)
        from node.runtime import DockerRuntime

        kwargs: dict[str, Any] = {"cluster_domain": opts["cluster_domain"]}
        if opts["network"]:
            kwargs["network"] = opts["network"]
        if opts["pod_subnet"]:
            kwargs["subnet"] = opts["pod_subnet"]
        if opts["cluster_dns"]:
            kwargs["cluster_dns"] = [s.strip() for s in opts["cluster_dns"].split(",") if s.strip()]
        return DockerRuntime.from_env(**kwargs)

    host = NodeHost(client, configs, runtime_for)
    host_ref["host"] = host
    server = AgentServer(host, address, opts["port"])
    port = await server.start()
    for config in configs:
        config.port = port
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready() -> None:
        names = [c.name for c in configs]
        shown = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)} nodes)"
        print(
            f"grove node {shown}: registered with {client.server_url}; serving on {address}:{port}",
            flush=True,
        )

    runner = asyncio.create_task(host.run(ready))
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # raise what stopped it
    finally:
        runner.cancel()
        stopper.cancel()
        await asyncio.gather(runner, stopper, return_exceptions=True)
        await server.stop()
        await client.close()


if __name__ == "__main__":
    node()
