"""Informers and the API client.

Two layers. A tiny in-process API server (aiohttp, below) speaks just enough list/watch to drive the
protocol's edge cases on demand: 410 Gone as an ERROR event and as an HTTP status, a watch cut in
the middle, bookmarks, paged lists. Then the real thing: grove's API server over a three-member
store, as separate processes, with the informer watching through an API server restart and a
store leader kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from kvstore.localcluster import free_port
from orchestrator.apiclient import (
    AlreadyExists,
    ApiClient,
    ApiError,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    Unavailable,
    api_path,
)
from orchestrator.watchers import Controller, Informer, InformerFactory, index_by_node
from tests.apiserver_fixture import ApiServerProcess, start_apiserver, stop_apiserver

DEADLINE = 20.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def until(cond, what: str, timeout: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def pod(name: str, rv: int = 0, node: str | None = None, ns: str = "default", **labels: str) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if rv:
        meta["resourceVersion"] = str(rv)
    if labels:
        meta["labels"] = labels
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


class Recorder:
    """Handlers that log what an informer told them."""

    def __init__(self, informer: Informer) -> None:
        self.events: list[tuple[str, str, str]] = []  # (type, key, resourceVersion)
        informer.add_handler(self.on_add, self.on_update, self.on_delete)

    @staticmethod
    def _key(obj: dict) -> str:
        return f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"

    def on_add(self, obj: dict) -> None:
        self.events.append(("add", self._key(obj), obj["metadata"]["resourceVersion"]))

    def on_update(self, old: dict, new: dict) -> None:
        self.events.append(("update", self._key(new), new["metadata"]["resourceVersion"]))

    def on_delete(self, obj: dict) -> None:
        self.events.append(("delete", self._key(obj), obj["metadata"]["resourceVersion"]))

    def of(self, kind: str) -> list[str]:
        return sorted(k for t, k, _ in self.events if t == kind)


# --- a fake API server for protocol edge cases ------------------------------------------------


class FakeApiServer:
    """Pods in one namespace, a change log with a movable start (older versions are 410 Gone),
    and knobs to cut watches and send bookmarks."""

    def __init__(self, gone_as: str = "event", page_size_cap: int | None = None) -> None:
        self.objects: dict[str, dict] = {}
        self.rv = 100
        self.log: list[tuple[int, str, dict]] = []
        self.oldest = 0  # watches from before this version are Gone
        self.gone_as = gone_as
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.watch_responses: set[web.StreamResponse] = set()
        self.changed = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.url = ""

    # state changes
    async def put(self, name: str, **labels: str) -> dict:
        self.rv += 1
        obj = pod(name, self.rv, **labels)
        kind = "MODIFIED" if name in self.objects else "ADDED"
        self.objects[name] = obj
        await self._record(kind, obj)
        return obj

    async def remove(self, name: str) -> None:
        self.rv += 1
        obj = self.objects.pop(name)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        await self._record("DELETED", obj)

    async def _record(self, kind: str, obj: dict) -> None:
        self.log.append((self.rv, kind, obj))
        async with self.changed:
            self.changed.notify_all()

    def compact(self) -> None:
        """Forget the history: every earlier version is now too old to watch from."""
        self.oldest = self.rv
        self.log.clear()

    async def cut_watches(self) -> None:
        for resp in list(self.watch_responses):
            transport = resp._req.transport if resp._req is not None else None
            if transport is not None:
                transport.abort()
        async with self.changed:
            self.changed.notify_all()

    async def bookmark(self) -> None:
        self.rv += 1  # something elsewhere in the store moved the index
        async with self.changed:
            self.changed.notify_all()

    def watches(self) -> list[dict[str, str]]:
        return [p for kind, p in self.requests if kind == "watch"]

    def lists(self) -> list[dict[str, str]]:
        return [p for kind, p in self.requests if kind == "list"]

    # HTTP
    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/default/pods", self.handle)
        app.router.add_post("/api/v1/namespaces/default/pods", self.handle_errors)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.cut_watches()
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle_errors(self, request: web.Request) -> web.Response:
        """POST answers whatever error the pod's name asks for (client error mapping)."""
        body = await request.json()
        code = {"missing": 404, "taken": 409, "stale": 409, "bad": 422, "gone": 410}.get(
            body["metadata"]["name"]
        )
        if code is None:
            return web.Response(status=500, text="<html>proxy error</html>", content_type="text/html")
        reason = {404: "NotFound", 409: "Conflict", 410: "Expired", 422: "Invalid"}[code]
        if body["metadata"]["name"] == "taken":
            reason = "AlreadyExists"
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": f"it is {reason}",
                  "reason": reason, "code": code, "details": {"causes": [{"field": "metadata.name"}]}}  # fmt: skip
        return web.json_response(status, status=code)

    def _gone(self, rv: int) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410,
                "message": f"too old resource version: {rv} ({self.oldest})"}  # fmt: skip

    async def handle(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        if q.get("watch") in ("1", "true"):
            self.requests.append(("watch", q))
            return await self.serve_watch(request, q)
        self.requests.append(("list", q))
        items = [self.objects[k] for k in sorted(self.objects)]
        start = int(q.get("continue") or 0)
        limit = int(q.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
        page = items[start : start + limit] if limit else items[start:]
        # As kube-apiserver: items carry no kind/apiVersion in a list.
        page = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in page]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})

    async def serve_watch(self, request: web.Request, q: dict[str, str]) -> web.StreamResponse:
        since = int(q.get("resourceVersion") or 0)
        if since < self.oldest and self.gone_as == "http":
            return web.json_response(self._gone(since), status=410)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if since < self.oldest:
            await resp.write(orjson.dumps({"type": "ERROR", "object": self._gone(since)}) + b"\n")
            return resp
        self.watch_responses.add(resp)
        sent = since
        try:
            while True:
                lines = []
                for rv, kind, obj in self.log:
                    if rv > sent:
                        lines.append(orjson.dumps({"type": kind, "object": obj}) + b"\n")
                        sent = rv
                if self.rv > sent and q.get("allowWatchBookmarks") == "true":
                    bookmark = {
                        "kind": "Pod",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(self.rv)},
                    }
                    lines.append(orjson.dumps({"type": "BOOKMARK", "object": bookmark}) + b"\n")
                    sent = self.rv
                if lines:
                    # Split a line across two chunks: the client must reassemble it.
                    data = b"".join(lines)
                    await resp.write(data[:7])
                    await resp.write(data[7:])
                async with self.changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), 0.2)  # and look whether the client left
                if request.transport is None or request.transport.is_closing():
                    break
        finally:
            self.watch_responses.discard(resp)
        return resp


@contextlib.asynccontextmanager
async def fake_server(**kw: Any):
    server = FakeApiServer(**kw)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def running(informer: Informer):
    task = asyncio.create_task(informer.run())
    try:
        await informer.wait_synced(DEADLINE)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def fast_informer(client: ApiClient, **kw: Any) -> Informer:
    kw.setdefault("namespace", "default")
    return Informer(client, "", "v1", "pods", backoff_initial=0.02, backoff_max=0.2, **kw)


@pytest.mark.parametrize("gone_as", ["event", "http"])
def test_relist_on_410_replaces_cache_with_synthetic_events(gone_as: str):
    async def main():
        async with fake_server(gone_as=gone_as) as srv, ApiClient(srv.url) as client:
            for name in ("a", "b", "c"):
                await srv.put(name)
            informer = fast_informer(client)
            rec = Recorder(informer)
            async with running(informer):
                assert rec.of("add") == ["default/a", "default/b", "default/c"]
                assert informer.get("default/a")["kind"] == "Pod", "list items get their kind back"
                await until(lambda: srv.watches(), "the first watch")
                # While the informer is cut off, the world changes and the history is lost.
                await srv.cut_watches()
                await srv.remove("a")
                await srv.put("b", changed="yes")
                await srv.put("d")
                srv.compact()
                await until(lambda: len(srv.lists()) == 2, "a re-list")
                await until(
                    lambda: sorted(informer.keys()) == ["default/b", "default/c", "default/d"], "the cache"
                )
                assert rec.of("delete") == ["default/a"]
                assert rec.of("update") == ["default/b"], "c did not change, so it gets no update"
                assert rec.of("add") == ["default/a", "default/b", "default/c", "default/d"]
                assert informer.get("default/b")["metadata"]["labels"] == {"changed": "yes"}
                # And it watches again from the new list's version.
                await until(lambda: srv.watches()[-1].get("resourceVersion") == str(srv.rv), "a new watch")
                await srv.put("e")
                await until(lambda: "default/e" in informer, "an event after the re-list")

    run(main())


def test_cut_watch_resumes_from_last_version_without_relist():
    async def main():
        async with fake_server() as srv, ApiClient(srv.url) as client:
            await srv.put("a")
            informer = fast_informer(client, indexers={"byNode": index_by_node})
            rec = Recorder(informer)
            async with running(informer):
                await srv.put("b")
                await until(lambda: "default/b" in informer, "b")
                seen_rv = informer.resource_version
                await srv.cut_watches()
                await srv.put("c")
                await srv.remove("a")
                await until(lambda: sorted(informer.keys()) == ["default/b", "default/c"], "the cache")
                assert len(srv.lists()) == 1, "a broken watch is resumed, not re-listed"
                resumed = [w["resourceVersion"] for w in srv.watches()[1:]]
                assert resumed and resumed[0] == seen_rv
                assert [e[0] for e in rec.events] == ["add", "add", "add", "delete"]
                assert all(w.get("allowWatchBookmarks") == "true" for w in srv.watches())

    run(main())


def test_bookmark_moves_the_resume_version():
    async def main():
        async with fake_server() as srv, ApiClient(srv.url) as client:
            await srv.put("a")
            informer = fast_informer(client)
            rec = Recorder(informer)
            async with running(informer):
                await until(lambda: srv.watches(), "the first watch")
                await srv.bookmark()
                await until(lambda: informer.resource_version == str(srv.rv), "the bookmark")
                await srv.cut_watches()
                await until(lambda: len(srv.watches()) == 2, "a second watch")
                assert srv.watches()[1]["resourceVersion"] == str(srv.rv)
                assert len(rec.events) == 1, "a bookmark is not an event for handlers"

    run(main())


def test_paged_list_and_late_handler_sees_everything():
    async def main():
        async with fake_server() as srv, ApiClient(srv.url) as client:
            for i in range(7):
                await srv.put(f"p{i}")
            informer = fast_informer(client, page_size=3)
            async with running(informer):
                assert len(informer) == 7
                assert [lst.get("continue", "") for lst in srv.lists()] == ["", "3", "6"]
                late = Recorder(informer)
                assert len(late.of("add")) == 7
                items, rv = await client.list_all("", "v1", "pods", "default", page_size=2)
                assert len(items) == 7 and rv == str(srv.rv)

    run(main())


def test_cancel_closes_the_watch():
    async def main():
        async with fake_server() as srv, ApiClient(srv.url) as client:
            informer = fast_informer(client)
            task = asyncio.create_task(informer.run())
            await informer.wait_synced(DEADLINE)
            await until(lambda: srv.watch_responses, "the watch")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: not srv.watch_responses, "the server to see the watch end")

    run(main())


def test_client_errors_are_typed():
    async def main():
        async with fake_server() as srv, ApiClient(srv.url) as client:
            expected = {
                "missing": NotFound,
                "taken": AlreadyExists,
                "stale": Conflict,
                "bad": Invalid,
                "gone": Gone,
            }
            for name, kind in expected.items():
                with pytest.raises(kind) as info:
                    await client.create("", "v1", "pods", pod(name))
                assert type(info.value) is kind
                assert info.value.message == f"it is {info.value.reason}"
            with pytest.raises(Invalid) as info:
                await client.create("", "v1", "pods", pod("bad"))
            assert info.value.details["causes"] == [{"field": "metadata.name"}]
            with pytest.raises(ApiError) as info:
                await client.create("", "v1", "pods", pod("other"))
            assert info.value.status == 500 and "proxy error" in info.value.message
        async with ApiClient(srv.url, timeout=2) as client:  # the server is gone now
            with pytest.raises(Unavailable):
                await client.get("", "v1", "pods", "a", namespace="default")

    run(main())


def test_api_path():
    assert api_path("", "v1", "pods") == "/api/v1/pods"
    assert api_path("", "v1", "pods", "ns") == "/api/v1/namespaces/ns/pods"
    assert api_path("", "v1", "pods", "ns", "p", "binding") == "/api/v1/namespaces/ns/pods/p/binding"
    assert api_path("", "v1", "nodes", None, "n1", "status") == "/api/v1/nodes/n1/status"
    assert (
        api_path("apps", "v1", "deployments", "ns", "d", "scale")
        == "/apis/apps/v1/namespaces/ns/deployments/d/scale"
    )
    assert api_path("", "v1", "namespaces", None, "kube-system") == "/api/v1/namespaces/kube-system"
    with pytest.raises(ValueError):
        api_path("", "v1", "pods", "ns", "")


def test_replayed_older_event_does_not_roll_back_the_cache():
    informer = Informer(None, "", "v1", "pods")  # fed by hand; never run
    rec = Recorder(informer)
    informer._replace([pod("a", 20, node="n1")], "15")  # page read later than the list's version
    informer._apply("MODIFIED", pod("a", 18, node="n2"))  # replay of an older change
    assert informer.get("default/a")["metadata"]["resourceVersion"] == "20"
    informer._apply("MODIFIED", pod("a", 25, node="n2"))
    assert informer.get("default/a")["spec"]["nodeName"] == "n2"
    assert informer.resource_version == "25"
    # b was deleted (rv 30) and created again (rv 40) between the list and the pages read.
    informer._replace([pod("b", 40)], "25")
    informer._apply("DELETED", pod("b", 30))
    assert informer.get("default/b")["metadata"]["resourceVersion"] == "40"
    informer._apply("ADDED", pod("b", 40))
    informer._apply("DELETED", pod("b", 41))
    assert informer.get("default/b") is None
    assert [e[0] for e in rec.events] == ["add", "update", "delete", "add", "delete"]


def test_indexes_follow_changes():
    informer = Informer(None, "", "v1", "pods", indexers={"byNode": index_by_node})
    informer._replace([pod("a", 1, node="n1"), pod("b", 2, node="n1"), pod("c", 3)], "3")

    def names(node: str) -> list[str]:
        return sorted(o["metadata"]["name"] for o in informer.by_index("byNode", node))

    assert names("n1") == ["a", "b"]
    informer._apply("MODIFIED", pod("b", 4, node="n2"))
    informer._apply("MODIFIED", pod("c", 5, node="n2"))
    assert names("n1") == ["a"] and names("n2") == ["b", "c"]
    informer._apply("DELETED", pod("a", 6, node="n1"))
    assert names("n1") == []
    informer.add_indexer("byNamespace", lambda o: o["metadata"]["namespace"])
    assert len(informer.by_index("byNamespace", "default")) == 2
    with pytest.raises(KeyError):
        informer.by_index("nope", "x")


# --- against the real API server ----------------------------------------------------------------

STORE_HISTORY = 300  # small, so that a test can push a watch's version out of the store's history


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ApiServerProcess]:
    """One store cluster (with a short history) + `grove apiserver` for this module's real tests."""
    server = start_apiserver(cluster_args={"history_size": STORE_HISTORY})
    try:
        yield server
    finally:
        stop_apiserver(server)


def kill(server: ApiServerProcess) -> None:
    """SIGKILL the API server process: a crash, not a shutdown."""
    proc, server.proc = server.proc, None
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def second_apiserver(first: ApiServerProcess):
    """Another API server over the same store (to write through while the first is down)."""
    other = ApiServerProcess(first.cluster, free_port(), tempfile.mkdtemp(prefix="grove-apiserver-b-"))
    try:
        other.start()
        yield other
    finally:
        other.stop()
        shutil.rmtree(other.workdir, ignore_errors=True)


async def new_namespace(client: ApiClient, name: str) -> str:
    await client.create(
        "", "v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


async def retrying(call, *, what: str, timeout: float = 60.0):
    """Retry a write while the store elects a new leader (503s, dropped connections)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        try:
            return await call()
        except (Unavailable, ApiError) as exc:
            if isinstance(exc, (NotFound, Conflict, AlreadyExists, Invalid, Gone)) or exc.status not in (
                0,
                500,
                503,
                504,
            ):
                raise
            if loop.time() > end:
                raise AssertionError(f"{what}: still failing after {timeout}s: {exc}") from None
            await asyncio.sleep(0.1)


def real_informer(client: ApiClient, ns: str, **kw: Any) -> Informer:
    return Informer(client, "", "v1", "pods", namespace=ns, backoff_initial=0.05, backoff_max=0.5, **kw)


async def converged(informer: Informer, client: ApiClient, ns: str) -> bool:
    lst = await client.list("", "v1", "pods", ns)
    want = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in lst["items"]}
    have = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in informer.list()}
    return want == have


async def until_converged(informer: Informer, client: ApiClient, ns: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not await converged(informer, client, ns):
        if loop.time() > end:
            raise AssertionError(f"the cache of {informer!r} never matched a fresh list")
        await asyncio.sleep(0.05)


@pytest.mark.slow
def test_real_informer_sees_creates_updates_deletes(apiserver: ApiServerProcess):
    async def main():
        url = apiserver.url
        async with ApiClient(url) as client:
            ns = await new_namespace(client, "inf-basic")
            await client.create("", "v1", "pods", pod("before", ns=ns), namespace=ns)
            informer = real_informer(client, ns, indexers={"byNode": index_by_node})
            web_only = real_informer(client, ns, label_selector="app=web")
            rec, web_rec = Recorder(informer), Recorder(web_only)
            async with running(informer), running(web_only):
                assert informer.keys() == [f"{ns}/before"]
                created = [
                    await client.create("", "v1", "pods", pod(f"p{i}", ns=ns, app="web")) for i in range(4)
                ]
                await until(lambda: len(informer) == 5 and len(web_only) == 4, "the creates")
                assert informer.by_index("byNode", "node-1") == []
                await client.patch(
                    "", "v1", "pods", "p0", {"metadata": {"labels": {"tier": "x"}}}, namespace=ns
                )
                await client.create("", "v1", "pods", pod("p4", ns=ns, node="node-1"))
                await client.patch(
                    "", "v1", "pods", "p2", {"metadata": {"labels": {"app": "db"}}}, namespace=ns
                )
                await client.delete("", "v1", "pods", "p3", namespace=ns, grace_period_seconds=0)
                await until(
                    lambda: f"{ns}/p3" not in informer and len(web_only) == 2 and len(informer) == 5,
                    "the changes",
                )
                await until_converged(informer, client, ns)
                assert [o["metadata"]["name"] for o in informer.by_index("byNode", "node-1")] == ["p4"]
                assert informer.get(f"{ns}/p0")["metadata"]["labels"]["tier"] == "x"
                assert rec.of("add") == sorted([f"{ns}/before"] + [f"{ns}/p{i}" for i in range(5)])
                assert {f"{ns}/p0", f"{ns}/p2"} <= set(rec.of("update"))
                assert f"{ns}/p3" in rec.of("delete")
                # An object that stops matching the selector leaves the selective cache as a delete.
                assert sorted(web_only.keys()) == [f"{ns}/p0", f"{ns}/p1"]
                assert web_rec.of("delete") == [f"{ns}/p2", f"{ns}/p3"]
                first_rv = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in created}
                assert next((t, k, rv) for t, k, rv in rec.events if k == f"{ns}/p3") == (
                    "add",
                    f"{ns}/p3",
                    first_rv["p3"],
                )

    run(main())


@pytest.mark.slow
def test_real_controller_syncs_the_latest_state(apiserver: ApiServerProcess):
    """The level-triggered shape end to end: shared informers -> keys -> workers -> sync(key)."""

    async def main():
        async with ApiClient(apiserver.url) as client:
            ns = await new_namespace(client, "inf-controller")
            factory = InformerFactory(client, backoff_initial=0.05, backoff_max=0.5)
            pods = factory.informer("", "v1", "pods", namespace=ns, indexers={"byNode": index_by_node})
            assert factory.informer("", "v1", "pods", namespace=ns) is pods, "one informer per scope"
            last_seen: dict[str, str | None] = {}

            async def sync(key: str) -> None:
                obj = pods.get(key)
                last_seen[key] = obj["metadata"]["labels"].get("v") if obj is not None else None

            ctl = Controller("test", sync, workers=2)
            ctl.watch(pods)
            factory.start()
            runner = asyncio.create_task(ctl.run())
            try:
                for i in range(3):
                    await client.create("", "v1", "pods", pod(f"p{i}", ns=ns, v="1"))
                for v in "234":
                    await client.patch(
                        "", "v1", "pods", "p0", {"metadata": {"labels": {"v": v}}}, namespace=ns
                    )
                await client.delete("", "v1", "pods", "p2", namespace=ns, grace_period_seconds=0)
                want = {f"{ns}/p0": "4", f"{ns}/p1": "1", f"{ns}/p2": None}
                await until(lambda: last_seen == want and not ctl.queue.processing, "the final state")
            finally:
                runner.cancel()
                await factory.stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner

    run(main())


@pytest.mark.slow
def test_real_client_verbs_and_errors(apiserver: ApiServerProcess):
    async def main():
        url = apiserver.url
        async with ApiClient(url) as client:
            ns = await new_namespace(client, "client-verbs")
            cm = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": ns},
                "data": {"a": "1"},
            }
            created = await client.create("", "v1", "configmaps", cm)
            with pytest.raises(AlreadyExists):
                await client.create("", "v1", "configmaps", cm)
            with pytest.raises(NotFound):
                await client.get("", "v1", "configmaps", "nope", namespace=ns)
            with pytest.raises(NotFound):
                await client.create(
                    "", "v1", "configmaps", {**cm, "metadata": {"name": "c"}}, namespace="no-such-ns"
                )
            with pytest.raises(Invalid) as info:
                await client.create(
                    "", "v1", "configmaps", {**cm, "metadata": {"name": "Not_A_Name"}}, namespace=ns
                )
            assert info.value.details["causes"]
            got = await client.get(api_path("", "v1", "configmaps", ns, "c"))
            assert got["metadata"]["uid"] == created["metadata"]["uid"]
            # Optimistic concurrency: an update from a stale read is refused.
            fresh = await client.update("", "v1", "configmaps", {**got, "data": {"a": "2"}})
            with pytest.raises(Conflict):
                await client.update("", "v1", "configmaps", {**got, "data": {"a": "3"}})
            merged = await client.patch("", "v1", "configmaps", "c", {"data": {"b": "x"}}, namespace=ns)
            assert merged["data"] == {"a": "2", "b": "x"}
            ops = [{"op": "replace", "path": "/data/a", "value": "9"}]
            jsoned = await client.patch("", "v1", "configmaps", "c", ops, namespace=ns, patch_type="json")
            assert jsoned["data"]["a"] == "9"
            applied = await client.patch(
                "", "v1", "configmaps", "c2", {**cm, "metadata": {"name": "c2", "namespace": ns}},
                namespace=ns, patch_type="apply", field_manager="test",
            )  # fmt: skip
            assert applied["data"] == {"a": "1"}
            with pytest.raises(Conflict):
                await client.delete(
                    "",
                    "v1",
                    "configmaps",
                    "c",
                    namespace=ns,
                    preconditions={"resourceVersion": fresh["metadata"]["resourceVersion"]},
                )
            await client.delete("", "v1", "configmaps", "c", namespace=ns)
            items, rv = await client.list_all("", "v1", "configmaps", ns)
            assert [o["metadata"]["name"] for o in items] == ["c2"] and int(rv) > 0
            p = await client.create("", "v1", "pods", pod("s", ns=ns))
            p["status"] = {**p.get("status", {}), "phase": "Running"}
            updated = await client.update_status("", "v1", "pods", p)
            assert updated["status"]["phase"] == "Running"
            labelled = await client.patch(
                "",
                "v1",
                "pods",
                "s",
                {"metadata": {"labels": {"x": "y"}}},
                namespace=ns,
                patch_type="strategic",
            )
            assert labelled["metadata"]["labels"] == {"x": "y"}
            assert labelled["status"]["phase"] == "Running"

    run(main())


@pytest.mark.slow
def test_real_bind_and_event(apiserver: ApiServerProcess):
    """The scheduler's two writes: a binding sets spec.nodeName (once), an event is recorded."""

    async def main():
        url = apiserver.url
        async with ApiClient(url) as client:
            ns = await new_namespace(client, "inf-bind")
            created = await client.create("", "v1", "pods", pod("p", ns=ns))
            informer = real_informer(client, ns, indexers={"byNode": index_by_node})
            async with running(informer):
                await client.bind(ns, "p", "node-1", uid=created["metadata"]["uid"])
                await until(lambda: informer.by_index("byNode", "node-1"), "the bound pod in the node index")
                with pytest.raises(Conflict):
                    await client.bind(ns, "p", "node-2")
            event = await client.create_event(
                created, "Scheduled", "Successfully assigned to node-1", component="test"
            )
            assert event["involvedObject"]["name"] == "p" and event["involvedObject"]["kind"] == "Pod"
            events = await client.list("", "v1", "events", ns, field_selector="involvedObject.name=p")
            assert [e["reason"] for e in events["items"]] == ["Scheduled"]

    run(main())


@pytest.mark.slow
def test_real_informer_survives_apiserver_restart(apiserver: ApiServerProcess):
    async def main():
        try:
            with second_apiserver(apiserver) as other:
                async with ApiClient(apiserver.url, timeout=5) as client, ApiClient(other.url) as writer:
                    ns = await new_namespace(writer, "inf-restart")
                    for name in ("keep", "drop", "change"):
                        await writer.create("", "v1", "pods", pod(name, ns=ns), namespace=ns)
                    informer = real_informer(client, ns)
                    rec = Recorder(informer)
                    async with running(informer):
                        await until(lambda: informer.watches >= 1, "the watch")
                        # 1) The API server dies mid-watch; changes meanwhile arrive once it is back.
                        kill(apiserver)
                        await writer.create("", "v1", "pods", pod("new", ns=ns), namespace=ns)
                        await writer.delete("", "v1", "pods", "drop", namespace=ns, grace_period_seconds=0)
                        await writer.patch(
                            "", "v1", "pods", "change", {"metadata": {"labels": {"v": "2"}}}, namespace=ns
                        )
                        await asyncio.to_thread(apiserver.start)
                        await until_converged(informer, client, ns)
                        assert f"{ns}/new" in rec.of("add")
                        assert rec.of("delete") == [f"{ns}/drop"]
                        assert rec.of("update") == [f"{ns}/change"]
                        lists_before = informer.lists
                        # 2) Down again, and this time the store's history moves past the informer's
                        # version: the watch gets 410 Gone, the informer lists again, and its handlers
                        # hear of the difference as if they had watched all along.
                        kill(apiserver)
                        await writer.delete("", "v1", "pods", "keep", namespace=ns, grace_period_seconds=0)
                        await writer.create("", "v1", "pods", pod("later", ns=ns), namespace=ns)
                        churn = await new_namespace(writer, "inf-churn")
                        await writer.create(
                            "",
                            "v1",
                            "configmaps",
                            {"metadata": {"name": "c"}, "data": {"n": "0"}},
                            namespace=churn,
                        )
                        for i in range(STORE_HISTORY + 20):
                            await writer.patch(
                                "", "v1", "configmaps", "c", {"data": {"n": str(i)}}, namespace=churn
                            )
                        await asyncio.to_thread(apiserver.start)
                        await until_converged(informer, client, ns)
                        assert informer.lists > lists_before, (
                            "a version out of history must lead to a re-list"
                        )
                        assert rec.of("delete") == [f"{ns}/drop", f"{ns}/keep"]
                        assert f"{ns}/later" in rec.of("add")
                        await writer.create("", "v1", "pods", pod("after", ns=ns), namespace=ns)
                        await until(lambda: f"{ns}/after" in informer, "a change after the re-list")
        finally:
            if apiserver.proc is None:  # a failure above left it down: the next tests need it
                await asyncio.to_thread(apiserver.start)

    run(main())


@pytest.mark.slow
def test_real_informer_loses_no_event_when_store_leader_dies(apiserver: ApiServerProcess):
    async def main():
        url = apiserver.url
        async with ApiClient(url, timeout=15) as client:
            ns = await new_namespace(client, "inf-leader")
            informer = real_informer(client, ns)
            rec = Recorder(informer)
            written: set[tuple[str, str, str]] = set()  # (type, key, resourceVersion) of every write

            async def create(name: str) -> None:
                try:
                    obj = await retrying(
                        lambda: client.create("", "v1", "pods", pod(name, ns=ns), namespace=ns), what=name
                    )
                except AlreadyExists:  # an earlier attempt got through before its answer was lost
                    obj = await retrying(lambda: client.get("", "v1", "pods", name, namespace=ns), what=name)
                written.add(("add", f"{ns}/{name}", obj["metadata"]["resourceVersion"]))

            async def label(name: str) -> None:
                patch = {"metadata": {"labels": {"seen": "yes"}}}
                obj = await retrying(
                    lambda: client.patch("", "v1", "pods", name, patch, namespace=ns), what=name
                )
                written.add(("update", f"{ns}/{name}", obj["metadata"]["resourceVersion"]))

            async with running(informer):
                await until(lambda: informer.watches >= 1, "the watch")
                for i in range(10):
                    await create(f"p{i}")
                leader = await asyncio.to_thread(apiserver.cluster.leader_index)
                apiserver.cluster.kill(leader)
                try:
                    for i in range(10, 30):
                        await create(f"p{i}")
                    for i in range(0, 30, 3):
                        await label(f"p{i}")
                    await until(lambda: written <= set(rec.events), "every write to reach the informer", 60)
                    await until_converged(informer, client, ns)
                    assert informer.lists == 1, "a leader change must not cost a re-list"
                    adds = [k for t, k, _ in rec.events if t == "add"]
                    assert len(adds) == len(set(adds)) == 30
                finally:
                    await asyncio.to_thread(apiserver.cluster.restart, leader)

    run(main())
