"""The API server process: aiohttp application, routing of each request to its verb, and errors as
`kind: Status`.

Non-resource endpoints (`/healthz`, `/readyz`, `/livez`, `/version`, `/metrics`, discovery and
`/openapi/*`) are answered here; everything under `/api` and `/apis` is parsed into a RequestInfo
and handed to the verb handlers (handlers.py) or the watch streamer (watch.py). Any failure is an
ApiError turned into a Status body; an unexpected exception is logged with its traceback and the
client gets a 500 Status without one. HTTPS and authentication (authn.py) are a middleware and
the site's SSL context; authorization is allow-all.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import platform
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from kvstore.client import KVClient
from orchestrator import openapi, resources
from orchestrator.resources import DEFAULT_REGISTRY, Registry

from . import authn, codec, errors
from .codec import Accept, parse_accept
from .config import GIT_VERSION, ServerConfig
from .handlers import (
    Api,
    check_type,
    delete_options,
    list_object,
    respond,
    shape_list,
    shape_object,
    write_options,
)
from .metricsapi import PATHS as METRICS_PATHS
from .metricsapi import MetricsApi, extend_discovery, is_metrics_path
from .namespaces import NamespaceLifecycle
from .podproxy import PodProxy
from .routing import RequestInfo, is_true, parse_request
from .storage import Storage
from .watch import serve_watch
from .watchcache import WatchCaches

log = logging.getLogger("grove.apiserver")

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request_total",
            "Requests by verb, resource, subresource and HTTP code.",
            ("verb", "group", "resource", "subresource", "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency by verb, resource and subresource (watches excluded).",
            ("verb", "group", "resource", "subresource"),
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.watches = Gauge(
            "apiserver_longrunning_requests",
            "Open watch requests by resource.",
            ("verb", "group", "resource"),
            registry=self.registry,
        )
        # The labelled children, found once: `labels()` locks and looks up on every call.
        self._counted: dict[tuple[str, ...], Any] = {}
        self._timed: dict[tuple[str, ...], Any] = {}

    def count(self, labels: tuple[str, ...]) -> None:
        child = self._counted.get(labels)
        if child is None:
            child = self._counted[labels] = self.requests.labels(*labels)
        child.inc()

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        child = self._timed.get(labels)
        if child is None:
            child = self._timed[labels] = self.latency.labels(*labels)
        child.observe(seconds)


def version_info() -> dict[str, str]:
    """A Kubernetes version.Info (every field the official clients expect)."""
    major, minor = GIT_VERSION.lstrip("v").split(".")[:2]
    return {
        "major": major,
        "minor": minor,
        "gitVersion": GIT_VERSION,
        "gitCommit": "grove",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{sys.platform}/{platform.machine().replace('x86_64', 'amd64').replace('aarch64', 'arm64')}",
    }


class ApiServer:
    """Everything one API server process holds: store client, registry, handlers, caches, metrics."""

    def __init__(self, config: ServerConfig, registry: Registry = DEFAULT_REGISTRY) -> None:
        self.config = config
        self.registry = registry
        self.kv = KVClient(
            config.etcd_servers,
            timeout=config.etcd_timeout,
            retry_deadline=config.etcd_retry_deadline,
            ca_file=config.etcd_cafile,
            cert_file=config.etcd_certfile,
            key_file=config.etcd_keyfile,
        )
        self.storage = Storage(self.kv, quorum_reads=config.quorum_reads)
        self.api = Api(self.storage, config, registry)
        self.caches = WatchCaches(self.storage, config.watch_cache_size)
        self.api.caches = self.caches
        self.pod_proxy = PodProxy(self.storage, registry)
        self.metrics_api = MetricsApi(self.storage, registry)
        self.metrics = Metrics()
        self.authenticator = authn.load_authenticator(config)
        self._discovery: dict[tuple[str, str], tuple[bytes, str]] = {}
        self._bootstrapped = False
        self._bootstrap_task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.api.namespaces.start()
        self._bootstrap_task = asyncio.create_task(self._bootstrap(), name="bootstrap")

    async def stop(self) -> None:
        if self._bootstrap_task is not None:
            self._bootstrap_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._bootstrap_task
        await self.caches.stop()
        await self.pod_proxy.close()
        await self.metrics_api.close()
        await self.api.namespaces.stop()
        await self.kv.close()

    async def _bootstrap(self) -> None:
        """System namespaces and the `kubernetes` service, as kube-apiserver's controllers create them."""
        delay = 0.1
        while True:
            try:
                await self._ensure_system_objects()
                self._bootstrapped = True
                return
            except errors.ApiError as exc:
                log.warning("bootstrap: %s; retrying", exc.message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _ensure_system_objects(self) -> None:
        from .handlers import WriteOptions

        ns_res = self.registry.get("", "v1", "namespaces")
        assert ns_res is not None
        for name in NamespaceLifecycle.SYSTEM:
            if await self.storage.try_get(ns_res, None, name) is None:
                with contextlib.suppress(errors.ApiError):
                    await self.api.create(
                        ns_res,
                        None,
                        {"metadata": {"name": name}},
                        WriteOptions(field_manager="kube-apiserver"),
                    )
        svc_res = self.registry.get("", "v1", "services")
        ep_res = self.registry.get("", "v1", "endpoints")
        assert svc_res is not None and ep_res is not None
        if await self.storage.try_get(svc_res, "default", "kubernetes") is None:
            service = {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": self.api.services.ips.first(),
                    "ports": [
                        {"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.config.port}
                    ],
                    "sessionAffinity": "None",
                },
            }
            with contextlib.suppress(errors.ApiError):
                await self.api.create(
                    svc_res, "default", service, WriteOptions(field_manager="kube-apiserver")
                )
        address = self.config.advertise_address or self.config.bind_address
        if address in ("0.0.0.0", "", "::"):
            address = "127.0.0.1"
        endpoints = {
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
            },
            "subsets": [
                {
                    "addresses": [{"ip": address}],
                    "ports": [{"name": "https", "port": self.config.port, "protocol": "TCP"}],
                }
            ],
        }
        await self._keep(ep_res, endpoints, lambda cur: cur.get("subsets") == endpoints["subsets"])
        slice_res = self.registry.get("discovery.k8s.io", "v1", "endpointslices")
        if slice_res is not None:  # kubectl describe svc reads a Service's endpoints from its slices
            port = [{"name": "https", "port": self.config.port, "protocol": "TCP"}]
            endpoint_slice = {
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes"},
                },
                "addressType": "IPv6" if ":" in address else "IPv4",
                "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
                "ports": port,
            }
            await self._keep(
                slice_res,
                endpoint_slice,
                lambda cur: cur.get("endpoints") == endpoint_slice["endpoints"] and cur.get("ports") == port,
            )

    async def _keep(self, res: Any, body: dict[str, Any], same: Callable[[dict[str, Any]], bool]) -> None:
        """Create default/<name> of `res`, or replace it when `same` says it differs."""
        from .handlers import WriteOptions

        meta = body["metadata"]
        options = WriteOptions(field_manager="kube-apiserver")
        current = await self.storage.try_get(res, meta["namespace"], meta["name"])
        with contextlib.suppress(errors.ApiError):
            if current is None:
                await self.api.create(res, meta["namespace"], body, options)
            elif not same(current):
                await self.api.update(res, meta["namespace"], meta["name"], body, options)

    # --- the application ------------------------------------------------------------------

    def build_app(self) -> web.Application:
        middlewares = [self._errors_middleware, *self.authenticator.middlewares()]
        app = web.Application(middlewares=middlewares, client_max_size=3 * 1024 * 1024)
        r = app.router
        for path in ("/healthz", "/livez", "/readyz"):
            r.add_get(path, self.health)
            r.add_get(path + "/{check}", self.health)
        r.add_get("/version", self.version)
        r.add_get("/version/", self.version)
        r.add_get("/metrics", self.metrics_handler)
        r.add_get("/openapi/v2", self.openapi_v2)
        r.add_get("/openapi/v3", self.openapi_v3_index)
        r.add_get("/openapi/v3/", self.openapi_v3_index)
        r.add_get("/openapi/v3/{path:.+}", self.openapi_v3)
        r.add_get("/", self.root)
        r.add_post(authn.SELF_SUBJECT_REVIEW_PATH, authn.self_subject_review)
        r.add_route("*", "/api", self.resource)
        r.add_route("*", "/api/{tail:.*}", self.resource)
        r.add_route("*", "/apis", self.resource)
        r.add_route("*", "/apis/{tail:.*}", self.resource)
        r.add_route("*", "/{tail:.*}", self.not_found)

        async def on_startup(_app: web.Application) -> None:
            await self.start()

        async def on_cleanup(_app: web.Application) -> None:
            await self.stop()

        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
        return app

    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApiError as exc:
            return self._error_response(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reasons = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge"}
            err = errors.ApiError(
                exc.status, reasons.get(exc.status, "BadRequest"), exc.reason or exc.text or ""
            )
            return self._error_response(request, err)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path_qs)
            return self._error_response(
                request,
                errors.internal("an internal error occurred while serving the request; see the server log"),
            )

    def _error_response(self, request: web.Request, err: errors.ApiError) -> web.Response:
        try:
            accept = parse_accept(request.headers.get("Accept"), allow_as=False)
        except errors.ApiError:
            accept = Accept()
        resp = web.Response(body=codec.encode_error(err, accept), status=err.code)
        resp.headers["Content-Type"] = codec.YAML if accept.format == "yaml" else codec.JSON
        for k, v in err.headers.items():
            resp.headers[k] = v
        return resp

    async def not_found(self, request: web.Request) -> web.Response:
        raise errors.path_not_found()

    # --- non-resource endpoints -------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        paths = [
            "/api",
            "/api/v1",
            "/apis",
            "/healthz",
            "/livez",
            "/metrics",
            "/openapi/v2",
            "/openapi/v3",
            "/readyz",
            "/version",
        ]
        for group, version in self.registry.group_versions():
            if group:
                paths += [f"/apis/{group}", f"/apis/{group}/{version}"]
        paths += METRICS_PATHS
        return web.Response(body=orjson.dumps({"paths": sorted(set(paths))}), content_type="application/json")

    async def health(self, request: web.Request) -> web.Response:
        kind = request.path.strip("/").split("/")[0]
        only = request.match_info.get("check")
        checks: list[tuple[str, bool]] = [("ping", True)]
        if kind != "livez":
            checks.append(("etcd", await self.kv.health()))
        if kind == "readyz":
            checks.append(("poststarthook/bootstrap-system-objects", self._bootstrapped))
        if only is not None:
            checks = [c for c in checks if c[0] == only]
            if not checks:
                raise errors.path_not_found()
        ok = all(passed for _, passed in checks)
        if "verbose" in request.query or not ok:
            lines = [
                f"[{'+' if passed else '-'}]{name} {'ok' if passed else 'failed: reason withheld'}"
                for name, passed in checks
            ]
            lines.append(f"{kind} check {'passed' if ok else 'failed'}")
            text = "\n".join(lines) + "\n"
        else:
            text = "ok"
        return web.Response(text=text, status=200 if ok else 500, content_type="text/plain")

    async def version(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(version_info()), content_type="application/json")

    async def metrics_handler(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.metrics.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def openapi_v2(self, request: web.Request) -> web.Response:
        if openapi.wants_openapi_v2_protobuf(request.headers.get("Accept")):
            resp = web.Response(body=openapi.openapi_v2_protobuf(self.registry))
            resp.headers["Content-Type"] = openapi.OPENAPI_V2_PROTOBUF_RESPONSE
            return resp
        return web.Response(body=openapi.openapi_v2_bytes(self.registry), content_type="application/json")

    async def openapi_v3_index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps(openapi.openapi_v3_index(self.registry)), content_type="application/json"
        )

    async def openapi_v3(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        data = openapi.openapi_v3_bytes(path, self.registry)
        if data is None:
            raise errors.path_not_found()
        resp = web.Response(body=data, content_type="application/json")
        digest = openapi.openapi_v3_hash(path, self.registry)
        resp.headers["ETag"] = f'"{digest}"'
        if request.query.get("hash") == digest:
            resp.headers["Cache-Control"] = "public, immutable"
        else:
            resp.headers["Cache-Control"] = "no-cache, private"
        return resp

    def discovery(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed()
        accept_header = request.headers.get("Accept") or ""
        key = (request.path.rstrip("/"), accept_header)
        cached = self._discovery.get(key)
        if cached is None:
            found = resources.discovery_document(self.registry, request.path, accept_header, "")
            if found is None:
                raise errors.path_not_found()
            doc, content_type = found
            doc = extend_discovery(request.path, doc)  # the metrics.k8s.io group
            cached = (orjson.dumps(doc), content_type)
            if len(self._discovery) < 256:
                self._discovery[key] = cached
        body, content_type = cached
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        resp.headers["Vary"] = "Accept"
        return resp

    # --- resources ------------------------------------------------------------------------

    async def resource(self, request: web.Request) -> web.StreamResponse:
        if is_metrics_path(request.path):
            return await self.metrics_api.serve(request)
        info = parse_request(self.registry, request.method, request.path, request.query.get("watch"))
        if info is None:
            return self.discovery(request)
        labels = (info.metric_verb, info.res.group, info.res.resource, info.subresource or "")
        started = time.perf_counter()
        code = 500
        try:
            if info.verb == "watch":
                gauge = self.metrics.watches.labels(labels[0], labels[1], labels[2])
                gauge.inc()
                try:
                    resp = await self._dispatch(request, info)
                finally:
                    gauge.dec()
            else:
                resp = await self._dispatch(request, info)
            code = resp.status
            return resp
        except errors.ApiError as exc:
            code = exc.code
            raise
        finally:
            self.metrics.count((*labels, str(code)))
            if info.verb != "watch":
                self.metrics.observe(labels, time.perf_counter() - started)

    async def _dispatch(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        api = self.api
        query = request.query
        verb = info.verb
        res = info.res
        sub = info.subresource
        if verb == "watch":
            accept = parse_accept(request.headers.get("Accept"))
            return await serve_watch(request, api, self.caches, info, accept)
        if sub in ("log", "exec"):
            return await self._pod_stream(request, info)
        accept = parse_accept(request.headers.get("Accept"), allow_as=sub is None and verb in ("get", "list"))
        if verb == "get":
            if sub == "scale":
                return respond(await api.get_scale(info), accept)
            return respond(shape_object(res, await api.get(info), accept, query), accept)
        if verb == "list":
            items, rv, token, remaining = await api.list(info, query)
            return respond(shape_list(res, items, rv, token, remaining, accept, query), accept)
        if verb == "delete":
            opts = delete_options(query, await request.read(), request.headers.get("Content-Type"))
            body, status = await api.delete(res, info.namespace, info.name, opts)  # type: ignore[arg-type]
            return respond(body, accept, status)
        if verb == "deletecollection":
            opts = delete_options(query, await request.read(), request.headers.get("Content-Type"))
            items = await api.delete_collection(info, query, opts)
            return respond(list_object(res, items, "", None, None), accept)
        raw = await request.read()
        content_type = request.headers.get("Content-Type")
        wopts = write_options(query, verb, request.headers.get("User-Agent", ""))
        if verb == "create":
            if sub == "binding":
                binding = codec.decode_object(raw, content_type)
                check_type(res, binding, expect_kind="Binding")
                return respond(await api.bind(info, binding, wopts), accept, 201)
            obj = codec.decode_object(raw, content_type)
            api.check_body_fields(res, raw, content_type, obj, wopts)
            created = await api.create(res, info.namespace, obj, wopts)
            return respond(created, accept, 201, wopts.warnings)
        name = info.name
        assert name is not None
        if verb == "update":
            body = codec.decode_object(raw, content_type)
            if sub == "scale":
                check_type(res, body, expect_kind="Scale")
                scale = await api.update_scale(info, lambda _current: body, wopts)
                return respond(scale, accept, 200)
            api.check_body_fields(res, raw, content_type, body, wopts)
            if sub is None:
                obj, created = await api.update(res, info.namespace, name, body, wopts)
                return respond(obj, accept, 201 if created else 200, wopts.warnings)
            check_type(res, body)
            precondition = body["metadata"].get("resourceVersion") or ""

            def transform(current: dict[str, Any]) -> dict[str, Any]:
                if precondition and precondition != current["metadata"].get("resourceVersion"):
                    raise errors.stale_conflict(res, name)
                return body

            obj, _ = await api.guaranteed_update(
                res, info.namespace, name, transform, wopts, subresource=sub, retry=lambda: not precondition
            )
            return respond(obj, accept, 200, wopts.warnings)
        if verb == "patch":
            patch_type, patch_body = codec.decode_patch(raw, content_type)
            force = is_true(query.get("force"))
            if patch_type == codec.APPLY_PATCH and not query.get("fieldManager"):
                raise errors.bad_request("fieldManager: Required value: is required for apply patch")
            if sub == "scale":
                if patch_type == codec.APPLY_PATCH:
                    raise errors.unsupported_media_type(
                        patch_type, [codec.JSON_PATCH, codec.MERGE_PATCH, codec.STRATEGIC_PATCH]
                    )
                scale = await api.update_scale(
                    info,
                    lambda current: api._apply_patch(res, current, patch_type, patch_body, "Scale"),
                    wopts,
                )
                return respond(scale, accept, 200)
            obj, created = await api.patch(info, patch_type, patch_body, wopts, force)
            return respond(obj, accept, 201 if created else 200, wopts.warnings)
        raise errors.method_not_allowed()

    async def _pod_stream(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        """pods/log and pods/exec: forwarded to the pod's node agent (podproxy.py)."""
        if info.subresource == "log":
            return await self.pod_proxy.log(request, info)
        return await self.pod_proxy.exec(request, info)


# --- running it --------------------------------------------------------------------------------


async def serve(config: ServerConfig, ready: asyncio.Event | None = None) -> None:
    """Run an API server until SIGTERM/SIGINT."""
    server = ApiServer(config)
    app = server.build_app()
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    ssl_context = authn.server_ssl_context(config)
    site = web.TCPSite(
        runner, config.bind_address, config.port, reuse_address=True, backlog=1024, ssl_context=ssl_context
    )
    await site.start()
    log.info(
        "grove apiserver serving on %s://%s:%d (store: %s)",
        "https" if ssl_context else "http",
        config.bind_address,
        config.port,
        ",".join(config.etcd_servers),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


# Young-generation size before a collection, and how many young (then middle) collections run
# before an older one. The defaults (700, 10, 10) made the collector walk the watch cache's
# history over and over: a third of the CPU of a pod write went to it.
GC_THRESHOLDS = (20_000, 20, 100)


def tune_gc() -> None:
    """Load what every request uses, move it out of the collector's sight, and collect less often.

    The OpenAPI schemas, the registry and the imported modules live as long as the process;
    `gc.freeze()` keeps them out of every later collection. Request garbage is acyclic almost
    always (reference counting frees it), so rarer young collections lose nothing.
    """
    openapi.definitions()
    openapi.schema_for(resources.DEFAULT_REGISTRY.get("", "v1", "pods"))  # type: ignore[arg-type]
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(config: ServerConfig) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        pass
    tune_gc()
    asyncio.run(serve(config))
