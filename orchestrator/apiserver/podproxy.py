"""pods/log and pods/exec: forwarded to the node agent that runs the pod, as kube-apiserver does it.

The API server holds no container output and runs no processes; the node agent does, on its own
HTTP endpoint (`status.daemonEndpoints.kubeletEndpoint.Port` of the pod's Node, at the node's
InternalIP). This module checks what the API server can check itself — the pod exists and has a
node, the container is one of the pod's, the options make sense — with kube-apiserver's
messages, then passes the request on:

- `log` becomes `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=...` and the
  agent's answer is streamed back as it comes (`kubectl logs -f` ends when the client hangs up);
- `exec` becomes `/exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`.
  kubectl 1.32 asks for a WebSocket upgrade (`v5.channel.k8s.io`) first: the upgrade is made to
  the agent with the protocols the client offered, then to the client with the one the agent
  chose, and messages are relayed both ways until either side closes. A refused upgrade or an
  SPDY request (kubectl's fallback) is answered with the agent's own error when it has one.

Errors of the agent are `kind: Status` bodies and pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web
from multidict import MultiDict

from orchestrator.resources import Registry

from . import errors
from .routing import RequestInfo, is_true
from .storage import Storage

log = logging.getLogger("grove.apiserver")

DEFAULT_KUBELET_PORT = 10250
# kube-apiserver's default --kubelet-preferred-address-types, InternalIP first as grove's agents
# report it.
ADDRESS_TYPES = ("InternalIP", "Hostname", "InternalDNS", "ExternalIP", "ExternalDNS")
LOG_FLAGS = ("follow", "previous", "timestamps")
LOG_NUMBERS = ("tailLines", "sinceSeconds", "limitBytes")
EXEC_FLAGS = ("stdin", "stdout", "stderr", "tty")
STREAM_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io")


@dataclass(frozen=True)
class NodeEndpoint:
    """Where a node's agent answers."""

    node: str
    host: str
    port: int

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"


def node_endpoint(node: dict[str, Any]) -> NodeEndpoint:
    """The agent endpoint a Node object advertises; ApiError when it advertises none."""
    name = (node.get("metadata") or {}).get("name", "")
    status = node.get("status") or {}
    port = (((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")) or 0
    if not isinstance(port, int) or not 0 <= port < 65536:
        raise errors.internal(f"node {name} advertises an invalid agent port {port!r}")
    addresses = [a for a in status.get("addresses") or [] if isinstance(a, dict) and a.get("address")]
    for kind in ADDRESS_TYPES:
        for address in addresses:
            if address.get("type") == kind:
                return NodeEndpoint(name, str(address["address"]), port or DEFAULT_KUBELET_PORT)
    raise errors.bad_request(f"node {name} has no valid hostname and/or IP address")


def choose_container(pod: dict[str, Any], requested: str) -> str:
    """The container a log/exec request means (kube's rules for an omitted or unknown name)."""
    name = pod["metadata"].get("name", "")
    spec = pod.get("spec") or {}
    containers = [str(c.get("name")) for c in spec.get("containers") or [] if isinstance(c, dict)]
    inits = [str(c.get("name")) for c in spec.get("initContainers") or [] if isinstance(c, dict)]
    ephemeral = [str(c.get("name")) for c in spec.get("ephemeralContainers") or [] if isinstance(c, dict)]
    if not requested:
        if len(containers) == 1:
            return containers[0]
        message = (
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        )
        if inits:
            message += f" or one of the init containers: [{' '.join(inits)}]"
        if ephemeral:
            message += f" or one of the ephemeral containers: [{' '.join(ephemeral)}]"
        raise errors.bad_request(message)
    if requested not in containers + inits + ephemeral:
        raise errors.bad_request(f"container {requested} is not valid for pod {name}")
    return requested


def _invalid_options(kind: str, name: str, field: str, value: Any, why: str) -> errors.ApiError:
    cause = {"reason": "FieldValueInvalid", "message": f"Invalid value: {value}: {why}", "field": field}
    return errors.ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {field}: Invalid value: {value}: {why}',
        {"name": name, "kind": kind, "causes": [cause]},
    )


def log_query(query: Any, name: str) -> MultiDict[str]:
    """The agent's query for a pods/log request, checked as kube checks PodLogOptions."""
    out: MultiDict[str] = MultiDict()
    for flag in LOG_FLAGS:
        if flag in query:
            out[flag] = "true" if is_true(query.get(flag)) else "false"
    numbers: dict[str, int] = {}
    for field in LOG_NUMBERS:
        raw = query.get(field)
        if raw in (None, ""):
            continue
        try:
            numbers[field] = int(raw)
        except ValueError:
            raise errors.bad_request(f'{field}: Invalid value: "{raw}": must be an integer') from None
    if numbers.get("tailLines", 0) < 0:
        raise _invalid_options(
            "PodLogOptions", name, "tailLines", numbers["tailLines"], "must be greater than or equal to 0"
        )
    if numbers.get("sinceSeconds", 1) < 1:
        raise _invalid_options(
            "PodLogOptions", name, "sinceSeconds", numbers["sinceSeconds"], "must be greater than 0"
        )
    if numbers.get("limitBytes", 1) < 1:
        raise _invalid_options(
            "PodLogOptions", name, "limitBytes", numbers["limitBytes"], "must be greater than 0"
        )
    since_time = query.get("sinceTime") or ""
    if since_time and "sinceSeconds" in numbers:
        raise errors.bad_request("at most one of `sinceTime` or `sinceSeconds` may be specified")
    for field, value in numbers.items():
        out[field] = str(value)
    if since_time:
        out["sinceTime"] = since_time
    return out


def exec_query(query: Any) -> MultiDict[str]:
    """The agent's query for a pods/exec request (kube's PodExecOptions checks)."""
    commands = query.getall("command", [])
    if not commands:
        raise errors.bad_request("you must specify at least one command for the container")
    out: MultiDict[str] = MultiDict(("command", c) for c in commands)
    flags = {flag: is_true(query.get(flag)) for flag in EXEC_FLAGS}
    if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    for flag, value in flags.items():
        out[flag] = "true" if value else "false"
    return out


class PodProxy:
    """Forwards pods/log and pods/exec of one API server to the node agents."""

    def __init__(self, storage: Storage, registry: Registry, connect_timeout: float = 5.0) -> None:
        self.storage = storage
        self.pods = registry.get("", "v1", "pods")
        self.nodes = registry.get("", "v1", "nodes")
        self.connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No total timeout: a followed log or an exec session lasts as long as the client wants.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout)
            self._session = aiohttp.ClientSession(
                timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _locate(self, info: RequestInfo, requested: str) -> tuple[dict[str, Any], str, NodeEndpoint]:
        assert self.pods is not None and self.nodes is not None and info.name is not None
        pod = await self.storage.get(self.pods, info.namespace, info.name)
        container = choose_container(pod, requested)
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            raise errors.bad_request(f"pod {info.name} does not have a host assigned")
        node = await self.storage.try_get(self.nodes, None, node_name)
        if node is None:
            raise errors.bad_request(f'node "{node_name}" of pod {info.name} does not exist')
        return pod, container, node_endpoint(node)

    def _unreachable(self, endpoint: NodeEndpoint, exc: BaseException) -> errors.ApiError:
        return errors.unavailable(
            f"cannot reach the node agent of {endpoint.node} at {endpoint.host}:{endpoint.port}: "
            f"{exc or type(exc).__name__}"
        )

    # --- logs -------------------------------------------------------------------------------

    async def log(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed()
        query = request.query
        params = log_query(query, info.name or "")
        _pod, container, endpoint = await self._locate(info, query.get("container") or "")
        url = endpoint.url(f"/containerLogs/{info.namespace}/{info.name}/{container}")
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        resp.charset = "utf-8"
        try:
            async with self._client().get(url, params=params) as upstream:
                if upstream.status >= 300:
                    return await _passthrough(upstream)
                await resp.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            if resp.prepared:
                return resp  # the agent went away mid-stream: the log just ends
            raise self._unreachable(endpoint, exc) from None
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    # --- exec -------------------------------------------------------------------------------

    async def exec(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        query = request.query
        params = exec_query(query)
        pod, container, endpoint = await self._locate(info, query.get("container") or "")
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise errors.bad_request(
                f"cannot exec into a container in a completed pod; current phase is {phase}"
            )
        url = endpoint.url(f"/exec/{info.namespace}/{info.name}/{container}")
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade != "websocket":
            # kubectl falls back to SPDY when the WebSocket upgrade failed: tell it why that was.
            refusal = await self._refusal(url, params, endpoint)
            if refusal is not None:
                return refusal
            if upgrade.startswith("spdy"):
                raise errors.bad_request(
                    "grove forwards exec over WebSocket only (v5.channel.k8s.io, as kubectl 1.30+ speaks); "
                    "SPDY is not supported"
                )
            raise errors.bad_request("Upgrade request required: pods/exec is a WebSocket (v5.channel.k8s.io)")
        offered = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ] or list(STREAM_PROTOCOLS)
        try:
            upstream = await self._client().ws_connect(
                url, params=params, protocols=offered, autoping=True, max_msg_size=0, compress=0
            )
        except aiohttp.WSServerHandshakeError as exc:
            refusal = await self._refusal(url, params, endpoint)
            if refusal is not None:
                return refusal
            raise errors.bad_request(f"the node agent refused the exec session: HTTP {exc.status}") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise self._unreachable(endpoint, exc) from None
        try:
            client = web.WebSocketResponse(
                protocols=(upstream.protocol,) if upstream.protocol else (),
                autoping=True,
                max_msg_size=0,
                compress=False,
            )
            await client.prepare(request)
            await _relay(client, upstream)
        finally:
            await upstream.close()
        return client

    async def _refusal(self, url: str, params: MultiDict[str], endpoint: NodeEndpoint) -> web.Response | None:
        """The agent's error for this exec, found by asking without a real handshake (the agent
        checks the container before the handshake, and runs nothing without one); None when it
        has no objection."""
        headers = {"Upgrade": "websocket", "Connection": "Upgrade"}
        try:
            async with self._client().get(url, params=params, headers=headers) as resp:
                if resp.status < 400:
                    return None
                body = await resp.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise self._unreachable(endpoint, exc) from None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or doc.get("kind") != "Status":
            return None
        message = str(doc.get("message") or "")
        if "subprotocols" in message or "Upgrade request required" in message:
            return None  # only the missing handshake was refused: the container is fine
        return web.Response(body=body, status=resp.status, content_type="application/json")


async def _passthrough(upstream: aiohttp.ClientResponse) -> web.Response:
    body = await upstream.read()
    resp = web.Response(body=body, status=upstream.status)
    resp.headers["Content-Type"] = upstream.headers.get("Content-Type", "application/json")
    return resp


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Copy messages both ways until one side closes; then close the other with its code."""

    async def pump(source: Any, sink: Any) -> None:
        async for msg in source:
            if msg.type == WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                break

    down = asyncio.create_task(pump(upstream, client), name="exec-down")
    up = asyncio.create_task(pump(client, upstream), name="exec-up")
    try:
        done, _pending = await asyncio.wait((down, up), return_when=asyncio.FIRST_COMPLETED)
        if down in done:
            # The agent ended the session (after its status message): let the client read it all.
            await client.close(code=upstream.close_code or aiohttp.WSCloseCode.OK)
        else:
            await upstream.close(code=client.close_code or aiohttp.WSCloseCode.OK)
    finally:
        for task in (down, up):
            task.cancel()
        for task in (down, up):
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # noqa: BLE001 - a side hung up: the session is over either way
                log.debug("exec relay: %s", exc)
