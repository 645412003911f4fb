"""The Job controller's decisions (`plan_job`) and the batch/v1 API pieces (defaults, validation,
table cells) as pure functions: snapshots of a job and its pods in, a plan out."""

from __future__ import annotations

from typing import Any

from orchestrator.controllers import testing as t
from orchestrator.controllers.job import (
    BACKOFF_LIMIT_EXCEEDED,
    COMPLETION_INDEX_ANNOTATION,
    DEADLINE_EXCEEDED,
    TRACKING_FINALIZER,
    backoff_delay,
    backoff_remaining,
    format_indexes,
    parse_indexes,
    plan_job,
    pod_for_job,
)
from orchestrator.controllers.util import format_time
from orchestrator.defaults import apply_defaults
from orchestrator.tables import PRINTERS
from orchestrator.validation import validate, validate_update

T0 = t.T0


def job(
    name: str = "pi",
    *,
    completions: int | None = 1,
    parallelism: int = 1,
    backoff_limit: int = 6,
    mode: str = "NonIndexed",
    restart: str = "Never",
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    uid = t.uid()
    labels = {"batch.kubernetes.io/controller-uid": uid, "job-name": name}
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "creationTimestamp": format_time(T0 - 60),
        },
        "spec": {
            "parallelism": parallelism,
            "backoffLimit": backoff_limit,
            "completionMode": mode,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "busybox"}]},
            },
            **spec,
        },
        "status": dict(status or {}),
    }
    if completions is not None:
        body["spec"]["completions"] = completions
    return body


def pod_of(owner: dict[str, Any], phase: str = "Running", *, finished: float | None = None, index: int | None = None,
           restarts: int = 0, ready: bool = True) -> dict[str, Any]:  # fmt: skip
    annotations = {COMPLETION_INDEX_ANNOTATION: str(index)} if index is not None else None
    pod = t.pod(
        labels=owner["spec"]["template"]["metadata"]["labels"],
        owner=owner,
        phase=phase,
        ready=ready if phase == "Running" else False,
        restarts=restarts,
        annotations=annotations,
    )
    pod["metadata"]["finalizers"] = [TRACKING_FINALIZER]
    if finished is not None:
        code = 0 if phase == "Succeeded" else 1
        pod["status"]["containerStatuses"][0]["state"] = {
            "terminated": {"exitCode": code, "finishedAt": format_time(finished)}
        }
    return pod


def counted(
    j: dict[str, Any], plan: Any, pods: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The job and pods after the controller wrote `plan.status` and removed the finalizers it
    named (what the next sync sees)."""
    released = {p["metadata"]["uid"] for p in plan.finalize}
    after = []
    for pod in pods:
        if pod["metadata"]["uid"] in released:
            pod = {**pod, "metadata": {**pod["metadata"], "finalizers": []}}
        after.append(pod)
    return {**j, "status": plan.status}, after


def conditions(plan_status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in plan_status.get("conditions") or []}


# --- creating and counting --------------------------------------------------------------------------


def test_a_new_job_starts_parallelism_pods_and_records_its_start() -> None:
    j = job(completions=5, parallelism=2)
    plan = plan_job(j, [], T0)
    assert plan.create == 2 and not plan.delete
    assert plan.status["active"] == 2 and plan.status["startTime"] == format_time(T0)
    assert "conditions" not in plan.status


def test_parallelism_is_capped_by_the_completions_still_needed() -> None:
    j = job(completions=5, parallelism=3, status={"startTime": format_time(T0 - 10)})
    pods = [pod_of(j, "Succeeded", finished=T0 - 5) for _ in range(3)] + [pod_of(j)]
    plan = plan_job(j, pods, T0)
    assert plan.create == 1  # 2 still needed, 1 running
    assert plan.status["uncountedTerminatedPods"]["succeeded"] == [p["metadata"]["uid"] for p in pods[:3]]
    assert "succeeded" not in plan.status and plan.status["active"] == 2
    assert plan.status["ready"] == 1
    assert plan.finalize == pods[:3]
    # Once their finalizers are gone the pods are counted, once.
    j, pods = counted(j, plan, pods)
    plan = plan_job(j, pods, T0)
    assert plan.status["succeeded"] == 3 and plan.status["uncountedTerminatedPods"] == {}
    assert not plan.finalize


def test_enough_successes_complete_the_job_and_stop_the_rest() -> None:
    j = job(completions=2, parallelism=3, status={"startTime": format_time(T0 - 10)})
    extra = pod_of(j)
    pods = [pod_of(j, "Succeeded", finished=T0 - 1), pod_of(j, "Succeeded", finished=T0 - 1), extra]
    plan = plan_job(j, pods, T0)
    assert conditions(plan.status)["SuccessCriteriaMet"][0] == "True"
    assert "Complete" not in conditions(plan.status)  # not while pods are uncounted
    assert plan.delete == [extra] and plan.create == 0
    j, pods = counted(j, plan, pods)
    plan = plan_job(j, pods, T0 + 1)
    assert conditions(plan.status)["Complete"] == ("True", "CompletionsReached")
    assert plan.status["completionTime"] == format_time(T0 + 1) and plan.status["succeeded"] == 2
    assert ("Normal", "Completed", "Job completed") in plan.events


def test_counts_never_go_down_when_finished_pods_disappear() -> None:
    j = job(
        completions=3, parallelism=1, status={"startTime": format_time(T0 - 10), "succeeded": 2, "failed": 1}
    )
    plan = plan_job(j, [], T0)
    assert plan.status["succeeded"] == 2 and plan.status["failed"] == 1
    assert plan.create == 1


def test_a_work_queue_job_completes_once_one_pod_succeeded_and_none_run() -> None:
    j = job(completions=None, parallelism=2, status={"startTime": format_time(T0 - 10)})
    running = pod_of(j)
    pods = [pod_of(j, "Succeeded", finished=T0 - 1), running]
    plan = plan_job(j, pods, T0)
    assert plan.create == 0 and "Complete" not in conditions(plan.status)
    j, pods = counted(j, plan, pods)
    plan = plan_job(j, pods[:1], T0)
    assert conditions(plan.status)["Complete"][0] == "True"


def test_without_expectations_met_nothing_is_created() -> None:
    plan = plan_job(job(completions=3, parallelism=3), [], T0, manage=False)
    assert plan.create == 0 and plan.status["startTime"] == format_time(T0)


# --- failures -----------------------------------------------------------------------------------------


def test_failed_pods_beyond_backoff_limit_fail_the_job() -> None:
    j = job(backoff_limit=1, status={"startTime": format_time(T0 - 100)})
    pods = [pod_of(j, "Failed", finished=T0 - 50), pod_of(j, "Failed", finished=T0 - 20)]
    plan = plan_job(j, pods, T0)
    assert conditions(plan.status)["FailureTarget"] == ("True", BACKOFF_LIMIT_EXCEEDED)
    assert "Failed" not in conditions(plan.status) and plan.create == 0
    j, pods = counted(j, plan, pods)
    plan = plan_job(j, pods, T0)
    assert conditions(plan.status)["Failed"] == ("True", BACKOFF_LIMIT_EXCEEDED)
    assert plan.status["failed"] == 2 and plan.create == 0 and "completionTime" not in plan.status
    assert ("Warning", BACKOFF_LIMIT_EXCEEDED, "Job has reached the specified backoff limit") in plan.events


def test_a_failure_within_the_limit_backs_off_before_the_next_pod() -> None:
    j = job(backoff_limit=3, status={"startTime": format_time(T0 - 100)})
    pods = [pod_of(j, "Failed", finished=T0 - 2)]
    plan = plan_job(j, pods, T0, backoff=10.0)
    assert plan.create == 0 and plan.requeue_after == 8.0
    plan = plan_job(j, pods, T0 + 10, backoff=10.0)
    assert plan.create == 1


def test_back_off_doubles_with_failures_since_the_last_success_and_is_capped() -> None:
    assert [backoff_delay(n) for n in range(5)] == [0.0, 10.0, 20.0, 40.0, 80.0]
    assert backoff_delay(40) == 360.0
    j = job()
    pods = [pod_of(j, "Failed", finished=T0 - 30), pod_of(j, "Succeeded", finished=T0 - 20),
            pod_of(j, "Failed", finished=T0 - 5), pod_of(j, "Failed", finished=T0 - 4)]  # fmt: skip
    assert backoff_remaining(pods, T0, base=10.0) == 16.0  # two failures after the success: 20 s from T0-4


def test_container_restarts_count_against_the_limit_with_restart_policy_on_failure() -> None:
    j = job(backoff_limit=2, restart="OnFailure", status={"startTime": format_time(T0 - 100)})
    assert "Failed" not in conditions(plan_job(j, [pod_of(j, restarts=1)], T0).status)
    plan = plan_job(j, [pod_of(j, restarts=2)], T0)
    assert conditions(plan.status)["Failed"] == ("True", BACKOFF_LIMIT_EXCEEDED)
    assert len(plan.delete) == 1


def test_active_deadline_fails_the_job_and_deletes_its_pods() -> None:
    j = job(activeDeadlineSeconds=30, status={"startTime": format_time(T0 - 20)})
    running = pod_of(j)
    plan = plan_job(j, [running], T0)
    assert "Failed" not in conditions(plan.status) and plan.requeue_after == 10.0
    plan = plan_job(j, [running], T0 + 10)
    assert conditions(plan.status)["Failed"] == ("True", DEADLINE_EXCEEDED)
    assert plan.delete == [running]


# --- suspend --------------------------------------------------------------------------------------------


def test_suspend_deletes_active_pods_and_resume_restarts_the_clock() -> None:
    j = job(suspend=True, status={"startTime": format_time(T0 - 50), "active": 1})
    running = pod_of(j)
    plan = plan_job(j, [running], T0)
    assert conditions(plan.status)["Suspended"] == ("True", "JobSuspended")
    assert plan.delete == [running] and plan.create == 0
    resumed = job(suspend=False, status=plan.status)
    plan = plan_job(resumed, [], T0 + 100)
    assert conditions(plan.status)["Suspended"] == ("False", "JobResumed")
    assert plan.status["startTime"] == format_time(T0 + 100) and plan.create == 1


def test_a_job_created_suspended_starts_nothing_and_has_no_start_time() -> None:
    plan = plan_job(job(suspend=True), [], T0)
    assert plan.create == 0 and "startTime" not in plan.status
    assert conditions(plan.status)["Suspended"][0] == "True"


# --- indexed --------------------------------------------------------------------------------------------


def test_indexed_jobs_create_the_missing_indexes_and_track_completed_ones() -> None:
    j = job(completions=5, parallelism=2, mode="Indexed", status={"startTime": format_time(T0 - 9)})
    pods = [pod_of(j, "Succeeded", finished=T0 - 1, index=0), pod_of(j, index=2)]
    plan = plan_job(j, pods, T0)
    assert plan.indexes == [1] and plan.create == 1
    assert plan.status["completedIndexes"] == "0"
    assert len(plan.status["uncountedTerminatedPods"]["succeeded"]) == 1
    done = job(
        completions=3, parallelism=3, mode="Indexed", status={"completedIndexes": "0,2", "succeeded": 2}
    )
    pods = [pod_of(done, "Succeeded", finished=T0, index=1)]
    plan = plan_job(done, pods, T0)
    assert plan.status["completedIndexes"] == "0-2"
    done, pods = counted(done, plan, pods)
    plan = plan_job(done, pods, T0)
    assert conditions(plan.status)["Complete"][0] == "True" and plan.status["succeeded"] == 3


def test_indexed_duplicates_are_deleted() -> None:
    j = job(completions=2, parallelism=2, mode="Indexed", status={"startTime": format_time(T0 - 9)})
    first, second = pod_of(j, index=0), pod_of(j, index=0, ready=False)
    plan = plan_job(j, [first, second, pod_of(j, index=1)], T0)
    assert plan.delete == [second] and plan.create == 0


def test_indexed_pods_carry_their_index() -> None:
    j = job(completions=3, mode="Indexed")
    pod = pod_for_job(j, 2)
    assert pod["metadata"]["generateName"] == "pi-2-"
    assert pod["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] == "2"
    assert pod["metadata"]["labels"][COMPLETION_INDEX_ANNOTATION] == "2"
    assert pod["spec"]["hostname"] == "pi-2"
    env = pod["spec"]["containers"][0]["env"]
    assert env[-1]["name"] == "JOB_COMPLETION_INDEX"
    assert (
        env[-1]["valueFrom"]["fieldRef"]["fieldPath"]
        == f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
    )
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert "annotations" not in pod_for_job(job(), None)["metadata"]


def test_index_sets_round_trip_in_kubes_interval_form() -> None:
    assert format_indexes({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"
    assert parse_indexes("0-2,4,6-7") == {0, 1, 2, 4, 6, 7}
    assert parse_indexes("") == set() and format_indexes([]) == ""


# --- API: defaults, validation, table ---------------------------------------------------------------------


def kubectl_create_job() -> dict[str, Any]:
    """What `kubectl create job pi --image=busybox -- sh -c 'echo hi'` sends (plus the server's uid)."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pi", "namespace": "default", "uid": "1234"},
        "spec": {
            "template": {
                "metadata": {},
                "spec": {
                    "containers": [{"name": "pi", "image": "busybox", "command": ["sh", "-c", "echo hi"]}],
                    "restartPolicy": "Never",
                },
            }
        },
    }


def test_job_defaults_generate_the_selector_and_labels() -> None:
    obj = apply_defaults("Job", kubectl_create_job())
    spec = obj["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["completionMode"] == "NonIndexed" and spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "1234"}}
    labels = spec["template"]["metadata"]["labels"]
    assert labels == {
        "batch.kubernetes.io/controller-uid": "1234",
        "controller-uid": "1234",
        "batch.kubernetes.io/job-name": "pi",
        "job-name": "pi",
    }
    assert obj["metadata"]["labels"] == labels
    assert validate("Job", obj) == []
    only_parallelism = kubectl_create_job()
    only_parallelism["spec"]["parallelism"] = 3
    assert "completions" not in apply_defaults("Job", only_parallelism)["spec"]


def test_a_manual_selector_is_kept() -> None:
    body = kubectl_create_job()
    body["spec"]["manualSelector"] = True
    body["spec"]["selector"] = {"matchLabels": {"app": "x"}}
    body["spec"]["template"]["metadata"]["labels"] = {"app": "x"}
    obj = apply_defaults("Job", body)
    assert obj["spec"]["selector"] == {"matchLabels": {"app": "x"}}
    assert validate("Job", obj) == []


def test_job_validation_speaks_kubes_words() -> None:
    body = kubectl_create_job()
    del body["spec"]["template"]["spec"]["restartPolicy"]
    body["spec"]["backoffLimit"] = -1
    body["spec"]["completionMode"] = "Indexed"
    body["spec"]["parallelism"] = 2
    causes = {c.field: c.message for c in validate("Job", apply_defaults("Job", body))}
    assert causes["spec.template.spec.restartPolicy"] == (
        'Unsupported value: "Always": supported values: "OnFailure", "Never"'
    )
    assert causes["spec.backoffLimit"] == "Invalid value: -1: must be greater than or equal to 0"
    assert causes["spec.completions"] == "Required value: when completion mode is Indexed"


def test_job_updates_keep_the_selector_and_template() -> None:
    old = apply_defaults("Job", kubectl_create_job())
    new = apply_defaults("Job", old, old)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    fields = {c.field for c in validate_update("Job", new, old)}
    assert "spec.template" in fields
    new = apply_defaults("Job", old, old)
    new["spec"]["selector"] = {"matchLabels": {"a": "b"}}
    assert "spec.selector" in {c.field for c in validate_update("Job", new, old)}
    suspended = apply_defaults(
        "Job", {**kubectl_create_job(), "spec": {**kubectl_create_job()["spec"], "suspend": True}}
    )
    changed = apply_defaults("Job", suspended, suspended)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    assert validate_update("Job", changed, suspended) == []


def test_job_table_cells_follow_kubectl() -> None:
    printer = PRINTERS["jobs"]
    assert [c.name for c in printer.columns if c.priority == 0] == [
        "Name",
        "Status",
        "Completions",
        "Duration",
        "Age",
    ]
    from datetime import UTC, datetime

    now = datetime.fromtimestamp(T0, UTC)
    running = job(completions=3, status={"startTime": format_time(T0 - 65), "succeeded": 1})
    assert printer.cells(running, now)[:4] == ["pi", "Running", "1/3", "65s"]
    done = job(
        completions=None,
        parallelism=2,
        status={"startTime": format_time(T0 - 300), "completionTime": format_time(T0 - 200), "succeeded": 1,
                "conditions": [{"type": "Complete", "status": "True"}]},
    )  # fmt: skip
    assert printer.cells(done, now)[:4] == ["pi", "Complete", "1/1 of 2", "100s"]
    failed = job(status={"conditions": [{"type": "Failed", "status": "True"}]})
    assert printer.cells(failed, now)[1:4] == ["Failed", "0/1", ""]
    suspended = job(status={"conditions": [{"type": "Suspended", "status": "True"}]})
    assert printer.cells(suspended, now)[1] == "Suspended"


def test_a_selector_of_the_users_own_needs_manual_selector() -> None:
    body = kubectl_create_job()
    body["spec"]["selector"] = {"matchLabels": {"app": "x"}}
    body["spec"]["template"]["metadata"]["labels"] = {"app": "x"}
    causes = {c.field: c.message for c in validate("Job", apply_defaults("Job", body))}
    assert causes["spec.selector"].endswith("`selector` not auto-generated")


def test_finished_pods_count_once_even_when_deleted_and_deleted_running_pods_not_at_all() -> None:
    j = job(completions=3, parallelism=1, status={"startTime": format_time(T0 - 10)})
    first = pod_of(j, "Succeeded", finished=T0 - 5)
    plan = plan_job(j, [first], T0)
    j, pods = counted(j, plan, [first])
    # The counted pod is deleted (pod GC, a user); a second one succeeds: two, not one.
    second = pod_of(j, "Succeeded", finished=T0 - 1)
    plan = plan_job(j, [second], T0)
    j, pods = counted(j, plan, [second])
    assert plan_job(j, pods, T0).status["succeeded"] == 2
    # A pod deleted while running is released, not counted as a failure.
    running = pod_of(j)
    running["metadata"]["deletionTimestamp"] = format_time(T0)
    running["status"]["phase"] = "Failed"
    plan = plan_job(j, [running], T0)
    assert plan.finalize == [running] and plan.status["uncountedTerminatedPods"] == {}
    assert "failed" not in plan.status


def test_pods_are_made_with_the_tracking_finalizer() -> None:
    assert pod_for_job(job(), None)["metadata"]["finalizers"] == [TRACKING_FINALIZER]


def failed_with(owner: dict[str, Any], code: int, finished: float = T0 - 1) -> dict[str, Any]:
    pod = pod_of(owner, "Failed", finished=finished)
    pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = code
    return pod


POLICY = {
    "rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": {"containerName": "c", "operator": "In", "values": [7]}},
    ]
}


def test_pod_failure_policy_fail_job_stops_at_the_first_match() -> None:
    j = job(backoff_limit=6, podFailurePolicy=POLICY, status={"startTime": format_time(T0 - 10)})
    pods = [failed_with(j, 42)]
    plan = plan_job(j, pods, T0)
    name = pods[0]["metadata"]["name"]
    message = f"Container c for pod default/{name} failed with exit code 42 matching FailJob rule at index 0"
    assert conditions(plan.status)["FailureTarget"] == ("True", "PodFailurePolicy")
    assert plan.create == 0 and "Failed" not in conditions(plan.status)
    j, pods = counted(j, plan, pods)
    plan = plan_job(j, pods, T0)
    assert conditions(plan.status)["Failed"] == ("True", "PodFailurePolicy")
    assert ("Warning", "PodFailurePolicy", message) in plan.events and plan.status["failed"] == 1


def test_pod_failure_policy_ignore_does_not_count_and_other_codes_count() -> None:
    j = job(backoff_limit=1, podFailurePolicy=POLICY, status={"startTime": format_time(T0 - 10)})
    ignored = failed_with(j, 7, finished=T0 - 30)
    disrupted = failed_with(j, 1, finished=T0 - 30)
    disrupted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True"}]
    plan = plan_job(j, [ignored, disrupted], T0)
    assert plan.status["uncountedTerminatedPods"] == {} and plan.finalize == [ignored, disrupted]
    assert plan.create == 1 and "failed" not in plan.status
    counted_pod = failed_with(j, 3)
    plan = plan_job(j, [counted_pod], T0 + 60)
    assert plan.status["uncountedTerminatedPods"] == {"failed": [counted_pod["metadata"]["uid"]]}


def test_pod_failure_policy_validation_and_defaults() -> None:
    body = kubectl_create_job()
    body["spec"]["podFailurePolicy"] = {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]
    }
    obj = apply_defaults("Job", body)
    assert obj["spec"]["podReplacementPolicy"] == "Failed"
    assert obj["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"] == "True"
    assert validate("Job", obj) == []
    obj["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    obj["spec"]["podFailurePolicy"]["rules"].append(
        {"action": "Explode", "onExitCodes": {"operator": "In", "values": [0]}}
    )
    causes = {c.field: c.message for c in validate("Job", obj)}
    assert causes["spec.template.spec.restartPolicy"].endswith(
        'only "Never" is supported when podFailurePolicy is specified'
    )
    assert causes["spec.podFailurePolicy.rules[1].action"].startswith('Unsupported value: "Explode"')
    assert causes["spec.podFailurePolicy.rules[1].onExitCodes.values[0]"].endswith(
        "must not be 0 for the In operator"
    )


def test_replacement_waits_for_terminating_pods_only_with_policy_failed() -> None:
    j = job(completions=2, parallelism=2, status={"startTime": format_time(T0 - 10)})
    going = pod_of(j)
    going["metadata"]["deletionTimestamp"] = format_time(T0)
    assert plan_job(j, [going, pod_of(j)], T0).create == 1  # TerminatingOrFailed (the default)
    j["spec"]["podReplacementPolicy"] = "Failed"
    plan = plan_job(j, [going, pod_of(j)], T0)
    assert plan.create == 0 and plan.status["terminating"] == 1
