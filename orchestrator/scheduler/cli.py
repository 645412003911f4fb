"""`grove scheduler`: run a scheduler replica against an API server.

Flags follow kube-scheduler's where it has one (`--leader-elect`, `--leader-elect-lease-duration`,
`--percentage-of-nodes-to-score`, ...), so its operators need no manual. Run two with
`--leader-elect` (the default) for a hot standby: the second waits on the Lease
`kube-system/kube-scheduler` and takes over when the first stops renewing it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlparse

import click

from orchestrator.clientflags import connection, kubeconfig_option
from orchestrator.leaderelection import LeaseConfig
from orchestrator.process import run_until_signalled
from orchestrator.scheduler.scheduler import (
    SCHEDULER_NAMES,
    SchedulerOptions,
    default_identity,
    run_scheduler,
)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str) -> float:
    """`15s`, `500ms`, `1.5s`, `2m` or plain seconds -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 15s, 500ms or 2m")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except click.BadParameter as exc:
            self.fail(str(exc), param, ctx)


@click.command("scheduler")
@click.option(
    "--server",
    default="http://127.0.0.1:6443",
    show_default=True,
    envvar="GROVE_SERVER",
    help="API server URL.",
)
@kubeconfig_option
@click.option(
    "--leader-elect/--no-leader-elect",
    default=True,
    show_default=True,
    help="Hold a Lease before scheduling, so several replicas can run (one active, the rest standby).",
)
@click.option(
    "--lease-namespace",
    "--leader-elect-resource-namespace",
    "lease_namespace",
    default="kube-system",
    show_default=True,
    help="Namespace of the Lease.",
)
@click.option(
    "--lease-name",
    "--leader-elect-resource-name",
    "lease_name",
    default="kube-scheduler",
    show_default=True,
    help="Name of the Lease.",
)
@click.option(
    "--name", "identity", default=None, help="This replica's identity in the Lease [default: host_uuid]."
)
@click.option(
    "--leader-elect-lease-duration", "lease_duration", type=Duration(), default="15s", show_default=True
)
@click.option(
    "--leader-elect-renew-deadline", "renew_deadline", type=Duration(), default="10s", show_default=True
)
@click.option("--leader-elect-retry-period", "retry_period", type=Duration(), default="2s", show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Serve /metrics, /healthz and /readyz on this port (0: off; kube-scheduler uses 10259).",
)
@click.option("--metrics-bind-address", default="127.0.0.1", show_default=True)
@click.option(
    "--percentage-of-nodes-to-score",
    type=click.IntRange(0, 100),
    default=0,
    show_default=True,
    help="Stop searching once this share of nodes fits (0: adaptive, 50% of 100 nodes down to 5%).",
)
@click.option(
    "--scheduler-name",
    "scheduler_names",
    multiple=True,
    default=SCHEDULER_NAMES,
    show_default=True,
    help="Pods whose spec.schedulerName is one of these are ours (repeatable).",
)
@click.option(
    "--bind-concurrency",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Binds in flight at most.",
)
@click.option(
    "--scheduled-events/--no-scheduled-events",
    default=True,
    show_default=True,
    help="Record a 'Scheduled' Event for every pod bound (FailedScheduling events are always recorded).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def scheduler(
    server: str,
    kubeconfig: str | None,
    leader_elect: bool,
    lease_namespace: str,
    lease_name: str,
    identity: str | None,
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
    metrics_port: int,
    metrics_bind_address: str,
    percentage_of_nodes_to_score: int,
    scheduler_names: tuple[str, ...],
    bind_concurrency: int,
    scheduled_events: bool,
    verbose: int,
) -> None:
    """Place pending pods on nodes and bind them (kube-scheduler's job)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s scheduler %(levelname)s %(name)s: %(message)s",
    )
    if verbose < 2:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    url = urlparse(server)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise click.BadParameter(f"{server!r} is not an http(s) URL", param_hint="--server")
    lease = None
    if leader_elect:
        try:
            lease = LeaseConfig(
                namespace=lease_namespace,
                name=lease_name,
                identity=identity or default_identity(),
                lease_duration=lease_duration,
                renew_deadline=renew_deadline,
                retry_period=retry_period,
            )
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    options = SchedulerOptions(
        scheduler_names=tuple(scheduler_names),
        percentage_of_nodes_to_score=percentage_of_nodes_to_score,
        bind_concurrency=bind_concurrency,
        record_scheduled_events=scheduled_events,
    )
    metrics = (metrics_bind_address, metrics_port) if metrics_port else None
    run_until_signalled(run_scheduler(connection(server, kubeconfig), options, lease, metrics))  # type: ignore[arg-type]


if __name__ == "__main__":
    scheduler()
