"""Pure translation from Kubernetes pod specs to engine settings.

Everything here is a function of its arguments — no engine, no clock — so the Kubernetes rules
(quantities, command/args against ENTRYPOINT/CMD, `$(VAR)` expansion, dnsPolicy, hostPorts,
volumeMounts with subPath) are unit-tested without Docker. `docker_runtime` applies the results.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from node.runtime.types import (
    LABEL_CONTAINER_HASH,
    LABEL_CONTAINER_NAME,
    LABEL_GRACE_PERIOD,
    LABEL_KIND,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    LABEL_SANDBOX_ID,
    CreateContainerError,
)

# The node whose agent created the container. Agents sharing one engine (several nodes on one host,
# `grove up --nodes 3`) tell their containers apart by it, and `grove down` can find a cluster's
# containers by it. (Its natural home is node.runtime.types, next to the other labels.)
LABEL_NODE = "io.grove.node"

# --- quantities -------------------------------------------------------------------------------

_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+))?([a-zA-Z]*)$")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str | float) -> Decimal:
    """A Kubernetes resource quantity ("500m", "128Mi", "1.5", "1e3") as an exact number."""
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    m = _QUANTITY.match(str(value).strip())
    if not m or m.group(3) not in _SUFFIXES:
        raise ValueError(f"quantities must match the regular expression of Kubernetes quantities: {value!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as e:
        raise ValueError(f"invalid quantity {value!r}") from e
    if m.group(2):
        number *= Decimal(10) ** int(m.group(2))
    return number * _SUFFIXES[m.group(3)]


@dataclass
class Resources:
    """Engine resource settings for one container."""

    mem_limit: int | None = None  # bytes; swap is set to the same, i.e. none
    nano_cpus: int | None = None
    cpu_shares: int = 2  # kubelet's value for a container without a cpu request


def container_resources(container: Mapping[str, Any]) -> Resources:
    """limits.memory -> memory limit; limits.cpu -> CFS quota; requests.cpu -> cpu shares."""
    res = container.get("resources") or {}
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    out = Resources()
    try:
        if "memory" in limits:
            out.mem_limit = math.ceil(parse_quantity(limits["memory"]))
        if "cpu" in limits:
            out.nano_cpus = max(1, math.ceil(parse_quantity(limits["cpu"]) * Decimal(10**9)))
        cpu_request = requests.get("cpu", limits.get("cpu"))  # the API defaults requests to limits
        if cpu_request is not None:
            milli = math.ceil(parse_quantity(cpu_request) * 1000)
            out.cpu_shares = max(2, milli * 1024 // 1000)
    except ValueError as e:
        raise CreateContainerError(f"container {container.get('name')!r}: {e}") from e
    return out


# --- command and args -----------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, unknown ones left as they are,
    and `$$` escapes a dollar (so `$$(VAR)` yields the literal `$(VAR)`)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


def entrypoint_and_cmd(
    container: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[list[str] | None, list[str] | None]:
    """(entrypoint, cmd) for the engine; None keeps the image's own.

    Kubernetes: `command` replaces the image's ENTRYPOINT and drops its CMD; `args` replace CMD.
    The engine drops the image's CMD by itself whenever an entrypoint is given.
    """
    command = container.get("command")
    args = container.get("args")
    entrypoint = [expand(str(a), env) for a in command] if command else None
    cmd = [expand(str(a), env) for a in args] if args else None
    return entrypoint, cmd


# --- names and labels -----------------------------------------------------------------------

_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


def container_name(namespace: str, pod: str, container: str, restart: int, uid: str) -> str:
    """grove_<ns>_<pod>_<container>_<restart>_<uid8>, safe for the engine."""
    parts = [namespace, pod, container, str(restart), uid.replace("-", "")[:8]]
    return "grove_" + "_".join(_UNSAFE.sub("-", p) for p in parts)


def pod_identity(pod: Mapping[str, Any]) -> tuple[str, str, str]:
    """(uid, namespace, name) of a pod; a pod without a uid is refused."""
    meta = pod.get("metadata") or {}
    uid = meta.get("uid")
    if not uid:
        raise CreateContainerError(f"pod {meta.get('name')!r} has no metadata.uid")
    return str(uid), str(meta.get("namespace") or "default"), str(meta.get("name") or "")


def grace_period(pod: Mapping[str, Any]) -> int:
    value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return 30 if value is None else int(value)


def spec_hash(container: Mapping[str, Any]) -> str:
    """A short hash of a container spec; when it changes, the container must be recreated."""
    blob = json.dumps(container, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def labels_for(
    pod: Mapping[str, Any],
    kind: str,
    container: str,
    restart_count: int,
    *,
    sandbox_id: str = "",
    hash_of: Mapping[str, Any] | None = None,
    node: str = "",
) -> dict[str, str]:
    uid, namespace, name = pod_identity(pod)
    labels = {
        LABEL_POD_UID: uid,
        LABEL_POD_NAMESPACE: namespace,
        LABEL_POD_NAME: name,
        LABEL_CONTAINER_NAME: container,
        LABEL_RESTART_COUNT: str(restart_count),
        LABEL_KIND: kind,
        LABEL_GRACE_PERIOD: str(grace_period(pod)),
    }
    if sandbox_id:
        labels[LABEL_SANDBOX_ID] = sandbox_id
    if hash_of is not None:
        labels[LABEL_CONTAINER_HASH] = spec_hash(hash_of)
    if node:
        labels[LABEL_NODE] = node
    return labels


# --- sandbox: hostname, ports, DNS ----------------------------------------------------------


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """spec.hostname, else the pod name cut to 63 characters (as the kubelet does)."""
    spec = pod.get("spec") or {}
    name = spec.get("hostname") or (pod.get("metadata") or {}).get("name") or "pod"
    return str(name)[:63].rstrip("-.") or "pod"


def host_ports(pod: Mapping[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """Docker port bindings ({"80/tcp": [(hostIP, hostPort)]}) for every port with a hostPort."""
    bindings: dict[str, list[tuple[str, int]]] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            host_port = p.get("hostPort")
            if not host_port:
                continue
            key = f"{p['containerPort']}/{str(p.get('protocol') or 'TCP').lower()}"
            binding = (str(p.get("hostIP") or "0.0.0.0"), int(host_port))
            if binding not in bindings.setdefault(key, []):
                bindings[key].append(binding)
    return bindings


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"nameserver {ns}" for ns in self.nameservers]
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


def parse_resolv_conf(text: str) -> ResolvConf:
    conf = ResolvConf()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if not words:
            continue
        if words[0] == "nameserver" and len(words) > 1:
            conf.nameservers.append(words[1])
        elif words[0] in ("search", "domain"):
            conf.searches = words[1:]  # the last one wins, as in the resolver
        elif words[0] == "options":
            conf.options.extend(words[1:])
    return conf


def read_host_resolv_conf(path: str | Path = "/etc/resolv.conf") -> ResolvConf:
    try:
        return parse_resolv_conf(Path(path).read_text())
    except OSError:
        return ResolvConf()


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _merge_options(base: Sequence[str], extra: Sequence[Mapping[str, Any]]) -> list[str]:
    merged: dict[str, str] = {}
    for opt in base:
        name, _, value = opt.partition(":")
        merged[name] = opt
    for opt in extra:
        name = str(opt.get("name") or "")
        if name:
            value = opt.get("value")
            merged[name] = f"{name}:{value}" if value not in (None, "") else name
    return list(merged.values())


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def pod_dns(
    pod: Mapping[str, Any],
    cluster_dns: Sequence[str],
    cluster_domain: str,
    host: ResolvConf,
) -> ResolvConf | None:
    """The pod's resolv.conf per dnsPolicy and dnsConfig, or None for the engine's default.

    ClusterFirst (the default) without a cluster DNS server falls back to Default, as the kubelet
    does. Default with no dnsConfig leaves the engine's resolver in place (it copes with a host
    resolver on loopback, which a pod cannot reach).
    """
    spec = pod.get("spec") or {}
    config = spec.get("dnsConfig") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # hostNetwork pods ask for cluster DNS with ClusterFirstWithHostNet
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and not cluster_dns:
        policy = "Default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        base = ResolvConf(
            nameservers=list(cluster_dns),
            searches=[
                f"{namespace}.svc.{cluster_domain}",
                f"svc.{cluster_domain}",
                cluster_domain,
                *host.searches,
            ],
            options=["ndots:5"],
        )
    elif policy == "None":
        base = ResolvConf()
    else:
        if not config:
            return None
        base = ResolvConf(
            nameservers=[ns for ns in host.nameservers if not _is_loopback(ns)],
            searches=list(host.searches),
            options=list(host.options),
        )
    return ResolvConf(
        nameservers=_unique([*base.nameservers, *(config.get("nameservers") or [])])[:3],
        searches=_unique([*base.searches, *(config.get("searches") or [])])[:32],
        options=_merge_options(base.options, config.get("options") or []),
    )


def host_aliases(pod: Mapping[str, Any]) -> list[str]:
    """spec.hostAliases as the engine's extra hosts ("name:ip")."""
    out = []
    for alias in (pod.get("spec") or {}).get("hostAliases") or []:
        for name in alias.get("hostnames") or []:
            out.append(f"{name}:{alias['ip']}")
    return out


# --- volume mounts ---------------------------------------------------------------------------

READ_ONLY_VOLUME_TYPES = ("secret", "configMap", "downwardAPI", "projected")


@dataclass
class Mount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool = False


def _safe_subpath(sub: str, container: str, mount: str) -> str:
    parts = Path(sub).parts
    if Path(sub).is_absolute() or ".." in parts:
        raise CreateContainerError(
            f"container {container!r}: subPath {sub!r} of mount {mount!r} must be a relative path "
            "without '..'"
        )
    return sub


def container_mounts(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    volumes: Mapping[str, str],
    env: Mapping[str, str],
) -> list[Mount]:
    """Bind mounts for a container's volumeMounts over the host paths of materialised volumes.

    A subPath (or subPathExpr, expanded with the container's env) that does not exist yet is
    created as a directory, and may not lead out of its volume through a symlink.
    """
    declared = {v["name"]: v for v in (pod.get("spec") or {}).get("volumes") or []}
    cname = str(container.get("name"))
    mounts: list[Mount] = []
    for vm in container.get("volumeMounts") or []:
        name = vm.get("name")
        if name not in declared:
            raise CreateContainerError(
                f"container {cname!r}: volumeMount {name!r} names no volume of the pod"
            )
        if name not in volumes:
            raise CreateContainerError(f"container {cname!r}: volume {name!r} has not been prepared")
        root = os.path.realpath(volumes[name])
        source = root
        sub = vm.get("subPath") or ""
        if vm.get("subPathExpr"):
            sub = expand(str(vm["subPathExpr"]), env)
        if sub:
            source = os.path.join(root, _safe_subpath(sub, cname, name))
            if not os.path.lexists(source):
                os.makedirs(source, exist_ok=True)
            real = os.path.realpath(source)
            if real != root and not real.startswith(root.rstrip("/") + "/"):
                raise CreateContainerError(
                    f"container {cname!r}: subPath {sub!r} leads out of volume {name!r}"
                )
            source = real
        read_only = bool(vm.get("readOnly")) or any(t in declared[name] for t in READ_ONLY_VOLUME_TYPES)
        mounts.append(Mount(source=source, target=str(vm["mountPath"]), read_only=read_only))
    return mounts


# --- security context -------------------------------------------------------------------------


@dataclass
class Security:
    user: str | None = None
    group_add: list[str] = field(default_factory=list)
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    read_only: bool = False
    security_opt: list[str] = field(default_factory=list)


def container_security(pod: Mapping[str, Any], container: Mapping[str, Any]) -> Security:
    """The container's securityContext over the pod's (container fields win)."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
    out = Security()
    if uid is not None:
        out.user = f"{uid}:{gid}" if gid is not None else str(uid)
    out.group_add = [str(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        out.group_add.append(str(pod_sc["fsGroup"]))
    out.privileged = bool(sc.get("privileged"))
    caps = sc.get("capabilities") or {}
    out.cap_add = [str(c) for c in caps.get("add") or []]
    out.cap_drop = [str(c) for c in caps.get("drop") or []]
    out.read_only = bool(sc.get("readOnlyRootFilesystem"))
    if sc.get("allowPrivilegeEscalation") is False:
        out.security_opt.append("no-new-privileges")
    return out


def pod_sysctls(pod: Mapping[str, Any]) -> dict[str, str]:
    sc = (pod.get("spec") or {}).get("securityContext") or {}
    return {str(s["name"]): str(s["value"]) for s in sc.get("sysctls") or []}
