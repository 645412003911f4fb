"""Failover, durability, snapshots, stream watches, membership and discovery over real processes.

Each store member is its own process; "crash" means SIGKILL and "recovery" means starting the
same member again on its data dir. Behaviour etcd also has runs against etcd too (the reference);
grove's stream watch (`wait=true&stream=true`) is grove's own and runs on grove only.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import http.client
import json
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode, urlparse

import pytest
import requests

pytest.register_assert_rewrite("tests.kvbackends")  # before the import: keep pytest's assert messages

from tests.kvbackends import (  # noqa: E402
    BACKENDS,
    KVBackend,
    etcd_body,
    get_json,
    grove_kv,
    spawn_member,
    start_backend,
    stop_backend,
    wait_for,
)

pytest_plugins = ["tests.kvbackends"]  # the kv_cluster, kv_prefix, ... fixtures

SNAPSHOT_COUNT = 40  # raft entries between snapshots: small, so compaction happens within a test
STREAM_HISTORY = 300  # grove's --history-size for the stream tests: 500 writes clear the oldest ones


class _ModuleClusters:
    def __init__(self) -> None:
        self.backends: dict[str, KVBackend] = {}

    def get(self, kind: str) -> KVBackend:
        if kind not in self.backends:
            history = STREAM_HISTORY if kind == "grove" else None
            self.backends[kind] = start_backend(kind, snapshot_count=SNAPSHOT_COUNT, history_size=history)
        b = self.backends[kind]
        # a test that failed half-way may have left a member down: bring it back first
        for i in range(b.size):
            if not b.is_running(i):
                b.restart(i)
        b.leader_index(timeout=30)
        return b


@pytest.fixture(scope="module")
def _clusters() -> Iterator[_ModuleClusters]:
    pool = _ModuleClusters()
    try:
        yield pool
    finally:
        for b in pool.backends.values():
            stop_backend(b)


@pytest.fixture(params=BACKENDS)
def durable(request: pytest.FixtureRequest, _clusters: _ModuleClusters) -> KVBackend:
    """A three-member cluster per backend with a small --snapshot-count, that tests may crash."""
    return _clusters.get(request.param)


@pytest.fixture
def grove_stream(_clusters: _ModuleClusters) -> KVBackend:
    """The grove cluster of this module (history of STREAM_HISTORY events)."""
    return _clusters.get("grove")


def put(b: KVBackend, key: str, value: str, i: int = 0, timeout: float = 10.0, **params) -> requests.Response:
    return requests.put(b.keys_url(key, i), params=params, data={"value": value}, timeout=timeout)


def write_until_accepted(
    b: KVBackend, key: str, value: str, members: list[int], timeout: float = 30.0
) -> dict:
    """Write through any of `members` until one accepts (waits out an election); returns the node."""

    def attempt() -> dict | None:
        for i in members:
            try:
                r = put(b, key, value, i, timeout=3)
            except requests.RequestException:
                continue
            if r.status_code in (200, 201):
                return r.json()["node"]
        return None

    return wait_for(attempt, timeout, f"a write to be accepted by members {members}", interval=0.1)


def tree(b: KVBackend, prefix: str, i: int, quorum: bool = False) -> dict | None:
    params = {"recursive": "true", "sorted": "true"}
    if quorum:
        params["quorum"] = "true"
    r = requests.get(b.keys_url(prefix, i), params=params, timeout=10)
    return r.json() if r.status_code == 200 else None


def values(doc: dict) -> dict[str, str]:
    out = {}
    stack = [doc["node"]]
    while stack:
        n = stack.pop()
        if "value" in n:
            out[n["key"]] = n["value"]
        stack.extend(n.get("nodes", []))
    return out


def index_of(b: KVBackend, i: int) -> int:
    return int(requests.get(b.url(i) + "/v2/keys/", timeout=5).headers["X-Etcd-Index"])


def restart_all(b: KVBackend) -> None:
    """Start every member again at once (one alone cannot elect a leader, so none may wait for the others)."""
    if b.kind == "etcd":
        for i in range(b.size):
            b.cluster.restart(i, wait=False)
        b.cluster.wait_healthy(timeout=60)
    else:
        b.cluster.start(timeout=60)  # same data dir and ports: every member recovers from disk
    b.leader_index(timeout=30)


# --- failover --------------------------------------------------------------------------------------


def test_kill_leader_then_new_leader_and_old_member_catches_up(durable: KVBackend, kv_prefix: str) -> None:
    b = durable
    before = {f"{kv_prefix}/before{i}": f"v{i}" for i in range(10)}
    for k, v in before.items():
        assert put(b, k, v).status_code in (200, 201)
    old = b.leader_index()
    old_id = b.member_ids()[b.names[old]]
    b.kill(old, signal.SIGKILL)
    survivors = [i for i in range(b.size) if i != old]

    new = b.leader_index(timeout=30, members=survivors)
    assert new != old
    stats = get_json(b.url(survivors[0]) + "/v2/stats/self")
    assert stats["leaderInfo"]["leader"] != old_id

    during = {f"{kv_prefix}/during{i}": f"d{i}" for i in range(20)}
    last = None
    for n, (k, v) in enumerate(during.items()):
        node = write_until_accepted(
            b, k, v, survivors if n == 0 else [survivors[n % 2]], timeout=30 if n == 0 else 10
        )
        last = node["modifiedIndex"]
    expected = {**before, **during}

    b.restart(old)
    wait_for(lambda: index_of(b, old) >= last, 30, "the restarted member to catch up")
    got = wait_for(lambda: tree(b, kv_prefix, old), 10, "the prefix on the restarted member")
    assert values(got) == expected
    for i in survivors:
        assert values(tree(b, kv_prefix, i)) == expected
    b.assert_alive()
    # and it takes part again: a write through it is seen everywhere
    node = write_until_accepted(b, f"{kv_prefix}/after", "x", [old])
    for i in range(b.size):
        assert tree(b, f"{kv_prefix}/after", i, quorum=True)["node"]["modifiedIndex"] == node["modifiedIndex"]


def test_kill_all_members_and_restart_keeps_every_acknowledged_write(
    durable: KVBackend, kv_prefix: str
) -> None:
    b = durable
    acked: dict[str, tuple[str, int]] = {}
    lock = threading.Lock()

    def writer(w: int) -> None:
        for n in range(40):
            key, value = f"{kv_prefix}/w{w}-{n}", f"{w}:{n}"
            r = put(b, key, value, (w + n) % b.size)
            assert r.status_code in (200, 201), r.text
            with lock:
                acked[key] = (value, r.json()["node"]["modifiedIndex"])

    with cf.ThreadPoolExecutor(6) as ex:
        list(ex.map(writer, range(6)))
    top = max(idx for _, idx in acked.values())
    for i in range(b.size):
        b.kill(i, signal.SIGKILL)
    restart_all(b)

    for i in range(b.size):
        doc = wait_for(lambda i=i: tree(b, kv_prefix, i, quorum=True), 30, "the prefix after the restart")
        nodes = {}
        stack = [doc["node"]]
        while stack:
            n = stack.pop()
            if "value" in n:
                nodes[n["key"]] = (n["value"], n["modifiedIndex"])
            stack.extend(n.get("nodes", []))
        assert nodes == acked, f"member {b.names[i]} lost or changed acknowledged writes"
    after = write_until_accepted(b, f"{kv_prefix}/after-restart", "x", list(range(b.size)))
    assert after["modifiedIndex"] > top, "the index must continue from where it was"


def test_member_down_across_compaction_catches_up(durable: KVBackend, kv_prefix: str) -> None:
    b = durable
    leader = b.leader_index()
    down = next(i for i in range(b.size) if i != leader)
    b.kill(down, signal.SIGKILL)
    up = [i for i in range(b.size) if i != down]
    expected = {}

    def write(n: int) -> int:
        key, value = f"{kv_prefix}/k{n:04d}", f"value-{n}"
        r = put(b, key, value, up[n % 2])
        assert r.status_code in (200, 201), r.text
        expected[key] = value
        return r.json()["node"]["modifiedIndex"]

    with cf.ThreadPoolExecutor(4) as ex:
        last = max(ex.map(write, range(SNAPSHOT_COUNT * 8)))
    b.restart(down)
    wait_for(lambda: index_of(b, down) >= last, 30, "the member that was down to catch up")
    assert values(tree(b, kv_prefix, down)) == expected
    # it is a full member again: with the other follower down, it and the leader still make a quorum
    other = next(i for i in up if i != leader)
    b.kill(other, signal.SIGKILL)
    try:
        node = write_until_accepted(b, f"{kv_prefix}/quorum", "yes", [down, leader])
        assert tree(b, f"{kv_prefix}/quorum", down, quorum=True)["node"]["value"] == "yes"
        assert node["value"] == "yes"
    finally:
        b.restart(other)


def test_without_quorum_writes_fail_with_a_300_series_error(durable: KVBackend, kv_prefix: str) -> None:
    b = durable
    survivor = b.leader_index()
    others = [i for i in range(b.size) if i != survivor]
    for i in others:
        b.kill(i, signal.SIGKILL)
    try:
        r = put(b, f"{kv_prefix}/k", "v", survivor, timeout=30)
        body = etcd_body(r)
        assert r.status_code == 500 and body["errorCode"] == 300, body
        assert body["message"] == "Raft Internal Error"
        r = requests.get(b.url(survivor) + "/health", timeout=10)
        assert r.status_code == 503 and etcd_body(r)["health"] == "false"
        assert b.is_running(survivor)
    finally:
        for i in others:
            b.restart(i)
    write_until_accepted(b, f"{kv_prefix}/again", "ok", list(range(b.size)))


# --- robustness --------------------------------------------------------------------------------


def _send_garbage(host: str, port: int, payload: bytes) -> None:
    with socket.create_connection((host, port), timeout=5) as s:
        try:
            s.sendall(payload)
            s.settimeout(0.1)
            s.recv(1024)
        except OSError:
            pass


def test_garbage_on_the_peer_port_does_not_crash_a_member(durable: KVBackend, kv_prefix: str) -> None:
    b = durable
    rnd = random.Random(42)
    payloads = [
        bytes(rnd.getrandbits(8) for _ in range(4096)),
        b"\x80\x04\x95" + bytes(rnd.getrandbits(8) for _ in range(512)),  # looks like a pickle frame
        b"\xff\xff\xff\xff" + b"A" * 1024,  # an absurd length prefix
        b"GET /raft HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00" * 65536,
    ]
    for i in range(b.size):
        u = urlparse(b.peer_urls[i])
        for p in payloads:
            _send_garbage(u.hostname, u.port, p)
        # a burst of connections that open and close without a word
        for _ in range(10):
            socket.create_connection((u.hostname, u.port), timeout=5).close()
    b.assert_alive()
    node = write_until_accepted(b, f"{kv_prefix}/still-works", "yes", list(range(b.size)), timeout=15)
    for i in range(b.size):
        assert (
            tree(b, f"{kv_prefix}/still-works", i, quorum=True)["node"]["modifiedIndex"]
            == node["modifiedIndex"]
        )


# --- stream watch (grove) -------------------------------------------------------------------------


class StreamReader:
    """A `wait=true&stream=true` watch read in a thread: one JSON event per line.

    http.client rather than requests: its readline() returns each line as soon as it arrives,
    where requests' iter_lines() waits for a full buffer.
    """

    def __init__(self, b: KVBackend, key: str, wait_index: int, i: int = 0) -> None:
        u = urlparse(b.url(i))
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        query = urlencode(
            {"wait": "true", "stream": "true", "recursive": "true", "waitIndex": str(wait_index)}
        )
        self.conn.request("GET", f"/v2/keys{key}?{query}")
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.events: list[dict] = []
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        if self.status == 200:
            threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            while line := self.resp.readline():
                if line.strip():
                    ev = json.loads(line)
                    with self.cond:
                        self.events.append(ev)
                        self.cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self.error = exc
        with self.cond:
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events) < n:
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    pytest.fail(f"stream gave {len(self.events)} of {n} events (error: {self.error!r})")
                self.cond.wait(left)
            return list(self.events)

    def close(self) -> None:
        # shutdown first: it wakes the reader thread, which holds the response while it blocks
        if self.conn.sock is not None:
            with contextlib.suppress(OSError):
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def _concurrent_writes(b: KVBackend, prefix: str, n: int, threads: int = 10) -> dict[int, tuple[str, str]]:
    """n writes from `threads` threads spread over all members; modifiedIndex -> (key, value)."""
    acked: dict[int, tuple[str, str]] = {}
    lock = threading.Lock()

    def run(t: int) -> None:
        s = requests.Session()
        for j in range(t, n, threads):
            key, value = f"{prefix}/k{j % 37}", f"{t}-{j}"
            r = s.put(b.keys_url(key, j % b.size), data={"value": value}, timeout=20)
            assert r.status_code in (200, 201), r.text
            with lock:
                acked[r.json()["node"]["modifiedIndex"]] = (key, value)

    with cf.ThreadPoolExecutor(threads) as ex:
        list(ex.map(run, range(threads)))
    return acked


def test_stream_watch_sees_every_event_in_order_and_resumes_from_history(
    grove_stream: KVBackend, kv_prefix: str
) -> None:
    b = grove_stream
    start = index_of(b, 1) + 1
    stream = StreamReader(b, kv_prefix, start, i=1)
    assert stream.status == 200, stream.resp.read()
    try:
        acked = _concurrent_writes(b, kv_prefix, 500)
        events = stream.wait(500)
    finally:
        stream.close()
    indexes = [ev["node"]["modifiedIndex"] for ev in events[:500]]
    assert indexes == sorted(acked), "the stream must carry every write once, in index order"
    assert [(ev["node"]["key"], ev["node"]["value"]) for ev in events[:500]] == [
        acked[i] for i in sorted(acked)
    ]
    assert all(ev["action"] == "set" for ev in events[:500])
    assert len(events) == 500

    # any index still in the history can be a starting point: the same events from there on
    from_here = indexes[-STREAM_HISTORY // 2]
    again = StreamReader(b, kv_prefix, from_here, i=2)
    try:
        tail = again.wait(STREAM_HISTORY // 2)
    finally:
        again.close()
    assert tail == events[-STREAM_HISTORY // 2 :]

    # the oldest writes have left the history: 401 "outdated and cleared", as etcd says it
    r = requests.get(
        b.keys_url(kv_prefix),
        params={"wait": "true", "stream": "true", "recursive": "true", "waitIndex": str(indexes[0])},
        timeout=10,
    )
    body = etcd_body(r)
    assert r.status_code == 400 and body["errorCode"] == 401, body
    assert body["message"] == "The event in requested index is outdated and cleared"


def test_stream_watch_lines_are_complete_etcd_events(grove_stream: KVBackend, kv_prefix: str) -> None:
    b = grove_stream
    start = index_of(b, 0) + 1
    stream = StreamReader(b, kv_prefix, start)
    try:
        n1 = put(b, f"{kv_prefix}/a", "1").json()["node"]
        n2 = requests.put(
            b.keys_url(f"{kv_prefix}/a"), params={"prevValue": "1"}, data={"value": "2"}, timeout=10
        )
        n3 = requests.delete(b.keys_url(f"{kv_prefix}/a"), timeout=10)
        ttl = requests.put(b.keys_url(f"{kv_prefix}/t"), data={"value": "x", "ttl": "1"}, timeout=10).json()[
            "node"
        ]
        events = stream.wait(5)
    finally:
        stream.close()
    assert [e["action"] for e in events] == ["set", "compareAndSwap", "delete", "set", "expire"]
    assert events[0]["node"] == n1
    assert events[1]["node"] == n2.json()["node"] and events[1]["prevNode"] == n1
    assert events[2]["node"] == n3.json()["node"]
    assert events[3]["node"] == ttl and events[4]["node"]["key"] == f"{kv_prefix}/t"


# --- membership ----------------------------------------------------------------------------------


class Writer:
    """Writes unique keys through one member in a loop; every write must succeed."""

    def __init__(self, b: KVBackend, prefix: str, member: int) -> None:
        self.b, self.prefix, self.member = b, prefix, member
        self.acked: dict[str, str] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        s = requests.Session()
        n = 0
        while not self.stop.is_set():
            key = f"{self.prefix}/w{n:05d}"
            try:
                r = s.put(self.b.keys_url(key, self.member), data={"value": str(n)}, timeout=10)
                if r.status_code in (200, 201):
                    self.acked[key] = str(n)
                else:
                    self.errors.append(f"{r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                self.errors.append(repr(exc))
            n += 1
            time.sleep(0.01)  # pacing of the background writer, not a wait for an outcome

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def _add_member(b: KVBackend, base: str, name: str, how: str):
    existing = ",".join(f"{n}={u}" for n, u in zip(b.names, b.peer_urls))
    member = spawn_member(
        b.kind, name, base, initial_cluster=f"{existing},{name}={{self}}", initial_cluster_state="existing",
        start=False,
    )  # fmt: skip
    if how == "http":
        # etcd refuses membership changes for a few seconds after start ("unhealthy cluster")
        resp = wait_for(
            lambda: (
                (
                    r := requests.post(
                        b.url() + "/v2/members", json={"peerURLs": [member.peer_url]}, timeout=10
                    )
                ).status_code
                == 201
                and r
            ),
            30,
            "POST /v2/members to add the member",
            interval=0.5,
        )
        body = resp.json()
        assert body["peerURLs"] == [member.peer_url] and body["name"] == "" and body["clientURLs"] == []
        new_id = body["id"]
    else:
        proc = wait_for(
            lambda: (
                (p := grove_kv("member", "add", name, member.peer_url, "--endpoints", b.endpoints)).returncode
                == 0
                and p
            ),
            30,
            "grove kv member add to succeed",
            interval=0.5,
        )
        listed = grove_kv("member", "list", "--endpoints", b.endpoints)
        assert listed.returncode == 0, listed.stderr
        line = next(ln for ln in listed.stdout.splitlines() if member.peer_url in ln)
        new_id = line.split(":")[0].split("[")[0].strip()
        assert new_id in proc.stdout, proc.stdout
    b.extra_members.append(member)
    member.start()
    member.wait_healthy()
    return member, new_id


def _remove_member(b: KVBackend, member_id: str, how: str, via: int) -> None:
    if how == "http":
        r = wait_for(
            lambda: (
                (r := requests.delete(f"{b.url(via)}/v2/members/{member_id}", timeout=10)).status_code == 204
                and r
            ),
            30,
            "DELETE /v2/members/ID to answer 204",
            interval=0.5,
        )
        assert r.text == ""
    else:
        p = wait_for(
            lambda: (
                (p := grove_kv("member", "remove", member_id, "--endpoints", b.url(via))).returncode == 0
                and p
            ),
            30,
            "grove kv member remove to succeed",
            interval=0.5,
        )
        assert member_id in p.stdout


@pytest.mark.parametrize("kind,how", [("etcd", "http"), ("grove", "http"), ("grove", "cli")])
def test_add_a_fourth_member_and_remove_one_while_writing(
    kind: str, how: str, tmp_base: str, kv_prefix: str
) -> None:
    b = start_backend(kind)
    writer = None
    try:
        writer = Writer(b, kv_prefix, 0)
        wait_for(lambda: len(writer.acked) >= 5, 10, "the writer to get going")
        member, new_id = _add_member(b, tmp_base, "m3extra", how)

        def new_member_listed() -> bool:
            m = members_by_id(b.url()).get(new_id)
            return m is not None and m["name"] == "m3extra" and m["clientURLs"] == [member.client_url]

        wait_for(new_member_listed, 20, "the new member to publish its name and client URL")
        assert len(members_by_id(b.url())) == 4
        assert members_by_id(b.url())[new_id]["peerURLs"] == [member.peer_url]
        # the new member gets the data written before and during its join
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) > n + 5, 10, "more writes")
        written = set(writer.acked)
        wait_for(
            lambda: written <= set(keys_under(member.client_url, kv_prefix)), 20, "the new member to catch up"
        )

        # remove an original follower (not the one the writer uses) through another member
        leader = b.leader_index(timeout=20, members=[0, 1, 2])
        victim = next(i for i in (1, 2) if i != leader)
        victim_id = b.member_ids()[b.names[victim]]
        _remove_member(b, victim_id, how, via=0)
        wait_for(
            lambda: victim_id not in members_by_id(b.url()), 20, "the removed member to leave /v2/members"
        )
        wait_for(
            lambda: not b.is_running(victim),
            30,
            "the removed member to shut itself down (etcd's do)",
            detail=lambda: f"end of {b.names[victim]}'s log:\n{b.log(victim)[-1500:]}",
        )
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) > n + 10, 15, "writes after the removal")
        writer.finish()
        assert writer.errors == [], writer.errors[:5]
        final = values(tree(b, kv_prefix, 0, quorum=True))
        assert all(final.get(k) == v for k, v in writer.acked.items())
        everything = set(writer.acked)
        wait_for(
            lambda: everything <= set(keys_under(member.client_url, kv_prefix)),
            20,
            "the fourth member to have every acknowledged write",
        )
        if how == "http":
            _remove_through_itself(b, member, new_id)
    finally:
        if writer is not None:
            writer.finish()
        stop_backend(b)


def members_by_id(url: str) -> dict[str, dict]:
    doc = get_json(url + "/v2/members") or {"members": []}
    return {m["id"]: m for m in doc["members"]}


def keys_under(client_url: str, prefix: str) -> dict[str, str]:
    r = requests.get(f"{client_url}/v2/keys{prefix}", params={"recursive": "true"}, timeout=5)
    return values(r.json()) if r.status_code == 200 else {}


def _remove_through_itself(b: KVBackend, member, member_id: str) -> None:
    """etcdctl may send `member remove` to the member being removed: it must leave and exit."""
    answers = []

    def removed() -> bool:
        if member.running:
            try:
                r = requests.delete(f"{member.client_url}/v2/members/{member_id}", timeout=10)
                answers.append((r.status_code, r.text[:200]))
            except requests.RequestException as exc:
                answers.append(repr(exc))
        return member_id not in members_by_id(b.url())

    wait_for(removed, 30, "the member to be removed through its own endpoint", interval=0.5)
    wait_for(lambda: not member.running, 30, "the member removed through itself to exit")
    # etcd answers 500 while it considers the cluster unhealthy, then 204 once it removes the member
    assert all(a[0] in (204, 500) for a in answers if isinstance(a, tuple)), answers
    assert put(b, "/after-self-removal", "ok").status_code in (200, 201)


# --- discovery -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "members_kind,store_kind", [("etcd", "etcd"), ("grove", "grove"), ("grove", "etcd"), ("etcd", "grove")]
)
def test_discovery_bootstrap(members_kind: str, store_kind: str, _kv_pool, tmp_base: str) -> None:
    store = _kv_pool.get(store_kind)
    token = uuid.uuid4().hex
    url = f"{store.url()}/v2/keys/discovery/{token}"
    r = requests.put(f"{url}/_config/size", data={"value": "3"}, timeout=10)
    assert r.status_code == 201, r.text
    members = []
    try:
        for n in range(3):
            members.append(spawn_member(members_kind, f"d{n}", tmp_base, discovery=url, token=token))
        for m in members:
            m.wait_healthy(timeout=60)
        for m in members:

            def formed(m=m) -> dict | None:
                found = members_by_id(m.client_url)
                return found if len(found) == 3 and all(x["name"] for x in found.values()) else None

            doc = {"members": list(wait_for(formed, 30, "three named members").values())}
            assert {x["name"] for x in doc["members"]} == {"d0", "d1", "d2"}
            assert {x["peerURLs"][0] for x in doc["members"]} == {m.peer_url for m in members}
        r = requests.put(members[0].client_url + "/v2/keys/formed", data={"value": "yes"}, timeout=10)
        assert r.status_code == 201, r.text
        for m in members:
            got = requests.get(m.client_url + "/v2/keys/formed", params={"quorum": "true"}, timeout=10).json()
            assert got["node"]["value"] == "yes"
        # the discovery directory holds one registration per member, as etcd's protocol has it
        registered = requests.get(url, timeout=10).json()["node"]["nodes"]
        regs = [n["value"] for n in registered if not n["key"].endswith("/_config")]
        assert sorted(regs) == sorted(f"{m.name}={m.peer_url}" for m in members)
    finally:
        for m in members:
            m.stop()
        if os.environ.get("KVTEST_KEEP_LOGS"):
            for m in members:
                print(m.log())
