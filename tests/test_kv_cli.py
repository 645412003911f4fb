"""`grove kv get|set|mk|update|rm|mkdir|ls|watch|member list|endpoint health` as a user runs them.

The CLI is a small etcdctl (v2) for people who do not have etcdctl, so its output, its one-line
`Error:  CODE: MESSAGE (CAUSE) [INDEX]` errors and its exit codes are etcdctl's; and since it is
only a client, it must work against real etcd as well as against grove: every test runs on both.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import pytest
import requests

pytest.register_assert_rewrite("tests.kvbackends")  # before the import: keep pytest's assert messages

from tests.kvbackends import (  # noqa: E402
    MEMBER_LINE,
    ROOT,
    KVBackend,
    LineReader,
    etcdctl,
    grove_kv,
    require_etcdctl,
)

pytest_plugins = ["tests.kvbackends"]  # the kv_cluster, kv_prefix, ... fixtures


def run(b: KVBackend, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    p = grove_kv(*args, "--endpoints", b.endpoints, env=env)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, p.stdout, p.stderr


def expect_ok(b: KVBackend, *args: str) -> str:
    rc, out, err = run(b, *args)
    assert rc == 0, f"grove kv {' '.join(args)} -> rc={rc}\nstdout: {out}\nstderr: {err}"
    return out


def expect_error(b: KVBackend, code: int, message: str, cause: str, *args: str) -> None:
    rc, out, err = run(b, *args)
    pattern = rf"Error:  {code}: {re.escape(message)} \({re.escape(cause)}\) \[\d+\]"
    assert rc == 4 and out == "" and re.fullmatch(pattern, err.strip()), (
        f"rc={rc}\nstdout: {out}\nstderr: {err}"
    )


# reads that check what a command wrote go through the log: the command may have used another member
QUORUM = {"quorum": "true"}


def current_index(b: KVBackend) -> int:
    return int(requests.get(b.url() + "/v2/keys/", timeout=5).headers["X-Etcd-Index"])


def test_swap_ttl_and_quorum_flags(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/k"
    assert expect_ok(b, "set", k, "v1") == "v1\n"
    assert expect_ok(b, "get", "--quorum", k) == "v1\n"
    assert expect_ok(b, "set", "--swap-with-value", "v1", k, "v2") == "v2\n"
    expect_error(b, 101, "Compare failed", "[zz != v2]", "set", "--swap-with-value", "zz", k, "y")
    index = requests.get(b.keys_url(k), params=QUORUM, timeout=5).json()["node"]["modifiedIndex"]
    assert expect_ok(b, "set", "--swap-with-index", str(index), k, "v3") == "v3\n"
    assert expect_ok(b, "set", "--ttl", "100", k, "leased") == "leased\n"
    node = requests.get(b.keys_url(k), params=QUORUM, timeout=5).json()["node"]
    assert node["value"] == "leased" and 0 < node["ttl"] <= 100


def test_errors_name_what_etcd_names(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    # the cause is the first path component that is missing, as etcd reports it
    expect_error(b, 100, "Key not found", kv_prefix, "get", f"{kv_prefix}/missing/below")
    expect_ok(b, "mkdir", f"{kv_prefix}/d")
    expect_error(b, 102, "Not a file", f"{kv_prefix}/d", "set", f"{kv_prefix}/d", "v")


def test_directories_and_ls(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, d = kv_cluster, f"{kv_prefix}/d"
    assert expect_ok(b, "mkdir", "--ttl", "100", f"{kv_prefix}/t") == ""
    node = requests.get(b.keys_url(f"{kv_prefix}/t"), params=QUORUM, timeout=5).json()["node"]
    assert node["dir"] is True and 0 < node["ttl"] <= 100
    for key in ("b/c", "a", "_hidden"):
        requests.put(b.keys_url(f"{d}/{key}"), data={"value": "v"}, timeout=5).raise_for_status()
    assert (
        expect_ok(b, "ls", "--recursive", "--sort", "-p", kv_prefix)
        == f"{d}/\n{d}/a\n{d}/b/\n{d}/b/c\n{kv_prefix}/t/\n"
    )
    assert sorted(expect_ok(b, "ls", d).splitlines()) == [f"{d}/a", f"{d}/b"]


def test_rm_with_index(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/k"
    index = requests.put(b.keys_url(k), data={"value": "x"}, timeout=5).json()["node"]["modifiedIndex"]
    expect_error(
        b, 101, "Compare failed", f"[{index + 5} != {index}]", "rm", "--with-index", str(index + 5), k
    )
    # etcdctl prints the (empty) value of the compareAndDelete node, i.e. an empty line
    assert expect_ok(b, "rm", "--with-index", str(index), k) == "\n"
    assert requests.get(b.keys_url(k), params=QUORUM, timeout=5).status_code == 404


def test_watch_after_index(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/w"
    before = current_index(b)
    expect_ok(b, "set", k, "one")
    expect_ok(b, "set", k, "two")
    assert expect_ok(b, "watch", "--after-index", str(before + 1), k) == "two\n"
    # etcdctl prints "[action] key" before the value when watching recursively
    assert (
        expect_ok(b, "watch", "--recursive", "--after-index", str(before), kv_prefix) == f"[set] {k}\none\n"
    )


def test_watch_waits_for_the_next_change(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, k = kv_cluster, f"{kv_prefix}/w"
    result: dict = {}

    def watch() -> None:
        result["p"] = grove_kv("watch", "--endpoints", b.endpoints, "--after-index", str(current_index(b)), k)

    t = threading.Thread(target=watch)
    t.start()
    expect_ok(b, "set", f"{kv_prefix}/other", "no")
    expect_ok(b, "set", k, "yes")
    t.join(timeout=20)
    assert result["p"].returncode == 0 and result["p"].stdout == "yes\n", result["p"]


def test_watch_forever(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    args = ["watch", "--forever", "--recursive", "--after-index", str(current_index(b)), kv_prefix]
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "grove.cli", "kv", *args, "--endpoints", b.endpoints],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
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
        proc.kill()
        proc.wait(timeout=10)


def test_member_list(kv_cluster: KVBackend) -> None:
    b = kv_cluster
    leader = b.leader_index()
    ids = b.member_ids()
    lines = expect_ok(b, "member", "list").splitlines()
    assert len(lines) == b.size
    seen = {}
    for line in lines:
        m = MEMBER_LINE.fullmatch(line)
        assert m, f"not etcdctl's member list format: {line!r}"
        seen[m.group(2)] = m.groups()
    for i, name in enumerate(b.names):
        mid, _, peer, client, is_leader = seen[name]
        assert (mid, peer, client) == (ids[name], b.peer_urls[i], b.client_urls[i])
        assert is_leader == ("true" if i == leader else "false")


def test_endpoint_health(kv_cluster: KVBackend) -> None:
    b = kv_cluster
    out = expect_ok(b, "endpoint", "health")
    lines = out.splitlines()
    assert len(lines) == b.size
    for url in b.client_urls:
        assert any(re.match(rf"{re.escape(url)} is healthy\b", ln) for ln in lines), out
    dead = "http://127.0.0.1:1"
    p = grove_kv("endpoint", "health", "--endpoints", f"{b.url()},{dead}")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    text = p.stdout + p.stderr
    assert re.search(rf"^{re.escape(b.url())} is healthy\b", text, re.MULTILINE), text
    assert re.search(rf"^{re.escape(dead)} is unhealthy\b", text, re.MULTILINE), text


def test_endpoints_from_the_environment(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    for var in ("GROVE_KV_ENDPOINTS", "ETCDCTL_ENDPOINTS"):
        env = {k: v for k, v in os.environ.items() if k not in ("GROVE_KV_ENDPOINTS", "ETCDCTL_ENDPOINTS")}
        env[var] = b.endpoints
        env["PYTHONPATH"] = ROOT
        p = subprocess.run(
            [sys.executable, "-m", "grove.cli", "kv", "set", f"{kv_prefix}/{var}", "env"],
            check=False, capture_output=True, text=True, timeout=20, env=env, cwd=ROOT,
        )  # fmt: skip
        assert p.returncode == 0 and p.stdout == "env\n", (var, p.stdout, p.stderr)
        assert (
            requests.get(b.keys_url(f"{kv_prefix}/{var}"), params=QUORUM, timeout=5).json()["node"]["value"]
            == "env"
        )


def test_unreachable_cluster_is_one_error_line(tmp_path) -> None:
    p = grove_kv("get", "--endpoints", "http://127.0.0.1:1", "/x", timeout=60)
    assert p.returncode != 0 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), p.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["set", "/only-key"],
        ["set", "--ttl", "abc", "/k", "v"],
        ["rm", "--with-index", "NaN", "/k"],
        ["watch", "--after-index", "-5", "/k"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    p = grove_kv(*args, "--endpoints", "http://127.0.0.1:1")
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.strip(), p.stderr


def test_same_output_as_etcdctl(kv_cluster: KVBackend, kv_prefix: str) -> None:
    """Where etcdctl is installed: one script run by each client in its own directory prints the same."""
    require_etcdctl()
    b = kv_cluster

    def script(p: str) -> list[list[str]]:
        return [
            ["set", f"{p}/a", "1"], ["get", f"{p}/a"], ["mk", f"{p}/a", "2"], ["update", f"{p}/a", "3"],
            ["update", f"{p}/zz", "3"], ["mkdir", f"{p}/d"], ["mkdir", f"{p}/d"], ["set", f"{p}/d/x", "9"],
            ["set", f"{p}/d/_h", "hidden"], ["ls", "--recursive", "--sort", "-p", p], ["get", f"{p}/d"],
            ["rm", f"{p}/d"], ["rm", "--dir", f"{p}/d"], ["rm", "--with-value", "0", f"{p}/a"],
            ["rm", f"{p}/a"], ["get", f"{p}/a"], ["rm", "--recursive", f"{p}/d"], ["ls", p],
            ["set", f"{p}/a/b", "x"],
        ]  # fmt: skip

    def transcript(run_one, p: str) -> list[tuple[int, str, str]]:
        out = []
        for cmd in script(p):
            r = run_one(cmd)
            norm = (r.stdout + "\x00" + r.stderr).replace(p, "<P>")
            norm = re.sub(r"\[\d+\]$", "[N]", norm, flags=re.MULTILINE)
            out.append((r.returncode, *norm.split("\x00")))
        return out

    theirs = transcript(lambda cmd: etcdctl(b, *cmd), f"{kv_prefix}/etcdctl")
    ours = transcript(lambda cmd: grove_kv(*cmd, "--endpoints", b.endpoints), f"{kv_prefix}/grove")
    for cmd, t, o in zip(script("<P>"), theirs, ours):
        assert o == t, f"grove kv {' '.join(cmd)}: {o} but etcdctl: {t}"
