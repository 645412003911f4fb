"""The pod write path's shortcuts give what the general code gives.

A binding builds the bound pod without copying the cached one (`bind_pod`), the objects the
server has just written are handed to the watch cache instead of being decoded again from the
store's JSON, uids come from a pool of random bytes, and quantities, Accept headers and the
copy made by defaulting take cheaper routes. Each is compared here with the code it replaces;
the last test drives them over HTTP against a real store and API server: a watch that needs
decoded objects (a field selector) sees exactly what a plain watch (the stored JSON) and a GET see.
"""

from __future__ import annotations

import asyncio
import copy
import json
import queue
import threading
import time
import uuid
from fractions import Fraction
from typing import Any

import orjson
import pytest
import requests

from orchestrator.apiserver import codec, errors, strategy
from orchestrator.apiserver.handlers import bind_pod
from orchestrator.apiserver.storage import StoreEvent, decode_value
from orchestrator.apiserver.watchcache import EventSink, ResourceCache, WatchCaches
from orchestrator.defaults import _tree_copy, apply_defaults
from orchestrator.resources import DEFAULT_REGISTRY
from orchestrator.validation import QuantityError, parse_quantity
from tests.apiserver_fixture import apiserver  # noqa: F401

PODS = DEFAULT_REGISTRY.get("", "v1", "pods")


def stored_pod(**extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "app", "image": "busybox", "resources": {"requests": {"cpu": "10m"}}}],
            "schedulerName": "default-scheduler",
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    }
    obj.update(extra)
    return obj


def reference_bind(
    pod: dict[str, Any], name: str, node: str, uid: str | None, annotations: dict | None
) -> dict[str, Any]:
    """The binding as it was written before: in place, on the caller's own copy."""
    pmeta = pod["metadata"]
    if uid and pmeta.get("uid") != uid:
        raise errors.conflict(
            PODS,
            name,
            f"Precondition failed: UID in precondition: {uid}, UID in object meta: {pmeta.get('uid')}",
        )
    if pmeta.get("deletionTimestamp"):
        raise errors.conflict(PODS, name, f"pod {name} is being deleted, cannot be assigned to a host")
    spec = pod.setdefault("spec", {})
    if spec.get("nodeName"):
        raise errors.conflict(PODS, name, f'pod {name} is already assigned to node "{spec["nodeName"]}"')
    spec["nodeName"] = node
    if annotations:
        pmeta.setdefault("annotations", {}).update(annotations)
    status = pod.setdefault("status", {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": strategy.now_rfc3339(),
        }
    )
    status["conditions"] = conditions
    return pod


BIND_CASES = [
    (stored_pod(), None, None),
    (stored_pod(), "u-1", {"scheduler.example/why": "least allocated"}),
    (
        stored_pod(metadata={"name": "web", "namespace": "default", "annotations": {"a": "1"}}),
        None,
        {"b": "2"},
    ),
    (
        stored_pod(
            status={
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
                    {"type": "Other", "status": "True"},
                ],
            }
        ),
        None,
        None,
    ),
    ({k: v for k, v in stored_pod().items() if k != "status"}, None, None),
    ({k: v for k, v in stored_pod().items() if k != "spec"}, None, None),
    (stored_pod(spec={"nodeName": "", "containers": []}), None, None),
]


@pytest.mark.parametrize(("pod", "uid", "annotations"), BIND_CASES)
def test_bind_pod_matches_the_in_place_binding_and_leaves_its_input_alone(
    pod: dict[str, Any], uid: str | None, annotations: dict | None
) -> None:
    before = copy.deepcopy(pod)
    got = bind_pod(PODS, pod, "web", "node-1", uid, annotations)
    want = reference_bind(copy.deepcopy(pod), "web", "node-1", uid, annotations)
    assert pod == before  # pure
    # Equal, and equal as stored (same key order, byte for byte).
    assert got == want and orjson.dumps(got) == orjson.dumps(want)


@pytest.mark.parametrize(
    ("pod", "uid"),
    [
        (stored_pod(), "someone-else"),
        (stored_pod(spec={"nodeName": "node-0", "containers": []}), None),
        (stored_pod(metadata={"name": "web", "deletionTimestamp": "2026-01-01T00:00:00Z"}), None),
    ],
)
def test_bind_pod_refuses_what_the_in_place_binding_refuses(pod: dict[str, Any], uid: str | None) -> None:
    with pytest.raises(errors.ApiError) as got:
        bind_pod(PODS, copy.deepcopy(pod), "web", "node-1", uid)
    with pytest.raises(errors.ApiError) as want:
        reference_bind(copy.deepcopy(pod), "web", "node-1", uid, None)
    assert got.value.status() == want.value.status() and got.value.code == 409


# --- objects handed from the write path to the watch cache ----------------------------------------


class _StoreStream:
    """A store watch that yields what the test puts in, as the store's stream would."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StoreEvent] = asyncio.Queue()

    async def watch(self, res: Any, namespace: Any, since: int, name: Any = None) -> Any:
        while True:
            yield await self.queue.get()


def _value(obj: dict[str, Any]) -> str:
    meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
    return orjson.dumps({**obj, "metadata": meta}).decode()


def _with_rv(obj: dict[str, Any], rv: int) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}


def test_written_objects_stand_in_for_decoding_whichever_arrives_first() -> None:
    created = _with_rv(stored_pod(), 10)
    bound = _with_rv(bind_pod(PODS, created, "web", "n1"), 11)
    other = _with_rv(stored_pod(metadata={"name": "db", "namespace": "default"}), 12)

    async def scenario() -> list[StoreEvent]:
        stream = _StoreStream()
        cache = ResourceCache(stream, PODS, 10, 100)  # type: ignore[arg-type]
        sink = EventSink()
        cache.subscribe(sink, None, None, 10)
        # The write answered before its event came back...
        cache.remember_written(created, None)
        await stream.queue.put(StoreEvent("ADDED", 10, "default", "web", _value(created)))
        # ...the event came back before the write's answer...
        await stream.queue.put(
            StoreEvent("MODIFIED", 11, "default", "web", _value(bound), _value(created), 10)
        )
        # ...and an event whose object was written by someone else.
        await stream.queue.put(StoreEvent("ADDED", 12, "default", "db", _value(other)))
        for _ in range(20):
            await asyncio.sleep(0)
        cache.remember_written(bound, created)
        # A hand-over that names another object or an old version is not taken.
        cache.remember_written(_with_rv(stored_pod(metadata={"name": "x", "namespace": "default"}), 13), None)
        await stream.queue.put(StoreEvent("ADDED", 13, "default", "y", _value(other)))
        for _ in range(20):
            await asyncio.sleep(0)
        cache.task.cancel()
        return [ev for ev in sink.items if ev is not None]

    events = asyncio.run(scenario())
    assert [ev.rv for ev in events] == [10, 11, 12, 13]
    added, modified, foreign, mismatched = events
    assert added._object is created and modified._object is bound and modified._old is created
    assert foreign._object is None and mismatched._object is None  # decoded on demand, as before
    for ev in events:  # whatever the route, the objects are what decoding the store's JSON gives
        assert ev.object == decode_value(ev.value, ev.rv)
        assert orjson.loads(ev.object_json()) == ev.object
        if ev.old_value is not None:
            assert ev.old == decode_value(ev.old_value, ev.old_rv)


def test_a_written_object_with_another_previous_version_keeps_decoding_the_old_one() -> None:
    created = _with_rv(stored_pod(), 10)
    bound = _with_rv(bind_pod(PODS, created, "web", "n1"), 12)

    async def scenario() -> StoreEvent:
        stream = _StoreStream()
        cache = ResourceCache(stream, PODS, 10, 100)  # type: ignore[arg-type]
        sink = EventSink()
        cache.subscribe(sink, None, None, 10)
        cache.remember_written(bound, created)  # claims rv 10 was replaced; the store says 11
        changed = _with_rv(stored_pod(status={"phase": "Pending", "qosClass": "BestEffort"}), 11)
        await stream.queue.put(
            StoreEvent("MODIFIED", 12, "default", "web", _value(bound), _value(changed), 11)
        )
        for _ in range(20):
            await asyncio.sleep(0)
        cache.task.cancel()
        return sink.items[0]  # type: ignore[return-value]

    ev = asyncio.run(scenario())
    assert ev._object is bound and ev._old is None
    assert ev.old == decode_value(ev.old_value, 11)  # type: ignore[arg-type]


# --- small pure shortcuts ------------------------------------------------------------------------


def test_new_uid_is_a_random_version_4_uuid() -> None:
    uids = [strategy.new_uid() for _ in range(2000)]  # crosses several refills of the pool
    assert len(set(uids)) == len(uids)
    for text in uids[:50]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("text", ["10m", "16Mi", "1.5Gi", "2e3", "100", "0.1", "+1k", " 5 ", "1E-2"])
def test_cached_quantities_parse_as_before(text: str) -> None:
    first, second = parse_quantity(text), parse_quantity(text)
    assert first == second and isinstance(first, Fraction)


@pytest.mark.parametrize("bad", ["", "1.2.3", "abc", "10x", "1Kii", "."])
def test_refused_quantities_are_refused_every_time(bad: str) -> None:
    for _ in range(2):
        with pytest.raises(QuantityError):
            parse_quantity(bad)


def test_defaulting_copies_like_deepcopy_and_shares_nothing_mutable() -> None:
    obj = stored_pod(extra=[{"a": [1, 2.5, None, True, "s"]}, ("t", 1)])
    copied = _tree_copy(obj)
    assert copied == copy.deepcopy(obj)
    copied["spec"]["containers"][0]["image"] = "changed"
    copied["extra"][0]["a"].append(3)
    assert obj["spec"]["containers"][0]["image"] == "busybox" and obj["extra"][0]["a"] == [
        1,
        2.5,
        None,
        True,
        "s",
    ]
    body = stored_pod()
    frozen = copy.deepcopy(body)
    apply_defaults("Pod", body)
    assert body == frozen  # the caller's object is left as it was


@pytest.mark.parametrize(
    "header",
    [
        "application/json",
        "application/yaml",
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        "application/vnd.kubernetes.protobuf, */*",
    ],
)
def test_cached_accept_headers_answer_as_before(header: str) -> None:
    for allow_as in (True, False):
        assert codec.parse_accept(header, allow_as=allow_as) == codec._parse_accept.__wrapped__(
            header, allow_as
        )


def test_refused_accept_headers_are_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(errors.ApiError) as exc:
            codec.parse_accept("application/vnd.kubernetes.protobuf")
        assert exc.value.code == 406


# --- over HTTP ------------------------------------------------------------------------------------


def _watch(base: str, path: str, out: queue.Queue, headers: dict | None = None, **params: str) -> None:
    def run() -> None:
        try:
            with requests.get(
                base + path, params={"watch": "1", **params}, headers=headers, stream=True, timeout=(5, 60)
            ) as resp:
                for line in resp.iter_lines():
                    if line:
                        out.put(json.loads(line))
        except requests.RequestException as exc:
            out.put(exc)
        out.put(None)

    threading.Thread(target=run, daemon=True).start()


def _take(out: queue.Queue, n: int, timeout: float = 30.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        item = out.get(timeout=max(0.1, deadline - time.monotonic()))
        if item is None or isinstance(item, Exception):
            raise AssertionError(f"the watch ended after {len(got)} events: {item}")
        if item["type"] != "BOOKMARK":
            got.append(item)
    return got


def test_watchers_see_the_written_objects_exactly_as_stored(apiserver) -> None:  # noqa: F811
    base = apiserver.url
    session = requests.Session()
    session.post(
        base + "/api/v1/namespaces", json={"metadata": {"name": "fast"}}, timeout=30
    ).raise_for_status()
    pods = "/api/v1/namespaces/fast/pods"
    rv = session.get(base + pods, timeout=30).json()["metadata"]["resourceVersion"]
    plain: queue.Queue = queue.Queue()
    selective: queue.Queue = queue.Queue()
    _watch(base, pods, plain, resourceVersion=rv, timeoutSeconds="60")
    # A field selector makes the server match the decoded (or handed over) objects, and a
    # metadata-only watch encodes them again, where a plain watch passes the stored JSON on.
    _watch(base, pods, selective, resourceVersion=rv, timeoutSeconds="60",
           fieldSelector="status.phase!=Failed")  # fmt: skip
    metadata: queue.Queue = queue.Queue()
    _watch(base, pods, metadata, {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"},
           resourceVersion=rv, timeoutSeconds="60")  # fmt: skip
    count = 6
    for i in range(count):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p{i}", "labels": {"i": str(i)}},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }
                ]
            },
        }
        created = session.post(base + pods, json=pod, timeout=30)
        assert created.status_code == 201, created.text
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": f"p{i}", "annotations": {"why": "test"} if i % 2 else {}},
            "target": {"kind": "Node", "name": f"node-{i}"},
        }
        bound = session.post(base + f"{pods}/p{i}/binding", json=binding, timeout=30)
        assert bound.status_code == 201, bound.text
    again = session.post(base + f"{pods}/p0/binding", json={"target": {"name": "elsewhere"}}, timeout=30)
    assert again.status_code == 409 and 'already assigned to node "node-0"' in again.json()["message"]
    from_plain = _take(plain, 2 * count)
    from_selective = _take(selective, 2 * count)
    assert from_selective == from_plain
    from_metadata = _take(metadata, 2 * count)
    assert [(e["type"], e["object"]["metadata"]) for e in from_metadata] == [
        (e["type"], e["object"]["metadata"]) for e in from_plain
    ]
    assert all(e["object"]["kind"] == "PartialObjectMetadata" for e in from_metadata)
    assert [e["type"] for e in from_plain] == ["ADDED", "MODIFIED"] * count
    for i in range(count):
        current = session.get(base + f"{pods}/p{i}", timeout=30).json()
        assert from_plain[2 * i + 1]["object"] == current
        assert current["spec"]["nodeName"] == f"node-{i}"
        assert [c["type"] for c in current["status"]["conditions"]] == ["PodScheduled"]
        assert (current["metadata"].get("annotations") or {}) == ({"why": "test"} if i % 2 else {})
        assert int(current["metadata"]["resourceVersion"]) > int(
            from_plain[2 * i]["object"]["metadata"]["resourceVersion"]
        )


def test_a_binding_can_start_from_the_object_a_recent_event_holds() -> None:
    created = _with_rv(stored_pod(), 10)

    async def scenario() -> tuple[Any, Any, Any, Any]:
        stream = _StoreStream()
        caches = WatchCaches(stream, 100)  # type: ignore[arg-type]
        sink = EventSink()
        pump = asyncio.create_task(caches.pump(PODS, None, None, 10, sink))
        await asyncio.sleep(0)
        caches.written(PODS, created)
        await stream.queue.put(StoreEvent("ADDED", 10, "default", "web", _value(created)))
        for _ in range(20):
            await asyncio.sleep(0)
        found = (
            caches.decoded(PODS, "default", "web", 10),
            caches.decoded(PODS, "default", "other", 10),  # another object at that version: no
            caches.decoded(PODS, "elsewhere", "web", 10),
            caches.decoded(PODS, "default", "web", 9),
        )
        pump.cancel()
        await caches.stop()
        return found

    same, other_name, other_namespace, other_version = asyncio.run(scenario())
    assert same is created and same == decode_value(_value(created), 10)
    assert other_name is None and other_namespace is None and other_version is None
