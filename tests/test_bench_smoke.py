"""The benchmarks keep working: each runs for a few seconds against grove, through the real CLI.

No thresholds (speed is measured, not asserted): the checks are that the commands finish, that
their JSON has the documented fields with sane values, and that grove lost no acknowledged write
and kept its register history linearizable across real leader kills. The pure pieces the
benchmarks rely on (HTTP framing, percentiles, the lost-write rule) are tested without processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.failover import first_ack_after, lost_writes, max_gap, timeline
from bench.loadgen import LoadSpec, build_requests, percentile, response_length

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KV_FIELDS = {"target", "op", "clients", "mode", "ops_per_s", "p50_ms", "p99_ms", "errors", "loadgen_cpu"}
FAILOVER_FIELDS = {"windows_ms", "p50_ms", "p99_ms", "max_ms", "acked", "lost", "linearizable"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_grove(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "grove.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"grove {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


@pytest.mark.slow
def test_bench_kv_against_grove(tmp_path):
    out, chart = tmp_path / "kv.json", tmp_path / "kv.png"
    proc = run_grove(
        "bench", "kv", "--targets", "grove", "--duration", "1", "--warmup", "0.2", "--clients", "1,16",
        "--json", str(out), "--png", str(chart), timeout=120,
    )  # fmt: skip
    cells = json.loads(out.read_text())
    assert {(c["op"], c["mode"], c["clients"]) for c in cells} == {
        (op, mode, n)
        for op in ("write", "read", "quorum-read")
        for mode in ("leader", "spread")
        for n in (1, 16)
    }
    for cell in cells:
        assert KV_FIELDS <= cell.keys(), cell
        assert cell["target"] == "grove"
        assert cell["ops_per_s"] > 0, cell
        assert 0 < cell["p50_ms"] <= cell["p99_ms"], cell
        assert cell["errors"] == 0, cell
        assert 0 < cell["loadgen_cpu"] <= 1.5, cell  # a share of one core (a little over 1 is clock noise)
        assert cell["server_cpu"] is not None and cell["server_cpu"] > 0, cell
    assert chart.read_bytes().startswith(PNG_MAGIC)
    assert "grove ops/s" in proc.stdout and "CPU cores" in proc.stdout


@pytest.mark.slow
def test_bench_failover_against_grove(tmp_path):
    out, chart = tmp_path / "failover.json", tmp_path / "failover.png"
    run_grove(
        "bench", "failover", "--targets", "grove", "--kills", "2", "--down-time", "0.5", "--settle", "0.5",
        "--json", str(out), "--png", str(chart), timeout=150,
    )  # fmt: skip
    doc = json.loads(out.read_text())
    assert set(doc) == {"grove"}
    result = doc["grove"]
    assert FAILOVER_FIELDS <= result.keys(), result
    assert len(result["windows_ms"]) == 2
    assert all(w > 0 for w in result["windows_ms"])
    assert result["max_ms"] == max(result["windows_ms"])
    assert result["acked"] > 0
    assert result["lost"] == 0, result["lost_examples"]
    assert result["linearizable"] is True, result["linearizability_detail"]
    assert result["history_ops"] > 0
    assert len(result["kill_times_s"]) == 2 and 0 < sum(result["timeline"]) <= result["acked_ops"]
    assert chart.read_bytes().startswith(PNG_MAGIC)


# --- pure pieces ------------------------------------------------------------------------------


def test_response_length_frames_content_length_and_chunked_bodies():
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n"
    assert response_length(head + b"abc") == 0
    assert response_length(head + b"abcde") == len(head) + 5
    assert response_length(head + b"abcdeHTTP/1.1") == len(head) + 5
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert response_length(chunked + b"3\r\nabc\r\n") == 0
    body = b"3\r\nabc\r\n0\r\n\r\n"
    assert response_length(chunked + body) == len(chunked) + len(body)
    assert response_length(b"HTTP/1.1 204 No Content\r\n\r\n") == len(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert response_length(b"HTTP/1.1 200 OK\r\nContent-Len") == 0


def test_write_requests_carry_64_byte_values_per_key():
    requests = build_requests(
        LoadSpec("write", 1, ["http://127.0.0.1:2379"], keys=3), "http://127.0.0.1:2379"
    )
    assert len(requests) == 3
    head, body = requests[1].split(b"\r\n\r\n")
    assert head.startswith(b"PUT /v2/keys/bench/kv/k0001 HTTP/1.1\r\nHost: 127.0.0.1:2379")
    assert body.startswith(b"value=") and len(body) == len(b"value=") + 64
    assert f"Content-Length: {len(body)}".encode() in head
    quorum = build_requests(LoadSpec("quorum-read", 1, ["http://h:1"], keys=1), "http://h:1")[0]
    assert quorum.startswith(b"GET /v2/keys/bench/kv/k0000?quorum=true HTTP/1.1\r\n")


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_lost_writes_flags_an_acknowledged_write_the_store_forgot():
    writes = [
        ("/k", "a", 0.0, 1.0),  # acked
        ("/k", "b", 2.0, 3.0),  # acked, started after "a" finished: must win over "a"
    ]
    assert lost_writes(writes, {"/k": "b"}) == (0, [])
    count, examples = lost_writes(writes, {"/k": "a"})
    assert count == 1 and "'b'" in examples[0]
    assert lost_writes(writes, {"/k": None})[0] == 2  # key gone: both lost


def test_lost_writes_accepts_either_order_of_concurrent_or_unknown_writes():
    concurrent = [("/k", "a", 0.0, 2.0), ("/k", "b", 1.0, 3.0)]
    assert lost_writes(concurrent, {"/k": "a"})[0] == 0
    assert lost_writes(concurrent, {"/k": "b"})[0] == 0
    unknown_last = [("/k", "a", 0.0, 1.0), ("/k", "x", 0.5, None), ("/k", "b", 2.0, 3.0)]
    assert lost_writes(unknown_last, {"/k": "x"})[0] == 0  # "x" may have landed at any time


def test_first_ack_after_counts_only_writes_sent_after_the_kill():
    writes = [(0.9, 1.5), (1.01, None), (1.2, 1.8), (1.1, 1.6)]
    assert first_ack_after(writes, 1.0) == 1.6  # (0.9 -> 1.5) was sent before the kill
    assert first_ack_after(writes, 2.0) is None


def test_timeline_and_gaps():
    acks = [(0.05, True), (0.15, False), (0.16, True), (0.95, True)]
    assert timeline(acks, 0.0, 1.0, bucket=0.1) == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert max_gap([0.05, 0.16, 0.95], 0.0, 1.0) == pytest.approx(0.79)
