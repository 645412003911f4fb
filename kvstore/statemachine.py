"""What every member replicates: the key tree plus the cluster's own records (members, cluster id).

Raft hands `apply()` one command at a time, in log order, on every member. Commands are plain
dicts (JSON on the wire and in the journal). Membership records live here rather than in the key
space so a user's `rm -r /` cannot remove the cluster's own bookkeeping.
"""

from __future__ import annotations

from typing import Any

from .errors import EtcdError
from .tree import DEFAULT_HISTORY_SIZE, Event, KeyTree


class StateMachine:
    def __init__(self, history_size: int = DEFAULT_HISTORY_SIZE):
        self.tree = KeyTree(history_size)
        self.history_size = history_size
        self.cluster_id: str | None = None
        # member id (16 hex digits) -> {"id", "name", "peerURLs", "clientURLs"}
        self.members: dict[str, dict[str, Any]] = {}

    def apply(self, cmd: dict) -> tuple[Any, list[Event]]:
        """Apply one command; return (result, events). Errors are returned as EtcdError values."""
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
        return {"tree": self.tree.to_snapshot(), "cluster_id": self.cluster_id, "members": self.members}

    def load_snapshot(self, snap: dict) -> None:
        self.tree = KeyTree.from_snapshot(snap["tree"], self.history_size)
        self.cluster_id = snap.get("cluster_id")
        self.members = {k: dict(v) for k, v in snap.get("members", {}).items()}
