"""Replication: pysyncobj's Raft around the state machine, bridged to asyncio.

pysyncobj runs its own tick thread: it owns the sockets to the peers, the journal and the
snapshots, and it calls `_apply` for every committed command in log order. The HTTP side lives
in an asyncio loop in the main thread. The two meet in three places, all explicit:
- `propose()` puts a command in pysyncobj's queue and returns an asyncio future that the tick
  thread resolves with `loop.call_soon_threadsafe`;
- committed events go to the watch hub the same way, in commit order;
- reads take `lock`, which `_apply` holds while it changes the tree.

Commands are JSON (orjson), snapshots are JSON, never pickle. pysyncobj's own peer protocol
does use pickle, which is why the peer port binds only the advertised peer address and supports
an encryption password (see README, "Security").

pysyncobj 0.3.17's follower handling of AppendEntries drops every entry after prevLogIdx and
appends the message's entries again, even when they are the ones it already has. A delayed or
overlapping AppendEntries (the leader resends from nextIndex while earlier batches are in
flight) then cuts off entries the follower already acknowledged, committed ones included.
`RaftNode` replaces that branch with the Raft paper's rule (§5.3, receiver rule 3): drop
entries only from the first conflict (same index, different term), append only what is new.
It relies on pysyncobj's private names; `_check_pysyncobj()` refuses to import if they moved.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pysyncobj.pickle
import pysyncobj.syncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.node import Node, TCPNode

from .errors import EtcdError
from .statemachine import StateMachine

log = logging.getLogger("grove.kv.raft")

_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}


@dataclass
class RaftTuning:
    """Timing knobs, in seconds. Defaults favour latency on one host or a LAN."""

    heartbeat: float = 0.05  # appendEntriesPeriod
    election_timeout: float = 0.4  # elections start after a random time in [t, 2t)
    tick: float = 0.002  # autoTickPeriod: the longest the tick thread sleeps in poll()
    batch: bool = False  # appendEntriesUseBatch: off = each command is sent at once
    snapshot_count: int = 10000  # log entries between snapshots (etcd's --snapshot-count)
    snapshot_interval: float = 3600.0  # also snapshot at least this often (seconds)


class ProposalFailed(Exception):
    """Raft did not commit the command (no leader, leader changed, queue full)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------ AppendEntries, follower side
@dataclass(frozen=True)
class AppendPlan:
    """What a follower does with an AppendEntries whose (prevLogIdx, prevLogTerm) matched its log."""

    conflict_index: int | None  # first index whose term differs: drop it and everything after it
    append: list[tuple]  # the message's entries the log does not hold yet, in order
    last_index: int  # last index the message covered: the log matches the leader up to here


def plan_append(prev_index: int, local: Sequence[tuple], entries: Sequence[tuple]) -> AppendPlan:
    """Raft §5.3, receiver rules 3 and 4, for entries shaped (command, index, term).

    `local` holds the follower's entries from prev_index + 1 on (at least as many as `entries`
    where the log has them). Raises ValueError if `entries` do not follow prev_index one by one.
    """
    for offset, entry in enumerate(entries):
        if entry[1] != prev_index + 1 + offset:
            raise ValueError(f"entry {offset} has index {entry[1]}, expected {prev_index + 1 + offset}")
    for offset, entry in enumerate(entries):
        if offset >= len(local):
            return AppendPlan(None, list(entries[offset:]), prev_index + len(entries))
        if local[offset][2] != entry[2]:
            return AppendPlan(entry[1], list(entries[offset:]), prev_index + len(entries))
    return AppendPlan(None, [], prev_index + len(entries))


# pysyncobj internals the override below uses (all name-mangled `SyncObj.__x`).
_SYNCOBJ_METHODS = (
    "_SyncObj__onMessageReceived",
    "_SyncObj__getEntries",
    "_SyncObj__getCurrentLogIndex",
    "_SyncObj__deleteEntriesFrom",
    "_SyncObj__sendNextNodeIdx",
    "_SyncObj__parseChangeClusterRequest",
    "_SyncObj__doChangeCluster",
    "_SyncObj__onLeaderChanged",
    "_SyncObj__setCurrentTerm",
    "_SyncObj__setState",
    "_SyncObj__generateRaftTimeout",
)
_SYNCOBJ_ATTRS = (  # set in SyncObj.__init__
    "_SyncObj__conf",
    "_SyncObj__raftLog",
    "_SyncObj__raftCurrentTerm",
    "_SyncObj__raftLeader",
    "_SyncObj__raftElectionDeadline",
    "_SyncObj__transferInProgress",
    "_SyncObj__leaderCommitIndex",
    "_SyncObj__raftCommitIndex",
    "_SyncObj__raftLastApplied",
    "_SyncObj__recvTransmission",
)
# Message fields and module names the library's own handler must still use the same way.
_APPEND_ENTRIES_FIELDS = (
    "append_entries",
    "prevLogIdx",
    "prevLogTerm",
    "entries",
    "commit_index",
    "transmission",
)
_SYNCOBJ_MODULE_NAMES = ("_RAFT_STATE", "monotonicTime")
TESTED_PYSYNCOBJ = "pysyncobj>=0.3.17,<0.4"


def _check_pysyncobj() -> None:
    """Fail at import, not in the middle of replication, if pysyncobj's internals moved."""
    missing = [n for n in _SYNCOBJ_METHODS if not callable(getattr(SyncObj, n, None))]
    init_names = set(SyncObj.__init__.__code__.co_names)
    missing += [n for n in _SYNCOBJ_ATTRS if n not in init_names]
    original = getattr(SyncObj, "_SyncObj__onMessageReceived", None)
    consts = set(getattr(getattr(original, "__code__", None), "co_consts", ()))
    missing += [f"message field {f!r}" for f in _APPEND_ENTRIES_FIELDS if f not in consts]
    missing += [f"pysyncobj.syncobj.{n}" for n in _SYNCOBJ_MODULE_NAMES if not hasattr(pysyncobj.syncobj, n)]
    version = getattr(pysyncobj.syncobj, "VERSION", "unknown")
    if missing:
        raise ImportError(
            f"pysyncobj {version} lacks the internals grove's AppendEntries fix relies on "
            f"({', '.join(missing)}); install {TESTED_PYSYNCOBJ}"
        )
    try:
        numbers = tuple(int(p) for p in version.split(".")[:3])
    except ValueError:
        numbers = ()
    if not (0, 3, 17) <= numbers < (0, 4):
        log.warning(
            "pysyncobj %s is untested with grove's Raft fixes; grove needs %s", version, TESTED_PYSYNCOBJ
        )


_check_pysyncobj()
_library_on_message = SyncObj._SyncObj__onMessageReceived


class RaftNode(SyncObj):
    def __init__(
        self,
        self_addr: str,
        peer_addrs: list[str],
        data_dir: str,
        state: StateMachine,
        *,
        tuning: RaftTuning | None = None,
        password: str | None = None,
        on_events: Callable[[list], None] | None = None,
        on_leader_change: Callable[[], None] | None = None,
        on_recover: Callable[[], None] | None = None,
    ):
        tuning = tuning or RaftTuning()
        self.state = state
        self.lock = threading.Lock()
        self._on_events = on_events
        self._on_recover = on_recover
        self.snapshot_file = os.path.join(data_dir, "snapshot.json")
        self.applied_commands = 0
        self.failed_proposals = 0
        self.leader_changes = 0
        self._last_leader = None
        conf = SyncObjConf(
            journalFile=os.path.join(data_dir, "raft.journal"),
            fullDumpFile=self.snapshot_file,
            serializer=self._save_snapshot,
            deserializer=self._load_snapshot,
            appendEntriesUseBatch=tuning.batch,
            autoTickPeriod=tuning.tick,
            appendEntriesPeriod=tuning.heartbeat,
            raftMinTimeout=tuning.election_timeout,
            raftMaxTimeout=tuning.election_timeout * 2,
            connectionTimeout=max(3.5, tuning.election_timeout * 4),
            # Reconnect quickly to a peer that restarted: a failover needs both survivors connected.
            connectionRetryTime=min(5.0, max(0.1, tuning.heartbeat * 4)),
            leaderFallbackTimeout=max(2.0, tuning.election_timeout * 5),
            logCompactionMinEntries=tuning.snapshot_count,
            logCompactionMinTime=tuning.snapshot_interval,
            dynamicMembershipChange=True,
            commandsWaitLeader=True,
            password=password,
            onStateChanged=self._state_changed,
            bindAddress=self_addr,
        )
        self._on_leader_change = on_leader_change
        self._tick_calls: queue.SimpleQueue = queue.SimpleQueue()
        super().__init__(self_addr, peer_addrs, conf)
        self.addOnTickCallback(self._drain_tick_calls)

    def _drain_tick_calls(self) -> None:
        while True:
            try:
                fn = self._tick_calls.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception:  # a failed call must not stop the tick thread
                log.exception("call in the Raft thread failed")

    def transfer_leadership(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """Ask the leader (this member) to hand leadership to its most caught-up follower."""
        fut = loop.create_future()

        def done(result: Any, err: int) -> None:
            loop.call_soon_threadsafe(_resolve, fut, True, err)

        # pysyncobj's internals belong to its tick thread: run the request there.
        self._tick_calls.put(lambda: self.transferLeadership(callback=done))
        return fut

    # ----------------------------------------------------------- tick thread
    def _SyncObj__onMessageReceived(self, node: Node, message: dict) -> None:
        """pysyncobj's message handler; AppendEntries carrying log entries take the paper's path."""
        if (
            message.get("type") != "append_entries"
            or "prevLogIdx" not in message
            or message.get("transmission") not in (None, "finish")
            or message["term"] < self._SyncObj__raftCurrentTerm
        ):
            _library_on_message(self, node, message)  # votes, replies, snapshots, stale terms, ...
            return
        self._follow(node, message["term"])
        leader_commit = message["commit_index"]
        self._SyncObj__leaderCommitIndex = leader_commit
        entries = message.get("entries", [])
        if message.get("transmission") == "finish":  # one large entry, sent in pieces
            data = self._SyncObj__recvTransmission + message["data"]
            self._SyncObj__recvTransmission = ""
            entries = [pysyncobj.pickle.loads(data)]
        last_index = self._append_entries(node, message["prevLogIdx"], message["prevLogTerm"], entries)
        if last_index is None:
            return
        # Commit only what is known to match the leader: entries past last_index may be a
        # stale tail from an older term that a later message will replace.
        commit = self._SyncObj__raftCommitIndex
        commit = min(commit, self._SyncObj__getCurrentLogIndex())
        if leader_commit > commit:
            commit = max(commit, min(leader_commit, last_index))
        self._SyncObj__raftCommitIndex = commit
        self._SyncObj__raftLog.setRaftCommitIndex(commit)

    def _follow(self, leader: Node, term: int) -> None:
        """AppendEntries from a current leader: the same bookkeeping as pysyncobj 0.3.17."""
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__transferInProgress = False  # a newer leader supersedes a pending transfer
        if not self._SyncObj__transferInProgress:
            timeout = self._SyncObj__generateRaftTimeout()
            self._SyncObj__raftElectionDeadline = pysyncobj.syncobj.monotonicTime() + timeout
        if self._SyncObj__raftLeader != leader:
            self._SyncObj__onLeaderChanged()
        self._SyncObj__raftLeader = leader
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(pysyncobj.syncobj._RAFT_STATE.FOLLOWER)

    def _append_entries(self, leader: Node, prev_index: int, prev_term: int, entries: list) -> int | None:
        """Reconcile the log with the leader's; reply; return the last index known to match."""
        around = self._SyncObj__getEntries(prev_index, len(entries) + 1)
        if not around:  # prev_index is past our log (or compacted away): leader retries from our end
            self._SyncObj__sendNextNodeIdx(leader, success=False, reset=True)
            return None
        if around[0][2] != prev_term:
            self._SyncObj__sendNextNodeIdx(leader, nextNodeIdx=prev_index, success=False, reset=True)
            return None
        try:
            plan = plan_append(prev_index, around[1:], entries)
        except ValueError as exc:
            log.error("ignoring malformed AppendEntries from %s: %s", leader, exc)
            return None
        membership = self._SyncObj__conf.dynamicMembershipChange
        if plan.conflict_index is not None:
            removed = self._SyncObj__getEntries(plan.conflict_index)
            if membership:  # undo membership changes that only the removed entries made
                for entry in reversed(removed):
                    request = self._SyncObj__parseChangeClusterRequest(entry[0])
                    if request is not None:
                        self._SyncObj__doChangeCluster(request, reverse=True)
            if plan.conflict_index <= self._SyncObj__raftLastApplied:
                log.critical(
                    "leader %s replaces applied log entries from index %d (last applied %d): "
                    "this member's state may have diverged",
                    leader,
                    plan.conflict_index,
                    self._SyncObj__raftLastApplied,
                )
            self._SyncObj__deleteEntriesFrom(plan.conflict_index)
        for entry in plan.append:
            self._SyncObj__raftLog.add(*entry)
        if membership:  # pysyncobj applies membership changes when they enter the log
            for entry in plan.append:
                request = self._SyncObj__parseChangeClusterRequest(entry[0])
                if request is not None:
                    self._SyncObj__doChangeCluster(request)
        self._SyncObj__sendNextNodeIdx(leader, nextNodeIdx=plan.last_index + 1, success=True)
        return plan.last_index

    @replicated
    def _apply(self, payload: bytes) -> Any:
        cmd = orjson.loads(payload)
        with self.lock:
            try:
                result, events = self.state.apply(cmd)
            except Exception as exc:  # every replica fails the same way; keep the tick thread alive
                log.exception("applying %s failed", cmd.get("op"))
                result, events = EtcdError(300, f"applying the command failed: {exc}"), []
            self.applied_commands += 1
        if events and self._on_events is not None:
            self._on_events(events)
        return result

    def _state_changed(self, old: int, new: int) -> None:
        leader = self._getLeader()
        if leader != self._last_leader:
            self._last_leader = leader
            self.leader_changes += 1
            if self._on_leader_change is not None:
                self._on_leader_change()

    def _save_snapshot(self, filename: str, raft_data: tuple) -> None:
        """pysyncobj hands us its bookkeeping (last two entries, membership); we add the state."""
        last, before_last, cluster = raft_data
        with self.lock:
            state = self.state.to_snapshot()
        doc = {
            "format": "grove-kv-snapshot/1",
            "state": state,
            "entries": [_entry_to_json(last), _entry_to_json(before_last)],
            "cluster": sorted(n.address for n in cluster),
        }
        with open(filename, "wb") as f:
            f.write(orjson.dumps(doc))
            f.flush()
            os.fsync(f.fileno())

    def _load_snapshot(self, filename: str) -> tuple:
        with open(filename, "rb") as f:
            doc = orjson.loads(f.read())
        with self.lock:
            self.state.load_snapshot(doc["state"])
        if self._on_recover is not None:
            self._on_recover()
        last, before_last = (_entry_from_json(e) for e in doc["entries"])
        cluster = {TCPNode(a) for a in doc["cluster"]}
        return last, before_last, cluster

    # ---------------------------------------------------------------- asyncio
    def propose(self, cmd: dict, loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Future:
        """Replicate `cmd`; the future resolves with the state machine's result once committed."""
        loop = loop or asyncio.get_running_loop()
        fut = loop.create_future()

        def done(result: Any, err: int) -> None:
            loop.call_soon_threadsafe(_resolve, fut, result, err)

        self._apply(orjson.dumps(cmd), callback=done)
        return fut

    def membership_change(self, op: str, addr: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        """Add or remove a Raft peer by address (pysyncobj's dynamic membership)."""
        fut = loop.create_future()

        def done(result: Any, err: int) -> None:
            loop.call_soon_threadsafe(_resolve, fut, True, err)

        node = TCPNode(addr)
        if op == "add":
            self.addNodeToCluster(node, callback=done)
        else:
            self.removeNodeFromCluster(node, callback=done)
        return fut

    # ------------------------------------------------------------ read-only
    @property
    def leader_addr(self) -> str | None:
        leader = self._getLeader()
        return leader.address if leader is not None else None

    @property
    def is_leader(self) -> bool:
        return self._isLeader()

    @property
    def term(self) -> int:
        return self.raftCurrentTerm

    @property
    def peer_addrs(self) -> list[str]:
        return [n.address for n in self.otherNodes]


def _resolve(fut: asyncio.Future, result: Any, err: int) -> None:
    if fut.done():
        return
    if err == FAIL_REASON.SUCCESS:
        fut.set_result(result)
    else:
        fut.set_exception(ProposalFailed(_FAIL_NAMES.get(err, str(err))))


def _entry_to_json(entry: tuple) -> list:
    command, idx, term = entry
    return [base64.b64encode(command).decode(), idx, term]


def _entry_from_json(data: list) -> tuple:
    return (base64.b64decode(data[0]), data[1], data[2])


def now() -> float:
    return time.time()


def is_error(result: Any) -> bool:
    return isinstance(result, EtcdError)
