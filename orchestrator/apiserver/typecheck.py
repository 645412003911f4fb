"""Type checking of request bodies against the built-in types' schemas.

kube-apiserver decodes a body into Go structs, so `replicas: "3"` or a label value of `true`
(YAML's `y`) fails at decode time with a 400 BadRequest saying what Go type was expected; nothing
later ever sees a wrongly typed field. grove keeps objects as JSON, so this walk over the OpenAPI
schema (orchestrator.openapi) does the decoder's job and words the first error the way Go's
encoding/json does: `json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas
of type int32`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator import openapi
from orchestrator.resources import Resource

_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _def_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _short(definition: str) -> str:
    """`io.k8s.api.core.v1.PodSpec` -> `v1.PodSpec` (Go's package-qualified type name)."""
    parts = definition.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 2 else definition


class _Checker:
    def __init__(self, defs: Mapping[str, dict[str, Any]]) -> None:
        self.defs = defs

    def go_type(self, schema: dict[str, Any]) -> str:
        if "$ref" in schema:
            name = _def_name(schema["$ref"])
            if name == _INT_OR_STRING:
                return "intstr.IntOrString"
            if name == _QUANTITY:
                return "resource.Quantity"
            target = self.defs.get(name, {})
            if "properties" in target or target.get("type") == "object":
                return _short(name)
            return self.go_type(target)
        kind = schema.get("type")
        if kind == "integer":
            return schema.get("format") or "int64"
        if kind == "number":
            return "float64"
        if kind == "boolean":
            return "bool"
        if kind == "string":
            return "string"
        if kind == "array":
            return "[]" + self.go_type(schema.get("items") or {})
        if kind == "object":
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return "map[string]" + self.go_type(extra)
            return "map[string]interface {}"
        return "interface {}"

    def check(self, value: Any, schema: dict[str, Any], path: str, struct: str) -> str | None:
        if value is None:
            return None
        if "$ref" in schema:
            name = _def_name(schema["$ref"])
            if name == _INT_OR_STRING:
                if isinstance(value, bool) or not isinstance(value, int | str):
                    return self._error(value, struct, path, "intstr.IntOrString")
                return None
            if name == _QUANTITY:
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    return self._error(value, struct, path, "resource.Quantity")
                return None
            target = self.defs.get(name)
            if target is None:
                return None
            if "properties" in target:
                if not isinstance(value, dict):
                    return self._error(value, struct, path, _short(name))
                return self._struct(value, target, path, name.rsplit(".", 1)[-1])
            return self.check(value, target, path, struct)
        if len(schema.get("allOf", ())) == 1:
            return self.check(value, schema["allOf"][0], path, struct)
        kind = schema.get("type")
        if kind == "string":
            if not isinstance(value, str):
                return self._error(value, struct, path, "string")
        elif kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                return self._error(value, struct, path, schema.get("format") or "int64")
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return self._error(value, struct, path, "float64")
        elif kind == "boolean":
            if not isinstance(value, bool):
                return self._error(value, struct, path, "bool")
        elif kind == "array":
            if not isinstance(value, list):
                return self._error(value, struct, path, self.go_type(schema))
            items = schema.get("items")
            if isinstance(items, dict):
                for item in value:
                    err = self.check(item, items, path, struct)
                    if err:
                        return err
        elif kind == "object":
            if "properties" in schema:
                if not isinstance(value, dict):
                    return self._error(value, struct, path, self.go_type(schema))
                return self._struct(value, schema, path, struct)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                if not isinstance(value, dict):
                    return self._error(value, struct, path, self.go_type(schema))
                for item in value.values():
                    err = self.check(item, extra, path, struct)
                    if err:
                        return err
            # free-form objects (RawExtension, FieldsV1) hold anything
        return None

    def _struct(self, value: dict[str, Any], schema: dict[str, Any], path: str, struct: str) -> str | None:
        props = schema.get("properties") or {}
        for key, item in value.items():
            sub = props.get(key)
            if sub is None:
                continue  # unknown fields are fieldValidation's business
            err = self.check(item, sub, f"{path}.{key}" if path else key, struct)
            if err:
                return err
        return None

    @staticmethod
    def _error(value: Any, struct: str, path: str, go_type: str) -> str:
        where = f"Go struct field {struct}.{path}" if path else "Go value"
        return f"json: cannot unmarshal {_json_type(value)} into {where} of type {go_type}"


def type_error(res: Resource, obj: Any) -> str | None:
    """The first field of `obj` whose JSON type does not fit the resource's schema, worded as Go's
    decoder words it; None when every field fits (or the kind has no schema)."""
    schema = openapi.schema_for(res)
    if schema is None:
        return None
    checker = _Checker(openapi.definitions())
    kind = res.kind
    if not isinstance(obj, dict):
        return f"json: cannot unmarshal {_json_type(obj)} into Go value of type {res.version}.{kind}"
    return checker._struct(obj, schema, "", kind)


# --- the fast path: "is this body clean?" ----------------------------------------------------------
#
# Almost every body a client sends is well typed and has no unknown field. Walking the raw OpenAPI
# schema to find that out (type checks here, unknown fields and duplicates in orchestrator.openapi)
# cost more than the rest of a create. `is_clean` walks a compiled form of the schema once and only
# answers yes or no; a "no" (or any doubt) sends the body down the exact, slower paths that word
# the errors and warnings.

_ANY, _STR, _INT, _NUM, _BOOL, _INTSTR, _QTY, _ARRAY, _MAP, _STRUCT = range(10)


class _Compiled:
    __slots__ = ("sub", "tag")

    def __init__(self, tag: int, sub: Any = None) -> None:
        self.tag = tag
        self.sub = sub  # _STRUCT: {field: _Compiled}; _ARRAY/_MAP: the item's _Compiled (or None)


_ANY_NODE = _Compiled(_ANY)
_LEAVES = {
    "string": _Compiled(_STR),
    "integer": _Compiled(_INT),
    "number": _Compiled(_NUM),
    "boolean": _Compiled(_BOOL),
}


def _compile(schema: Any, defs: Mapping[str, dict[str, Any]], memo: dict[str, _Compiled]) -> _Compiled:
    name = None
    for _ in range(32):
        if not isinstance(schema, dict):
            return _ANY_NODE
        if "$ref" in schema:
            name = _def_name(schema["$ref"])
            if name == _INT_OR_STRING:
                return _Compiled(_INTSTR)
            if name == _QUANTITY:
                return _Compiled(_QTY)
            if name in memo:
                return memo[name]
            target = defs.get(name)
            if target is None:
                return _ANY_NODE
            schema = target
        elif len(schema.get("allOf", ())) == 1:
            schema = schema["allOf"][0]
        else:
            break
    if "properties" in schema:
        node = _Compiled(_STRUCT, {})
        if name is not None:
            memo[name] = node  # before the fields: a type may refer to itself
        for key, sub in (schema.get("properties") or {}).items():
            node.sub[key] = _compile(sub, defs, memo)
        return node
    kind = schema.get("type")
    if kind in _LEAVES:
        return _LEAVES[kind]
    if kind == "array":
        items = schema.get("items")
        return _Compiled(_ARRAY, _compile(items, defs, memo) if isinstance(items, dict) else None)
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return _Compiled(_MAP, _compile(schema["additionalProperties"], defs, memo))
    return _ANY_NODE


_compiled: dict[str, _Compiled | None] = {}


def _compiled_for(res: Resource) -> _Compiled | None:
    key = f"{res.group}/{res.version}/{res.resource}"
    if key not in _compiled:
        schema = openapi.schema_for(res)
        _compiled[key] = None if schema is None else _compile(schema, openapi.definitions(), {})
    return _compiled[key]


def _clean(value: Any, node: _Compiled) -> bool:
    tag = node.tag
    if tag == _STRUCT:
        if type(value) is not dict:
            return False
        fields = node.sub
        for key, item in value.items():
            sub = fields.get(key)
            if sub is None:
                return False
            if item is not None and sub.tag != _ANY and not _clean(item, sub):
                return False
        return True
    if tag == _STR:
        return type(value) is str
    if tag == _INT:
        return type(value) is int
    if tag == _BOOL:
        return type(value) is bool
    if tag == _ARRAY:
        if type(value) is not list:
            return False
        sub = node.sub
        if sub is None or sub.tag == _ANY:
            return True
        return all(item is None or _clean(item, sub) for item in value)
    if tag == _MAP:
        if type(value) is not dict:
            return False
        sub = node.sub
        if sub.tag == _ANY:
            return True
        return all(item is None or _clean(item, sub) for item in value.values())
    if tag == _INTSTR:
        return type(value) is int or type(value) is str
    if tag == _QTY or tag == _NUM:
        return type(value) is int or type(value) is float or (tag == _QTY and type(value) is str)
    return True  # _ANY


def is_clean(res: Resource, obj: Any) -> bool:
    """True when `obj` surely has no wrongly typed and no unknown field for the resource's schema
    (what `type_error` and `openapi.unknown_fields` would find); False means "look closely"."""
    node = _compiled_for(res)
    if node is None:
        return False
    return _clean(obj, node)
