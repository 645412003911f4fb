"""Expectations: what a controller has asked for and not yet seen in its informer cache.

A ReplicaSet that creates 5 pods will not see them in its pod cache at once; if it synced again
before they arrive it would count too few pods and create 5 more. kube's ControllerExpectations
solves this: before creating N pods the controller records "expect N adds" for its key, the pod
informer's add handler lowers the count as each one shows up, and `satisfied(key)` is false
until the count reaches zero (or the record is 5 minutes old, in case a watch event was lost).
Meanwhile syncs still write status but do not create or delete. Deletions are tracked by pod key
(UIDTrackingControllerExpectations): a pod whose deletion we asked for may be seen first with a
deletionTimestamp and later as DELETED, and it must be counted only once.

One event loop owns an instance; there are no locks. The clock is injectable for tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

EXPECTATIONS_TIMEOUT = 5 * 60.0


@dataclass
class ControlleeExpectations:
    add: int
    delete: int
    timestamp: float

    def fulfilled(self) -> bool:
        return self.add <= 0 and self.delete <= 0


class ControllerExpectations:
    """Pending creations and deletions per controller key (kube's ControllerExpectations)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, timeout: float = EXPECTATIONS_TIMEOUT
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self._store: dict[str, ControlleeExpectations] = {}

    def get(self, key: str) -> ControlleeExpectations | None:
        return self._store.get(key)

    def satisfied(self, key: str) -> bool:
        """True when the controller may act on what its caches show: nothing is pending, the
        record expired (a lost event must not block a controller forever), or there is none."""
        exp = self._store.get(key)
        if exp is None:
            return True
        if exp.fulfilled():
            return True
        if self.clock() - exp.timestamp > self.timeout:
            log.info(
                "expectations of %s expired (add %d, delete %d); syncing anyway", key, exp.add, exp.delete
            )
            return True
        return False

    def set(self, key: str, add: int, delete: int) -> None:
        self._store[key] = ControlleeExpectations(add, delete, self.clock())

    def expect_creations(self, key: str, adds: int) -> None:
        self.set(key, adds, 0)

    def expect_deletions(self, key: str, deletes: int) -> None:
        self.set(key, 0, deletes)

    def lower(self, key: str, add: int, delete: int) -> None:
        exp = self._store.get(key)
        if exp is not None:
            exp.add -= add
            exp.delete -= delete

    def raise_(self, key: str, add: int, delete: int) -> None:
        exp = self._store.get(key)
        if exp is not None:
            exp.add += add
            exp.delete += delete

    def creation_observed(self, key: str) -> None:
        self.lower(key, 1, 0)

    def deletion_observed(self, key: str) -> None:
        self.lower(key, 0, 1)

    def delete(self, key: str) -> None:
        self._store.pop(key, None)

    def __len__(self) -> int:
        return len(self._store)


class UIDTrackingControllerExpectations(ControllerExpectations):
    """Deletions counted once per deleted object key, however many events announce them."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, timeout: float = EXPECTATIONS_TIMEOUT
    ) -> None:
        super().__init__(clock, timeout)
        self._deleting: dict[str, set[str]] = {}

    def expect(self, key: str, adds: int, deleted_keys: Iterable[str]) -> None:
        """Expect `adds` creations and the deletion of these object keys."""
        keys = set(deleted_keys)
        self._deleting[key] = keys
        self.set(key, adds, len(keys))

    def expect_deletions_of(self, key: str, deleted_keys: Iterable[str]) -> None:
        keys = set(deleted_keys)
        self._deleting[key] = keys
        self.expect_deletions(key, len(keys))

    def deletion_observed_of(self, key: str, deleted_key: str) -> None:
        keys = self._deleting.get(key)
        if keys is not None and deleted_key in keys:
            keys.discard(deleted_key)
            self.deletion_observed(key)

    def pending_deletions(self, key: str) -> frozenset[str]:
        return frozenset(self._deleting.get(key, ()))

    def delete(self, key: str) -> None:
        super().delete(key)
        self._deleting.pop(key, None)
