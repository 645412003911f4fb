"""The resource metrics API, `metrics.k8s.io/v1beta1`, served by the API server itself.

In Kubernetes, metrics-server scrapes every kubelet and serves NodeMetrics and PodMetrics through
the API aggregation layer; `kubectl top` reads them there. grove has no aggregation layer, so the
API server answers the group directly, scraping on demand instead of on a timer: a request lists
the Nodes (or Pods) it is about, asks each node agent involved for its Summary API
(`GET /stats/summary`, at the endpoint pods/log uses, see podproxy.py), and turns the answers into
metrics objects. CPU is a rate, so it takes two samples of the cumulative counter, as
metrics-server does: the last sample of a node is kept and the next request rates against it (a
burst of requests within MIN_WINDOW shares one pair); when there is none younger than MAX_WINDOW,
two are taken MIN_WINDOW apart. A container first seen in the newer sample is measured from its
start time instead. A node whose agent does not answer is left out, and so are its pods.

Read-only: get and list (with label and field selectors), Table output for `kubectl get`; other
verbs answer 405. The conversions from Summary to metrics objects are pure functions below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from orchestrator import selectors
from orchestrator.resources import Registry, Resource

from . import codec, errors
from .podproxy import node_endpoint
from .routing import is_true
from .storage import Storage

log = logging.getLogger("grove.apiserver.metrics")

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
PREFIX = f"/apis/{GROUP}"
PATHS = [PREFIX, f"{PREFIX}/{VERSION}"]

MIN_WINDOW = 1.0  # seconds between the two samples of a fresh CPU rate
MAX_WINDOW = 60.0  # an older last sample is not reused: the rate would average too long a time
SCRAPE_TIMEOUT = 5.0  # an agent slower than this is left out, as metrics-server's scrape timeout does
SCRAPE_CONCURRENCY = 16

# (resource, kind, namespaced) in discovery order.
RESOURCES = (("nodes", "NodeMetrics", False), ("pods", "PodMetrics", True))


@dataclass(frozen=True)
class Sample:
    """One Summary API answer of a node, and when it arrived (seconds since the epoch)."""

    summary: dict[str, Any]
    time: float


# --- quantities and times -------------------------------------------------------------------------


def cpu_quantity(nano_cores: int) -> str:
    """CPU as metrics-server writes it: nanocores (`12345678n`), `0` when idle."""
    return f"{nano_cores}n" if nano_cores > 0 else "0"


def memory_quantity(nbytes: int) -> str:
    """Bytes as a binary-SI quantity, in the largest unit that divides them exactly (`2048Ki`)."""
    if nbytes <= 0:
        return "0"
    for suffix, size in (
        ("Ei", 2**60),
        ("Pi", 2**50),
        ("Ti", 2**40),
        ("Gi", 2**30),
        ("Mi", 2**20),
        ("Ki", 2**10),
    ):
        if nbytes % size == 0:
            return f"{nbytes // size}{suffix}"
    return str(nbytes)


def go_duration(seconds: float) -> str:
    """A window as Go's time.Duration prints it (`1.5s`, `20s`, `1m30.25s`): metav1.Duration's form."""
    millis = max(0, round(seconds * 1000))
    minutes, millis = divmod(millis, 60_000)
    secs = f"{millis / 1000:.3f}".rstrip("0").rstrip(".")
    if minutes == 0:
        return f"{secs}s" if millis else "0s"
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any) -> float | None:
    """An RFC 3339 time (any fraction of a second) as seconds since the epoch; None if unreadable."""
    if not isinstance(text, str) or not text:
        return None
    head, dot, rest = text.partition(".")
    if dot:  # Docker writes nanoseconds; fromisoformat takes at most microseconds
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)] or '0'}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def cpu_rate(prev_ns: Any, prev_time: float, cur_ns: Any, cur_time: float) -> tuple[int, float] | None:
    """(nanocores, window seconds) between two readings of a cumulative CPU counter.

    None when the readings cannot give a rate: missing, no time between them, or a counter that
    went backwards (the container restarted).
    """
    if not isinstance(prev_ns, int) or not isinstance(cur_ns, int) or isinstance(prev_ns, bool):
        return None
    window = cur_time - prev_time
    if window <= 0 or cur_ns < prev_ns:
        return None
    return int((cur_ns - prev_ns) / window), window


def _memory(stats: Mapping[str, Any] | None) -> int | None:
    value = (stats or {}).get("workingSetBytes")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _cumulative(stats: Mapping[str, Any] | None) -> Any:
    return (stats or {}).get("usageCoreNanoSeconds")


def _metadata(obj: Mapping[str, Any], now: float) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    out: dict[str, Any] = {"name": meta.get("name", "")}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    out["creationTimestamp"] = rfc3339(now)
    if meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    return out


# --- Summary -> NodeMetrics / PodMetrics (pure) -----------------------------------------------------


def node_metrics(node: Mapping[str, Any], previous: Sample | None, current: Sample) -> dict[str, Any] | None:
    """The NodeMetrics of `node` from two Summary samples of its agent; None without a usable pair."""
    if previous is None:
        return None
    cur, prev = current.summary.get("node") or {}, previous.summary.get("node") or {}
    rate = cpu_rate(_cumulative(prev.get("cpu")), previous.time, _cumulative(cur.get("cpu")), current.time)
    memory = _memory(cur.get("memory"))
    if rate is None or memory is None:
        return None
    nano_cores, window = rate
    return {
        "kind": "NodeMetrics",
        "apiVersion": GROUP_VERSION,
        "metadata": _metadata(node, current.time),
        "timestamp": rfc3339(current.time),
        "window": go_duration(window),
        "usage": {"cpu": cpu_quantity(nano_cores), "memory": memory_quantity(memory)},
    }


def _summary_pod(summary: Mapping[str, Any], pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    meta = pod.get("metadata") or {}
    for entry in summary.get("pods") or []:
        ref = entry.get("podRef") or {}
        if ref.get("name") == meta.get("name") and ref.get("namespace") == meta.get("namespace"):
            if ref.get("uid") and meta.get("uid") and ref["uid"] != meta["uid"]:
                continue  # a deleted pod of the same name, still on the node
            return entry
    return None


def _container_rate(
    container: Mapping[str, Any], before: Mapping[str, Any] | None, previous: Sample | None, current: Sample
) -> tuple[int, float] | None:
    cpu = container.get("cpu") or {}
    if before is not None and previous is not None:
        rate = cpu_rate(_cumulative(before.get("cpu")), previous.time, _cumulative(cpu), current.time)
        if rate is not None:
            return rate
    # Started since the previous sample (or restarted): it used its CPU time since it started. Both
    # times are the agent's clock.
    started = parse_time(container.get("startTime"))
    now = parse_time(cpu.get("time"))
    if started is None or now is None:
        return None
    return cpu_rate(0, started, _cumulative(cpu), now)


def pod_metrics(pod: Mapping[str, Any], previous: Sample | None, current: Sample) -> dict[str, Any] | None:
    """The PodMetrics of `pod` from its node's Summary samples; None when the pod has no usable
    reading for every container the agent reports (or none at all)."""
    entry = _summary_pod(current.summary, pod)
    if entry is None or not entry.get("containers"):
        return None
    before_entry = _summary_pod(previous.summary, pod) if previous is not None else None
    before = {c.get("name"): c for c in (before_entry or {}).get("containers") or []}
    containers = []
    windows = []
    for c in entry["containers"]:
        rate = _container_rate(c, before.get(c.get("name")), previous, current)
        memory = _memory(c.get("memory"))
        if rate is None or memory is None:
            return None  # a partial pod would understate its usage: leave it out, as metrics-server does
        nano_cores, window = rate
        windows.append(window)
        containers.append(
            {
                "name": c.get("name", ""),
                "usage": {"cpu": cpu_quantity(nano_cores), "memory": memory_quantity(memory)},
            }
        )
    return {
        "kind": "PodMetrics",
        "apiVersion": GROUP_VERSION,
        "metadata": _metadata(pod, current.time),
        "timestamp": rfc3339(current.time),
        "window": go_duration(max(windows)),
        "containers": containers,
    }


def metrics_list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}


def _usage_totals(obj: Mapping[str, Any]) -> tuple[str, str]:
    if "usage" in obj:
        return obj["usage"]["cpu"], obj["usage"]["memory"]
    cpu = sum(_nanos(c["usage"]["cpu"]) for c in obj.get("containers") or [])
    memory = sum(_bytes(c["usage"]["memory"]) for c in obj.get("containers") or [])
    return cpu_quantity(cpu), memory_quantity(memory)


def _nanos(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("n") else int(quantity) * 10**9


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def metrics_table(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A meta.k8s.io Table of metrics objects, with metrics-server's columns (for `kubectl get`)."""
    columns = [
        ("Name", "string", "name", "Name must be unique within a namespace."),
        ("CPU", "string", "", "CPU usage (total of the containers for a pod)."),
        ("Memory", "string", "", "Memory working set (total of the containers for a pod)."),
        ("Window", "string", "", "The time the usage was measured over."),
    ]
    rows = []
    for obj in items:
        cpu, memory = _usage_totals(obj)
        rows.append(
            {
                "cells": [obj["metadata"]["name"], cpu, memory, obj["window"]],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            {"name": n, "type": t, "format": f, "description": d, "priority": 0} for n, t, f, d in columns
        ],
        "rows": rows,
    }


# --- discovery (pure) -----------------------------------------------------------------------------------


def _version_entry() -> dict[str, str]:
    return {"groupVersion": GROUP_VERSION, "version": VERSION}


def api_group() -> dict[str, Any]:
    """`GET /apis/metrics.k8s.io`."""
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [_version_entry()],
        "preferredVersion": _version_entry(),
    }


def api_resource_list() -> dict[str, Any]:
    """`GET /apis/metrics.k8s.io/v1beta1`."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": name,
                "singularName": "",
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["get", "list"],
            }
            for name, kind, namespaced in RESOURCES
        ],
    }


def group_discovery() -> dict[str, Any]:
    """The group's entry in an aggregated APIGroupDiscoveryList."""
    return {
        "metadata": {"name": GROUP, "creationTimestamp": None},
        "versions": [
            {
                "version": VERSION,
                "resources": [
                    {
                        "resource": name,
                        "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
                        "scope": "Namespaced" if namespaced else "Cluster",
                        "singularResource": "",
                        "verbs": ["get", "list"],
                    }
                    for name, kind, namespaced in RESOURCES
                ],
                "freshness": "Current",
            }
        ],
    }


def extend_discovery(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the metrics group added when it is the `/apis` list (plain or aggregated form)."""
    if "/" + path.strip("/") != "/apis":
        return doc
    if doc.get("kind") == "APIGroupList":
        groups = [g for g in doc.get("groups") or [] if g.get("name") != GROUP]
        return {
            **doc,
            "groups": [*groups, {k: v for k, v in api_group().items() if k not in ("kind", "apiVersion")}],
        }
    if doc.get("kind") == "APIGroupDiscoveryList":
        items = [g for g in doc.get("items") or [] if (g.get("metadata") or {}).get("name") != GROUP]
        return {**doc, "items": [*items, group_discovery()]}
    return doc


def is_metrics_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


# --- the request side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsRequest:
    """What a path under /apis/metrics.k8s.io asks for; `resource` None for discovery."""

    resource: str | None
    namespace: str | None = None
    name: str | None = None
    discovery: dict[str, Any] | None = None


def parse_path(path: str) -> MetricsRequest:
    """The MetricsRequest of a path under PREFIX; ApiError 404 when it names nothing served."""
    parts = [p for p in path[len(PREFIX) :].split("/") if p]
    if not parts:
        return MetricsRequest(None, discovery=api_group())
    if parts[0] != VERSION:
        raise errors.path_not_found()
    rest = parts[1:]
    if not rest:
        return MetricsRequest(None, discovery=api_resource_list())
    namespace = None
    if rest[0] == "namespaces" and len(rest) in (3, 4) and rest[2] == "pods":
        namespace, rest = rest[1], rest[2:]
    if rest[0] not in ("nodes", "pods") or len(rest) > 2:
        raise errors.path_not_found()
    if rest[0] == "pods" and len(rest) == 2 and namespace is None:
        raise errors.path_not_found()  # a pod is named within its namespace
    return MetricsRequest(rest[0], namespace, rest[1] if len(rest) == 2 else None)


def _kind(resource: str) -> str:
    return "NodeMetrics" if resource == "nodes" else "PodMetrics"


def not_supported(resource: str, verb: str) -> errors.ApiError:
    """kube's MethodNotSupported: a verb this read-only resource does not have."""
    return errors.ApiError(
        405,
        "MethodNotAllowed",
        f'{verb} is not supported on resources of kind "{resource}.{GROUP}"',
        {"group": GROUP, "kind": resource},
    )


def _verb(method: str, name: str | None, watch: bool) -> str:
    if method in ("GET", "HEAD"):
        return "watch" if watch else ("get" if name else "list")
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _selection(kind: str, query: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    try:
        labels = selectors.parse_label_selector(query.get("labelSelector"))
        fields = selectors.parse_field_selector(query.get("fieldSelector"))
        selectors.check_field_selector(kind, fields)
    except selectors.SelectorError as exc:
        raise errors.bad_request(str(exc)) from None

    def match(obj: Mapping[str, Any]) -> bool:
        if not labels.empty and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
            return False
        return fields.empty or selectors.matches_fields(kind, fields, obj)

    return match


def _metrics_of(
    objs: list[dict[str, Any]],
    node_of: Callable[[dict[str, Any]], str],
    samples: Mapping[str, tuple[Sample, Sample]],
    build: Callable[[dict[str, Any], Sample, Sample], dict[str, Any] | None],
) -> list[dict[str, Any]]:
    """The metrics `build` makes of each object from the samples of its node (those without)."""
    items = []
    for obj in objs:
        pair = samples.get(node_of(obj))
        metrics = build(obj, *pair) if pair is not None else None
        if metrics is not None:
            items.append(metrics)
    return items


def _metrics_not_found(kind: str, name: str) -> errors.ApiError:
    return errors.ApiError(
        404, "NotFound", f'{kind}.{GROUP} "{name}" not found', {"name": name, "group": GROUP, "kind": kind}
    )


class MetricsApi:
    """Serves metrics.k8s.io for one API server; keeps the last Summary sample of each node."""

    def __init__(
        self,
        storage: Storage,
        registry: Registry,
        *,
        timeout: float = SCRAPE_TIMEOUT,
        clock: Callable[[], float] = time.time,
        pause: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.storage = storage
        self.pods = registry.get("", "v1", "pods")
        self.nodes = registry.get("", "v1", "nodes")
        self.timeout = timeout
        self.clock = clock
        self.pause = pause
        self._pairs: dict[str, tuple[Sample, Sample]] = {}  # node name -> its last two samples
        self._locks: dict[str, asyncio.Lock] = {}
        self._limit = asyncio.Semaphore(SCRAPE_CONCURRENCY)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    # --- HTTP ----------------------------------------------------------------------------------

    async def serve(self, request: web.Request) -> web.Response:
        req = parse_path(request.path)
        if req.resource is None:
            if request.method not in ("GET", "HEAD"):
                raise errors.method_not_allowed()
            return web.Response(body=orjson.dumps(req.discovery), content_type="application/json")
        verb = _verb(request.method, req.name, is_true(request.query.get("watch")))
        if verb not in ("get", "list"):
            raise not_supported(req.resource, verb)
        accept = codec.parse_accept(request.headers.get("Accept"))
        if req.resource == "nodes":
            items = await self.node_metrics(request.query, req.name)
        else:
            items = await self.pod_metrics(request.query, req.namespace, req.name)
        if accept.as_kind == "Table":
            body: dict[str, Any] = metrics_table(items)
            content_type = accept.content_type
        elif req.name is not None:
            body, content_type = items[0], codec.YAML if accept.format == "yaml" else codec.JSON
        else:
            body = metrics_list(_kind(req.resource), items)
            content_type = codec.YAML if accept.format == "yaml" else codec.JSON
        resp = web.Response(body=codec.encode(body, accept))
        resp.headers["Content-Type"] = content_type
        return resp

    # --- metrics -------------------------------------------------------------------------------

    async def node_metrics(self, query: Mapping[str, str], name: str | None = None) -> list[dict[str, Any]]:
        """NodeMetrics of one node (ApiError 404 when it has none) or of every node the selectors match."""
        assert self.nodes is not None
        nodes, everything = await self._get_or_select(self.nodes, "Node", query, None, name)
        if everything is not None:
            self._forget_except({n["metadata"]["name"] for n in everything})
        samples = await self._samples(nodes)
        items = _metrics_of(nodes, lambda n: n["metadata"]["name"], samples, node_metrics)
        if name is not None and not items:
            raise _metrics_not_found("nodemetrics", name)
        return items

    async def pod_metrics(
        self, query: Mapping[str, str], namespace: str | None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """PodMetrics of one pod (ApiError 404 when it has none) or of every pod the selectors match."""
        assert self.pods is not None and self.nodes is not None
        pods, _ = await self._get_or_select(self.pods, "Pod", query, namespace, name)
        pods = [p for p in pods if (p.get("spec") or {}).get("nodeName")]
        node_names = sorted({p["spec"]["nodeName"] for p in pods})
        found = await asyncio.gather(*(self.storage.try_get(self.nodes, None, n) for n in node_names))
        samples = await self._samples([n for n in found if n is not None])
        items = _metrics_of(pods, lambda p: p["spec"]["nodeName"], samples, pod_metrics)
        if name is not None and not items:
            raise _metrics_not_found("podmetrics", f"{namespace}/{name}")
        return items

    async def _get_or_select(
        self, resource: Resource, kind: str, query: Mapping[str, str], namespace: str | None, name: str | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """The named object (none when it is missing), or the objects the query's label and field
        selectors match; second, for a list, every object they were chosen from."""
        if name is not None:
            obj = await self.storage.try_get(resource, namespace, name)
            return ([obj] if obj is not None else []), None
        match = _selection(kind, query)
        everything, _rv = await self.storage.list(resource, namespace)
        return [o for o in everything if match(o)], everything

    # --- scraping ------------------------------------------------------------------------------

    def _forget_except(self, names: set[str]) -> None:
        for gone in set(self._pairs) - names:
            self._pairs.pop(gone, None)
            self._locks.pop(gone, None)

    async def _samples(self, nodes: list[dict[str, Any]]) -> dict[str, tuple[Sample, Sample]]:
        """(previous, current) Summary samples of each node whose agent answered."""
        pairs = await asyncio.gather(*(self.sample_pair(n) for n in nodes))
        return {n["metadata"]["name"]: p for n, p in zip(nodes, pairs, strict=True) if p is not None}

    async def sample_pair(self, node: dict[str, Any]) -> tuple[Sample, Sample] | None:
        """Two Summary samples of a node, at least MIN_WINDOW apart; None when its agent does not answer.

        The newest sample is reused as the older one of the next pair while it is at most
        MAX_WINDOW old; a pair younger than MIN_WINDOW is served again as it is, so a burst of
        requests costs the agent one scrape.
        """
        name = node["metadata"]["name"]
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # one scrape of a node at a time keeps its samples in order
            pair = self._pairs.get(name)
            age = None if pair is None else self.clock() - pair[1].time
            if pair is not None and age is not None and age < MIN_WINDOW:
                return pair
            if pair is None or age is None or age > MAX_WINDOW:
                first = await self._scrape(node)
                if first is None:
                    self._pairs.pop(name, None)
                    return None
                await self.pause(MIN_WINDOW)
            else:
                first = pair[1]
            current = await self._scrape(node)
            if current is None:
                self._pairs.pop(name, None)
                return None
            self._pairs[name] = (first, current)
            return first, current

    async def _scrape(self, node: dict[str, Any]) -> Sample | None:
        """The agent's Summary, or None (logged) when it has no endpoint or does not answer."""
        name = node["metadata"]["name"]
        try:
            endpoint = node_endpoint(node)
        except errors.ApiError as exc:
            log.debug("no metrics for node %s: %s", name, exc.message)
            return None
        # One agent process may serve many hollow nodes: `node` says which one is meant.
        url = endpoint.url("/stats/summary")
        async with self._limit:
            try:
                async with self._client().get(url, params={"node": name}) as resp:
                    if resp.status != 200:
                        log.info("no metrics for node %s: its agent answered HTTP %d", name, resp.status)
                        return None
                    summary = orjson.loads(await resp.read())
            except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
                log.info("no metrics for node %s: cannot scrape %s: %s", name, url, exc or type(exc).__name__)
                return None
        if not isinstance(summary, dict):
            return None
        return Sample(summary, self.clock())


__all__ = [
    "GROUP",
    "PATHS",
    "MetricsApi",
    "Sample",
    "api_group",
    "api_resource_list",
    "extend_discovery",
    "group_discovery",
    "is_metrics_path",
    "node_metrics",
    "pod_metrics",
]
