"""A small asyncio client of grove's (Kubernetes-compatible) API server.

The scheduler, the controllers and the node agents reach the cluster's state only through this
module and `orchestrator.watchers`: plain JSON objects (dicts) over one keep-alive aiohttp session,
encoded and decoded with orjson. It speaks the Kubernetes API conventions, so it works against any
API server that does. A failed request raises an `ApiError` built from the server's `kind: Status`
body; callers branch on its subclass (`NotFound`, `Conflict`, `AlreadyExists`, `Gone`, `Invalid`,
`Unavailable`) the way client-go callers branch on `apierrors.IsNotFound` and friends.

There are no retries here: controllers retry through their work queue, informers re-list and
re-watch with back-off, so one layer decides how hard to try.

A server behind TLS and authentication is reached through a `ClientConfig` (CA bundle, client
certificate and key, bearer token), built by hand or from a kubeconfig's current context
(`load_kubeconfig`), as client-go's rest.Config is.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Self
from urllib.parse import quote

import aiohttp
import orjson
import yaml

__all__ = [
    "CONFIGMAPS",
    "CONTROLLERREVISIONS",
    "DAEMONSETS",
    "DEPLOYMENTS",
    "ENDPOINTS",
    "ENDPOINTSLICES",
    "EVENTS",
    "LEASES",
    "NAMESPACES",
    "NODES",
    "PODS",
    "REPLICASETS",
    "SECRETS",
    "SERVICES",
    "AlreadyExists",
    "ApiClient",
    "ApiError",
    "ClientConfig",
    "KubeconfigError",
    "Conflict",
    "Gone",
    "GroupVersionResource",
    "Invalid",
    "NotFound",
    "Unavailable",
    "api_path",
    "load_kubeconfig",
    "parse_kubeconfig",
]

Obj = dict[str, Any]

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
}


class GroupVersionResource(NamedTuple):
    """A resource type; star it into a call: `client.list(*PODS, namespace="default")`."""

    group: str
    version: str
    resource: str


PODS = GroupVersionResource("", "v1", "pods")
NODES = GroupVersionResource("", "v1", "nodes")
NAMESPACES = GroupVersionResource("", "v1", "namespaces")
SERVICES = GroupVersionResource("", "v1", "services")
ENDPOINTS = GroupVersionResource("", "v1", "endpoints")
SECRETS = GroupVersionResource("", "v1", "secrets")
CONFIGMAPS = GroupVersionResource("", "v1", "configmaps")
EVENTS = GroupVersionResource("", "v1", "events")
LEASES = GroupVersionResource("coordination.k8s.io", "v1", "leases")
DEPLOYMENTS = GroupVersionResource("apps", "v1", "deployments")
REPLICASETS = GroupVersionResource("apps", "v1", "replicasets")
DAEMONSETS = GroupVersionResource("apps", "v1", "daemonsets")
CONTROLLERREVISIONS = GroupVersionResource("apps", "v1", "controllerrevisions")
ENDPOINTSLICES = GroupVersionResource("discovery.k8s.io", "v1", "endpointslices")


# --- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """A request the server refused: HTTP status, the Status `reason` and `message`.

    `details` and `body` keep the rest of the Status (e.g. an Invalid's causes).
    """

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(status, reason, message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = dict(details or {})
        self.body = dict(body or {})

    @property
    def code(self) -> int:
        return self.status

    def __str__(self) -> str:
        return f"{self.message} ({self.reason}, {self.status})" if self.reason else self.message

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None, http_status: int = 0, text: str = "") -> ApiError:
        """The ApiError subclass a Status body (or a bare HTTP status and text) stands for."""
        status = status or {}
        code = status.get("code") or http_status
        if not isinstance(code, int):
            code = http_status
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or text or f"the server answered HTTP {code}")
        details = status.get("details") if isinstance(status.get("details"), dict) else None
        kind: type[ApiError] = ApiError
        if code == 404:
            kind = NotFound
        elif code == 409:
            kind = AlreadyExists if reason == "AlreadyExists" else Conflict
        elif code == 410:
            kind = Gone
        elif code == 422:
            kind = Invalid
        elif code in (503, 504) or reason in ("ServiceUnavailable", "Timeout", "ServerTimeout"):
            kind = Unavailable
        return kind(code, reason, message, details=details, body=status)


class NotFound(ApiError):
    """404: the object (or its namespace, or the path) does not exist."""


class Conflict(ApiError):
    """409 Conflict: the object changed since it was read (stale resourceVersion or precondition)."""


class AlreadyExists(ApiError):
    """409 AlreadyExists: create of a name that is taken."""


class Gone(ApiError):
    """410 Expired/Gone: the resourceVersion is too old to watch from; list again."""


class Invalid(ApiError):
    """422: the object failed validation; `details["causes"]` says which fields."""


class Unavailable(ApiError):
    """The server is unreachable (status 0) or said 503/504; worth retrying later."""


# --- paths ----------------------------------------------------------------------------------


def api_path(
    group: str,
    version: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The REST path of a collection, an object or a subresource, e.g.
    `/apis/apps/v1/namespaces/default/deployments/web/scale`."""
    parts = ["/api/" + version if not group else f"/apis/{group}/{version}"]
    if namespace:
        parts.append("namespaces/" + quote(namespace, safe=""))
    parts.append(resource)
    if name is not None:
        if not name:
            raise ValueError(f"an empty name does not address a {resource} object")
        parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
    return "/".join(parts)


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _params(**kwargs: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in kwargs.items():
        if v is None or v is False:
            continue
        out[k] = "true" if v is True else str(v)
    return out


# --- connection: TLS, credentials, kubeconfig -------------------------------------------------


class KubeconfigError(ValueError):
    """A kubeconfig that cannot be used: unreadable, no current context, a missing cluster or file."""


@dataclass
class ClientConfig:
    """Where the API server is and how to prove who we are (client-go's rest.Config, in short).

    PEM data, not file names: a kubeconfig's `*-data` fields and files both end up here.
    """

    server: str
    ca_data: bytes | None = None  # trust these CAs (default: the system's)
    cert_data: bytes | None = None  # client certificate (x509 authentication)
    key_data: bytes | None = None
    token: str | None = None  # Authorization: Bearer
    insecure_skip_tls_verify: bool = False

    @classmethod
    def from_files(
        cls,
        server: str,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        token: str | None = None,
    ) -> ClientConfig:
        """A config from PEM files (`--certificate-authority`, `--client-certificate`, `--client-key`)."""
        return cls(
            server,
            ca_data=_read_file(ca_file) if ca_file else None,
            cert_data=_read_file(cert_file) if cert_file else None,
            key_data=_read_file(key_file) if key_file else None,
            token=token,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https server (None for http)."""
        if not self.server.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cadata=self.ca_data.decode() if self.ca_data else None)
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_data or self.key_data:
            if not (self.cert_data and self.key_data):
                raise KubeconfigError("a client certificate needs its key, and a key its certificate")
            _load_cert_chain(ctx, self.cert_data, self.key_data)
        return ctx


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise KubeconfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` reads files only: hand it a private temporary copy, gone right after."""
    with tempfile.TemporaryDirectory(prefix="grove-tls-") as tmp:
        path = os.path.join(tmp, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert.rstrip(b"\n") + b"\n" + key)
        try:
            ctx.load_cert_chain(path)
        except ssl.SSLError as exc:
            raise KubeconfigError(f"the client certificate and key do not load: {exc}") from None


def _named(doc: Mapping[str, Any], section: str, name: str) -> Mapping[str, Any]:
    for entry in doc.get(section) or ():
        if isinstance(entry, Mapping) and entry.get("name") == name:
            value = entry.get(section[:-1])  # clusters -> cluster, users -> user
            return value if isinstance(value, Mapping) else {}
    raise KubeconfigError(f"the kubeconfig has no {section[:-1]} named {name!r}")


def parse_kubeconfig(
    doc: Mapping[str, Any], read_file: Callable[[str], bytes], context: str | None = None
) -> ClientConfig:
    """The ClientConfig of a kubeconfig's context (default: current-context). `read_file` reads a
    file the kubeconfig names (already resolved against the kubeconfig's directory)."""
    if not isinstance(doc, Mapping):
        raise KubeconfigError("the kubeconfig is not a YAML mapping")
    name = context or doc.get("current-context")
    if not name:
        raise KubeconfigError("the kubeconfig has no current-context")
    ctx = _named(doc, "contexts", name)
    cluster = _named(doc, "clusters", str(ctx.get("cluster") or ""))
    user = _named(doc, "users", str(ctx.get("user") or "")) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise KubeconfigError(f"cluster {ctx.get('cluster')!r} has no server")

    def pem(data_key: str, file_key: str, section: Mapping[str, Any]) -> bytes | None:
        if section.get(data_key):
            try:
                return base64.b64decode(section[data_key], validate=True)
            except ValueError:
                raise KubeconfigError(f"{data_key} is not base64") from None
        if section.get(file_key):
            return read_file(str(section[file_key]))
        return None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = read_file(str(user["tokenFile"])).decode().strip()
    return ClientConfig(
        server=str(server).rstrip("/"),
        ca_data=pem("certificate-authority-data", "certificate-authority", cluster),
        cert_data=pem("client-certificate-data", "client-certificate", user),
        key_data=pem("client-key-data", "client-key", user),
        token=str(token) if token else None,
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify")),
    )


def load_kubeconfig(path: str, context: str | None = None) -> ClientConfig:
    """Read a kubeconfig file; files it names are relative to its directory, as kubectl reads them."""
    text = _read_file(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise KubeconfigError(
            f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"
        ) from None
    base = os.path.dirname(os.path.abspath(path))

    def read(name: str) -> bytes:
        return _read_file(os.path.join(base, os.path.expanduser(name)))

    try:
        return parse_kubeconfig(doc or {}, read, context)
    except KubeconfigError as exc:
        raise KubeconfigError(f"{path}: {exc}") from None


# --- the client -----------------------------------------------------------------------------


class ApiClient:
    """One API server, one keep-alive session. Use as `async with ApiClient(url) as client:` or
    call `close()`. A client belongs to the event loop it is first used in.

    `server` is a URL or a ClientConfig (TLS and credentials); `ApiClient.from_kubeconfig(path)`
    reads one from a kubeconfig. A bad certificate or key raises KubeconfigError here.
    """

    def __init__(
        self,
        server: str | ClientConfig,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        user_agent: str = "grove",
    ) -> None:
        config = server if isinstance(server, ClientConfig) else ClientConfig(server)
        self.config = config
        self.server_url = config.server.rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "User-Agent": user_agent, **(headers or {})}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._ssl = config.ssl_context()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str, *, context: str | None = None, **kwargs: Any) -> ApiClient:
        """A client for a kubeconfig's (current) context: server, CA, client certificate, token."""
        return cls(load_kubeconfig(path, context), **kwargs)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=256, ttl_dns_cache=300, ssl=self._ssl if self._ssl is not None else True
                ),
                headers=self._headers,
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    # --- the one request path -----------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        """Send one request; the decoded JSON answer, or an ApiError."""
        data = None
        headers = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            headers = {"Content-Type": content_type}
        url = self.server_url + path
        try:
            async with self._client().request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            raise Unavailable(0, "Timeout", f"{method} {url}: no answer within {self.timeout}s") from None
        except aiohttp.ClientError as exc:
            raise Unavailable(0, "ServiceUnavailable", f"{method} {url}: {exc}") from None
        try:
            decoded = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            decoded = None
        if status >= 400:
            status_body = decoded if isinstance(decoded, dict) and decoded.get("kind") == "Status" else None
            text = raw[:500].decode(errors="replace").strip() if status_body is None else ""
            raise ApiError.from_status(status_body, status, text or f"{method} {url}: HTTP {status}")
        if not isinstance(decoded, dict):
            raise ApiError(status, "InternalError", f"{method} {url}: the answer is not a JSON object")
        return decoded

    # --- reads ----------------------------------------------------------------------------------

    async def get(
        self,
        group_or_path: str,
        version: str | None = None,
        resource: str | None = None,
        name: str | None = None,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Obj:
        """GET one object: `get("", "v1", "pods", "web-1", namespace="default")`, or a raw path:
        `get("/api/v1/namespaces/default/pods/web-1")`."""
        if version is None:
            path = group_or_path
        else:
            if resource is None or name is None:
                raise TypeError("get(group, version, resource, name) needs the resource and the name")
            path = api_path(group_or_path, version, resource, namespace, name, subresource)
        return await self.request("GET", path, params=params)

    async def list(
        self,
        group: str,
        version: str,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Obj:
        """One List (items, metadata.resourceVersion, metadata.continue when `limit` cut it short)."""
        params = _params(
            labelSelector=label_selector,
            fieldSelector=field_selector,
            resourceVersion=resource_version,
            limit=limit,
        )
        if continue_token:
            params["continue"] = continue_token
        return await self.request("GET", api_path(group, version, resource, namespace), params=params)

    async def list_all(
        self,
        group: str,
        version: str,
        resource: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> tuple[list[Obj], str]:
        """Every matching object, following `continue` pages; and the first page's resourceVersion."""
        items: list[Obj] = []
        token: str | None = None
        rv = ""
        while True:
            page = await self.list(
                group,
                version,
                resource,
                namespace,
                label_selector,
                field_selector,
                limit=page_size,
                continue_token=token,
            )
            items.extend(page.get("items") or ())
            meta = _meta(page)
            rv = rv or str(meta.get("resourceVersion") or "")
            token = meta.get("continue") or None
            if not token:
                return items, rv

    # --- writes ---------------------------------------------------------------------------------

    async def create(
        self,
        group: str,
        version: str,
        resource: str,
        obj: Obj,
        *,
        namespace: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """POST a new object (namespace from the argument or the object's metadata)."""
        ns = namespace or _meta(obj).get("namespace")
        params = _params(fieldManager=field_manager, dryRun="All" if dry_run else None)
        return await self.request("POST", api_path(group, version, resource, ns), params=params, body=obj)

    async def update(
        self,
        group: str,
        version: str,
        resource: str,
        obj: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        """PUT the object back; with metadata.resourceVersion set a stale write raises Conflict."""
        meta = _meta(obj)
        ns = namespace or meta.get("namespace")
        path = api_path(group, version, resource, ns, meta.get("name") or "", subresource)
        return await self.request("PUT", path, params=_params(fieldManager=field_manager), body=obj)

    async def update_status(
        self, group: str, version: str, resource: str, obj: Obj, *, namespace: str | None = None
    ) -> Obj:
        """PUT the status subresource (the server keeps everything but .status)."""
        return await self.update(group, version, resource, obj, namespace=namespace, subresource="status")

    async def patch(
        self,
        group: str,
        version: str,
        resource: str,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: str = "merge",
        field_manager: str | None = None,
        force: bool = False,
        subresource: str | None = None,
    ) -> Obj:
        """PATCH an object. patch_type: merge (RFC 7386), strategic, json (RFC 6902, a list of
        operations) or apply (server-side apply; needs field_manager)."""
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(
                f"patch_type must be one of {', '.join(PATCH_CONTENT_TYPES)}, not {patch_type!r}"
            ) from None
        if patch_type == "apply" and not field_manager:
            raise ValueError("a server-side apply patch needs a field_manager")
        params = _params(fieldManager=field_manager, force=force if patch_type == "apply" else None)
        path = api_path(group, version, resource, namespace, name, subresource)
        return await self.request("PATCH", path, params=params, body=patch, content_type=content_type)

    async def delete(
        self,
        group: str,
        version: str,
        resource: str,
        name: str,
        *,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Obj:
        """DELETE an object; the answer is the object (when deletion is graceful or held by
        finalizers) or a Success Status. preconditions: {"uid": ..., "resourceVersion": ...}."""
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = dict(preconditions)
        path = api_path(group, version, resource, namespace, name)
        return await self.request("DELETE", path, body=options)

    async def bind(self, namespace: str, name: str, node: str, *, uid: str | None = None) -> Obj:
        """Bind a pod to a node (POST pods/{name}/binding), as the scheduler does."""
        meta: Obj = {"name": name, "namespace": namespace}
        if uid:
            meta["uid"] = uid
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        return await self.request(
            "POST", api_path("", "v1", "pods", namespace, name, "binding"), body=binding
        )

    async def create_event(
        self,
        involved_object: Obj,
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        component: str = "grove",
        host: str | None = None,
        action: str | None = None,
    ) -> Obj:
        """Record a core/v1 Event about an object (the server aggregates repeats into a count).

        Events of cluster-scoped objects (nodes) go to the `default` namespace, as kubectl expects.
        """
        meta = _meta(involved_object)
        api_version = involved_object.get("apiVersion", "v1")
        ref: Obj = {"apiVersion": api_version, "kind": involved_object.get("kind", "")}
        for field in ("namespace", "name", "uid", "resourceVersion"):
            if meta.get(field):
                ref[field] = meta[field]
        namespace = meta.get("namespace") or "default"
        now = _now_rfc3339()
        source: Obj = {"component": component}
        if host:
            source["host"] = host
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name', 'event')}.{time.time_ns():x}", "namespace": namespace},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "type": type,
            "source": source,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        if action:
            event["action"] = action
        return await self.request("POST", api_path("", "v1", "events", namespace), body=event)

    # --- watch ----------------------------------------------------------------------------------

    async def watch(
        self,
        group: str,
        version: str,
        resource: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Stream (type, object) of ADDED/MODIFIED/DELETED/BOOKMARK events after `resource_version`.

        Ends when the server ends the watch (timeoutSeconds). An ERROR event or an HTTP error
        raises the ApiError it carries — `Gone` when the version is too old (list again); a
        dropped connection raises `Unavailable`.
        """
        params = _params(
            watch="true",
            resourceVersion=resource_version,
            labelSelector=label_selector,
            fieldSelector=field_selector,
            timeoutSeconds=timeout_seconds,
            allowWatchBookmarks=allow_bookmarks or None,
        )
        url = self.server_url + api_path(group, version, resource, namespace)
        # No read deadline: a quiet watch is a healthy one. A server that dies closes the socket.
        total = timeout_seconds + 30 if timeout_seconds else None
        try:
            async with self._client().get(
                url, params=params, timeout=aiohttp.ClientTimeout(total=total, sock_connect=self.timeout)
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    try:
                        body = orjson.loads(raw) if raw else None
                    except orjson.JSONDecodeError:
                        body = None
                    status_body = body if isinstance(body, dict) and body.get("kind") == "Status" else None
                    raise ApiError.from_status(status_body, resp.status, raw[:500].decode(errors="replace"))
                buf = b""
                async for chunk in resp.content.iter_any():
                    buf += chunk
                    if b"\n" not in chunk:
                        continue
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        event = _decode_event(line)
                        if event is not None:
                            yield event
                event = _decode_event(buf)
                if event is not None:
                    yield event
        except TimeoutError:
            raise Unavailable(0, "Timeout", f"watch {url}: timed out") from None
        except aiohttp.ClientError as exc:
            raise Unavailable(0, "ServiceUnavailable", f"watch {url}: {exc}") from None


def _decode_event(line: bytes) -> tuple[str, Obj] | None:
    line = line.strip()
    if not line:
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ApiError(
            0, "InternalError", f"the watch sent a line that is not JSON: {line[:200]!r}"
        ) from None
    kind = event.get("type") if isinstance(event, dict) else None
    obj = event.get("object") if isinstance(event, dict) else None
    if not isinstance(kind, str) or not isinstance(obj, dict):
        raise ApiError(0, "InternalError", f"the watch sent an event without type/object: {line[:200]!r}")
    if kind == "ERROR":
        raise ApiError.from_status(obj, int(obj.get("code") or 500))
    return kind, obj
