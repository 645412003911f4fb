"""`grove bench ...`: the benchmarks as commands, with progress, tables, JSON and charts.

Measuring lives in bench.kv and bench.failover and presenting in bench.report; this module only
turns options into configurations, shows progress with rich while a benchmark runs (on stderr, so
the table on stdout can be piped), and turns errors the user can fix into one line.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import kv
from bench.loadgen import OPS
from bench.service import service_command


def _out() -> Console:
    # A table squeezed to 80 columns is unreadable; when piped, print it wide.
    return Console() if sys.stdout.isatty() else Console(width=200)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200),
        transient=False,
    )


def _json_option(help: str):
    return click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help=help)


def _png_option(help: str):
    return click.option("--png", "png_path", type=click.Path(dir_okay=False), default=None, help=help)


_targets_option = click.option(
    "--targets", default="grove,etcd", show_default=True, help="Stores to start and measure, in this order."
)
_install_etcd_option = click.option(
    "--install-etcd", is_flag=True, help="apt-get install etcd-server when etcd is missing (needs root)."
)
_server_option = click.option(
    "--server", default=None, help="API server of a running cluster to measure (default: start one)."
)


def _write_outputs(
    out: Console, json_path: str | None, data: object, png_path: str | None, draw: Callable[[str], None]
) -> None:
    """--json and --png, each announced on stdout after the table."""
    from bench import report

    if json_path:
        report.write_json(json_path, data)
        out.print(f"wrote {json_path}")
    if png_path:
        draw(png_path)
        out.print(f"wrote {png_path}")


class _TwoBars:
    """Created pods and pods that reached a state, as two bars; steps as the first bar's description."""

    def __init__(self, bar: Progress, pods: int, reached: str) -> None:
        self.bar = bar
        self.created = bar.add_task("starting", total=pods)
        self.reached = bar.add_task(reached, total=pods)

    def step(self, text: str) -> None:
        self.bar.update(self.created, description=text)

    def counts(self, created: int, reached: int) -> None:
        self.bar.update(self.created, completed=created)
        self.bar.update(self.reached, completed=reached)


class _KvProgress(kv.Progress):
    def __init__(self, bar: Progress, total: int) -> None:
        self.bar = bar
        self.task = bar.add_task("starting", total=total)

    def step(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def cell_started(self, text: str) -> None:
        self.bar.update(self.task, description=text)

    def cell_done(self, cell: kv.KvCell) -> None:
        self.bar.console.print(
            f"  {cell.target:5} {cell.op:11} {cell.mode:6} {cell.clients:4} clients: {cell.ops_per_s:10,.0f} ops/s  "
            f"p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:8.2f} ms  errors {cell.errors}  "
            f"loadgen cpu {cell.loadgen_cpu:.2f}",
            highlight=False,
        )
        self.bar.advance(self.task)


@click.group()
def bench() -> None:
    """Benchmarks: the store side by side with etcd 3.4, failover, services, scheduling, pod startup."""


@bench.command("kv")
@click.option(
    "--duration",
    type=click.FloatRange(min=0.1),
    default=3.0,
    show_default=True,
    help="Seconds measured per cell.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    help="Seconds of load before each cell is measured.",
)
@click.option(
    "--clients",
    default="1,16,64,256",
    show_default=True,
    help="Concurrent clients per cell, comma-separated.",
)
@click.option("--ops", default=",".join(OPS), show_default=True, help="Operations: write, read, quorum-read.")
@click.option(
    "--modes",
    default="leader,spread",
    show_default=True,
    help="leader (all clients to the leader), spread (over all members).",
)
@_targets_option
@click.option(
    "--endpoints", default=None, help="Client URLs of a running cluster to measure instead (only that one)."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Load generator processes."
)
@_json_option("Write the cells to this JSON file.")
@_png_option("Write a chart (ops/s and p99 by clients).")
@_install_etcd_option
@click.option(
    "--interleave/--one-at-a-time",
    default=True,
    show_default=True,
    help="Run both clusters at once and measure each cell on one store right after the other "
    "(fair on a machine with other load), or run one store's cluster for all its cells, then the next.",
)
def kv_command(
    duration: float, warmup: float, clients: str, ops: str, modes: str, targets: str, endpoints: str | None,
    workers: int, json_path: str | None, png_path: str | None, install_etcd: bool, interleave: bool,
) -> None:  # fmt: skip
    """Throughput and latency of writes and reads: grove and etcd under the same load.

    Starts a 3-member grove cluster and a 3-member etcd 3.4 cluster (--enable-v2) on loopback and
    drives each through the etcd v2 HTTP API from separate load generator processes, one store after
    the other for every cell (or, with --one-at-a-time, one whole cluster after the other).
    """
    from bench import report
    from kvstore.client import parse_endpoints

    try:
        config = kv.KvConfig(
            targets=kv.parse_list(targets, kv.TARGETS, "--targets"),
            ops=kv.parse_list(ops, OPS, "--ops"),
            clients=kv.parse_clients(clients),
            modes=kv.parse_list(modes, kv.MODES, "--modes"),
            duration=duration,
            warmup=warmup,
            workers=workers,
            endpoints=parse_endpoints(endpoints) if endpoints else None,
            install_etcd=install_etcd,
            interleave=interleave,
        )
    except (kv.BenchError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    out = _out()
    started = datetime.datetime.now().astimezone()
    targets_n = 1 if config.endpoints else len(config.targets)
    try:
        if not config.endpoints and "etcd" in config.targets:
            kv.ensure_etcd(config.install_etcd)
        with _progress_bar() as bar:
            cells = kv.run_kv(config, _KvProgress(bar, targets_n * config.cells_per_target()))
    except kv.BenchError as exc:
        raise click.ClickException(str(exc)) from None
    how = "cells interleaved, clusters up together" if config.interleave else "one cluster at a time"
    out.print(
        f"grove bench kv — {started:%Y-%m-%d %H:%M %Z}, {config.duration:g} s per cell after {config.warmup:g} s "
        f"warm-up, {how}"
    )
    out.print(report.machine_note())
    for table in report.kv_tables(cells):
        out.print(table)
    out.print(report.kv_legend(cells))
    _write_outputs(
        out, json_path, [c.to_dict() for c in cells], png_path, lambda p: report.kv_chart(cells, p)
    )


@bench.command("failover")
@click.option(
    "--kills", type=click.IntRange(min=1), default=20, show_default=True, help="Leader kills per target."
)
@click.option(
    "--down-time",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds a killed leader stays down.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds of steady load between recovery and the next kill.",
)
@click.option(
    "--clients",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Closed-loop clients writing and reading (they retry across endpoints).",
)
@click.option(
    "--registers",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Keys whose read/write/CAS history is checked for linearizability.",
)
@_targets_option
@_json_option("Write per-target results to this JSON file.")
@_png_option("Write a timeline chart (ops/s, kill marks).")
@click.option(
    "--histories",
    "history_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Save each target's register history here (check again with python -m bench.linearizability).",
)
@_install_etcd_option
def failover_command(
    kills: int, down_time: float, settle: float, clients: int, registers: int, targets: str,
    json_path: str | None, png_path: str | None, history_dir: str | None, install_etcd: bool,
) -> None:  # fmt: skip
    """Unavailability, lost writes and linearizability when the leader is SIGKILLed, grove and etcd.

    Runs a steady write/read/CAS load, kills the current leader --kills times (restarting it after
    --down-time), measures each unavailability window, then checks that no acknowledged write was
    lost and that the register history is linearizable.
    """
    from bench import failover, report

    try:
        config = failover.FailoverConfig(
            targets=kv.parse_list(targets, kv.TARGETS, "--targets"),
            kills=kills,
            down_time=down_time,
            settle=settle,
            clients=clients,
            registers=registers,
            install_etcd=install_etcd,
            history_dir=history_dir,
        )
    except kv.BenchError as exc:
        raise click.UsageError(str(exc)) from None
    out = _out()
    started = datetime.datetime.now().astimezone()
    try:
        if "etcd" in config.targets:
            kv.ensure_etcd(config.install_etcd)
        with _progress_bar() as bar:
            task = bar.add_task("starting", total=kills * len(config.targets))
            results = failover.run_failover(
                config,
                step=lambda text: bar.update(task, description=text),
                killed=lambda text: (bar.console.print("  " + text, highlight=False), bar.advance(task)),
            )
    except kv.BenchError as exc:
        raise click.ClickException(str(exc)) from None
    out.print(
        f"grove bench failover — {started:%Y-%m-%d %H:%M %Z}, {kills} leader kills per target, "
        f"down {down_time:g} s each, {clients} clients + 1 write prober + {registers} registers"
    )
    out.print(report.machine_note())
    out.print(report.failover_table(results))
    out.print(report.failover_legend(results))
    for r in results:
        for line in r.notes:
            out.print(f"{r.target}: {line}", highlight=False)
    _write_outputs(
        out, json_path, {r.target: r.to_dict() for r in results}, png_path,
        lambda p: report.failover_chart(results, p),
    )  # fmt: skip
    if any(r.lost or r.linearizable is False for r in results):
        raise SystemExit(1)


bench.add_command(service_command)  # `grove bench service` (bench/service.py)


@bench.command("schedule")
@click.option("--nodes", type=click.IntRange(min=1), default=1000, show_default=True, help="Nodes to create.")
@click.option(
    "--pods", type=click.IntRange(min=1), default=10000, show_default=True, help="Pods to schedule."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Pod creations in flight.",
)
@_server_option
@_json_option("Write the result as JSON.")
@_png_option("Write a chart.")
def schedule_command(
    nodes: int, pods: int, concurrency: int, server: str | None, json_path: str | None, png_path: str | None
) -> None:
    """Pods bound per second and creation → bound latency, N nodes and M pending pods.

    Starts three store members, the API server and the scheduler (no node agents: the nodes are
    Node objects created through the API), creates the pods as fast as the API server takes them
    and watches them get bound.
    """
    from bench import schedule as sched

    config = sched.ScheduleConfig(nodes=nodes, pods=pods, server=server, concurrency=concurrency)
    out = _out()
    started = datetime.datetime.now().astimezone()
    try:
        with _progress_bar() as bar:
            result = sched.run_schedule(config, _TwoBars(bar, pods, "bound"))
    except sched.ScheduleBenchError as exc:
        raise click.ClickException(str(exc)) from None
    where = server or "its own cluster (3 store members, API server, scheduler)"
    out.print(f"grove bench schedule — {started:%Y-%m-%d %H:%M %Z}, {os.cpu_count()} CPU cores, on {where}")
    out.print(sched.table(result))
    out.print(sched.legend(result), highlight=False)
    _write_outputs(out, json_path, result.to_dict(), png_path, lambda p: sched.chart(result, p))
    if result.bound < result.pods:
        raise SystemExit(1)


@bench.command("pod-startup")
@click.option("--pods", type=click.IntRange(min=1), default=50, show_default=True, help="Pods to start.")
@click.option(
    "--rate",
    type=click.FloatRange(min=0.0),
    default=5.0,
    show_default=True,
    help="Pods created per second (0: all at once).",
)
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Docker node agents.")
@_server_option
@_json_option("Write the result as JSON.")
@_png_option("Write a chart.")
def pod_startup_command(
    pods: int, rate: float, nodes: int, server: str | None, json_path: str | None, png_path: str | None
) -> None:
    """Pod creation → Running and Ready latency on Docker (image present), p50/p99, observed through a watch."""
    from bench import podstartup as ps

    config = ps.PodStartupConfig(pods=pods, rate=rate, nodes=nodes, server=server)
    out = _out()
    started = datetime.datetime.now().astimezone()
    try:
        with _progress_bar() as bar:
            result = ps.run_podstartup(config, _TwoBars(bar, pods, "Running and Ready"))
    except ps.PodStartupBenchError as exc:
        raise click.ClickException(str(exc)) from None
    where = (
        server or f"its own cluster (3 store members, API server, scheduler, {nodes} Docker node agent(s))"
    )
    out.print(
        f"grove bench pod-startup — {started:%Y-%m-%d %H:%M %Z}, {os.cpu_count()} CPU cores, on {where}"
    )
    out.print(ps.table(result))
    out.print(ps.legend(result), highlight=False)
    _write_outputs(out, json_path, result.to_dict(), png_path, lambda p: ps.chart(result, p))
    if result.running < result.pods:
        raise SystemExit(1)
