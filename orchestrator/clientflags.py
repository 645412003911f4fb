"""`--kubeconfig` next to `--server`, the same for every component that talks to the API server.

The scheduler, the controllers, the node agent, the proxy and DNS each take `--server URL` (plain
HTTP, no credentials) and, through `kubeconfig_option`, `--kubeconfig FILE`: the current
context's server, CA and credentials (client certificate or token), as kube's components take
theirs. `--server` given on the command line still wins over the kubeconfig's server, as
kube-scheduler's `--master` does. `connection(...)` turns the two into the one ClientConfig
`ApiClient` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from click.core import ParameterSource

from orchestrator.apiclient import ClientConfig, KubeconfigError, load_kubeconfig

F = TypeVar("F", bound=Callable[..., object])


def kubeconfig_option(f: F) -> F:
    """Add `--kubeconfig FILE` to a click command (its parameter is `kubeconfig`)."""
    return click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        default=None,
        help="kubeconfig with the API server, its CA and this component's credentials "
        "(a --server given on the command line overrides its server).",
    )(f)


def connection(server: str | None, kubeconfig: str | None, server_param: str = "server") -> ClientConfig:
    """The ClientConfig for `--server` and `--kubeconfig`; a click error (one line) when unusable."""
    if not kubeconfig:
        if not server:
            raise click.UsageError("give --server URL or --kubeconfig FILE")
        return ClientConfig(server)
    try:
        config = load_kubeconfig(kubeconfig)
        config.ssl_context()  # a bad certificate or key fails here, not in the event loop
    except KubeconfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--kubeconfig") from None
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source(server_param) if ctx is not None else None
    if server and source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
        config.server = server.rstrip("/")
    return config
