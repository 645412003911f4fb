"""The CronJob controller's decisions as pure functions: schedules (five fields, descriptors,
time zones), the most recent unmet time, concurrency policies, starting deadlines, history
limits — a CronJob and its jobs at a chosen "now" in, a plan out — plus its API pieces."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.controllers import testing as t
from orchestrator.controllers.cronjob import (
    SCHEDULED_TIMESTAMP_ANNOTATION,
    ScheduleError,
    job_name,
    job_ref,
    parse_schedule,
    plan_cronjob,
    unmet_schedule_time,
)
from orchestrator.controllers.util import format_time
from orchestrator.defaults import apply_defaults
from orchestrator.tables import PRINTERS
from orchestrator.validation import cron_schedule_error, validate


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() if "+" not in text else (
        datetime.fromisoformat(text).timestamp()
    )  # fmt: skip


def cronjob(schedule: str = "*/5 * * * *", *, created: str = "2026-03-01T00:00:00", status: dict | None = None,
            **spec: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": "tick",
            "namespace": "default",
            "uid": t.uid(),
            "creationTimestamp": format_time(ts(created)),
        },
        "spec": {
            "schedule": schedule,
            "concurrencyPolicy": "Allow",
            "suspend": False,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 1,
            "jobTemplate": {
                "metadata": {"labels": {"app": "tick"}},
                "spec": {
                    "template": {
                        "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "b"}]}
                    }
                },
            },
            **spec,
        },
        "status": dict(status or {}),
    }


def job_of(cj: dict[str, Any], name: str, finished: str | None = None, *, started: str = "2026-03-01T00:00:00",
           done: str | None = None) -> dict[str, Any]:  # fmt: skip
    status: dict[str, Any] = {"startTime": format_time(ts(started))}
    if finished:
        status["conditions"] = [{"type": finished, "status": "True"}]
    if done:
        status["completionTime"] = format_time(ts(done))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default", "uid": t.uid(), "resourceVersion": "7",
                     "ownerReferences": [t.owner_ref(cj)], "creationTimestamp": format_time(ts(started))},
        "spec": {},
        "status": status,
    }  # fmt: skip


def reasons(plan: Any) -> list[str]:
    return [reason for _, reason, _ in plan.events]


# --- schedules --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("*/5 * * * *", "2026-03-01T10:02:00", "2026-03-01T10:05:00"),
        ("@hourly", "2026-03-01T10:02:00", "2026-03-01T11:00:00"),
        ("@daily", "2026-03-01T10:02:00", "2026-03-02T00:00:00"),
        ("@weekly", "2026-03-03T10:00:00", "2026-03-08T00:00:00"),  # Sunday
        ("@monthly", "2026-03-03T10:00:00", "2026-04-01T00:00:00"),
        ("@yearly", "2026-03-03T10:00:00", "2027-01-01T00:00:00"),
        ("0 9 * * MON-FRI", "2026-03-06T10:00:00", "2026-03-09T09:00:00"),  # Friday -> Monday
        ("30 6 1 JAN ?", "2026-03-06T10:00:00", "2027-01-01T06:30:00"),
        ("0 0 13 * 5", "2026-03-01T00:00:00", "2026-03-06T00:00:00"),  # day-of-month OR weekday
        ("@every 90s", "2026-03-01T00:00:00", "2026-03-01T00:01:30"),
    ],
)
def test_next_schedule_times(schedule: str, after: str, expected: str) -> None:
    assert parse_schedule(schedule).next_after(ts(after)) == ts(expected)


def test_time_zones_move_the_schedule() -> None:
    berlin = parse_schedule("0 9 * * *", "Europe/Berlin")
    assert berlin.next_after(ts("2026-01-10T00:00:00")) == ts("2026-01-10T08:00:00")  # CET
    assert berlin.next_after(ts("2026-07-10T00:00:00")) == ts("2026-07-10T07:00:00")  # CEST
    with pytest.raises(ScheduleError, match="unknown time zone Mars/Olympus"):
        parse_schedule("0 9 * * *", "Mars/Olympus")
    with pytest.raises(ScheduleError, match="expected exactly 5 fields"):
        parse_schedule("0 9 * *")


def test_cron_syntax_errors_read_like_robfig_cron() -> None:
    assert cron_schedule_error("* * * * *") is None
    assert cron_schedule_error("0 0 * * 7") is None
    assert cron_schedule_error("* * * *") == "expected exactly 5 fields, found 4: [* * * *]"
    assert cron_schedule_error("60 * * * *") == "end of range (60) above maximum (59): 60"
    assert cron_schedule_error("* * 0 * *") == "beginning of range (0) below minimum (1): 0"
    assert cron_schedule_error("@fortnightly") == "unrecognized descriptor: @fortnightly"
    assert cron_schedule_error("* * * foo *") == "failed to parse int from foo"


def test_job_names_count_minutes_since_the_epoch() -> None:
    assert job_name("tick", ts("2026-03-01T10:05:00")) == f"tick-{int(ts('2026-03-01T10:05:00')) // 60}"
    assert job_name("tick", 27_000_000 * 60 + 59) == "tick-27000000"


def test_the_most_recent_unmet_time_counts_what_was_missed() -> None:
    sched = parse_schedule("*/5 * * * *")
    cj = cronjob(status={"lastScheduleTime": format_time(ts("2026-03-01T10:00:00"))})
    assert unmet_schedule_time(cj, sched, ts("2026-03-01T10:04:59")).most_recent is None
    times = unmet_schedule_time(cj, sched, ts("2026-03-01T10:05:00"))
    assert (times.most_recent, times.missed) == (ts("2026-03-01T10:05:00"), 1)
    times = unmet_schedule_time(cj, sched, ts("2026-03-01T10:17:00"))
    assert (times.most_recent, times.missed) == (ts("2026-03-01T10:15:00"), 3)
    # The starting deadline bounds how far back it looks.
    limited = cronjob(startingDeadlineSeconds=120, status=cj["status"])
    assert unmet_schedule_time(limited, sched, ts("2026-03-01T10:17:00")).most_recent is None
    never = cronjob(created="2026-03-01T10:01:00")
    assert unmet_schedule_time(never, sched, ts("2026-03-01T10:06:00")).most_recent == ts(
        "2026-03-01T10:05:00"
    )


# --- plans ---------------------------------------------------------------------------------------------------


def test_a_due_time_creates_the_job_from_the_template() -> None:
    cj = cronjob(created="2026-03-01T10:01:00")
    plan = plan_cronjob(cj, [], ts("2026-03-01T10:05:02"))
    body = plan.create
    assert body is not None
    assert body["metadata"]["name"] == job_name("tick", ts("2026-03-01T10:05:00"))
    assert body["metadata"]["labels"] == {"app": "tick"}
    assert body["metadata"]["annotations"][SCHEDULED_TIMESTAMP_ANNOTATION] == "2026-03-01T10:05:00Z"
    ref = body["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["controller"]) == ("CronJob", "tick", True)
    assert body["spec"] == cj["spec"]["jobTemplate"]["spec"]
    assert plan.status["lastScheduleTime"] == "2026-03-01T10:05:00Z"
    assert plan.requeue_after == pytest.approx(5 * 60 - 2 + 0.1)


def test_nothing_is_due_before_the_first_time_and_the_key_comes_back_then() -> None:
    plan = plan_cronjob(cronjob(created="2026-03-01T10:01:00"), [], ts("2026-03-01T10:03:00"))
    assert plan.create is None and plan.requeue_after == pytest.approx(120.1)


def test_a_time_already_run_is_not_run_again() -> None:
    cj = cronjob(created="2026-03-01T10:01:00")
    now = ts("2026-03-01T10:05:02")
    existing = job_of(cj, job_name("tick", ts("2026-03-01T10:05:00")), "Complete")
    assert plan_cronjob(cj, [existing], now).create is None


def test_forbid_skips_while_a_job_runs_and_allow_runs_both() -> None:
    base = cronjob(concurrencyPolicy="Forbid", status={"lastScheduleTime": "2026-03-01T10:00:00Z"})
    running = job_of(base, "tick-old")
    base["status"]["active"] = [job_ref(running)]
    plan = plan_cronjob(base, [running], ts("2026-03-01T10:05:01"))
    assert plan.create is None and "JobAlreadyActive" in reasons(plan)
    assert (
        plan.status["active"] == [job_ref(running)]
        and plan.status["lastScheduleTime"] == "2026-03-01T10:00:00Z"
    )
    base["spec"]["concurrencyPolicy"] = "Allow"
    plan = plan_cronjob(base, [running], ts("2026-03-01T10:05:01"))
    assert plan.create is not None and not plan.replace
    assert plan.status["active"] == [job_ref(running)]  # the new one is added once created


def test_replace_deletes_the_running_job_first() -> None:
    cj = cronjob(concurrencyPolicy="Replace", status={"lastScheduleTime": "2026-03-01T10:00:00Z"})
    running = job_of(cj, "tick-old")
    cj["status"]["active"] = [job_ref(running)]
    plan = plan_cronjob(cj, [running], ts("2026-03-01T10:05:01"))
    assert plan.create is not None and plan.replace == [job_ref(running)]
    assert "active" not in plan.status


def test_a_time_missed_by_more_than_the_starting_deadline_is_skipped() -> None:
    cj = cronjob(startingDeadlineSeconds=30, status={"lastScheduleTime": "2026-03-01T10:00:00Z"})
    plan = plan_cronjob(cj, [], ts("2026-03-01T10:05:40"))
    assert plan.create is None and plan.status["lastScheduleTime"] == "2026-03-01T10:00:00Z"
    assert plan.requeue_after == pytest.approx(260.1)  # on to 10:10
    assert plan_cronjob(cj, [], ts("2026-03-01T10:05:20")).create is not None


def test_suspended_cronjobs_schedule_nothing_but_still_track_jobs() -> None:
    cj = cronjob(suspend=True, status={"lastScheduleTime": "2026-03-01T10:00:00Z"})
    finished = job_of(cj, "tick-1", "Complete", done="2026-03-01T10:00:30")
    cj["status"]["active"] = [job_ref(finished)]
    plan = plan_cronjob(cj, [finished], ts("2026-03-01T11:00:00"))
    assert plan.create is None and plan.requeue_after is None
    assert "active" not in plan.status and "SawCompletedJob" in reasons(plan)
    assert plan.status["lastSuccessfulTime"] == "2026-03-01T10:00:30Z"


def test_vanished_and_unexpected_jobs() -> None:
    cj = cronjob(suspend=True)
    gone = {"kind": "Job", "name": "tick-9", "uid": "gone-uid", "namespace": "default"}
    cj["status"]["active"] = [gone]
    manual = job_of(cj, "manual")
    plan = plan_cronjob(cj, [manual], ts("2026-03-01T11:00:00"))
    assert plan.status["active"] == [gone]  # only a confirmed disappearance removes it
    assert "UnexpectedJob" in reasons(plan)
    plan = plan_cronjob(cj, [manual], ts("2026-03-01T11:00:00"), frozenset({"gone-uid"}))
    assert "active" not in plan.status and "MissingJob" in reasons(plan)


def test_history_limits_delete_the_oldest_finished_jobs() -> None:
    cj = cronjob(suspend=True, successfulJobsHistoryLimit=2, failedJobsHistoryLimit=0)
    ok = [job_of(cj, f"ok-{i}", "Complete", started=f"2026-03-01T0{i}:00:00") for i in range(4)]
    bad = job_of(cj, "bad", "Failed")
    running = job_of(cj, "run")
    plan = plan_cronjob(cj, [*reversed(ok), bad, running], ts("2026-03-01T11:00:00"))
    assert sorted(j["metadata"]["name"] for j in plan.cleanup) == ["bad", "ok-0", "ok-1"]


def test_a_broken_time_zone_is_reported_not_raised() -> None:
    cj = cronjob(timeZone="Nowhere/Land")
    plan = plan_cronjob(cj, [], ts("2026-03-01T11:00:00"))
    assert plan.create is None and "UnknownTimeZone" in reasons(plan)


# --- API ---------------------------------------------------------------------------------------------------------


def test_cronjob_defaults_and_validation() -> None:
    body = cronjob()
    for key in ("concurrencyPolicy", "suspend", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        del body["spec"][key]
    obj = apply_defaults("CronJob", body)
    sp = obj["spec"]
    assert (sp["concurrencyPolicy"], sp["suspend"], sp["successfulJobsHistoryLimit"], sp["failedJobsHistoryLimit"]) == (
        "Allow", False, 3, 1,
    )  # fmt: skip
    assert sp["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"
    assert validate("CronJob", obj) == []
    bad = apply_defaults(
        "CronJob", cronjob("61 * * * *", concurrencyPolicy="Sometimes", timeZone="Mars/Olympus")
    )
    bad["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    causes = {c.field: c.message for c in validate("CronJob", bad)}
    assert causes["spec.schedule"] == 'Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'
    assert causes["spec.timeZone"] == 'Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus'
    assert causes["spec.concurrencyPolicy"].startswith('Unsupported value: "Sometimes"')
    assert "spec.jobTemplate.spec.template.spec.restartPolicy" in causes
    long = apply_defaults("CronJob", cronjob())
    long["metadata"]["name"] = "x" * 53
    assert {c.field: c.message for c in validate("CronJob", long)}["metadata.name"].endswith(
        "must be no more than 52 characters"
    )


def test_cronjob_table_cells_follow_kubectl() -> None:
    printer = PRINTERS["cronjobs"]
    assert [c.name for c in printer.columns if c.priority == 0] == [
        "Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age",
    ]  # fmt: skip
    now = datetime.fromisoformat("2026-03-01T10:06:00+00:00")
    cj = cronjob(status={"lastScheduleTime": "2026-03-01T10:05:00Z", "active": [{"name": "a"}]})
    assert printer.cells(cj, now)[:7] == ["tick", "*/5 * * * *", "<none>", "False", 1, "60s", "10h"]
    zoned = cronjob(timeZone="Europe/Berlin")
    assert printer.cells(zoned, now)[2:6] == ["Europe/Berlin", "False", 0, "<none>"]
