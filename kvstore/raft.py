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
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.node import TCPNode

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
