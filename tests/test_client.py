"""kvstore.client against a real 3-member store: keys, errors, TTLs, watches, failover, members.

The store comes from the `kv_cluster` fixture, parametrised by backend so the same tests hold
grove's store to etcd's behaviour. Backend "etcd" is Debian's etcd 3.4 (bench/etcd.py); it is
skipped only when the binary is missing outside CI, and fails loudly when missing in CI.
Pure helpers of the client (line splitting, URL building, error parsing) are tested without I/O.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from bench.etcd import ETCD_INSTALL_HINT, EtcdCluster, find_etcd, free_ports
from kvstore.client import (
    ClusterUnavailable,
    EtcdError,
    EtcdResponse,
    KVClient,
    LineSplitter,
    SyncKVClient,
    error_from_response,
    key_path,
    parse_endpoints,
)

ETCD_BIN = find_etcd()
IN_CI = bool(os.environ.get("CI"))
ETCD_HISTORY = 1000  # etcd v2 keeps the last 1000 events for watches

BACKENDS = [
    pytest.param(
        "etcd",
        marks=pytest.mark.skipif(ETCD_BIN is None and not IN_CI, reason=ETCD_INSTALL_HINT),
        id="etcd",
    ),
    pytest.param("grove", id="grove"),
]


@pytest.fixture(scope="module", params=BACKENDS)
def kv_cluster(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A running 3-member store exposing client_urls, kill(i, sig), restart(i), leader_index()."""
    if request.param == "etcd":
        if ETCD_BIN is None:
            pytest.fail(f"CI is set but {ETCD_INSTALL_HINT}", pytrace=False)
        with EtcdCluster(3, binary=ETCD_BIN) as cluster:
            yield cluster
    elif request.param == "grove":
        from kvstore.localcluster import GroveCluster

        # the same history size as etcd v2, so the cleared-index test holds for both
        with GroveCluster(3, history_size=ETCD_HISTORY) as cluster:
            yield cluster
    else:
        raise ValueError(f"unknown kv backend {request.param!r}")


@pytest.fixture(scope="module")
def kv_endpoints(kv_cluster: Any) -> list[str]:
    return list(kv_cluster.client_urls)


@pytest.fixture
def prefix() -> str:
    """A key directory of this test's own, so tests sharing the cluster do not see each other."""
    return f"/grove-test/{uuid.uuid4().hex[:12]}"


def async_test(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body in a fresh event loop, bounded by a deadline."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 120))

    return wrapper


async def collect(events: Any, count: int, deadline: float = 30.0) -> list[EtcdResponse]:
    """The first `count` items of an async iterator of events (closing it afterwards)."""
    got: list[EtcdResponse] = []

    async def run() -> None:
        async for event in events:
            got.append(event)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(run(), deadline)
    finally:
        await events.aclose()
    return got


# --- pure helpers --------------------------------------------------------------------------------


def test_line_splitter_joins_chunks_across_boundaries() -> None:
    lines = LineSplitter()
    assert lines.feed(b'{"a":') == []
    assert lines.feed(b"1}\n{") == [b'{"a":1}']
    assert lines.feed(b'"b":2}\n\n{"c"') == [b'{"b":2}', b""]
    assert lines.feed(b"") == []
    assert lines.rest() == b'{"c"'
    assert lines.rest() == b""


def test_key_path_normalises_and_quotes() -> None:
    assert key_path("a/b") == "/v2/keys/a/b"
    assert key_path("/a/b") == "/v2/keys/a/b"
    assert key_path("/a b/é?") == "/v2/keys/a%20b/%C3%A9%3F"


def test_parse_endpoints() -> None:
    assert parse_endpoints("http://a:1, http://b:2/") == ["http://a:1", "http://b:2"]
    assert parse_endpoints(["https://a:1"]) == ["https://a:1"]
    with pytest.raises(ValueError, match="not a URL"):
        parse_endpoints("127.0.0.1:2379")
    with pytest.raises(ValueError, match="no endpoint"):
        parse_endpoints(" , ")


def test_error_from_response_shapes() -> None:
    body = b'{"errorCode":100,"message":"Key not found","cause":"/x","index":7}'
    err = error_from_response(404, {"X-Etcd-Index": "7"}, body)
    assert (err.error_code, err.message, err.cause, err.index, err.status) == (
        100,
        "Key not found",
        "/x",
        7,
        404,
    )
    assert str(err) == "etcd error 100: Key not found (/x)"
    again = pickle.loads(pickle.dumps(err))
    assert (again.error_code, again.cause, again.status) == (100, "/x", 404)
    plain = error_from_response(404, {}, b"404 page not found\n", "/v2/keys/x?wait=true")
    assert plain.error_code == 0 and "--enable-v2" in plain.message
    members = error_from_response(409, {}, b'{"message":"peerURL exists"}')
    assert members.message == "peerURL exists" and members.status == 409


# --- keys ----------------------------------------------------------------------------------------


@async_test
async def test_set_get_with_special_characters(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        key = f"{prefix}/a b/é"
        value = "x=1&y=2 + ü\nline"
        created = await client.set(key.lstrip("/"), value)
        assert created.action == "set"
        assert created.key == key and created.value == value
        assert created.etcd_index >= created.node["modifiedIndex"] > 0
        assert created.raft_index is not None and created.raft_term is not None
        got = await client.get(key)
        assert got.action == "get" and got.value == value
        assert got.node["modifiedIndex"] == created.node["modifiedIndex"]
        quorum = await client.get(key, quorum=True)
        assert quorum.value == value
        replaced = await client.set(key, "")
        assert (
            replaced.value == "" and replaced.prev_node is not None and replaced.prev_node["value"] == value
        )


@async_test
async def test_missing_key_error(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        await client.set(f"{prefix}/present", "v")
        with pytest.raises(EtcdError) as info:
            await client.get(f"{prefix}/missing")
        err = info.value
        assert err.error_code == 100 and err.status == 404
        assert err.cause == f"{prefix}/missing" and err.index > 0


@async_test
async def test_create_and_update(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        key = f"{prefix}/k"
        with pytest.raises(EtcdError) as info:
            await client.update(key, "v")
        assert info.value.error_code == 100
        created = await client.create(key, "v1")
        assert created.action == "create" and created.prev_node is None
        with pytest.raises(EtcdError) as info:
            await client.create(key, "v2")
        assert (info.value.error_code, info.value.status) == (105, 412)
        updated = await client.update(key, "v2")
        assert updated.action == "update" and updated.prev_node["value"] == "v1"
        assert (await client.get(key)).value == "v2"


@async_test
async def test_compare_and_swap(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        key = f"{prefix}/cas"
        first = await client.set(key, "one")
        with pytest.raises(EtcdError) as info:
            await client.compare_and_swap(key, "two", prev_value="other")
        assert (info.value.error_code, info.value.status) == (101, 412)
        swapped = await client.compare_and_swap(key, "two", prev_value="one")
        assert swapped.action == "compareAndSwap" and swapped.value == "two"
        with pytest.raises(EtcdError) as info:
            await client.compare_and_swap(key, "three", prev_index=first.node["modifiedIndex"])
        assert info.value.error_code == 101
        by_index = await client.compare_and_swap(key, "three", prev_index=swapped.node["modifiedIndex"])
        assert by_index.value == "three"
        with pytest.raises(EtcdError) as info:
            await client.compare_and_swap(f"{prefix}/absent", "x", prev_value="y")
        assert info.value.error_code == 100
        with pytest.raises(ValueError):
            await client.compare_and_swap(key, "x")


@async_test
async def test_compare_and_delete(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        key = f"{prefix}/cad"
        set_ = await client.set(key, "v")
        with pytest.raises(EtcdError) as info:
            await client.delete(key, prev_value="w")
        assert info.value.error_code == 101
        with pytest.raises(EtcdError) as info:
            await client.delete(key, prev_index=set_.node["modifiedIndex"] + 1000)
        assert info.value.error_code == 101
        deleted = await client.delete(key, prev_value="v")
        assert deleted.action == "compareAndDelete" and deleted.prev_node["value"] == "v"
        again = await client.set(key, "v2")
        gone = await client.delete(key, prev_index=again.node["modifiedIndex"])
        assert gone.action == "compareAndDelete"
        with pytest.raises(EtcdError) as info:
            await client.delete(key)
        assert info.value.error_code == 100


@async_test
async def test_directories(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        top = f"{prefix}/dir"
        made = await client.mkdir(top)
        assert made.node.get("dir") is True
        with pytest.raises(EtcdError) as info:
            await client.mkdir(top)
        assert info.value.error_code == 105
        with pytest.raises(EtcdError) as info:
            await client.set(top, "value on a dir")
        assert (info.value.error_code, info.value.status) == (102, 403)
        for name in ("c", "a", "b"):
            await client.set(f"{top}/{name}", name)
        await client.set(f"{top}/sub/x", "x")
        listing = await client.get(top, recursive=True, sorted=True)
        children = listing.node["nodes"]
        assert [n["key"] for n in children] == [f"{top}/{n}" for n in ("a", "b", "c", "sub")]
        assert children[3]["dir"] is True and children[3]["nodes"][0]["value"] == "x"
        with pytest.raises(EtcdError) as info:
            await client.delete(top, dir=True)
        assert (info.value.error_code, info.value.status) == (108, 403)
        with pytest.raises(EtcdError) as info:
            await client.get(f"{top}/a/below-a-file")
        assert info.value.error_code in (100, 104)
        removed = await client.delete(top, recursive=True)
        assert removed.action == "delete"
        with pytest.raises(EtcdError) as info:
            await client.get(top)
        assert info.value.error_code == 100
        await client.mkdir(top)
        assert (await client.delete(top, dir=True)).action == "delete"


@async_test
async def test_append_makes_in_order_keys(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        queue = f"{prefix}/queue"
        appended = [await client.append(queue, f"job{i}") for i in range(3)]
        assert all(r.action == "create" for r in appended)
        keys = [r.key for r in appended]
        assert all(k.startswith(queue + "/") for k in keys) and keys == sorted(keys)
        listing = await client.get(queue, sorted=True)
        assert [n["value"] for n in listing.node["nodes"]] == ["job0", "job1", "job2"]


@async_test
async def test_ttl_expiry_and_refresh(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        short = await client.set(f"{prefix}/short", "v", ttl=1)
        assert short.node["ttl"] in (0, 1) and "expiration" in short.node
        expired = await client.watch(f"{prefix}/short", index=short.node["modifiedIndex"] + 1, timeout=15)
        assert expired.action == "expire" and expired.prev_node["value"] == "v"
        with pytest.raises(EtcdError) as info:
            await client.get(f"{prefix}/short")
        assert info.value.error_code == 100

        long = await client.set(f"{prefix}/long", "keep", ttl=5)
        assert long.node["ttl"] <= 5
        refreshed = await client.set(f"{prefix}/long", "", ttl=300, prev_exist=True, refresh=True)
        assert refreshed.value == "keep" and refreshed.node["ttl"] > 5
        assert (await client.get(f"{prefix}/long")).value == "keep"
        with pytest.raises(EtcdError) as info:
            await client.set(f"{prefix}/absent", "", ttl=5, prev_exist=True, refresh=True)
        assert info.value.error_code == 100


# --- watches -------------------------------------------------------------------------------------


@async_test
async def test_watch_long_poll(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        key = f"{prefix}/w"
        first = await client.set(key, "1")
        await client.set(key, "2")
        past = await client.watch(key, index=first.node["modifiedIndex"])
        assert past.action == "set" and past.value == "1"
        assert past.etcd_index == first.node["modifiedIndex"]

        # A watch without an index sees the next change; write until it has fired.
        task = asyncio.create_task(client.watch(key, timeout=20))
        written = set()
        for n in range(1000):
            if task.done():
                break
            written.add((await client.set(key, f"next{n}")).node["modifiedIndex"])
            await asyncio.wait({task}, timeout=0.05)
        event = await task
        assert event.node["modifiedIndex"] in written and event.value.startswith("next")

        child = await client.set(f"{prefix}/d/child", "c")
        recursive = await client.watch(f"{prefix}/d", index=child.node["modifiedIndex"], recursive=True)
        assert recursive.key == f"{prefix}/d/child"
        with pytest.raises(TimeoutError):
            await client.watch(f"{prefix}/quiet", timeout=0.3)


@async_test
async def test_watch_stream_sees_every_event_in_order(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client, KVClient(kv_endpoints) as writer:
        start = (await writer.mkdir(f"{prefix}/many")).node["modifiedIndex"] + 1
        live = asyncio.create_task(
            collect(client.watch_stream(f"{prefix}/many", index=start, recursive=True), 200)
        )
        results = await asyncio.gather(*(writer.set(f"{prefix}/many/k{i:03d}", str(i)) for i in range(200)))
        written = sorted((r.node["modifiedIndex"], r.key) for r in results)

        events = await live
        assert [(e.node["modifiedIndex"], e.key) for e in events] == written
        assert [e.etcd_index for e in events] == [index for index, _ in written]
        assert all(e.action == "set" for e in events)

        # Resuming later from a past index replays exactly the same events.
        middle = written[100][0]
        replay = await collect(client.watch_stream(f"{prefix}/many", index=middle, recursive=True), 100)
        assert [(e.node["modifiedIndex"], e.key) for e in replay] == written[100:]


@async_test
async def test_watch_from_cleared_index_fails_with_401(kv_endpoints: list[str], prefix: str) -> None:
    async with KVClient(kv_endpoints) as client:
        old = (await client.set(f"{prefix}/old", "x")).node["modifiedIndex"]
        for batch in range(0, ETCD_HISTORY + 20, 100):
            await asyncio.gather(*(client.set(f"{prefix}/fill/{i}", "f") for i in range(batch, batch + 100)))
        with pytest.raises(EtcdError) as info:
            await client.watch(f"{prefix}/old", index=old)
        assert info.value.error_code == 401 and info.value.status == 400
        with pytest.raises(EtcdError) as info:
            await collect(client.watch_stream(prefix, index=old, recursive=True), 1)
        assert info.value.error_code == 401


# --- cluster -------------------------------------------------------------------------------------


@async_test
async def test_members_leader_health_version(kv_cluster: Any, kv_endpoints: list[str]) -> None:
    async with KVClient(kv_endpoints) as client:
        members = await client.members()
        assert len(members) == 3
        assert sorted(url for m in members for url in m["clientURLs"]) == sorted(kv_endpoints)
        assert all(m["id"] and m["peerURLs"] for m in members)

        leader = await client.leader()
        assert leader is not None and leader["id"] in {m["id"] for m in members}
        assert kv_endpoints[kv_cluster.leader_index()] in leader["clientURLs"]

        assert await client.health()
        for endpoint in kv_endpoints:
            assert await client.health(endpoint)
            version = await client.version(endpoint)
            assert version["etcdserver"] and version["etcdcluster"]
        closed = f"http://127.0.0.1:{free_ports(1)[0]}"
        assert not await client.health(closed)
        with pytest.raises(ClusterUnavailable):
            await client.version(closed)


@async_test
async def test_add_and_remove_member(kv_endpoints: list[str]) -> None:
    async with KVClient(kv_endpoints) as client:
        peer_url = f"http://127.0.0.1:{free_ports(1)[0]}"
        added = await client.add_member([peer_url])
        try:
            assert added["peerURLs"] == [peer_url] and added["id"]
            assert added["id"] in {m["id"] for m in await client.members()}
        finally:
            await client.remove_member(added["id"])
        assert added["id"] not in {m["id"] for m in await client.members()}
        with pytest.raises(EtcdError) as info:
            await client.remove_member(added["id"])
        assert info.value.status in (404, 410)  # etcd: 410 "Member permanently removed"


def test_sync_client(kv_endpoints: list[str], prefix: str) -> None:
    with SyncKVClient(",".join(kv_endpoints)) as client:
        first = client.set(f"{prefix}/s", "1")
        assert client.get(f"{prefix}/s").value == "1"
        client.update(f"{prefix}/s", "2")
        client.compare_and_swap(f"{prefix}/s", "3", prev_value="2")
        with pytest.raises(EtcdError) as info:
            client.create(f"{prefix}/s", "x")
        assert info.value.error_code == 105
        stream = client.watch_stream(f"{prefix}/s", index=first.node["modifiedIndex"])
        assert [next(stream).value for _ in range(3)] == ["1", "2", "3"]
        stream.close()
        assert client.watch(f"{prefix}/s", index=first.node["modifiedIndex"]).value == "1"
        with pytest.raises(TimeoutError):
            client.watch(f"{prefix}/s", timeout=0.2)
        client.delete(f"{prefix}/s")
        assert len(client.members()) == 3 and client.leader() is not None
        assert client.health() and "etcdserver" in client.version()


# --- failover ------------------------------------------------------------------------------------


@async_test
async def test_unreachable_endpoints(kv_endpoints: list[str], prefix: str) -> None:
    dead = [f"http://127.0.0.1:{port}" for port in free_ports(2)]
    async with KVClient([dead[0], *kv_endpoints]) as client:
        assert (await client.set(f"{prefix}/via-live", "v")).value == "v"
        assert client.current_endpoint in kv_endpoints
    async with KVClient(dead, retry_deadline=0.5) as client:
        with pytest.raises(ClusterUnavailable, match="answered within"):
            await client.get(f"{prefix}/x")
        with pytest.raises(ClusterUnavailable):
            await collect(client.watch_stream(f"{prefix}/x"), 1)


@async_test
async def test_failover_when_the_used_member_dies(
    kv_cluster: Any, kv_endpoints: list[str], prefix: str
) -> None:
    async with KVClient(kv_endpoints, retry_deadline=30) as client:
        start = (await client.set(f"{prefix}/w/000", "0")).node["modifiedIndex"]
        victim = kv_endpoints.index(client.current_endpoint)
        events: list[EtcdResponse] = []
        first_seen = asyncio.Event()

        async def consume() -> None:
            async for event in client.watch_stream(f"{prefix}/w", index=start, recursive=True):
                events.append(event)
                first_seen.set()
                if len(events) == 21:
                    return

        watcher = asyncio.create_task(consume())
        killed = False
        try:
            # The stream is connected to the victim once it has delivered its first event.
            await asyncio.wait_for(first_seen.wait(), 20)
            kv_cluster.kill(victim)
            killed = True
            written = [start]
            for i in range(1, 21):
                written.append((await client.set(f"{prefix}/w/{i:03d}", str(i))).node["modifiedIndex"])
            assert client.current_endpoint != kv_endpoints[victim]
            assert (await client.get(f"{prefix}/w/020")).value == "20"
            await asyncio.wait_for(watcher, 30)
            assert [e.node["modifiedIndex"] for e in events] == written
            assert [e.value for e in events] == [str(i) for i in range(21)]
        finally:
            watcher.cancel()
            if killed:
                kv_cluster.restart(victim)
