"""Content negotiation: what a request body is, and what form the client wants back.

kubectl and client libraries send JSON, YAML, protobuf (client-go's typed clients, see
protobuf.py) or one of the four patch media types, and ask for JSON, YAML, a meta.k8s.io Table
(`kubectl get`) or PartialObjectMetadata (garbage collectors). Responses are never protobuf: a
client that lists it with JSON gets JSON, one that asks only for it gets 406 NotAcceptable.
Nothing a client sends gives a 500.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from .errors import ApiError, bad_request, not_acceptable, unsupported_media_type

JSON = "application/json"
YAML = "application/yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLY_PATCH_CBOR = "application/apply-patch+cbor"
PROTOBUF = "application/vnd.kubernetes.protobuf"

BODY_TYPES = [JSON, YAML, PROTOBUF]
PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _yaml_load(raw: bytes) -> Any:
    try:
        return yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise bad_request(f"error converting YAML to JSON: yaml: {problem}{where}") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings (JSON has no dates)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def decode_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None


def decode_body(raw: bytes, content_type: str | None, *, allow_patch: bool = False) -> Any:
    """Decode a create/update body (JSON or YAML); ApiError 400/415 for anything else."""
    media = media_type(content_type)
    if not raw.strip():
        raise bad_request("the request body is empty; send the object as JSON or YAML")
    if media in ("", JSON, "text/json", "*/*"):
        return decode_json(raw)
    if media in (YAML, "application/x-yaml", "text/yaml"):
        return _yaml_load(raw)
    if media == PROTOBUF:
        from . import protobuf

        try:
            return protobuf.decode_object(raw)
        except protobuf.SchemaUnavailable as exc:
            raise unsupported_media_type(media, [JSON, YAML], str(exc)) from None
        except protobuf.ProtobufError as exc:
            raise bad_request(f"the protobuf body cannot be read: {exc}") from None
    raise unsupported_media_type(media, BODY_TYPES)


def decode_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    obj = decode_body(raw, content_type)
    if not isinstance(obj, dict):
        raise bad_request(
            f"the request body must be a JSON object, not {type(obj).__name__ if obj is not None else 'null'}"
        )
    return obj


def decode_patch(raw: bytes, content_type: str | None) -> tuple[str, Any]:
    """(patch media type, decoded patch); 415 for a type that is not a patch type."""
    media = media_type(content_type)
    if media not in PATCH_TYPES:
        raise unsupported_media_type(media, PATCH_TYPES)
    if not raw.strip():
        raise bad_request("the patch body is empty")
    if media == APPLY_PATCH:
        return media, _yaml_load(raw)
    return media, decode_json(raw)


# A JSON string's closing quote, whitespace, then a colon: a key written as `"key" : value`.
_SPACED_KEY = re.compile(rb'"[ \t\r\n]+:')


def may_have_duplicates(raw: bytes, content_type: str | None, obj: Any) -> bool:
    """False when the JSON body `raw`, decoded as `obj`, surely repeats no key in any object.

    A decoder keeps one value per key, so a repeated key (and whatever its dropped value held)
    is missing when `obj` is encoded again. Without `\\u` escapes and without whitespace between a
    key and its colon, each key of `raw` ends in exactly one `":` and string contents encode
    their quotes the same way in both, so equal counts of `":` mean nothing was dropped. Anything
    else (YAML, other encodings) answers True: the caller then looks for duplicates properly.
    """
    if media_type(content_type) not in ("", JSON) or b"\\u" in raw or _SPACED_KEY.search(raw):
        return True
    return raw.count(b'":') != orjson.dumps(obj).count(b'":')


@dataclass(frozen=True, slots=True)
class Accept:
    """What the client wants back: `format` is json or yaml; `as_kind` Table/PartialObjectMetadata(List)."""

    format: str = "json"
    as_kind: str | None = None
    version: str = "v1"  # of meta.k8s.io for Table / PartialObjectMetadata

    @property
    def content_type(self) -> str:
        base = YAML if self.format == "yaml" else JSON
        if self.as_kind:
            return f"{base};as={self.as_kind};g=meta.k8s.io;v={self.version}"
        return base


DEFAULT_ACCEPT = Accept()

_AS_KINDS = ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")


def parse_accept(header: str | None, *, allow_as: bool = True) -> Accept:
    """Pick the first acceptable clause of an Accept header (clients list preferences in order)."""
    if not header:
        return DEFAULT_ACCEPT
    return _parse_accept(header, allow_as)


@functools.lru_cache(maxsize=256)
def _parse_accept(header: str, allow_as: bool) -> Accept:
    # Cached: each client sends the same few headers over and over. (Refusals raise, uncached.)
    seen_protobuf = False
    for clause in header.split(","):
        media, *raw_params = (p.strip() for p in clause.split(";"))
        media = media.lower()
        params = {}
        for p in raw_params:
            if "=" in p:
                k, v = p.split("=", 1)
                params[k.strip()] = v.strip()
        fmt = None
        if media in (JSON, "application/*", "*/*", "*", "text/json"):
            fmt = "json"
        elif media in (YAML, "application/x-yaml", "text/yaml"):
            fmt = "yaml"
        elif media == PROTOBUF or media.startswith(PROTOBUF):
            seen_protobuf = True
            continue
        else:
            continue
        as_kind = params.get("as")
        if as_kind is None:
            return Accept(fmt)
        if (
            allow_as
            and as_kind in _AS_KINDS
            and params.get("g") == "meta.k8s.io"
            and params.get("v") in ("v1", "v1beta1")
        ):
            return Accept(fmt, as_kind, params["v"])
        # An `as=` this endpoint cannot produce: try the next clause.
    if seen_protobuf:
        raise not_acceptable(
            "only the following media types are accepted: application/json, application/yaml "
            "(grove does not speak application/vnd.kubernetes.protobuf)"
        )
    raise not_acceptable("only the following media types are accepted: application/json, application/yaml")


def encode(obj: Any, accept: Accept = DEFAULT_ACCEPT) -> bytes:
    if accept.format == "yaml":
        return yaml.safe_dump(obj, default_flow_style=False, sort_keys=True, allow_unicode=True).encode()
    return orjson.dumps(obj)


def encode_error(err: ApiError, accept: Accept = DEFAULT_ACCEPT) -> bytes:
    return encode(err.status(), Accept(accept.format))


__all__ = [
    "APPLY_PATCH",
    "JSON",
    "JSON_PATCH",
    "MERGE_PATCH",
    "STRATEGIC_PATCH",
    "YAML",
    "Accept",
    "ApiError",
    "decode_body",
    "decode_object",
    "decode_patch",
    "encode",
    "encode_error",
    "parse_accept",
]
