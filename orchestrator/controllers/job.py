"""The Job controller: run pods until enough of them succeed, or give up.

`sync(namespace/name)` reads the Job and its pods (claimed through the selector the API server
generated — `batch.kubernetes.io/controller-uid` — with controller ownerReferences) from the
informer caches and takes one step, as kube's job controller does:

- counts succeeded and failed pods, each once (see the tracking finalizer below; Indexed jobs
  also keep the set of completed indexes in `status.completedIndexes`);
- fails the job (conditions FailureTarget + Failed, reason BackoffLimitExceeded or
  DeadlineExceeded) when more pods failed than `backoffLimit` allows (for restartPolicy
  OnFailure, container restarts count too) or `activeDeadlineSeconds` passed, deleting what
  still runs;
- completes it (SuccessCriteriaMet + Complete, completionTime) when `completions` pods (or,
  without completions, one pod and no active ones) succeeded;
- applies `podFailurePolicy` rules to each newly failed pod (onExitCodes / onPodConditions;
  FailJob fails the job with reason PodFailurePolicy, Ignore does not count the failure, Count
  is the default; FailIndex needs backoffLimitPerIndex, which grove does not implement, and
  counts like Count);
- honours `suspend` (Suspended condition; active pods deleted; startTime reset on resume);
- otherwise keeps min(parallelism, remaining) pods active, creating them after an exponential
  back-off from the last failures (10 s doubling up to 6 min) — Indexed pods carry their index
  as annotation, label, hostname and the JOB_COMPLETION_INDEX variable; with
  `podReplacementPolicy: Failed` a terminating pod is replaced only once it has finished;
- deletes a finished job `ttlSecondsAfterFinished` after it finished (kube's TTL-after-finished
  controller, folded in here).

Pods are counted the way kube counts them since 1.26: each carries the finalizer
`batch.kubernetes.io/job-tracking`; a finished pod's uid is written to
`status.uncountedTerminatedPods` before its finalizer is removed, and moves into
succeeded/failed once the finalizer is gone — so every pod counts exactly once even when
finished pods are deleted (pod GC, a user), and a crash in between loses nothing. The job is
marked finished only when no pod is left uncounted. Pods whose job is gone lose the finalizer
too. The decisions (`count_finished_pods`, `plan_job`) are pure functions of the job, its pods
and a clock reading; `JobController` reads caches and talks to the API server.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.apiclient import PODS, ApiError, GroupVersionResource, NotFound, Obj
from orchestrator.selectors import SelectorError, selector_from_object

from .base import BY_CONTROLLER_UID, ControllerContext, PodOwnerController, index_by_controller_uid
from .util import (
    being_deleted,
    controller_ref,
    format_time,
    get_condition,
    int_field,
    is_pod_ready,
    is_pod_terminal,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    new_controller_ref,
    parse_time,
    pod_from_template,
    rank_pods_for_deletion,
    spec,
    status,
    uid_of,
)

log = logging.getLogger(__name__)

JOBS = GroupVersionResource("batch", "v1", "jobs")
COMPONENT = "job-controller"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
DEFAULT_BACKOFF = 10.0  # kube's DefaultJobPodFailureBackOff
MAX_BACKOFF = 360.0  # kube's MaxJobPodFailureBackOff
# Tests shorten the back-off (kube's own tests patch the constant); seconds.
BACKOFF_ENV = "GROVE_JOB_POD_FAILURE_BACKOFF"
BURST = 500

# Reasons and messages as kube's job controller writes them.
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
POD_FAILURE_POLICY = "PodFailurePolicy"
BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
COMPLETIONS_REACHED = "CompletionsReached"
COMPLETIONS_MESSAGE = "Reached expected number of succeeded pods"


# --- small pure helpers ---------------------------------------------------------------------------


def condition_true(job: Mapping[str, Any], ctype: str) -> bool:
    cond = get_condition(status(job).get("conditions"), ctype)
    return cond is not None and cond.get("status") == "True"


def finished_condition(job: Mapping[str, Any]) -> str | None:
    """ "Complete" or "Failed" when the job has finished (IsJobFinished), else None."""
    for ctype in ("Complete", "Failed"):
        if condition_true(job, ctype):
            return ctype
    return None


def finish_time(job: Mapping[str, Any]) -> float | None:
    """When the job finished: the finished condition's lastTransitionTime (or completionTime)."""
    ctype = finished_condition(job)
    if ctype is None:
        return None
    cond = get_condition(status(job).get("conditions"), ctype) or {}
    return parse_time(cond.get("lastTransitionTime")) or parse_time(status(job).get("completionTime"))


def parse_indexes(text: Any) -> set[int]:
    """`1,3-5,7` into {1, 3, 4, 5, 7} (status.completedIndexes); junk is ignored."""
    out: set[int] = set()
    for part in str(text or "").split(","):
        first, dash, last = part.strip().partition("-")
        if first.isdigit() and (not dash or last.isdigit()):
            out.update(range(int(first), int(last if dash else first) + 1))
    return out


def format_indexes(indexes: Iterable[int]) -> str:
    """The interval form kube writes for status.completedIndexes: sorted, runs joined with `-`."""
    parts: list[str] = []
    for _, run in itertools.groupby(enumerate(sorted(set(indexes))), key=lambda p: p[1] - p[0]):
        values = [v for _, v in run]
        parts.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ",".join(parts)


def completion_index(pod: Mapping[str, Any]) -> int | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX_ANNOTATION)
    if raw is None:
        raw = labels_of(pod).get(COMPLETION_INDEX_ANNOTATION)
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def pod_finish_time(pod: Mapping[str, Any]) -> float | None:
    """When a terminal pod finished: its containers' latest finishedAt (else a condition time)."""
    latest: float | None = None
    st = status(pod)
    for group in ("containerStatuses", "initContainerStatuses"):
        for cs in st.get(group) or ():
            finished = parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
            if finished is not None and (latest is None or finished > latest):
                latest = finished
    if latest is None:
        for cond in st.get("conditions") or ():
            when = parse_time(cond.get("lastTransitionTime"))
            if when is not None and (latest is None or when > latest):
                latest = when
    return latest


def container_restarts(pod: Mapping[str, Any]) -> int:
    st = status(pod)
    return sum(
        int_field(cs, "restartCount")
        for group in ("containerStatuses", "initContainerStatuses")
        for cs in st.get(group) or ()
    )


def backoff_delay(failures: int, base: float = DEFAULT_BACKOFF, cap: float = MAX_BACKOFF) -> float:
    """The wait before the next pod after `failures` consecutive failures: base * 2^(n-1), capped."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** min(failures - 1, 30))


def backoff_remaining(
    pods: Sequence[Mapping[str, Any]], now: float, base: float = DEFAULT_BACKOFF, cap: float = MAX_BACKOFF
) -> float:
    """Seconds until a new pod may start: failures since the last success back off exponentially."""
    last_success = max(
        (t for p in pods if status(p).get("phase") == "Succeeded" if (t := pod_finish_time(p)) is not None),
        default=None,
    )
    failures = [
        t
        for p in pods
        if status(p).get("phase") == "Failed"
        if (t := pod_finish_time(p)) is not None and (last_success is None or t > last_success)
    ]
    if not failures:
        return 0.0
    return max(0.0, max(failures) + backoff_delay(len(failures), base, cap) - now)


def new_condition(ctype: str, reason: str, message: str, now: float, state: str = "True") -> Obj:
    stamp = format_time(now)
    return {
        "type": ctype,
        "status": state,
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def _put_condition(conditions: list[Obj], cond: Obj) -> bool:
    """Add or update a condition; True when its status changed (kube's updateConditionsIfNeeded)."""
    for i, old in enumerate(conditions):
        if old.get("type") == cond["type"]:
            if old.get("status") == cond["status"] and old.get("reason") == cond["reason"]:
                return False
            conditions[i] = cond
            return True
    conditions.append(cond)
    return True


# --- the decision ----------------------------------------------------------------------------------


@dataclass
class JobPlan:
    """One sync's decision: pods to create (Indexed: their indexes) and delete, the new status,
    the events to record, and when to look again."""

    status: Obj
    create: int = 0
    indexes: list[int] = field(default_factory=list)
    delete: list[Mapping[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    requeue_after: float | None = None
    # Pods whose tracking finalizer may go once `status` is written (counted, or deleted uncounted).
    finalize: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass
class PodTally:
    """Finished pods as kube's finalizer tracking counts them: `succeeded`/`failed` are the
    counted ones, `uncounted_*` the uids recorded in status.uncountedTerminatedPods whose pods
    still hold the tracking finalizer (counted once it is gone)."""

    succeeded: int
    failed: int
    uncounted_succeeded: list[str]
    uncounted_failed: list[str]
    completed_indexes: set[int]
    finalize: list[Mapping[str, Any]]
    policy_failure: str | None = None  # the message of a FailJob rule a newly failed pod matched

    @property
    def succeeded_total(self) -> int:
        return self.succeeded + len(self.uncounted_succeeded)

    @property
    def failed_total(self) -> int:
        return self.failed + len(self.uncounted_failed)


def match_pod_failure_policy(
    policy: Mapping[str, Any] | None, pod: Mapping[str, Any]
) -> tuple[str, str] | None:
    """The action of the first podFailurePolicy rule a failed pod matches, with kube's message
    (exit codes of non-zero terminated containers In/NotIn the values, or a pod condition)."""
    if not policy:
        return None
    st = status(pod)
    where = f"{namespace_of(pod)}/{name_of(pod)}"
    container_statuses = [*(st.get("initContainerStatuses") or ()), *(st.get("containerStatuses") or ())]
    for index, rule in enumerate(policy.get("rules") or ()):
        action = str(rule.get("action") or "")
        codes = rule.get("onExitCodes")
        if codes:
            values = set(codes.get("values") or ())
            for cs in container_statuses:
                if codes.get("containerName") and cs.get("name") != codes["containerName"]:
                    continue
                code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
                if not isinstance(code, int) or code == 0:
                    continue
                if (code in values) == (codes.get("operator") == "In"):
                    message = (
                        f"Container {cs.get('name')} for pod {where} failed with exit code {code} "
                        f"matching {action} rule at index {index}"
                    )
                    return action, message
        for pattern in rule.get("onPodConditions") or ():
            for cond in st.get("conditions") or ():
                if cond.get("type") == pattern.get("type") and cond.get("status") == (
                    pattern.get("status") or "True"
                ):
                    return (
                        action,
                        f"Pod {where} has condition {cond.get('type')} matching {action} rule at index {index}",
                    )
    return None


def has_tracking_finalizer(pod: Mapping[str, Any]) -> bool:
    return TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or ())


def count_finished_pods(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> PodTally:
    """trackJobStatusAndRemoveFinalizers, as a pure step. A pod that finished while holding the
    tracking finalizer is first recorded by uid in uncountedTerminatedPods (written before its
    finalizer is removed, so a crash loses nothing); once its finalizer is gone (or the pod is),
    it moves into the succeeded/failed counters — so every pod counts exactly once, however long
    it is kept. Pods deleted before they finished are not counted (their finalizer just goes)."""
    old = status(job)
    policy = spec(job).get("podFailurePolicy")
    old_uncounted = old.get("uncountedTerminatedPods") or {}
    by_uid = {uid_of(p): p for p in pods}
    tally = PodTally(
        int_field(old, "succeeded"),
        int_field(old, "failed"),
        [],
        [],
        parse_indexes(old.get("completedIndexes")),
        [],
    )

    def settled(uid: str) -> bool:
        pod = by_uid.get(uid)
        return pod is None or not has_tracking_finalizer(pod)

    for uid in old_uncounted.get("succeeded") or ():
        if settled(uid):
            tally.succeeded += 1
        else:
            tally.uncounted_succeeded.append(uid)
    for uid in old_uncounted.get("failed") or ():
        if settled(uid):
            tally.failed += 1
        else:
            tally.uncounted_failed.append(uid)
    known = set(old_uncounted.get("succeeded") or ()) | set(old_uncounted.get("failed") or ())
    for pod in pods:
        uid = uid_of(pod)
        if not has_tracking_finalizer(pod):
            continue
        phase = status(pod).get("phase")
        if uid not in known:
            if phase == "Succeeded":
                tally.uncounted_succeeded.append(uid)
            elif phase == "Failed" and not being_deleted(pod):
                matched = match_pod_failure_policy(policy, pod)
                action = matched[0] if matched else "Count"
                if action == "Ignore":
                    tally.finalize.append(pod)  # not counted against backoffLimit
                    continue
                tally.uncounted_failed.append(uid)
                if action == "FailJob" and tally.policy_failure is None and matched:
                    tally.policy_failure = matched[1]
        if phase == "Succeeded" and (index := completion_index(pod)) is not None:
            tally.completed_indexes.add(index)
        if uid in tally.uncounted_succeeded or uid in tally.uncounted_failed or being_deleted(pod):
            tally.finalize.append(pod)
    return tally


def plan_job(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    now: float,
    *,
    backoff: float = DEFAULT_BACKOFF,
    manage: bool = True,
) -> JobPlan:
    """What the job controller does for `job` with `pods` (its own, any phase) at time `now`.

    `manage` False (expectations not yet met) decides status and conditions but creates and
    deletes nothing."""
    sp, old = spec(job), status(job)
    conditions = [dict(c) for c in old.get("conditions") or () if isinstance(c, Mapping)]
    active = [p for p in pods if not is_pod_terminal(p) and not being_deleted(p)]
    terminating = [p for p in pods if not is_pod_terminal(p) and being_deleted(p)]
    completions = sp.get("completions")
    completions = int(completions) if isinstance(completions, int) else None
    parallelism = int_field(sp, "parallelism", 1)
    indexed = sp.get("completionMode") == "Indexed"
    tally = count_finished_pods(job, pods)
    done: set[int] = set()
    if indexed:
        done = {i for i in tally.completed_indexes if completions is not None and 0 <= i < completions}
        succeeded = len(done)
    else:
        succeeded = tally.succeeded_total
    failed = tally.failed_total
    plan = JobPlan(status={})
    start = parse_time(old.get("startTime"))
    suspended = sp.get("suspend") is True
    finished = finished_condition(job)
    completion_time = old.get("completionTime")

    if finished is None and suspended:
        plan.delete = list(active) if manage else []
        if _put_condition(conditions, new_condition("Suspended", "JobSuspended", "Job suspended", now)):
            plan.events.append(("Normal", "Suspended", "Job suspended"))
    elif finished is None:
        if condition_true(job, "Suspended"):
            _put_condition(conditions, new_condition("Suspended", "JobResumed", "Job resumed", now, "False"))
            plan.events.append(("Normal", "Resumed", "Job resumed"))
            start = None  # the deadline counts from the resume
        if start is None:
            start = now
        target = get_condition(conditions, "FailureTarget")
        if target is not None and target.get("status") == "True":
            failure: tuple[str, str] | None = (str(target.get("reason")), str(target.get("message")))
        elif tally.policy_failure is not None:
            failure = (POD_FAILURE_POLICY, tally.policy_failure)
        else:
            failure = _failure(job, active, failed, start, now)
        # The job finishes once every finished pod is counted (no pod left in uncountedTerminatedPods).
        settled = not tally.uncounted_succeeded and not tally.uncounted_failed
        if failure is not None:
            reason, message = failure
            _put_condition(conditions, new_condition("FailureTarget", reason, message, now))
            if settled:
                _put_condition(conditions, new_condition("Failed", reason, message, now))
                plan.events.append(("Warning", reason, message))
            plan.delete = list(active) if manage else []
        elif _complete(completions, indexed, succeeded, len(active)):
            _put_condition(
                conditions, new_condition("SuccessCriteriaMet", COMPLETIONS_REACHED, COMPLETIONS_MESSAGE, now)
            )
            if settled:
                _put_condition(
                    conditions, new_condition("Complete", COMPLETIONS_REACHED, COMPLETIONS_MESSAGE, now)
                )
                completion_time = format_time(now)
                plan.events.append(("Normal", "Completed", "Job completed"))
            plan.delete = list(active) if manage else []
        elif manage:
            # podReplacementPolicy Failed: a terminating pod is replaced only once it has finished.
            waiting = terminating if sp.get("podReplacementPolicy") == "Failed" else []
            _manage(
                plan,
                sp,
                active,
                waiting,
                pods,
                completions,
                parallelism,
                indexed,
                done,
                succeeded,
                now,
                backoff,
            )
        deadline = sp.get("activeDeadlineSeconds")
        if failure is None and isinstance(deadline, int):
            left = max(0.0, start + deadline - now)
            plan.requeue_after = left if plan.requeue_after is None else min(left, plan.requeue_after)

    new_active = len(active) + plan.create - len([p for p in plan.delete if not being_deleted(p)])
    new: Obj = {}
    if conditions:
        new["conditions"] = conditions
    if start is not None:
        new["startTime"] = format_time(start)
    elif old.get("startTime") and suspended:
        new["startTime"] = old["startTime"]
    if completion_time:
        new["completionTime"] = completion_time
    if new_active > 0:
        new["active"] = new_active
    if tally.succeeded:
        new["succeeded"] = tally.succeeded
    if tally.failed:
        new["failed"] = tally.failed
    if indexed and done:
        new["completedIndexes"] = format_indexes(done)
    new["terminating"] = len(terminating)
    uncounted: Obj = {}
    if tally.uncounted_succeeded:
        uncounted["succeeded"] = tally.uncounted_succeeded
    if tally.uncounted_failed:
        uncounted["failed"] = tally.uncounted_failed
    new["uncountedTerminatedPods"] = uncounted
    plan.finalize = tally.finalize
    new["ready"] = sum(1 for p in active if is_pod_ready(p) and p not in plan.delete)
    plan.status = new
    return plan


def _failure(
    job: Mapping[str, Any], active: Sequence[Mapping[str, Any]], failed: int, start: float, now: float
) -> tuple[str, str] | None:
    sp = spec(job)
    limit = int_field(sp, "backoffLimit", 6)
    if failed > limit:
        return BACKOFF_LIMIT_EXCEEDED, BACKOFF_MESSAGE
    if ((sp.get("template") or {}).get("spec") or {}).get("restartPolicy") == "OnFailure":
        # pastBackoffLimitOnFailure: container restarts of active pods count as failures.
        restarts = sum(container_restarts(p) for p in active)
        if restarts > 0 and restarts >= limit:
            return BACKOFF_LIMIT_EXCEEDED, BACKOFF_MESSAGE
    deadline = sp.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and now - start >= deadline:
        return DEADLINE_EXCEEDED, DEADLINE_MESSAGE
    return None


def _complete(completions: int | None, indexed: bool, succeeded: int, active: int) -> bool:
    if completions is None:
        return succeeded > 0 and active == 0
    return succeeded >= completions


def _manage(
    plan: JobPlan,
    sp: Mapping[str, Any],
    active: list[Mapping[str, Any]],
    waiting: list[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    completions: int | None,
    parallelism: int,
    indexed: bool,
    done: set[int],
    succeeded: int,
    now: float,
    backoff: float,
) -> None:
    """manageJob: the pods to create or delete to keep the wanted number active."""
    if indexed and completions is not None:
        # Duplicates and out-of-range indexes go first; then the wanted indexes are the missing ones.
        seen: set[int] = set()
        keep: list[Mapping[str, Any]] = []
        for pod in sorted(active, key=lambda p: not is_pod_ready(p)):
            index = completion_index(pod)
            if index is None or index >= completions or index in seen or index in done:
                plan.delete.append(pod)
            else:
                seen.add(index)
                keep.append(pod)
        seen |= {i for p in waiting if (i := completion_index(p)) is not None}
        missing = [i for i in range(completions) if i not in done and i not in seen]
        room = min(parallelism - len(keep) - len(waiting), len(missing), BURST)
        if room < 0:
            plan.delete.extend(sorted(keep, key=lambda p: -(completion_index(p) or 0))[:-room])
        elif room > 0:
            wait = backoff_remaining(pods, now, backoff)
            if wait > 0:
                plan.requeue_after = wait
            else:
                plan.indexes = missing[:room]
                plan.create = len(plan.indexes)
        return
    if completions is None:
        want = 0 if succeeded > 0 else parallelism
    else:
        want = max(0, min(parallelism, completions - succeeded))
    diff = want - len(active) - len(waiting)
    if diff > 0:
        wait = backoff_remaining(pods, now, backoff)
        if wait > 0:
            plan.requeue_after = wait
        else:
            plan.create = min(diff, BURST)
    elif diff < 0:
        plan.delete = list(rank_pods_for_deletion(active, active, now)[: min(-diff, BURST)])


def pod_for_job(job: Mapping[str, Any], index: int | None) -> Obj:
    """A pod from the job's template; Indexed pods carry their completion index."""
    template = copy.deepcopy(dict(spec(job).get("template") or {}))
    ref = new_controller_ref(job, "batch/v1", "Job")
    pod = pod_from_template(job, template, ref)
    finalizers = pod["metadata"].setdefault("finalizers", [])
    if TRACKING_FINALIZER not in finalizers:
        finalizers.append(TRACKING_FINALIZER)
    if index is None:
        return pod
    meta = pod["metadata"]
    meta["generateName"] = f"{name_of(job)}-{index}-"
    meta.setdefault("annotations", {})[COMPLETION_INDEX_ANNOTATION] = str(index)
    meta["labels"][COMPLETION_INDEX_ANNOTATION] = str(index)
    pod_spec = pod["spec"]
    pod_spec.setdefault("hostname", f"{name_of(job)}-{index}")
    env_var = {
        "name": COMPLETION_INDEX_ENV,
        "valueFrom": {
            "fieldRef": {
                "apiVersion": "v1",
                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']",
            }
        },
    }
    for group in ("initContainers", "containers"):
        for ctr in pod_spec.get(group) or ():
            env = [e for e in ctr.get("env") or () if e.get("name") != COMPLETION_INDEX_ENV]
            ctr["env"] = [*env, copy.deepcopy(env_var)]
    return pod


def _rv(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def status_changed(job: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return dict(status(job)) != dict(new)


# --- the controller ----------------------------------------------------------------------------------


class JobController(PodOwnerController):
    name = "job"
    default_workers = 5
    api_version = "batch/v1"
    kind = "Job"
    owner_gvr = JOBS
    owner_indexers = {BY_CONTROLLER_UID: index_by_controller_uid}
    component = COMPONENT
    wake_on_pod_ready = False

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.backoff = float(os.environ.get(BACKOFF_ENV) or DEFAULT_BACKOFF)
        # The job as this controller last wrote it, until the cache catches up: a sync woken by a
        # pod event right after a status write then starts from that write, not a conflict.
        self._written: dict[str, Obj] = {}

    def _current(self, key: str) -> Obj | None:
        cached = self.owners.get(key)
        written = self._written.get(key)
        if cached is None or written is None:
            self._written.pop(key, None)
            return cached
        if uid_of(written) == uid_of(cached) and _rv(written) > _rv(cached):
            return written
        del self._written[key]
        return cached

    # Pods that hold the tracking finalizer but whose job is gone get their own key, so they are
    # not stuck (kube's orphan pod queue).
    def owned_added(self, obj: Obj) -> None:
        super().owned_added(obj)
        self._check_orphan(obj)

    def owned_updated(self, old: Obj, cur: Obj) -> None:
        super().owned_updated(old, cur)
        self._check_orphan(cur)

    def _check_orphan(self, pod: Obj) -> None:
        ref = controller_ref(pod)
        if has_tracking_finalizer(pod) and (
            ref is None or self.resolve_owner(namespace_of(pod), ref) is None
        ):
            self.enqueue(("orphan-pod", key_of(pod)))

    async def sync(self, key: str | tuple[str, str]) -> None:
        if isinstance(key, tuple):
            await self._release_orphan(key[1])
            return
        job = self._current(key)
        if job is None:
            self.expectations.delete(key)
            return
        if finished_condition(job) is not None or being_deleted(job):
            # Nothing more is counted: every pod may go, and a finished job runs nothing.
            pods = self.pod_informer.by_index(BY_CONTROLLER_UID, uid_of(job))
            await self._remove_finalizers([p for p in pods if has_tracking_finalizer(p)])
            if finished_condition(job) is not None:
                await self._stop_leftovers(key, job, pods)
                await self._maybe_expire(key, job)
            return
        try:
            sel = selector_from_object(spec(job).get("selector"))
        except SelectorError as exc:
            log.info("%s: invalid selector: %s", key, exc)
            return
        if sel.empty:
            return
        pods = await self.claim_owned(job, lambda p: sel.matches(labels_of(p)))
        manage = self.expectations.satisfied(key)
        plan = plan_job(job, pods, self.now(), backoff=self.backoff, manage=manage)
        error: ApiError | None = None
        if plan.create or plan.delete:
            indexes = iter(plan.indexes)
            try:
                await self.pod_control.sync_pods(
                    key,
                    job,
                    plan.create,
                    lambda: pod_for_job(job, next(indexes) if plan.indexes else None),
                    [p for p in plan.delete if not being_deleted(p)],
                )
            except ApiError as exc:
                error = exc
        for etype, reason, message in plan.events:
            self.recorder.event(job, etype, reason, message)
        if status_changed(job, plan.status):
            # No blind retry on a conflict: the counts rest on the status this plan started from.
            try:
                job = await self.client.update_status(*JOBS, {**job, "status": plan.status})
            except NotFound:
                return
            self._written[key] = job
        # Only now that status holds their uids may the counted pods lose their finalizer.
        await self._remove_finalizers(plan.finalize)
        if error is not None:
            raise error
        if finished_condition(job) is not None:
            await self._maybe_expire(key, job)
        elif plan.requeue_after is not None:
            self.enqueue_after(key, plan.requeue_after + 0.05)

    async def _remove_finalizers(self, pods: Iterable[Mapping[str, Any]]) -> None:
        patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}}
        for pod in pods:
            try:
                await self.client.patch(
                    *PODS, name_of(pod), patch, namespace=namespace_of(pod), patch_type="strategic"
                )
            except NotFound:
                continue

    async def _release_orphan(self, pod_key: str) -> None:
        """A pod with the tracking finalizer whose job is gone: drop the finalizer (after asking
        the API server, not just the cache, whether the job really is gone)."""
        pod = self.pod_informer.get(pod_key)
        if pod is None or not has_tracking_finalizer(pod):
            return
        ref = controller_ref(pod)
        if ref is not None and ref.get("kind") == self.kind:
            try:
                job = await self.client.get(*JOBS, str(ref.get("name")), namespace=namespace_of(pod))
                if (
                    uid_of(job) == ref.get("uid")
                    and finished_condition(job) is None
                    and not being_deleted(job)
                ):
                    return  # alive: its own sync counts the pod
            except NotFound:
                pass
        await self._remove_finalizers([pod])

    async def _stop_leftovers(self, key: str, job: Obj, pods: Sequence[Mapping[str, Any]]) -> None:
        """A finished job runs nothing: delete pods still active (a delete that failed when the
        job finished is retried here)."""
        leftovers = [p for p in pods if not is_pod_terminal(p) and not being_deleted(p)]
        if leftovers and self.expectations.satisfied(key):
            await self.pod_control.sync_pods(key, job, 0, lambda: {}, leftovers)

    async def _maybe_expire(self, key: str, job: Obj) -> None:
        """ttlSecondsAfterFinished: delete the finished job (its pods follow through the GC)."""
        ttl = spec(job).get("ttlSecondsAfterFinished")
        finished = finish_time(job)
        if not isinstance(ttl, int) or finished is None or being_deleted(job):
            return
        left = finished + ttl - self.now()
        if left > 0:
            self.enqueue_after(key, left + 0.05)
            return
        log.info("%s: finished %ds ago, past ttlSecondsAfterFinished; deleting", key, int(-left) + ttl)
        try:
            await self.client.delete(
                *JOBS,
                name_of(job),
                namespace=namespace_of(job),
                propagation_policy="Foreground",
                preconditions={"uid": uid_of(job)},
            )
        except NotFound:
            pass
        except ApiError as exc:
            if exc.code != 409:
                raise
            log.info("%s: changed or replaced before its TTL delete: %s", key_of(job), exc)
