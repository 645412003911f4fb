"""A follower's log under crafted AppendEntries: Raft §5.3, receiver rules 3 to 5.

Each test drives one real RaftNode (no peers, an election timeout of an hour so it never
campaigns) by handing messages to its message handler on pysyncobj's own tick thread, the way
the transport would. Only the transport's `send` is replaced, to capture the follower's
replies. The bug these guard against: pysyncobj 0.3.17 drops every entry after prevLogIdx, so a
delayed or overlapping AppendEntries cut off entries the follower had acknowledged.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pysyncobj.pickle
import pytest
from pysyncobj import SyncObj
from pysyncobj.node import TCPNode
from pysyncobj.syncobj import _COMMAND_TYPE

from kvstore.raft import RaftNode, RaftTuning, _check_pysyncobj, plan_append
from kvstore.statemachine import StateMachine
from tests import waiting

DEADLINE = 10.0
LEADER = TCPNode("127.0.0.1:9")  # the sender; the follower only replies to it


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@dataclass
class Follower:
    raft: RaftNode
    replies: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # peers removed from the transport
    deletions: list[int] = field(default_factory=list)  # journal truncations (list positions)

    def on_tick(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the tick thread, which owns pysyncobj's state, and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # re-raised in the test's thread
                box["error"] = exc
            finally:
                done.set()

        self.raft._tick_calls.put(call)
        assert done.wait(DEADLINE), "the tick thread did not run the call"
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def deliver(self, message: dict) -> dict | None:
        """Hand one message to the handler; return the follower's reply, if any."""
        before = len(self.replies)
        self.on_tick(lambda: self.raft._SyncObj__onMessageReceived(LEADER, message))
        return self.replies[-1] if len(self.replies) > before else None

    def log(self) -> list[tuple[int, int]]:
        """(index, term) of every log entry."""
        return self.on_tick(lambda: [(e[1], e[2]) for e in self.raft._SyncObj__raftLog[:]])

    def commit_index(self) -> int:
        return self.on_tick(lambda: self.raft.raftCommitIndex)

    def command(self, key: str) -> bytes:
        """A real grove write, encoded as pysyncobj encodes a call to `RaftNode._apply`."""
        payload = orjson.dumps({"op": "set", "key": key, "value": key, "now": 1_700_000_000.0})
        call = (self.raft._methodToID["_apply_v0"], (payload,))  # pysyncobj names it by version
        return bytes([_COMMAND_TYPE.REGULAR]) + pysyncobj.pickle.dumps(call)


@pytest.fixture
def follower(tmp_path) -> Iterator[Follower]:
    raft = RaftNode(
        free_addr(), [], str(tmp_path), StateMachine(), tuning=RaftTuning(election_timeout=3600.0)
    )
    f = Follower(raft)
    try:
        transport = raft._SyncObj__transport
        journal = raft._SyncObj__raftLog
        drop_node, delete_from = transport.dropNode, journal.deleteEntriesFrom

        def record_drop(node):
            f.dropped.append(node.address)
            drop_node(node)

        def record_delete(position):
            f.deletions.append(position)
            delete_from(position)

        def record_send(node, message):
            assert node == LEADER
            f.replies.append(message)
            return True

        def install() -> None:
            transport.send = record_send
            transport.dropNode = record_drop
            journal.deleteEntriesFrom = record_delete

        f.on_tick(install)
        yield f
    finally:
        raft.destroy_synchronous()


def append(prev: tuple[int, int], entries: list[tuple], *, term: int, commit: int) -> dict:
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": commit,
        "entries": entries,
        "prevLogIdx": prev[0],
        "prevLogTerm": prev[1],
    }


def writes(f: Follower, first: int, last: int, term: int) -> list[tuple]:
    return [(f.command(f"/k{i}"), i, term) for i in range(first, last + 1)]


def wait_applied(f: Follower, index: int) -> None:
    waiting.wait_for(
        lambda: f.raft.raftLastApplied >= index, f"entries up to {index} to be applied", DEADLINE
    )


def success(reply: dict | None, next_index: int) -> bool:
    return reply is not None and reply["success"] and reply["next_node_idx"] == next_index


def test_stale_append_keeps_acknowledged_and_applied_entries(follower):
    f = follower
    entries = writes(f, 2, 6, term=1)
    assert success(f.deliver(append((1, 0), entries, term=1, commit=6)), 7)
    wait_applied(f, 6)
    assert f.raft.state.tree.index == 5  # five writes, each applied once

    # A batch sent earlier, delivered late: it covers 2..3, which the follower already has.
    reply = f.deliver(append((1, 0), entries[:2], term=1, commit=3))

    assert success(reply, 4)  # the reply speaks for what the message covered, no more
    assert f.log() == [(1, 0)] + [(i, 1) for i in range(2, 7)]
    assert f.deletions == []
    assert f.commit_index() == 6  # the commit index never moves back
    assert f.raft.state.tree.index == 5


def test_overlapping_append_adds_only_new_entries(follower):
    f = follower
    entries = writes(f, 2, 8, term=1)
    assert success(f.deliver(append((1, 0), entries[:5], term=1, commit=1)), 7)

    # Resent from an older nextIndex while 2..6 were in flight: 4..6 overlap, 7..8 are new.
    reply = f.deliver(append((3, 1), entries[2:], term=1, commit=1))

    assert success(reply, 9)
    assert f.log() == [(1, 0)] + [(i, 1) for i in range(2, 9)]
    assert f.deletions == []


def test_conflict_truncates_from_the_first_conflicting_entry(follower):
    f = follower
    assert success(f.deliver(append((1, 0), writes(f, 2, 7, term=1), term=1, commit=3)), 8)

    # A new leader (term 2) agrees up to 4 and has its own entry at 5; 6 and 7 must go.
    new = writes(f, 3, 4, term=1) + writes(f, 5, 5, term=2)
    reply = f.deliver(append((2, 1), new, term=2, commit=3))

    assert success(reply, 6)
    assert f.log() == [(1, 0), (2, 1), (3, 1), (4, 1), (5, 2)]
    assert len(f.deletions) == 1


def test_mismatched_prev_entry_is_refused(follower):
    f = follower
    assert success(f.deliver(append((1, 0), writes(f, 2, 4, term=1), term=1, commit=1)), 5)

    beyond = f.deliver(append((9, 2), [], term=2, commit=1))
    assert beyond is not None and not beyond["success"] and beyond["next_node_idx"] == 5
    other_term = f.deliver(append((3, 2), writes(f, 4, 4, term=2), term=2, commit=1))
    assert other_term is not None and not other_term["success"] and other_term["next_node_idx"] == 3
    assert f.log() == [(1, 0), (2, 1), (3, 1), (4, 1)]


def test_commit_index_stops_at_the_prefix_known_to_match(follower):
    f = follower
    assert success(f.deliver(append((1, 0), writes(f, 2, 6, term=1), term=1, commit=2)), 7)
    assert f.commit_index() == 2

    # The term-2 leader has committed up to 6 in its log, but so far only proves 1..3 match ours:
    # our 4..6 may be a stale tail that it will replace.
    reply = f.deliver(append((3, 1), [], term=2, commit=6))

    assert success(reply, 4)
    assert f.commit_index() == 3
    assert f.log()[-1] == (6, 1)

    # Once it shows that 6 matches, everything up to its commit index is committed.
    assert success(f.deliver(append((6, 1), [], term=2, commit=6)), 7)
    assert f.commit_index() == 6


def test_large_entry_sent_in_pieces_does_not_truncate(follower):
    f = follower
    entries = writes(f, 2, 6, term=1)
    assert success(f.deliver(append((1, 0), entries, term=1, commit=1)), 7)

    data = pysyncobj.pickle.dumps(entries[1])  # entry 3, which the follower already has
    piece = {"type": "append_entries", "term": 1, "commit_index": 1, "prevLogIdx": 2, "prevLogTerm": 1}
    first = f.deliver({**piece, "transmission": "start", "data": data[:10]})
    assert first is not None and not first["success"]
    reply = f.deliver({**piece, "transmission": "finish", "data": data[10:]})

    assert success(reply, 4)
    assert f.log() == [(1, 0)] + [(i, 1) for i in range(2, 7)]
    assert f.deletions == []


def membership(op: str, addr: str) -> bytes:
    node = TCPNode(addr)
    return bytes([_COMMAND_TYPE.MEMBERSHIP]) + pysyncobj.pickle.dumps([op, node.id, node])


def test_membership_change_is_kept_unless_its_entry_is_removed(follower):
    f = follower
    peer = free_addr()
    entries = writes(f, 2, 2, term=1) + [(membership("add", peer), 3, 1)] + writes(f, 4, 4, term=1)
    assert success(f.deliver(append((1, 0), entries, term=1, commit=1)), 5)
    assert f.raft.peer_addrs == [peer]

    # The same entries again (a resend) and a stale prefix of them: nothing is undone or redone.
    assert success(f.deliver(append((1, 0), entries, term=1, commit=1)), 5)
    assert success(f.deliver(append((1, 0), entries[:1], term=1, commit=1)), 3)
    assert f.dropped == []
    assert f.raft.peer_addrs == [peer]

    # A term-2 leader never had the change: its entry 3 conflicts, so the change is rolled back.
    assert success(f.deliver(append((2, 1), writes(f, 3, 3, term=2), term=2, commit=1)), 4)
    assert f.dropped == [peer]
    assert f.raft.peer_addrs == []
    assert f.log() == [(1, 0), (2, 1), (3, 2)]


def test_peer_messages_reach_the_fixed_handler(follower):
    callback = follower.raft._SyncObj__transport._onMessageReceivedCallback
    assert callback.__func__ is RaftNode._SyncObj__onMessageReceived


def test_import_fails_loudly_when_pysyncobj_internals_move(monkeypatch):
    _check_pysyncobj()
    monkeypatch.delattr(SyncObj, "_SyncObj__deleteEntriesFrom")
    with pytest.raises(ImportError, match=r"_SyncObj__deleteEntriesFrom.*pysyncobj>=0.3.17,<0.4"):
        _check_pysyncobj()


# ------------------------------------------------------------- the pure rule, alone
def e(index: int, term: int) -> tuple:
    return (b"", index, term)


def test_plan_append_cases():
    local = [e(3, 1), e(4, 1), e(5, 1)]
    assert plan_append(2, local, [e(3, 1), e(4, 1)]).append == []  # stale: nothing to do
    plan = plan_append(2, local, [e(3, 1), e(4, 1), e(5, 1), e(6, 2)])
    assert (plan.conflict_index, plan.append, plan.last_index) == (None, [e(6, 2)], 6)
    plan = plan_append(2, local, [e(3, 1), e(4, 2)])
    assert (plan.conflict_index, plan.append, plan.last_index) == (4, [e(4, 2)], 4)
    assert plan_append(5, [], []).last_index == 5  # heartbeat
    with pytest.raises(ValueError):
        plan_append(2, local, [e(4, 1)])
