"""Label and field selectors, parsed and matched the way kube-apiserver does.

`?labelSelector=` and `?fieldSelector=` on list and watch requests, the `selector` of
Deployments, ReplicaSets, DaemonSets and Services, and every controller that finds "its" pods
go through here. Parsing follows apimachinery's `labels.Parse` / `fields.ParseSelector`
grammar and reports bad syntax with the same error text, so `kubectl get -l 'a in b'` fails
here exactly as it does against Kubernetes. Field selectors are checked against the fields
each resource supports ("field label not supported: ..."). Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.validation import (
    canonical_kind,
    go_quote,
    go_value,
    is_qualified_name,
    is_valid_label_value,
)


class SelectorError(ValueError):
    """A selector that cannot be parsed or used; `str()` is Kubernetes' message for it."""


# ---------------------------------------------------------------------------------------------
# Label selectors
# ---------------------------------------------------------------------------------------------

# Operators as apimachinery's `selection` package names them.
IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS = "in", "notin", "=", "==", "!="
EXISTS, DOES_NOT_EXIST, GREATER_THAN, LESS_THAN = "exists", "!", "gt", "lt"
_BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector, e.g. `tier in (web,api)`."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return self.key in labels and labels[self.key] in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return self.key not in labels or labels[self.key] not in self.values
        if op == EXISTS:
            return self.key in labels
        if op == DOES_NOT_EXIST:
            return self.key not in labels
        if op in (GREATER_THAN, LESS_THAN):
            if self.key not in labels or len(self.values) != 1:
                return False
            try:
                have, want = int(labels[self.key]), int(self.values[0])
            except ValueError:
                return False
            return have > want if op == GREATER_THAN else have < want
        return False

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        if op in (IN, NOT_IN):
            return f"{self.key} {op} ({','.join(self.values)})"
        symbol = {GREATER_THAN: ">", LESS_THAN: "<"}.get(op, op)
        return f"{self.key}{symbol}{self.values[0] if self.values else ''}"


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of requirements. `nothing=True` is the selector that matches no object."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        """True for the selector that matches everything (Kubernetes' `Selector.Empty()`)."""
        return not self.nothing and not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = LabelSelector()
NOTHING = LabelSelector(nothing=True)


def _field_error(path: str, value: Any, detail: str) -> str:
    """A field.Error string as apimachinery prints it; a nil path prints as `<nil>`."""
    return f"{path or '<nil>'}: Invalid value: {go_value(value)}: {detail}"


def new_requirement(key: str, operator: str, values: list[str] | tuple[str, ...] = ()) -> Requirement:
    """labels.NewRequirement: check the key, operator and values; raise SelectorError."""
    errors: list[str] = []
    msgs = is_qualified_name(key)
    if msgs:
        errors.append(_field_error("key", key, "; ".join(msgs)))
    values = list(values)
    if operator in (IN, NOT_IN):
        if not values:
            errors.append(
                _field_error("values", values, "for 'in', 'notin' operators, values set can't be empty")
            )
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if len(values) != 1:
            errors.append(
                _field_error("values", values, "exact-match compatibility requires one single value")
            )
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if values:
            errors.append(
                _field_error("values", values, "values set must be empty for exists and does not exist")
            )
    elif operator in (GREATER_THAN, LESS_THAN):
        if len(values) != 1:
            errors.append(
                _field_error("values", values, "for 'Gt', 'Lt' operators, exactly one value is required")
            )
        for i, v in enumerate(values):
            try:
                int(v)
            except ValueError:
                errors.append(
                    _field_error(f"values[{i}]", v, "for 'Gt', 'Lt' operators, the value must be an integer")
                )
    else:
        supported = ", ".join(
            go_quote(o) for o in ("in", "notin", "=", "==", "!=", "exists", "!", "gt", "lt")
        )
        errors.append(f"operator: Unsupported value: {go_quote(operator)}: supported values: {supported}")
    for i, v in enumerate(values):
        msgs = is_valid_label_value(v)
        if msgs:
            errors.append(_field_error(f"values[{i}][{key}]", v, "; ".join(msgs)))
    if errors:
        raise SelectorError(errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
    return Requirement(key, operator, tuple(sorted(set(values))))


# Lexer tokens.
_IDENT, _END, _COMMA, _OPEN, _CLOSE, _NOT = "ident", "end", ",", "(", ")", "!"
_SPECIAL = "=!(),><"
_SYMBOLS = {
    ")": _CLOSE,
    ",": _COMMA,
    "!": _NOT,
    "==": DOUBLE_EQUALS,
    "=": EQUALS,
    ">": GREATER_THAN,
    "<": LESS_THAN,
    "!=": NOT_EQUALS,
    "(": _OPEN,
}
_KEYWORDS = {"in": IN, "notin": NOT_IN}


def _lex(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _SPECIAL:
            # Longest run of special characters that is still a known symbol.
            j = i + 1
            while j < n and text[j] in _SPECIAL and text[i : j + 1] in _SYMBOLS:
                j += 1
            symbol = text[i:j]
            if symbol not in _SYMBOLS:
                raise SelectorError(f"error expected: keyword found '{symbol}'")
            tokens.append((_SYMBOLS[symbol], symbol))
            i = j
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            word = text[i:j]
            tokens.append((_KEYWORDS.get(word, _IDENT), word))
            i = j
    tokens.append((_END, ""))
    return tokens


class _Parser:
    """labels.Parser: a recursive-descent parser over the token list with one lookahead."""

    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def lookahead(self, values_context: bool) -> tuple[str, str]:
        tok, lit = self.tokens[self.pos]
        if values_context and tok in (IN, NOT_IN):
            tok = _IDENT
        return tok, lit

    def consume(self, values_context: bool) -> tuple[str, str]:
        tok, lit = self.lookahead(values_context)
        if self.pos < len(self.tokens) - 1:
            self.pos += 1
        return tok, lit

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, lit = self.lookahead(True)
            if tok in (_IDENT, _NOT):
                try:
                    requirements.append(self.parse_requirement())
                except SelectorError as exc:
                    raise SelectorError(f"unable to parse requirement: {exc}") from None
                tok, lit = self.consume(True)
                if tok == _END:
                    return requirements
                if tok == _COMMA:
                    tok2, lit2 = self.lookahead(True)
                    if tok2 not in (_IDENT, _NOT):
                        raise SelectorError(f"found '{lit2}', expected: identifier after ','")
                else:
                    raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            elif tok == _END:
                return requirements
            else:
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def parse_requirement(self) -> Requirement:
        tok, lit = self.consume(True)
        operator = ""
        if tok == _NOT:
            operator = DOES_NOT_EXIST
            tok, lit = self.consume(True)
        if tok != _IDENT:
            raise SelectorError(f"found '{lit}', expected: identifier")
        key = lit
        msgs = is_qualified_name(key)
        if msgs:
            raise SelectorError(_field_error("", key, "; ".join(msgs)))
        # "!key" is complete by itself; a stray operator after it is the caller's syntax error.
        if operator == DOES_NOT_EXIST or self.lookahead(True)[0] in (_END, _COMMA):
            return new_requirement(key, operator or EXISTS)
        tok, lit = self.consume(False)
        if tok not in _BINARY_OPERATORS:
            raise SelectorError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        operator = tok
        if operator in (IN, NOT_IN):
            values = self.parse_values()
        else:
            values = self.parse_exact_value()
        return new_requirement(key, operator, values)

    def parse_values(self) -> list[str]:
        tok, lit = self.consume(True)
        if tok != _OPEN:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead(True)
        if tok in (_IDENT, _COMMA):
            values = self.parse_identifiers()
            tok, _ = self.consume(True)
            if tok != _CLOSE:
                raise SelectorError(f"found '{lit}', expected: ')'")
            return values
        if tok == _CLOSE:
            self.consume(True)
            return [""]
        raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")

    def parse_identifiers(self) -> list[str]:
        values: list[str] = []
        while True:
            tok, lit = self.consume(True)
            if tok == _IDENT:
                values.append(lit)
                tok2, lit2 = self.lookahead(True)
                if tok2 == _COMMA:
                    continue
                if tok2 == _CLOSE:
                    return values
                raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            if tok == _COMMA:
                if not values:
                    values.append("")
                tok2, _ = self.lookahead(True)
                if tok2 == _CLOSE:
                    values.append("")
                    return values
                if tok2 == _COMMA:
                    self.consume(True)
                    values.append("")
            else:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def parse_exact_value(self) -> list[str]:
        tok, _ = self.lookahead(True)
        if tok in (_END, _COMMA):
            return [""]
        tok, lit = self.consume(True)
        if tok == _IDENT:
            return [lit]
        raise SelectorError(f"found '{lit}', expected: identifier")


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse `?labelSelector=` syntax; an empty string selects everything."""
    requirements = _Parser(text or "").parse()
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


_EXPRESSION_OPERATORS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def selector_from_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """metav1.LabelSelectorAsSelector: None selects nothing, `{}` selects everything."""
    if selector is None:
        return NOTHING
    if not isinstance(selector, Mapping):
        raise SelectorError("a label selector must be an object")
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return EVERYTHING
    requirements = [new_requirement(str(k), EQUALS, [str(v)]) for k, v in match_labels.items()]
    for expr in expressions:
        expr = expr if isinstance(expr, Mapping) else {}
        operator = expr.get("operator")
        if operator not in _EXPRESSION_OPERATORS:
            raise SelectorError(f"{go_quote(str(operator))} is not a valid label selector operator")
        values = [str(v) for v in expr.get("values") or []]
        requirements.append(
            new_requirement(str(expr.get("key", "")), _EXPRESSION_OPERATORS[operator], values)
        )
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """The `?labelSelector=` form of a LabelSelector object (as `kubectl get -l` would take it)."""
    return str(selector_from_object(selector))


def matches_labels(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Does a LabelSelector object (matchLabels/matchExpressions) select these labels?"""
    return selector_from_object(selector).matches(labels)


def matches_map_selector(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    """A Service's plain `spec.selector` map; an empty one selects nothing, as for services."""
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------------
# Field selectors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    operator: str  # "=" (also for "==") or "!="
    value: str

    def matches(self, fields: Mapping[str, str]) -> bool:
        have = fields.get(self.field, "")
        return have == self.value if self.operator == EQUALS else have != self.value

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
        return f"{self.field}{self.operator}{escaped}"


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(r.field for r in self.requirements)

    def value_for(self, field: str) -> str | None:
        """The value an `=` term requires for `field` (lets a server narrow its scan), or None."""
        for r in self.requirements:
            if r.field == field and r.operator == EQUALS:
                return r.value
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split_terms(text: str) -> list[str]:
    terms, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == ",":
            terms.append("".join(current))
            current = []
        else:
            current.append(ch)
    terms.append("".join(current))
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    escaped = False
    for i, ch in enumerate(term):
        if escaped:
            escaped = False
            continue
        if ch == "\\":
            escaped = True
            continue
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def _unescape(value: str) -> str:
    if not any(c in value for c in "\\,="):
        return value
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(f"invalid field selector: unescaped character in value: {ch}")
        else:
            out.append(ch)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse `?fieldSelector=` syntax (`a=b`, `a==b`, `a!=b`, comma-joined, `\\` escapes)."""
    text = text or ""
    requirements = []
    for term in sorted(_split_terms(text)):
        if not term:
            continue
        parts = _split_term(term)
        if parts is None:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        lhs, op, rhs = parts
        requirements.append(FieldRequirement(lhs, NOT_EQUALS if op == NOT_EQUALS else EQUALS, _unescape(rhs)))
    return FieldSelector(tuple(requirements))


_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
SUPPORTED_FIELDS: dict[str, tuple[str, ...]] = {
    "Pod": _COMMON_FIELDS
    + (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "Event": _COMMON_FIELDS
    + (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Node": _COMMON_FIELDS + ("spec.unschedulable",),
    "Secret": _COMMON_FIELDS + ("type",),
    "Namespace": _COMMON_FIELDS + ("status.phase",),
    "ReplicaSet": _COMMON_FIELDS + ("status.replicas",),
}


def supported_fields(kind: str) -> tuple[str, ...]:
    """The field labels a resource can be filtered by."""
    return SUPPORTED_FIELDS.get(canonical_kind(kind) or kind, _COMMON_FIELDS)


def check_field_selector(kind: str, selector: FieldSelector) -> None:
    """Raise SelectorError("field label not supported: x") for a field the kind does not offer."""
    allowed = supported_fields(kind)
    for field in selector.fields:
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def object_fields(kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    """The selectable fields of an object, as strings (Kubernetes' `ToSelectableFields`)."""
    fields = {"metadata.name": _str(_get(obj, "metadata", "name"))}
    name = canonical_kind(kind) or kind
    fields["metadata.namespace"] = _str(_get(obj, "metadata", "namespace"))
    if name == "Pod":
        pod_ip = _get(obj, "status", "podIP")
        if not pod_ip:
            ips = _get(obj, "status", "podIPs")
            pod_ip = ips[0].get("ip") if isinstance(ips, list) and ips and isinstance(ips[0], Mapping) else ""
        fields.update(
            {
                "spec.nodeName": _str(_get(obj, "spec", "nodeName")),
                "spec.restartPolicy": _str(_get(obj, "spec", "restartPolicy")),
                "spec.schedulerName": _str(_get(obj, "spec", "schedulerName")),
                "spec.serviceAccountName": _str(_get(obj, "spec", "serviceAccountName")),
                "spec.hostNetwork": _str(bool(_get(obj, "spec", "hostNetwork"))),
                "status.phase": _str(_get(obj, "status", "phase")),
                "status.podIP": _str(pod_ip),
                "status.nominatedNodeName": _str(_get(obj, "status", "nominatedNodeName")),
            }
        )
    elif name == "Event":
        for sub in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"):
            fields[f"involvedObject.{sub}"] = _str(_get(obj, "involvedObject", sub))
        fields["reason"] = _str(obj.get("reason"))
        fields["reportingComponent"] = _str(obj.get("reportingComponent"))
        fields["source"] = _str(_get(obj, "source", "component"))
        fields["type"] = _str(obj.get("type"))
    elif name == "Node":
        fields["spec.unschedulable"] = _str(bool(_get(obj, "spec", "unschedulable")))
    elif name == "Secret":
        fields["type"] = _str(obj.get("type"))
    elif name == "Namespace":
        fields["status.phase"] = _str(_get(obj, "status", "phase"))
    elif name == "ReplicaSet":
        fields["status.replicas"] = _str(_get(obj, "status", "replicas") or 0)
    return fields


def matches_fields(kind: str, selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    return selector.matches(object_fields(kind, obj))
