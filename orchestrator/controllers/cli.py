"""`grove controllers`: run the controller manager against an API server.

Flags follow kube-controller-manager's (`--controllers`, `--leader-elect*`,
`--node-monitor-grace-period`, `--concurrent-*-syncs`, ...) with its defaults. Run two with
leader election (the default) for a hot standby: the second waits on the Lease
`kube-system/kube-controller-manager` and takes over when the first stops renewing it.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid
from urllib.parse import urlparse

import click

from orchestrator.clientflags import connection, kubeconfig_option
from orchestrator.leaderelection import LeaseConfig
from orchestrator.process import run_until_signalled

from .base import ControllerOptions
from .manager import CONTROLLERS, ManagerOptions, run_manager, select_controllers

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Duration(click.ParamType):
    """`40s`, `500ms`, `5m` or plain seconds."""

    name = "duration"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, (int, float)):
            return float(value)
        match = _DURATION.match(str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration like 40s, 500ms or 5m", param, ctx)
        return float(match.group(1)) * _UNITS[match.group(2)]


DURATION = Duration()


@click.command("controllers")
@click.option(
    "--server",
    default="http://127.0.0.1:6443",
    show_default=True,
    envvar="GROVE_SERVER",
    help="API server URL.",
)
@kubeconfig_option
@click.option(
    "--controllers",
    "controller_spec",
    default="*",
    show_default=True,
    help=f"Controllers to run: '*' for all, 'foo' to add, '-foo' to leave out. Known: {', '.join(CONTROLLERS)}.",
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=True,
    show_default=True,
    help="Hold a Lease before running controllers.",
)
@click.option(
    "--leader-elect-resource-namespace", "lease_namespace", default="kube-system", show_default=True
)
@click.option(
    "--leader-elect-resource-name", "lease_name", default="kube-controller-manager", show_default=True
)
@click.option(
    "--leader-elect-lease-duration", "lease_duration", type=DURATION, default="15s", show_default=True
)
@click.option(
    "--leader-elect-renew-deadline", "renew_deadline", type=DURATION, default="10s", show_default=True
)
@click.option("--leader-elect-retry-period", "retry_period", type=DURATION, default="2s", show_default=True)
@click.option(
    "--name", "identity", default=None, help="This replica's identity in the Lease [default: host_uuid]."
)
@click.option(
    "--bind-address",
    default="127.0.0.1",
    show_default=True,
    help="Address of /healthz, /readyz and /metrics.",
)
@click.option(
    "--port", "--secure-port", "port", type=click.IntRange(0, 65535), default=10257, show_default=True,
    help="Port of /healthz, /readyz and /metrics (plain HTTP; 0: off).",
)  # fmt: skip
@click.option("--node-monitor-period", type=DURATION, default="5s", show_default=True)
@click.option(
    "--node-monitor-grace-period", type=DURATION, default="40s", show_default=True,
    help="How long a node may go without renewing its Lease or posting status before it is marked Unknown.",
)  # fmt: skip
@click.option("--node-startup-grace-period", type=DURATION, default="60s", show_default=True)
@click.option(
    "--pod-gc-orphan-quarantine", type=DURATION, default="40s", show_default=True,
    help="How long a pod's node must stay missing before the pod is deleted.",
)  # fmt: skip
@click.option("--endpoint-updates-batch-period", type=DURATION, default="0s", show_default=True)
@click.option("--horizontal-pod-autoscaler-sync-period", type=DURATION, default="15s", show_default=True)
@click.option("--concurrent-replicaset-syncs", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--concurrent-deployment-syncs", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--concurrent-daemonset-syncs", type=click.IntRange(1, 1000), default=2, show_default=True)
@click.option("--concurrent-endpoint-syncs", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--concurrent-namespace-syncs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--concurrent-gc-syncs", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--concurrent-statefulset-syncs", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--concurrent-job-syncs", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--concurrent-cron-job-syncs", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def controllers(
    server: str,
    kubeconfig: str | None,
    controller_spec: str,
    leader_elect: bool,
    lease_namespace: str,
    lease_name: str,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    identity: str | None,
    bind_address: str,
    port: int,
    node_monitor_period: float,
    node_monitor_grace_period: float,
    node_startup_grace_period: float,
    pod_gc_orphan_quarantine: float,
    endpoint_updates_batch_period: float,
    horizontal_pod_autoscaler_sync_period: float,
    concurrent_replicaset_syncs: int,
    concurrent_deployment_syncs: int,
    concurrent_daemonset_syncs: int,
    concurrent_endpoint_syncs: int,
    concurrent_namespace_syncs: int,
    concurrent_gc_syncs: int,
    concurrent_statefulset_syncs: int,
    concurrent_job_syncs: int,
    concurrent_cron_job_syncs: int,
    verbose: int,
) -> None:
    """Run the controllers (kube-controller-manager's job): replica sets, deployments, daemon
    sets, stateful sets, jobs, cron jobs, horizontal pod autoscalers, endpoints and endpoint slices,
    namespaces, node lifecycle and taint eviction, pod GC, garbage collection."""
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s controllers %(levelname)s %(name)s: %(message)s",
    )
    url = urlparse(server)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise click.BadParameter(f"{server!r} is not an http(s) URL", param_hint="--server")
    try:
        chosen = select_controllers([controller_spec])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--controllers") from None
    lease = None
    if leader_elect:
        try:
            lease = LeaseConfig(
                namespace=lease_namespace,
                name=lease_name,
                identity=identity or f"{socket.gethostname()}_{uuid.uuid4()}",
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if node_monitor_grace_period <= node_monitor_period:
        raise click.UsageError("--node-monitor-grace-period must be longer than --node-monitor-period")
    options = ManagerOptions(
        server=connection(server, kubeconfig),  # type: ignore[arg-type]  # a URL or a ClientConfig
        controllers=chosen,
        lease=lease,
        bind_address=bind_address,
        port=port,
        controller_options=ControllerOptions(
            node_monitor_period=node_monitor_period,
            node_monitor_grace_period=node_monitor_grace_period,
            node_startup_grace_period=node_startup_grace_period,
            endpoint_updates_batch_period=endpoint_updates_batch_period,
            horizontal_pod_autoscaler_sync_period=horizontal_pod_autoscaler_sync_period,
            concurrent_syncs={
                "replicaset": concurrent_replicaset_syncs,
                "deployment": concurrent_deployment_syncs,
                "daemonset": concurrent_daemonset_syncs,
                "endpoint": concurrent_endpoint_syncs,
                "namespace": concurrent_namespace_syncs,
                "garbagecollector": concurrent_gc_syncs,
                "statefulset": concurrent_statefulset_syncs,
                "job": concurrent_job_syncs,
                "cronjob": concurrent_cron_job_syncs,
            },
        ),
        pod_gc_quarantine=pod_gc_orphan_quarantine,
    )
    run_until_signalled(run_manager(options))


if __name__ == "__main__":
    controllers()
