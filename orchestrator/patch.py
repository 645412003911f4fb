"""PATCH semantics of the Kubernetes API: JSON merge, JSON patch, strategic merge and apply.

kubectl speaks all four: `kubectl patch --type merge|json|strategic`, `kubectl apply`
(client-side: a strategic merge patch carrying `$setElementOrder`, `$deleteFromPrimitiveList`
and `$retainKeys` directives) and `kubectl apply --server-side` (apply with field managers).
Strategic merge needs to know, per list field, whether items merge by a key (containers by
`name`, ports by `containerPort`, ...), merge as a set (finalizers) or are replaced whole
(tolerations): that knowledge is the `x-kubernetes-patch-merge-key/-strategy` of the built-in
types, written down in `SCHEMAS` below. The algorithms follow apimachinery's `strategicpatch`
(including where new list items land) and, for apply, structured-merge-diff's idea of field
ownership recorded in `metadata.managedFields` (fieldsV1). Pure functions over dicts; the
caller supplies the clock.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jsonpatch
import jsonpointer

from orchestrator.validation import canonical_kind, go_quote


class PatchError(Exception):
    """A patch that cannot be applied; `code` is the HTTP status the API server should answer."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------------------------------------
# Patch metadata of the built-in types
# ---------------------------------------------------------------------------------------------

MERGE = "merge"


@dataclass(frozen=True)
class FieldMeta:
    """How a field merges: `strategy` "merge" for keyed/set lists, `atomic` for replace-whole."""

    strategy: str | None = None
    merge_key: str | None = None
    # Keys identifying a list item for apply (listMapKeys); defaults to (merge_key,).
    list_keys: tuple[str, ...] = ()
    children: Mapping[str, FieldMeta] = field(default_factory=lambda: MappingProxyType({}))
    atomic: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return self.list_keys or ((self.merge_key,) if self.merge_key else ())


def _struct(**children: FieldMeta) -> FieldMeta:
    return FieldMeta(children=MappingProxyType(children))


def _keyed(key: str, item: FieldMeta | None = None, keys: tuple[str, ...] = ()) -> FieldMeta:
    return FieldMeta(MERGE, key, keys, item.children if item else MappingProxyType({}))


_SET = FieldMeta(MERGE)
_ATOMIC = FieldMeta(atomic=True)

_OBJECT_META = _struct(ownerReferences=_keyed("uid"), finalizers=_SET, managedFields=_ATOMIC)
_CONTAINER = _struct(
    ports=FieldMeta(MERGE, "containerPort", ("containerPort", "protocol")),
    env=_keyed("name"),
    volumeMounts=_keyed("mountPath"),
    volumeDevices=_keyed("devicePath"),
)
_POD_SPEC = _struct(
    volumes=_keyed("name"),
    initContainers=_keyed("name", _CONTAINER),
    containers=_keyed("name", _CONTAINER),
    ephemeralContainers=_keyed("name", _CONTAINER),
    imagePullSecrets=_keyed("name"),
    hostAliases=_keyed("ip"),
    topologySpreadConstraints=_keyed("topologyKey", keys=("topologyKey", "whenUnsatisfiable")),
    schedulingGates=_keyed("name"),
    resourceClaims=_keyed("name"),
)
_POD_STATUS = _struct(
    conditions=_keyed("type"),
    podIPs=_keyed("ip"),
    hostIPs=_keyed("ip"),
    resourceClaimStatuses=_keyed("name"),
)
_POD_TEMPLATE = _struct(metadata=_OBJECT_META, spec=_POD_SPEC)
_CONDITIONS_STATUS = _struct(conditions=_keyed("type"))
_LABEL_SELECTOR = _ATOMIC  # metav1.LabelSelector is +structType=atomic


def _object(spec: FieldMeta | None = None, status: FieldMeta | None = None) -> FieldMeta:
    children: dict[str, FieldMeta] = {"metadata": _OBJECT_META}
    if spec is not None:
        children["spec"] = spec
    if status is not None:
        children["status"] = status
    return FieldMeta(children=MappingProxyType(children))


SCHEMAS: Mapping[str, FieldMeta] = MappingProxyType(
    {
        "Pod": _object(_POD_SPEC, _POD_STATUS),
        "Deployment": _object(_struct(template=_POD_TEMPLATE, selector=_LABEL_SELECTOR), _CONDITIONS_STATUS),
        "ReplicaSet": _object(_struct(template=_POD_TEMPLATE, selector=_LABEL_SELECTOR), _CONDITIONS_STATUS),
        "DaemonSet": _object(_struct(template=_POD_TEMPLATE, selector=_LABEL_SELECTOR), _CONDITIONS_STATUS),
        "Service": _object(_struct(ports=FieldMeta(MERGE, "port", ("port", "protocol"))), _CONDITIONS_STATUS),
        "Endpoints": _object(),
        "Node": _object(
            _struct(podCIDRs=_SET),
            _struct(conditions=_keyed("type"), addresses=_keyed("type")),
        ),
        "Namespace": _object(None, _CONDITIONS_STATUS),
        "ConfigMap": _object(),
        "Secret": _object(),
        "Event": _object(),
        "Lease": _object(),
    }
)


def schema_for(kind: str) -> FieldMeta | None:
    """Patch metadata for a built-in kind (`Pod`, `deployments`, ...), or None if unknown."""
    name = canonical_kind(kind)
    return SCHEMAS.get(name) if name else None


_NO_META = FieldMeta()


def _child(meta: FieldMeta, key: str) -> FieldMeta:
    return meta.children.get(key, _NO_META)


# ---------------------------------------------------------------------------------------------
# JSON merge patch (RFC 7386) and JSON patch (RFC 6902)
# ---------------------------------------------------------------------------------------------


def _merge_value(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_value(result.get(key), value)
    return result


def json_merge_patch(obj: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        raise PatchError("a JSON merge patch for an object must be a JSON object", 400)
    return _merge_value(dict(obj), patch)


def json_patch(obj: Mapping[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902 operations (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchError("a JSON patch must be a JSON array of operation objects", 400)
    try:
        result = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(dict(obj)))
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchError(f"the test operation failed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(str(exc)) from None
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        raise PatchError(f"invalid JSON patch: {exc}") from None
    if not isinstance(result, dict):
        raise PatchError("the patched document is not a JSON object")
    return result


# ---------------------------------------------------------------------------------------------
# Strategic merge patch
# ---------------------------------------------------------------------------------------------

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"
SET_ELEMENT_ORDER = "$setElementOrder/"


def _kind_of(value: Any) -> str:
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return "scalar"


def _describe(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def strategic_merge_patch(obj: Mapping[str, Any], patch: Any, kind: str) -> dict[str, Any]:
    """Apply a strategic merge patch; unknown kinds fall back to JSON merge semantics."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object", 400)
    schema = schema_for(kind)
    if schema is None:
        return json_merge_patch(obj, patch)
    return _merge_map(copy.deepcopy(dict(obj)), copy.deepcopy(patch), schema)


def _fresh(value: Any, meta: FieldMeta) -> Any:
    """A patch value for a field the original lacks: merged into emptiness, so directives go."""
    if isinstance(value, dict):
        if value.get(DIRECTIVE) == "delete":
            return None
        return _merge_map({}, value, meta)
    if isinstance(value, list) and meta.strategy == MERGE:
        return _merge_list([], value, meta)
    return value


def _merge_map(original: dict[str, Any], patch: dict[str, Any], meta: FieldMeta) -> dict[str, Any]:
    directive = patch.pop(DIRECTIVE, None)
    if directive == "replace":
        return _merge_map({}, patch, meta)
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch type: {directive} in map: {_describe(patch)}", 400)

    if RETAIN_KEYS in patch:
        retain = patch.pop(RETAIN_KEYS)
        if not isinstance(retain, list):
            raise PatchError("invalid patch format of retainKeys", 400)
        for key, value in patch.items():
            if value is None or key.startswith((DELETE_FROM_PRIMITIVE_LIST, SET_ELEMENT_ORDER)):
                continue
            if key not in retain:
                raise PatchError("invalid patch format of retainKeys", 400)
        for key in [k for k in original if k not in retain]:
            del original[key]

    for key in [k for k in patch if k.startswith(SET_ELEMENT_ORDER)]:
        _merge_with_element_order(original, patch, key, meta)

    for key in [k for k in patch if k.startswith(DELETE_FROM_PRIMITIVE_LIST)]:
        values = patch.pop(key)
        name = key[len(DELETE_FROM_PRIMITIVE_LIST) :]
        if not isinstance(values, list):
            raise PatchError("invalid patch format of primitive list", 400)
        current = original.get(name)
        if isinstance(current, list):
            original[name] = [v for v in current if v not in values]

    for key, value in patch.items():
        if key.startswith("$"):
            raise PatchError(f"unknown patch directive: {key}", 400)
        sub = _child(meta, key)
        if value is None:
            original.pop(key, None)
            continue
        if key not in original or _kind_of(original[key]) != _kind_of(value):
            fresh = _fresh(value, sub)
            if fresh is None:
                original.pop(key, None)
            else:
                original[key] = fresh
            continue
        current = original[key]
        if isinstance(value, dict):
            original[key] = _merge_map(current, value, sub)
        elif isinstance(value, list):
            original[key] = _merge_list(current, value, sub) if sub.strategy == MERGE else value
        else:
            original[key] = value
    return original


def _merge_with_element_order(
    original: dict[str, Any], patch: dict[str, Any], key: str, meta: FieldMeta
) -> None:
    order = patch.pop(key)
    if not isinstance(order, list):
        raise PatchError("invalid patch format of setElementOrder list", 400)
    name = key[len(SET_ELEMENT_ORDER) :]
    sub = _child(meta, name)
    merge_key = sub.merge_key
    in_original, in_patch = name in original, name in patch
    original_list = original.get(name) if in_original else []
    patch_list = patch.pop(name) if in_patch else []
    if not isinstance(original_list, list) or not isinstance(patch_list, list):
        raise PatchError(f"invalid patch format of setElementOrder list for {name}", 400)
    _check_patch_order(patch_list, order, merge_key)
    if not in_original and not in_patch:
        return
    if in_original and in_patch:
        merged = _merge_list(original_list, patch_list, sub) if sub.strategy == MERGE else patch_list
    elif in_patch:
        merged = _fresh(patch_list, sub)
    else:
        merged = original_list
    listed = [_identity(item, merge_key) for item in order]
    patch_items = [i for i in merged if _identity(i, merge_key) in listed]
    server_only = [i for i in merged if _identity(i, merge_key) not in listed]
    original[name] = _normalize_order(patch_items, server_only, order, original_list, merge_key)


def _identity(item: Any, merge_key: str | None) -> Any:
    """What list positions are compared by: the merge key's value, or the item itself."""
    if merge_key:
        if not isinstance(item, dict):
            raise PatchError(f"list item {_describe(item)} is not an object with merge key {merge_key}", 400)
        if merge_key not in item:
            raise PatchError(f"map: {_describe(item)} does not contain declared merge key: {merge_key}", 400)
        return _hashable(item[merge_key])
    return _hashable(item)


def _hashable(value: Any) -> Any:
    return _describe(value) if isinstance(value, dict | list) else (type(value) is bool, value)


def _check_patch_order(patch_list: list[Any], order: list[Any], merge_key: str | None) -> None:
    items = [i for i in patch_list if not (isinstance(i, dict) and DIRECTIVE in i)]
    if not items or not order:
        return
    wanted = [_identity(i, merge_key) for i in order]
    p = 0
    for ident in wanted:
        if p < len(items) and _identity(items[p], merge_key) == ident:
            p += 1
    if p < len(items):
        raise PatchError(
            f"The order in patch list:\n{_describe(patch_list)}\n doesn't match $setElementOrder list:\n"
            f"{_describe(order)}\n",
            400,
        )


def _merge_list(original: list[Any], patch: list[Any], meta: FieldMeta) -> list[Any]:
    if not original and not patch:
        return original
    kinds = {_kind_of(v) for v in original + patch}
    if "list" in kinds:
        raise PatchError("lists of lists are not supported", 422)
    if len(kinds) > 1:
        raise PatchError("list items have mixed types", 400)
    merge_key = meta.merge_key
    if kinds == {"scalar"}:
        merged: list[Any] = []
        seen = set()
        for v in original + patch:
            if _hashable(v) not in seen:
                seen.add(_hashable(v))
                merged.append(v)
        server_order = original
        patch_items_src = patch
        merge_key = None
    else:
        if not merge_key:
            raise PatchError("cannot merge lists without merge key", 400)
        server_order, patch_items_src = _apply_special_elements(original, patch, merge_key)
        merged = list(server_order)
        for item in patch_items_src:
            ident = _identity(item, merge_key)
            for idx, existing in enumerate(merged):
                if _identity(existing, merge_key) == ident:
                    merged[idx] = _merge_map(existing, item, meta)
                    break
            else:
                merged.append(_merge_map({}, item, meta))
    patch_idents = {_identity(i, merge_key) for i in patch_items_src}
    patch_items = [i for i in merged if _identity(i, merge_key) in patch_idents]
    server_only = [i for i in merged if _identity(i, merge_key) not in patch_idents]
    return _normalize_order(patch_items, server_only, patch_items_src, server_order, merge_key)


def _apply_special_elements(
    original: list[Any], patch: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    """`{"$patch": "delete", key: v}` removes items, `{"$patch": "replace"}` replaces the list."""
    plain = []
    replace = False
    for item in patch:
        directive = item.get(DIRECTIVE)
        if directive is None:
            plain.append(item)
        elif directive == "delete":
            if merge_key not in item:
                raise PatchError(
                    f"map: {_describe(item)} does not contain declared merge key: {merge_key}", 400
                )
            ident = _identity(item, merge_key)
            original = [o for o in original if _identity(o, merge_key) != ident]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch", 400)
        else:
            raise PatchError(f"unknown patch type: {directive} in map: {_describe(item)}", 400)
    if replace:
        return [_merge_map({}, i, FieldMeta()) if isinstance(i, dict) else i for i in plain], []
    return original, plain


def _normalize_order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    key: str | None,
) -> list[Any]:
    """Patch items in patch order, server-only items in live order, interleaved by live order."""
    patch_pos = {_identity(v, key): i for i, v in enumerate(patch_order)}
    server_pos = {_identity(v, key): i for i, v in enumerate(server_order)}
    patch_items = sorted(patch_items, key=lambda v: patch_pos.get(_identity(v, key), len(patch_pos)))
    server_only = sorted(server_only, key=lambda v: server_pos.get(_identity(v, key), len(server_pos)))
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch_items):
        if i >= len(server_only):
            out.append(patch_items[j])
            j += 1
        elif j >= len(patch_items):
            out.append(server_only[i])
            i += 1
        else:
            left = server_pos.get(_identity(server_only[i], key))
            right = server_pos.get(_identity(patch_items[j], key))
            if left is not None and right is not None and left < right:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch_items[j])
                j += 1
    return out


# ---------------------------------------------------------------------------------------------
# Field ownership (managedFields, fieldsV1)
# ---------------------------------------------------------------------------------------------

# A field path is a tuple of fieldsV1 path elements: "f:spec", 'k:{"name":"web"}', 'v:"a"'.
FieldPath = tuple[str, ...]

# Metadata the server owns; apply never records or removes them.
_SERVER_METADATA = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
}


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _item_key(item: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    values = {}
    for k in keys:
        if k in item:
            values[k] = item[k]
        elif k == "protocol":
            values[k] = "TCP"  # keys must be complete; ports default to TCP
    return "k:" + _compact(values)


def field_paths(obj: Mapping[str, Any], kind: str) -> set[FieldPath]:
    """Every field an object sets, as fieldsV1 paths (list items also as themselves)."""
    schema = schema_for(kind) or FieldMeta()
    paths: set[FieldPath] = set()
    for key, value in obj.items():
        if key in ("apiVersion", "kind") or value is None:
            continue
        if key == "metadata" and isinstance(value, dict):
            meta = {k: v for k, v in value.items() if k not in _SERVER_METADATA}
            _collect(meta, ("f:metadata",), _child(schema, "metadata"), paths)
            continue
        _collect_value(value, ("f:" + key,), _child(schema, key), paths)
    return paths


def _collect(obj: Mapping[str, Any], prefix: FieldPath, meta: FieldMeta, out: set[FieldPath]) -> None:
    for key, value in obj.items():
        if value is not None:
            _collect_value(value, (*prefix, "f:" + key), _child(meta, key), out)


def _collect_value(value: Any, path: FieldPath, meta: FieldMeta, out: set[FieldPath]) -> None:
    if meta.atomic:
        out.add(path)
    elif isinstance(value, dict):
        if value:
            _collect(value, path, meta, out)
        else:
            out.add(path)
    elif isinstance(value, list) and meta.strategy == MERGE and meta.keys:
        for item in value:
            if isinstance(item, dict):
                item_path = (*path, _item_key(item, meta.keys))
                out.add(item_path)
                _collect(item, item_path, meta, out)
    elif isinstance(value, list) and meta.strategy == MERGE:
        for item in value:
            out.add((*path, "v:" + _compact(item)))
    else:
        out.add(path)


def paths_to_fields_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """The nested fieldsV1 document for a set of paths (`.` marks a list item owned itself)."""
    root: dict[str, Any] = {}
    all_paths = set(paths)
    for path in sorted(all_paths):
        node = root
        for element in path:
            node = node.setdefault(element, {})
    for path in all_paths:
        node = root
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}  # owned itself as well as some of its fields
    return root


def fields_v1_to_paths(fields: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    paths: set[FieldPath] = set()
    for element, sub in fields.items():
        if element == ".":
            paths.add(prefix)
            continue
        path = (*prefix, element)
        if isinstance(sub, Mapping) and sub:
            paths |= fields_v1_to_paths(sub, path)
        else:
            paths.add(path)
    return paths


_MISSING = object()


def _find_item(items: Any, element: str) -> tuple[int, Any]:
    if not isinstance(items, list):
        return -1, _MISSING
    wanted = json.loads(element[2:])
    for i, item in enumerate(items):
        if isinstance(item, dict) and _item_key(item, tuple(wanted)) == element:
            return i, item
    return -1, _MISSING


def value_at(obj: Any, path: FieldPath) -> Any:
    """The value a field path points at, or `_MISSING`."""
    current = obj
    for element in path:
        if element.startswith("f:"):
            if not isinstance(current, dict) or element[2:] not in current:
                return _MISSING
            current = current[element[2:]]
        elif element.startswith("k:"):
            _, current = _find_item(current, element)
            if current is _MISSING:
                return _MISSING
        elif element.startswith("v:"):
            wanted = json.loads(element[2:])
            if not isinstance(current, list) or wanted not in current:
                return _MISSING
            current = wanted
        else:
            return _MISSING
    return current


def _remove_path(obj: dict[str, Any], path: FieldPath) -> None:
    parent: Any = value_at(obj, path[:-1]) if len(path) > 1 else obj
    element = path[-1]
    if element.startswith("f:") and isinstance(parent, dict):
        parent.pop(element[2:], None)
    elif element.startswith("k:"):
        idx, _ = _find_item(parent, element)
        if idx >= 0:
            del parent[idx]
    elif element.startswith("v:") and isinstance(parent, list):
        wanted = json.loads(element[2:])
        parent[:] = [v for v in parent if v != wanted]


def path_string(path: FieldPath) -> str:
    """structured-merge-diff's path notation: `.spec.containers[name="web"].image`."""
    out = []
    for element in path:
        if element.startswith("f:"):
            out.append("." + element[2:])
        elif element.startswith("k:"):
            keys = json.loads(element[2:])
            out.append("[" + ",".join(f"{k}={_compact(v)}" for k, v in keys.items()) + "]")
        elif element.startswith("v:"):
            out.append("[=" + element[2:] + "]")
    return "".join(out)


@dataclass(frozen=True)
class _Manager:
    manager: str
    operation: str
    subresource: str

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> _Manager:
        return cls(
            str(entry.get("manager", "")), str(entry.get("operation", "")), str(entry.get("subresource", ""))
        )


def _entry_paths(entry: Mapping[str, Any]) -> set[FieldPath]:
    fields = entry.get("fieldsV1")
    return fields_v1_to_paths(fields) if isinstance(fields, Mapping) else set()


def _entry(
    manager: str, operation: str, api_version: str, time: str, paths: set[FieldPath], subresource: str = ""
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": paths_to_fields_v1(paths),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _leaves(paths: set[FieldPath]) -> set[FieldPath]:
    """Paths whose value is compared for conflicts: everything but list-item markers."""
    return {p for p in paths if not p[-1].startswith("k:")}


def _is_item_key(path: FieldPath) -> bool:
    """A key field of a list item (`name` in `k:{"name":"web"}`): it goes only with its item."""
    if len(path) < 2 or not path[-2].startswith("k:") or not path[-1].startswith("f:"):
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def _owned_below(path: FieldPath, paths: Iterable[FieldPath]) -> bool:
    return any(p[: len(path)] == path for p in paths)


class ApplyConflict(Exception):
    """Server-side apply would take fields another manager owns; the API server answers 409."""

    def __init__(self, conflicts: list[tuple[str, str]], managers: Mapping[str, str] | None = None) -> None:
        self.conflicts = conflicts
        self._described = dict(managers or {})
        super().__init__(self.message)

    def _describe(self, manager: str) -> str:
        return self._described.get(manager, go_quote(manager))

    @property
    def message(self) -> str:
        if len(self.conflicts) == 1:
            manager, path = self.conflicts[0]
            return f"Apply failed with 1 conflict: conflict with {self._describe(manager)}: {path}"
        by_manager: dict[str, list[str]] = {}
        for manager, path in self.conflicts:
            by_manager.setdefault(manager, []).append(path)
        lines = []
        for manager in sorted(by_manager):
            lines.append(f"conflicts with {self._describe(manager)}:")
            lines += [f"- {p}" for p in by_manager[manager]]
        return f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)

    def causes(self) -> list[dict[str, str]]:
        return [
            {"reason": "FieldManagerConflict", "message": f"conflict with {self._describe(m)}", "field": p}
            for m, p in self.conflicts
        ]

    def status(self) -> dict[str, Any]:
        """The 409 `kind: Status` body kube-apiserver sends for apply conflicts."""
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": "Conflict",
            "details": {"causes": self.causes()},
            "code": 409,
        }


def _describe_manager(entry: Mapping[str, Any]) -> str:
    text = go_quote(str(entry.get("manager", "")))
    if entry.get("subresource"):
        text += f" with subresource {go_quote(str(entry['subresource']))}"
    if entry.get("operation") == "Update":
        text += f" using {entry.get('apiVersion', '')}"
        if entry.get("time"):
            text += f" at {entry['time']}"
    return text


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def server_side_apply(
    live: Mapping[str, Any] | None,
    applied: Mapping[str, Any],
    field_manager: str,
    force: bool,
    time: str = "",
    subresource: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a configuration as `field_manager`; return (merged object, its managedFields entry).

    Fields the applied config sets become owned by the manager and merged into the live object
    (lists by their merge keys); fields it owned before and no longer sets are removed unless
    another manager owns them too; other managers' fields stay. Setting a field another manager
    owns to a different value raises ApplyConflict unless `force`, which takes ownership.
    """
    if not isinstance(applied, Mapping):
        raise PatchError("an apply configuration must be a JSON object", 400)
    applied = _strip_nulls(dict(applied))
    if isinstance(applied.get("metadata"), dict):
        applied["metadata"] = {k: v for k, v in applied["metadata"].items() if k != "managedFields"}
    kind = str(applied.get("kind") or (live or {}).get("kind") or "")
    api_version = str(applied.get("apiVersion") or (live or {}).get("apiVersion") or "")
    me = _Manager(field_manager, "Apply", subresource)
    new_paths = field_paths(applied, kind)

    if live is None:
        merged = copy.deepcopy(applied)
        entries: list[dict[str, Any]] = []
    else:
        merged = copy.deepcopy(dict(live))
        entries = [
            dict(e) for e in (merged.get("metadata") or {}).get("managedFields") or [] if isinstance(e, dict)
        ]

    old_paths: set[FieldPath] = set()
    others: list[tuple[dict[str, Any], set[FieldPath]]] = []
    for entry in entries:
        if _Manager.of(entry) == me:
            old_paths = _entry_paths(entry)
        else:
            others.append((entry, _entry_paths(entry)))

    if live is not None:
        conflicts: list[tuple[str, str]] = []
        described: dict[str, str] = {}
        for entry, paths in others:
            for path in sorted(_leaves(new_paths) & paths):
                if value_at(merged, path) != value_at(applied, path):
                    if force:
                        paths.discard(path)
                    else:
                        conflicts.append((str(entry.get("manager", "")), path_string(path)))
                        described[str(entry.get("manager", ""))] = _describe_manager(entry)
        if conflicts:
            raise ApplyConflict(conflicts, described)

        others_paths = set().union(*(p for _, p in others)) if others else set()
        kept = others_paths | new_paths
        removable = {p for p in old_paths - new_paths if not _owned_below(p, kept) and not _is_item_key(p)}
        # Remove only the outermost paths: removing a list item removes its fields with it.
        outermost = [p for p in removable if not any(p[:n] in removable for n in range(1, len(p)))]
        for path in sorted(outermost, key=len, reverse=True):
            _remove_path(merged, path)
            # A map or list left empty by the removal, and owned by nobody, goes too.
            parent = path[:-1]
            while parent and value_at(merged, parent) in ({}, []) and not _owned_below(parent, kept):
                _remove_path(merged, parent)
                parent = parent[:-1]

        schema = schema_for(kind) or FieldMeta()
        merged = _merge_map(merged, _as_patch(applied), schema)
        _replace_atomic(merged, applied, schema)

    entry = _entry(field_manager, "Apply", api_version, time, new_paths, subresource)
    new_entries = []
    for other, paths in others:
        if paths:
            kept = dict(other)
            kept["fieldsV1"] = paths_to_fields_v1(paths)
            new_entries.append(kept)
    new_entries.append(entry)
    merged.setdefault("metadata", {})
    if not isinstance(merged["metadata"], dict):
        merged["metadata"] = {}
    merged["metadata"]["managedFields"] = new_entries
    return merged, entry


def _replace_atomic(merged: dict[str, Any], applied: Mapping[str, Any], meta: FieldMeta) -> None:
    """Atomic structs (label selectors) are replaced whole by apply, not merged key by key."""
    for key, value in applied.items():
        sub = _child(meta, key)
        if sub.atomic:
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict) and sub.children:
            _replace_atomic(merged[key], value, sub)
        elif isinstance(value, list) and sub.keys and sub.children and isinstance(merged.get(key), list):
            for item in value:
                if isinstance(item, dict):
                    _, target = _find_item(merged[key], _item_key(item, sub.keys))
                    if isinstance(target, dict):
                        _replace_atomic(target, item, sub)


def _as_patch(value: Any) -> Any:
    """Applied configuration as a strategic patch: keys starting with `$` are data, not directives."""
    if isinstance(value, dict):
        if any(k.startswith("$") for k in value):
            raise PatchError("an apply configuration may not contain keys starting with '$'", 400)
        return {k: _as_patch(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_patch(v) for v in value]
    return value


def track_update(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    field_manager: str,
    time: str = "",
    subresource: str = "",
) -> dict[str, Any]:
    """Record a create/update/patch by `field_manager` (operation Update) in managedFields.

    Fields the write changed move to the manager; fields it removed leave every manager.
    Returns `new` with `metadata.managedFields` rewritten.
    """
    result = copy.deepcopy(dict(new))
    kind = str(result.get("kind") or (old or {}).get("kind") or "")
    api_version = str(result.get("apiVersion") or (old or {}).get("apiVersion") or "")
    new_paths = field_paths(result, kind)
    old_obj = old or {}
    old_paths = field_paths(old_obj, kind)
    changed = {p for p in new_paths if value_at(old_obj, p) != value_at(result, p)}
    removed = old_paths - new_paths
    me = _Manager(field_manager, "Update", subresource)
    entries = [
        dict(e) for e in ((old_obj.get("metadata") or {}).get("managedFields") or []) if isinstance(e, dict)
    ]
    out: list[dict[str, Any]] = []
    mine: set[FieldPath] = set()
    for entry in entries:
        paths = _entry_paths(entry) - removed
        if _Manager.of(entry) == me:
            mine = paths
            continue
        paths -= _leaves(changed)
        if paths:
            kept = dict(entry)
            kept["fieldsV1"] = paths_to_fields_v1(paths)
            out.append(kept)
    mine |= changed
    if mine:
        out.append(_entry(field_manager, "Update", api_version, time, mine, subresource))
    result.setdefault("metadata", {})
    if isinstance(result["metadata"], dict):
        result["metadata"]["managedFields"] = out
    return result
