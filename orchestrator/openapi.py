"""OpenAPI documents for grove's API server, built from the upstream Kubernetes schemas.

kubectl reads `/openapi/v3` (and falls back to `/openapi/v2`) for `kubectl explain`, for
client-side validation, to find out whether the server honours `fieldValidation`, and to
compute strategic merge patches in `kubectl apply`. The schemas of the built-in types are not
typed here: they come from the `kubernetes-validate` package, which ships the upstream
definitions (with `x-kubernetes-group-version-kind`, patch strategies and list types) as JSON.
This module turns them back into OpenAPI v2/v3, keeps only what grove serves (plus the meta
types those reference), adds the REST paths, and checks request bodies for unknown and
duplicate fields the way kube-apiserver's strict decoder does.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import yaml

from orchestrator.resources import DEFAULT_REGISTRY, GroupVersionKind, Registry, Resource

KUBERNETES_VERSION = "v1.32.0"
SCHEMA_PACKAGE = "kubernetes_validate"

INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
META = "io.k8s.apimachinery.pkg.apis.meta.v1"
META_ROOTS: tuple[str, ...] = (
    f"{META}.APIResourceList",
    f"{META}.DeleteOptions",
    f"{META}.Patch",
    f"{META}.Status",
    f"{META}.WatchEvent",
)
# Documents served under /openapi/v2 also describe the discovery endpoints.
DISCOVERY_ROOTS: tuple[str, ...] = (f"{META}.APIGroup", f"{META}.APIGroupList", f"{META}.APIVersions")

PATCH_CONTENT_TYPES: tuple[str, ...] = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
RESPONSE_CONTENT_TYPES: tuple[str, ...] = (
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
)


class SchemaDataMissing(RuntimeError):
    """The package that ships the Kubernetes schemas is not installed (or has no usable version)."""


# ---------------------------------------------------------------------------------------------
# Loading and normalising the upstream definitions


def schema_directory(version: str = KUBERNETES_VERSION) -> Path:
    """The kubernetes-validate directory holding `_definitions.json` for `version` (or the nearest)."""
    spec = importlib.util.find_spec(SCHEMA_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SchemaDataMissing(
            f"the Python package {SCHEMA_PACKAGE!r} (PyPI: kubernetes-validate) is not installed; "
            "grove needs its Kubernetes schemas: pip install 'kubernetes-validate>=1.32.0'"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"
    available = sorted(
        (p for p in root.glob("v*-local") if (p / "_definitions.json").is_file()),
        key=lambda p: _version_key(p.name),
    )
    if not available:
        raise SchemaDataMissing(f"no schema directories under {root}; reinstall kubernetes-validate")
    wanted = _version_key(version)
    older = [p for p in available if _version_key(p.name) <= wanted]
    return older[-1] if older else available[0]


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name)[:3])


def _normalise(schema: Any) -> Any:
    """Undo the JSON-Schema conversion: `type: [x, null]` back to `x`, `$defs` refs to definitions."""
    if not isinstance(schema, dict):
        return copy.deepcopy(schema)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _normalise(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _normalise(value)
        elif key in ("allOf", "oneOf", "anyOf"):
            out[key] = [_normalise(v) for v in value]
        elif key == "$ref":
            out[key] = "#/definitions/" + value.rsplit("/", 1)[-1]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            out[key] = types[0] if len(types) == 1 else types
        else:
            out[key] = copy.deepcopy(value)
    return out


@lru_cache(maxsize=4)
def definitions(version: str = KUBERNETES_VERSION) -> Mapping[str, dict[str, Any]]:
    """Every upstream definition in OpenAPI v2 form (refs are `#/definitions/<name>`)."""
    path = schema_directory(version) / "_definitions.json"
    raw = orjson.loads(path.read_bytes())
    defs = raw.get("$defs") or raw.get("definitions") or {}
    out: dict[str, dict[str, Any]] = {}
    for name, schema in defs.items():
        norm = _normalise(schema)
        if norm.get("x-kubernetes-group-version-kind"):
            # The JSON-Schema conversion pinned apiVersion/kind with enums; upstream has none.
            for prop in ("apiVersion", "kind"):
                norm.get("properties", {}).get(prop, {}).pop("enum", None)
        out[name] = norm
    # Upstream spells these two as formatted strings; the conversion turned them into oneOfs.
    if INT_OR_STRING in out:
        out[INT_OR_STRING] = {"type": "string", "format": "int-or-string"}
    if QUANTITY in out:
        out[QUANTITY] = {"type": "string"}
    return out


@lru_cache(maxsize=4)
def _gvk_index(version: str = KUBERNETES_VERSION) -> Mapping[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions(version).items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
    return index


def definition_name(gvk: GroupVersionKind, version: str = KUBERNETES_VERSION) -> str | None:
    """The definition name (e.g. `io.k8s.api.apps.v1.Deployment`) of a group/version/kind."""
    return _gvk_index(version).get((gvk.group, gvk.version, gvk.kind))


def _refs(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _refs(item)


def _closure(roots: Iterable[str], defs: Mapping[str, dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    stack = [r for r in roots if r in defs]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen[name] = None
        stack.extend(r for r in _refs(defs[name]) if r in defs and r not in seen)
    return sorted(seen)


def _served_group_versions(registry: Registry) -> set[tuple[str, str]]:
    served = set(registry.group_versions())
    for res in registry.resources:
        for sub in res.subresources:
            served.add((sub.group if sub.group is not None else res.group, sub.version or res.version))
    return served


def _filtered(schema: dict[str, Any], served: set[tuple[str, str]]) -> dict[str, Any]:
    """Drop GVK entries of groups grove does not serve (meta types list every group)."""
    gvks = schema.get("x-kubernetes-group-version-kind")
    if not gvks or len(gvks) == 1:
        return schema
    kept = [g for g in gvks if (g["group"], g["version"]) in served]
    out = dict(schema)
    out["x-kubernetes-group-version-kind"] = kept or gvks
    return out


def _roots_for(registry: Registry, group: str, version: str) -> list[str]:
    roots = list(META_ROOTS)
    for res in registry.in_group_version(group, version):
        for gvk in _kinds_of(res):
            name = definition_name(gvk)
            if name:
                roots.append(name)
    return roots


def _kinds_of(res: Resource) -> list[GroupVersionKind]:
    kinds = [res.gvk, GroupVersionKind(res.group, res.version, res.list_kind)]
    for sub in res.subresources:
        group = res.group if sub.group is None else sub.group
        kinds.append(GroupVersionKind(group, sub.version or res.version, sub.kind))
    return kinds


# ---------------------------------------------------------------------------------------------
# Paths (the REST operations), shared by v2 and v3


@dataclass(frozen=True)
class _Param:
    name: str
    kind: str  # string | integer | boolean
    description: str
    location: str = "query"
    required: bool = False


_P = {
    "name": _Param("name", "string", "name of the object", "path", True),
    "namespace": _Param(
        "namespace", "string", "object name and auth scope, such as for teams and projects", "path", True
    ),
    "pretty": _Param("pretty", "string", "If 'true', then the output is pretty printed."),
    "dryRun": _Param("dryRun", "string", "When present, modifications are not persisted. Valid value: All."),
    "fieldManager": _Param("fieldManager", "string", "The name of the actor or entity making these changes."),
    "fieldValidation": _Param(
        "fieldValidation",
        "string",
        "How the server treats unknown and duplicate fields in the request body: Ignore, Warn or Strict.",
    ),
    "force": _Param("force", "boolean", "Force an apply request to take over conflicting fields."),
    "allowWatchBookmarks": _Param("allowWatchBookmarks", "boolean", "Ask for BOOKMARK events in a watch."),
    "continue": _Param("continue", "string", "Token from a previous paged list to fetch the next page."),
    "fieldSelector": _Param("fieldSelector", "string", "Restrict the returned objects by their fields."),
    "labelSelector": _Param("labelSelector", "string", "Restrict the returned objects by their labels."),
    "limit": _Param("limit", "integer", "Maximum number of objects to return in one list call."),
    "resourceVersion": _Param(
        "resourceVersion", "string", "Resource version the request may be served from."
    ),
    "resourceVersionMatch": _Param(
        "resourceVersionMatch", "string", "How resourceVersion applies to list calls."
    ),
    "sendInitialEvents": _Param("sendInitialEvents", "boolean", "Start a watch with synthetic ADDED events."),
    "timeoutSeconds": _Param("timeoutSeconds", "integer", "Timeout for the list/watch call."),
    "watch": _Param("watch", "boolean", "Watch for changes instead of listing."),
    "gracePeriodSeconds": _Param("gracePeriodSeconds", "integer", "Seconds before the object is deleted."),
    "orphanDependents": _Param("orphanDependents", "boolean", "Deprecated: use propagationPolicy."),
    "propagationPolicy": _Param(
        "propagationPolicy", "string", "Garbage collection of dependents: Orphan, Background or Foreground."
    ),
    "container": _Param("container", "string", "The container to read logs from or run the command in."),
    "follow": _Param("follow", "boolean", "Follow the log stream of the pod."),
    "previous": _Param("previous", "boolean", "Return logs of the previously terminated container."),
    "sinceSeconds": _Param("sinceSeconds", "integer", "Only logs newer than this many seconds."),
    "tailLines": _Param("tailLines", "integer", "Number of lines from the end of the log to show."),
    "timestamps": _Param("timestamps", "boolean", "Prefix every log line with an RFC3339 timestamp."),
    "command": _Param("command", "string", "The command to run, one argument per parameter."),
    "stdin": _Param("stdin", "boolean", "Redirect the standard input stream of the pod."),
    "stdout": _Param("stdout", "boolean", "Redirect the standard output stream of the pod."),
    "stderr": _Param("stderr", "boolean", "Redirect the standard error stream of the pod."),
    "tty": _Param("tty", "boolean", "Allocate a terminal for the command."),
    "limitBytes": _Param("limitBytes", "integer", "Maximum number of bytes of log to return."),
}
_LIST = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion")
_LIST += ("resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
_DELETE = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
_LOG = ("container", "follow", "limitBytes", "previous", "sinceSeconds", "tailLines", "timestamps")
_EXEC = ("command", "container", "stderr", "stdin", "stdout", "tty")


@dataclass(frozen=True)
class _Operation:
    method: str  # get put post patch delete
    operation_id: str
    description: str
    action: str  # x-kubernetes-action
    gvk: GroupVersionKind
    params: tuple[str, ...]
    body: str | None = None  # definition name of the request body
    response: str | None = None  # definition name of the response
    patch: bool = False
    text_response: bool = False
    created: bool = False  # 201 besides 200
    accepted: bool = False  # 202 besides 200


@dataclass
class _PathItem:
    path: str
    params: tuple[str, ...]
    operations: list[_Operation] = field(default_factory=list)


def _camel_group(group: str) -> str:
    return (group.split(".", 1)[0] or "core").capitalize()


def _tag(group: str, version: str) -> str:
    return f"{(group.split('.', 1)[0] or 'core')}_{version}"


def _operations(res: Resource) -> list[_PathItem]:
    gv = f"{_camel_group(res.group)}{res.version.capitalize()}"
    scope = "Namespaced" if res.namespaced else ""
    kind = res.kind
    obj = definition_name(res.gvk)
    lst = definition_name(GroupVersionKind(res.group, res.version, res.list_kind))
    status = f"{META}.Status"
    base = res.path_prefix + ("/namespaces/{namespace}" if res.namespaced else "")
    scope_params = ("namespace",) if res.namespaced else ()
    verbs = set(res.verbs)
    items: list[_PathItem] = []

    collection = _PathItem(f"{base}/{res.resource}", (*scope_params, "pretty"))
    if "list" in verbs:
        collection.operations.append(
            _Operation(
                "get",
                f"list{gv}{scope}{kind}",
                f"list or watch objects of kind {kind}",
                "list",
                res.gvk,
                _LIST,
                response=lst,
            )
        )
    if "create" in verbs:
        collection.operations.append(
            _Operation(
                "post",
                f"create{gv}{scope}{kind}",
                f"create a {kind}",
                "post",
                res.gvk,
                _WRITE,
                obj,
                obj,
                created=True,
                accepted=True,
            )
        )
    if "deletecollection" in verbs:
        collection.operations.append(
            _Operation(
                "delete",
                f"delete{gv}Collection{scope}{kind}",
                f"delete collection of {kind}",
                "deletecollection",
                res.gvk,
                _DELETE + _LIST,
                f"{META}.DeleteOptions",
                status,
            )
        )
    items.append(collection)

    if res.namespaced and "list" in verbs:
        items.append(
            _PathItem(
                f"{res.path_prefix}/{res.resource}",
                ("pretty",),
                [
                    _Operation(
                        "get",
                        f"list{gv}{kind}ForAllNamespaces",
                        f"list or watch objects of kind {kind}",
                        "list",
                        res.gvk,
                        _LIST,
                        response=lst,
                    )
                ],
            )
        )

    item = _PathItem(f"{base}/{res.resource}/{{name}}", ("name", *scope_params, "pretty"))
    item.operations += [
        _Operation(
            "get", f"read{gv}{scope}{kind}", f"read the specified {kind}", "get", res.gvk, (), response=obj
        ),
        _Operation(
            "put",
            f"replace{gv}{scope}{kind}",
            f"replace the specified {kind}",
            "put",
            res.gvk,
            _WRITE,
            obj,
            obj,
            created=True,
        ),
        _Operation(
            "patch",
            f"patch{gv}{scope}{kind}",
            f"partially update the specified {kind}",
            "patch",
            res.gvk,
            (*_WRITE, "force"),
            f"{META}.Patch",
            obj,
            patch=True,
            created=True,
        ),
        _Operation(
            "delete",
            f"delete{gv}{scope}{kind}",
            f"delete a {kind}",
            "delete",
            res.gvk,
            _DELETE,
            f"{META}.DeleteOptions",
            status,
            accepted=True,
        ),
    ]
    items.append(item)

    for sub in res.subresources:
        sub_gvk = GroupVersionKind(
            res.group if sub.group is None else sub.group, sub.version or res.version, sub.kind
        )
        sub_def = definition_name(sub_gvk)
        suffix = sub.name.capitalize()
        path = _PathItem(f"{base}/{res.resource}/{{name}}/{sub.name}", ("name", *scope_params, "pretty"))
        svb = set(sub.verbs)
        if sub.name == "log":
            path.operations.append(
                _Operation(
                    "get",
                    f"read{gv}{scope}{kind}Log",
                    f"read log of the specified {kind}",
                    "get",
                    res.gvk,
                    _LOG,
                    text_response=True,
                )
            )
        elif sub.name == "exec":
            for method in ("get", "post"):
                path.operations.append(
                    _Operation(
                        method,
                        f"connect{gv}{method.capitalize()}{scope}{kind}Exec",
                        f"connect {method.upper()} requests to exec of {kind}",
                        "connect",
                        sub_gvk,
                        _EXEC,
                        text_response=True,
                    )
                )
        elif sub.name == "binding":
            path.operations.append(
                _Operation(
                    "post",
                    f"create{gv}{scope}{kind}Binding",
                    f"create binding of a {kind}",
                    "post",
                    sub_gvk,
                    _WRITE,
                    sub_def,
                    sub_def,
                    created=True,
                    accepted=True,
                )
            )
        elif sub.name == "finalize":
            path.operations.append(
                _Operation(
                    "put",
                    f"replace{gv}{scope}{kind}Finalize",
                    f"replace finalize of the specified {kind}",
                    "put",
                    sub_gvk,
                    _WRITE,
                    sub_def,
                    sub_def,
                    created=True,
                )
            )
        else:
            what = f"{sub.name} of the specified {kind}"
            if "get" in svb:
                path.operations.append(
                    _Operation(
                        "get",
                        f"read{gv}{scope}{kind}{suffix}",
                        f"read {what}",
                        "get",
                        sub_gvk,
                        (),
                        response=sub_def,
                    )
                )
            if "update" in svb:
                path.operations.append(
                    _Operation(
                        "put",
                        f"replace{gv}{scope}{kind}{suffix}",
                        f"replace {what}",
                        "put",
                        sub_gvk,
                        _WRITE,
                        sub_def,
                        sub_def,
                        created=True,
                    )
                )
            if "patch" in svb:
                path.operations.append(
                    _Operation(
                        "patch",
                        f"patch{gv}{scope}{kind}{suffix}",
                        f"partially update {what}",
                        "patch",
                        sub_gvk,
                        (*_WRITE, "force"),
                        f"{META}.Patch",
                        sub_def,
                        patch=True,
                        created=True,
                    )
                )
        items.append(path)
    return items


def _all_paths(
    registry: Registry, group_versions: Iterable[tuple[str, str]]
) -> list[tuple[_PathItem, Resource]]:
    out = []
    for group, version in group_versions:
        for res in registry.in_group_version(group, version):
            out.extend((p, res) for p in _operations(res))
    return sorted(out, key=lambda pr: pr[0].path)


def _gvk_ext(gvk: GroupVersionKind) -> dict[str, str]:
    return {"group": gvk.group, "kind": gvk.kind, "version": gvk.version}


# ---------------------------------------------------------------------------------------------
# OpenAPI v3


def _to_v3(schema: Any) -> Any:
    """Rewrite refs to components and wrap refs that carry siblings in allOf, as kube-openapi does."""
    if isinstance(schema, list):
        return [_to_v3(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _to_v3(p) for name, p in value.items()}
        elif key == "$ref":
            out[key] = "#/components/schemas/" + value.rsplit("/", 1)[-1]
        elif isinstance(value, (dict, list)) and key in (
            "items",
            "additionalProperties",
            "allOf",
            "oneOf",
            "anyOf",
        ):
            out[key] = _to_v3(value)
        else:
            out[key] = value
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out = {"allOf": [{"$ref": ref}], **out}
    return out


def _v3_schema_of(name: str) -> dict[str, Any]:
    if name == INT_OR_STRING:
        return {"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]}
    if name == QUANTITY:
        return {"oneOf": [{"type": "string"}, {"type": "number"}]}
    return _to_v3(definitions()[name])


def _v3_param(name: str) -> dict[str, Any]:
    p = _P[name]
    out: dict[str, Any] = {"name": p.name, "in": p.location, "description": p.description}
    if p.required:
        out["required"] = True
    out["schema"] = {"type": p.kind, "uniqueItems": True}
    return out


def _v3_content(ref: str | None, types: Iterable[str]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{ref}"} if ref else {"type": "object"}
    return {t: {"schema": schema} for t in types}


def _v3_operation(op: _Operation, tag: str) -> dict[str, Any]:
    out: dict[str, Any] = {"tags": [tag], "description": op.description, "operationId": op.operation_id}
    if op.params:
        out["parameters"] = [_v3_param(p) for p in op.params]
    if op.body:
        types = PATCH_CONTENT_TYPES if op.patch else ("*/*",)
        out["requestBody"] = {"content": _v3_content(op.body, types), "required": True}
    if op.text_response:
        ok = {"description": "OK", "content": {"*/*": {"schema": {"type": "string"}}}}
    else:
        ok = {"description": "OK", "content": _v3_content(op.response, RESPONSE_CONTENT_TYPES)}
    responses: dict[str, Any] = {"200": ok}
    if op.created:
        responses["201"] = {"description": "Created", "content": ok["content"]}
    if op.accepted:
        responses["202"] = {"description": "Accepted", "content": ok["content"]}
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    out["x-kubernetes-action"] = op.action
    out["x-kubernetes-group-version-kind"] = _gvk_ext(op.gvk)
    return out


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_document(path: str, registry: Registry = DEFAULT_REGISTRY) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group version (`api/v1`, `apis/apps/v1`), or None."""
    return _v3_documents(registry).get(path.strip("/").removeprefix("openapi/v3/"))


@lru_cache(maxsize=8)
def _v3_documents(registry: Registry) -> Mapping[str, dict[str, Any]]:
    defs = definitions()
    served = _served_group_versions(registry)
    docs: dict[str, dict[str, Any]] = {}
    for group, version in registry.group_versions():
        paths: dict[str, Any] = {}
        tag = _tag(group, version)
        for item, _res in _all_paths(registry, [(group, version)]):
            entry: dict[str, Any] = {}
            for op in item.operations:
                entry[op.method] = _v3_operation(op, tag)
            entry["parameters"] = [_v3_param(p) for p in item.params]
            paths[item.path] = entry
        names = _closure(_roots_for(registry, group, version), defs)
        schemas = {n: _filtered(_v3_schema_of(n), served) for n in names}
        docs[_gv_path(group, version)] = {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": paths,
            "components": {"schemas": schemas},
        }
    return docs


@lru_cache(maxsize=64)
def _v3_bytes(path: str, registry: Registry) -> bytes:
    doc = _v3_documents(registry)[path]
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def openapi_v3_bytes(path: str, registry: Registry = DEFAULT_REGISTRY) -> bytes | None:
    """The serialised v3 document of a group version (stable bytes: the index hash covers them)."""
    path = path.strip("/").removeprefix("openapi/v3/")
    if path not in _v3_documents(registry):
        return None
    return _v3_bytes(path, registry)


def openapi_v3_hash(path: str, registry: Registry = DEFAULT_REGISTRY) -> str | None:
    """kube-apiserver's document hash: upper-case hex SHA-512 of the served bytes."""
    data = openapi_v3_bytes(path, registry)
    return None if data is None else hashlib.sha512(data).hexdigest().upper()


def openapi_v3_index(registry: Registry = DEFAULT_REGISTRY) -> dict[str, Any]:
    """`GET /openapi/v3`: where each group version's document lives, with its content hash."""
    paths = {}
    for path in sorted(_v3_documents(registry)):
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={openapi_v3_hash(path, registry)}"}
    return {"paths": paths}


# ---------------------------------------------------------------------------------------------
# OpenAPI v2 (swagger 2.0)


def _v2_param(name: str) -> dict[str, Any]:
    p = _P[name]
    out: dict[str, Any] = {
        "uniqueItems": True,
        "type": p.kind,
        "description": p.description,
        "name": p.name,
        "in": p.location,
    }
    if p.required:
        out["required"] = True
    return out


def _v2_operation(op: _Operation, tag: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": op.description, "operationId": op.operation_id, "tags": [tag]}
    out["consumes"] = list(PATCH_CONTENT_TYPES) if op.patch else ["*/*"]
    out["produces"] = ["*/*"] if op.text_response else list(RESPONSE_CONTENT_TYPES)
    out["schemes"] = ["https"]
    params = []
    if op.body:
        params.append(
            {"name": "body", "in": "body", "required": True, "schema": {"$ref": f"#/definitions/{op.body}"}}
        )
    params += [_v2_param(p) for p in op.params]
    if params:
        out["parameters"] = params
    if op.text_response:
        ok: dict[str, Any] = {"description": "OK", "schema": {"type": "string"}}
    else:
        ok = (
            {"description": "OK", "schema": {"$ref": f"#/definitions/{op.response}"}}
            if op.response
            else {"description": "OK"}
        )
    responses: dict[str, Any] = {"200": ok}
    if op.created:
        responses["201"] = {**ok, "description": "Created"}
    if op.accepted:
        responses["202"] = {**ok, "description": "Accepted"}
    responses["401"] = {"description": "Unauthorized"}
    out["responses"] = responses
    out["x-kubernetes-action"] = op.action
    out["x-kubernetes-group-version-kind"] = _gvk_ext(op.gvk)
    return out


@lru_cache(maxsize=8)
def openapi_v2_document(registry: Registry = DEFAULT_REGISTRY) -> dict[str, Any]:
    """`GET /openapi/v2`: one swagger 2.0 document for every served group version."""
    defs = definitions()
    served = _served_group_versions(registry)
    gvs = registry.group_versions()
    roots: list[str] = list(DISCOVERY_ROOTS)
    for group, version in gvs:
        roots += _roots_for(registry, group, version)
    paths: dict[str, Any] = {}
    for item, res in _all_paths(registry, gvs):
        entry: dict[str, Any] = {
            op.method: _v2_operation(op, _tag(res.group, res.version)) for op in item.operations
        }
        entry["parameters"] = [_v2_param(p) for p in item.params]
        paths[item.path] = entry
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": {n: _filtered(defs[n], served) for n in _closure(roots, defs)},
    }


def openapi_v2_bytes(registry: Registry = DEFAULT_REGISTRY) -> bytes:
    return _v2_bytes(registry)


@lru_cache(maxsize=8)
def _v2_bytes(registry: Registry) -> bytes:
    return orjson.dumps(openapi_v2_document(registry), option=orjson.OPT_SORT_KEYS)


def schema_for(
    kind: str | GroupVersionKind | Resource, registry: Registry = DEFAULT_REGISTRY
) -> dict[str, Any] | None:
    """The v2-form schema of a served kind (or of any upstream kind given as a GroupVersionKind)."""
    name = _definition_for(kind, registry)
    return None if name is None else definitions()[name]


def _definition_for(kind: str | GroupVersionKind | Resource, registry: Registry) -> str | None:
    if isinstance(kind, Resource):
        return definition_name(kind.gvk)
    if isinstance(kind, GroupVersionKind):
        return definition_name(kind)
    res = registry.by_kind(kind)
    if res is not None:
        return definition_name(res.gvk)
    if kind.endswith("List") and (res := registry.by_kind(kind[: -len("List")])) is not None:
        return definition_name(GroupVersionKind(res.group, res.version, kind))
    return None


def field_description(definition: str, field_name: str) -> str:
    """The upstream description of one field of a definition, or "" when unknown."""
    schema = definitions().get(definition, {})
    return schema.get("properties", {}).get(field_name, {}).get("description", "")


# ---------------------------------------------------------------------------------------------
# Unknown and duplicate fields (fieldValidation=Strict|Warn|Ignore)

_Segment = str | int


def _kube_path(path: Iterable[_Segment]) -> str:
    """`spec.template.spec.containers[0].name`, the way kube's strict decoder names a field."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else seg
    return out


def _dot_path(path: Iterable[_Segment]) -> str:
    return "." + _kube_path(path)


def _resolve(schema: dict[str, Any] | None, defs: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Follow $ref / single allOf until a schema with structure is reached."""
    seen = 0
    while schema is not None and seen < 32:
        seen += 1
        if "$ref" in schema:
            schema = defs.get(schema["$ref"].rsplit("/", 1)[-1])
        elif len(schema.get("allOf", ())) == 1:
            schema = schema["allOf"][0]
        else:
            return schema
    return schema


@dataclass(frozen=True)
class _Node:
    """How the strict decoder treats a JSON object: as a struct (known fields), a map, or free form."""

    known: Mapping[str, dict[str, Any]] | None  # struct fields
    values: dict[str, Any] | None  # map value schema
    free: bool  # anything goes (RawExtension, FieldsV1, ...)


def _object_node(schema: dict[str, Any] | None, defs: Mapping[str, dict[str, Any]]) -> _Node:
    schema = _resolve(schema, defs)
    if schema is None:
        return _Node(None, None, True)
    if "properties" in schema:
        return _Node(schema["properties"], None, False)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return _Node(None, extra, False)
    return _Node(None, None, True)


def _items_schema(schema: dict[str, Any] | None, defs: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    schema = _resolve(schema, defs)
    if schema is None:
        return None
    items = schema.get("items")
    return items if isinstance(items, dict) else None


def unknown_fields(
    kind: str | GroupVersionKind | Resource,
    obj: Any,
    registry: Registry = DEFAULT_REGISTRY,
    *,
    sort_keys: bool = False,
) -> list[str]:
    """Paths (`.spec.foo`, `.spec.containers[0].bar`) of fields the kind's schema does not know.

    Fields under an unknown field are not reported again, and free-form fields (e.g. a
    RawExtension) accept anything, like kube-apiserver's strict decoder. Unknown kinds have
    no schema and yield no unknown fields.
    """
    return [_dot_path(p) for p in _unknown_paths(kind, obj, registry, sort_keys=sort_keys)]


def _key_text(key: Any) -> str:
    """A YAML key as the JSON key it becomes (`true`, `1`), so odd keys neither crash nor mislead."""
    return key if isinstance(key, str) else json.dumps(key)


def _unknown_paths(
    kind: str | GroupVersionKind | Resource, obj: Any, registry: Registry, *, sort_keys: bool
) -> list[tuple[_Segment, ...]]:
    defs = definitions()
    name = _definition_for(kind, registry)
    if name is None:
        return []
    out: list[tuple[_Segment, ...]] = []

    def walk(value: Any, schema: dict[str, Any] | None, path: tuple[_Segment, ...]) -> None:
        if isinstance(value, dict):
            node = _object_node(schema, defs)
            if node.free:
                return
            keys = sorted(value, key=_key_text) if sort_keys else list(value)
            for raw_key in keys:
                key = _key_text(raw_key)
                if node.known is not None:
                    if key not in node.known:
                        out.append((*path, key))
                        continue
                    walk(value[raw_key], node.known[key], (*path, key))
                else:
                    walk(value[raw_key], node.values, (*path, key))
        elif isinstance(value, list):
            items = _items_schema(schema, defs)
            if items is None:
                return
            for i, item in enumerate(value):
                walk(item, items, (*path, i))

    walk(obj, {"$ref": f"#/definitions/{name}"}, ())
    return out


class BodyDecodeError(ValueError):
    """The request body is not valid JSON or YAML (the API server answers 400 BadRequest)."""


def _is_yaml(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media.endswith("yaml")


def _json_pairs(raw: bytes) -> tuple[Any, type]:
    class _Pairs(list):
        pass

    def hook(pairs: list[tuple[str, Any]]) -> Any:
        return _Pairs(pairs)

    try:
        tree = json.loads(raw, object_pairs_hook=hook)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyDecodeError(f"the request body is not valid JSON: {exc}") from None
    return tree, _Pairs


@dataclass(frozen=True)
class DuplicateField:
    path: tuple[_Segment, ...]
    line: int | None = None  # 1-based line of the repeated key, for YAML bodies


def _yaml_duplicates(raw: bytes | str) -> list[DuplicateField]:
    try:
        root = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise BodyDecodeError(f"the request body is not valid YAML: {exc}") from None
    out: list[DuplicateField] = []

    def walk(node: yaml.Node | None, path: tuple[_Segment, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
                if key in seen:
                    out.append(DuplicateField((*path, key), key_node.start_mark.line + 1))
                seen.add(key)
                walk(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    walk(root, ())
    return out


def find_duplicate_fields(raw: bytes | str, content_type: str | None = "application/json") -> list[str]:
    """Paths (`.metadata.name`) of keys repeated within one object of a JSON or YAML body.

    Raises BodyDecodeError when the body does not parse.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if _is_yaml(content_type):
        return [_dot_path(d.path) for d in _yaml_duplicates(raw)]
    tree, pairs_type = _json_pairs(raw)
    out: list[str] = []

    def walk(value: Any, path: tuple[_Segment, ...]) -> None:
        if isinstance(value, pairs_type):
            seen: set[str] = set()
            for key, item in value:
                if key in seen:
                    out.append(_dot_path((*path, key)))
                seen.add(key)
                walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))

    walk(tree, ())
    return out


@dataclass(frozen=True)
class FieldValidation:
    """Unknown and duplicate fields of one request body, worded as kube-apiserver words them.

    `errors` are in kube's order. For JSON bodies unknown and duplicate fields interleave in
    document order; for YAML bodies the YAML decoder's duplicate-key report comes first (one
    entry in `errors`, one warning per key) and unknown fields follow in sorted key order.
    """

    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.errors)

    def strict_error(self) -> str | None:
        """The message of the 400 BadRequest Status for fieldValidation=Strict, or None."""
        if not self.errors:
            return None
        return "strict decoding error: " + ", ".join(self.errors)


def check_fields(
    kind: str | GroupVersionKind | Resource,
    raw: bytes | str,
    content_type: str | None = "application/json",
    registry: Registry = DEFAULT_REGISTRY,
) -> FieldValidation:
    """Find unknown and duplicate fields of a request body for the given kind.

    The server answers fieldValidation=Strict with `strict_error()` (400 BadRequest), Warn with
    one `Warning: 299 - "<warning>"` header per entry of `warnings`, and Ignore with nothing.
    Raises BodyDecodeError when the body does not parse.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if _is_yaml(content_type):
        dups = _yaml_duplicates(raw)
        try:
            obj = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise BodyDecodeError(f"the request body is not valid YAML: {exc}") from None
        unknown = [
            _quote_msg("unknown field", _kube_path(p))
            for p in _unknown_paths(kind, obj, registry, sort_keys=True)
        ]
        yaml_lines = [f"line {d.line}: key {_go_quote(str(d.path[-1]))} already set in map" for d in dups]
        errors = (["yaml: unmarshal errors:\n  " + "\n  ".join(yaml_lines)] if yaml_lines else []) + unknown
        return FieldValidation(tuple(errors), tuple(yaml_lines + unknown))
    messages = _json_problems(kind, raw, registry)
    return FieldValidation(tuple(messages), tuple(messages))


def _go_quote(text: str) -> str:
    """Go's %q for the strings that appear in field names."""
    return json.dumps(text, ensure_ascii=False)


def _quote_msg(prefix: str, path: str) -> str:
    return f"{prefix} {_go_quote(path)}"


def _json_problems(kind: str | GroupVersionKind | Resource, raw: bytes, registry: Registry) -> list[str]:
    defs = definitions()
    tree, pairs_type = _json_pairs(raw)
    name = _definition_for(kind, registry)
    messages: dict[str, None] = {}

    # schema None means "no schema at all" (an unknown kind): only duplicates are looked for,
    # the way a decode into a plain map would find them.
    def walk(value: Any, schema: dict[str, Any] | None, path: tuple[_Segment, ...]) -> None:
        if isinstance(value, pairs_type):
            node = _object_node(schema, defs) if schema is not None else _Node(None, None, False)
            if node.free:
                return  # RawExtension, FieldsV1, ...: kept as raw bytes, never inspected
            seen: set[str] = set()
            for key, item in value:
                sub_path = (*path, key)
                if node.known is not None and key not in node.known:
                    messages.setdefault(_quote_msg("unknown field", _kube_path(sub_path)))
                    continue
                if key in seen:
                    messages.setdefault(_quote_msg("duplicate field", _kube_path(sub_path)))
                seen.add(key)
                walk(item, node.known[key] if node.known is not None else node.values, sub_path)
        elif isinstance(value, list):
            items = _items_schema(schema, defs) if schema is not None else None
            for i, item in enumerate(value):
                walk(item, items, (*path, i))

    walk(tree, {"$ref": f"#/definitions/{name}"} if name else None, ())
    return list(messages)


# ---------------------------------------------------------------------------------------------
# OpenAPI v2 as protobuf: kubectl asks for /openapi/v2 only in this form (gnostic's
# openapi.v2.Document), e.g. to validate `kind: List` manifests on the client side.

OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
OPENAPI_V2_PROTOBUF_RESPONSE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def wants_openapi_v2_protobuf(accept: str | None) -> bool:
    """Whether an Accept header asks /openapi/v2 for gnostic protobuf rather than JSON."""
    return any(c.split(";", 1)[0].strip() == OPENAPI_V2_PROTOBUF for c in (accept or "").split(","))


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb(fields: Iterable[tuple[int, Any]]) -> bytes:
    """Encode (field number, value) pairs: str/bytes length-delimited, bool/int varint."""
    out = bytearray()
    for number, value in fields:
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                out += _varint(number << 3) + _varint(1)
        elif isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            data = value.encode() if isinstance(value, str) else value
            out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def _pb_any(value: Any) -> bytes:
    return _pb([(2, json.dumps(value, sort_keys=True))])  # Any.yaml; JSON is YAML


def _pb_named(name: str, value: bytes) -> bytes:
    return _pb([(1, name), (2, value)])


def _pb_schema(schema: Mapping[str, Any]) -> bytes:
    fields: list[tuple[int, Any]] = []
    scalar = {"$ref": 1, "format": 2, "title": 3, "description": 4, "discriminator": 26}
    for key, num in scalar.items():
        if isinstance(schema.get(key), str):
            fields.append((num, schema[key]))
    if "default" in schema:
        fields.append((5, _pb_any(schema["default"])))
    if schema.get("uniqueItems"):
        fields.append((16, True))
    fields += [(19, r) for r in schema.get("required", ())]
    fields += [(20, _pb_any(e)) for e in schema.get("enum", ())]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        fields.append((21, _pb([(1, _pb_schema(extra))])))
    elif isinstance(extra, bool):
        fields.append((21, _pb([(2, extra)])))
    types = schema.get("type")
    if types:
        fields.append((22, _pb([(1, t) for t in ([types] if isinstance(types, str) else types)])))
    if isinstance(schema.get("items"), dict):
        fields.append((23, _pb([(1, _pb_schema(schema["items"]))])))
    fields += [(24, _pb_schema(s)) for s in schema.get("allOf", ())]
    if "properties" in schema:
        props = [(1, _pb_named(n, _pb_schema(p))) for n, p in schema["properties"].items()]
        fields.append((25, _pb(props)))
    fields += [(31, _pb_named(k, _pb_any(v))) for k, v in schema.items() if k.startswith("x-")]
    return _pb(fields)


def _pb_parameter(param: Mapping[str, Any]) -> bytes:
    if param["in"] == "body":
        body = _pb(
            [
                (1, param.get("description")),
                (2, param["name"]),
                (3, "body"),
                (4, param.get("required", False)),
            ]
        )
        body += _pb([(5, _pb_schema(param["schema"]))])
        return _pb([(1, _pb([(1, body)]))])
    common = [
        (1, param.get("required", False)),
        (2, param["in"]),
        (3, param.get("description")),
        (4, param["name"]),
    ]
    if param["in"] == "path":
        sub = _pb([*common, (5, param["type"]), (19, param.get("uniqueItems", False))])
        non_body = _pb([(4, sub)])
    else:
        sub = _pb([*common, (6, param["type"]), (20, param.get("uniqueItems", False))])
        non_body = _pb([(3, sub)])
    return _pb([(1, _pb([(2, non_body)]))])


def _pb_operation(op: Mapping[str, Any]) -> bytes:
    fields: list[tuple[int, Any]] = [(1, t) for t in op.get("tags", ())]
    fields += [(3, op.get("description")), (5, op.get("operationId"))]
    fields += [(6, p) for p in op.get("produces", ())] + [(7, c) for c in op.get("consumes", ())]
    fields += [(8, _pb_parameter(p)) for p in op.get("parameters", ())]
    codes = []
    for code, response in op.get("responses", {}).items():
        resp = _pb([(1, response.get("description", ""))])
        if "schema" in response:
            resp += _pb([(2, _pb([(1, _pb_schema(response["schema"]))]))])
        codes.append((1, _pb_named(code, _pb([(1, resp)]))))
    fields.append((9, _pb(codes)))
    fields += [(10, s) for s in op.get("schemes", ())]
    fields += [(13, _pb_named(k, _pb_any(v))) for k, v in op.items() if k.startswith("x-")]
    return _pb(fields)


_PATH_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


@lru_cache(maxsize=8)
def openapi_v2_protobuf(registry: Registry = DEFAULT_REGISTRY) -> bytes:
    """`GET /openapi/v2` with Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf."""
    doc = openapi_v2_document(registry)
    paths = []
    for path, item in doc["paths"].items():
        fields = [(num, _pb_operation(item[m])) for m, num in _PATH_METHODS.items() if m in item]
        fields += [(9, _pb_parameter(p)) for p in item.get("parameters", ())]
        paths.append((2, _pb_named(path, _pb(fields))))
    definitions_pb = _pb([(1, _pb_named(n, _pb_schema(s))) for n, s in doc["definitions"].items()])
    info = _pb([(1, doc["info"]["title"]), (2, doc["info"]["version"])])
    return _pb([(1, doc["swagger"]), (2, info), (8, _pb(paths)), (9, definitions_pb)])
