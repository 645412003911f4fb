"""Leader election through a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

Several replicas of a component run; one holds the Lease (`spec.holderIdentity`) and renews
`spec.renewTime` every `retry_period`, the others watch it as hot standbys. A standby takes the
Lease when the holder has not changed the record for `leaseDurationSeconds` — measured on the
standby's own clock from when it last *saw* the record change, so clocks need not agree — or
at once when the holder released it on a clean shutdown (holderIdentity emptied). Every write
is a compare-and-swap on resourceVersion, so two candidates cannot both win. A leader that
cannot renew within `renew_deadline` steps down before anyone else may take over.
Nothing here is scheduler-specific: any component can lead with `LeaderElector.run(work)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.apiclient import LEASES, AlreadyExists, ApiClient, ApiError, Conflict, NotFound

log = logging.getLogger(__name__)


def micro_time(now: dt.datetime | None = None) -> str:
    """metav1.MicroTime as RFC 3339 with microseconds, e.g. 2024-05-01T12:00:00.000000Z."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0 "
                f"(got {self.lease_duration}s, {self.renew_deadline}s, {self.retry_period}s)"
            )


class LeaderElector:
    """Campaign for a Lease and run `work` while holding it."""

    def __init__(
        self,
        client: ApiClient,
        config: LeaseConfig,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.clock = clock
        self.on_change = on_change
        self.is_leader = False
        self._observed: dict[str, Any] | None = None  # the lease spec last seen
        self._observed_rv = ""
        self._observed_at = 0.0

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Forever: acquire the Lease, run `work()` while renewing it, and cancel `work` if the
        Lease is lost (then campaign again). Cancelling `run` releases the Lease if held."""
        try:
            while True:
                await self._acquire()
                self._set_leader(True)
                log.info(
                    "%s: became leader of lease %s/%s",
                    self.config.identity,
                    self.config.namespace,
                    self.config.name,
                )
                work_task = asyncio.create_task(work(), name="leader-work")
                renew_task = asyncio.create_task(self._renew_until_lost(), name="lease-renew")
                done, _ = await asyncio.wait({work_task, renew_task}, return_when=asyncio.FIRST_COMPLETED)
                for task in (work_task, renew_task):
                    if task not in done:
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                self._set_leader(False)
                if work_task in done:
                    work_task.result()  # re-raise what stopped the work
                    return
                log.warning(
                    "%s: lost lease %s/%s", self.config.identity, self.config.namespace, self.config.name
                )
        finally:
            if self.is_leader:
                self._set_leader(False)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.release())

    def _set_leader(self, leading: bool) -> None:
        self.is_leader = leading
        if self.on_change is not None:
            self.on_change(leading)

    async def _acquire(self) -> None:
        while True:
            if await self.try_acquire_or_renew():
                return
            await asyncio.sleep(self.config.retry_period)

    async def _renew_until_lost(self) -> None:
        last_renew = self.clock()
        while True:
            await asyncio.sleep(self.config.retry_period)
            try:
                renewed = await asyncio.wait_for(
                    self.try_acquire_or_renew(),
                    max(0.1, self.config.renew_deadline - (self.clock() - last_renew)),
                )
            except TimeoutError:
                renewed = False
            if renewed:
                last_renew = self.clock()
            elif self.clock() - last_renew >= self.config.renew_deadline:
                return

    def _observe(self, lease: dict[str, Any]) -> dict[str, Any]:
        spec = dict(lease.get("spec") or {})
        rv = str((lease.get("metadata") or {}).get("resourceVersion") or "")
        if spec != self._observed or rv != self._observed_rv:
            self._observed, self._observed_rv, self._observed_at = spec, rv, self.clock()
        return spec

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when we hold the Lease afterwards."""
        cfg = self.config
        now = micro_time()
        duration = max(1, round(cfg.lease_duration))
        try:
            lease = await self.client.get(*LEASES, cfg.name, namespace=cfg.namespace)
        except NotFound:
            fresh = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": {
                    "holderIdentity": cfg.identity,
                    "leaseDurationSeconds": duration,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                created = await self.client.create(*LEASES, fresh, namespace=cfg.namespace)
            except (AlreadyExists, Conflict):
                return False
            except ApiError as exc:
                log.info("%s: cannot create lease %s/%s: %s", cfg.identity, cfg.namespace, cfg.name, exc)
                return False
            self._observe(created)
            return True
        except ApiError as exc:
            log.info("%s: cannot read lease %s/%s: %s", cfg.identity, cfg.namespace, cfg.name, exc)
            return False

        spec = self._observe(lease)
        holder = spec.get("holderIdentity") or ""
        record_duration = float(spec.get("leaseDurationSeconds") or cfg.lease_duration)
        if holder and holder != cfg.identity and self._observed_at + record_duration > self.clock():
            return False  # held by someone else who renewed recently enough
        new_spec = dict(spec)
        new_spec.update(holderIdentity=cfg.identity, leaseDurationSeconds=duration, renewTime=now)
        if holder != cfg.identity:
            new_spec["acquireTime"] = now
            new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        updated = {**lease, "spec": new_spec}
        try:
            result = await self.client.update(*LEASES, updated, namespace=cfg.namespace)
        except ApiError as exc:
            if not isinstance(exc, Conflict):
                log.info("%s: cannot update lease %s/%s: %s", cfg.identity, cfg.namespace, cfg.name, exc)
            return False
        self._observe(result)
        return True

    async def release(self) -> None:
        """Hand the Lease back on a clean shutdown so a standby need not wait for it to expire."""
        cfg = self.config
        try:
            lease = await self.client.get(*LEASES, cfg.name, namespace=cfg.namespace)
        except ApiError:
            return
        spec = dict(lease.get("spec") or {})
        if spec.get("holderIdentity") != cfg.identity:
            return
        now = micro_time()
        spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=now, acquireTime=now)
        with contextlib.suppress(ApiError):
            await self.client.update(*LEASES, {**lease, "spec": spec}, namespace=cfg.namespace)
            log.info("%s: released lease %s/%s", cfg.identity, cfg.namespace, cfg.name)
