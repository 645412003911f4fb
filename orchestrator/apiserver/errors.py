"""API errors as `kind: Status` bodies, worded the way kube-apiserver words them.

Clients branch on `reason` and `code` (kubectl prints `Error from server (NotFound): ...`, client-go
retries on Conflict, informers re-list on 410 Gone), so every failure a handler raises is an
`ApiError` carrying exactly those fields; nothing else ever reaches the client as a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.resources import Resource


def qualified(res: Resource | None, resource: str = "") -> str:
    """kube's GroupResource string: `pods`, `deployments.apps`."""
    if res is None:
        return resource
    return f"{res.resource}.{res.group}" if res.group else res.resource


@dataclass
class ApiError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(res: Resource | None, name: str | None, kind: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if res is not None and res.group:
        details["group"] = res.group
    details["kind"] = kind if kind is not None else (res.resource if res is not None else "")
    return details


def not_found(res: Resource | None, name: str, resource: str = "") -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(res, resource)} "{name}" not found',
        _details(res, name, resource or None),
    )


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(res: Resource, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(res)} "{name}" already exists', _details(res, name))


def conflict(res: Resource, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(res)} "{name}": {why}',
        _details(res, name),
    )


def stale_conflict(res: Resource, name: str) -> ApiError:
    return conflict(
        res,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(res: Resource | None, name: str, message: str) -> ApiError:
    return ApiError(403, "Forbidden", message, _details(res, name))


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def not_acceptable(message: str) -> ApiError:
    return ApiError(406, "NotAcceptable", message)


def unsupported_media_type(content_type: str, accepted: list[str], why: str = "") -> ApiError:
    message = f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"
    return ApiError(415, "UnsupportedMediaType", f"{message} ({why})" if why else message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def invalid(res: Resource, name: str, causes: list[dict[str, Any]], message: str | None = None) -> ApiError:
    """422 Invalid: `Deployment.apps "x" is invalid: <causes>`; kubectl re-words it from the causes."""
    kind_q = f"{res.kind}.{res.group}" if res.group else res.kind
    if message is None:
        texts = [_cause_text(c) for c in causes]
        joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        message = f'{kind_q} "{name}" is invalid: {joined}'
    details: dict[str, Any] = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.kind
    details["causes"] = causes
    return ApiError(422, "Invalid", message, details)


def _cause_text(cause: dict[str, Any]) -> str:
    fld = cause.get("field")
    return f"{fld}: {cause.get('message', '')}" if fld else str(cause.get("message", ""))


def unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message, {"retryAfterSeconds": 1}, {"Retry-After": "1"})


def timeout(message: str) -> ApiError:
    return ApiError(504, "Timeout", message, {"retryAfterSeconds": 1})


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", message, {"causes": [{"message": message}]})


def not_implemented(message: str) -> ApiError:
    return ApiError(501, "NotImplemented", message)
