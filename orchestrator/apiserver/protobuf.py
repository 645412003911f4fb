"""Decoding Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).

Since client-go 1.31 the typed clients send built-in objects as protobuf, with no fallback to
JSON: `kubectl create namespace|deployment|secret|configmap` POSTs protobuf. Decoding it needs
the field numbers of every built-in type, which only the Kubernetes `generated.proto` files
define. Every Go program built with k8s.io/api carries those files, gzipped, as registered
FileDescriptorProtos — kubectl included, and kubectl is the client that sends the bodies, so its
descriptors match its encoding exactly. This module finds them in a binary (kubectl on PATH by
default, `GROVE_PROTO_DESCRIPTORS` to name another), reads them with a small wire-format reader,
and turns a `k8s\\x00`-prefixed runtime.Unknown envelope into the object's JSON form, following
the types' JSON conventions (Time as RFC 3339, Quantity and IntOrString as scalars, bytes as
base64, maps as objects, empty strings and lists left out as `omitempty` leaves them out).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

MAGIC = b"k8s\x00"
ENV_SOURCE = "GROVE_PROTO_DESCRIPTORS"

# FieldDescriptorProto.Type values (descriptor.proto).
_DOUBLE, _FLOAT, _INT64, _UINT64, _INT32, _FIXED64, _FIXED32, _BOOL, _STRING = 1, 2, 3, 4, 5, 6, 7, 8, 9
_MESSAGE, _BYTES, _UINT32, _ENUM, _SFIXED32, _SFIXED64, _SINT32, _SINT64 = 11, 12, 13, 14, 15, 16, 17, 18
_VARINT_TYPES = frozenset((_INT64, _UINT64, _INT32, _BOOL, _UINT32, _ENUM, _SINT32, _SINT64))

_META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_TIME = f"{_META}.Time"
_MICRO_TIME = f"{_META}.MicroTime"
_DURATION = f"{_META}.Duration"
_FIELDS_V1 = f"{_META}.FieldsV1"
_QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf object this server can read."""


class SchemaUnavailable(ProtobufError):
    """No binary with Kubernetes' protobuf descriptors was found."""


# --- wire format -------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, raw value) of each field of a message, in order."""
    out = []
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > end:
                raise ProtobufError("truncated 64-bit field")
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ProtobufError("truncated length-delimited field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            if pos + 4 > end:
                raise ProtobufError("truncated 32-bit field")
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int, bits: int = 64) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


# --- descriptors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    number: int
    type: int
    repeated: bool
    type_name: str  # fully qualified message name, without the leading dot


@dataclass(slots=True)
class Message:
    name: str
    fields: dict[int, Field] = field(default_factory=dict)
    map_entry: bool = False


@dataclass
class Schema:
    messages: dict[str, Message]
    source: str

    def message_for(self, api_version: str, kind: str) -> Message | None:
        """The message of a kind: k8s.io.api.<group>.<version>.<Kind>, or a meta/v1 type."""
        group, _, version = api_version.rpartition("/")
        label = group.split(".", 1)[0] if group else "core"
        for name in (f"k8s.io.api.{label}.{version}.{kind}", f"{_META}.{kind}"):
            if name in self.messages:
                return self.messages[name]
        return None


def _parse_field(buf: bytes, package_prefix: str) -> Field:
    name, number, label, ftype, type_name = "", 0, 1, 0, ""
    for num, _wire, value in fields(buf):
        if num == 1:
            name = value.decode()
        elif num == 3:
            number = value
        elif num == 4:
            label = value
        elif num == 5:
            ftype = value
        elif num == 6:
            type_name = value.decode().lstrip(".")
    return Field(name, number, ftype, label == 3, type_name)


def _parse_message(buf: bytes, prefix: str, out: dict[str, Message]) -> None:
    parts = fields(buf)
    name = next((v.decode() for n, _w, v in parts if n == 1), "")
    full = f"{prefix}.{name}" if prefix else name
    msg = Message(full)
    for num, _wire, value in parts:
        if num == 2:
            f = _parse_field(value, prefix)
            msg.fields[f.number] = f
        elif num == 3:
            _parse_message(value, full, out)
        elif num == 7:
            msg.map_entry = any(n == 7 and v for n, _w, v in fields(value))
    out[full] = msg


def _parse_file(buf: bytes, out: dict[str, Message]) -> None:
    parts = fields(buf)
    package = next((v.decode() for n, _w, v in parts if n == 2), "")
    for num, _wire, value in parts:
        if num == 4:
            _parse_message(value, package, out)


_GZIP = re.compile(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00")


def descriptors_from_binary(path: str) -> dict[str, Message]:
    """Every k8s.io message described by the gzipped FileDescriptorProtos inside a Go binary."""
    with open(path, "rb") as f:
        data = f.read()
    messages: dict[str, Message] = {}
    for match in _GZIP.finditer(data):
        start = match.start()
        try:
            out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[start : start + 4_000_000])
        except zlib.error:
            continue
        # A FileDescriptorProto starts with its name (field 1): "k8s.io/.../generated.proto".
        if len(out) < 3 or out[0] != 0x0A or not out[2 : 2 + out[1]].startswith(b"k8s.io/"):
            continue
        try:
            _parse_file(out, messages)
        except (ProtobufError, UnicodeDecodeError):
            continue
    return messages


_lock = threading.Lock()
_schema: Schema | None = None
_schema_error: str | None = None


def schema() -> Schema:
    """The descriptors, loaded once from kubectl (or the binary $GROVE_PROTO_DESCRIPTORS names)."""
    global _schema, _schema_error
    with _lock:
        if _schema is not None:
            return _schema
        if _schema_error is not None:
            raise SchemaUnavailable(_schema_error)
        candidates = [
            os.environ.get(ENV_SOURCE),
            shutil.which("kubectl"),
            "/usr/bin/kubectl",
            "/usr/local/bin/kubectl",
        ]
        for path in filter(None, candidates):
            path = os.path.realpath(path)
            if not os.path.isfile(path):
                continue
            try:
                messages = descriptors_from_binary(path)
            except OSError:
                continue
            if f"{_META}.ObjectMeta" in messages:
                _schema = Schema(messages, path)
                return _schema
        _schema_error = (
            "this server reads protobuf bodies with the descriptors found in a Kubernetes Go binary, and "
            f"found none (looked for kubectl on PATH; set {ENV_SOURCE} to a kubectl or kubelet binary), "
            "so send the object as application/json instead"
        )
        raise SchemaUnavailable(_schema_error)


# --- protobuf -> JSON ---------------------------------------------------------------------------


def _rfc3339(seconds: int, nanos: int, micro: bool) -> str | None:
    if seconds == 0 and nanos == 0:
        return None  # the zero time is `null` in JSON
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return base + (f".{nanos // 1000:06d}Z" if micro else "Z")


def _go_duration(nanos: int) -> str:
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = rest / 1e9
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    out += f"{seconds:g}s"
    return sign + out


def _scalar(f: Field, wire: int, raw: Any) -> Any:
    t = f.type
    if t == _STRING:
        return raw.decode("utf-8", "replace")
    if t == _BYTES:
        return base64.b64encode(raw).decode()
    if t == _BOOL:
        return bool(raw)
    if t in (_INT64, _INT32):
        return _signed(raw, 64)
    if t in (_UINT64, _UINT32, _ENUM):
        return raw
    if t in (_SINT32, _SINT64):
        return (raw >> 1) ^ -(raw & 1)
    if t == _DOUBLE:
        return struct.unpack("<d", raw)[0]
    if t == _FLOAT:
        return struct.unpack("<f", raw)[0]
    if t in (_FIXED64, _SFIXED64):
        value = struct.unpack("<Q", raw)[0]
        return _signed(value, 64) if t == _SFIXED64 else value
    if t in (_FIXED32, _SFIXED32):
        value = struct.unpack("<I", raw)[0]
        return _signed(value, 32) if t == _SFIXED32 else value
    raise ProtobufError(f"field {f.name}: unsupported type {t}")


def _packed(f: Field, raw: bytes) -> list[Any]:
    values = []
    pos = 0
    while pos < len(raw):
        if f.type in _VARINT_TYPES:
            v, pos = _varint(raw, pos)
            values.append(_scalar(f, 0, v))
        elif f.type in (_DOUBLE, _FIXED64, _SFIXED64):
            values.append(_scalar(f, 1, raw[pos : pos + 8]))
            pos += 8
        else:
            values.append(_scalar(f, 5, raw[pos : pos + 4]))
            pos += 4
    return values


_EMPTY = object()

# Scalars that are pointers in the Go types: for them 0 / false is a value the client set. Every
# other scalar field is a plain Go value that protobuf always carries and JSON's `omitempty` drops
# when zero, so a zero there means "not set" and is left out, as kube-apiserver's JSON would.
POINTER_SCALARS = frozenset(
    (
        # apps
        "replicas",
        "revisionHistoryLimit",
        "progressDeadlineSeconds",
        "partition",
        # pods and containers
        "terminationGracePeriodSeconds",
        "activeDeadlineSeconds",
        "automountServiceAccountToken",
        "shareProcessNamespace",
        "priority",
        "enableServiceLinks",
        "hostUsers",
        "setHostnameAsFQDN",
        "privileged",
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "fsGroup",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "defaultMode",
        "optional",
        "mode",
        "tolerationSeconds",
        "expirationSeconds",
        # metadata and options
        "deletionGracePeriodSeconds",
        "controller",
        "blockOwnerDeletion",
        "gracePeriodSeconds",
        "orphanDependents",
        # services, endpoints, leases, config
        "allocateLoadBalancerNodePorts",
        "ready",
        "serving",
        "terminating",
        "leaseDurationSeconds",
        "leaseTransitions",
        "immutable",
    )
)


def decode_message(s: Schema, msg: Message, buf: bytes) -> Any:
    """A message as the JSON value Kubernetes serializes it to (_EMPTY when it has none)."""
    name = msg.name
    if name in (_TIME, _MICRO_TIME):
        seconds = nanos = 0
        for num, _w, v in fields(buf):
            if num == 1:
                seconds = _signed(v)
            elif num == 2:
                nanos = _signed(v)
        value = _rfc3339(seconds, nanos, name == _MICRO_TIME)
        return _EMPTY if value is None else value
    if name == _DURATION:
        return _go_duration(next((_signed(v) for n, _w, v in fields(buf) if n == 1), 0))
    if name == _QUANTITY:
        return next((v.decode() for n, _w, v in fields(buf) if n == 1), "0")
    if name == _INT_OR_STRING:
        kind, int_val, str_val = 0, 0, ""
        for num, _w, v in fields(buf):
            if num == 1:
                kind = v
            elif num == 2:
                int_val = _signed(v)
            elif num == 3:
                str_val = v.decode()
        return str_val if kind == 1 else int_val
    if name in (_RAW_EXTENSION, _FIELDS_V1):
        raw = next((v for n, _w, v in fields(buf) if n == 1), b"")
        if not raw:
            return _EMPTY
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProtobufError(f"{name}: embedded raw value is not JSON") from None
    out: dict[str, Any] = {}
    for num, wire, raw in fields(buf):
        f = msg.fields.get(num)
        if f is None:
            continue  # a field this schema does not know: ignored, as protobuf does
        if f.type == _MESSAGE:
            sub = s.messages.get(f.type_name)
            if sub is None:
                raise ProtobufError(f"{name}.{f.name}: unknown message type {f.type_name}")
            if sub.map_entry:
                key, value = _map_entry(s, sub, raw)
                out.setdefault(f.name, {})[key] = value
                continue
            value = decode_message(s, sub, raw)
            if value is _EMPTY:
                continue
            if f.repeated:
                out.setdefault(f.name, []).append(value)
            else:
                out[f.name] = value
        elif f.repeated and wire == 2 and f.type not in (_STRING, _BYTES):
            out.setdefault(f.name, []).extend(_packed(f, raw))
        else:
            value = _scalar(f, wire, raw)
            if f.repeated:
                out.setdefault(f.name, []).append(value)
            elif value == "" or (
                (value is False or value == 0) and f.name not in POINTER_SCALARS and f.type != _BYTES
            ):
                continue
            else:
                out[f.name] = value
    return out


def _map_entry(s: Schema, entry: Message, buf: bytes) -> tuple[str, Any]:
    key: Any = ""
    value: Any = None
    key_field, value_field = entry.fields.get(1), entry.fields.get(2)
    for num, wire, raw in fields(buf):
        if num == 1 and key_field is not None:
            key = _scalar(key_field, wire, raw)
        elif num == 2 and value_field is not None:
            if value_field.type == _MESSAGE:
                sub = s.messages.get(value_field.type_name)
                if sub is None:
                    raise ProtobufError(f"unknown message type {value_field.type_name}")
                value = decode_message(s, sub, raw)
                if value is _EMPTY:
                    value = None
            else:
                value = _scalar(value_field, wire, raw)
    if value is None and value_field is not None:
        value = "" if value_field.type in (_STRING, _BYTES) else ({} if value_field.type == _MESSAGE else 0)
    return str(key), value


def decode_object(body: bytes) -> dict[str, Any]:
    """A `k8s\\x00` + runtime.Unknown body as the object's JSON form (with apiVersion and kind)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf prefix k8s\\x00")
    s = schema()
    api_version = kind = ""
    raw = b""
    encoding = ""
    for num, _w, value in fields(body[len(MAGIC) :]):
        if num == 1:
            for n, _w2, v in fields(value):
                if n == 1:
                    api_version = v.decode()
                elif n == 2:
                    kind = v.decode()
        elif num == 2:
            raw = value
        elif num == 3:
            encoding = value.decode()
    if encoding:
        raise ProtobufError(f"content encoding {encoding!r} is not supported")
    msg = s.message_for(api_version, kind)
    if msg is None:
        raise ProtobufError(f"no protobuf schema for {kind} in {api_version or 'an unnamed version'}")
    obj = decode_message(s, msg, raw)
    if obj is _EMPTY or not isinstance(obj, dict):
        obj = {}
    result: dict[str, Any] = {"apiVersion": api_version, "kind": kind} if api_version or kind else {}
    result.update(obj)
    return result
