"""The CronJob controller: create a Job at every time a cron schedule names.

`sync(namespace/name)` reads the CronJob and the Jobs it controls from the informer caches and
does what kube's cronjob controller (v2) does in one pass: reconcile `status.active` with the
jobs that exist (dropping finished and vanished ones, noting `lastSuccessfulTime`), delete
finished jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`, and — unless
suspended or being deleted — find the most recent unmet schedule time since
`lastScheduleTime` (or creation; no further back than `startingDeadlineSeconds`). A time
missed by more than the starting deadline is skipped (MissSchedule); `concurrencyPolicy`
Forbid skips while a job is active, Replace deletes the active jobs first, Allow runs them side
by side. The job is named `<cronjob>-<scheduled time in minutes since the epoch>`, so a time
is never run twice, and the key is requeued for the next schedule time.

Schedules are the standard five fields (minute hour day-of-month month day-of-week, with names,
ranges, steps, lists and `?`) or a descriptor (`@hourly`, `@daily`, ..., `@every 90s`),
evaluated in `spec.timeZone` (an IANA name; UTC by default — the controller manager's zone in
kube). Time arithmetic is croniter's; the decision (`plan_cronjob`) is a pure function of
the CronJob, its jobs and a clock reading, and the controller's clock is injectable
(`ControllerContext.clock`).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from orchestrator.apiclient import AlreadyExists, ApiError, GroupVersionResource, NotFound, Obj
from orchestrator.validation import cron_schedule_error

from .base import BaseController, ControllerContext, index_by_controller_uid, update_status_with_retry
from .job import JOBS, finished_condition
from .util import (
    being_deleted,
    controller_ref,
    creation_time,
    format_time,
    key_of,
    meta,
    name_of,
    namespace_of,
    new_controller_ref,
    parse_time,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

CRONJOBS = GroupVersionResource("batch", "v1", "cronjobs")
COMPONENT = "cronjob-controller"
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
BY_CONTROLLER_UID = "byControllerUID"
TOO_MANY_MISSED = 100
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScheduleError(ValueError):
    """A schedule or time zone the controller cannot use (the user must fix the CronJob)."""


# --- schedules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule in a time zone; `next_after`/`latest_at_or_before` work in epoch seconds."""

    expression: str
    zone: tzinfo
    every: float | None = None  # `@every <duration>`: a constant delay

    def next_after(self, t: float) -> float:
        """The first schedule time strictly after `t`."""
        if self.every is not None:
            return float(int(t)) + self.every
        start = datetime.fromtimestamp(t, self.zone)
        return croniter(self.expression, start).get_next(datetime).timestamp()

    def latest_at_or_before(self, t: float) -> float:
        """The last schedule time at or before `t` (for `@every`, counted from time 0)."""
        if self.every is not None:
            return (t // self.every) * self.every
        start = datetime.fromtimestamp(float(int(t)) + 1.0, self.zone)
        found = croniter(self.expression, start).get_prev(datetime).timestamp()
        return found if found <= t else croniter(self.expression, start).get_prev(datetime).timestamp()


def parse_schedule(schedule: str, time_zone: str | None = None) -> CronSchedule:
    """Parse a CronJob's schedule and timeZone; ScheduleError says what is wrong."""
    text = (schedule or "").strip()
    problem = cron_schedule_error(text)
    if problem:
        raise ScheduleError(f"unparseable schedule {schedule!r}: {problem}")
    try:
        zone: tzinfo = ZoneInfo(time_zone) if time_zone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {time_zone}") from None
    if text.startswith("@every "):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text[len("@every ") :]))
        return CronSchedule(text, zone, every=max(1.0, float(int(seconds))))
    if not text.startswith("@"):
        text = " ".join(f.replace("?", "*") for f in text.split())
    return CronSchedule(text, zone)


def job_name(cronjob_name: str, scheduled: float) -> str:
    """`<cronjob>-<minutes since the epoch>` (kube's getJobName), unique per schedule time."""
    return f"{cronjob_name}-{int(scheduled // 60)}"


@dataclass(frozen=True)
class ScheduleTimes:
    """The outcome of nextScheduleTime: the most recent unmet time (if any) and how many were missed."""

    most_recent: float | None
    missed: int


def unmet_schedule_time(cronjob: Mapping[str, Any], sched: CronSchedule, now: float) -> ScheduleTimes:
    """The most recent schedule time after the last one run (or creation) and at or before `now`,
    looking back no further than startingDeadlineSeconds."""
    earliest = parse_time(status(cronjob).get("lastScheduleTime")) or creation_time(cronjob) or now
    deadline = spec(cronjob).get("startingDeadlineSeconds")
    if isinstance(deadline, int) and now - deadline > earliest:
        earliest = now - deadline
    first = sched.next_after(earliest)
    if first > now:
        return ScheduleTimes(None, 0)
    latest = sched.latest_at_or_before(now)
    missed, t = 1, first
    while missed <= TOO_MANY_MISSED:
        t = sched.next_after(t)
        if t > now:
            break
        missed += 1
    return ScheduleTimes(max(latest, first), missed)


# --- the decision -------------------------------------------------------------------------------------


def job_ref(job: Mapping[str, Any]) -> Obj:
    m = meta(job)
    return {
        "kind": "Job",
        "namespace": m.get("namespace"),
        "name": m.get("name"),
        "uid": m.get("uid"),
        "apiVersion": "batch/v1",
        "resourceVersion": m.get("resourceVersion"),
    }


def job_from_template(cronjob: Mapping[str, Any], scheduled: float, zone: tzinfo = UTC) -> Obj:
    """The Job a CronJob runs at `scheduled` (getJobFromTemplate2)."""
    template = spec(cronjob).get("jobTemplate") or {}
    tmeta = template.get("metadata") or {}
    annotations = dict(tmeta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP_ANNOTATION] = (
        datetime.fromtimestamp(scheduled, zone).isoformat().replace("+00:00", "Z")
    )
    body: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name_of(cronjob), scheduled),
            "namespace": namespace_of(cronjob),
            "annotations": annotations,
            "ownerReferences": [new_controller_ref(cronjob, "batch/v1", "CronJob")],
        },
        "spec": copy.deepcopy(dict(template.get("spec") or {})),
    }
    if tmeta.get("labels"):
        body["metadata"]["labels"] = dict(tmeta["labels"])
    return body


def _start_key(job: Mapping[str, Any]) -> tuple[float, float, str]:
    """byJobStartTime: jobs without a startTime last, then creation time, then name."""
    started = parse_time(status(job).get("startTime"))
    return (started if started is not None else float("inf"), creation_time(job) or 0.0, name_of(job))


@dataclass
class CronJobPlan:
    """One sync's decision: the status to write, the job to create, the jobs to delete (Replace
    victims and history beyond the limits), events, and when to look again."""

    status: Obj
    create: Obj | None = None
    replace: list[Obj] = field(default_factory=list)  # active job refs to delete first
    cleanup: list[Mapping[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None


def plan_cronjob(
    cronjob: Mapping[str, Any],
    jobs: Sequence[Mapping[str, Any]],
    now: float,
    missing: frozenset[str] = frozenset(),
) -> CronJobPlan:
    """What the cronjob controller does at `now` for `cronjob` and the jobs it controls.

    `missing` holds uids of active jobs confirmed gone from the API server (not just from a cache)."""
    sp, old = spec(cronjob), status(cronjob)
    active: list[Obj] = [dict(r) for r in old.get("active") or () if isinstance(r, Mapping)]
    new_status: Obj = {k: v for k, v in old.items() if k != "active"}
    plan = CronJobPlan(status=new_status)
    by_uid = {uid_of(j): j for j in jobs}
    active_uids = {r.get("uid") for r in active}
    last_success = parse_time(old.get("lastSuccessfulTime"))

    for job in jobs:
        finished = finished_condition(job)
        if uid_of(job) in active_uids:
            if finished is not None:
                active = [r for r in active if r.get("uid") != uid_of(job)]
                plan.events.append(
                    ("Normal", "SawCompletedJob", f"Saw completed job: {name_of(job)}, condition: {finished}")
                )
        elif finished is None:
            plan.events.append(
                (
                    "Warning",
                    "UnexpectedJob",
                    f"Saw a job that the controller did not create or forgot: {name_of(job)}",
                )
            )
        if finished == "Complete":
            done = parse_time(status(job).get("completionTime"))
            if done is not None and (last_success is None or done > last_success):
                last_success = done
    for ref in list(active):
        if ref.get("uid") not in by_uid and ref.get("uid") in missing:
            active = [r for r in active if r.get("uid") != ref.get("uid")]
            plan.events.append(("Normal", "MissingJob", f"Active job went missing: {ref.get('name')}"))
    if last_success is not None:
        new_status["lastSuccessfulTime"] = format_time(last_success)

    # History: the oldest finished jobs beyond the limits go (cleanupFinishedJobs).
    for kind, limit_key in (("Complete", "successfulJobsHistoryLimit"), ("Failed", "failedJobsHistoryLimit")):
        limit = sp.get(limit_key)
        if not isinstance(limit, int):
            continue
        finished_jobs = sorted((j for j in jobs if finished_condition(j) == kind), key=_start_key)
        excess = finished_jobs[: max(0, len(finished_jobs) - limit)]
        plan.cleanup.extend(j for j in excess if not being_deleted(j))

    def done() -> CronJobPlan:
        if active:
            new_status["active"] = active
        return plan

    if being_deleted(cronjob) or sp.get("suspend") is True:
        return done()
    try:
        sched = parse_schedule(str(sp.get("schedule") or ""), sp.get("timeZone"))
    except ScheduleError as exc:
        reason = "UnknownTimeZone" if "time zone" in str(exc) else "UnparseableSchedule"
        plan.events.append(("Warning", reason, str(exc)))
        return done()

    times = unmet_schedule_time(cronjob, sched, now)
    next_time = sched.next_after(now)
    plan.requeue_after = max(0.0, next_time - now) + 0.1
    if times.most_recent is None:
        return done()
    if times.missed > TOO_MANY_MISSED:
        plan.events.append(
            (
                "Warning",
                "TooManyMissedTimes",
                f"too many missed start times: {times.missed}. Set or decrease .spec.startingDeadlineSeconds "
                "or check clock skew",
            )
        )
    scheduled = times.most_recent
    deadline = sp.get("startingDeadlineSeconds")
    if isinstance(deadline, int) and scheduled + deadline < now:
        plan.events.append(
            ("Warning", "MissSchedule", f"Missed scheduled time to start a job: {format_time(scheduled)}")
        )
        return done()
    name = job_name(name_of(cronjob), scheduled)
    if any(r.get("name") == name for r in active) or any(name_of(j) == name for j in jobs):
        return done()  # this time already ran
    policy = sp.get("concurrencyPolicy") or "Allow"
    if policy == "Forbid" and active:
        plan.events.append(
            (
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
        )
        return done()
    if policy == "Replace":
        plan.replace = list(active)
        active = []
    plan.create = job_from_template(cronjob, scheduled, sched.zone)
    new_status["lastScheduleTime"] = format_time(scheduled)
    return done()


# --- the controller ---------------------------------------------------------------------------------


class CronJobController(BaseController):
    name = "cronjob"
    default_workers = 5

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder(COMPONENT)
        self.cronjobs = self.informer(CRONJOBS)
        self.jobs = self.informer(JOBS, indexers={BY_CONTROLLER_UID: index_by_controller_uid})
        self.cronjobs.add_handler(self.enqueue_obj, lambda old, cur: self.enqueue_obj(cur), self.enqueue_obj)
        self.jobs.add_handler(self._job_changed, lambda old, cur: self._job_changed(cur), self._job_changed)

    def _job_changed(self, job: Obj) -> None:
        ref = controller_ref(job)
        if ref is not None and ref.get("kind") == "CronJob":
            self.enqueue(f"{namespace_of(job)}/{ref.get('name')}")

    async def sync(self, key: str) -> None:
        cronjob = self.cronjobs.get(key)
        if cronjob is None:
            return
        jobs = self.jobs.by_index(BY_CONTROLLER_UID, uid_of(cronjob))
        cached = {uid_of(j) for j in jobs}
        missing: set[str] = set()
        for ref in status(cronjob).get("active") or ():
            if ref.get("uid") in cached:
                continue
            try:
                fresh = await self.client.get(*JOBS, ref.get("name"), namespace=namespace_of(cronjob))
                if uid_of(fresh) != ref.get("uid"):
                    missing.add(str(ref.get("uid")))
            except NotFound:
                missing.add(str(ref.get("uid")))
        plan = plan_cronjob(cronjob, jobs, self.now(), frozenset(missing))
        for ref in plan.replace:
            await self._delete_job(cronjob, str(ref.get("name")), str(ref.get("uid")))
        if plan.create is not None:
            try:
                created = await self.client.create(*JOBS, plan.create, namespace=namespace_of(cronjob))
            except AlreadyExists:
                created = None  # made by an earlier sync whose status write was lost
            except ApiError as exc:
                self.recorder.warning(cronjob, "FailedCreate", f"Error creating job: {exc.message}")
                raise
            if created is not None:
                self.recorder.normal(cronjob, "SuccessfulCreate", f"Created job {name_of(created)}")
                plan.status.setdefault("active", []).append(job_ref(created))
        for etype, reason, message in plan.events:
            self.recorder.event(cronjob, etype, reason, message)
        if dict(plan.status) != dict(status(cronjob)):
            if await update_status_with_retry(self.client, CRONJOBS, cronjob, plan.status) is None:
                return  # deleted meanwhile
        for job in plan.cleanup:
            await self._delete_job(cronjob, name_of(job), uid_of(job))
        if plan.requeue_after is not None:
            self.enqueue_after(key, plan.requeue_after)

    async def _delete_job(self, cronjob: Obj, name: str, uid: str) -> None:
        try:
            await self.client.delete(
                *JOBS,
                name,
                namespace=namespace_of(cronjob),
                propagation_policy="Background",
                preconditions={"uid": uid},
            )
        except NotFound:
            return
        except ApiError as exc:
            if exc.code == 409:
                return
            self.recorder.warning(cronjob, "FailedDelete", f"Deleted job: {exc.message}")
            raise
        self.recorder.normal(cronjob, "SuccessfulDelete", f"Deleted job {name}")
        log.debug("%s: deleted job %s", key_of(cronjob), name)
