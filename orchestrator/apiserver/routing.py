"""From a request path and method to what it asks for: verb, resource, namespace, name, subresource.

Paths follow kube-apiserver's layout (`/api/v1/namespaces/ns/pods/name/status`,
`/apis/apps/v1/deployments`, the legacy `/api/v1/watch/...` prefix), including its one
ambiguity: `/api/v1/namespaces/x/status` is the namespace's status, while
`/api/v1/namespaces/x/pods` is the pods in namespace x.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.resources import Registry, Resource

from . import errors

_NAMESPACE_SUBRESOURCES = frozenset(("status", "finalize"))
_TRUE = frozenset(("1", "t", "T", "true", "TRUE", "True"))


@dataclass(slots=True)
class RequestInfo:
    verb: str  # get list watch create update patch delete deletecollection
    res: Resource
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def metric_verb(self) -> str:
        return {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST", "update": "PUT"}.get(
            self.verb, self.verb.upper() if self.verb != "deletecollection" else "DELETE"
        )


def is_true(value: str | None) -> bool:
    return value is not None and value in _TRUE


def split_api_path(path: str) -> tuple[str, str, list[str]] | None:
    """(group, version, rest) of a resource path, or None for a discovery path (`/api`, `/apis/apps`)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    if parts[0] == "api":
        if len(parts) < 3:
            return None
        return "", parts[1], parts[2:]
    if parts[0] == "apis":
        if len(parts) < 4:
            return None
        return parts[1], parts[2], parts[3:]
    return None


def parse_request(registry: Registry, method: str, path: str, watch_param: str | None) -> RequestInfo | None:
    """The RequestInfo of a resource request; None for discovery paths; ApiError 404/405 otherwise."""
    split = split_api_path(path)
    if split is None:
        return None
    group, version, rest = split
    watch_prefix = False
    if rest[0] == "watch":
        watch_prefix = True
        rest = rest[1:]
        if not rest:
            raise errors.path_not_found()
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        namespace = rest[1]
        rest = rest[2:]
    if len(rest) > 3:
        raise errors.path_not_found()
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    res = registry.get(group, version, resource)
    if res is None or (namespace is not None and not res.namespaced):
        raise errors.path_not_found()
    if sub is not None and res.subresource(sub) is None:
        raise errors.path_not_found()
    if res.namespaced and namespace is None and name is not None:
        raise errors.path_not_found()  # a namespaced object needs its namespace in the path
    if watch_prefix and method != "GET":
        raise errors.method_not_allowed()
    if method in ("GET", "HEAD"):
        if watch_prefix or (sub is None and is_true(watch_param)):
            verb = "watch"
        else:
            verb = "get" if name is not None else "list"
    elif method == "POST":
        if name is not None and sub is None:
            raise errors.method_not_allowed()
        if res.namespaced and namespace is None:
            raise errors.method_not_allowed()
        verb = "create"
    elif method == "PUT":
        if name is None:
            raise errors.method_not_allowed()
        verb = "update"
    elif method == "PATCH":
        if name is None:
            raise errors.method_not_allowed()
        verb = "patch"
    elif method == "DELETE":
        if sub is not None:
            raise errors.method_not_allowed()
        verb = "delete" if name is not None else "deletecollection"
    else:
        raise errors.method_not_allowed()
    if sub is not None:
        allowed = res.subresource(sub).verbs  # type: ignore[union-attr]
        if verb not in allowed:
            raise errors.method_not_allowed()
    elif verb not in res.verbs:
        raise errors.method_not_allowed()
    return RequestInfo(verb, res, namespace, name, sub)
