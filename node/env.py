"""A container's environment, resolved the way the kubelet resolves it.

Pure: the caller (the node agent) fetches the Secrets, ConfigMaps and Services the pod refers to
and passes them in; nothing here talks to the API server or the engine, so every rule is unit
tested. The order follows the kubelet's: `envFrom` sources first, then `env` (later names win;
a value's `$(VAR)` references see the variables declared before it and the service variables),
then the Docker-links service variables of the services existing when the container starts, for
names the container did not set itself. A reference that cannot be resolved raises `EnvError`,
whose message is what `kubectl describe` shows under CreateContainerConfigError.
"""

from __future__ import annotations

import math
import re
from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from node.runtime.spec import expand, parse_quantity
from node.runtime.volumes import configmap_data, secret_data

__all__ = [
    "EnvError",
    "EnvSources",
    "container_env",
    "field_value",
    "referenced_configmaps",
    "referenced_secrets",
    "resource_value",
    "service_env",
]

# The services whose variables every pod gets, even with enableServiceLinks false.
MASTER_SERVICES = frozenset({"kubernetes"})
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class EnvError(Exception):
    """The environment cannot be built (kubectl: CreateContainerConfigError)."""


@dataclass
class EnvSources:
    """What a container's env may refer to. Missing names in `secrets`/`configmaps` are objects
    that do not exist; `services` are all services the node knows (any namespace)."""

    secrets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    configmaps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    services: Sequence[Mapping[str, Any]] = ()
    pod_ip: str = ""
    pod_ips: Sequence[str] = ()
    host_ip: str = ""
    host_ips: Sequence[str] = ()
    node_allocatable: Mapping[str, str] = field(default_factory=dict)


# --- what a pod refers to ------------------------------------------------------------------------


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _referenced(
    pod: Mapping[str, Any], env_key: str, from_key: str, volume_key: str, name_key: str
) -> set[str]:
    names: set[str] = set()
    for c in _containers(pod):
        for var in c.get("env") or []:
            ref = (var.get("valueFrom") or {}).get(env_key)
            if ref and ref.get("name"):
                names.add(str(ref["name"]))
        for source in c.get("envFrom") or []:
            ref = source.get(from_key)
            if ref and ref.get("name"):
                names.add(str(ref["name"]))
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        src = vol.get(volume_key)
        if src and src.get(name_key):
            names.add(str(src[name_key]))
        for proj in (vol.get("projected") or {}).get("sources") or []:
            ref = proj.get(volume_key)
            if ref and ref.get("name"):
                names.add(str(ref["name"]))
    return names


def referenced_secrets(pod: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets (in the pod's namespace) its env, envFrom and volumes use."""
    return _referenced(pod, "secretKeyRef", "secretRef", "secret", "secretName")


def referenced_configmaps(pod: Mapping[str, Any]) -> set[str]:
    """Names of the ConfigMaps (in the pod's namespace) its env, envFrom and volumes use."""
    return _referenced(pod, "configMapKeyRef", "configMapRef", "configMap", "name")


# --- service links -------------------------------------------------------------------------------


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _service_ip_set(svc: Mapping[str, Any]) -> bool:
    ip = (svc.get("spec") or {}).get("clusterIP") or ""
    return ip not in ("", "None")


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _variables_of(svc: Mapping[str, Any]) -> list[tuple[str, str]]:
    spec = svc.get("spec") or {}
    ports = spec.get("ports") or []
    if not ports:
        return []
    ip = str(spec["clusterIP"])
    prefix = _env_name(str((svc.get("metadata") or {}).get("name") or ""))
    out = [(f"{prefix}_SERVICE_HOST", ip), (f"{prefix}_SERVICE_PORT", str(ports[0].get("port")))]
    for p in ports:
        if p.get("name"):
            out.append((f"{prefix}_SERVICE_PORT_{_env_name(str(p['name']))}", str(p.get("port"))))
    # The Docker-links variables; Docker special-cases the first port.
    for i, p in enumerate(ports):
        proto = str(p.get("protocol") or "TCP")
        port = int(p.get("port") or 0)
        url = f"{proto.lower()}://{_join_host_port(ip, port)}"
        if i == 0:
            out.append((f"{prefix}_PORT", url))
        port_prefix = f"{prefix}_PORT_{port}_{proto.upper()}"
        out += [
            (port_prefix, url),
            (f"{port_prefix}_PROTO", proto.lower()),
            (f"{port_prefix}_PORT", str(port)),
            (f"{port_prefix}_ADDR", ip),
        ]
    return out


def service_env(
    services: Iterable[Mapping[str, Any]], namespace: str, enable_service_links: bool = True
) -> dict[str, str]:
    """The service variables a pod in `namespace` gets: those of the master service
    (`default/kubernetes`) always, those of its own namespace's services when
    enableServiceLinks is true. Services without a cluster IP (headless) give none."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for svc in services:
        meta = svc.get("metadata") or {}
        name, ns = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        if not _service_ip_set(svc):
            continue
        if ns == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, svc)
        elif ns == namespace and enable_service_links:
            chosen[name] = svc
    out: dict[str, str] = {}
    for name in sorted(chosen):
        out.update(_variables_of(chosen[name]))
    return out


# --- downward API values -------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\[(['\"]?)(.*)\2\]$")


def field_value(pod: Mapping[str, Any], path: str, sources: EnvSources) -> str:
    """A fieldRef's value; the paths the kubelet supports for env."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace") or "default",
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": sources.pod_ip,
        "status.hostIP": sources.host_ip,
        "status.podIPs": ",".join(sources.pod_ips or ([sources.pod_ip] if sources.pod_ip else [])),
        "status.hostIPs": ",".join(sources.host_ips or ([sources.host_ip] if sources.host_ip else [])),
    }
    if path in simple:
        return str(simple[path] or "")
    m = _SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(3), ""))
    raise EnvError(f"unsupported fieldRef fieldPath {path!r}")


def _ceil_div(value: Decimal, divisor: Decimal) -> str:
    return str(math.ceil(value / divisor))


def resource_value(
    pod: Mapping[str, Any], container_name: str, ref: Mapping[str, Any], allocatable: Mapping[str, str]
) -> str:
    """A resourceFieldRef's value: the container's request or limit in units of `divisor`
    (rounded up); an unset limit is the node's allocatable, as in the kubelet."""
    name = str(ref.get("containerName") or container_name)
    container = next((c for c in _containers(pod) if c.get("name") == name), None)
    if container is None:
        raise EnvError(f"resourceFieldRef: container {name!r} not found in pod")
    resource = str(ref.get("resource") or "")
    group, _, kind = resource.partition(".")
    if group not in ("limits", "requests") or kind not in ("cpu", "memory", "ephemeral-storage"):
        raise EnvError(f"unsupported resourceFieldRef resource {resource!r}")
    values = (container.get("resources") or {}).get(group) or {}
    raw = values.get(kind)
    if raw is None and group == "limits":
        raw = allocatable.get(kind)
    try:
        value = parse_quantity(raw) if raw is not None else Decimal(0)
        divisor = parse_quantity(ref.get("divisor") or "1")
    except ValueError as e:
        raise EnvError(f"resourceFieldRef {resource}: {e}") from e
    if divisor == 0:
        divisor = Decimal(1)
    if kind == "cpu":
        # Millicores, then whole units of the divisor, rounded up (1m is the least a limit can be).
        return _ceil_div(Decimal(math.ceil(value * 1000)), Decimal(math.ceil(divisor * 1000)) or Decimal(1))
    return _ceil_div(Decimal(math.ceil(value)), divisor)


# --- the environment -----------------------------------------------------------------------------


def _lookup(
    kind: str, objects: Mapping[str, Mapping[str, Any]], name: str, optional: bool
) -> dict[str, bytes] | None:
    obj = objects.get(name)
    if obj is None:
        if optional:
            return None
        raise EnvError(f'{kind.lower()} "{name}" not found')
    return secret_data(obj) if kind == "Secret" else configmap_data(obj)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def container_env(
    pod: Mapping[str, Any], container: Mapping[str, Any], sources: EnvSources
) -> dict[str, str]:
    """The container's final environment, in the order the engine should receive it."""
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    enable_links = (pod.get("spec") or {}).get("enableServiceLinks")
    services = service_env(sources.services, namespace, enable_links is not False)
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, key, objects in (
            ("ConfigMap", "configMapRef", sources.configmaps),
            ("Secret", "secretRef", sources.secrets),
        ):
            ref = source.get(key)
            if not ref:
                continue
            data = _lookup(kind, objects, str(ref.get("name") or ""), bool(ref.get("optional")))
            for k, v in (data or {}).items():
                name = prefix + k
                if _ENV_NAME.match(name):  # the kubelet skips invalid names (with an event)
                    env[name] = _text(v)
    for var in container.get("env") or []:
        name = str(var.get("name") or "")
        value_from = var.get("valueFrom")
        if var.get("value") not in (None, "") or not value_from:
            env[name] = expand(str(var.get("value") or ""), ChainMap(env, services))
            continue
        if "fieldRef" in value_from:
            env[name] = field_value(pod, str(value_from["fieldRef"].get("fieldPath") or ""), sources)
        elif "resourceFieldRef" in value_from:
            env[name] = resource_value(
                pod,
                str(container.get("name") or ""),
                value_from["resourceFieldRef"],
                sources.node_allocatable,
            )
        else:
            for kind, key, objects in (
                ("ConfigMap", "configMapKeyRef", sources.configmaps),
                ("Secret", "secretKeyRef", sources.secrets),
            ):
                ref = value_from.get(key)
                if not ref:
                    continue
                obj_name, item = str(ref.get("name") or ""), str(ref.get("key") or "")
                optional = bool(ref.get("optional"))
                data = _lookup(kind, objects, obj_name, optional)
                if data is None:
                    break
                if item not in data:
                    if optional:
                        break
                    raise EnvError(f"couldn't find key {item} in {kind} {namespace}/{obj_name}")
                env[name] = _text(data[item])
                break
    for k, v in services.items():
        env.setdefault(k, v)
    return env
