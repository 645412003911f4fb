"""Object validation that answers in kube-apiserver's own words.

kubectl and client libraries show the server's 422 message to the user verbatim, and scripts
grep for it ("field is immutable", "`selector` does not match template `labels`"), so this
module reproduces the field paths, cause reasons and message bodies of Kubernetes'
`pkg/apis/*/validation` for the built-in kinds grove serves. Everything is a pure function of
JSON-shaped dicts: `validate(kind, obj)` for create, `validate_update(kind, new, old)` for
update, both returning a list of `Cause`s; `invalid_status` turns them into the `kind: Status`
body. Like Kubernetes, validation expects an object that has already been defaulted
(`orchestrator.defaults.apply_defaults`): a missing `restartPolicy` is an error here.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# ---------------------------------------------------------------------------------------------
# Kinds
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindInfo:
    """What validation needs to know about a built-in kind."""

    kind: str
    group: str
    version: str
    resource: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_kind(self) -> str:
        """`Deployment.apps`, or just `Pod` for the core group, as in kube-apiserver's messages."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


KINDS: tuple[KindInfo, ...] = (
    KindInfo("Pod", "", "v1", "pods", True),
    KindInfo("Service", "", "v1", "services", True),
    KindInfo("Endpoints", "", "v1", "endpoints", True),
    KindInfo("Node", "", "v1", "nodes", False),
    KindInfo("Namespace", "", "v1", "namespaces", False),
    KindInfo("ConfigMap", "", "v1", "configmaps", True),
    KindInfo("Secret", "", "v1", "secrets", True),
    KindInfo("Event", "", "v1", "events", True),
    KindInfo("Lease", "coordination.k8s.io", "v1", "leases", True),
    KindInfo("Deployment", "apps", "v1", "deployments", True),
    KindInfo("ReplicaSet", "apps", "v1", "replicasets", True),
    KindInfo("DaemonSet", "apps", "v1", "daemonsets", True),
    KindInfo("StatefulSet", "apps", "v1", "statefulsets", True),
    KindInfo("ControllerRevision", "apps", "v1", "controllerrevisions", True),
    KindInfo("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True),
    KindInfo("Job", "batch", "v1", "jobs", True),
    KindInfo("CronJob", "batch", "v1", "cronjobs", True),
    KindInfo("HorizontalPodAutoscaler", "autoscaling", "v2", "horizontalpodautoscalers", True),
)

_KIND_LOOKUP: dict[str, KindInfo] = {}
for _info in KINDS:
    for _alias in (_info.kind, _info.resource, _info.kind.lower(), f"{_info.resource}.{_info.group}"):
        _KIND_LOOKUP[_alias.lower()] = _info


def kind_info(name: str) -> KindInfo | None:
    """Look a kind up by Kind (`Deployment`), resource (`deployments`) or `deployments.apps`."""
    return _KIND_LOOKUP.get(name.lower()) if name else None


def canonical_kind(name: str) -> str | None:
    """The Kind spelled as Kubernetes spells it, or None for a kind grove does not know."""
    info = kind_info(name)
    return info.kind if info else None


# ---------------------------------------------------------------------------------------------
# Causes and Go-style value printing
# ---------------------------------------------------------------------------------------------

# Reasons (metav1.CauseType) and the words field.Error puts before the value.
NOT_FOUND = "FieldValueNotFound"
REQUIRED = "FieldValueRequired"
DUPLICATE = "FieldValueDuplicate"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
FORBIDDEN = "FieldValueForbidden"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"


@dataclass(frozen=True)
class Cause:
    """One validation failure: a StatusCause (`field`, `reason`, `message`)."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


@dataclass(frozen=True)
class GoValue:
    """A bad value already rendered the way Go's `%#v` prints it (e.g. a struct)."""

    text: str


def go_quote(s: str) -> str:
    """Go's strconv.Quote: double quotes, backslash escapes for quotes and control characters."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not ch.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_value(value: Any) -> str:
    """Render a bad value as field.Error does: %v for numbers/bools, %q for strings, %#v else."""
    if isinstance(value, GoValue):
        return value.text
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, Mapping):
        if all(isinstance(v, str) for v in value.values()):
            return go_string_map(value)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return "[]string{" + ", ".join(go_quote(v) for v in value) + "}"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def go_string_map(value: Mapping[str, str] | None) -> str:
    """`map[string]string{"a":"b"}` (keys sorted, as fmt prints maps), or the nil map."""
    if value is None:
        return "map[string]string(nil)"
    items = ", ".join(f"{go_quote(k)}:{go_quote(str(v))}" for k, v in sorted(value.items()))
    return "map[string]string{" + items + "}"


def go_label_selector(selector: Mapping[str, Any] | None) -> GoValue:
    """A metav1.LabelSelector as `%#v` prints it in messages such as "field is immutable"."""
    sel = selector or {}
    labels = sel.get("matchLabels")
    exprs = sel.get("matchExpressions")
    if exprs is None:
        exprs_text = "[]v1.LabelSelectorRequirement(nil)"
    else:
        parts = []
        for e in exprs:
            values = e.get("values")
            values_text = (
                "[]string(nil)"
                if values is None
                else "[]string{" + ", ".join(go_quote(str(v)) for v in values) + "}"
            )
            parts.append(
                f"v1.LabelSelectorRequirement{{Key:{go_quote(str(e.get('key', '')))}, "
                f"Operator:{go_quote(str(e.get('operator', '')))}, Values:{values_text}}}"
            )
        exprs_text = "[]v1.LabelSelectorRequirement{" + ", ".join(parts) + "}"
    return GoValue(f"v1.LabelSelector{{MatchLabels:{go_string_map(labels)}, MatchExpressions:{exprs_text}}}")


def go_int_or_string(value: Any) -> GoValue:
    if isinstance(value, str):
        return GoValue(f"intstr.IntOrString{{Type:1, IntVal:0, StrVal:{go_quote(value)}}}")
    number = value if isinstance(value, int) and not isinstance(value, bool) else 0
    return GoValue(f'intstr.IntOrString{{Type:0, IntVal:{number}, StrVal:""}}')


def _body(words: str, value: Any, detail: str) -> str:
    text = f"{words}: {go_value(value)}"
    return f"{text}: {detail}" if detail else text


def invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, INVALID, _body("Invalid value", value, detail))


def required(path: str, detail: str = "") -> Cause:
    return Cause(path, REQUIRED, f"Required value: {detail}" if detail else "Required value")


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, DUPLICATE, _body("Duplicate value", value, ""))


def not_found(path: str, value: Any) -> Cause:
    return Cause(path, NOT_FOUND, _body("Not found", value, ""))


def not_supported(path: str, value: Any, valid: Iterable[str]) -> Cause:
    valid = list(valid)
    detail = "supported values: " + ", ".join(go_quote(v) for v in valid) if valid else ""
    return Cause(path, NOT_SUPPORTED, _body("Unsupported value", value, detail))


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, FORBIDDEN, f"Forbidden: {detail}" if detail else "Forbidden")


def too_long(path: str, max_length: int) -> Cause:
    return Cause(path, TOO_LONG, f"Too long: must have at most {max_length} bytes")


def _dedup_messages(causes: Iterable[Cause]) -> list[str]:
    seen: set[str] = set()
    out = []
    for c in causes:
        text = str(c)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def invalid_message(kind: str, name: str, causes: Iterable[Cause]) -> str:
    """`Deployment.apps "web" is invalid: <cause>` or `... is invalid: [<cause>, <cause>]`."""
    info = kind_info(kind)
    qualified = info.qualified_kind if info else kind
    texts = _dedup_messages(causes)
    if not texts:
        return f"{qualified} {go_quote(name)} is invalid"
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return f"{qualified} {go_quote(name)} is invalid: {joined}"


def invalid_status(kind: str, name: str, causes: Iterable[Cause]) -> dict[str, Any]:
    """The 422 `kind: Status` body kube-apiserver sends for an invalid object."""
    causes = list(causes)
    info = kind_info(kind)
    details: dict[str, Any] = {"name": name, "kind": info.kind if info else kind}
    if info and info.group:
        details["group"] = info.group
    details["causes"] = [c.as_dict() for c in causes]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": invalid_message(kind, name, causes),
        "reason": "Invalid",
        "details": details,
        "code": 422,
    }


# ---------------------------------------------------------------------------------------------
# Name and value formats (k8s.io/apimachinery/pkg/util/validation)
# ---------------------------------------------------------------------------------------------

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
CONFIG_MAP_KEY_FMT = "[-._a-zA-Z0-9]+"
PERCENT_FMT = "[0-9]+%"

_DNS1123_LABEL_RE = re.compile(DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE = re.compile(DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE = re.compile(DNS1035_LABEL_FMT)
_QUALIFIED_NAME_RE = re.compile(QUALIFIED_NAME_FMT)
_LABEL_VALUE_RE = re.compile(LABEL_VALUE_FMT)
_CONFIG_MAP_KEY_RE = re.compile(CONFIG_MAP_KEY_FMT)
_PERCENT_RE = re.compile(PERCENT_FMT)
_PORT_NAME_CHARSET_RE = re.compile("[-a-z0-9]+")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
TOTAL_ANNOTATION_SIZE = 256 * 1024
MAX_SECRET_SIZE = 1024 * 1024
MAX_INT32 = 2**31 - 1

_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
    "start with an alphabetic character, and end with an alphanumeric character"
)
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_CONFIG_MAP_KEY_MSG = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
_PERCENT_MSG = "a valid percent string must be a numeric string followed by an ending '%'"
INVALID_IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
INVALID_CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
FIELD_IMMUTABLE = "field is immutable"
IS_NEGATIVE = "must be greater than or equal to 0"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """validation.RegexError, including its double space before " or "."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    text = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def inclusive_range_error(lo: int, hi: int) -> str:
    return f"must be between {lo} and {hi}, inclusive"


def _full(regex: re.Pattern[str], value: str) -> bool:
    return regex.fullmatch(value) is not None


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _full(_DNS1123_LABEL_RE, value):
        if _full(_DNS1123_SUBDOMAIN_RE, value):
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_MSG, DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _full(_DNS1123_SUBDOMAIN_RE, value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX:
        errs.append(max_len_error(DNS1123_LABEL_MAX))
    if not _full(_DNS1035_LABEL_RE, value):
        errs.append(regex_error(_DNS1035_LABEL_MSG, DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_qualified_name(value: str) -> list[str]:
    """Label keys, annotation keys, finalizers: an optional DNS-subdomain prefix and a name."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _full(_QUALIFIED_NAME_RE, name):
        errs.append(
            "name part "
            + regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_VALUE_MAX:
        errs.append(max_len_error(LABEL_VALUE_MAX))
    if not _full(_LABEL_VALUE_RE, value):
        errs.append(regex_error(_LABEL_VALUE_MSG, LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def is_config_map_key(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX))
    if not _full(_CONFIG_MAP_KEY_RE, value):
        errs.append(regex_error(_CONFIG_MAP_KEY_MSG, CONFIG_MAP_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_valid_port_num(port: Any) -> list[str]:
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        return []
    return [inclusive_range_error(1, 65535)]


def is_valid_port_name(port: str) -> list[str]:
    """IANA_SVC_NAME, the format of named ports."""
    errs = []
    if len(port) > 15:
        errs.append(max_len_error(15))
    if not _full(_PORT_NAME_CHARSET_RE, port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_valid_percent(value: str) -> list[str]:
    if _full(_PERCENT_RE, value):
        return []
    return [regex_error(_PERCENT_MSG, PERCENT_FMT, "1%", "93%")]


def is_valid_ip(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        # Go's ParseIP accepts IPv4 octets with leading zeros ("sloppy" parsing) too.
        octets = value.split(".")
        return len(octets) == 4 and all(o.isdigit() and int(o) <= 255 for o in octets)
    return True


def is_valid_cidr(value: Any) -> bool:
    if not isinstance(value, str) or "/" not in value:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


# Name functions (apimachinery's ValidateNameFunc): prefix=True validates a generateName.


def _mask_trailing_dash(name: str) -> str:
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def name_is_dns_subdomain(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool = False) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


NameFunc = Callable[[str, bool], list[str]]

# ---------------------------------------------------------------------------------------------
# Quantities (k8s.io/apimachinery/pkg/api/resource)
# ---------------------------------------------------------------------------------------------

QUANTITY_REGEX = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
QUANTITY_ERROR = f"quantities must match the regular expression '{QUANTITY_REGEX}'"
_QUANTITY_RE = re.compile(QUANTITY_REGEX)
_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}


class QuantityError(ValueError):
    """A resource quantity that Kubernetes would refuse to decode."""


def parse_quantity(value: Any) -> Fraction:
    """Parse "100m", "1.5Gi", "2e3", 4 into an exact number."""
    if isinstance(value, bool):
        raise QuantityError(QUANTITY_ERROR)
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    if not isinstance(value, str):
        raise QuantityError(QUANTITY_ERROR)
    return _parse_quantity_text(value)


@functools.lru_cache(maxsize=4096)
def _parse_quantity_text(value: str) -> Fraction:
    # Cached: every pod write parses the same few request strings ("10m", "16Mi") again, and a
    # Fraction is immutable. (Refused strings raise, and exceptions are not cached.)
    m = _QUANTITY_RE.match(value.strip())
    if not m:
        raise QuantityError(QUANTITY_ERROR)
    number_text, suffix = m.groups()
    if number_text.count(".") > 1 or number_text.strip("+-") in ("", "."):
        raise QuantityError(QUANTITY_ERROR)
    try:
        number = Fraction(number_text)
    except ValueError as exc:
        raise QuantityError(QUANTITY_ERROR) from exc
    if suffix in _BINARY_SUFFIXES:
        return number * _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return number * _DECIMAL_SUFFIXES[suffix]
    exp = re.fullmatch(r"[eE]([-+]?[0-9]+)", suffix)
    if exp:
        return number * Fraction(10) ** int(exp.group(1))
    raise QuantityError("unable to parse quantity's suffix")


# ---------------------------------------------------------------------------------------------
# Small helpers over JSON dicts
# ---------------------------------------------------------------------------------------------


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _nonnegative(value: Any, path: str) -> list[Cause]:
    number = _int(value)
    if number is not None and number < 0:
        return [invalid(path, number, IS_NEGATIVE)]
    return []


def _immutable(new: Any, old: Any, path: str, render: Callable[[Any], Any] = lambda v: v) -> list[Cause]:
    if _semantic(new) != _semantic(old):
        return [invalid(path, render(new), FIELD_IMMUTABLE)]
    return []


def _semantic(value: Any) -> Any:
    """Drop empty maps/lists and nulls, as apimachinery's semantic equality treats nil == empty."""
    if isinstance(value, dict):
        out = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def validate_labels(labels: Any, path: str) -> list[Cause]:
    causes = []
    for key, value in _d(labels).items():
        causes += [invalid(path, key, msg) for msg in is_qualified_name(key)]
        causes += [invalid(path, value, msg) for msg in is_valid_label_value(_s(value))]
    return causes


def validate_annotations(annotations: Any, path: str) -> list[Cause]:
    causes = []
    total = 0
    for key, value in _d(annotations).items():
        causes += [invalid(path, key, msg) for msg in is_qualified_name(key.lower())]
        total += len(key) + len(_s(value))
    if total > TOTAL_ANNOTATION_SIZE:
        causes.append(too_long(path, TOTAL_ANNOTATION_SIZE))
    return causes


def _validate_owner_references(refs: Any, path: str) -> list[Cause]:
    causes = []
    controller = ""
    for ref in _l(refs):
        ref = _d(ref)
        api_version = _s(ref.get("apiVersion"))
        if not api_version or api_version.endswith("/"):
            causes.append(invalid(f"{path}.apiVersion", api_version, "version must not be empty"))
        if not _s(ref.get("kind")):
            causes.append(invalid(f"{path}.kind", _s(ref.get("kind")), "must not be empty"))
        if not _s(ref.get("name")):
            causes.append(invalid(f"{path}.name", _s(ref.get("name")), "must not be empty"))
        if not _s(ref.get("uid")):
            causes.append(invalid(f"{path}.uid", _s(ref.get("uid")), "must not be empty"))
        if ref.get("controller") is True:
            current = f"{_s(ref.get('kind'))}/{_s(ref.get('name'))}"
            if controller:
                causes.append(
                    invalid(
                        path,
                        refs,
                        "Only one reference can have Controller set to true. "
                        f'Found "true" in references for {controller} and {current}',
                    )
                )
            else:
                controller = current
    return causes


_STANDARD_FINALIZERS = {"kubernetes", "orphan", "foregroundDeletion"}


def _validate_finalizers(finalizers: Any, path: str) -> list[Cause]:
    causes = []
    for i, name in enumerate(_l(finalizers)):
        name = _s(name)
        msgs = is_qualified_name(name)
        causes += [invalid(path, name, m) for m in msgs]
        if not msgs and "/" not in name and name not in _STANDARD_FINALIZERS:
            causes.append(
                invalid(
                    f"{path}[{i}]",
                    name,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
    return causes


def validate_object_meta(
    meta: Any, namespaced: bool | None, name_fn: NameFunc = name_is_dns_subdomain, path: str = "metadata"
) -> list[Cause]:
    """ValidateObjectMeta; `namespaced=None` skips the namespace scope check."""
    meta = _d(meta)
    causes: list[Cause] = []
    generate_name = _s(meta.get("generateName"))
    name = _s(meta.get("name"))
    if generate_name:
        causes += [invalid(f"{path}.generateName", generate_name, m) for m in name_fn(generate_name, True)]
    if not name:
        causes.append(required(f"{path}.name", "name or generateName is required"))
    else:
        causes += [invalid(f"{path}.name", name, m) for m in name_fn(name, False)]
    namespace = _s(meta.get("namespace"))
    if namespaced is True:
        if not namespace:
            causes.append(required(f"{path}.namespace"))
        else:
            causes += [invalid(f"{path}.namespace", namespace, m) for m in name_is_dns_label(namespace)]
    elif namespaced is False and namespace:
        causes.append(forbidden(f"{path}.namespace", "not allowed on this type"))
    causes += _nonnegative(meta.get("generation"), f"{path}.generation")
    causes += validate_labels(meta.get("labels"), f"{path}.labels")
    causes += validate_annotations(meta.get("annotations"), f"{path}.annotations")
    causes += _validate_owner_references(meta.get("ownerReferences"), f"{path}.ownerReferences")
    causes += _validate_finalizers(meta.get("finalizers"), f"{path}.finalizers")
    return causes


def validate_object_meta_update(new: Any, old: Any, path: str = "metadata") -> list[Cause]:
    new, old = _d(new), _d(old)
    causes: list[Cause] = []
    if old.get("deletionTimestamp"):
        added = [f for f in _l(new.get("finalizers")) if f not in _l(old.get("finalizers"))]
        if added:
            causes.append(
                forbidden(
                    f"{path}.finalizers",
                    "no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {go_value(added)}",
                )
            )
    new_gen, old_gen = _int(new.get("generation")) or 0, _int(old.get("generation")) or 0
    if new_gen < old_gen:
        causes.append(invalid(f"{path}.generation", new_gen, "must not be decremented"))
    for fld in (
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ):
        causes += _immutable(
            new.get(fld, "" if fld in ("name", "namespace", "uid") else None),
            old.get(fld, "" if fld in ("name", "namespace", "uid") else None),
            f"{path}.{fld}",
        )
    causes += validate_labels(new.get("labels"), f"{path}.labels")
    causes += validate_annotations(new.get("annotations"), f"{path}.annotations")
    causes += _validate_owner_references(new.get("ownerReferences"), f"{path}.ownerReferences")
    return causes


# ---------------------------------------------------------------------------------------------
# Label selectors (metav1.LabelSelector)
# ---------------------------------------------------------------------------------------------

_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def validate_label_selector(selector: Any, path: str) -> list[Cause]:
    if selector is None:
        return []
    selector = _d(selector)
    causes: list[Cause] = []
    for i, expr in enumerate(_l(selector.get("matchExpressions"))):
        expr = _d(expr)
        epath = f"{path}.matchExpressions[{i}]"
        operator = _s(expr.get("operator"))
        values = _l(expr.get("values"))
        if operator in ("In", "NotIn"):
            if not values:
                causes.append(
                    required(f"{epath}.values", "must be specified when `operator` is 'In' or 'NotIn'")
                )
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                causes.append(
                    forbidden(
                        f"{epath}.values",
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        else:
            causes.append(invalid(f"{epath}.operator", operator, "not a valid selector operator"))
        key = _s(expr.get("key"))
        causes += [invalid(f"{epath}.key", key, m) for m in is_qualified_name(key)]
        for j, value in enumerate(values):
            causes += [invalid(f"{epath}.values[{j}]", value, m) for m in is_valid_label_value(_s(value))]
    causes += validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    return causes


def _selector_matches(selector: Any, labels: Any) -> bool | None:
    """True/False for a usable selector, None when it cannot be turned into one."""
    from orchestrator.selectors import SelectorError, selector_from_object  # selectors imports us

    try:
        return selector_from_object(selector).matches(_d(labels))
    except SelectorError:
        return None


def _selector_is_empty(selector: Any) -> bool:
    sel = _d(selector)
    return selector is not None and not sel.get("matchLabels") and not sel.get("matchExpressions")


# ---------------------------------------------------------------------------------------------
# Pods
# ---------------------------------------------------------------------------------------------

SUPPORTED_PROTOCOLS = ("SCTP", "TCP", "UDP")
RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
HOST_PATH_TYPES = (
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
)
# In the order validateVolumeSource checks them: the second one found is "more than 1".
VOLUME_SOURCES = (
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
)
_FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
_ENV_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
_STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
POD_UPDATABLE_FIELDS = (
    "`spec.containers[*].image`",
    "`spec.initContainers[*].image`",
    "`spec.activeDeadlineSeconds`",
    "`spec.tolerations` (only additions to existing tolerations)",
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
)


def _validate_volumes(volumes: Any, path: str) -> tuple[set[str], list[Cause]]:
    names: set[str] = set()
    causes: list[Cause] = []
    for i, vol in enumerate(_l(volumes)):
        vol = _d(vol)
        ipath = f"{path}[{i}]"
        name = _s(vol.get("name"))
        errs = _validate_volume_source(vol, ipath)
        if not name:
            errs.append(required(f"{ipath}.name"))
        else:
            errs += [invalid(f"{ipath}.name", name, m) for m in is_dns1123_label(name)]
        if name in names:
            errs.append(duplicate(f"{ipath}.name", name))
        if errs:
            causes += errs
        else:
            names.add(name)
    return names, causes


def _validate_file_mode(mode: Any, path: str) -> list[Cause]:
    number = _int(mode)
    if mode is not None and (number is None or not 0 <= number <= 0o777):
        return [invalid(path, mode, _FILE_MODE_MSG)]
    return []


def _validate_key_to_paths(items: Any, path: str) -> list[Cause]:
    causes = []
    for i, item in enumerate(_l(items)):
        item = _d(item)
        ipath = f"{path}[{i}]"
        if not _s(item.get("key")):
            causes.append(required(f"{ipath}.key"))
        target = _s(item.get("path"))
        if not target:
            causes.append(required(f"{ipath}.path"))
        elif target.startswith("/"):
            causes.append(invalid(f"{ipath}.path", target, "must be a relative path"))
        elif ".." in target.split("/"):
            causes.append(invalid(f"{ipath}.path", target, "must not contain '..'"))
        causes += _validate_file_mode(item.get("mode"), f"{ipath}.mode")
    return causes


def _validate_volume_source(vol: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    found = 0
    for source in VOLUME_SOURCES:
        if vol.get(source) is None:
            continue
        spath = f"{path}.{source}"
        if found:
            causes.append(forbidden(spath, "may not specify more than 1 volume type"))
            continue
        found += 1
        body = _d(vol[source])
        if source == "hostPath":
            if not _s(body.get("path")):
                causes.append(required(f"{spath}.path"))
            if body.get("type") is not None and body.get("type") not in HOST_PATH_TYPES:
                causes.append(not_supported(f"{spath}.type", body.get("type"), HOST_PATH_TYPES))
        elif source == "secret":
            if not _s(body.get("secretName")):
                causes.append(required(f"{spath}.secretName"))
            causes += _validate_file_mode(body.get("defaultMode"), f"{spath}.defaultMode")
            causes += _validate_key_to_paths(body.get("items"), f"{spath}.items")
        elif source == "configMap":
            if not _s(body.get("name")):
                causes.append(required(f"{spath}.name"))
            causes += _validate_file_mode(body.get("defaultMode"), f"{spath}.defaultMode")
            causes += _validate_key_to_paths(body.get("items"), f"{spath}.items")
        elif source == "persistentVolumeClaim":
            if not _s(body.get("claimName")):
                causes.append(required(f"{spath}.claimName"))
        elif source == "emptyDir":
            medium = body.get("medium")
            if medium not in (None, "", "Memory") and not _s(medium).startswith("HugePages"):
                causes.append(not_supported(f"{spath}.medium", medium, ("", "Memory", "HugePages")))
            if body.get("sizeLimit") is not None:
                causes += _validate_quantity(body["sizeLimit"], f"{spath}.sizeLimit")
        elif source in ("downwardAPI", "projected"):
            causes += _validate_file_mode(body.get("defaultMode"), f"{spath}.defaultMode")
    if not found:
        causes.append(required(path, "must specify a volume type"))
    return causes


def _validate_quantity(value: Any, path: str) -> list[Cause]:
    try:
        quantity = parse_quantity(value)
    except QuantityError as exc:
        return [invalid(path, value, str(exc))]
    if quantity < 0:
        return [invalid(path, value, IS_NEGATIVE)]
    return []


def _resource_name_causes(name: str, path: str) -> list[Cause]:
    causes = [invalid(path, name, m) for m in is_qualified_name(name)]
    if causes:
        return causes
    if "/" not in name:
        if name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            causes.append(invalid(path, name, "must be a standard resource for containers"))
    elif not name.startswith("kubernetes.io/") and (
        name.startswith("requests.") or ".kubernetes.io/" in name and not name.startswith("requests.")
    ):
        causes.append(invalid(path, name, "doesn't follow extended resource name standard"))
    return causes


def _overcommit_allowed(name: str) -> bool:
    native = "/" not in name or name.startswith("kubernetes.io/")
    return native and not name.startswith("hugepages-")


def _validate_resources(resources: Any, path: str) -> list[Cause]:
    resources = _d(resources)
    limits, requests = _d(resources.get("limits")), _d(resources.get("requests"))
    causes: list[Cause] = []
    parsed_limits: dict[str, Fraction] = {}
    for name, value in limits.items():
        fpath = f"{path}.limits[{name}]"
        causes += _resource_name_causes(name, fpath)
        errs = _validate_quantity(value, fpath)
        causes += errs
        if not errs:
            parsed_limits[name] = parse_quantity(value)
    for name, value in requests.items():
        fpath = f"{path}.requests[{name}]"
        causes += _resource_name_causes(name, fpath)
        errs = _validate_quantity(value, fpath)
        causes += errs
        if errs:
            continue
        request = parse_quantity(value)
        if name in parsed_limits:
            limit = parsed_limits[name]
            shown = str(value)
            if request != limit and not _overcommit_allowed(name):
                causes.append(
                    invalid(f"{path}.requests", shown, f"must be equal to {name} limit of {limits[name]}")
                )
            elif request > limit:
                causes.append(
                    invalid(
                        f"{path}.requests",
                        shown,
                        f"must be less than or equal to {name} limit of {limits[name]}",
                    )
                )
        elif not _overcommit_allowed(name):
            causes.append(required(f"{path}.limits", "Limit must be set for non overcommitable resources"))
    return causes


def _validate_port_num_or_name(port: Any, path: str) -> list[Cause]:
    if isinstance(port, str):
        return [invalid(path, port, m) for m in is_valid_port_name(port)]
    if isinstance(port, int) and not isinstance(port, bool):
        return [invalid(path, port, m) for m in is_valid_port_num(port)]
    return [invalid(path, port, "must be an int or a string")]


def _validate_handler(handler: dict[str, Any], path: str, kinds: tuple[str, ...]) -> list[Cause]:
    causes: list[Cause] = []
    found = 0
    for kind in kinds:
        if handler.get(kind) is None:
            continue
        hpath = f"{path}.{kind}"
        if found:
            causes.append(forbidden(hpath, "may not specify more than 1 handler type"))
            continue
        found += 1
        body = _d(handler[kind])
        if kind == "exec":
            if not _l(body.get("command")):
                causes.append(required(f"{hpath}.command"))
        elif kind == "httpGet":
            if not _s(body.get("path")):
                causes.append(required(f"{hpath}.path"))
            causes += _validate_port_num_or_name(body.get("port"), f"{hpath}.port")
            scheme = body.get("scheme")
            if scheme not in ("HTTP", "HTTPS"):
                causes.append(not_supported(f"{hpath}.scheme", scheme, ("HTTP", "HTTPS")))
        elif kind == "tcpSocket":
            causes += _validate_port_num_or_name(body.get("port"), f"{hpath}.port")
        elif kind == "grpc":
            causes += [
                invalid(f"{hpath}.port", body.get("port"), m) for m in is_valid_port_num(body.get("port"))
            ]
        elif kind == "sleep":
            seconds = _int(body.get("seconds"))
            if seconds is None or seconds < 0:
                causes.append(invalid(f"{hpath}.seconds", body.get("seconds"), "must be non-negative"))
    if not found:
        causes.append(required(path, "must specify a handler type"))
    return causes


def _validate_probe(probe: Any, path: str) -> list[Cause]:
    if probe is None:
        return []
    probe = _d(probe)
    causes = _validate_handler(probe, path, ("exec", "httpGet", "tcpSocket", "grpc"))
    for fld in (
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ):
        causes += _nonnegative(probe.get(fld), f"{path}.{fld}")
    grace = probe.get("terminationGracePeriodSeconds")
    if grace is not None and (_int(grace) is None or grace <= 0):
        causes.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than 0"))
    return causes


def _validate_env(env: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, var in enumerate(_l(env)):
        var = _d(var)
        ipath = f"{path}[{i}]"
        name = _s(var.get("name"))
        if not name:
            causes.append(required(f"{ipath}.name"))
        elif any(not 32 <= ord(c) <= 126 or c == "=" for c in name):
            causes.append(
                invalid(
                    f"{ipath}.name",
                    name,
                    "a valid environment variable name must consist only of printable ASCII characters other than '='",
                )
            )
        value_from = var.get("valueFrom")
        if value_from is None:
            continue
        value_from = _d(value_from)
        vpath = f"{ipath}.valueFrom"
        sources = 0
        if value_from.get("fieldRef") is not None:
            sources += 1
            ref = _d(value_from["fieldRef"])
            fpath = _s(ref.get("fieldPath"))
            if not _s(ref.get("apiVersion")):
                causes.append(required(f"{vpath}.fieldRef.apiVersion"))
            if not fpath:
                causes.append(required(f"{vpath}.fieldRef.fieldPath"))
            elif not (
                fpath in _ENV_FIELD_PATHS or re.fullmatch(r"metadata\.(labels|annotations)\['[^']+'\]", fpath)
            ):
                causes.append(not_supported(f"{vpath}.fieldRef.fieldPath", fpath, _ENV_FIELD_PATHS))
        if value_from.get("resourceFieldRef") is not None:
            sources += 1
            ref = _d(value_from["resourceFieldRef"])
            if not _s(ref.get("resource")):
                causes.append(required(f"{vpath}.resourceFieldRef.resource"))
        for ref_kind in ("configMapKeyRef", "secretKeyRef"):
            if value_from.get(ref_kind) is None:
                continue
            sources += 1
            ref = _d(value_from[ref_kind])
            rpath = f"{vpath}.{ref_kind}"
            if not _s(ref.get("name")):
                causes.append(required(f"{rpath}.name"))
            key = _s(ref.get("key"))
            if not key:
                causes.append(required(f"{rpath}.key"))
            else:
                causes += [invalid(f"{rpath}.key", key, m) for m in is_config_map_key(key)]
        if sources == 0:
            causes.append(
                invalid(
                    vpath,
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                )
            )
        elif _s(var.get("value")):
            causes.append(invalid(vpath, "", "may not be specified when `value` is not empty"))
        elif sources > 1:
            causes.append(invalid(vpath, "", "may not have more than one field specified at a time"))
    return causes


def _validate_container_ports(ports: Any, path: str, host_network: bool) -> list[Cause]:
    causes: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(_l(ports)):
        port = _d(port)
        ipath = f"{path}[{i}]"
        name = _s(port.get("name"))
        if name:
            msgs = is_valid_port_name(name)
            if msgs:
                causes += [invalid(f"{ipath}.name", name, m) for m in msgs]
            elif name in names:
                causes.append(duplicate(f"{ipath}.name", name))
            else:
                names.add(name)
        container_port = port.get("containerPort")
        if not container_port:
            causes.append(required(f"{ipath}.containerPort"))
        else:
            causes += [
                invalid(f"{ipath}.containerPort", container_port, m)
                for m in is_valid_port_num(container_port)
            ]
        host_port = port.get("hostPort")
        if host_port:
            causes += [invalid(f"{ipath}.hostPort", host_port, m) for m in is_valid_port_num(host_port)]
            if host_network and host_port != container_port:
                causes.append(
                    invalid(
                        f"{ipath}.containerPort",
                        container_port,
                        "must match `hostPort` when `hostNetwork` is true",
                    )
                )
        protocol = port.get("protocol")
        if not protocol:
            causes.append(required(f"{ipath}.protocol"))
        elif protocol not in SUPPORTED_PROTOCOLS:
            causes.append(not_supported(f"{ipath}.protocol", protocol, SUPPORTED_PROTOCOLS))
    return causes


def _validate_volume_mounts(mounts: Any, volumes: set[str], path: str) -> list[Cause]:
    causes: list[Cause] = []
    seen: set[str] = set()
    for i, mount in enumerate(_l(mounts)):
        mount = _d(mount)
        ipath = f"{path}[{i}]"
        name = _s(mount.get("name"))
        if not name:
            causes.append(required(f"{ipath}.name"))
        if name not in volumes:
            causes.append(not_found(f"{ipath}.name", name))
        mount_path = _s(mount.get("mountPath"))
        if not mount_path:
            causes.append(required(f"{ipath}.mountPath"))
        if mount_path in seen:
            causes.append(invalid(f"{ipath}.mountPath", mount_path, "must be unique"))
        seen.add(mount_path)
        sub_path = _s(mount.get("subPath"))
        if sub_path.startswith("/"):
            causes.append(invalid(f"{ipath}.subPath", sub_path, "must be a relative path"))
        elif ".." in sub_path.split("/"):
            causes.append(invalid(f"{ipath}.subPath", sub_path, "must not contain '..'"))
    return causes


def _validate_container_common(
    ctr: dict[str, Any], volumes: set[str], path: str, host_network: bool
) -> list[Cause]:
    causes: list[Cause] = []
    name = _s(ctr.get("name"))
    if not name:
        causes.append(required(f"{path}.name"))
    else:
        causes += [invalid(f"{path}.name", name, m) for m in is_dns1123_label(name)]
    policy = ctr.get("terminationMessagePolicy")
    if not policy:
        causes.append(
            required(f"{path}.terminationMessagePolicy", "must be 'File' or 'FallbackToLogsOnError'")
        )
    elif policy not in ("File", "FallbackToLogsOnError"):
        causes.append(
            not_supported(f"{path}.terminationMessagePolicy", policy, ("File", "FallbackToLogsOnError"))
        )
    causes += _validate_container_ports(ctr.get("ports"), f"{path}.ports", host_network)
    causes += _validate_env(ctr.get("env"), f"{path}.env")
    causes += _validate_volume_mounts(ctr.get("volumeMounts"), volumes, f"{path}.volumeMounts")
    pull = ctr.get("imagePullPolicy")
    if not pull:
        causes.append(required(f"{path}.imagePullPolicy"))
    elif pull not in PULL_POLICIES:
        causes.append(not_supported(f"{path}.imagePullPolicy", pull, PULL_POLICIES))
    causes += _validate_resources(ctr.get("resources"), f"{path}.resources")
    return causes


def _validate_containers(spec: dict[str, Any], volumes: set[str], path: str) -> list[Cause]:
    containers = _l(spec.get("containers"))
    if not containers:
        return [required(f"{path}.containers")]
    host_network = spec.get("hostNetwork") is True
    causes: list[Cause] = []
    names: set[str] = set()
    for i, ctr in enumerate(containers):
        ctr = _d(ctr)
        cpath = f"{path}.containers[{i}]"
        causes += _validate_container_common(ctr, volumes, cpath, host_network)
        name = _s(ctr.get("name"))
        if name in names:
            causes.append(duplicate(f"{cpath}.name", name))
        else:
            names.add(name)
        if not _s(ctr.get("image")):
            causes.append(required(f"{cpath}.image"))
        causes += _validate_probe(ctr.get("livenessProbe"), f"{cpath}.livenessProbe")
        causes += _validate_probe(ctr.get("readinessProbe"), f"{cpath}.readinessProbe")
        causes += _validate_probe(ctr.get("startupProbe"), f"{cpath}.startupProbe")
        for probe_name in ("livenessProbe", "startupProbe"):
            probe = ctr.get(probe_name)
            if probe is not None and _d(probe).get("successThreshold", 1) != 1:
                causes.append(
                    invalid(
                        f"{cpath}.{probe_name}.successThreshold", probe.get("successThreshold"), "must be 1"
                    )
                )
        lifecycle = _d(ctr.get("lifecycle"))
        for hook in ("postStart", "preStop"):
            if lifecycle.get(hook) is not None:
                causes += _validate_handler(
                    _d(lifecycle[hook]),
                    f"{cpath}.lifecycle.{hook}",
                    ("exec", "httpGet", "tcpSocket", "sleep"),
                )
        if ctr.get("restartPolicy") is not None:
            causes.append(forbidden(f"{cpath}.restartPolicy", "may not be set for non-init containers"))
    for i, ctr in enumerate(_l(spec.get("initContainers"))):
        ctr = _d(ctr)
        cpath = f"{path}.initContainers[{i}]"
        causes += _validate_container_common(ctr, volumes, cpath, host_network)
        name = _s(ctr.get("name"))
        if name in names:
            causes.append(duplicate(f"{cpath}.name", name))
        else:
            names.add(name)
        if not _s(ctr.get("image")):
            causes.append(required(f"{cpath}.image"))
        restart = ctr.get("restartPolicy")
        if restart is not None and restart != "Always":
            causes.append(not_supported(f"{cpath}.restartPolicy", restart, ("Always",)))
        if restart == "Always":
            for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
                causes += _validate_probe(ctr.get(probe_name), f"{cpath}.{probe_name}")
        else:
            for probe_name in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if ctr.get(probe_name) is not None:
                    causes.append(
                        forbidden(
                            f"{cpath}.{probe_name}",
                            "may not be set for init containers without restartPolicy=Always",
                        )
                    )
    causes += _check_host_port_conflicts(containers, f"{path}.containers")
    return causes


def _check_host_port_conflicts(containers: list[Any], path: str) -> list[Cause]:
    causes = []
    seen: set[str] = set()
    for i, ctr in enumerate(containers):
        for j, port in enumerate(_l(_d(ctr).get("ports"))):
            port = _d(port)
            host_port = port.get("hostPort")
            if not host_port:
                continue
            key = f"{port.get('protocol', 'TCP')}/{port.get('hostIP', '')}/{host_port}"
            if key in seen:
                causes.append(duplicate(f"{path}[{i}].ports[{j}].hostPort", key))
            seen.add(key)
    return causes


def _validate_tolerations(tolerations: Any, path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, tol in enumerate(_l(tolerations)):
        tol = _d(tol)
        ipath = f"{path}[{i}]"
        key = _s(tol.get("key"))
        operator = tol.get("operator", "")
        effect = _s(tol.get("effect"))
        if key:
            causes += [invalid(f"{ipath}.key", key, m) for m in is_qualified_name(key)]
        if not key and operator != "Exists":
            causes.append(
                invalid(
                    f"{ipath}.operator",
                    operator,
                    'operator must be Exists when `key` is empty, which means "match all values and all keys"',
                )
            )
        if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
            causes.append(
                invalid(
                    f"{ipath}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"
                )
            )
        if operator in ("Equal", ""):
            msgs = is_valid_label_value(_s(tol.get("value")))
            if msgs:
                causes.append(invalid(f"{ipath}.operator", _s(tol.get("value")), ";".join(msgs)))
        elif operator == "Exists":
            if _s(tol.get("value")):
                causes.append(
                    invalid(f"{ipath}.operator", tol, "value must be empty when `operator` is 'Exists'")
                )
        else:
            causes.append(not_supported(f"{ipath}.operator", operator, ("Equal", "Exists")))
        if effect and effect not in TAINT_EFFECTS:
            causes.append(not_supported(f"{ipath}.effect", effect, TAINT_EFFECTS))
    return causes


def validate_pod_spec(spec: Any, path: str = "spec") -> list[Cause]:
    """ValidatePodSpec, shared by pods and the templates of workload controllers."""
    spec = _d(spec)
    volumes, causes = _validate_volumes(spec.get("volumes"), f"{path}.volumes")
    causes += _validate_containers(spec, volumes, path)
    restart = spec.get("restartPolicy")
    if not restart:
        causes.append(required(f"{path}.restartPolicy"))
    elif restart not in RESTART_POLICIES:
        causes.append(not_supported(f"{path}.restartPolicy", restart, RESTART_POLICIES))
    dns = spec.get("dnsPolicy")
    if not dns:
        causes.append(required(f"{path}.dnsPolicy"))
    elif dns not in DNS_POLICIES:
        causes.append(not_supported(f"{path}.dnsPolicy", dns, DNS_POLICIES))
    causes += validate_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    for i, secret in enumerate(_l(spec.get("imagePullSecrets"))):
        if not _s(_d(secret).get("name")):
            causes.append(required(f"{path}.imagePullSecrets[{i}].name"))
    for fld, fn in (("serviceAccountName", name_is_dns_subdomain), ("nodeName", name_is_dns_subdomain)):
        value = _s(spec.get(fld))
        if value:
            causes += [invalid(f"{path}.{fld}", value, m) for m in fn(value, False)]
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (_int(deadline) is None or not 1 <= deadline <= MAX_INT32):
        causes.append(invalid(f"{path}.activeDeadlineSeconds", deadline, inclusive_range_error(1, MAX_INT32)))
    for fld in ("hostname", "subdomain"):
        value = _s(spec.get(fld))
        if value:
            causes += [invalid(f"{path}.{fld}", value, m) for m in is_dns1123_label(value)]
    causes += _validate_tolerations(spec.get("tolerations"), f"{path}.tolerations")
    for i, alias in enumerate(_l(spec.get("hostAliases"))):
        alias = _d(alias)
        if not is_valid_ip(alias.get("ip")):
            causes.append(invalid(f"{path}.hostAliases[{i}].ip", alias.get("ip", ""), INVALID_IP_MSG))
        for j, hostname in enumerate(_l(alias.get("hostnames"))):
            causes += [
                invalid(f"{path}.hostAliases[{i}].hostnames[{j}]", hostname, m)
                for m in is_dns1123_subdomain(_s(hostname))
            ]
    priority_class = _s(spec.get("priorityClassName"))
    if priority_class:
        causes += [
            invalid(f"{path}.priorityClassName", priority_class, m)
            for m in is_dns1123_subdomain(priority_class)
        ]
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and _int(grace) is None:
        causes.append(invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be an integer"))
    return causes


def validate_pod_template(template: Any, path: str) -> list[Cause]:
    """ValidatePodTemplateSpec; note Kubernetes reports template labels as `<path>.labels`."""
    template = _d(template)
    meta = _d(template.get("metadata"))
    causes = validate_labels(meta.get("labels"), f"{path}.labels")
    causes += validate_annotations(meta.get("annotations"), f"{path}.annotations")
    causes += validate_pod_spec(template.get("spec"), f"{path}.spec")
    if _l(_d(template.get("spec")).get("ephemeralContainers")):
        causes.append(
            forbidden(f"{path}.spec.ephemeralContainers", "ephemeral containers not allowed in pod template")
        )
    return causes


def _validate_pod(pod: dict[str, Any]) -> list[Cause]:
    spec = _d(pod.get("spec"))
    causes = validate_pod_spec(spec)
    for i, ctr in enumerate(_l(spec.get("containers")) + _l(spec.get("initContainers"))):
        image = _s(_d(ctr).get("image"))
        if image and image != image.strip():
            group = "containers" if i < len(_l(spec.get("containers"))) else "initContainers"
            idx = i if group == "containers" else i - len(_l(spec.get("containers")))
            causes.append(
                invalid(f"spec.{group}[{idx}].image", image, "must not have leading or trailing whitespace")
            )
    if _l(spec.get("ephemeralContainers")):
        causes.append(forbidden("spec.ephemeralContainers", "cannot be set on create"))
    if spec.get("nodeName") and _l(spec.get("schedulingGates")):
        causes.append(forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared"))
    return causes


def _pod_spec_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A readable stand-in for the go-cmp diff kube-apiserver appends to the forbidden message."""
    lines = ["  core.PodSpec{"]
    for key in sorted(set(old) | set(new)):
        if _semantic(old.get(key)) == _semantic(new.get(key)):
            continue
        if key in old:
            lines.append(f"-\t{key}: {json.dumps(old[key], sort_keys=True)},")
        if key in new:
            lines.append(f"+\t{key}: {json.dumps(new[key], sort_keys=True)},")
    lines.append("  }")
    return "\n".join(lines) + "\n"


def _validate_only_added_tolerations(new: Any, old: Any, path: str) -> list[Cause]:
    new_list = [_d(t) for t in _l(new)]
    for old_tol in _l(old):
        old_tol = _d(old_tol)
        if not any(
            _semantic({**old_tol, "tolerationSeconds": t.get("tolerationSeconds")}) == _semantic(t)
            for t in new_list
        ):
            return [forbidden(path, "existing toleration can not be modified except its tolerationSeconds")]
    return _validate_tolerations(new, path)


def _validate_pod_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    causes = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    causes += validate_pod_spec(new_spec)
    new_deadline, old_deadline = new_spec.get("activeDeadlineSeconds"), old_spec.get("activeDeadlineSeconds")
    if new_deadline is not None:
        if _int(new_deadline) is None or not 0 <= new_deadline <= MAX_INT32:
            causes.append(
                invalid("spec.activeDeadlineSeconds", new_deadline, inclusive_range_error(0, MAX_INT32))
            )
            return causes
        if old_deadline is not None and old_deadline < new_deadline:
            causes.append(
                invalid(
                    "spec.activeDeadlineSeconds", new_deadline, "must be less than or equal to previous value"
                )
            )
            return causes
    elif old_deadline is not None:
        causes.append(
            invalid(
                "spec.activeDeadlineSeconds", None, "must not update from a positive integer to nil value"
            )
        )
    causes += _validate_only_added_tolerations(
        new_spec.get("tolerations"), old_spec.get("tolerations"), "spec.tolerations"
    )
    if _semantic(new_spec) == _semantic(old_spec):
        return causes
    munged = json.loads(json.dumps(new_spec))
    for group in ("containers", "initContainers"):
        old_ctrs = _l(old_spec.get(group))
        for i, ctr in enumerate(_l(munged.get(group))):
            if i < len(old_ctrs) and isinstance(ctr, dict):
                if "image" in _d(old_ctrs[i]):
                    ctr["image"] = _d(old_ctrs[i])["image"]
                else:
                    ctr.pop("image", None)
    for fld in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        if fld in old_spec:
            munged[fld] = old_spec[fld]
        else:
            munged.pop(fld, None)
    old_grace = old_spec.get("terminationGracePeriodSeconds")
    if _int(old_grace) is not None and old_grace < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = old_grace
    if _semantic(munged) != _semantic(old_spec):
        causes.append(
            forbidden(
                "spec",
                "pod updates may not change fields other than "
                + ",".join(POD_UPDATABLE_FIELDS)
                + "\n"
                + _pod_spec_diff(old_spec, munged),
            )
        )
    return causes


# ---------------------------------------------------------------------------------------------
# Workloads (apps/v1)
# ---------------------------------------------------------------------------------------------


def _percent_value(value: Any) -> int | None:
    if isinstance(value, str) and _full(_PERCENT_RE, value):
        return int(value[:-1])
    return None


def _int_or_percent_value(value: Any) -> int:
    if isinstance(value, str):
        return _percent_value(value) or 0
    return _int(value) or 0


def _validate_positive_int_or_percent(value: Any, path: str) -> list[Cause]:
    if isinstance(value, str):
        return [invalid(path, go_int_or_string(value), m) for m in is_valid_percent(value)]
    number = _int(value)
    if number is not None and number < 0:
        return [invalid(path, number, IS_NEGATIVE)]
    return []


def _not_more_than_100_percent(value: Any, path: str) -> list[Cause]:
    percent = _percent_value(value)
    if percent is not None and percent > 100:
        return [invalid(path, go_int_or_string(value), "must not be greater than 100%")]
    return []


def _validate_template_for_controller(spec: dict[str, Any], kind: str, path: str) -> list[Cause]:
    """ValidatePodTemplateSpecForReplicaSet (and the DaemonSet equivalent)."""
    template = spec.get("template")
    tpath = f"{path}.template"
    if template is None and kind != "DaemonSet":
        return [required(tpath)]
    template = _d(template)
    labels = _d(template.get("metadata")).get("labels")
    causes: list[Cause] = []
    selector = spec.get("selector")
    matches = _selector_matches(selector, labels)
    if matches is None and kind != "DaemonSet":
        causes.append(invalid(f"{path}.selector", go_label_selector(selector), "invalid label selector"))
    if matches is False and not (selector is not None and _selector_is_empty(selector)):
        causes.append(
            invalid(
                f"{tpath}.metadata.labels",
                GoValue(go_string_map(labels)),
                "`selector` does not match template `labels`",
            )
        )
    if kind == "DaemonSet" and selector is not None and _selector_is_empty(selector):
        causes.append(
            invalid(
                f"{path}.selector", go_label_selector(selector), "empty selector is invalid for daemonset"
            )
        )
    causes += validate_pod_template(template, tpath)
    tspec = _d(template.get("spec"))
    restart = tspec.get("restartPolicy")
    if restart != "Always":
        causes.append(not_supported(f"{tpath}.spec.restartPolicy", restart or "", ("Always",)))
    if tspec.get("activeDeadlineSeconds") is not None:
        if kind == "DaemonSet":
            causes.append(
                invalid(
                    f"{tpath}.spec.activeDeadlineSeconds",
                    tspec["activeDeadlineSeconds"],
                    "activeDeadlineSeconds in DaemonSet is not Supported",
                )
            )
        else:
            causes.append(
                forbidden(
                    f"{tpath}.spec.activeDeadlineSeconds",
                    f"activeDeadlineSeconds in {'StatefulSet' if kind == 'StatefulSet' else 'ReplicaSet'}"
                    " is not Supported",
                )
            )
    return causes


def _validate_replicated_selector(spec: dict[str, Any], path: str) -> list[Cause]:
    selector = spec.get("selector")
    if selector is None:
        return [required(f"{path}.selector")]
    causes = validate_label_selector(selector, f"{path}.selector")
    if _selector_is_empty(selector):
        causes.append(
            invalid(
                f"{path}.selector", go_label_selector(selector), "empty selector is invalid for deployment"
            )
        )
    return causes


def _go_strategy(type_name: str, strategy: dict[str, Any], rolling: str) -> GoValue:
    inner = f"(*apps.{rolling})(nil)" if strategy.get("rollingUpdate") is None else f"&apps.{rolling}{{...}}"
    return GoValue(f"apps.{type_name}{{Type:{go_quote(_s(strategy.get('type')))}, RollingUpdate:{inner}}}")


def _validate_deployment(obj: dict[str, Any]) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes = _nonnegative(spec.get("replicas"), "spec.replicas")
    causes += _validate_replicated_selector(spec, "spec")
    causes += _validate_template_for_controller(spec, "Deployment", "spec")
    strategy = _d(spec.get("strategy"))
    stype = strategy.get("type")
    if stype == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            causes.append(
                forbidden(
                    "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
                )
            )
    elif stype == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if rolling is None:
            causes.append(
                required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil")
            )
        else:
            rolling = _d(rolling)
            rpath = "spec.strategy.rollingUpdate"
            unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
            causes += _validate_positive_int_or_percent(unavailable, f"{rpath}.maxUnavailable")
            causes += _validate_positive_int_or_percent(surge, f"{rpath}.maxSurge")
            if _int_or_percent_value(unavailable) == 0 and _int_or_percent_value(surge) == 0:
                causes.append(
                    invalid(
                        f"{rpath}.maxUnavailable",
                        go_int_or_string(unavailable),
                        "may not be 0 when `maxSurge` is 0",
                    )
                )
            causes += _not_more_than_100_percent(unavailable, f"{rpath}.maxUnavailable")
    else:
        causes.append(
            not_supported(
                "spec.strategy",
                _go_strategy("DeploymentStrategy", strategy, "RollingUpdateDeployment"),
                ("Recreate", "RollingUpdate"),
            )
        )
    causes += _nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    causes += _nonnegative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    deadline = spec.get("progressDeadlineSeconds")
    if deadline is not None:
        causes += _nonnegative(deadline, "spec.progressDeadlineSeconds")
        if _int(deadline) is not None and deadline <= (_int(spec.get("minReadySeconds")) or 0):
            causes.append(
                invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds")
            )
    return causes


def _validate_replicaset(obj: dict[str, Any]) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes = _nonnegative(spec.get("replicas"), "spec.replicas")
    causes += _nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    causes += _validate_replicated_selector(spec, "spec")
    causes += _validate_template_for_controller(spec, "ReplicaSet", "spec")
    return causes


def _validate_daemonset(obj: dict[str, Any]) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes = validate_label_selector(spec.get("selector"), "spec.selector")
    causes += _validate_template_for_controller(spec, "DaemonSet", "spec")
    causes += _nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    causes += _nonnegative(spec.get("templateGeneration"), "spec.templateGeneration")
    strategy = _d(spec.get("updateStrategy"))
    upath = "spec.updateStrategy"
    stype = strategy.get("type")
    if stype == "RollingUpdate":
        rolling = strategy.get("rollingUpdate")
        if rolling is None:
            causes.append(required(f"{upath}.rollingUpdate"))
        else:
            rolling = _d(rolling)
            rpath = f"{upath}.rollingUpdate"
            unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
            causes += _validate_positive_int_or_percent(unavailable, f"{rpath}.maxUnavailable")
            causes += _validate_positive_int_or_percent(surge, f"{rpath}.maxSurge")
            causes += _not_more_than_100_percent(unavailable, f"{rpath}.maxUnavailable")
            causes += _not_more_than_100_percent(surge, f"{rpath}.maxSurge")
            has_unavailable = _int_or_percent_value(unavailable) != 0
            has_surge = _int_or_percent_value(surge) != 0
            if has_unavailable and has_surge:
                causes.append(
                    invalid(
                        f"{rpath}.maxSurge",
                        go_int_or_string(surge),
                        "may not be set when maxUnavailable is non-zero",
                    )
                )
            elif not has_unavailable and not has_surge:
                causes.append(required(f"{rpath}.maxUnavailable", "cannot be 0 when maxSurge is 0"))
    elif stype != "OnDelete":
        causes.append(
            not_supported(
                upath,
                _go_strategy("DaemonSetUpdateStrategy", strategy, "RollingUpdateDaemonSet"),
                ("RollingUpdate", "OnDelete"),
            )
        )
    causes += _nonnegative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    return causes


STATEFULSET_POD_MANAGEMENT = ("OrderedReady", "Parallel")
STATEFULSET_PVC_RETENTION = ("Retain", "Delete")
# Fields of a StatefulSet's spec an update may change (ValidateStatefulSetUpdate).
STATEFULSET_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _validate_statefulset(obj: dict[str, Any]) -> list[Cause]:
    """ValidateStatefulSetSpec, plus grove's one gap: volumeClaimTemplates need PersistentVolumes,
    which grove does not have yet, so a set asking for them is refused rather than run without."""
    spec = _d(obj.get("spec"))
    causes: list[Cause] = []
    service = spec.get("serviceName")
    if service:
        causes += [invalid("spec.serviceName", service, msg) for msg in is_dns1123_label(_s(service))]
    policy = spec.get("podManagementPolicy")
    if not policy:
        causes.append(required("spec.podManagementPolicy"))
    elif policy not in STATEFULSET_POD_MANAGEMENT:
        causes.append(invalid("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'"))
    strategy = _d(spec.get("updateStrategy"))
    stype = strategy.get("type")
    rolling = strategy.get("rollingUpdate")
    upath = "spec.updateStrategy"
    if not stype:
        causes.append(required(upath))
    elif stype == "OnDelete":
        if rolling is not None:
            causes.append(
                invalid(f"{upath}.rollingUpdate", rolling, "only allowed for updateStrategy 'RollingUpdate'")
            )
    elif stype == "RollingUpdate":
        if rolling is not None:
            rolling = _d(rolling)
            rpath = f"{upath}.rollingUpdate"
            causes += _nonnegative(rolling.get("partition"), f"{rpath}.partition")
            unavailable = rolling.get("maxUnavailable")
            if unavailable is not None:
                causes += _validate_positive_int_or_percent(unavailable, f"{rpath}.maxUnavailable")
                if _int_or_percent_value(unavailable) == 0:
                    causes.append(
                        invalid(f"{rpath}.maxUnavailable", go_int_or_string(unavailable), "cannot be 0")
                    )
                causes += _not_more_than_100_percent(unavailable, f"{rpath}.maxUnavailable")
    else:
        causes.append(invalid(upath, strategy, "must be 'RollingUpdate' or 'OnDelete'"))
    retention = spec.get("persistentVolumeClaimRetentionPolicy")
    if retention is not None:
        for key in ("whenDeleted", "whenScaled"):
            value = _d(retention).get(key)
            if value not in STATEFULSET_PVC_RETENTION:
                causes.append(
                    not_supported(
                        f"spec.persistentVolumeClaimRetentionPolicy.{key}",
                        value or "",
                        STATEFULSET_PVC_RETENTION,
                    )
                )
    causes += _nonnegative(spec.get("replicas"), "spec.replicas")
    causes += _nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    causes += _nonnegative(_d(spec.get("ordinals")).get("start"), "spec.ordinals.start")
    causes += _nonnegative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    selector = spec.get("selector")
    if selector is None:
        causes.append(required("spec.selector"))
    else:
        causes += validate_label_selector(selector, "spec.selector")
        if _selector_is_empty(selector):
            causes.append(
                invalid(
                    "spec.selector", go_label_selector(selector), "empty selector is invalid for statefulset"
                )
            )
    causes += _validate_template_for_controller(spec, "StatefulSet", "spec")
    if _l(spec.get("volumeClaimTemplates")):
        causes.append(
            forbidden(
                "spec.volumeClaimTemplates",
                "grove has no PersistentVolumes or PersistentVolumeClaims yet; "
                "use emptyDir or hostPath volumes in the pod template instead",
            )
        )
    return causes


def _validate_statefulset_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    fixed_new = {k: v for k, v in new_spec.items() if k not in STATEFULSET_MUTABLE}
    fixed_old = {k: v for k, v in old_spec.items() if k not in STATEFULSET_MUTABLE}
    if _semantic(fixed_new) != _semantic(fixed_old):
        return [
            forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' "
                "and 'minReadySeconds' are forbidden",
            )
        ]
    return []


def _validate_workload_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    # apps/v1 made selectors immutable: a changed selector would orphan the controller's pods.
    new_sel, old_sel = _d(new.get("spec")).get("selector"), _d(old.get("spec")).get("selector")
    return _immutable(new_sel, old_sel, "spec.selector", go_label_selector)


# ---------------------------------------------------------------------------------------------
# Batch (batch/v1): jobs and cron jobs
# ---------------------------------------------------------------------------------------------

JOB_RESTART_POLICIES = ("OnFailure", "Never")
COMPLETION_MODES = ("NonIndexed", "Indexed")
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")
JOB_CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
CRONJOB_NAME_MAX = 52  # the job name adds "-" and up to 10 digits and must stay a DNS label
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_FIELDS = (  # (name, low, high, names)
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    ),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)
_GO_DURATION_RE = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


def _cron_number(text: str, names: Mapping[str, int]) -> int | None:
    if text.lower() in names:
        return names[text.lower()]
    return int(text) if text.isdigit() else None


def _cron_field_error(text: str, low: int, high: int, names: Mapping[str, int], question: bool) -> str | None:
    for part in text.split(","):
        span, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            return (
                f"failed to parse int from {step}"
                if not step.isdigit()
                else f"step of range should be a positive number: {part}"
            )
        if span in ("*",) or (question and span == "?"):
            continue
        first, dash, last = span.partition("-")
        start = _cron_number(first, names)
        end = _cron_number(last, names) if dash else start
        if start is None or end is None:
            bad = first if start is None else last
            return f"failed to parse int from {bad}"
        if start < low:
            return f"beginning of range ({start}) below minimum ({low}): {part}"
        if end > high:
            return f"end of range ({end}) above maximum ({high}): {part}"
        if start > end:
            return f"beginning of range ({start}) beyond end of range ({end}): {part}"
    return None


def cron_schedule_error(schedule: str) -> str | None:
    """Why a CronJob schedule does not parse (robfig/cron's standard parser), or None.

    Five fields (minute hour day-of-month month day-of-week) with `*`, lists, ranges, steps and
    month/weekday names, or a descriptor (`@hourly`, ..., `@every 1h30m`)."""
    text = schedule.strip()
    if not text:
        return "empty spec string"
    if text.startswith("@"):
        if text in CRON_DESCRIPTORS:
            return None
        if text.startswith("@every "):
            duration = text[len("@every ") :].strip()
            return None if _GO_DURATION_RE.match(duration) else f"failed to parse duration {text}: {duration}"
        return f"unrecognized descriptor: {text}"
    fields = text.split()
    if len(fields) != 5:
        return f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]"
    for index, (value, (_, low, high, names)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        problem = _cron_field_error(value, low, high, names, question=index in (2, 4))
        if problem:
            return problem
    return None


def _time_zone_error(name: str) -> str | None:
    if name in ("Local",) or name.startswith("/") or ".." in name:
        return f"unknown time zone {name}"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name}"
    return None


def _validate_job_spec(spec: dict[str, Any], path: str, generated_selector: bool) -> list[Cause]:
    """ValidateJobSpec (also for a CronJob's jobTemplate, where no selector is required)."""
    causes: list[Cause] = []
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit"):
        causes += _nonnegative(spec.get(key), f"{path}.{key}")
    causes += _nonnegative(spec.get("ttlSecondsAfterFinished"), f"{path}.ttlSecondsAfterFinished")
    mode = spec.get("completionMode")
    if mode is not None and mode not in COMPLETION_MODES:
        causes.append(not_supported(f"{path}.completionMode", mode, COMPLETION_MODES))
    if mode == "Indexed":
        if spec.get("completions") is None:
            causes.append(required(f"{path}.completions", "when completion mode is Indexed"))
        elif (_int(spec.get("completions")) or 0) > 100_000:
            causes.append(
                invalid(
                    f"{path}.completions",
                    spec["completions"],
                    "must be less than or equal to 100000 when completion mode is Indexed",
                )
            )
    template = spec.get("template")
    tpath = f"{path}.template"
    if template is None:
        return causes + [required(tpath)]
    template = _d(template)
    selector = spec.get("selector")
    if selector is None and generated_selector:
        causes.append(required(f"{path}.selector"))
    elif selector is not None:
        causes += validate_label_selector(selector, f"{path}.selector")
        labels = _d(template.get("metadata")).get("labels")
        if _selector_matches(selector, labels) is False:
            causes.append(
                invalid(
                    f"{tpath}.metadata.labels",
                    GoValue(go_string_map(labels)),
                    "`selector` does not match template `labels`",
                )
            )
    causes += validate_pod_template(template, tpath)
    restart = _d(template.get("spec")).get("restartPolicy")
    if restart not in JOB_RESTART_POLICIES:
        causes.append(not_supported(f"{tpath}.spec.restartPolicy", restart or "", JOB_RESTART_POLICIES))
    policy = spec.get("podFailurePolicy")
    if policy is not None:
        if restart != "Never":
            causes.append(
                invalid(
                    f"{tpath}.spec.restartPolicy",
                    restart or "",
                    'only "Never" is supported when podFailurePolicy is specified',
                )
            )
        causes += _validate_pod_failure_policy(_d(policy), f"{path}.podFailurePolicy")
    return causes


POD_FAILURE_ACTIONS = ("Count", "FailIndex", "FailJob", "Ignore")


def _validate_pod_failure_policy(policy: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    for i, rule in enumerate(_l(policy.get("rules"))):
        rule, rpath = _d(rule), f"{path}.rules[{i}]"
        action = rule.get("action")
        if not action:
            causes.append(required(f"{rpath}.action"))
        elif action not in POD_FAILURE_ACTIONS:
            causes.append(not_supported(f"{rpath}.action", action, POD_FAILURE_ACTIONS))
        codes, conditions = rule.get("onExitCodes"), _l(rule.get("onPodConditions"))
        if codes is not None and conditions:
            detail = "specifying both OnExitCodes and OnPodConditions is not supported"
            causes.append(Cause(rpath, INVALID, f"Invalid value: {detail}"))  # kube omits the value
        elif codes is None and not conditions:
            detail = "specifying one of OnExitCodes and OnPodConditions is required"
            causes.append(Cause(rpath, INVALID, f"Invalid value: {detail}"))
        if codes is not None:
            codes = _d(codes)
            operator = codes.get("operator")
            if operator not in ("In", "NotIn"):
                causes.append(not_supported(f"{rpath}.onExitCodes.operator", operator or "", ("In", "NotIn")))
            values = _l(codes.get("values"))
            if not values:
                causes.append(required(f"{rpath}.onExitCodes.values"))
            if operator == "In" and 0 in values:
                causes.append(
                    invalid(
                        f"{rpath}.onExitCodes.values[{values.index(0)}]",
                        0,
                        "must not be 0 for the In operator",
                    )
                )
    return causes


def _validate_job(obj: dict[str, Any]) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes = _validate_job_spec(spec, "spec", generated_selector=True)
    if spec.get("manualSelector") is not True:
        # validateGeneratedSelector: without manualSelector the selector is the server's own,
        # exactly the job's uid (a user's selector needs `manualSelector: true`).
        uid = _s(_d(obj.get("metadata")).get("uid"))
        selector = spec.get("selector")
        if uid and selector is not None and selector != {"matchLabels": {JOB_CONTROLLER_UID_LABEL: uid}}:
            causes.append(
                invalid(
                    "spec.selector",
                    go_label_selector(spec.get("selector")),
                    "`selector` not auto-generated",
                )
            )
    return causes


def _validate_job_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    causes = _immutable(
        new_spec.get("selector"), old_spec.get("selector"), "spec.selector", go_label_selector
    )
    causes += _immutable(
        new_spec.get("completionMode"), old_spec.get("completionMode"), "spec.completionMode"
    )
    indexed_elastic = new_spec.get("completionMode") == "Indexed" and new_spec.get(
        "completions"
    ) == new_spec.get("parallelism")
    if not indexed_elastic:
        causes += _immutable(new_spec.get("completions"), old_spec.get("completions"), "spec.completions")
    # The template may change only while the job is suspended and has never started.
    never_started = old_spec.get("suspend") is True and not _d(old.get("status")).get("startTime")
    if not never_started and _semantic(new_spec.get("template")) != _semantic(old_spec.get("template")):
        causes.append(invalid("spec.template", GoValue("core.PodTemplateSpec{...}"), FIELD_IMMUTABLE))
    return causes


def _validate_cronjob(obj: dict[str, Any]) -> list[Cause]:
    spec = _d(obj.get("spec"))
    name = _s(_d(obj.get("metadata")).get("name"))
    causes: list[Cause] = []
    if len(name) > CRONJOB_NAME_MAX:
        causes.append(invalid("metadata.name", name, f"must be no more than {CRONJOB_NAME_MAX} characters"))
    schedule = spec.get("schedule")
    if not _s(schedule):
        causes.append(required("spec.schedule"))
    elif "TZ" in schedule:
        causes.append(
            invalid(
                "spec.schedule", schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            )
        )
    else:
        problem = cron_schedule_error(schedule)
        if problem:
            causes.append(invalid("spec.schedule", schedule, problem))
    zone = spec.get("timeZone")
    if zone is not None:
        problem = _time_zone_error(_s(zone))
        if problem:
            causes.append(invalid("spec.timeZone", zone, problem))
    policy = spec.get("concurrencyPolicy")
    if not policy:
        causes.append(required("spec.concurrencyPolicy"))
    elif policy not in CONCURRENCY_POLICIES:
        causes.append(not_supported("spec.concurrencyPolicy", policy, CONCURRENCY_POLICIES))
    for key in ("startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        causes += _nonnegative(spec.get(key), f"spec.{key}")
    job_template = spec.get("jobTemplate")
    if job_template is None:
        causes.append(required("spec.jobTemplate"))
    else:
        jmeta = _d(_d(job_template).get("metadata"))
        causes += validate_labels(jmeta.get("labels"), "spec.jobTemplate.metadata.labels")
        causes += validate_annotations(jmeta.get("annotations"), "spec.jobTemplate.metadata.annotations")
        causes += _validate_job_spec(
            _d(_d(job_template).get("spec")), "spec.jobTemplate.spec", generated_selector=False
        )
    return causes


# ---------------------------------------------------------------------------------------------
# Services and endpoints
# ---------------------------------------------------------------------------------------------

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
NODE_PORT_RANGE = (30000, 32767)


def _service_cluster_ips(spec: dict[str, Any]) -> list[str]:
    ips = [ip for ip in _l(spec.get("clusterIPs")) if isinstance(ip, str)]
    if not ips and _s(spec.get("clusterIP")):
        ips = [spec["clusterIP"]]
    return ips


def _go_service_port(protocol: str, port: Any) -> GoValue:
    return GoValue(
        f'core.ServicePort{{Name:"", Protocol:{go_quote(protocol)}, AppProtocol:(*string)(nil), Port:{port}, '
        'TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}'
    )


def _validate_service(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = _d(obj.get("spec"))
    stype = spec.get("type")
    ports = _l(spec.get("ports"))
    cluster_ips = _service_cluster_ips(spec)
    headless = bool(cluster_ips) and cluster_ips[0] == "None"
    if not stype:
        causes.append(required("spec.type"))
    elif stype not in SERVICE_TYPES:
        causes.append(not_supported("spec.type", stype, SERVICE_TYPES))
    if stype == "ExternalName":
        if _l(spec.get("clusterIPs")):
            causes.append(forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        if _l(spec.get("ipFamilies")):
            causes.append(forbidden("spec.ipFamilies", "may not be set for ExternalName services"))
        if spec.get("ipFamilyPolicy") is not None:
            causes.append(forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"))
        cname = _s(spec.get("externalName")).removesuffix(".")
        if cname:
            causes += [invalid("spec.externalName", cname, m) for m in is_dns1123_subdomain(cname)]
        else:
            causes.append(required("spec.externalName"))
    if not ports and not headless and stype != "ExternalName":
        causes.append(required("spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        port = _d(port)
        ppath = f"spec.ports[{i}]"
        name = _s(port.get("name"))
        if len(ports) > 1 and not name:
            causes.append(required(f"{ppath}.name"))
        elif name:
            causes += [invalid(f"{ppath}.name", name, m) for m in is_dns1123_label(name)]
            if name in names:
                causes.append(duplicate(f"{ppath}.name", name))
            names.add(name)
        causes += [invalid(f"{ppath}.port", port.get("port"), m) for m in is_valid_port_num(port.get("port"))]
        protocol = port.get("protocol")
        if not protocol:
            causes.append(required(f"{ppath}.protocol"))
        elif protocol not in SUPPORTED_PROTOCOLS:
            causes.append(not_supported(f"{ppath}.protocol", protocol, SUPPORTED_PROTOCOLS))
        causes += _validate_port_num_or_name(port.get("targetPort"), f"{ppath}.targetPort")
        if port.get("appProtocol") is not None:
            causes += [
                invalid(f"{ppath}.appProtocol", port["appProtocol"], m)
                for m in is_qualified_name(_s(port["appProtocol"]))
            ]
        node_port = port.get("nodePort")
        if node_port:
            if stype == "ClusterIP":
                causes.append(forbidden(f"{ppath}.nodePort", "may not be used when `type` is 'ClusterIP'"))
            msgs = is_valid_port_num(node_port)
            causes += [invalid(f"{ppath}.nodePort", node_port, m) for m in msgs]
            if (
                not msgs
                and stype in ("NodePort", "LoadBalancer")
                and not (NODE_PORT_RANGE[0] <= node_port <= NODE_PORT_RANGE[1])
            ):
                causes.append(
                    invalid(
                        f"{ppath}.nodePort",
                        node_port,
                        "provided port is not in the valid range. The range of valid ports is "
                        f"{NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}",
                    )
                )
    seen_ports: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        key = (_d(port).get("protocol"), _d(port).get("port"))
        if key in seen_ports:
            causes.append(duplicate(f"spec.ports[{i}]", _go_service_port(_s(key[0]), key[1])))
        seen_ports.add(key)
    seen_node_ports: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        node_port = _d(port).get("nodePort")
        if not node_port:
            continue
        key = (_d(port).get("protocol"), node_port)
        if key in seen_node_ports:
            causes.append(duplicate(f"spec.ports[{i}]", node_port))
        seen_node_ports.add(key)
    causes += validate_labels(spec.get("selector"), "spec.selector")
    affinity = spec.get("sessionAffinity")
    if not affinity:
        causes.append(required("spec.sessionAffinity"))
    elif affinity not in ("ClientIP", "None"):
        causes.append(not_supported("spec.sessionAffinity", affinity, ("ClientIP", "None")))
    if stype != "ExternalName":
        for i, ip in enumerate(cluster_ips):
            if i == 0 and ip == "None":
                if len(cluster_ips) > 1:
                    causes.append(
                        invalid("spec.clusterIPs", cluster_ips, "'None' must be the first and only value")
                    )
                elif stype in ("NodePort", "LoadBalancer"):
                    causes.append(
                        invalid("spec.clusterIPs[0]", ip, f"may not be set to 'None' for {stype} services")
                    )
                continue
            if not is_valid_ip(ip):
                causes.append(invalid(f"spec.clusterIPs[{i}]", ip, INVALID_IP_MSG))
        if (
            _s(spec.get("clusterIP"))
            and _l(spec.get("clusterIPs"))
            and spec["clusterIP"] != spec["clusterIPs"][0]
        ):
            causes.append(
                invalid("spec.clusterIPs", spec["clusterIPs"], "first value must match `clusterIP`")
            )
        policy = spec.get("ipFamilyPolicy")
        if policy is not None and policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
            causes.append(
                not_supported(
                    "spec.ipFamilyPolicy", policy, ("PreferDualStack", "RequireDualStack", "SingleStack")
                )
            )
        for i, family in enumerate(_l(spec.get("ipFamilies"))):
            if family not in ("IPv4", "IPv6"):
                causes.append(not_supported(f"spec.ipFamilies[{i}]", family, ("IPv4", "IPv6")))
    for i, ip in enumerate(_l(spec.get("externalIPs"))):
        if not is_valid_ip(ip):
            causes.append(invalid(f"spec.externalIPs[{i}]", ip, INVALID_IP_MSG))
    externally_accessible = stype in ("NodePort", "LoadBalancer") or (
        stype == "ClusterIP" and bool(_l(spec.get("externalIPs")))
    )
    etp = spec.get("externalTrafficPolicy")
    if not externally_accessible:
        if etp:
            causes.append(
                invalid(
                    "spec.externalTrafficPolicy", etp, "may only be set for externally-accessible services"
                )
            )
    elif not etp:
        causes.append(required("spec.externalTrafficPolicy"))
    elif etp not in ("Cluster", "Local"):
        causes.append(not_supported("spec.externalTrafficPolicy", etp, ("Cluster", "Local")))
    itp = spec.get("internalTrafficPolicy")
    if stype != "ExternalName":
        if not itp:
            causes.append(required("spec.internalTrafficPolicy"))
        elif itp not in ("Cluster", "Local"):
            causes.append(not_supported("spec.internalTrafficPolicy", itp, ("Cluster", "Local")))
    return causes


def _validate_service_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    if "ExternalName" in (new_spec.get("type"), old_spec.get("type")):
        return causes
    new_ips, old_ips = _service_cluster_ips(new_spec), _service_cluster_ips(old_spec)
    if new_ips[:1] == ["None"] and old_ips[:1] == ["None"]:
        return causes
    if old_ips and not new_ips:
        causes.append(invalid("spec.clusterIPs[0]", new_ips, "primary clusterIP can not be unset"))
    for i, ip in enumerate(old_ips):
        if i < len(new_ips) and new_ips[i] != ip:
            causes.append(invalid(f"spec.clusterIPs[{i}]", new_ips, "may not change once set"))
    return causes


def _validate_endpoints(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for i, subset in enumerate(_l(obj.get("subsets"))):
        subset = _d(subset)
        spath = f"subsets[{i}]"
        if not _l(subset.get("addresses")) and not _l(subset.get("notReadyAddresses")):
            causes.append(required(spath, "must specify `addresses` or `notReadyAddresses`"))
        for group in ("addresses", "notReadyAddresses"):
            for j, addr in enumerate(_l(subset.get(group))):
                addr = _d(addr)
                apath = f"{spath}.{group}[{j}]"
                ip = addr.get("ip", "")
                if not is_valid_ip(ip):
                    causes.append(invalid(f"{apath}.ip", ip, INVALID_IP_MSG))
                elif ip in ("0.0.0.0", "::"):
                    causes.append(invalid(f"{apath}.ip", ip, "may not be unspecified (0.0.0.0)"))
                if _s(addr.get("hostname")):
                    causes += [
                        invalid(f"{apath}.hostname", addr["hostname"], m)
                        for m in is_dns1123_label(addr["hostname"])
                    ]
                if addr.get("nodeName") is not None:
                    causes += [
                        invalid(f"{apath}.nodeName", addr["nodeName"], m)
                        for m in name_is_dns_subdomain(_s(addr["nodeName"]))
                    ]
        ports = _l(subset.get("ports"))
        for j, port in enumerate(ports):
            port = _d(port)
            ppath = f"{spath}.ports[{j}]"
            name = _s(port.get("name"))
            if len(ports) > 1 and not name:
                causes.append(required(f"{ppath}.name"))
            elif name:
                causes += [invalid(f"{ppath}.name", name, m) for m in is_dns1123_label(name)]
            causes += [
                invalid(f"{ppath}.port", port.get("port"), m) for m in is_valid_port_num(port.get("port"))
            ]
            protocol = port.get("protocol")
            if not protocol:
                causes.append(required(f"{ppath}.protocol"))
            elif protocol not in SUPPORTED_PROTOCOLS:
                causes.append(not_supported(f"{ppath}.protocol", protocol, SUPPORTED_PROTOCOLS))
    return causes


# ---------------------------------------------------------------------------------------------
# Endpoint slices (discovery.k8s.io/v1)
# ---------------------------------------------------------------------------------------------

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
MAX_SLICE_ENDPOINTS = 1000
MAX_ENDPOINT_ADDRESSES = 100
MAX_SLICE_PORTS = 20000
MAX_ZONE_HINTS = 8


def _too_many(path: str, actual: int, limit: int) -> Cause:
    return Cause(path, TOO_MANY, f"Too many: {actual}: must have at most {limit} items")


def _validate_slice_address(address: Any, address_type: str, path: str) -> list[Cause]:
    # Like grove's Endpoints, only the unspecified address is refused among the special ones:
    # pods on these machines may well sit on loopback (host network on a 127.0.0.1 node).
    if address_type in ("IPv4", "IPv6"):
        family = 4 if address_type == "IPv4" else 6
        text = _s(address)
        try:
            ok = ipaddress.ip_address(text).version == family
        except ValueError:
            ok = family == 4 and is_valid_ip(text)
        if not ok:
            return [invalid(path, address, f"must be a valid {address_type} address")]
        if text in ("0.0.0.0", "::"):
            return [invalid(path, address, f"may not be unspecified ({text})")]
        return []
    if address_type == "FQDN":
        text = _s(address)
        msgs = is_dns1123_subdomain(text)
        if not msgs and len(text.split(".")) < 2:
            msgs = ["should be a domain with at least two segments separated by dots"]
        return [invalid(path, address, m) for m in msgs]
    return []


def _validate_slice_endpoints(endpoints: list[Any], address_type: str) -> list[Cause]:
    if len(endpoints) > MAX_SLICE_ENDPOINTS:
        return [_too_many("endpoints", len(endpoints), MAX_SLICE_ENDPOINTS)]
    causes: list[Cause] = []
    for i, endpoint in enumerate(endpoints):
        endpoint = _d(endpoint)
        path = f"endpoints[{i}]"
        addresses = _l(endpoint.get("addresses"))
        if not addresses:
            causes.append(required(f"{path}.addresses", "must contain at least 1 address"))
        elif len(addresses) > MAX_ENDPOINT_ADDRESSES:
            causes.append(_too_many(f"{path}.addresses", len(addresses), MAX_ENDPOINT_ADDRESSES))
        for j, address in enumerate(addresses):
            causes += _validate_slice_address(address, address_type, f"{path}.addresses[{j}]")
        if endpoint.get("nodeName") is not None:
            node = _s(endpoint["nodeName"])
            causes += [invalid(f"{path}.nodeName", node, m) for m in name_is_dns_subdomain(node)]
        if endpoint.get("hostname") is not None:
            host = _s(endpoint["hostname"])
            causes += [invalid(f"{path}.hostname", host, m) for m in is_dns1123_label(host)]
        topology = _d(endpoint.get("deprecatedTopology"))
        causes += validate_labels(topology, f"{path}.deprecatedTopology")
        zones = _l(_d(endpoint.get("hints")).get("forZones"))
        if len(zones) > MAX_ZONE_HINTS:
            causes.append(_too_many(f"{path}.hints.forZones", len(zones), MAX_ZONE_HINTS))
            zones = []
        seen_zones: set[str] = set()
        for k, zone in enumerate(zones):
            name = _s(_d(zone).get("name"))
            zpath = f"{path}.hints.forZones[{k}].name"
            if name in seen_zones:
                causes.append(duplicate(zpath, name))
            seen_zones.add(name)
            causes += [invalid(zpath, name, m) for m in is_valid_label_value(name)]
    return causes


def _validate_slice_ports(ports: list[Any]) -> list[Cause]:
    if len(ports) > MAX_SLICE_PORTS:
        return [_too_many("ports", len(ports), MAX_SLICE_PORTS)]
    causes: list[Cause] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        port = _d(port)
        path = f"ports[{i}]"
        name = _s(port.get("name"))
        if name:
            causes += [invalid(f"{path}.name", name, m) for m in is_dns1123_label(name)]
        if name in names:
            causes.append(duplicate(f"{path}.name", name))
        names.add(name)
        protocol = port.get("protocol")
        if not protocol:
            causes.append(required(f"{path}.protocol"))
        elif protocol not in SUPPORTED_PROTOCOLS:
            causes.append(not_supported(f"{path}.protocol", protocol, SUPPORTED_PROTOCOLS))
        if port.get("appProtocol") is not None:
            app = _s(port["appProtocol"])
            causes += [invalid(f"{path}.appProtocol", app, m) for m in is_qualified_name(app)]
    return causes


def _validate_endpointslice(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    address_type = _s(obj.get("addressType"))
    if not address_type:
        causes.append(required("addressType"))
    elif address_type not in ADDRESS_TYPES:
        causes.append(not_supported("addressType", address_type, ADDRESS_TYPES))
    causes += _validate_slice_endpoints(_l(obj.get("endpoints")), address_type)
    return causes + _validate_slice_ports(_l(obj.get("ports")))


def _validate_endpointslice_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _immutable(new.get("addressType"), old.get("addressType"), "addressType")


# ---------------------------------------------------------------------------------------------
# Config maps, secrets, namespaces, nodes, leases, events
# ---------------------------------------------------------------------------------------------


def _validate_configmap(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    data, binary = _d(obj.get("data")), _d(obj.get("binaryData"))
    total = 0
    for key, value in data.items():
        causes += [invalid(f"data[{key}]", key, m) for m in is_config_map_key(key)]
        if key in binary:
            causes.append(invalid(f"data[{key}]", key, "duplicate of key present in binaryData"))
        if not isinstance(value, str):
            causes.append(invalid(f"data[{key}]", value, "must be a string"))
        total += len(_s(value))
    for key, value in binary.items():
        causes += [invalid(f"binaryData[{key}]", key, m) for m in is_config_map_key(key)]
        total += len(_s(value)) * 3 // 4
    if total > MAX_SECRET_SIZE:
        causes.append(too_long("", MAX_SECRET_SIZE))
    return causes


def _decoded(value: Any) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def _validate_secret(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    data = _d(obj.get("data"))
    total = 0
    for key, value in data.items():
        causes += [invalid(f"data[{key}]", key, m) for m in is_config_map_key(key)]
        raw = _decoded(value)
        if raw is None:
            causes.append(invalid(f"data[{key}]", "<secret contents redacted>", "illegal base64 data"))
        else:
            total += len(raw)
    if total > MAX_SECRET_SIZE:
        causes.append(too_long("data", MAX_SECRET_SIZE))
    stype = obj.get("type") or ""
    if stype == "kubernetes.io/service-account-token":
        if not _s(_d(_d(obj.get("metadata")).get("annotations")).get("kubernetes.io/service-account.name")):
            causes.append(required("metadata.annotations[kubernetes.io/service-account.name]"))
    elif stype in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
        key = ".dockercfg" if stype == "kubernetes.io/dockercfg" else ".dockerconfigjson"
        if key not in data:
            causes.append(required(f"data[{key}]"))
        else:
            try:
                parsed = json.loads(_decoded(data[key]) or b"")
            except ValueError as exc:
                causes.append(invalid(f"data[{key}]", "<secret contents redacted>", str(exc)))
            else:
                if not isinstance(parsed, dict):
                    causes.append(
                        invalid(f"data[{key}]", "<secret contents redacted>", "must be a JSON object")
                    )
    elif stype == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            causes.append(required("data[username]"))
            causes.append(required("data[password]"))
    elif stype == "kubernetes.io/ssh-auth":
        if not _decoded(data.get("ssh-privatekey")):
            causes.append(required("data[ssh-privatekey]"))
    elif stype == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                causes.append(required(f"data[{key}]"))
    return causes


def _validate_immutable_data(
    new: dict[str, Any], old: dict[str, Any], fields: tuple[str, ...]
) -> list[Cause]:
    causes: list[Cause] = []
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            causes.append(forbidden("immutable", "field is immutable when `immutable` is set"))
        for fld in fields:
            if _d(new.get(fld)) != _d(old.get(fld)):
                causes.append(forbidden(fld, "field is immutable when `immutable` is set"))
    return causes


def _validate_namespace(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for i, name in enumerate(_l(_d(obj.get("spec")).get("finalizers"))):
        name = _s(name)
        msgs = is_qualified_name(name)
        causes += [invalid(f"spec.finalizers[{i}]", name, m) for m in msgs]
        if not msgs and "/" not in name and name not in _STANDARD_FINALIZERS:
            causes.append(
                invalid(
                    f"spec.finalizers[{i}]",
                    name,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
    return causes


def _validate_node(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = _d(obj.get("spec"))
    seen: set[tuple[str, str]] = set()
    for i, taint in enumerate(_l(spec.get("taints"))):
        taint = _d(taint)
        tpath = f"spec.taints[{i}]"
        key = _s(taint.get("key"))
        causes += [invalid(f"{tpath}.key", key, m) for m in is_qualified_name(key)]
        value = _s(taint.get("value"))
        causes += [invalid(f"{tpath}.value", value, m) for m in is_valid_label_value(value)]
        effect = _s(taint.get("effect"))
        if not effect:
            causes.append(required(f"{tpath}.effect"))
        elif effect not in TAINT_EFFECTS:
            causes.append(not_supported(f"{tpath}.effect", effect, TAINT_EFFECTS))
        if (key, effect) in seen:
            causes.append(duplicate(tpath, GoValue(f"{key}={value}:{effect}")))
        seen.add((key, effect))
    pod_cidrs = _l(spec.get("podCIDRs")) or ([spec["podCIDR"]] if _s(spec.get("podCIDR")) else [])
    for i, cidr in enumerate(pod_cidrs):
        if not is_valid_cidr(cidr):
            causes.append(invalid(f"spec.podCIDRs[{i}]", cidr, INVALID_CIDR_MSG))
    if spec.get("unschedulable") is not None and not isinstance(spec["unschedulable"], bool):
        causes.append(invalid("spec.unschedulable", spec["unschedulable"], "must be a boolean"))
    status = _d(obj.get("status"))
    for group in ("capacity", "allocatable"):
        for name, value in _d(status.get(group)).items():
            causes += _validate_quantity(value, f"status.{group}[{name}]")
    return causes


def _validate_node_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    new_spec, old_spec = _d(new.get("spec")), _d(old.get("spec"))
    old_cidrs = _l(old_spec.get("podCIDRs"))
    if old_cidrs and _l(new_spec.get("podCIDRs")) != old_cidrs:
        causes.append(
            forbidden("spec.podCIDRs", 'node updates may not change podCIDR except from "" to valid')
        )
    old_provider = _s(old_spec.get("providerID"))
    if old_provider and _s(new_spec.get("providerID")) != old_provider:
        causes.append(
            forbidden("spec.providerID", 'node updates may not change providerID except from "" to valid')
        )
    return causes


def _validate_secret_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    causes = _immutable(new.get("type") or "Opaque", old.get("type") or "Opaque", "type")
    return causes + _validate_immutable_data(new, old, ("data",))


def _validate_configmap_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    return _validate_immutable_data(new, old, ("data", "binaryData"))


def _validate_controllerrevision(obj: dict[str, Any]) -> list[Cause]:
    """ValidateControllerRevision: data is required, the revision is not negative."""
    causes: list[Cause] = []
    if obj.get("data") is None:
        causes.append(required("data", ""))
    revision = obj.get("revision")
    if _int(revision) is None:
        causes.append(invalid("revision", revision, "must be an integer"))
    elif revision < 0:
        causes.append(invalid("revision", revision, IS_NEGATIVE))
    return causes


def _validate_controllerrevision_update(new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
    if new.get("data") != old.get("data"):
        return [invalid("data", "", "field is immutable")]
    return []


def _validate_lease(obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    spec = _d(obj.get("spec"))
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (_int(duration) is None or duration <= 0):
        causes.append(invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (_int(transitions) is None or transitions < 0):
        causes.append(invalid("spec.leaseTransitions", transitions, IS_NEGATIVE))
    return causes


def _validate_event(obj: dict[str, Any]) -> list[Cause]:
    meta = _d(obj.get("metadata"))
    causes: list[Cause] = []
    namespace = _s(meta.get("namespace"))
    involved_ns = _s(_d(obj.get("involvedObject")).get("namespace"))
    if not obj.get("eventTime"):
        if not involved_ns:
            mismatch = namespace not in ("", "default")
        else:
            mismatch = namespace != involved_ns
        if mismatch:
            causes.append(invalid("involvedObject.namespace", involved_ns, "does not match event.namespace"))
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            causes.append(invalid("involvedObject.namespace", involved_ns, "does not match event.namespace"))
        controller = _s(obj.get("reportingComponent"))
        if not controller:
            causes.append(required("reportingComponent"))
        causes += [invalid("reportingComponent", controller, m) for m in is_qualified_name(controller)]
        instance = _s(obj.get("reportingInstance"))
        if not instance:
            causes.append(required("reportingInstance"))
        elif len(instance) > 128:
            causes.append(invalid("reportingInstance", "", "can have at most 128 characters"))
        action = _s(obj.get("action"))
        if not action:
            causes.append(required("action"))
        elif len(action) > 128:
            causes.append(invalid("action", "", "can have at most 128 characters"))
        reason = _s(obj.get("reason"))
        if not reason:
            causes.append(required("reason"))
        elif len(reason) > 128:
            causes.append(invalid("reason", "", "can have at most 128 characters"))
        if len(_s(obj.get("message"))) > 1024:
            causes.append(invalid("message", "", "can have at most 1024 characters"))
    return causes


# ---------------------------------------------------------------------------------------------
# HorizontalPodAutoscaler (autoscaling/v2; v1 bodies are converted by the defaults first)
# ---------------------------------------------------------------------------------------------

HPA_METRIC_TYPES = ("ContainerResource", "External", "Object", "Pods", "Resource")
HPA_TARGET_TYPES = ("AverageValue", "Utilization", "Value")
HPA_SELECT_POLICIES = ("Disabled", "Max", "Min")
HPA_POLICY_TYPES = ("Percent", "Pods")
HPA_MAX_STABILIZATION_WINDOW = 3600
HPA_MAX_PERIOD_SECONDS = 1800


def _validate_hpa_target(target: Any, path: str) -> list[Cause]:
    target = _d(target)
    kind = target.get("type")
    if not kind:
        return [required(f"{path}.type", "must specify a metric target type")]
    if kind not in HPA_TARGET_TYPES:
        return [not_supported(f"{path}.type", kind, HPA_TARGET_TYPES)]
    causes: list[Cause] = []
    for key in ("value", "averageValue"):
        if target.get(key) is not None:
            try:
                if parse_quantity(target[key]) <= 0:
                    causes.append(invalid(f"{path}.{key}", target[key], "must be positive"))
            except QuantityError as exc:
                causes.append(invalid(f"{path}.{key}", target[key], str(exc)))
    utilization = target.get("averageUtilization")
    if utilization is not None and (_int(utilization) is None or utilization < 1):
        causes.append(invalid(f"{path}.averageUtilization", utilization, "must be greater than 0"))
    wanted = {"Utilization": "averageUtilization", "AverageValue": "averageValue", "Value": "value"}[kind]
    if all(target.get(k) is None for k in ("averageUtilization", "averageValue", "value")):
        causes.append(
            required(
                f"{path}.averageUtilization", "must set either a target raw value or a target utilization"
            )
        )
    elif target.get(wanted) is None:
        causes.append(required(f"{path}.{wanted}", f"must set {wanted} when the target type is {kind}"))
    return causes


def _validate_hpa_metric(metric: Any, path: str) -> list[Cause]:
    metric = _d(metric)
    kind = metric.get("type")
    if not kind:
        return [required(f"{path}.type", "must specify a metric source type")]
    if kind not in HPA_METRIC_TYPES:
        return [not_supported(f"{path}.type", kind, HPA_METRIC_TYPES)]
    field_name = kind[0].lower() + kind[1:]
    source = metric.get(field_name)
    if not isinstance(source, dict):
        return [
            required(
                f"{path}.{field_name}", f"must populate information for the given metric source ({kind})"
            )
        ]
    if kind not in ("Resource", "ContainerResource"):
        return [] if isinstance(source.get("target"), dict) else [required(f"{path}.{field_name}.target")]
    causes: list[Cause] = []
    if not source.get("name"):
        causes.append(required(f"{path}.{field_name}.name", "must specify a resource name"))
    if kind == "ContainerResource" and not source.get("container"):
        causes.append(required(f"{path}.{field_name}.container", "must specify a container"))
    target = source.get("target")
    if not isinstance(target, dict):
        causes.append(required(f"{path}.{field_name}.target", "must specify a target"))
    else:
        causes += _validate_hpa_target(target, f"{path}.{field_name}.target")
        if target.get("type") == "Value":
            causes.append(
                not_supported(f"{path}.{field_name}.target.type", "Value", ("AverageValue", "Utilization"))
            )
    return causes


def _validate_hpa_rules(rules: Any, path: str) -> list[Cause]:
    if rules is None:
        return []
    rules = _d(rules)
    causes: list[Cause] = []
    window = rules.get("stabilizationWindowSeconds")
    if window is not None:
        if _int(window) is None or window < 0:
            causes.append(invalid(f"{path}.stabilizationWindowSeconds", window, IS_NEGATIVE))
        elif window > HPA_MAX_STABILIZATION_WINDOW:
            causes.append(
                invalid(
                    f"{path}.stabilizationWindowSeconds",
                    window,
                    f"must be less than or equal to {HPA_MAX_STABILIZATION_WINDOW}",
                )
            )
    select = rules.get("selectPolicy")
    if select is not None and select not in HPA_SELECT_POLICIES:
        causes.append(not_supported(f"{path}.selectPolicy", select, HPA_SELECT_POLICIES))
    policies = rules.get("policies")
    if policies is not None and not _l(policies):
        causes.append(required(f"{path}.policies", "must specify at least one Policy"))
    for i, policy in enumerate(_l(policies)):
        ppath = f"{path}.policies[{i}]"
        policy = _d(policy)
        if policy.get("type") not in HPA_POLICY_TYPES:
            causes.append(not_supported(f"{ppath}.type", policy.get("type"), HPA_POLICY_TYPES))
        value = policy.get("value")
        if _int(value) is None or value <= 0:
            causes.append(invalid(f"{ppath}.value", value, "must be greater than zero"))
        period = policy.get("periodSeconds")
        if _int(period) is None or period <= 0:
            causes.append(invalid(f"{ppath}.periodSeconds", period, "must be greater than zero"))
        elif period > HPA_MAX_PERIOD_SECONDS:
            causes.append(
                invalid(
                    f"{ppath}.periodSeconds",
                    period,
                    f"must be less than or equal to {HPA_MAX_PERIOD_SECONDS}",
                )
            )
    return causes


def _validate_hpa(obj: dict[str, Any]) -> list[Cause]:
    spec = _d(obj.get("spec"))
    causes: list[Cause] = []
    ref = spec.get("scaleTargetRef")
    if not isinstance(ref, dict):
        causes.append(required("spec.scaleTargetRef"))
    else:
        if not _s(ref.get("kind")):
            causes.append(required("spec.scaleTargetRef.kind"))
        elif "/" in ref["kind"] or "%" in ref["kind"] or ref["kind"] in (".", ".."):
            causes.append(invalid("spec.scaleTargetRef.kind", ref["kind"], "may not contain '/' or '%'"))
        if not _s(ref.get("name")):
            causes.append(required("spec.scaleTargetRef.name"))
        elif "/" in ref["name"] or "%" in ref["name"] or ref["name"] in (".", ".."):
            causes.append(invalid("spec.scaleTargetRef.name", ref["name"], "may not contain '/' or '%'"))
    min_replicas = spec.get("minReplicas")
    max_replicas = spec.get("maxReplicas")
    if min_replicas is not None and (_int(min_replicas) is None or min_replicas < 1):
        causes.append(invalid("spec.minReplicas", min_replicas, "must be greater than or equal to 1"))
    if _int(max_replicas) is None or max_replicas < 1:
        causes.append(invalid("spec.maxReplicas", max_replicas, "must be greater than 0"))
    elif _int(min_replicas) is not None and min_replicas > max_replicas:
        causes.append(
            invalid("spec.maxReplicas", max_replicas, "must be greater than or equal to `minReplicas`")
        )
    for i, metric in enumerate(_l(spec.get("metrics"))):
        causes += _validate_hpa_metric(metric, f"spec.metrics[{i}]")
    behavior = spec.get("behavior")
    if behavior is not None:
        behavior = _d(behavior)
        causes += _validate_hpa_rules(behavior.get("scaleUp"), "spec.behavior.scaleUp")
        causes += _validate_hpa_rules(behavior.get("scaleDown"), "spec.behavior.scaleDown")
    return causes


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------

Validator = Callable[[dict[str, Any]], list[Cause]]
UpdateValidator = Callable[[dict[str, Any], dict[str, Any]], list[Cause]]


@dataclass(frozen=True)
class _Rules:
    name_fn: NameFunc
    body: Validator
    update: UpdateValidator | None = None


_RULES: dict[str, _Rules] = {
    "Pod": _Rules(name_is_dns_subdomain, _validate_pod),
    "Deployment": _Rules(name_is_dns_subdomain, _validate_deployment, _validate_workload_update),
    "ReplicaSet": _Rules(name_is_dns_subdomain, _validate_replicaset, _validate_workload_update),
    "DaemonSet": _Rules(name_is_dns_subdomain, _validate_daemonset, _validate_workload_update),
    "StatefulSet": _Rules(name_is_dns_subdomain, _validate_statefulset, _validate_statefulset_update),
    "Service": _Rules(name_is_dns1035_label, _validate_service, _validate_service_update),
    "Endpoints": _Rules(name_is_dns_subdomain, _validate_endpoints),
    "ConfigMap": _Rules(name_is_dns_subdomain, _validate_configmap, _validate_configmap_update),
    "Secret": _Rules(name_is_dns_subdomain, _validate_secret, _validate_secret_update),
    "Namespace": _Rules(name_is_dns_label, _validate_namespace),
    "Node": _Rules(name_is_dns_subdomain, _validate_node, _validate_node_update),
    "Lease": _Rules(name_is_dns_subdomain, _validate_lease),
    "ControllerRevision": _Rules(
        name_is_dns_subdomain, _validate_controllerrevision, _validate_controllerrevision_update
    ),
    "Event": _Rules(name_is_dns_subdomain, _validate_event),
    "EndpointSlice": _Rules(name_is_dns_subdomain, _validate_endpointslice, _validate_endpointslice_update),
    "Job": _Rules(name_is_dns_subdomain, _validate_job, _validate_job_update),
    "CronJob": _Rules(name_is_dns_subdomain, _validate_cronjob),
    "HorizontalPodAutoscaler": _Rules(name_is_dns_subdomain, _validate_hpa),
}


def validate(kind: str, obj: Mapping[str, Any]) -> list[Cause]:
    """Validate an object for create; [] means valid. Unknown kinds get ObjectMeta checks only."""
    obj = dict(obj) if isinstance(obj, Mapping) else {}
    info = kind_info(kind)
    if info is None:
        return validate_object_meta(obj.get("metadata"), None)
    rules = _RULES[info.kind]
    return validate_object_meta(obj.get("metadata"), info.namespaced, rules.name_fn) + rules.body(obj)


def validate_update(kind: str, new: Mapping[str, Any], old: Mapping[str, Any]) -> list[Cause]:
    """Validate an update of `old` into `new`: the new object's own rules plus immutability."""
    new = dict(new) if isinstance(new, Mapping) else {}
    old = dict(old) if isinstance(old, Mapping) else {}
    causes = validate_object_meta_update(new.get("metadata"), old.get("metadata"))
    info = kind_info(kind)
    if info is None:
        return causes
    if info.kind == "Pod":
        return causes + _validate_pod_update(new, old)
    rules = _RULES[info.kind]
    causes += rules.body(new)
    if rules.update is not None:
        causes += rules.update(new, old)
    return causes
