"""Container environments resolved as the kubelet resolves them (pure: objects are passed in)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from node.env import (
    EnvError,
    EnvSources,
    container_env,
    field_value,
    referenced_configmaps,
    referenced_secrets,
    resource_value,
    service_env,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


POD: dict[str, Any] = {
    "metadata": {
        "name": "web-1",
        "namespace": "shop",
        "uid": "uid-1",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"owner": "ops"},
    },
    "spec": {
        "nodeName": "node-a",
        "serviceAccountName": "builder",
        "containers": [
            {
                "name": "app",
                "image": "grove/busybox:1.35",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}},
            }
        ],
    },
}

SECRET = {"metadata": {"name": "creds"}, "data": {"user": b64("admin"), "pass": b64("s3cret")}}
CONFIG = {"metadata": {"name": "settings"}, "data": {"color": "blue", "size": "L", "bad key": "x"}}


def svc(name: str, namespace: str, ip: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"clusterIP": ip, "ports": ports}}


def sources(**kw: Any) -> EnvSources:
    base: dict[str, Any] = {
        "secrets": {"creds": SECRET},
        "configmaps": {"settings": CONFIG},
        "pod_ip": "10.88.0.7",
        "host_ip": "192.0.2.1",
        "node_allocatable": {"cpu": "2", "memory": "4Gi"},
    }
    base.update(kw)
    return EnvSources(**base)


def env_of(container: dict[str, Any], pod: dict[str, Any] | None = None, **kw: Any) -> dict[str, str]:
    return container_env(pod or POD, {"name": "app", **container}, sources(**kw))


def test_values_and_expansion() -> None:
    env = env_of(
        {
            "env": [
                {"name": "A", "value": "one"},
                {"name": "B", "value": "$(A)-two"},
                {"name": "C", "value": "$(MISSING) and $$(A)"},
                {"name": "EMPTY", "value": ""},
            ]
        }
    )
    assert env["A"] == "one" and env["B"] == "one-two"
    assert env["C"] == "$(MISSING) and $(A)"
    assert env["EMPTY"] == ""


def test_env_from_with_prefix_and_env_overrides() -> None:
    env = env_of(
        {
            "envFrom": [
                {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                {"secretRef": {"name": "creds"}},
            ],
            "env": [{"name": "user", "value": "override"}],
        }
    )
    assert env["CFG_color"] == "blue" and env["CFG_size"] == "L"
    assert "CFG_bad key" not in env  # not a valid variable name: skipped, as the kubelet does
    assert env["pass"] == "s3cret" and env["user"] == "override"
    assert list(env)[:2] == ["CFG_color", "CFG_size"]  # envFrom first, then env


def test_key_refs() -> None:
    env = env_of(
        {
            "env": [
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pass"}}},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}},
                {
                    "name": "OPT",
                    "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
                },
                {
                    "name": "OPTKEY",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "x", "optional": True}},
                },
            ]
        }
    )
    assert env["PASSWORD"] == "s3cret" and env["COLOR"] == "blue"
    assert "OPT" not in env and "OPTKEY" not in env


@pytest.mark.parametrize(
    ("var", "message"),
    [
        ({"secretKeyRef": {"name": "nope", "key": "k"}}, 'secret "nope" not found'),
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, 'configmap "nope" not found'),
        ({"secretKeyRef": {"name": "creds", "key": "token"}}, "couldn't find key token in Secret shop/creds"),
        (
            {"configMapKeyRef": {"name": "settings", "key": "x"}},
            "couldn't find key x in ConfigMap shop/settings",
        ),
    ],
)
def test_missing_references_are_config_errors(var: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvError) as e:
        env_of({"env": [{"name": "X", "valueFrom": var}]})
    assert str(e.value) == message


def test_missing_env_from_source() -> None:
    with pytest.raises(EnvError, match='configmap "gone" not found'):
        env_of({"envFrom": [{"configMapRef": {"name": "gone"}}]})
    assert env_of({"envFrom": [{"configMapRef": {"name": "gone", "optional": True}}]}) == {}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "uid-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.annotations['owner']", "ops"),
        ("metadata.labels['none']", ""),
        ("spec.nodeName", "node-a"),
        ("spec.serviceAccountName", "builder"),
        ("status.podIP", "10.88.0.7"),
        ("status.hostIP", "192.0.2.1"),
        ("status.podIPs", "10.88.0.7"),
    ],
)
def test_field_refs(path: str, value: str) -> None:
    assert field_value(POD, path, sources()) == value
    env = env_of({"env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]})
    assert env["V"] == value


def test_unsupported_field_ref() -> None:
    with pytest.raises(EnvError, match="unsupported fieldRef"):
        field_value(POD, "spec.hostname", sources())


@pytest.mark.parametrize(
    ("resource", "divisor", "value"),
    [
        ("limits.memory", None, str(64 * 2**20)),
        ("limits.memory", "1Mi", "64"),
        ("requests.memory", "1Mi", "32"),
        ("requests.cpu", "1m", "250"),
        ("requests.cpu", None, "1"),  # 250m in whole cores, rounded up
        ("limits.cpu", None, "2"),  # no limit: the node's allocatable
        ("limits.cpu", "1m", "2000"),
        ("requests.ephemeral-storage", None, "0"),
    ],
)
def test_resource_field_refs(resource: str, divisor: str | None, value: str) -> None:
    ref: dict[str, Any] = {"resource": resource}
    if divisor:
        ref["divisor"] = divisor
    assert resource_value(POD, "app", ref, {"cpu": "2", "memory": "4Gi"}) == value


def test_service_links() -> None:
    services = [
        svc("redis-primary", "shop", "10.96.0.11", [{"port": 6379, "protocol": "TCP"}]),
        svc(
            "web",
            "shop",
            "10.96.0.12",
            [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}],
        ),
        svc("headless", "shop", "None", [{"port": 80}]),
        svc("other", "elsewhere", "10.96.0.13", [{"port": 1}]),
        svc("kubernetes", "default", "10.96.0.1", [{"name": "https", "port": 443, "protocol": "TCP"}]),
    ]
    env = service_env(services, "shop")
    assert env["REDIS_PRIMARY_SERVICE_HOST"] == "10.96.0.11"
    assert env["REDIS_PRIMARY_SERVICE_PORT"] == "6379"
    assert env["REDIS_PRIMARY_PORT"] == "tcp://10.96.0.11:6379"
    assert env["REDIS_PRIMARY_PORT_6379_TCP"] == "tcp://10.96.0.11:6379"
    assert env["REDIS_PRIMARY_PORT_6379_TCP_PROTO"] == "tcp"
    assert env["REDIS_PRIMARY_PORT_6379_TCP_PORT"] == "6379"
    assert env["REDIS_PRIMARY_PORT_6379_TCP_ADDR"] == "10.96.0.11"
    assert (
        env["WEB_SERVICE_PORT"] == "80"
        and env["WEB_SERVICE_PORT_HTTP"] == "80"
        and env["WEB_SERVICE_PORT_DNS"] == "53"
    )
    assert env["WEB_PORT_53_UDP"] == "udp://10.96.0.12:53" and env["WEB_PORT"] == "tcp://10.96.0.12:80"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert not any(k.startswith(("HEADLESS_", "OTHER_")) for k in env)
    # enableServiceLinks: false keeps only the master service's variables.
    off = service_env(services, "shop", enable_service_links=False)
    assert set(off) == {k for k in env if k.startswith("KUBERNETES_")}


def test_service_variables_in_a_container_env() -> None:
    services = [svc("db", "shop", "10.96.0.20", [{"port": 5432}])]
    env = env_of(
        {
            "env": [
                {"name": "DB_URL", "value": "postgres://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)"},
                {"name": "DB_PORT", "value": "x"},
            ]
        },
        services=services,
    )
    assert env["DB_URL"] == "postgres://10.96.0.20:5432"
    assert env["DB_PORT"] == "x"  # the container's own variable wins over the service's
    assert env["DB_SERVICE_HOST"] == "10.96.0.20"
    no_links = {**POD, "spec": {**POD["spec"], "enableServiceLinks": False}}
    assert "DB_SERVICE_HOST" not in env_of({}, pod=no_links, services=services)


def test_referenced_objects() -> None:
    pod = {
        "spec": {
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s-init"}}]}],
            "containers": [
                {
                    "name": "c",
                    "env": [
                        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s-env", "key": "k"}}},
                        {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c-env", "key": "k"}}},
                    ],
                    "envFrom": [{"configMapRef": {"name": "c-from"}}],
                }
            ],
            "volumes": [
                {"name": "v1", "secret": {"secretName": "s-vol"}},
                {"name": "v2", "configMap": {"name": "c-vol"}},
                {
                    "name": "v3",
                    "projected": {
                        "sources": [{"secret": {"name": "s-proj"}}, {"configMap": {"name": "c-proj"}}]
                    },
                },
            ],
        }
    }
    assert referenced_secrets(pod) == {"s-init", "s-env", "s-vol", "s-proj"}
    assert referenced_configmaps(pod) == {"c-env", "c-from", "c-vol", "c-proj"}
