"""`ETCDCTL_API=2 etcdctl` (Debian's etcd-client 3.4) driven as a subprocess against etcd and grove.

grove promises that etcd's own v2 command-line client works unchanged against it. Each test runs
the same commands against both backends and expects etcdctl's output as it is against real etcd:
its stdout, its `Error:  CODE: MESSAGE (CAUSE) [INDEX]` lines and its exit codes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest
import requests

pytest.register_assert_rewrite("tests.kvbackends")  # before the import: keep pytest's assert messages

from tests.kvbackends import (  # noqa: E402
    MEMBER_LINE,
    KVBackend,
    LineReader,
    backend_running,
    etcdctl,
    require_etcdctl,
    spawn_member,
    wait_for,
)

pytest_plugins = ["tests.kvbackends"]  # the kv_cluster, kv_prefix, ... fixtures

pytestmark = pytest.mark.usefixtures("_etcdctl_installed")


@pytest.fixture(scope="module")
def _etcdctl_installed() -> None:
    require_etcdctl()


def run(b: KVBackend, *args: str) -> tuple[int, str, str]:
    p = etcdctl(b, *args)
    return p.returncode, p.stdout, p.stderr


def expect_ok(b: KVBackend, *args: str) -> str:
    rc, out, err = run(b, *args)
    assert rc == 0, f"etcdctl {' '.join(args)} -> rc={rc}\nstdout: {out}\nstderr: {err}"
    return out


def expect_error(b: KVBackend, code: int, message: str, cause: str, *args: str) -> None:
    """etcdctl prints etcd's error as `Error:  CODE: MESSAGE (CAUSE) [INDEX]` and exits with 4."""
    rc, out, err = run(b, *args)
    pattern = rf"Error:  {code}: {re.escape(message)} \({re.escape(cause)}\) \[\d+\]"
    assert rc == 4 and re.fullmatch(pattern, err.strip()), f"etcdctl {' '.join(args)} -> rc={rc}\n{out}{err}"


# reads that check what a command wrote go through the log: the command may have used another member
QUORUM = {"quorum": "true"}


def current_index(b: KVBackend) -> int:
    return int(requests.get(b.url() + "/v2/keys/", timeout=5).headers["X-Etcd-Index"])


def start_etcdctl(b: KVBackend, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "2"
    return subprocess.Popen(
        [require_etcdctl(), "--endpoints", b.endpoints, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


# --- keys ------------------------------------------------------------------------------------------


def test_set_get_mk_update(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/k"
    assert expect_ok(b, "set", k, "v1") == "v1\n"
    assert expect_ok(b, "set", k, "v2") == "v2\n"
    assert expect_ok(b, "get", k) == "v2\n"
    assert expect_ok(b, "get", "--quorum", k) == "v2\n"
    expect_error(b, 100, "Key not found", f"{kv_prefix}/missing", "get", f"{kv_prefix}/missing")
    expect_error(b, 105, "Key already exists", k, "mk", k, "again")
    assert expect_ok(b, "mk", f"{kv_prefix}/new", "nv") == "nv\n"
    assert expect_ok(b, "update", k, "v3") == "v3\n"
    expect_error(b, 100, "Key not found", f"{kv_prefix}/nope", "update", f"{kv_prefix}/nope", "z")
    expect_error(b, 101, "Compare failed", "[zz != v3]", "set", "--swap-with-value", "zz", k, "w")
    assert expect_ok(b, "set", "--swap-with-value", "v3", k, "v4") == "v4\n"
    assert expect_ok(b, "get", k) == "v4\n"


def test_ttl_and_output_formats(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/fmt"
    out = expect_ok(b, "-o", "extended", "set", k, "val")
    m = re.fullmatch(
        r"Key: (\S+)\nCreated-Index: (\d+)\nModified-Index: (\d+)\nTTL: 0\nIndex: (\d+)\n\nval\n", out
    )
    assert m and m.group(1) == k and m.group(2) == m.group(3) == m.group(4), out
    doc = json.loads(expect_ok(b, "-o", "json", "get", k))
    assert doc["action"] == "get" and doc["node"]["key"] == k and doc["node"]["value"] == "val"
    assert doc["node"]["modifiedIndex"] == int(m.group(3))
    assert expect_ok(b, "set", "--ttl", "100", k, "leased") == "leased\n"
    ext = expect_ok(b, "-o", "extended", "get", k)
    ttl = int(re.search(r"^TTL: (\d+)$", ext, re.MULTILINE).group(1))
    assert 90 <= ttl <= 100, ext


def test_directories(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, d = kv_cluster, f"{kv_prefix}/d"
    assert expect_ok(b, "mkdir", d) == ""
    expect_error(b, 105, "Key already exists", d, "mkdir", d)
    expect_error(b, 102, "Not a file", d, "setdir", d)
    assert expect_ok(b, "setdir", f"{kv_prefix}/d2") == ""
    assert expect_ok(b, "updatedir", "--ttl", "100", f"{kv_prefix}/d2") == ""
    assert (
        0 < requests.get(b.keys_url(f"{kv_prefix}/d2"), params=QUORUM, timeout=5).json()["node"]["ttl"] <= 100
    )
    expect_ok(b, "set", f"{d}/b/c", "2")
    expect_ok(b, "set", f"{d}/a", "1")
    assert sorted(expect_ok(b, "ls", d).splitlines()) == [f"{d}/a", f"{d}/b"]
    assert expect_ok(b, "ls", "--recursive", "--sort", "-p", d) == f"{d}/a\n{d}/b/\n{d}/b/c\n"
    assert expect_ok(b, "ls", "--sort", "-p", kv_prefix) == f"{d}/\n{kv_prefix}/d2/\n"
    expect_error(b, 100, "Key not found", f"{kv_prefix}/none", "ls", f"{kv_prefix}/none")
    expect_error(b, 102, "Not a file", d, "rm", d)
    expect_error(b, 108, "Directory not empty", d, "rm", "--dir", d)
    expect_error(b, 108, "Directory not empty", d, "rmdir", d)
    assert expect_ok(b, "rm", "--recursive", d) == ""
    assert expect_ok(b, "rmdir", f"{kv_prefix}/d2") == ""
    expect_error(b, 100, "Key not found", f"{kv_prefix}/d2", "rmdir", f"{kv_prefix}/d2")
    assert expect_ok(b, "mkdir", f"{kv_prefix}/e") == ""
    assert expect_ok(b, "rm", "--dir", f"{kv_prefix}/e") == ""


def test_rm_with_value_and_index(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/k"
    expect_ok(b, "set", k, "x")
    assert expect_ok(b, "rm", k) == "PrevNode.Value: x\n"
    expect_error(b, 100, "Key not found", k, "rm", k)
    expect_ok(b, "set", k, "x")
    index = json.loads(expect_ok(b, "-o", "json", "get", k))["node"]["modifiedIndex"]
    expect_error(b, 101, "Compare failed", "[y != x]", "rm", "--with-value", "y", k)
    expect_error(
        b, 101, "Compare failed", f"[{index + 5} != {index}]", "rm", "--with-index", str(index + 5), k
    )
    assert (
        expect_ok(b, "rm", "--with-index", str(index), k) == "\n"
    )  # the compareAndDelete node's empty value
    expect_error(b, 100, "Key not found", k, "get", k)
    expect_ok(b, "set", k, "x")
    assert expect_ok(b, "rm", "--with-value", "x", k) == "\n"
    expect_error(b, 100, "Key not found", k, "get", k)


# --- watches ---------------------------------------------------------------------------------------


def test_watch_after_index(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/w"
    before = current_index(b)
    expect_ok(b, "set", k, "one")
    expect_ok(b, "set", k, "two")
    assert expect_ok(b, "watch", "--after-index", str(before), k) == "one\n"
    assert (
        expect_ok(b, "watch", "--recursive", "--after-index", str(before), kv_prefix) == f"[set] {k}\none\n"
    )
    doc = json.loads(expect_ok(b, "-o", "json", "watch", "--after-index", str(before + 1), k))
    assert doc["action"] == "set" and doc["node"]["value"] == "two"


def test_watch_forever(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    proc = start_etcdctl(
        b, "watch", "--forever", "--recursive", "--after-index", str(current_index(b)), kv_prefix
    )
    try:
        reader = LineReader(proc)
        expect_ok(b, "set", f"{kv_prefix}/a", "1")
        expect_ok(b, "set", f"{kv_prefix}/b", "2")
        expect_ok(b, "rm", f"{kv_prefix}/a")
        assert reader.read(6) == [
            f"[set] {kv_prefix}/a", "1",
            f"[set] {kv_prefix}/b", "2",
            f"[delete] {kv_prefix}/a", "PrevNode.Value: 1",
        ]  # fmt: skip
        expect_ok(b, "set", f"{kv_prefix}/c", "3")
        assert reader.read(8)[6:] == [f"[set] {kv_prefix}/c", "3"]
        assert proc.poll() is None, "watch --forever exited"
    finally:
        stop(proc)


def test_exec_watch(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    script = 'echo "EV $ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_MODIFIED_INDEX"'
    # exec-watch ignores --after-index (etcdctl 3.4), so poke the key until the watch is in place
    proc = start_etcdctl(b, "exec-watch", "--recursive", kv_prefix, "--", "sh", "-c", script)
    try:
        reader = LineReader(proc)
        deadline = time.monotonic() + 15
        while reader.lines.empty():
            assert time.monotonic() < deadline and proc.poll() is None, "exec-watch never ran its command"
            expect_ok(b, "set", f"{kv_prefix}/warmup", "w")
            time.sleep(0.2)  # pacing of the pokes, not a wait for an outcome
        i1 = json.loads(expect_ok(b, "-o", "json", "set", f"{kv_prefix}/x", "1"))["node"]["modifiedIndex"]
        i2 = json.loads(expect_ok(b, "-o", "json", "set", f"{kv_prefix}/x", "2"))["node"]["modifiedIndex"]
        n = 1
        while reader.read(n)[-1].startswith(f"EV set {kv_prefix}/warmup w "):
            n += 1
        assert reader.read(n + 1)[n - 1 :] == [f"EV set {kv_prefix}/x 1 {i1}", f"EV set {kv_prefix}/x 2 {i2}"]
    finally:
        stop(proc)


# --- cluster -------------------------------------------------------------------------------------

UNSTARTED_LINE = re.compile(r"([0-9a-f]+)\[unstarted\]: peerURLs=(\S+)")


def member_lines(b: KVBackend) -> dict[str, tuple[str, str, str, str]]:
    """name -> (id, peer URLs, client URLs, isLeader); an added member that has not started yet
    has no name and shows as `ID[unstarted]: peerURLs=...`, keyed here as `unstarted:ID`."""
    out = expect_ok(b, "member", "list")
    found = {}
    for line in out.splitlines():
        if m := UNSTARTED_LINE.fullmatch(line):
            found[f"unstarted:{m.group(1)}"] = (m.group(1), m.group(2), "", "false")
            continue
        m = MEMBER_LINE.fullmatch(line)
        assert m, f"unexpected member list line {line!r}"
        found[m.group(2)] = (m.group(1), m.group(3), m.group(4), m.group(5))
    return found


def test_member_list(kv_cluster: KVBackend) -> None:
    b = kv_cluster
    leader = b.leader_index()
    members = member_lines(b)
    ids = b.member_ids()
    assert set(members) == set(b.names)
    for i, name in enumerate(b.names):
        mid, peer, client, is_leader = members[name]
        assert mid == ids[name] and peer == b.peer_urls[i] and client == b.client_urls[i]
        assert is_leader == ("true" if i == leader else "false")


def test_cluster_health(kv_cluster: KVBackend) -> None:
    b = kv_cluster
    out = expect_ok(b, "cluster-health")
    ids = b.member_ids()
    expected = {
        f"member {ids[n]} is healthy: got healthy result from {u}" for n, u in zip(b.names, b.client_urls)
    }
    lines = out.splitlines()
    assert lines[-1] == "cluster is healthy" and set(lines[:-1]) == expected, out


@pytest.mark.parametrize("kind", ["etcd", "grove"])
def test_member_add_and_remove(kind: str, tmp_base: str) -> None:
    with backend_running(kind) as b:
        existing = ",".join(f"{n}={u}" for n, u in zip(b.names, b.peer_urls))
        # etcdctl prints the settings the new member must start with; start it on the URL we gave
        member = spawn_member(
            kind, "extra", tmp_base, initial_cluster=existing + ",extra={self}",
            initial_cluster_state="existing", start=False,
        )  # fmt: skip
        # etcd refuses membership changes until the leader has been connected to everyone for a while
        out = wait_for(
            lambda: (p := etcdctl(b, "member", "add", "extra", member.peer_url)).returncode == 0 and p.stdout,
            30,
            "etcdctl member add to succeed",
            interval=0.5,
        )
        m = re.match(r"Added member named extra with ID ([0-9a-f]+) to cluster\n", out)
        assert m, out
        new_id = m.group(1)
        listed = wait_for(
            lambda: member_lines(b).get(f"unstarted:{new_id}"), 10, "the added member in member list"
        )
        assert listed[1] == member.peer_url
        assert 'ETCD_NAME="extra"' in out and 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out, out
        assert f"extra={member.peer_url}" in out
        b.extra_members.append(member)
        member.start()
        member.wait_healthy()
        lines = wait_for(
            lambda: (ls := member_lines(b)).get("extra", ("", "", "", ""))[2] == member.client_url and ls,
            20,
            "the new member to publish its client URL",
        )
        assert lines["extra"][0] == new_id and len(lines) == 4
        expect_ok(b, "set", "/after-add", "x")
        assert (
            requests.get(member.client_url + "/v2/keys/after-add?quorum=true", timeout=10).json()["node"][
                "value"
            ]
            == "x"
        )

        # --no-sync: ask one of the original members (removing a member through itself is its own test)
        out = expect_ok(b, "--no-sync", "member", "remove", new_id)
        assert out.strip() == f"Removed member {new_id} from cluster"
        wait_for(lambda: "extra" not in member_lines(b), 20, "the member to leave the list")
        expect_ok(b, "set", "/after-remove", "y")
        assert expect_ok(b, "get", "--quorum", "/after-remove") == "y\n"
        b.assert_alive()
