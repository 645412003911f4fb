"""The key tree alone: etcd v2 semantics, deterministically, with no sockets and no clocks."""

import orjson
import pytest

from kvstore import errors as E
from kvstore.errors import EtcdError
from kvstore.statemachine import StateMachine
from kvstore.tree import KeyTree, clean_key

NOW = 1_700_000_000.0


def run(tree, op, key, **kw):
    return tree.apply({"op": op, "key": key, "now": kw.pop("now", NOW), **kw})


def err(fn):
    with pytest.raises(EtcdError) as info:
        fn()
    return info.value


def test_clean_key():
    assert clean_key("foo") == "/foo"
    assert clean_key("/a//b/") == "/a/b"
    assert clean_key("//a/../b") == "/b"
    assert clean_key("") == "/"


def test_set_get_and_indexes():
    t = KeyTree()
    ev = run(t, "set", "/a/b", value="1")
    assert ev == {
        "action": "set",
        "node": {"key": "/a/b", "value": "1", "modifiedIndex": 1, "createdIndex": 1},
    }
    ev = run(t, "set", "/a/b", value="2")
    assert ev["prevNode"]["value"] == "1"
    assert ev["node"]["createdIndex"] == 2 and ev["node"]["modifiedIndex"] == 2
    got = t.get("/a", now=NOW)
    assert got["node"]["dir"] is True
    assert got["node"]["nodes"] == [{"key": "/a/b", "value": "2", "modifiedIndex": 2, "createdIndex": 2}]
    assert t.index == 2


def test_missing_key_and_file_as_dir():
    t = KeyTree()
    assert err(lambda: t.get("/nope")).code == E.KEY_NOT_FOUND
    run(t, "set", "/f", value="x")
    e = err(lambda: run(t, "set", "/f/child", value="y"))
    assert (e.code, e.cause) == (E.NOT_DIR, "/f")
    assert t.index == 1  # a failed command changes nothing


def test_create_update_and_dirs():
    t = KeyTree()
    assert run(t, "set", "/k", value="v", prevExist=False)["action"] == "create"
    assert err(lambda: run(t, "set", "/k", value="v", prevExist=False)).code == E.NODE_EXIST
    assert err(lambda: run(t, "update", "/missing", value="v")).code == E.KEY_NOT_FOUND
    ev = run(t, "update", "/k", value="w")
    assert ev["action"] == "update" and ev["prevNode"]["value"] == "v"
    run(t, "set", "/d", dir=True)
    assert err(lambda: run(t, "set", "/d", value="x")).code == E.NOT_FILE
    assert err(lambda: run(t, "update", "/d", value="x")).code == E.NOT_FILE
    assert err(lambda: run(t, "set", "/", value="x")).code == E.ROOT_READ_ONLY


def test_compare_and_swap_and_delete():
    t = KeyTree()
    run(t, "set", "/k", value="one")
    e = err(lambda: run(t, "cas", "/k", value="two", prevValue="zero"))
    assert (e.code, e.cause) == (E.TEST_FAILED, "[zero != one]")
    e = err(lambda: run(t, "cas", "/k", value="two", prevIndex=9))
    assert e.cause == "[9 != 1]"
    ev = run(t, "cas", "/k", value="two", prevValue="one", prevIndex=1)
    assert ev["action"] == "compareAndSwap" and ev["node"]["value"] == "two"
    assert err(lambda: run(t, "cad", "/k", prevValue="one")).code == E.TEST_FAILED
    ev = run(t, "cad", "/k", prevIndex=2)
    assert ev["action"] == "compareAndDelete" and ev["prevNode"]["value"] == "two"
    assert err(lambda: t.get("/k")).code == E.KEY_NOT_FOUND


def test_delete_directories():
    t = KeyTree()
    run(t, "set", "/d/x", value="1")
    assert err(lambda: run(t, "delete", "/d")).code == E.NOT_FILE
    assert err(lambda: run(t, "delete", "/d", dir=True)).code == E.DIR_NOT_EMPTY
    ev = run(t, "delete", "/d", recursive=True)
    assert ev["node"] == {"key": "/d", "dir": True, "modifiedIndex": 2, "createdIndex": 1}
    assert err(lambda: run(t, "delete", "/")).code == E.ROOT_READ_ONLY


def test_hidden_keys_and_sorted_recursive_listing():
    t = KeyTree()
    for k in ["/b/2", "/b/1", "/a", "/_hidden", "/b/_h"]:
        run(t, "set", k, value=k)
    listing = t.get("/", recursive=True, sort=True, now=NOW)["node"]
    assert [n["key"] for n in listing["nodes"]] == ["/a", "/b"]
    assert [n["key"] for n in listing["nodes"][1]["nodes"]] == ["/b/1", "/b/2"]
    assert t.get("/_hidden")["node"]["value"] == "/_hidden"
    # one level only without recursive
    assert "nodes" not in t.get("/", now=NOW)["node"]["nodes"][1]


def test_in_order_keys():
    t = KeyTree()
    a = run(t, "append", "/q", value="first")
    b = run(t, "append", "/q", value="second")
    assert a["action"] == "create" and a["node"]["key"] == "/q/00000000000000000001"
    assert b["node"]["key"] == "/q/00000000000000000002"
    keys = [n["key"] for n in t.get("/q", sort=True)["node"]["nodes"]]
    assert keys == sorted(keys)


def test_ttl_expiry_is_driven_by_commands():
    t = KeyTree()
    ev = run(t, "set", "/tmp/k", value="v", ttl=5)
    assert ev["node"]["ttl"] == 5 and ev["node"]["expiration"].endswith("Z")
    run(t, "set", "/d", dir=True, ttl=10)
    run(t, "set", "/d/inner", value="x")
    assert t.get("/tmp/k", now=NOW + 2.5)["node"]["ttl"] == 3
    assert t.next_expiry() == NOW + 5
    assert t.apply({"op": "expire", "now": NOW + 4}) == []  # nothing due yet
    evs = t.apply({"op": "expire", "now": NOW + 5})
    assert [(e["action"], e.key) for e in evs] == [("expire", "/tmp/k")]
    evs = t.apply({"op": "expire", "now": NOW + 11})
    assert [e.key for e in evs] == ["/d"] and err(lambda: t.get("/d/inner")).code == E.KEY_NOT_FOUND
    assert t.next_expiry() is None


def test_update_without_ttl_makes_permanent_and_refresh_is_silent():
    t = KeyTree()
    run(t, "set", "/k", value="v", ttl=5)
    run(t, "update", "/k", value="w")
    assert "ttl" not in t.get("/k", now=NOW)["node"]
    run(t, "set", "/r", value="keep", ttl=5)
    ev = run(t, "update", "/r", ttl=50, refresh=True)
    assert ev.refresh and ev["node"]["value"] == "keep"
    assert t.next_expiry() == NOW + 50
    # refresh events are in the history but never delivered to watchers
    assert t.history.scan("/r", False, ev.index, t.index) is None


def test_history_scan_and_cleared_index():
    t = KeyTree(history_size=5)
    for i in range(8):
        run(t, "set", f"/w/{i}", value=str(i))
    assert t.history.start_index == 4
    e = err(lambda: t.history.scan("/w", True, 2, t.index))
    assert e.code == E.EVENT_INDEX_CLEARED and e.index == 8
    ev = t.history.scan("/w", True, 4, t.index)
    assert ev.key == "/w/3"
    assert t.history.scan("/w/7", False, 4, t.index).index == 8
    assert t.history.scan("/w", False, 4, t.index) is None  # not recursive: children don't count
    assert t.history.scan("/w", True, 9, t.index) is None  # future


def test_deleting_a_directory_concerns_watchers_below_it():
    t = KeyTree()
    run(t, "set", "/d/x", value="1")
    ev = run(t, "delete", "/d", recursive=True)
    assert t.history.scan("/d/x", False, 2, t.index) is ev


def test_hidden_changes_not_seen_by_recursive_parent_watch():
    t = KeyTree()
    run(t, "set", "/a/_secret", value="1")
    assert t.history.scan("/a", True, 1, t.index) is None
    assert t.history.scan("/a/_secret", False, 1, t.index) is not None


def test_snapshot_round_trip_keeps_everything():
    t = KeyTree(history_size=100)
    run(t, "set", "/a/b", value="1", ttl=30)
    run(t, "append", "/q", value="x")
    run(t, "delete", "/q", recursive=True)
    snap = orjson.loads(orjson.dumps(t.to_snapshot()))
    u = KeyTree.from_snapshot(snap)
    assert u.index == t.index
    assert u.get("/", recursive=True, sort=True, now=NOW) == t.get("/", recursive=True, sort=True, now=NOW)
    assert u.next_expiry() == NOW + 30
    assert [dict(e) for e in u.history.events()] == [dict(e) for e in t.history.events()]
    assert run(u, "set", "/z", value="1")["node"]["modifiedIndex"] == t.index + 1


def test_replicas_applying_the_same_commands_agree():
    cmds = [
        {"op": "set", "key": "/a", "value": "1", "now": NOW, "ttl": 3},
        {"op": "cas", "key": "/a", "value": "2", "prevValue": "1", "now": NOW + 1},
        {"op": "append", "key": "/q", "value": "x", "now": NOW + 1},
        {"op": "expire", "now": NOW + 10},
        {"op": "cas", "key": "/a", "value": "3", "prevValue": "1", "now": NOW + 11},
    ]
    replicas = [StateMachine(), StateMachine()]
    results = [[r.apply(dict(c))[0] for c in cmds] for r in replicas]
    assert [type(x) for x in results[0]] == [type(x) for x in results[1]]
    assert replicas[0].to_snapshot() == replicas[1].to_snapshot()
    # the CAS without a ttl made /a permanent (as in etcd), so the last CAS compares and fails
    assert isinstance(results[0][-1], EtcdError) and results[0][-1].code == E.TEST_FAILED
