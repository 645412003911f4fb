"""The resources grove's API server serves, and the discovery documents that describe them.

kubectl and client libraries learn what a server offers from discovery (`/api`, `/apis`,
`/api/v1`, `/apis/<group>/<version>`, or the aggregated form kubectl 1.32 prefers) before
they send a single request, so this table is the server's contract: names, kinds, scope,
verbs, short names, categories and subresources, spelled exactly as kube-apiserver spells
them. Everything here is plain data and pure functions; the HTTP server decides which
document to send (see `negotiate_discovery`).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# Verb sets as kube-apiserver advertises them.
ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
NAMESPACE_VERBS: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")
STATUS_VERBS: tuple[str, ...] = ("get", "patch", "update")

DISCOVERY_GROUP = "apidiscovery.k8s.io"
DISCOVERY_VERSIONS: tuple[str, ...] = ("v2", "v2beta1")


@dataclass(frozen=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class Subresource:
    """A subresource such as `pods/status`; `group`/`version` are set when its kind lives elsewhere."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Resource:
    """One served resource type (a REST collection), e.g. apps/v1 deployments."""

    group: str
    version: str
    resource: str
    singular: str
    kind: str
    namespaced: bool
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    storage_resource: str = ""

    @property
    def group_version(self) -> str:
        """The apiVersion string: `v1` for the core group, `apps/v1` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    api_version = group_version

    @property
    def gvk(self) -> GroupVersionKind:
        return GroupVersionKind(self.group, self.version, self.kind)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def storage_prefix(self) -> str:
        """Where objects of this resource live in the store: `/registry/<resource>`."""
        return f"/registry/{self.storage_resource or self.resource}"

    @property
    def storage_version_hash(self) -> str:
        return storage_version_hash(self.group, self.version, self.kind)

    @property
    def path_prefix(self) -> str:
        """`/api/v1` or `/apis/<group>/<version>`."""
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def storage_key(self, namespace: str | None, name: str | None = None) -> str:
        """The store key of one object (or of a namespace's / the whole collection's directory)."""
        parts = [self.storage_prefix]
        if self.namespaced and namespace:
            parts.append(namespace)
        if name:
            parts.append(name)
        return "/".join(parts)

    def url(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The REST path of the collection, one object, or one of its subresources."""
        path = self.path_prefix
        if self.namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{self.resource}"
        if name:
            path += f"/{name}"
            if subresource:
                path += f"/{subresource}"
        return path

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None

    def names(self) -> tuple[str, ...]:
        """Every name a user may type for this resource (plural, singular, short names, kind)."""
        return (self.resource, self.singular, *self.short_names, self.kind.lower())


def storage_version_hash(group: str, version: str, kind: str) -> str:
    """kube-apiserver's storageVersionHash: base64 of the first 8 bytes of sha256("group/version/kind")."""
    digest = hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _status(kind: str) -> Subresource:
    return Subresource("status", kind, STATUS_VERBS)


def _scale() -> Subresource:
    return Subresource("scale", "Scale", STATUS_VERBS, group="autoscaling", version="v1")


NAMESPACES = Resource(
    "",
    "v1",
    "namespaces",
    "namespace",
    "Namespace",
    namespaced=False,
    verbs=NAMESPACE_VERBS,
    short_names=("ns",),
    subresources=(Subresource("finalize", "Namespace", ("update",)), _status("Namespace")),
)
PODS = Resource(
    "",
    "v1",
    "pods",
    "pod",
    "Pod",
    namespaced=True,
    short_names=("po",),
    categories=("all",),
    subresources=(
        Subresource("binding", "Binding", ("create",)),
        Subresource("exec", "PodExecOptions", ("create", "get")),
        Subresource("log", "Pod", ("get",)),
        _status("Pod"),
    ),
)
NODES = Resource(
    "", "v1", "nodes", "node", "Node", namespaced=False, short_names=("no",), subresources=(_status("Node"),)
)
SERVICES = Resource(
    "", "v1", "services", "service", "Service", namespaced=True, short_names=("svc",), categories=("all",)
)
ENDPOINTS = Resource("", "v1", "endpoints", "endpoints", "Endpoints", namespaced=True, short_names=("ep",))
SECRETS = Resource("", "v1", "secrets", "secret", "Secret", namespaced=True)
CONFIGMAPS = Resource("", "v1", "configmaps", "configmap", "ConfigMap", namespaced=True, short_names=("cm",))
EVENTS = Resource("", "v1", "events", "event", "Event", namespaced=True, short_names=("ev",))
LEASES = Resource("coordination.k8s.io", "v1", "leases", "lease", "Lease", namespaced=True)
DEPLOYMENTS = Resource(
    "apps",
    "v1",
    "deployments",
    "deployment",
    "Deployment",
    namespaced=True,
    short_names=("deploy",),
    categories=("all",),
    subresources=(_scale(), _status("Deployment")),
)
REPLICASETS = Resource(
    "apps",
    "v1",
    "replicasets",
    "replicaset",
    "ReplicaSet",
    namespaced=True,
    short_names=("rs",),
    categories=("all",),
    subresources=(_scale(), _status("ReplicaSet")),
)
DAEMONSETS = Resource(
    "apps",
    "v1",
    "daemonsets",
    "daemonset",
    "DaemonSet",
    namespaced=True,
    short_names=("ds",),
    categories=("all",),
    subresources=(_status("DaemonSet"),),
)
STATEFULSETS = Resource(
    "apps",
    "v1",
    "statefulsets",
    "statefulset",
    "StatefulSet",
    namespaced=True,
    short_names=("sts",),
    categories=("all",),
    subresources=(_scale(), _status("StatefulSet")),
)
CONTROLLERREVISIONS = Resource(
    "apps", "v1", "controllerrevisions", "controllerrevision", "ControllerRevision", namespaced=True
)
ENDPOINTSLICES = Resource(
    "discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice", namespaced=True
)
JOBS = Resource(
    "batch", "v1", "jobs", "job", "Job", namespaced=True, categories=("all",), subresources=(_status("Job"),)
)
CRONJOBS = Resource(
    "batch",
    "v1",
    "cronjobs",
    "cronjob",
    "CronJob",
    namespaced=True,
    short_names=("cj",),
    categories=("all",),
    subresources=(_status("CronJob"),),
)
# autoscaling/v2 is the stored shape; autoscaling/v1 (what `kubectl autoscale` 1.32 sends) shares
# its storage: orchestrator.defaults turns a v1 body into v2 on every write.
HORIZONTALPODAUTOSCALERS = Resource(
    "autoscaling",
    "v2",
    "horizontalpodautoscalers",
    "horizontalpodautoscaler",
    "HorizontalPodAutoscaler",
    namespaced=True,
    short_names=("hpa",),
    categories=("all",),
    subresources=(_status("HorizontalPodAutoscaler"),),
)
HORIZONTALPODAUTOSCALERS_V1 = Resource(
    "autoscaling",
    "v1",
    "horizontalpodautoscalers",
    "horizontalpodautoscaler",
    "HorizontalPodAutoscaler",
    namespaced=True,
    short_names=("hpa",),
    categories=("all",),
    subresources=(_status("HorizontalPodAutoscaler"),),
)
# events.k8s.io/v1 shares storage with core events; serving it needs a conversion between the
# two shapes, so it is only part of a registry that asks for it.
EVENTS_V1 = Resource(
    "events.k8s.io",
    "v1",
    "events",
    "event",
    "Event",
    namespaced=True,
    short_names=("ev",),
    storage_resource="events",
)

BUILTIN_RESOURCES: tuple[Resource, ...] = (
    NAMESPACES,
    PODS,
    NODES,
    SERVICES,
    ENDPOINTS,
    SECRETS,
    CONFIGMAPS,
    EVENTS,
    LEASES,
    DEPLOYMENTS,
    REPLICASETS,
    DAEMONSETS,
    STATEFULSETS,
    CONTROLLERREVISIONS,
    ENDPOINTSLICES,
    JOBS,
    CRONJOBS,
    HORIZONTALPODAUTOSCALERS,
    HORIZONTALPODAUTOSCALERS_V1,
)

# Order of groups under /apis, highest priority first, as kube-apiserver lists them.
_GROUP_PRIORITY: tuple[str, ...] = (
    "apps",
    "events.k8s.io",
    "autoscaling",
    "batch",
    "coordination.k8s.io",
    "discovery.k8s.io",
)


@dataclass(frozen=True)
class Registry:
    """An immutable set of served resources with the lookups the API server needs."""

    resources: tuple[Resource, ...]
    _by_gvr: Mapping[tuple[str, str, str], Resource] = field(init=False, repr=False, compare=False)
    _by_name: Mapping[str, tuple[Resource, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_gvr: dict[tuple[str, str, str], Resource] = {}
        by_name: dict[str, list[Resource]] = {}
        for res in self.resources:
            key = (res.group, res.version, res.resource)
            if key in by_gvr:
                raise ValueError(f"resource {res.resource} in {res.group_version} is registered twice")
            by_gvr[key] = res
            for name in dict.fromkeys(res.names()):
                by_name.setdefault(name, []).append(res)
        object.__setattr__(self, "_by_gvr", MappingProxyType(by_gvr))
        object.__setattr__(
            self,
            "_by_name",
            MappingProxyType({k: tuple(sorted(v, key=_preference)) for k, v in by_name.items()}),
        )

    @classmethod
    def default(cls, *, events_v1: bool = False) -> Registry:
        """The resources grove serves; events.k8s.io/v1 only when asked for."""
        return cls(BUILTIN_RESOURCES + ((EVENTS_V1,) if events_v1 else ()))

    def get(self, group: str, version: str, resource: str) -> Resource | None:
        """Look up by (group, version, plural resource name); `resource` may be `pods/status`."""
        return self._by_gvr.get((group, version, resource.split("/", 1)[0]))

    def by_kind(self, kind: str, group: str | None = None, version: str | None = None) -> Resource | None:
        """Look up by kind, optionally narrowed by group and version (the core group wins ties)."""
        for res in self._by_name.get(kind.lower(), ()):
            if res.kind != kind:
                continue
            if (group is None or res.group == group) and (version is None or res.version == version):
                return res
        return None

    def by_gvk(self, gvk: GroupVersionKind) -> Resource | None:
        return self.by_kind(gvk.kind, gvk.group, gvk.version)

    def by_api_version_kind(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        return self.by_kind(kind, group, version)

    def by_short_name(self, short_name: str) -> Resource | None:
        for res in self._by_name.get(short_name.lower(), ()):
            if short_name.lower() in res.short_names:
                return res
        return None

    def resolve(self, name: str, group: str | None = None) -> Resource | None:
        """What `kubectl get <name>` would pick: plural, singular, short name or kind, any case."""
        name = name.lower()
        if "." in name and group is None:
            name, _, group = name.partition(".")
        for res in self._by_name.get(name, ()):
            if group is None or res.group == group:
                return res
        return None

    def group_versions(self) -> list[tuple[str, str]]:
        """Served (group, version) pairs: the core group first, then groups by kube's priority."""
        seen = dict.fromkeys((res.group, res.version) for res in sorted(self.resources, key=_preference))
        return list(seen)

    def groups(self) -> list[str]:
        return [g for g in dict.fromkeys(g for g, _ in self.group_versions()) if g]

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        """The resources of one group version, sorted by name as discovery lists them."""
        return sorted(
            (r for r in self.resources if r.group == group and r.version == version), key=lambda r: r.resource
        )

    def in_category(self, category: str) -> list[Resource]:
        return [r for r in self.resources if category in r.categories]


def _preference(res: Resource) -> tuple[int, str]:
    if res.group == "":
        return (0, res.resource)
    try:
        rank = _GROUP_PRIORITY.index(res.group) + 1
    except ValueError:
        rank = len(_GROUP_PRIORITY) + 1
    return (rank, res.group)


DEFAULT_REGISTRY = Registry.default()


# ---------------------------------------------------------------------------------------------
# Legacy discovery documents (application/json)


def api_versions(server_address: str = "") -> dict[str, Any]:
    """`GET /api`: the APIVersions of the core group."""
    doc: dict[str, Any] = {"kind": "APIVersions", "versions": ["v1"]}
    doc["serverAddressByClientCIDRs"] = [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    return doc


def _group_version_entry(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group(registry: Registry, group: str) -> dict[str, Any] | None:
    """`GET /apis/<group>`: one APIGroup, or None when the group is not served."""
    versions = [v for g, v in registry.group_versions() if g == group]
    if not group or not versions:
        return None
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [_group_version_entry(group, v) for v in versions],
        "preferredVersion": _group_version_entry(group, versions[0]),
    }


def api_group_list(registry: Registry = DEFAULT_REGISTRY) -> dict[str, Any]:
    """`GET /apis`: the APIGroupList of every named group."""
    groups = []
    for group in registry.groups():
        entry = api_group(registry, group)
        assert entry is not None
        groups.append({k: entry[k] for k in ("name", "versions", "preferredVersion")})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _api_resource(res: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": res.resource,
        "singularName": res.singular,
        "namespaced": res.namespaced,
        "kind": res.kind,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    entry["storageVersionHash"] = res.storage_version_hash
    return entry


def _api_subresource(res: Resource, sub: Subresource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{res.resource}/{sub.name}",
        "singularName": "",
        "namespaced": res.namespaced,
    }
    if sub.group is not None:
        entry["group"] = sub.group
    if sub.version is not None:
        entry["version"] = sub.version
    entry["kind"] = sub.kind
    entry["verbs"] = list(sub.verbs)
    return entry


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """`GET /api/v1` or `/apis/<group>/<version>`: the APIResourceList, or None when not served."""
    served = registry.in_group_version(group, version)
    if not served:
        return None
    entries = []
    for res in served:
        entries.append(_api_resource(res))
        entries.extend(_api_subresource(res, sub) for sub in sorted(res.subresources, key=lambda s: s.name))
    doc: dict[str, Any] = {"kind": "APIResourceList"}
    if group:
        doc["apiVersion"] = "v1"
    doc["groupVersion"] = f"{group}/{version}" if group else version
    doc["resources"] = entries
    return doc


# ---------------------------------------------------------------------------------------------
# Aggregated discovery (application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList)


def discovery_content_type(version: str = "v2") -> str:
    """The Content-Type of an aggregated discovery response."""
    return f"application/json;g={DISCOVERY_GROUP};v={version};as=APIGroupDiscoveryList"


def negotiate_discovery(accept: str | None) -> str | None:
    """Pick the aggregated discovery version an Accept header asks for first, or None for legacy JSON.

    kubectl 1.32 sends `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,
    application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json`.
    """
    if not accept:
        return None
    for clause in accept.split(","):
        media, *raw_params = (p.strip() for p in clause.split(";"))
        params = dict(p.split("=", 1) for p in raw_params if "=" in p)
        if media.lower() not in ("application/json", "*/*", "application/*"):
            continue
        if "as" not in params and "g" not in params:
            if media.lower() == "application/json":
                return None
            continue
        if (
            params.get("g") == DISCOVERY_GROUP
            and params.get("as") == "APIGroupDiscoveryList"
            and params.get("v") in DISCOVERY_VERSIONS
        ):
            return params["v"]
    return None


def _response_kind(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _discovery_resource(res: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": res.resource,
        "responseKind": _response_kind(res.group, res.version, res.kind),
        "scope": "Namespaced" if res.namespaced else "Cluster",
        "singularResource": res.singular,
        "verbs": list(res.verbs),
    }
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    if res.subresources:
        entry["subresources"] = [
            {
                "subresource": sub.name,
                "responseKind": _response_kind(
                    res.group if sub.group is None else sub.group,
                    res.version if sub.version is None else sub.version,
                    sub.kind,
                ),
                "verbs": list(sub.verbs),
            }
            for sub in sorted(res.subresources, key=lambda s: s.name)
        ]
    return entry


def _group_discovery(registry: Registry, group: str) -> dict[str, Any]:
    metadata: dict[str, Any] = (
        {"name": group, "creationTimestamp": None} if group else {"creationTimestamp": None}
    )
    versions = [
        {
            "version": version,
            "resources": [_discovery_resource(r) for r in registry.in_group_version(group, version)],
            "freshness": "Current",
        }
        for g, version in registry.group_versions()
        if g == group
    ]
    return {"metadata": metadata, "versions": versions}


def aggregated_discovery(
    registry: Registry = DEFAULT_REGISTRY, *, legacy: bool, version: str = "v2"
) -> dict[str, Any]:
    """APIGroupDiscoveryList for `/api` (legacy=True, the core group) or `/apis` (every named group)."""
    if version not in DISCOVERY_VERSIONS:
        raise ValueError(
            f"unsupported aggregated discovery version {version!r}; use one of {DISCOVERY_VERSIONS}"
        )
    groups = [""] if legacy else registry.groups()
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"{DISCOVERY_GROUP}/{version}",
        "metadata": {},
        "items": [_group_discovery(registry, g) for g in groups],
    }


def discovery_document(
    registry: Registry, path: str, accept: str | None = None, server_address: str = ""
) -> tuple[dict[str, Any], str] | None:
    """The discovery body and Content-Type for a request path, honouring aggregated discovery.

    Returns None when the path is not a discovery path this registry serves.
    """
    path = "/" + path.strip("/")
    wanted = negotiate_discovery(accept) if path in ("/api", "/apis") else None
    if wanted is not None:
        return aggregated_discovery(registry, legacy=path == "/api", version=wanted), discovery_content_type(
            wanted
        )
    parts = path.strip("/").split("/")
    doc: dict[str, Any] | None
    if path == "/api":
        doc = api_versions(server_address)
    elif path == "/apis":
        doc = api_group_list(registry)
    elif parts[0] == "api" and len(parts) == 2:
        doc = api_resource_list(registry, "", parts[1])
    elif parts[0] == "apis" and len(parts) == 2:
        doc = api_group(registry, parts[1])
    elif parts[0] == "apis" and len(parts) == 3:
        doc = api_resource_list(registry, parts[1], parts[2])
    else:
        doc = None
    return None if doc is None else (doc, "application/json")
