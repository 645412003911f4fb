"""The etcd v2 HTTP API, spoken raw with `requests`, against real etcd 3.4 and against grove.

Every test here runs on both backends: etcd is the reference, so the expectations below (status
codes, `action` names, node fields, error bodies, headers) are what etcd answers. Each test works
under its own key prefix on clusters shared by the whole session.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import http.client
import random
from urllib.parse import urlparse

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

pytest.register_assert_rewrite("tests.kvbackends")  # before the import: keep pytest's assert messages

from tests.kvbackends import (  # noqa: E402
    KVBackend,
    etcd_body,
    wait_for,
)

pytest_plugins = ["tests.kvbackends"]  # the kv_cluster, kv_prefix, ... fixtures

HTTP = requests.Session()
_POOL = cf.ThreadPoolExecutor(8, thread_name_prefix="kv-watch")


def put(b: KVBackend, key: str, i: int = 0, params: dict | None = None, **form) -> requests.Response:
    return HTTP.put(b.keys_url(key, i), params=params, data=form, timeout=10)


def post(b: KVBackend, key: str, i: int = 0, **form) -> requests.Response:
    return HTTP.post(b.keys_url(key, i), data=form, timeout=10)


def get(b: KVBackend, key: str, i: int = 0, **params) -> requests.Response:
    return HTTP.get(b.keys_url(key, i), params=params, timeout=10)


def delete(b: KVBackend, key: str, i: int = 0, **params) -> requests.Response:
    return HTTP.delete(b.keys_url(key, i), params=params, timeout=10)


def ok(resp: requests.Response, status: int | tuple[int, ...] = (200, 201)) -> dict:
    body = etcd_body(resp)
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, f"{resp.request.method} {resp.url} -> {resp.status_code} {body}"
    return body


def etcd_index(resp: requests.Response) -> int:
    assert "X-Etcd-Index" in resp.headers, dict(resp.headers)
    return int(resp.headers["X-Etcd-Index"])


def watch_async(b: KVBackend, key: str, i: int = 0, timeout: float = 15.0, **params) -> cf.Future:
    """A long-poll watch (`wait=true`) running in a thread; the future holds the Response."""
    params = {"wait": "true", **params}
    return _POOL.submit(requests.get, b.keys_url(key, i), params=params, timeout=timeout)


def parse_time(s: str) -> dt.datetime:
    """RFC 3339 with up to nanoseconds (etcd) or microseconds."""
    head, _, frac = s.rstrip("Z").partition(".")
    t = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC)
    return t + dt.timedelta(microseconds=int((frac + "000000")[:6])) if frac else t


def strip_node(node: dict) -> dict:
    """A node without the fields that legitimately differ between runs (indexes, TTL timing)."""
    out = {k: v for k, v in node.items() if k in ("key", "value", "dir")}
    if "nodes" in node:
        out["nodes"] = [strip_node(n) for n in node["nodes"]]
    return out


# --- keys, indexes, headers ----------------------------------------------------------------------


def test_set_get_delete_bodies_indexes_and_headers(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/foo"
    r = put(b, key, value="bar")
    created = ok(r, 201)
    node = created["node"]
    assert created["action"] == "set" and "prevNode" not in created
    assert node["key"] == key and node["value"] == "bar"
    assert node["createdIndex"] == node["modifiedIndex"] == etcd_index(r)
    assert int(r.headers["X-Raft-Index"]) > 0 and int(r.headers["X-Raft-Term"]) > 0
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers.get("X-Etcd-Cluster-ID"), dict(r.headers)

    r = get(b, key)
    got = ok(r, 200)
    assert got == {"action": "get", "node": node}
    assert etcd_index(r) >= node["modifiedIndex"]
    assert int(r.headers["X-Raft-Index"]) >= 1 and int(r.headers["X-Raft-Term"]) >= 1

    # Overwriting answers 200 and the previous node; a set replaces the node, so createdIndex moves too.
    r = put(b, key, value="baz")
    again = ok(r, 200)
    assert again["action"] == "set" and again["prevNode"] == node
    assert again["node"]["value"] == "baz"
    assert again["node"]["modifiedIndex"] > node["modifiedIndex"]
    assert again["node"]["createdIndex"] == again["node"]["modifiedIndex"] == etcd_index(r)

    r = delete(b, key)
    gone = ok(r, 200)
    assert gone["action"] == "delete"
    assert gone["node"]["key"] == key and "value" not in gone["node"]
    assert gone["node"]["createdIndex"] == again["node"]["createdIndex"]
    assert gone["node"]["modifiedIndex"] == etcd_index(r) > again["node"]["modifiedIndex"]
    assert gone["prevNode"] == again["node"]


def test_cluster_id_and_term_are_the_same_on_every_member(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    ok(put(b, f"{kv_prefix}/k", value="v"))
    ids, terms = set(), set()
    for i in range(b.size):
        r = wait_for(
            lambda i=i: (r := get(b, f"{kv_prefix}/k", i)).status_code == 200 and r, 10, "key on member"
        )
        ids.add(r.headers["X-Etcd-Cluster-ID"])
        terms.add(r.headers["X-Raft-Term"])
    assert len(ids) == 1 and len(terms) == 1, (ids, terms)
    cid = ids.pop()
    assert len(cid) <= 16 and int(cid, 16) > 0


def test_missing_key_error_body(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    # The cause names the first path component that is missing, as etcd walks the tree.
    r = get(b, f"{kv_prefix}/nothing/below")
    assert r.status_code == 404
    assert etcd_body(r) == {
        "errorCode": 100,
        "message": "Key not found",
        "cause": kv_prefix,
        "index": etcd_index(r),
    }
    ok(put(b, f"{kv_prefix}/sibling", value="s"))
    r = get(b, f"{kv_prefix}/nothing")
    assert r.status_code == 404
    body = etcd_body(r)
    assert body == {
        "errorCode": 100,
        "message": "Key not found",
        "cause": f"{kv_prefix}/nothing",
        "index": etcd_index(r),
    }
    assert r.headers.get("X-Etcd-Cluster-ID")


def test_create_with_prev_exist_false(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/once"
    r = put(b, key, params={"prevExist": "false"}, value="1")
    body = ok(r, 201)
    assert body["action"] == "create" and body["node"]["value"] == "1"
    r = put(b, key, params={"prevExist": "false"}, value="2")
    assert r.status_code == 412
    assert etcd_body(r) == {
        "errorCode": 105,
        "message": "Key already exists",
        "cause": key,
        "index": etcd_index(r),
    }
    assert ok(get(b, key))["node"]["value"] == "1"


def test_update_with_prev_exist_true(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/u"
    ok(put(b, f"{kv_prefix}/sibling", value="s"))
    r = put(b, key, params={"prevExist": "true"}, value="x")
    assert r.status_code == 404 and etcd_body(r)["errorCode"] == 100 and etcd_body(r)["cause"] == key
    first = ok(put(b, key, value="1"))["node"]
    r = put(b, key, params={"prevExist": "true"}, value="2")
    body = ok(r, 200)
    assert body["action"] == "update"
    assert body["node"]["value"] == "2" and body["prevNode"]["value"] == "1"
    # An update keeps the node: createdIndex stays, modifiedIndex moves.
    assert body["node"]["createdIndex"] == first["createdIndex"]
    assert body["node"]["modifiedIndex"] > first["modifiedIndex"]


def test_compare_and_swap_on_prev_value_and_prev_index(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/cas"
    n1 = ok(put(b, key, value="one"))["node"]

    r = put(b, key, params={"prevValue": "two"}, value="x")
    assert r.status_code == 412
    assert etcd_body(r) == {
        "errorCode": 101, "message": "Compare failed", "cause": "[two != one]", "index": etcd_index(r),
    }  # fmt: skip
    bad_index = n1["modifiedIndex"] + 1000
    r = put(b, key, params={"prevIndex": str(bad_index)}, value="x")
    assert r.status_code == 412
    assert etcd_body(r)["cause"] == f"[{bad_index} != {n1['modifiedIndex']}]"
    r = put(b, key, params={"prevValue": "two", "prevIndex": str(bad_index)}, value="x")
    assert r.status_code == 412
    assert etcd_body(r)["cause"] == f"[two != one] [{bad_index} != {n1['modifiedIndex']}]"

    body = ok(put(b, key, params={"prevValue": "one"}, value="two"), 200)
    assert body["action"] == "compareAndSwap"
    assert body["prevNode"] == n1 and body["node"]["value"] == "two"
    assert body["node"]["createdIndex"] == n1["createdIndex"]
    n2 = body["node"]
    body = ok(put(b, key, params={"prevIndex": str(n2["modifiedIndex"])}, value="three"), 200)
    assert body["action"] == "compareAndSwap" and body["node"]["value"] == "three"

    r = put(b, f"{kv_prefix}/absent", params={"prevValue": "x"}, value="y")
    assert r.status_code == 404 and etcd_body(r)["errorCode"] == 100


def test_compare_and_delete(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/cad"
    node = ok(put(b, key, value="v"))["node"]
    r = delete(b, key, prevValue="w")
    assert r.status_code == 412
    assert etcd_body(r) == {
        "errorCode": 101,
        "message": "Compare failed",
        "cause": "[w != v]",
        "index": etcd_index(r),
    }
    r = delete(b, key, prevIndex=str(node["modifiedIndex"] + 7))
    assert r.status_code == 412
    assert etcd_body(r)["cause"] == f"[{node['modifiedIndex'] + 7} != {node['modifiedIndex']}]"
    body = ok(delete(b, key, prevValue="v"), 200)
    assert body["action"] == "compareAndDelete" and body["prevNode"] == node
    assert body["node"]["key"] == key
    node = ok(put(b, key, value="again"))["node"]
    body = ok(delete(b, key, prevIndex=str(node["modifiedIndex"])), 200)
    assert body["action"] == "compareAndDelete"
    assert get(b, key).status_code == 404


# --- directories, listing, hidden keys, in-order keys ----------------------------------------------


def test_directories(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, d = kv_cluster, f"{kv_prefix}/dir"
    r = put(b, d, dir="true")
    body = ok(r, 201)
    assert body["action"] == "set"
    assert body["node"] == {
        "key": d,
        "dir": True,
        "createdIndex": etcd_index(r),
        "modifiedIndex": etcd_index(r),
    }

    r = put(b, d, dir="true")  # a directory that exists cannot be set again
    assert r.status_code == 403 and etcd_body(r)["errorCode"] == 102 and etcd_body(r)["cause"] == d
    r = put(b, d, params={"prevExist": "false"}, dir="true")
    assert r.status_code == 412 and etcd_body(r)["errorCode"] == 105

    ok(put(b, f"{d}/a", value="1"))
    ok(put(b, f"{d}/sub/deep", value="2"))  # parents are created on the way
    listing = ok(get(b, d))["node"]
    assert listing["dir"] is True and listing["key"] == d
    children = {n["key"]: n for n in listing["nodes"]}
    assert set(children) == {f"{d}/a", f"{d}/sub"}
    assert children[f"{d}/sub"]["dir"] is True and "nodes" not in children[f"{d}/sub"]
    assert children[f"{d}/a"]["value"] == "1"

    r = put(b, d, value="x")
    assert r.status_code == 403
    assert etcd_body(r) == {"errorCode": 102, "message": "Not a file", "cause": d, "index": etcd_index(r)}
    r = put(b, f"{d}/a/below", value="x")
    assert r.status_code == 400
    assert etcd_body(r) == {
        "errorCode": 104,
        "message": "Not a directory",
        "cause": f"{d}/a",
        "index": etcd_index(r),
    }
    r = delete(b, d)
    assert r.status_code == 403 and etcd_body(r)["errorCode"] == 102
    r = delete(b, f"{d}/sub", dir="true")
    assert r.status_code == 403
    assert etcd_body(r) == {
        "errorCode": 108, "message": "Directory not empty", "cause": f"{d}/sub", "index": etcd_index(r),
    }  # fmt: skip

    ok(put(b, f"{d}/empty", dir="true"))
    body = ok(delete(b, f"{d}/empty", dir="true"), 200)
    assert body["action"] == "delete" and body["node"]["dir"] is True and body["prevNode"]["dir"] is True

    body = ok(delete(b, d, recursive="true"), 200)
    assert body["action"] == "delete" and body["node"]["key"] == d and body["node"]["dir"] is True
    for k in (d, f"{d}/a", f"{d}/sub/deep"):
        assert get(b, k).status_code == 404


def test_recursive_sorted_listing(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    names = ["m", "b", "z", "a", "k/x", "k/c", "k/q/1", "c"]
    random.Random(7).shuffle(names)
    for n in names:
        ok(put(b, f"{kv_prefix}/{n}", value=n))
    tree = ok(get(b, kv_prefix, recursive="true", sorted="true"))
    assert tree["action"] == "get"
    p = kv_prefix
    assert strip_node(tree["node"]) == {
        "key": p,
        "dir": True,
        "nodes": [
            {"key": f"{p}/a", "value": "a"},
            {"key": f"{p}/b", "value": "b"},
            {"key": f"{p}/c", "value": "c"},
            {
                "key": f"{p}/k",
                "dir": True,
                "nodes": [
                    {"key": f"{p}/k/c", "value": "k/c"},
                    {"key": f"{p}/k/q", "dir": True, "nodes": [{"key": f"{p}/k/q/1", "value": "k/q/1"}]},
                    {"key": f"{p}/k/x", "value": "k/x"},
                ],
            },
            {"key": f"{p}/m", "value": "m"},
            {"key": f"{p}/z", "value": "z"},
        ],
    }
    # every node carries its indexes, recursively
    stack = [tree["node"]]
    while stack:
        n = stack.pop()
        assert isinstance(n["createdIndex"], int) and n["modifiedIndex"] >= n["createdIndex"], n
        stack.extend(n.get("nodes", []))
    # without recursive=true sub-directories are listed but not expanded
    flat = ok(get(b, kv_prefix, sorted="true"))["node"]
    assert [n["key"] for n in flat["nodes"]] == [f"{p}/{x}" for x in ("a", "b", "c", "k", "m", "z")]
    assert all("nodes" not in n for n in flat["nodes"])


def test_hidden_keys_are_not_listed(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, p = kv_cluster, kv_prefix
    ok(put(b, f"{p}/visible", value="1"))
    ok(put(b, f"{p}/_hidden", value="2"))
    ok(put(b, f"{p}/_hdir/inner", value="3"))
    ok(put(b, f"{p}/sub/_h", value="4"))
    listing = ok(get(b, p, recursive="true", sorted="true"))["node"]
    assert strip_node(listing) == {
        "key": p,
        "dir": True,
        "nodes": [{"key": f"{p}/sub", "dir": True}, {"key": f"{p}/visible", "value": "1"}],
    }
    assert ok(get(b, f"{p}/_hidden"))["node"]["value"] == "2"
    assert ok(get(b, f"{p}/_hdir/inner"))["node"]["value"] == "3"
    assert [n["key"] for n in ok(get(b, f"{p}/_hdir"))["node"]["nodes"]] == [f"{p}/_hdir/inner"]


def test_in_order_keys_with_post(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, q = kv_cluster, f"{kv_prefix}/queue"
    created = []
    for v in ("first", "second", "third"):
        r = post(b, q, value=v)
        body = ok(r, 201)
        assert body["action"] == "create"
        node = body["node"]
        assert node["value"] == v and node["createdIndex"] == node["modifiedIndex"] == etcd_index(r)
        assert node["key"] == f"{q}/{node['createdIndex']:020d}"
        created.append(node)
    assert [n["createdIndex"] for n in created] == sorted(n["createdIndex"] for n in created)
    listing = ok(get(b, q, sorted="true"))["node"]
    assert listing["dir"] is True
    assert [(n["key"], n["value"]) for n in listing["nodes"]] == [(n["key"], n["value"]) for n in created]
    # POST onto a file is an error, like etcd's
    r = post(b, created[0]["key"], value="x")
    assert (
        r.status_code == 400
        and etcd_body(r)["errorCode"] == 104
        and etcd_body(r)["cause"] == created[0]["key"]
    )


def test_keys_with_spaces_and_unicode_round_trip(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    for name, value in (("with space", "v 1"), ("ünïcødé", "wert ✓"), ("a+b=c&d", "x=y&z")):
        key = f"{kv_prefix}/{name}"
        assert ok(put(b, key, value=value))["node"]["key"] == key
        node = ok(get(b, key))["node"]
        assert (node["key"], node["value"]) == (key, value)


# --- TTL -----------------------------------------------------------------------------------------


def test_ttl_fields(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/ttl"
    before = dt.datetime.now(dt.UTC)
    node = ok(put(b, key, value="v", ttl="100"), 201)["node"]
    assert node["ttl"] == 100
    exp = parse_time(node["expiration"])
    assert dt.timedelta(seconds=95) < exp - before < dt.timedelta(seconds=105), node
    got = ok(get(b, key))["node"]
    assert 0 < got["ttl"] <= 100 and got["expiration"] == node["expiration"]
    # setting without ttl makes the key permanent again
    plain = ok(put(b, key, value="w"))["node"]
    assert "ttl" not in plain and "expiration" not in plain


def test_ttl_key_expires_on_every_member_at_the_same_index(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/eph"
    node = ok(put(b, key, value="soon", ttl="1"), 201)["node"]
    watches = [watch_async(b, key, i, waitIndex=str(node["modifiedIndex"] + 1)) for i in range(b.size)]
    events = [ok(w.result(timeout=20), 200) for w in watches]
    for ev in events:
        assert ev["action"] == "expire", ev
        assert ev["node"]["key"] == key and "value" not in ev["node"]
        assert ev["node"]["createdIndex"] == node["createdIndex"]
        assert ev["prevNode"]["value"] == "soon"
    assert len({ev["node"]["modifiedIndex"] for ev in events}) == 1, events
    for i in range(b.size):
        r = get(b, key, i)
        assert r.status_code == 404 and etcd_body(r)["errorCode"] == 100


def test_ttl_directory_expires_with_its_children(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, d = kv_cluster, f"{kv_prefix}/tdir"
    node = ok(put(b, d, dir="true", ttl="1"), 201)["node"]
    assert node["dir"] is True and node["ttl"] == 1
    ok(put(b, f"{d}/child", value="c"))
    ev = ok(watch_async(b, d, waitIndex=str(node["modifiedIndex"] + 1)).result(timeout=20))
    assert ev["action"] == "expire" and ev["node"]["key"] == d and ev["node"]["dir"] is True
    assert get(b, f"{d}/child").status_code == 404


def test_refresh_extends_ttl_without_a_watch_event(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/lease"
    n1 = ok(put(b, key, value="held", ttl="1"), 201)["node"]
    r = put(b, key, params={"refresh": "true", "prevExist": "true"}, ttl="30")
    body = ok(r, 200)
    assert body["node"]["value"] == "held" and body["node"]["ttl"] == 30
    assert body["node"]["createdIndex"] == n1["createdIndex"]
    assert parse_time(body["node"]["expiration"]) > parse_time(n1["expiration"])
    refreshed_at = body["node"]["modifiedIndex"]
    # The refresh is not an event: a watch from just after the set sees the next real change.
    ok(put(b, f"{kv_prefix}/marker", value="m"))
    ok(put(b, key, params={"prevExist": "true"}, value="changed", ttl="30"))
    ev = ok(watch_async(b, key, waitIndex=str(n1["modifiedIndex"] + 1)).result(timeout=10))
    assert ev["action"] == "update" and ev["node"]["value"] == "changed", ev
    assert ev["node"]["modifiedIndex"] > refreshed_at
    # the original one-second TTL is gone: the key outlives it
    ok(get(b, key))

    r = put(b, key, params={"refresh": "true"}, ttl="5", value="nope")
    assert r.status_code == 400 and etcd_body(r)["errorCode"] == 211
    r = put(b, key, params={"refresh": "true"})
    assert r.status_code == 400 and etcd_body(r)["errorCode"] == 212


# --- watches -------------------------------------------------------------------------------------


def test_long_poll_watch_sees_the_next_change(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/w"
    start = etcd_index(get(b, "/"))
    fut = watch_async(b, key, i=b.size - 1, waitIndex=str(start + 1))
    ok(put(b, f"{kv_prefix}/other", value="no"))  # not the watched key
    written = ok(put(b, key, value="yes"))["node"]
    r = fut.result(timeout=15)
    ev = ok(r, 200)
    assert ev == {"action": "set", "node": written}
    assert etcd_index(r) >= start


def test_recursive_watch_and_wait_index_from_history(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, d = kv_cluster, f"{kv_prefix}/tree"
    n1 = ok(put(b, f"{d}/a", value="1"))["node"]
    n2 = ok(put(b, f"{d}/b/c", value="2"))["node"]
    n3 = ok(delete(b, f"{d}/a"))["node"]
    # waitIndex in the past replays history, one event per poll, in index order
    seen = []
    idx = n1["modifiedIndex"]
    for _ in range(3):
        ev = ok(watch_async(b, d, waitIndex=str(idx), recursive="true").result(timeout=10))
        seen.append((ev["action"], ev["node"]["key"], ev["node"]["modifiedIndex"]))
        idx = ev["node"]["modifiedIndex"] + 1
    assert seen == [
        ("set", f"{d}/a", n1["modifiedIndex"]),
        ("set", f"{d}/b/c", n2["modifiedIndex"]),
        ("delete", f"{d}/a", n3["modifiedIndex"]),
    ]
    # without recursive a watch on the directory does not see changes of its children
    fut = watch_async(b, d, waitIndex=str(n1["modifiedIndex"]), timeout=15)
    ok(put(b, f"{d}/later", value="x"))
    ok(delete(b, d, recursive="true"))
    ev = ok(fut.result(timeout=15))
    assert ev["action"] == "delete" and ev["node"]["key"] == d


def test_watch_of_a_cleared_index_answers_401(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    first = ok(put(b, f"{kv_prefix}/h0", value="0"))["node"]["modifiedIndex"]
    n = b.history_size + 20
    with cf.ThreadPoolExecutor(16) as ex:
        codes = set(
            ex.map(
                lambda i: (
                    requests.put(
                        b.keys_url(f"{kv_prefix}/h{i % 16}"), data={"value": i}, timeout=20
                    ).status_code
                ),
                range(n),
            )
        )
    assert codes <= {200, 201}, codes
    r = get(b, kv_prefix, wait="true", waitIndex=str(first), recursive="true")
    assert r.status_code == 400
    body = etcd_body(r)
    assert body["errorCode"] == 401
    assert body["message"] == "The event in requested index is outdated and cleared"
    assert body["cause"].startswith("the requested history has been cleared [")
    assert body["index"] == etcd_index(r) >= first + n


# --- bad input: etcd's error bodies, and the member stays up ---------------------------------------

# (method, key under the prefix, query, form, expected status, errorCode, message, cause or None)
# The expectations are etcd 3.4's answers.
TTL_NAN = "The given TTL in POST form is not a number"
INDEX_NAN = "The given index in POST form is not a number"
BAD_INPUT = [
    ("PUT", "k", {}, {"value": "x", "ttl": "abc"}, 400, 202, TTL_NAN,
     'invalid value for "ttl"'),
    ("PUT", "k", {}, {"value": "x", "ttl": "-1"}, 400, 202, TTL_NAN,
     'invalid value for "ttl"'),
    ("PUT", "k", {"prevIndex": "abc"}, {"value": "x"}, 400, 203, INDEX_NAN,
     'invalid value for "prevIndex"'),
    ("PUT", "k", {"prevIndex": "-3"}, {"value": "x"}, 400, 203, INDEX_NAN,
     'invalid value for "prevIndex"'),
    ("DELETE", "k", {"prevIndex": "NaN"}, {}, 400, 203, INDEX_NAN,
     'invalid value for "prevIndex"'),
    ("GET", "k", {"wait": "true", "waitIndex": "abc"}, {}, 400, 203, INDEX_NAN,
     'invalid value for "waitIndex"'),
    ("GET", "k", {"recursive": "maybe"}, {}, 400, 209, "Invalid field", 'invalid value for "recursive"'),
    ("PUT", "k", {"prevExist": "maybe"}, {"value": "x"}, 400, 209, "Invalid field", None),
    ("PUT", "k", {"prevValue": ""}, {"value": "x"}, 400, 201, "PrevValue is Required in POST form",
     '"prevValue" cannot be empty'),
    ("PUT", "k", {"refresh": "true"}, {"value": "x", "ttl": "5"}, 400, 211, "Value provided on refresh",
     "A value was provided on a refresh"),
    ("PUT", "k", {"refresh": "true"}, {}, 400, 212, "A TTL must be provided on refresh", "No TTL value set"),
    ("PUT", "k", {}, b"value=%zz", 400, 210, "Invalid POST form", 'invalid URL escape "%zz"'),
    ("POST", "k", {}, b"value=%G0&ttl=1", 400, 210, "Invalid POST form", None),
    ("PUT", "", {}, {"value": "x"}, 400, 107, "Root is read only", "/"),
    ("DELETE", "", {"recursive": "true"}, {}, 400, 107, "Root is read only", "/"),
]  # fmt: skip


@pytest.mark.parametrize(
    "method,sub,query,form,status,code,message,cause",
    BAD_INPUT,
    ids=[f"{c[0]}-{c[5]}-{i}" for i, c in enumerate(BAD_INPUT)],
)
def test_bad_input_gets_etcd_error_body(
    kv_cluster: KVBackend, kv_prefix: str, method, sub, query, form, status, code, message, cause
) -> None:
    b = kv_cluster
    url = b.keys_url(f"{kv_prefix}/{sub}") if sub else b.url() + "/v2/keys/"
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if isinstance(form, bytes) else None
    r = HTTP.request(method, url, params=query, data=form or None, headers=headers, timeout=10)
    body = etcd_body(r)
    assert (r.status_code, body.get("errorCode"), body.get("message")) == (status, code, message), body
    if cause is not None:
        assert body["cause"] == cause, body
    assert isinstance(body.get("index"), int)
    assert r.headers["Content-Type"].startswith("application/json")
    assert get(b, f"{kv_prefix}/k").status_code == 404, "a rejected write must not change anything"
    b.assert_alive([0])


@pytest.mark.parametrize("method", ["PATCH", "PROPFIND"])
def test_wrong_method_is_405_and_member_stays_up(kv_cluster: KVBackend, kv_prefix: str, method: str) -> None:
    b = kv_cluster
    r = HTTP.request(method, b.keys_url(f"{kv_prefix}/k"), data={"value": "x"}, timeout=10)
    assert r.status_code == 405, (r.status_code, r.text[:200])
    r = HTTP.request(method, b.url() + "/v2/members", timeout=10)
    assert r.status_code == 405, (r.status_code, r.text[:200])
    assert get(b, f"{kv_prefix}/k").status_code == 404
    b.assert_alive([0])


def test_value_too_large_for_any_etcd_form_is_rejected(kv_cluster: KVBackend, kv_prefix: str) -> None:
    """Above Go's 10 MB form limit etcd answers 400 / 210; grove's own limit is lower, same answer."""
    b, key = kv_cluster, f"{kv_prefix}/huge"
    try:
        r = HTTP.put(b.keys_url(key), data={"value": "x" * (11 * 1024 * 1024)}, timeout=30)
    except requests.ConnectionError as exc:
        pytest.fail(f"the member dropped the connection instead of answering with an error body: {exc!r}")
    body = etcd_body(r)
    assert r.status_code == 400 and body["errorCode"] == 210 and body["message"] == "Invalid POST form", body
    assert get(b, key).status_code == 404
    b.assert_alive()


def test_large_value_below_the_limit_is_accepted(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b, key = kv_cluster, f"{kv_prefix}/big"
    value = random.Random(1).randbytes(700 * 1024).hex()  # 1.4 MiB
    ok(put(b, key, value=value), 201)
    for i in range(b.size):
        got = wait_for(
            lambda i=i: (r := get(b, key, i)).status_code == 200 and r.json(), 10, "big value on member"
        )
        assert got["node"]["value"] == value


def test_grove_rejects_values_above_its_documented_limit(grove_cluster: KVBackend, kv_prefix: str) -> None:
    """grove documents etcd's --max-request-bytes default (1.5 MiB) as its limit; above it: 400 / 210."""
    b, key = grove_cluster, f"{kv_prefix}/too-big"
    try:
        r = put(b, key, value="x" * (1536 * 1024 + 1024))
    except requests.ConnectionError as exc:
        pytest.fail(f"the member dropped the connection instead of answering with an error body: {exc!r}")
    body = etcd_body(r)
    assert r.status_code == 400 and body["errorCode"] == 210 and body["message"] == "Invalid POST form", body
    assert get(b, key).status_code == 404
    b.assert_alive()


def test_out_of_range_numbers_are_rejected_and_the_cluster_keeps_working(
    kv_cluster: KVBackend, kv_prefix: str
) -> None:
    b, key = kv_cluster, f"{kv_prefix}/n"
    node = ok(put(b, key, value="1"))["node"]
    huge = str(2**70)  # does not fit etcd's 64-bit fields
    r = put(b, key, params={"prevIndex": huge}, value="2")
    assert (r.status_code, etcd_body(r)["errorCode"]) == (400, 203), r.text
    r = put(b, key, value="2", ttl=huge)
    assert (r.status_code, etcd_body(r)["errorCode"]) == (400, 202), r.text
    r = put(b, key, params={"prevIndex": str(2**64 - 1)}, value="2")
    assert r.status_code == 412
    assert etcd_body(r)["cause"] == f"[{2**64 - 1} != {node['modifiedIndex']}]"
    # a TTL of 2^40 s fits etcd's int64: accepted (or refused as a bad TTL), never a stuck cluster
    r = put(b, key, value="3", ttl=str(2**40))
    assert r.status_code in (200, 201) or (r.status_code, etcd_body(r)["errorCode"]) == (400, 202), r.text
    b.assert_alive()
    assert ok(put(b, f"{kv_prefix}/after", value="fine"), 201)["node"]["value"] == "fine"


def test_random_bad_requests_never_kill_a_member(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    rnd = random.Random(2024)
    names = ["value", "ttl", "dir", "prevExist", "prevValue", "prevIndex", "recursive", "sorted", "quorum",
             "refresh", "waitIndex", "stream", "noValueOnSuccess", "bogus"]  # fmt: skip
    values = [
        "",
        "0",
        "-1",
        "1",
        "true",
        "false",
        "maybe",
        "NaN",
        str(2**70),
        "1e3",
        " 5",
        "ünï",
        "%",
        "\x00",
    ]
    segments = ["a", "b", "_h", "%2F", "%00", "%ff", "..", ".", "", "x y", "ü", "a%zzb"]
    seen = []
    for _ in range(150):
        method = rnd.choice(["GET", "PUT", "POST", "DELETE", "HEAD"])
        path = "/".join(rnd.choice(segments) for _ in range(rnd.randint(1, 4)))
        query = "&".join(f"{rnd.choice(names)}={rnd.choice(values)}" for _ in range(rnd.randint(0, 3)))
        body = "&".join(f"{rnd.choice(names)}={rnd.choice(values)}" for _ in range(rnd.randint(0, 3)))
        url = f"{b.url(rnd.randrange(b.size))}/v2/keys{kv_prefix}/{path}?{query}"
        try:
            r = HTTP.request(method, url, data=body.encode(), timeout=10, allow_redirects=False,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        except requests.ConnectionError as exc:
            pytest.fail(f"{method} {url} body={body!r}: connection dropped: {exc!r}")
        seen.append(r.status_code)
        assert r.status_code < 500, f"{method} {url} body={body!r} -> {r.status_code} {r.text[:200]}"
    assert any(s >= 400 for s in seen) and any(s < 300 for s in seen), seen
    b.assert_alive()
    ok(put(b, f"{kv_prefix}/after", value="fine"), 201)


def test_raw_garbage_on_the_client_port_does_not_kill_the_member(
    kv_cluster: KVBackend, kv_prefix: str
) -> None:
    b = kv_cluster
    u = urlparse(b.url())
    for payload in (
        b"\x00\xff\x13garbage\r\n\r\n",
        b"GET /v2/keys HTTP/9.9\r\nHost: x\r\n\r\n",
        b"PUT /v2/keys/x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nvalue=1",
    ):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
        try:
            conn.connect()
            conn.sock.sendall(payload)
            conn.sock.settimeout(1)
            try:
                conn.sock.recv(4096)
            except OSError:
                pass
        finally:
            conn.close()
    b.assert_alive()
    assert ok(put(b, f"{kv_prefix}/after", value="fine"), 201)


# --- replication as a client sees it ------------------------------------------------------------


def test_writes_on_any_member_are_seen_by_quorum_reads_on_every_member(
    kv_cluster: KVBackend, kv_prefix: str
) -> None:
    b = kv_cluster
    leader = b.leader_index()
    for step in range(12):
        writer = step % b.size
        key = f"{kv_prefix}/k{step}"
        written = ok(put(b, key, writer, value=f"v{step}"))["node"]
        for reader in range(b.size):
            got = ok(get(b, key, reader, quorum="true"))["node"]
            assert got == written, (
                f"member {reader} (leader is {leader}) missed a write acknowledged by {writer}"
            )


def test_concurrent_writes_through_followers_get_distinct_indexes(
    kv_cluster: KVBackend, kv_prefix: str
) -> None:
    b = kv_cluster

    def write(i: int) -> int:
        r = requests.put(b.keys_url(f"{kv_prefix}/c{i}", i % b.size), data={"value": str(i)}, timeout=20)
        return ok(r, 201)["node"]["modifiedIndex"]

    with cf.ThreadPoolExecutor(12) as ex:
        indexes = list(ex.map(write, range(120)))
    assert len(set(indexes)) == 120
    listing = ok(get(b, kv_prefix, sorted="true", quorum="true"))["node"]["nodes"]
    assert sorted(int(n["value"]) for n in listing) == list(range(120))


# --- members, stats, version, health, metrics -------------------------------------------------------


def test_members(kv_cluster: KVBackend) -> None:
    b = kv_cluster
    for i in range(b.size):
        r = HTTP.get(b.url(i) + "/v2/members", timeout=5)
        assert r.status_code == 200
        members = etcd_body(r)["members"]
        assert sorted(m["name"] for m in members) == sorted(b.names)
        by_name = {m["name"]: m for m in members}
        for name, peer, client in zip(b.names, b.peer_urls, b.client_urls):
            m = by_name[name]
            assert m["peerURLs"] == [peer] and m["clientURLs"] == [client]
            assert len(m["id"]) <= 16 and int(m["id"], 16) > 0
        assert len({m["id"] for m in members}) == b.size
    leader = b.leader_index()
    r = HTTP.get(b.url() + "/v2/members/leader", timeout=5)
    assert r.status_code == 200
    assert etcd_body(r)["name"] == b.names[leader]


def test_stats_self_and_leader(kv_cluster: KVBackend) -> None:
    b = kv_cluster
    leader = b.leader_index()
    ids = b.member_ids()
    leader_id = ids[b.names[leader]]
    for i in range(b.size):
        st = etcd_body(HTTP.get(b.url(i) + "/v2/stats/self", timeout=5))
        assert st["name"] == b.names[i] and st["id"] == ids[b.names[i]]
        assert st["state"] == ("StateLeader" if i == leader else "StateFollower")
        assert st["leaderInfo"]["leader"] == leader_id
        parse_time(st["startTime"])
    r = HTTP.get(b.url(leader) + "/v2/stats/leader", timeout=5)
    body = etcd_body(r)
    assert r.status_code == 200 and body["leader"] == leader_id
    assert set(body["followers"]) == set(ids.values()) - {leader_id}
    for f in body["followers"].values():
        assert set(f["counts"]) >= {"fail", "success"}
    follower = next(i for i in range(b.size) if i != leader)
    r = HTTP.get(b.url(follower) + "/v2/stats/leader", timeout=5)
    assert r.status_code == 403 and etcd_body(r) == {"message": "not current leader"}


def test_stats_store_counts_operations(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    fields = {
        "getsSuccess", "getsFail", "setsSuccess", "setsFail", "deleteSuccess", "deleteFail", "updateSuccess",
        "updateFail", "createSuccess", "createFail", "compareAndSwapSuccess", "compareAndSwapFail",
        "compareAndDeleteSuccess", "compareAndDeleteFail", "expireCount", "watchers",
    }  # fmt: skip
    before = etcd_body(HTTP.get(b.url() + "/v2/stats/store", timeout=5))
    assert set(before) >= fields and all(isinstance(before[f], int) for f in fields)
    ok(put(b, f"{kv_prefix}/s", value="1"))
    put(b, f"{kv_prefix}/s", params={"prevValue": "nope"}, value="2")
    ok(put(b, f"{kv_prefix}/new", params={"prevExist": "false"}, value="1"))
    get(b, f"{kv_prefix}/missing")
    after = etcd_body(HTTP.get(b.url() + "/v2/stats/store", timeout=5))
    assert after["setsSuccess"] >= before["setsSuccess"] + 1
    assert after["compareAndSwapFail"] >= before["compareAndSwapFail"] + 1
    assert after["createSuccess"] >= before["createSuccess"] + 1
    assert after["getsFail"] >= before["getsFail"] + 1


def test_version_and_health(kv_cluster: KVBackend) -> None:
    b = kv_cluster
    for i in range(b.size):
        v = etcd_body(HTTP.get(b.url(i) + "/version", timeout=5))
        assert isinstance(v["etcdserver"], str) and v["etcdserver"]
        assert isinstance(v["etcdcluster"], str) and v["etcdcluster"]
        r = HTTP.get(b.url(i) + "/health", timeout=5)
        assert r.status_code == 200 and etcd_body(r)["health"] == "true"


def _metrics(b: KVBackend, i: int) -> dict[str, list]:
    r = HTTP.get(b.url(i) + "/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_metrics(kv_cluster: KVBackend, kv_prefix: str) -> None:
    b = kv_cluster
    leader = b.leader_index()
    m0 = _metrics(b, leader)
    for name in (
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_failed_total",
        "etcd_debugging_store_watchers",
    ):
        assert name in m0, f"{name} missing from /metrics"
    committed0 = m0["etcd_server_proposals_committed_total"][0].value
    assert m0["etcd_server_leader_changes_seen_total"][0].value >= 1

    ok(put(b, f"{kv_prefix}/m", leader, value="1"))
    assert get(b, f"{kv_prefix}/absent", leader).status_code == 404
    key = f"{kv_prefix}/watched"
    fut = watch_async(b, key, leader)

    def watcher_counted() -> bool:
        return _metrics(b, leader)["etcd_debugging_store_watchers"][0].value >= 1

    wait_for(watcher_counted, 10, "an open watch in etcd_debugging_store_watchers")
    ok(put(b, key, value="wake"))
    ok(fut.result(timeout=10))
    m1 = _metrics(b, leader)
    assert m1["etcd_server_proposals_committed_total"][0].value > committed0
    # HTTP requests are counted by method and status code: our 404 GET shows up
    http_404 = [
        s for name, ss in m1.items() if "http" in name for s in ss
        if s.labels.get("method") == "GET" and s.labels.get("code") == "404" and s.value >= 1
    ]  # fmt: skip
    assert http_404, sorted(n for n in m1 if "http" in n)
