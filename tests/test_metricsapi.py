"""The metrics.k8s.io conversions: Summary API samples -> NodeMetrics / PodMetrics, quantities,
windows, discovery entries and request paths. Pure functions, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orchestrator.apiserver import errors
from orchestrator.apiserver.metricsapi import (
    GROUP_VERSION,
    MAX_WINDOW,
    MIN_WINDOW,
    MetricsApi,
    Sample,
    cpu_quantity,
    cpu_rate,
    extend_discovery,
    go_duration,
    is_metrics_path,
    memory_quantity,
    metrics_list,
    metrics_table,
    node_metrics,
    parse_path,
    parse_time,
    pod_metrics,
)
from orchestrator.resources import DEFAULT_REGISTRY, aggregated_discovery, api_group_list

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def stamp(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(
    at: float, node_cpu_ns: int, node_ws: int = 3 * 2**30, pods: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Summary in the shape node/server.py serves."""
    return {
        "node": {
            "nodeName": "n1",
            "cpu": {"time": stamp(at), "usageNanoCores": 0, "usageCoreNanoSeconds": node_cpu_ns},
            "memory": {"time": stamp(at), "workingSetBytes": node_ws, "usageBytes": node_ws + 100},
        },
        "pods": pods or [],
    }


def pod_entry(name: str, uid: str, containers: dict[str, tuple[int, int, str]], at: float) -> dict[str, Any]:
    """containers: name -> (cumulative cpu ns, working set bytes, startTime)."""
    return {
        "podRef": {"name": name, "namespace": "default", "uid": uid},
        "containers": [
            {
                "name": c,
                "startTime": started,
                "cpu": {"time": stamp(at), "usageNanoCores": 0, "usageCoreNanoSeconds": cpu},
                "memory": {"time": stamp(at), "workingSetBytes": ws},
            }
            for c, (cpu, ws, started) in containers.items()
        ],
    }


NODE = {"metadata": {"name": "n1", "labels": {"zone": "a"}}, "status": {}}
POD = {"metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}}}


# --- quantities and times -----------------------------------------------------------------------------


@pytest.mark.parametrize(("nano", "text"), [(0, "0"), (-5, "0"), (1, "1n"), (250_000_000, "250000000n")])
def test_cpu_quantity(nano: int, text: str) -> None:
    assert cpu_quantity(nano) == text


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0"),
        (1000, "1000"),
        (4096, "4Ki"),
        (4 * 2**20, "4Mi"),
        (3 * 2**30, "3Gi"),
        (1536 * 2**10, "1536Ki"),
    ],
)
def test_memory_quantity(nbytes: int, text: str) -> None:
    assert memory_quantity(nbytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1.5, "1.5s"), (20, "20s"), (1.0004, "1s"), (90.25, "1m30.25s"), (3600, "1h0m0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_parse_time_takes_docker_nanoseconds_and_rejects_garbage() -> None:
    assert parse_time("2027-01-15T08:00:00Z") == T0
    assert parse_time("2027-01-15T08:00:01.500000123Z") == pytest.approx(T0 + 1.5)
    assert parse_time("2027-01-15T08:00:00.25+00:00") == pytest.approx(T0 + 0.25)
    assert parse_time("yesterday") is None and parse_time("") is None and parse_time(None) is None


def test_cpu_rate() -> None:
    assert cpu_rate(1_000, T0, 501_000, T0 + 2) == (250_000, 2)
    assert cpu_rate(5_000, T0, 4_000, T0 + 2) is None  # restarted: the counter went back
    assert cpu_rate(1_000, T0, 2_000, T0) is None  # no time between the readings
    assert cpu_rate(None, T0, 2_000, T0 + 1) is None


# --- NodeMetrics ------------------------------------------------------------------------------------


def test_node_metrics_is_the_cpu_rate_between_two_samples_and_the_working_set() -> None:
    prev = Sample(summary(T0, 10 * 10**9), T0)
    cur = Sample(summary(T0 + 2, 11 * 10**9, node_ws=5 * 2**20), T0 + 2)
    metrics = node_metrics(NODE, prev, cur)
    assert metrics == {
        "kind": "NodeMetrics",
        "apiVersion": GROUP_VERSION,
        "metadata": {"name": "n1", "creationTimestamp": stamp(T0 + 2), "labels": {"zone": "a"}},
        "timestamp": stamp(T0 + 2),
        "window": "2s",
        "usage": {"cpu": "500000000n", "memory": "5Mi"},
    }


def test_node_metrics_needs_two_samples_and_a_working_set() -> None:
    cur = Sample(summary(T0 + 2, 11 * 10**9), T0 + 2)
    assert node_metrics(NODE, None, cur) is None
    no_memory = summary(T0 + 2, 11 * 10**9)
    del no_memory["node"]["memory"]["workingSetBytes"]
    assert node_metrics(NODE, Sample(summary(T0, 10**9), T0), Sample(no_memory, T0 + 2)) is None


# --- PodMetrics -------------------------------------------------------------------------------------


def test_pod_metrics_per_container_from_two_samples() -> None:
    started = stamp(T0 - 100)
    prev = Sample(summary(T0, 0, pods=[pod_entry("web", "u1", {"app": (10**9, 1, started)}, T0)]), T0)
    cur_pods = [pod_entry("web", "u1", {"app": (10**9 + 4 * 10**7, 8 * 2**20, started)}, T0 + 4)]
    cur = Sample(summary(T0 + 4, 0, pods=cur_pods), T0 + 4)
    metrics = pod_metrics(POD, prev, cur)
    assert metrics is not None
    assert metrics["kind"] == "PodMetrics" and metrics["apiVersion"] == GROUP_VERSION
    assert metrics["metadata"]["namespace"] == "default" and metrics["metadata"]["labels"] == {"app": "web"}
    assert metrics["window"] == "4s" and metrics["timestamp"] == stamp(T0 + 4)
    assert metrics["containers"] == [{"name": "app", "usage": {"cpu": "10000000n", "memory": "8Mi"}}]


def test_a_container_new_since_the_previous_sample_is_measured_from_its_start() -> None:
    prev = Sample(summary(T0, 0, pods=[pod_entry("web", "u1", {"app": (10**9, 1, stamp(T0 - 100))}, T0)]), T0)
    containers = {
        "app": (10**9 + 2 * 10**8, 2**20, stamp(T0 - 100)),
        "sidecar": (3 * 10**8, 2**21, stamp(T0 + 1)),  # started after `prev`, ran 3 s: 0.1 cores
    }
    cur = Sample(summary(T0 + 4, 0, pods=[pod_entry("web", "u1", containers, T0 + 4)]), T0 + 4)
    metrics = pod_metrics(POD, prev, cur)
    assert metrics is not None
    assert metrics["containers"] == [
        {"name": "app", "usage": {"cpu": "50000000n", "memory": "1Mi"}},
        {"name": "sidecar", "usage": {"cpu": "100000000n", "memory": "2Mi"}},
    ]
    assert metrics["window"] == "4s"


def test_a_restarted_container_counts_from_its_new_start() -> None:
    prev = Sample(
        summary(T0, 0, pods=[pod_entry("web", "u1", {"app": (9 * 10**9, 1, stamp(T0 - 100))}, T0)]), T0
    )
    cur_pods = [pod_entry("web", "u1", {"app": (10**8, 2**20, stamp(T0 + 2))}, T0 + 4)]
    metrics = pod_metrics(POD, prev, Sample(summary(T0 + 4, 0, pods=cur_pods), T0 + 4))
    assert metrics is not None
    assert metrics["containers"][0]["usage"]["cpu"] == "50000000n" and metrics["window"] == "2s"


def test_pods_without_usable_readings_are_left_out() -> None:
    cur_pods = [pod_entry("web", "u1", {"app": (10**8, 2**20, stamp(T0 + 2))}, T0 + 4)]
    cur = Sample(summary(T0 + 4, 0, pods=cur_pods), T0 + 4)
    other_uid = {"metadata": {**POD["metadata"], "uid": "u2"}}
    assert pod_metrics(other_uid, None, cur) is None  # same name, another pod (recreated)
    assert pod_metrics({"metadata": {"name": "db", "namespace": "default"}}, None, cur) is None
    assert pod_metrics(POD, None, cur) is not None  # a first sample is enough when the start is known
    no_start = [pod_entry("web", "u1", {"app": (10**8, 2**20, "")}, T0 + 4)]
    assert pod_metrics(POD, None, Sample(summary(T0 + 4, 0, pods=no_start), T0 + 4)) is None
    no_memory = [pod_entry("web", "u1", {"app": (10**8, 2**20, stamp(T0 + 2))}, T0 + 4)]
    del no_memory[0]["containers"][0]["memory"]["workingSetBytes"]
    assert pod_metrics(POD, None, Sample(summary(T0 + 4, 0, pods=no_memory), T0 + 4)) is None


# --- lists, tables, discovery, paths -------------------------------------------------------------------


def test_list_and_table() -> None:
    pod = {
        "metadata": {"name": "web", "namespace": "default"},
        "window": "2s",
        "containers": [
            {"name": "a", "usage": {"cpu": "1000000n", "memory": "1Mi"}},
            {"name": "b", "usage": {"cpu": "2000000n", "memory": "1024Ki"}},
        ],
    }
    assert metrics_list("PodMetrics", [pod]) == {
        "kind": "PodMetricsList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": [pod],
    }
    table = metrics_table([pod])
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "CPU", "Memory", "Window"]
    assert table["rows"][0]["cells"] == ["web", "3000000n", "2Mi", "2s"]
    assert table["rows"][0]["object"]["metadata"]["namespace"] == "default"


def test_discovery_lists_the_group_in_both_forms_once() -> None:
    plain = extend_discovery("/apis", api_group_list())
    names = [g["name"] for g in plain["groups"]]
    assert names.count("metrics.k8s.io") == 1
    entry = next(g for g in plain["groups"] if g["name"] == "metrics.k8s.io")
    assert entry["versions"] == [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}]
    assert extend_discovery("/apis/", plain) == plain  # idempotent

    aggregated = extend_discovery("/apis", aggregated_discovery(legacy=False))
    groups = [g for g in aggregated["items"] if g["metadata"]["name"] == "metrics.k8s.io"]
    assert len(groups) == 1
    resources = {r["resource"]: r for r in groups[0]["versions"][0]["resources"]}
    assert resources["nodes"]["scope"] == "Cluster" and resources["pods"]["scope"] == "Namespaced"
    assert resources["pods"]["responseKind"]["kind"] == "PodMetrics"
    assert all(r["verbs"] == ["get", "list"] for r in resources.values())

    core = aggregated_discovery(legacy=True)
    assert extend_discovery("/api", core) is core


def test_paths() -> None:
    assert is_metrics_path("/apis/metrics.k8s.io") and is_metrics_path("/apis/metrics.k8s.io/v1beta1/nodes")
    assert not is_metrics_path("/apis/metrics.k8s.io.example.com/v1")
    assert parse_path("/apis/metrics.k8s.io").discovery["kind"] == "APIGroup"  # type: ignore[index]
    assert parse_path("/apis/metrics.k8s.io/v1beta1/").discovery["kind"] == "APIResourceList"  # type: ignore[index]
    req = parse_path("/apis/metrics.k8s.io/v1beta1/nodes/n1")
    assert (req.resource, req.namespace, req.name) == ("nodes", None, "n1")
    req = parse_path("/apis/metrics.k8s.io/v1beta1/pods")
    assert (req.resource, req.namespace, req.name) == ("pods", None, None)
    req = parse_path("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods/dns")
    assert (req.resource, req.namespace, req.name) == ("pods", "kube-system", "dns")
    for bad in (
        "/apis/metrics.k8s.io/v1/nodes",
        "/apis/metrics.k8s.io/v1beta1/services",
        "/apis/metrics.k8s.io/v1beta1/pods/web",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/nodes",
        "/apis/metrics.k8s.io/v1beta1/nodes/n1/status",
    ):
        with pytest.raises(errors.ApiError) as exc:
            parse_path(bad)
        assert exc.value.code == 404, bad


# --- when a node is scraped (the scheduling of samples; the scrape itself is the e2e test's) ----------


class CountingMetricsApi(MetricsApi):
    """MetricsApi with a fake clock, a pause that only advances it, and scrapes that record the time."""

    def __init__(self) -> None:
        self.now = T0
        self.scrapes: list[float] = []
        self.answering = True

        async def pause(seconds: float) -> None:
            self.now += seconds

        super().__init__(None, DEFAULT_REGISTRY, clock=lambda: self.now, pause=pause)  # type: ignore[arg-type]

    async def _scrape(self, node: dict[str, Any]) -> Sample | None:
        if not self.answering:
            return None
        self.scrapes.append(self.now)
        return Sample(summary(self.now, int(self.now * 10**9)), self.now)


def test_sample_pairs_reuse_the_last_sample_within_the_windows() -> None:
    api = CountingMetricsApi()

    def pair() -> tuple[float, float] | None:
        got = asyncio.run(api.sample_pair(NODE))
        return None if got is None else (got[0].time, got[1].time)

    assert pair() == (T0, T0 + MIN_WINDOW)  # no sample yet: two, MIN_WINDOW apart
    assert api.scrapes == [T0, T0 + MIN_WINDOW]
    api.now += MIN_WINDOW / 2
    assert pair() == (T0, T0 + MIN_WINDOW) and len(api.scrapes) == 2  # a moment later: the same pair
    api.now = T0 + 10
    assert pair() == (T0 + MIN_WINDOW, T0 + 10) and len(api.scrapes) == 3  # one new scrape
    api.now = T0 + 10 + MAX_WINDOW + 1
    start = api.now
    assert pair() == (start, start + MIN_WINDOW) and len(api.scrapes) == 5  # too old to rate against
    api.answering = False
    api.now += 5
    assert pair() is None  # a silent agent: left out, and its samples forgotten
    api.answering = True
    api.now += 1
    start = api.now
    assert pair() == (start, start + MIN_WINDOW)
