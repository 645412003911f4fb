"""The assumed-pod cache: count a pod on its node from the moment we decide, not when the watch says.

Binding is an HTTP request and the watch that reports the bound pod arrives later still; a burst
of pods scheduled in between would all see the node as empty and pile onto it. So the scheduler
*assumes* each decision: the pod goes into the snapshot on its chosen node at once, the bind
runs in the background, and the assumption ends one of three ways — the watch shows the pod
bound (confirmed: the observed object replaces the assumed one), the bind fails (forgotten:
the node gets its room back), or the watch stays silent for `ttl` seconds after the bind
finished (expired, as kube-scheduler's cache does). Time is passed in, never read.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.scheduler.snapshot import PodInfo, Snapshot


@dataclass
class Assumption:
    pod: PodInfo  # the copy placed in the snapshot, with node_name set
    deadline: float | None = None  # set when the bind finished; None while binding


class AssumeCache:
    """Placed pods, assumed or observed, kept in one `Snapshot`."""

    def __init__(self, snapshot: Snapshot, ttl: float = 30.0) -> None:
        self.snapshot = snapshot
        self.ttl = ttl
        self._assumed: dict[str, Assumption] = {}

    def assume(self, pod: PodInfo, node_name: str) -> PodInfo:
        """Place `pod` on `node_name` in the snapshot before the bind is confirmed."""
        placed = pod.bound_to(node_name)
        self.snapshot.add_pod(placed)
        self._assumed[pod.key] = Assumption(placed)
        return placed

    def finish_binding(self, key: str, now: float) -> None:
        """The bind request succeeded; start the clock on the watch catching up."""
        assumption = self._assumed.get(key)
        if assumption is not None:
            assumption.deadline = now + self.ttl

    def forget(self, key: str) -> bool:
        """The bind failed: give the node its room back (unless the watch already showed the
        pod placed, in which case what it showed stands)."""
        assumption = self._assumed.pop(key, None)
        if assumption is None:
            return False
        if self.snapshot.get_pod(key) is assumption.pod:
            self.snapshot.remove_pod(key)
        return True

    def pod_placed(self, pod: PodInfo) -> None:
        """The watch shows `pod` bound to a node: it replaces any assumption about it."""
        self._assumed.pop(pod.key, None)
        self.snapshot.add_pod(pod)

    def pod_gone(self, key: str) -> None:
        """The pod was deleted or finished: it no longer occupies its node."""
        self._assumed.pop(key, None)
        self.snapshot.remove_pod(key)

    def expire(self, now: float) -> list[str]:
        """Drop assumptions whose bind finished `ttl` ago without the watch confirming them."""
        expired = [k for k, a in self._assumed.items() if a.deadline is not None and a.deadline <= now]
        for key in expired:
            self.forget(key)
        return expired

    def is_assumed(self, key: str) -> bool:
        return key in self._assumed

    def __len__(self) -> int:
        return len(self._assumed)
