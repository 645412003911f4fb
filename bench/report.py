"""How benchmark results leave the program: rich tables, JSON files and PNG charts.

Kept apart from the measuring code so the numbers are computed once and shown three ways.
matplotlib is imported only when a chart is asked for, with the Agg backend (no display here).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from rich.table import Table

if TYPE_CHECKING:
    from bench.failover import FailoverResult
    from bench.kv import KvCell

OP_TITLES = {
    "write": "writes (PUT, 64-byte values, 1 000 keys)",
    "read": "default reads",
    "quorum-read": "quorum=true reads",
}


def machine_note() -> str:
    cores = os.cpu_count() or 0
    return (
        f"Machine: {cores} CPU cores, shared by the 3 members of the cluster under test and the load "
        "generator; absolute numbers are low for both stores and limited by CPU, compare the ratio."
    )


def write_json(path: str, doc: Any) -> None:
    """Write `doc` as indented JSON (dataclasses and lists of them are fine)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_DATACLASS) + b"\n")


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


# --- kv -------------------------------------------------------------------------------------


def kv_tables(cells: Sequence[KvCell]) -> list[Table]:
    """One table per op: a row per (mode, clients), grove and etcd side by side with their ratio."""
    targets = list(dict.fromkeys(c.target for c in cells))
    by_key = {(c.target, c.op, c.mode, c.clients): c for c in cells}
    tables = []
    for op in dict.fromkeys(c.op for c in cells):
        table = Table(title=OP_TITLES.get(op, op), title_justify="left")
        table.add_column("mode")
        table.add_column("clients", justify="right")
        for target in targets:
            table.add_column(f"{target} ops/s", justify="right")
            table.add_column("p50 ms", justify="right")
            table.add_column("p99 ms", justify="right")
            table.add_column("err", justify="right")
        if "grove" in targets and "etcd" in targets:
            table.add_column("grove/etcd", justify="right")
        table.add_column("loadgen cpu", justify="right")
        table.add_column("members cpu", justify="right")
        table.add_column("other cpu", justify="right")
        rows = dict.fromkeys((c.mode, c.clients) for c in cells if c.op == op)
        for mode, clients in rows:
            row = [mode, str(clients)]
            found = [by_key.get((t, op, mode, clients)) for t in targets]
            for cell in found:
                if cell is None:
                    row += ["-"] * 4
                else:
                    row += [
                        _num(cell.ops_per_s),
                        _num(cell.p50_ms, 2),
                        _num(cell.p99_ms, 2),
                        str(cell.errors),
                    ]
            if "grove" in targets and "etcd" in targets:
                ratio = next((c.grove_etcd_ratio for c in found if c is not None), None)
                row.append("-" if ratio is None else f"{ratio:.2f}")
            row.append(" / ".join("-" if c is None else f"{c.loadgen_cpu:.2f}" for c in found))
            row.append(
                " / ".join("-" if c is None or c.server_cpu is None else f"{c.server_cpu:.2f}" for c in found)
            )
            row.append(" / ".join("-" if c is None else f"{c.other_cpu:.2f}" for c in found))
            table.add_row(*row)
        tables.append(table)
    return tables


def kv_legend(cells: Sequence[KvCell]) -> str:
    targets = " / ".join(dict.fromkeys(c.target for c in cells))
    return (
        "leader: every client talks to the leader; spread: client i talks to member i mod 3 (followers "
        "first). loadgen cpu: the busiest load generator process, CPU seconds per wall second (1.00 = "
        "a whole core, then the client is the limit); members cpu: cores the 3 members used together; "
        "other cpu: cores busy with anything else on the machine (other programs: noise in the numbers). "
        f"The cpu columns read {targets}."
        + (
            " With --endpoints the members are not ours to watch: their CPU is in 'other cpu'."
            if any(c.server_cpu is None for c in cells)
            else ""
        )
    )


def kv_chart(cells: Sequence[KvCell], path: str) -> None:
    """ops/s (top) and p99 latency (bottom) by clients, one column per op, a line per target and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = list(dict.fromkeys(c.op for c in cells))
    fig, axes = plt.subplots(2, len(ops), figsize=(5 * len(ops), 8), squeeze=False)
    colors = {"grove": "tab:green", "etcd": "tab:blue"}
    styles = {"leader": "-", "spread": "--"}
    for col, op in enumerate(ops):
        top, bottom = axes[0][col], axes[1][col]
        series = dict.fromkeys((c.target, c.mode) for c in cells if c.op == op)
        for target, mode in series:
            points = sorted(
                (c.clients, c.ops_per_s, c.p99_ms)
                for c in cells
                if (c.op, c.target, c.mode) == (op, target, mode)
            )
            xs = [p[0] for p in points]
            style = {
                "color": colors.get(target, "tab:gray"),
                "linestyle": styles.get(mode, ":"),
                "marker": "o",
            }
            top.plot(xs, [p[1] for p in points], label=f"{target} {mode}", **style)
            bottom.plot(xs, [p[2] for p in points], label=f"{target} {mode}", **style)
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.grid(True, alpha=0.3)
        top.set_title(OP_TITLES.get(op, op), fontsize=10)
        top.set_ylabel("ops/s")
        bottom.set_ylabel("p99 latency (ms)")
        bottom.set_yscale("log")
        top.legend(fontsize=8)
    fig.suptitle("grove bench kv — " + machine_note().split(";")[0], fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- failover -------------------------------------------------------------------------------


def failover_table(results: Sequence[FailoverResult]) -> Table:
    """One row per target: windows, acknowledged ops, lost writes, linearizability."""
    table = Table(
        title="leader SIGKILLed: unavailability window = kill -> first acknowledged write sent after it",
        title_justify="left",
    )
    for name, justify in (
        ("target", "left"), ("kills", "right"), ("p50 ms", "right"), ("p99 ms", "right"), ("max ms", "right"),
        ("acked writes", "right"), ("acked ops", "right"), ("lost", "right"), ("linearizable", "left"),
        ("history ops", "right"), ("loadgen cpu", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in results:
        lin = {True: "yes", False: "NO", None: "unknown (timeout)"}[r.linearizable]
        table.add_row(
            r.target, str(len(r.windows_ms)), _num(r.p50_ms), _num(r.p99_ms), _num(r.max_ms), f"{r.acked:,}",
            f"{r.acked_ops:,}", str(r.lost), lin, f"{r.history_ops:,}", f"{r.loadgen_cpu:.2f}",
        )  # fmt: skip
    return table


def failover_legend(results: Sequence[FailoverResult]) -> str:
    kills = max((len(r.windows_ms) for r in results), default=0)
    return (
        "window: from the SIGKILL to the first acknowledged write whose request was sent after it (a prober "
        "starts a write every 10 ms, through a client that retries across endpoints); percentiles are nearest "
        f"rank, so over {kills} kills p99 is the {'largest' if kills < 100 else '99th percentile'} window. "
        "lost: acknowledged writes that a quorum read afterwards shows neither in place nor replaced by a write "
        "that started after they had finished. linearizable: the register history (quorum reads, writes, "
        "compare-and-swap; timeouts and errors as unknown outcomes) checked by bench/linearizability.py. "
        "Both stores run with their default timing: grove starts an election after 0.4-0.8 s without a "
        "leader, etcd after 1-2 s (--election-timeout 1000). loadgen cpu: the load process's share of one core."
    )


def failover_chart(results: Sequence[FailoverResult], path: str) -> None:
    """Acknowledged ops/s over time per target, with a red line at each kill and green at each restart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(12, 3.2 * len(results)), squeeze=False)
    for ax, r in zip((a[0] for a in axes), results):
        xs = [i * r.bucket_s for i in range(len(r.timeline))]
        ax.plot(
            xs,
            [n / r.bucket_s for n in r.timeline],
            color="tab:green" if r.target == "grove" else "tab:blue",
            lw=1,
        )
        for k, t in enumerate(r.kill_times_s):
            ax.axvline(t, color="tab:red", lw=0.8, alpha=0.8, label="leader killed" if k == 0 else None)
        for k, t in enumerate(r.restart_times_s):
            ax.axvline(t, color="tab:gray", lw=0.6, ls=":", label="member restarted" if k == 0 else None)
        ax.set_title(
            f"{r.target}: {len(r.windows_ms)} kills, window p50 {_num(r.p50_ms)} ms / p99 {_num(r.p99_ms)} ms / "
            f"max {_num(r.max_ms)} ms, lost {r.lost}, linearizable {r.linearizable}",
            fontsize=9,
        )
        ax.set_ylabel("acked ops/s")
        ax.set_xlabel("seconds since the load started")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
