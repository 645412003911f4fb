"""The key tree: etcd v2's data model as a pure, deterministic state machine.

Every replica applies the same commands in the same order and must end in the same state, so
nothing in here reads a clock, a socket or a random number: time arrives inside the command
(`now`, decided by the member that proposed it) and expiry happens only when a replicated
`expire` command says so. Raft (kvstore/raft.py) and HTTP (kvstore/server.py) sit around it.

The tree keeps etcd's semantics: a global index bumped by every change, `createdIndex` and
`modifiedIndex` on each node, directories created on demand, hidden `_` keys, TTLs, in-order
keys, compare-and-swap/delete, and a bounded event history that serves watches from a past index.
"""

from __future__ import annotations

import heapq
import posixpath
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from . import errors as E
from .errors import EtcdError

DEFAULT_HISTORY_SIZE = 100_000

# Actions as etcd names them in responses and events.
GET, SET, CREATE, UPDATE, DELETE = "get", "set", "create", "update", "delete"
CAS, CAD, EXPIRE = "compareAndSwap", "compareAndDelete", "expire"


def clean_key(key: str) -> str:
    """Normalise a key the way etcd does (`path.Clean("/" + key)`)."""
    cleaned = posixpath.normpath("/" + key)
    # posixpath keeps a leading "//"; etcd's path.Clean does not.
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def is_hidden(watch_path: str, key: str) -> bool:
    """True when `key`, seen from `watch_path`, lies under a hidden (`_`-prefixed) segment."""
    if len(watch_path) > len(key):
        return False
    rest = key[len(watch_path) :] if watch_path != "/" else key
    return any(seg.startswith("_") for seg in rest.split("/") if seg)


def format_time(ts: float) -> str:
    """RFC 3339 with nanoseconds in UTC, as etcd writes `expiration`."""
    dt = datetime.fromtimestamp(ts, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}000Z"


class Node:
    __slots__ = ("key", "value", "children", "created", "modified", "expire", "parent", "attached")

    def __init__(self, key: str, value: str | None, created: int, parent: Node | None, expire: float | None):
        self.key = key
        self.value = value  # None for directories
        self.children: dict[str, Node] | None = {} if value is None else None
        self.created = created
        self.modified = created
        self.expire = expire
        self.parent = parent
        self.attached = True

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    def walk(self) -> Iterator[Node]:
        yield self
        if self.children:
            for child in self.children.values():
                yield from child.walk()

    def ttl_fields(self, out: dict, now: float) -> None:
        if self.expire is not None:
            remaining = self.expire - now
            ttl = int(remaining)
            if remaining - ttl > 0:
                ttl += 1
            ttl = max(ttl, 0)
            out["expiration"] = format_time(self.expire)
            out["ttl"] = ttl

    def to_json(self, now: float, recursive: bool = False, sort: bool = False, listing: bool = True) -> dict:
        """etcd's NodeExtern: a directory lists its visible children one level deep unless recursive."""
        out: dict[str, Any] = {}
        if self.key != "/":
            out["key"] = self.key
        if self.children is None:
            out["value"] = self.value
        else:
            out["dir"] = True
            if listing:
                kids = [c for c in self.children.values() if not c.name.startswith("_")]
                if sort:
                    kids.sort(key=lambda c: c.key)
                if kids:
                    out["nodes"] = [c.to_json(now, recursive, sort, listing=recursive) for c in kids]
        self.ttl_fields(out, now)
        if self.key != "/":
            out["modifiedIndex"] = self.modified
            out["createdIndex"] = self.created
        return out

    def snapshot_json(self, now: float) -> dict:
        """The node as it was at an event: no children, as etcd's events carry it."""
        out: dict[str, Any] = {"key": self.key}
        if self.children is None:
            out["value"] = self.value
        else:
            out["dir"] = True
        self.ttl_fields(out, now)
        out["modifiedIndex"] = self.modified
        out["createdIndex"] = self.created
        return out


class Event(dict):
    """An etcd event: `{"action", "node", "prevNode"?}` plus the index it happened at.

    `refresh` events (TTL refresh) are kept in the history for index continuity but never
    delivered to watchers, as in etcd.
    """

    __slots__ = ("index", "refresh", "dir_deleted")

    def __init__(self, action: str, node: dict, prev: dict | None, index: int, refresh: bool = False):
        super().__init__(action=action, node=node)
        if prev is not None:
            self["prevNode"] = prev
        self.index = index
        self.refresh = refresh
        # A deleted/expired directory also concerns watchers on keys below it.
        self.dir_deleted = action in (DELETE, EXPIRE, CAD) and prev is not None and prev.get("dir", False)

    @property
    def key(self) -> str:
        return self["node"]["key"]

    def matches(self, key: str, recursive: bool) -> bool:
        """Does this event concern a watcher on `key` (etcd's history-scan rule)?"""
        if self.refresh:
            return False
        ek = self.key
        if ek == key:
            return True
        if recursive:
            prefix = key if key.endswith("/") else key + "/"
            if ek.startswith(prefix) and not is_hidden(key, ek):
                return True
        if self.dir_deleted:
            prefix = ek if ek.endswith("/") else ek + "/"
            if key.startswith(prefix):
                return True
        return False


class History:
    """The last `size` events in a ring buffer, addressable by index in O(1).

    Indexes in the history are dense (every change bumps the index by one and records one
    event), so event `i` lives at slot `i % size`.
    """

    def __init__(self, size: int = DEFAULT_HISTORY_SIZE):
        self.size = max(1, size)
        self._ring: list[Event | None] = [None] * self.size
        self.start_index = 0  # index of the oldest event held, 0 when empty
        self.last_index = 0

    def __len__(self) -> int:
        return 0 if self.start_index == 0 else self.last_index - self.start_index + 1

    def add(self, ev: Event) -> None:
        self._ring[ev.index % self.size] = ev
        if self.start_index == 0:
            self.start_index = ev.index
        self.last_index = ev.index
        if self.last_index - self.start_index + 1 > self.size:
            self.start_index = self.last_index - self.size + 1

    def at(self, index: int) -> Event | None:
        if self.start_index == 0 or index < self.start_index or index > self.last_index:
            return None
        return self._ring[index % self.size]

    def check(self, since: int, store_index: int) -> None:
        """Raise 401 when events from `since` on are no longer all held."""
        oldest = self.start_index if self.start_index else store_index + 1
        if since < oldest and since <= store_index:
            raise EtcdError(
                E.EVENT_INDEX_CLEARED, f"the requested history has been cleared [{oldest}/{since}]", store_index
            )

    def scan(self, key: str, recursive: bool, since: int, store_index: int) -> Event | None:
        """The first event at or after `since` that concerns the watcher, or None if none yet."""
        for ev in self.iter_from(since, store_index):
            if ev.matches(key, recursive):
                return ev
        return None

    def iter_from(self, since: int, store_index: int) -> Iterator[Event]:
        """Events with index >= since, in order; 401 if some of them are already cleared."""
        self.check(since, store_index)
        i = max(since, self.start_index)
        while self.start_index and i <= self.last_index:
            ev = self._ring[i % self.size]
            if ev is not None and ev.index == i:
                yield ev
            i += 1

    def events(self) -> list[Event]:
        if self.start_index == 0:
            return []
        return [e for e in (self.at(i) for i in range(self.start_index, self.last_index + 1)) if e is not None]


class KeyTree:
    """etcd v2's store. Mutating methods take `now` (seconds since the epoch) from the command."""

    def __init__(self, history_size: int = DEFAULT_HISTORY_SIZE):
        self.root = Node("/", None, 0, None, None)
        self.index = 0
        self.history = History(history_size)
        self._ttl_heap: list[tuple[float, int, Node]] = []
        self._ttl_seq = 0
        # Counters for /v2/stats/store.
        self.stats: dict[str, int] = {}

    # ------------------------------------------------------------------ lookups
    def _find(self, key: str) -> Node | None:
        if key == "/":
            return self.root
        node = self.root
        for seg in key[1:].split("/"):
            if node.children is None:
                return None
            node = node.children.get(seg)
            if node is None:
                return None
        return node

    def _lookup(self, key: str) -> Node:
        """Like `_find`, but raise etcd's error: the first missing component, or a file in the way."""
        if key == "/":
            return self.root
        node = self.root
        for seg in key[1:].split("/"):
            if node.children is None:
                raise EtcdError(E.NOT_DIR, node.key, self.index)
            child = node.children.get(seg)
            if child is None:
                missing = ("/" + seg) if node.key == "/" else node.key + "/" + seg
                raise EtcdError(E.KEY_NOT_FOUND, missing, self.index)
            node = child
        return node

    def get(self, key: str, recursive: bool = False, sort: bool = False, now: float = 0.0) -> dict:
        key = clean_key(key)
        try:
            node = self._lookup(key)
        except EtcdError:
            self._count("getsFail")
            raise
        self._count("getsSuccess")
        return {"action": GET, "node": node.to_json(now, recursive, sort)}

    def next_expiry(self) -> float | None:
        """When the earliest TTL runs out (the leader proposes an `expire` command then)."""
        heap = self._ttl_heap
        while heap:
            exp, _, node = heap[0]
            if node.attached and node.expire == exp:
                return exp
            heapq.heappop(heap)
        return None

    # --------------------------------------------------------------- internals
    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _record(self, ev: Event) -> Event:
        self.history.add(ev)
        return ev

    def _set_ttl(self, node: Node, expire: float | None) -> None:
        node.expire = expire
        if expire is not None:
            self._ttl_seq += 1
            heapq.heappush(self._ttl_heap, (expire, self._ttl_seq, node))

    def _walk_create_parents(self, key: str, index: int) -> Node:
        """Return the parent directory of `key`, creating missing directories at `index`."""
        parent_key = posixpath.dirname(key)
        node = self.root
        if parent_key == "/":
            return node
        path = ""
        for seg in parent_key[1:].split("/"):
            path += "/" + seg
            child = node.children.get(seg)  # type: ignore[union-attr]
            if child is None:
                child = Node(path, None, index, node, None)
                node.children[seg] = child  # type: ignore[index]
            elif child.children is None:
                raise EtcdError(E.NOT_DIR, path, self.index)
            node = child
        return node

    def _detach(self, node: Node) -> None:
        parent = node.parent
        if parent is not None and parent.children is not None:
            parent.children.pop(node.name, None)
        for n in list(node.walk()):
            n.attached = False
            n.parent = None  # no parent<->child cycles left behind: refcounting frees the subtree

    @staticmethod
    def _expire_at(ttl: int | None, now: float) -> float | None:
        if ttl is None or ttl <= 0:
            return None
        return now + ttl

    # ---------------------------------------------------------------- commands
    def apply(self, cmd: dict) -> Event:
        """Apply one replicated command; return its event or raise EtcdError (state unchanged)."""
        op = cmd["op"]
        handler = _HANDLERS.get(op)
        if handler is None:
            raise EtcdError(E.INVALID_FIELD, f"unknown operation {op!r}", self.index)
        name = _STAT_NAMES.get(op)
        if op == "set" and cmd.get("prevExist") is False:
            name = "create"
        try:
            ev = handler(self, cmd)
        except EtcdError:
            if name:
                self._count(name + "Fail")
            raise
        if name:
            self._count(name + "Success")
        return ev

    def _op_set(self, cmd: dict) -> Event:
        """PUT without conditions (or with prevExist=false: create)."""
        key = clean_key(cmd["key"])
        now = cmd["now"]
        is_dir = cmd.get("dir", False)
        value = None if is_dir else cmd.get("value", "")
        create_only = cmd.get("prevExist") is False
        refresh = cmd.get("refresh", False)
        if key == "/":
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        existing = self._find(key)
        if refresh:
            if existing is None:
                raise EtcdError(E.KEY_NOT_FOUND, key, self.index)
            return self._refresh(existing, cmd, SET)
        if existing is not None:
            if create_only:
                raise EtcdError(E.NODE_EXIST, key, self.index)
            if existing.is_dir:
                raise EtcdError(E.NOT_FILE, key, self.index)
        parent = self._walk_create_parents(key, self.index + 1)
        self.index += 1
        prev = existing.snapshot_json(now) if existing is not None else None
        if existing is not None:
            self._detach(existing)
        node = Node(key, value, self.index, parent, None)
        parent.children[node.name] = node  # type: ignore[index]
        self._set_ttl(node, self._expire_at(cmd.get("ttl"), now))
        action = CREATE if create_only else SET
        return self._record(Event(action, node.snapshot_json(now), prev, self.index))

    def _refresh(self, node: Node, cmd: dict, action: str) -> Event:
        now = cmd["now"]
        prev = node.snapshot_json(now)
        self.index += 1
        node.modified = self.index
        self._set_ttl(node, self._expire_at(cmd.get("ttl"), now))
        return self._record(Event(action, node.snapshot_json(now), prev, self.index, refresh=True))

    def _op_update(self, cmd: dict) -> Event:
        """PUT with prevExist=true: the key must exist; a directory only takes a new TTL."""
        key = clean_key(cmd["key"])
        now = cmd["now"]
        if key == "/":
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        node = self._lookup(key)
        if cmd.get("refresh"):
            return self._refresh(node, cmd, UPDATE)
        value = cmd.get("value", "")
        if node.is_dir and value:
            raise EtcdError(E.NOT_FILE, key, self.index)
        prev = node.snapshot_json(now)
        self.index += 1
        if not node.is_dir:
            node.value = value
        node.modified = self.index
        self._set_ttl(node, self._expire_at(cmd.get("ttl"), now))
        return self._record(Event(UPDATE, node.snapshot_json(now), prev, self.index))

    def _compare(self, node: Node, prev_value: str | None, prev_index: int | None) -> None:
        value_ok = prev_value is None or node.value == prev_value
        index_ok = prev_index is None or node.modified == prev_index
        if value_ok and index_ok:
            return
        if not index_ok and value_ok:
            cause = f"[{prev_index} != {node.modified}]"
        elif not value_ok and index_ok:
            cause = f"[{prev_value} != {node.value}]"
        else:
            cause = f"[{prev_value} != {node.value}] [{prev_index} != {node.modified}]"
        raise EtcdError(E.TEST_FAILED, cause, self.index)

    def _op_cas(self, cmd: dict) -> Event:
        key = clean_key(cmd["key"])
        now = cmd["now"]
        if key == "/":
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        node = self._lookup(key)
        if node.is_dir:
            raise EtcdError(E.NOT_FILE, key, self.index)
        self._compare(node, cmd.get("prevValue"), cmd.get("prevIndex"))
        if cmd.get("refresh"):
            return self._refresh(node, cmd, CAS)
        prev = node.snapshot_json(now)
        self.index += 1
        node.value = cmd.get("value", "")
        node.modified = self.index
        self._set_ttl(node, self._expire_at(cmd.get("ttl"), now))
        return self._record(Event(CAS, node.snapshot_json(now), prev, self.index))

    def _op_delete(self, cmd: dict) -> Event:
        key = clean_key(cmd["key"])
        now = cmd["now"]
        recursive = cmd.get("recursive", False)
        as_dir = cmd.get("dir", False) or recursive
        if key == "/":
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        node = self._lookup(key)
        if node.is_dir:
            if not as_dir:
                raise EtcdError(E.NOT_FILE, key, self.index)
            if node.children and not recursive:
                raise EtcdError(E.DIR_NOT_EMPTY, key, self.index)
        return self._remove(node, DELETE, now)

    def _remove(self, node: Node, action: str, now: float) -> Event:
        prev = node.snapshot_json(now)
        self.index += 1
        self._detach(node)
        out: dict[str, Any] = {"key": node.key}
        if node.is_dir:
            out["dir"] = True
        out["modifiedIndex"] = self.index
        out["createdIndex"] = node.created
        return self._record(Event(action, out, prev, self.index))

    def _op_cad(self, cmd: dict) -> Event:
        key = clean_key(cmd["key"])
        now = cmd["now"]
        if key == "/":
            raise EtcdError(E.ROOT_READ_ONLY, "/", self.index)
        node = self._lookup(key)
        if node.is_dir:
            raise EtcdError(E.NOT_FILE, key, self.index)
        self._compare(node, cmd.get("prevValue"), cmd.get("prevIndex"))
        return self._remove(node, CAD, now)

    def _op_append(self, cmd: dict) -> Event:
        """POST: create a key named by the next index inside the directory (in-order keys)."""
        dir_key = clean_key(cmd["key"])
        name = f"{self.index + 1:020d}"
        key = name if dir_key == "/" else dir_key + "/" + name
        sub = dict(cmd, key="/" + key if dir_key == "/" else key, op="set", prevExist=False)
        existing = self._find(dir_key)
        if existing is not None and not existing.is_dir:
            raise EtcdError(E.NOT_DIR, dir_key, self.index)
        return self._op_set(sub)

    def _op_expire(self, cmd: dict) -> list[Event]:
        """Remove every node whose TTL ran out by `now` (the proposing leader's clock)."""
        now = cmd["now"]
        events = []
        heap = self._ttl_heap
        while heap and heap[0][0] <= now:
            exp, _, node = heapq.heappop(heap)
            if not node.attached or node.expire != exp:
                continue
            events.append(self._remove(node, EXPIRE, now))
        self.stats["expireCount"] = self.stats.get("expireCount", 0) + len(events)
        return events

    def _op_get(self, cmd: dict) -> dict:
        """A quorum read: a get that goes through the log so it sees every committed write."""
        return self.get(cmd["key"], cmd.get("recursive", False), cmd.get("sorted", False), cmd["now"])

    def _op_noop(self, cmd: dict) -> None:
        return None

    # --------------------------------------------------------------- snapshots
    def to_snapshot(self) -> dict:
        """A JSON-able dump of the whole state (nodes, index, TTLs, history)."""

        def dump(node: Node) -> list:
            kids = [dump(c) for c in node.children.values()] if node.children is not None else None
            return [node.name, node.value, node.created, node.modified, node.expire, kids]

        history = [[ev.index, ev.refresh, dict(ev)] for ev in self.history.events()]
        return {
            "index": self.index,
            "root": dump(self.root),
            "history_size": self.history.size,
            "history": history,
            "stats": self.stats,
        }

    @classmethod
    def from_snapshot(cls, snap: dict, history_size: int | None = None) -> KeyTree:
        tree = cls(history_size or snap.get("history_size", DEFAULT_HISTORY_SIZE))
        tree.index = snap["index"]
        tree.stats = dict(snap.get("stats", {}))

        def load(data: list, parent: Node | None) -> Node:
            name, value, created, modified, expire, kids = data
            if parent is None:
                key = "/"
            else:
                key = ("/" + name) if parent.key == "/" else parent.key + "/" + name
            node = Node(key, value, created, parent, None)
            node.modified = modified
            if kids is None:
                node.children = None
            else:
                for k in kids:
                    child = load(k, node)
                    node.children[child.name] = child  # type: ignore[index]
            tree._set_ttl(node, expire)
            return node

        tree.root = load(snap["root"], None)
        for index, refresh, body in snap.get("history", []):
            ev = Event(body["action"], body["node"], body.get("prevNode"), index, refresh)
            tree.history.add(ev)
        return tree


_HANDLERS = {
    "set": KeyTree._op_set,
    "update": KeyTree._op_update,
    "cas": KeyTree._op_cas,
    "delete": KeyTree._op_delete,
    "cad": KeyTree._op_cad,
    "append": KeyTree._op_append,
    "expire": KeyTree._op_expire,
    "get": KeyTree._op_get,
    "noop": KeyTree._op_noop,
}

_STAT_NAMES = {
    "set": "sets",
    "update": "update",
    "cas": "compareAndSwap",
    "delete": "delete",
    "cad": "compareAndDelete",
    "append": "create",
}
