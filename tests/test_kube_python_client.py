"""The official `kubernetes` Python client against grove's API server: create, list with
selectors, patch, delete and watch, as a program using that client would."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, config, watch

from tests.apiserver_fixture import apiserver  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(apiserver):  # noqa: F811
    api_client = config.new_client_from_config(config_file=apiserver.kubeconfig)
    try:
        yield api_client
    finally:
        api_client.close()


def _configmap(name: str, labels: dict[str, str], data: dict[str, str]) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data=data)


def test_version(api):
    assert client.VersionApi(api).get_code().git_version == "v1.32.0-grove"


def test_create_list_patch_delete(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
    for i in range(4):
        v1.create_namespaced_config_map(
            "py", _configmap(f"cm{i}", {"idx": str(i), "grp": "a" if i < 2 else "b"}, {"k": str(i)})
        )

    def names(items) -> list[str]:  # type: ignore[no-untyped-def]
        return sorted(o.metadata.name for o in items)

    assert names(v1.list_namespaced_config_map("py", label_selector="grp=a").items) == ["cm0", "cm1"]
    assert names(v1.list_namespaced_config_map("py", label_selector="grp!=a").items) == ["cm2", "cm3"]
    assert names(v1.list_namespaced_config_map("py", label_selector="idx in (1,3)").items) == ["cm1", "cm3"]
    assert names(v1.list_namespaced_config_map("py", label_selector="idx,grp notin (a)").items) == [
        "cm2",
        "cm3",
    ]
    assert names(v1.list_namespaced_config_map("py", field_selector="metadata.name=cm2").items) == ["cm2"]
    everywhere = v1.list_config_map_for_all_namespaces(label_selector="grp=b")
    assert names(everywhere.items) == ["cm2", "cm3"]
    page = v1.list_namespaced_config_map("py", limit=3)
    assert len(page.items) == 3 and page.metadata._continue
    rest = v1.list_namespaced_config_map("py", limit=3, _continue=page.metadata._continue)
    assert names(page.items + rest.items) == ["cm0", "cm1", "cm2", "cm3"] and not rest.metadata._continue

    patched = v1.patch_namespaced_config_map(
        "cm0", "py", {"data": {"k": "patched"}, "metadata": {"labels": {"new": "x"}}}
    )
    assert patched.data == {"k": "patched"} and patched.metadata.labels["new"] == "x"
    before = int(patched.metadata.resource_version)
    again = v1.replace_namespaced_config_map("cm0", "py", patched)
    assert int(again.metadata.resource_version) == before  # an update that changes nothing is not written
    patched.data = {"k": "replaced"}
    replaced = v1.replace_namespaced_config_map("cm0", "py", patched)
    assert replaced.data == {"k": "replaced"} and int(replaced.metadata.resource_version) > before
    with pytest.raises(client.ApiException) as stale:
        v1.replace_namespaced_config_map("cm0", "py", patched)  # still carries the old resourceVersion
    assert stale.value.status == 409

    v1.delete_namespaced_config_map("cm0", "py")
    with pytest.raises(client.ApiException) as missing:
        v1.read_namespaced_config_map("cm0", "py")
    assert missing.value.status == 404
    v1.delete_collection_namespaced_config_map("py", label_selector="grp=b")
    assert names(v1.list_namespaced_config_map("py").items) == ["cm1"]


def test_deployment_and_scale(api):
    apps = client.AppsV1Api(api)
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "web"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="grove/busybox:1.35")]),
    )
    spec = client.V1DeploymentSpec(
        replicas=2, selector=client.V1LabelSelector(match_labels={"app": "web"}), template=template
    )
    created = apps.create_namespaced_deployment(
        "default", client.V1Deployment(metadata=client.V1ObjectMeta(name="web"), spec=spec)
    )
    assert created.metadata.generation == 1 and created.spec.strategy.type == "RollingUpdate"
    assert created.spec.template.spec.restart_policy == "Always"
    scale = apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 5}})
    assert scale.spec.replicas == 5 and scale.status.selector == "app=web"
    current = apps.read_namespaced_deployment("web", "default")
    assert current.spec.replicas == 5 and current.metadata.generation == 2


def test_watch_stream_sees_changes(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="watched")))
    v1.create_namespaced_config_map("watched", _configmap("first", {"w": "1"}, {"v": "0"}))
    seen: list[tuple[str, str, str | None]] = []
    started = threading.Event()
    done = threading.Event()

    def run() -> None:
        w = watch.Watch()
        for event in w.stream(
            v1.list_namespaced_config_map, "watched", label_selector="w=1", timeout_seconds=20
        ):
            obj = event["object"]
            seen.append((event["type"], obj.metadata.name, (obj.data or {}).get("v")))
            started.set()
            if event["type"] == "DELETED" and obj.metadata.name == "second":
                w.stop()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(15)  # the initial ADDED of "first"
    v1.patch_namespaced_config_map("first", "watched", {"data": {"v": "1"}})
    v1.create_namespaced_config_map("watched", _configmap("second", {"w": "1"}, {"v": "a"}))
    v1.create_namespaced_config_map("watched", _configmap("unlabeled", {"w": "0"}, {"v": "x"}))
    v1.delete_namespaced_config_map("second", "watched")
    assert done.wait(20)
    assert seen == [
        ("ADDED", "first", "0"),
        ("MODIFIED", "first", "1"),
        ("ADDED", "second", "a"),
        ("DELETED", "second", "a"),
    ]
