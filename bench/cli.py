"""`grove bench ...`: the benchmarks as commands, with progress, tables, JSON and charts.

Measuring lives in bench.kv and bench.failover and presenting in bench.report; this module only
turns options into configurations, shows progress with rich while a benchmark runs (on stderr, so
the table on stdout can be piped), and turns errors the user can fix into one line.
"""

from __future__ import annotations

import datetime
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import kv
from bench.loadgen import OPS


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
    """Benchmarks of grove's store, side by side with real etcd 3.4 in the same run."""


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
@click.option(
    "--targets", default="grove,etcd", show_default=True, help="Stores to start and measure, in this order."
)
@click.option(
    "--endpoints", default=None, help="Client URLs of a running cluster to measure instead (only that one)."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Load generator processes."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the cells to this JSON file.",
)
@click.option(
    "--png",
    "png_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a chart (ops/s and p99 by clients).",
)
@click.option(
    "--install-etcd", is_flag=True, help="apt-get install etcd-server when etcd is missing (needs root)."
)
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
    if json_path:
        report.write_json(json_path, [c.to_dict() for c in cells])
        out.print(f"wrote {json_path}")
    if png_path:
        report.kv_chart(cells, png_path)
        out.print(f"wrote {png_path}")


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
@click.option(
    "--targets", default="grove,etcd", show_default=True, help="Stores to start and measure, in this order."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write per-target results to this JSON file.",
)
@click.option(
    "--png",
    "png_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a timeline chart (ops/s, kill marks).",
)
@click.option(
    "--histories",
    "history_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Save each target's register history here (check again with python -m bench.linearizability).",
)
@click.option(
    "--install-etcd", is_flag=True, help="apt-get install etcd-server when etcd is missing (needs root)."
)
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
    if json_path:
        report.write_json(json_path, {r.target: r.to_dict() for r in results})
        out.print(f"wrote {json_path}")
    if png_path:
        report.failover_chart(results, png_path)
        out.print(f"wrote {png_path}")
    if any(r.lost or r.linearizable is False for r in results):
        raise SystemExit(1)
