"""The API server's fast paths give the same answers as the slow, exact code they stand in for.

The write path skips work when it can prove it unnecessary: a body that is surely clean skips
the detailed type/unknown/duplicate field checks, a new object's managedFields skip the field
by field comparison, an update's managedFields are computed over the changed top-level fields
only, a merge patch is applied in place, and watch events splice the resourceVersion into the
stored JSON instead of decoding it. Each is checked here against the code it replaces, on the
kinds of objects the API serves. Pure functions only: no sockets, no processes.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest

from orchestrator import openapi
from orchestrator.apiserver.codec import may_have_duplicates
from orchestrator.apiserver.handlers import merge_patch_into, record_create, record_update
from orchestrator.apiserver.storage import StoreEvent, decode_value, with_resource_version
from orchestrator.apiserver.typecheck import is_clean, type_error
from orchestrator.apiserver.watchcache import EventSink, ResourceCache
from orchestrator.patch import json_merge_patch, track_update
from orchestrator.resources import DEFAULT_REGISTRY

PODS = DEFAULT_REGISTRY.get("", "v1", "pods")
DEPLOYMENTS = DEFAULT_REGISTRY.get("apps", "v1", "deployments")
SERVICES = DEFAULT_REGISTRY.get("", "v1", "services")
CONFIGMAPS = DEFAULT_REGISTRY.get("", "v1", "configmaps")


def pod(**extra: Any) -> dict[str, Any]:
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "ports": [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}],
                    "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "10m", "memory": 16777216}},
                }
            ],
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "nodeSelector": {"disk": "ssd"},
        },
    }
    obj.update(extra)
    return obj


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod()["spec"]},
    },
}
SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
}
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}


def broken_variants() -> list[tuple[Any, dict[str, Any]]]:
    """Bodies with one wrongly typed or unknown field each."""
    out = []
    bad = pod()
    bad["spec"]["containers"][0]["ports"][0]["containerPort"] = "80"
    out.append((PODS, bad))
    bad = pod()
    bad["spec"]["containers"][0]["imagee"] = "typo"
    out.append((PODS, bad))
    bad = pod()
    bad["metadata"]["labels"]["app"] = True
    out.append((PODS, bad))
    bad = pod()
    bad["spec"]["containers"][0]["resources"]["requests"]["cpu"] = [1]
    out.append((PODS, bad))
    out.append((PODS, pod(extra="field")))
    bad = pod()
    bad["spec"]["tolerations"] = {"key": "k"}
    out.append((PODS, bad))
    bad = copy.deepcopy(DEPLOYMENT)
    bad["spec"]["replicas"] = 2.5
    out.append((DEPLOYMENTS, bad))
    bad = copy.deepcopy(DEPLOYMENT)
    bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    out.append((DEPLOYMENTS, bad))
    bad = copy.deepcopy(SERVICE)
    bad["spec"]["ports"][0]["targetPort"] = True
    out.append((SERVICES, bad))
    bad = copy.deepcopy(CONFIGMAP)
    bad["data"]["a"] = 1
    out.append((CONFIGMAPS, bad))
    return out


@pytest.mark.parametrize(
    ("res", "obj"), [(PODS, pod()), (DEPLOYMENTS, DEPLOYMENT), (SERVICES, SERVICE), (CONFIGMAPS, CONFIGMAP)]
)
def test_clean_bodies_are_recognised(res: Any, obj: dict[str, Any]) -> None:
    assert type_error(res, obj) is None and openapi.unknown_fields(res, obj) == []
    assert is_clean(res, obj)


@pytest.mark.parametrize(("res", "obj"), broken_variants())
def test_a_body_with_a_problem_is_never_called_clean(res: Any, obj: dict[str, Any]) -> None:
    assert type_error(res, obj) or openapi.unknown_fields(res, obj)
    assert not is_clean(res, obj)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',
        b'{"metadata":{"name":"x","name":"y"}}',
        b'{"spec":{"containers":[{"name":"a","image":"b","image":"c"}]}}',
        b'{"a":{"b":1},"a":{"c":2}}',
        b'{"a" :1,"a":2}',
        b'{"a":"x\\":y","a":1}',
        b'{"k\\u0022":1,"k\\"":2}',
    ],
)
def test_duplicate_keys_are_never_missed(raw: bytes) -> None:
    obj = orjson.loads(raw)
    assert openapi.find_duplicate_fields(raw) != []
    assert may_have_duplicates(raw, "application/json", obj)


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(pod()),
        orjson.dumps(DEPLOYMENT),
        b'{"a": 1, "b": {"c": "x\\":y", "d": [{"e": null}]}}',
        b'{"key\\\\":1,"other":"\\\\"}',
    ],
)
def test_plain_json_without_duplicates_takes_the_fast_path(raw: bytes) -> None:
    assert openapi.find_duplicate_fields(raw) == []
    assert not may_have_duplicates(raw, "application/json", orjson.loads(raw))
    assert may_have_duplicates(raw, "application/yaml", orjson.loads(raw))  # YAML: always looked at


def _with_owners(obj: dict[str, Any]) -> dict[str, Any]:
    return track_update(None, obj, "creator", "2024-01-01T00:00:00Z")


@pytest.mark.parametrize("obj", [pod(), DEPLOYMENT, SERVICE, CONFIGMAP, pod(status={"phase": "Pending"})])
def test_record_create_matches_track_update(obj: dict[str, Any]) -> None:
    expected = track_update(None, obj, "kubectl", "2024-01-01T00:00:00Z")
    mine = copy.deepcopy(obj)
    record_create(mine, "kubectl", "2024-01-01T00:00:00Z")
    assert mine == expected


def _changes() -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    old = _with_owners(pod(status={"phase": "Pending", "qosClass": "Burstable"}))
    old["metadata"]["managedFields"].append(
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:phase": {}}},
            "subresource": "status",
        }
    )
    cases = []
    running = copy.deepcopy(old)
    running["status"] = {
        "phase": "Running",
        "qosClass": "Burstable",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0}],
    }
    cases.append(("status", old, running, "status"))
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"] = {"app": "web", "tier": "front"}
    cases.append(("labels", old, relabelled, ""))
    respec = copy.deepcopy(old)
    respec["spec"]["containers"][0]["image"] = "busybox:2"
    del respec["spec"]["nodeSelector"]
    cases.append(("image and a removed field", old, respec, ""))
    same = copy.deepcopy(old)
    cases.append(("nothing", old, same, ""))
    scaled = _with_owners(copy.deepcopy(DEPLOYMENT))
    more = copy.deepcopy(scaled)
    more["spec"]["replicas"] = 5
    more["metadata"]["annotations"] = {"note": "x"}
    cases.append(("deployment", scaled, more, ""))
    return cases


@pytest.mark.parametrize(
    ("what", "old", "new", "sub"), _changes(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_record_update_matches_track_update(what: str, old: dict, new: dict, sub: str) -> None:
    for manager in ("kubectl", "kubelet", "creator"):
        expected = track_update(old, new, manager, "2024-02-02T00:00:00Z", sub)
        mine = copy.deepcopy(new)
        record_update(old, mine, manager, "2024-02-02T00:00:00Z", sub)
        assert mine == expected, (what, manager)


@pytest.mark.parametrize(
    "patch",
    [
        {"status": {"phase": "Running", "conditions": [{"type": "Ready"}]}},
        {"metadata": {"labels": {"app": None, "new": "x"}}, "spec": {"nodeSelector": None}},
        {"spec": {"containers": [{"name": "other"}]}, "extra": {"a": {"b": None, "c": 1}}},
        {"spec": "replaced"},
        {"status": {"phase": None}},
    ],
)
def test_merge_patch_into_matches_json_merge_patch(patch: dict[str, Any]) -> None:
    target = pod(status={"phase": "Pending"})
    expected = json_merge_patch(target, patch)
    patch_before = copy.deepcopy(patch)
    result = merge_patch_into(copy.deepcopy(target), patch)
    assert result == expected
    assert patch == patch_before
    # Values taken from the patch are not shared with it: a retry applies the same patch.
    if isinstance(result.get("status", {}).get("conditions"), list):
        result["status"]["conditions"].append({"type": "X"})
        assert patch == patch_before


def test_resource_version_spliced_into_stored_json() -> None:
    for obj in (pod(), DEPLOYMENT, {"metadata": {}}, {"apiVersion": "v1", "metadata": {"name": "a"}, "x": 1}):
        value = orjson.dumps(obj).decode()
        spliced = with_resource_version(value, 42)
        assert spliced is not None
        assert orjson.loads(spliced) == decode_value(value, 42)
    # Where the top-level metadata is not the first object opened, or a resourceVersion is
    # stored already, it declines (the caller decodes instead).
    nested_first = {"spec": {"template": {"metadata": {"name": "t"}}}, "metadata": {"name": "a"}}
    assert with_resource_version(orjson.dumps(nested_first).decode(), 1) is None
    assert with_resource_version('{"a":"{","metadata":{}}', 1) is None
    assert with_resource_version('{"metadata":{"resourceVersion":"3"}}', 1) is None


def test_store_event_line_is_the_decoded_object() -> None:
    old = orjson.dumps(pod()).decode()
    new = orjson.dumps(pod(status={"phase": "Running"})).decode()
    ev = StoreEvent("MODIFIED", 9, "default", "web", new, old, 7)
    assert orjson.loads(ev.object_json()) == ev.object
    assert ev.object["metadata"]["resourceVersion"] == "9"
    assert ev.old["metadata"]["resourceVersion"] == "7" and "status" not in ev.old
    broken = StoreEvent("ADDED", 3, "default", "x", "not json")
    assert broken.object is None and broken.object_json() is None


class _FakeStorage:
    """Yields the given events as a store watch would, then waits."""

    def __init__(self, events: list[StoreEvent]) -> None:
        self.events = events

    async def watch(self, res: Any, namespace: Any, since: int, name: Any = None) -> Any:
        for ev in self.events:
            yield ev
        await asyncio.Future()


def _pod_event(type_: str, rv: int, name: str, node: str, old_node: str | None = None) -> StoreEvent:
    def value(n: str) -> str:
        obj = pod()
        obj["metadata"]["name"] = name
        if n:
            obj["spec"]["nodeName"] = n
        return orjson.dumps(obj).decode()

    old = value(old_node) if old_node is not None else None
    return StoreEvent(type_, rv, "default", name, value(node), old, rv - 1 if old else 0)


def test_watch_cache_sends_node_watches_only_their_pods_and_keeps_the_latest() -> None:
    events = [
        _pod_event("ADDED", 10, "a", ""),
        _pod_event("MODIFIED", 11, "a", "n1", ""),  # bound to n1
        _pod_event("ADDED", 12, "b", "n2"),
        _pod_event("MODIFIED", 13, "a", "n2", "n1"),  # moved away from n1 (a test of "leaving")
        _pod_event("DELETED", 14, "b", "n2"),
    ]

    async def scenario() -> tuple[list[int], list[int], list[int], dict]:
        cache = ResourceCache(_FakeStorage(events), PODS, 10, 100)  # type: ignore[arg-type]
        n1, n2, everything = EventSink(), EventSink(), EventSink()
        cache.subscribe(n1, None, None, 10, node="n1")
        cache.subscribe(n2, None, None, 10, node="n2")
        cache.subscribe(everything, None, None, 10)
        for _ in range(50):
            await asyncio.sleep(0)
        cache.task.cancel()
        got = [[ev.rv for ev in sink.items if ev is not None] for sink in (n1, n2, everything)]
        return got[0], got[1], got[2], dict(cache.latest)

    n1, n2, everything, latest = asyncio.run(scenario())
    assert n1 == [11, 13]
    assert n2 == [12, 13, 14]
    assert everything == [10, 11, 12, 13, 14]
    assert set(latest) == {("default", "a")} and latest[("default", "a")][0] == 13
