"""What every member replicates: the key tree plus the cluster's own records (members, cluster id).

Raft hands `apply()` one command at a time, in log order, on every member. Commands are plain
dicts (JSON on the wire and in the journal). Membership records live here rather than in the key
space so a user's `rm -r /` cannot remove the cluster's own bookkeeping.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .errors import EtcdError
from .tree import DEFAULT_HISTORY_SIZE, Event, KeyTree

# How many recent request ids each replica remembers to answer a retried proposal.
DEDUP_WINDOW = 50_000


class StateMachine:
    def __init__(self, history_size: int = DEFAULT_HISTORY_SIZE):
        self.tree = KeyTree(history_size)
        self.history_size = history_size
        self.cluster_id: str | None = None
        # member id (16 hex digits) -> {"id", "name", "peerURLs", "clientURLs"}
        self.members: dict[str, dict[str, Any]] = {}
        # Request id -> result of recently applied writes. A member that lost track of a proposal
        # during a leader change proposes it again with the same id; applying it twice would
        # break linearizability, so the second copy just returns the first one's result
        # (client sessions, Raft thesis section 6.3).
        self.recent: OrderedDict[str, Any] = OrderedDict()

    def apply(self, cmd: dict) -> tuple[Any, list[Event]]:
        """Apply one command; return (result, events). Errors are returned as EtcdError values.

        A `batch` command (several clients' writes proposed as one Raft entry) applies each in
        order and returns the list of their results.
        """
        if cmd["op"] == "batch":
            results, events = [], []
            for sub in cmd["cmds"]:
                r, evs = self.apply(sub)
                results.append(r)
                events.extend(evs)
            return results, events
        rid = cmd.get("rid")
        if rid is not None:
            if rid in self.recent:
                return self.recent[rid], []
            result, events = self._apply(cmd)
            self.recent[rid] = result
            if len(self.recent) > DEDUP_WINDOW:
                self.recent.popitem(last=False)
            return result, events
        return self._apply(cmd)

    def _apply(self, cmd: dict) -> tuple[Any, list[Event]]:
        op = cmd["op"]
        if op.startswith("member_") or op == "bootstrap":
            return self._apply_cluster(cmd), []
        try:
            res = self.tree.apply(cmd)
        except EtcdError as err:
            return err, []
        if isinstance(res, Event):
            return res, [res]
        if isinstance(res, list):
            return res, res
        return res, []

    def _apply_cluster(self, cmd: dict) -> Any:
        op = cmd["op"]
        if op == "bootstrap":
            # First leader of a new cluster records the initial membership; later ones are no-ops.
            if self.cluster_id is None:
                self.cluster_id = cmd["cluster_id"]
                for m in cmd["members"]:
                    self.members.setdefault(m["id"], dict(m))
            return self.cluster_id
        if op == "member_add":
            m = cmd["member"]
            for other in self.members.values():
                if set(other["peerURLs"]) & set(m["peerURLs"]):
                    return EtcdError(409, "Peer URLs already exists", message="Peer URLs already exists")
            self.members[m["id"]] = dict(m)
            return dict(m)
        if op == "member_remove":
            return self.members.pop(cmd["id"], None)
        if op == "member_publish":
            m = self.members.get(cmd["id"])
            if m is None:
                return None
            m["name"] = cmd["name"]
            m["clientURLs"] = list(cmd["clientURLs"])
            return dict(m)
        if op == "member_update":
            m = self.members.get(cmd["id"])
            if m is None:
                return None
            m["peerURLs"] = list(cmd["peerURLs"])
            return dict(m)
        return None

    def to_snapshot(self) -> dict:
        return {
            "tree": self.tree.to_snapshot(),
            "cluster_id": self.cluster_id,
            "members": self.members,
            "recent": [[rid, _encode_result(r)] for rid, r in self.recent.items()],
        }

    def load_snapshot(self, snap: dict) -> None:
        self.tree = KeyTree.from_snapshot(snap["tree"], self.history_size)
        self.cluster_id = snap.get("cluster_id")
        self.members = {k: dict(v) for k, v in snap.get("members", {}).items()}
        self.recent = OrderedDict((rid, _decode_result(r)) for rid, r in snap.get("recent", []))


def _encode_result(r: Any) -> Any:
    if isinstance(r, Event):
        return {"event": dict(r), "index": r.index, "refresh": r.refresh}
    if isinstance(r, EtcdError):
        return {"error": r.to_dict()}
    return {"value": r}


def _decode_result(d: dict) -> Any:
    if "event" in d:
        body = d["event"]
        return Event(body["action"], body["node"], body.get("prevNode"), d["index"], d["refresh"])
    if "error" in d:
        return EtcdError.from_dict(d["error"])
    return d.get("value")
