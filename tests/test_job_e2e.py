"""Jobs and CronJobs end to end: a 3-member store, the API server, the scheduler, hollow node
agents (`grove node --runtime fake`, whose containers exit as pod annotations script them) and
the controller manager, all real processes, driven through kubectl 1.32 as a user would.

The manager runs with the job back-off shortened (GROVE_JOB_POD_FAILURE_BACKOFF) so a failing
job reaches its backoffLimit in seconds; CronJob timing uses `@every`, which kube accepts too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.controllers.job import BACKOFF_ENV, COMPLETION_INDEX_ANNOTATION
from tests.apiserver_fixture import ApiServerProcess, apiserver  # noqa: F401 - the module's fixture
from tests.test_controllers_e2e import Cluster, wait_for

pytestmark = [pytest.mark.slow]

EXIT = "grove.io/fake-exit-code"
RUN = "grove.io/fake-run-seconds"


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServerProcess) -> Iterator[Cluster]:  # noqa: F811
    workdir = tempfile.mkdtemp(prefix="grove-job-e2e-")
    c = Cluster(apiserver, workdir)
    try:
        c.start("scheduler", "orchestrator.scheduler.cli", "--server", apiserver.url, "--no-leader-elect")
        os.environ[BACKOFF_ENV] = "0.2"
        try:
            c.start(
                "manager", "orchestrator.controllers.cli", "--server", apiserver.url, "--no-leader-elect",
                "--port", "0", "-v",
            )  # fmt: skip
        finally:
            os.environ.pop(BACKOFF_ENV, None)
        root = os.path.join(workdir, "root-jobs")
        c.start(
            "nodes-jobs", "node.cli", "--server", apiserver.url, "--runtime", "fake", "--count", "2",
            "--name-prefix", "jobs-", "--port", "0", "--root-dir", root, "--node-ip", "127.0.0.1",
            "--node-lease-duration-seconds", "2", "--node-status-update-frequency", "1",
        )  # fmt: skip
        wait_for(
            lambda: c.node_ready("jobs-0") and c.node_ready("jobs-1"), "hollow nodes Ready", check=c.check
        )
        yield c
    finally:
        c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def job(name: str, *, exit_code: int = 0, run: float = 0.3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"annotations": {EXIT: str(exit_code), RUN: str(run)}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "grove/busybox:1.35", "command": ["true"]}],
                },
            },
            **spec,
        },
    }


def get_job(c: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    return c.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}", missing_ok=True)


def job_pods(c: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    return c.pods(ns, f"batch.kubernetes.io/job-name={name}")


def conditions(obj: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    return {
        k["type"]: (k["status"], k.get("reason", ""))
        for k in (obj or {}).get("status", {}).get("conditions", [])
    }


def test_completions_with_parallelism(cluster: Cluster) -> None:
    ns = cluster.namespace("job-par")
    cluster.apply(ns, job("par", completions=4, parallelism=2))
    cluster.kubectl("wait", "-n", ns, "--for=condition=complete", "job/par", "--timeout=60s", timeout=90)
    st = get_job(cluster, ns, "par")["status"]
    assert st["succeeded"] == 4 and "failed" not in st and "active" not in st
    assert st["startTime"] and st["completionTime"]
    pods = job_pods(cluster, ns, "par")
    assert len(pods) == 4 and all(p["status"]["phase"] == "Succeeded" for p in pods)
    # Every pod was counted through the tracking finalizer, which is gone from all of them.
    assert st["uncountedTerminatedPods"] == {} and not any(p["metadata"].get("finalizers") for p in pods)
    out = cluster.kubectl("get", "jobs", "-n", ns)
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert row.split()[:3] == ["par", "Complete", "4/4"]
    described = cluster.kubectl("describe", "job", "-n", ns, "par")
    assert "Pods Statuses:    0 Active (0 Ready) / 4 Succeeded / 0 Failed" in described, described
    assert "Completions:      4" in described and "Parallelism:      2" in described
    wait_for(lambda: "Created pod: par-" in cluster.kubectl("describe", "job", "-n", ns, "par"), "events")


def test_a_failing_job_stops_at_its_backoff_limit(cluster: Cluster) -> None:
    ns = cluster.namespace("job-fail")
    cluster.apply(ns, job("boom", exit_code=3, run=0.1, backoffLimit=2))
    cluster.kubectl("wait", "-n", ns, "--for=condition=failed", "job/boom", "--timeout=60s", timeout=90)
    obj = get_job(cluster, ns, "boom")
    assert conditions(obj)["Failed"] == ("True", "BackoffLimitExceeded")
    assert obj["status"]["failed"] == 3 and "succeeded" not in obj["status"]
    pods = job_pods(cluster, ns, "boom")
    assert len(pods) == 3 and all(p["status"]["phase"] == "Failed" for p in pods)
    row = cluster.kubectl("get", "jobs", "-n", ns, "--no-headers").split()
    assert row[:3] == ["boom", "Failed", "0/1"]
    wait_for(lambda: cluster.events(ns, "BackoffLimitExceeded"), "the BackoffLimitExceeded event")


def test_a_pod_failure_policy_fails_the_job_on_a_matching_exit_code(cluster: Cluster) -> None:
    ns = cluster.namespace("job-pfp")
    policy = {
        "rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}}
        ]
    }
    cluster.apply(ns, job("fatal", exit_code=42, run=0.1, backoffLimit=6, podFailurePolicy=policy))
    cluster.kubectl("wait", "-n", ns, "--for=condition=failed", "job/fatal", "--timeout=60s", timeout=90)
    obj = get_job(cluster, ns, "fatal")
    assert conditions(obj)["Failed"] == ("True", "PodFailurePolicy")
    assert obj["status"]["failed"] == 1 and len(job_pods(cluster, ns, "fatal")) == 1


def test_indexed_completion_mode(cluster: Cluster) -> None:
    ns = cluster.namespace("job-idx")
    cluster.apply(ns, job("idx", completions=3, parallelism=3, completionMode="Indexed"))
    cluster.kubectl("wait", "-n", ns, "--for=condition=complete", "job/idx", "--timeout=60s", timeout=90)
    st = get_job(cluster, ns, "idx")["status"]
    assert st["completedIndexes"] == "0-2" and st["succeeded"] == 3
    pods = job_pods(cluster, ns, "idx")
    indexes = sorted(p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] for p in pods)
    assert indexes == ["0", "1", "2"]
    for pod in pods:
        index = pod["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]
        assert pod["metadata"]["name"].startswith(f"idx-{index}-")
        assert pod["spec"]["hostname"] == f"idx-{index}"
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert "JOB_COMPLETION_INDEX" in env


def test_kubectl_create_get_and_delete_cascading_to_pods(cluster: Cluster) -> None:
    ns = cluster.namespace("job-cli")
    cluster.kubectl(
        "create", "job", "pi", "-n", ns, "--image=grove/busybox:1.35", "--", "sh", "-c", "echo hi"
    )
    obj = get_job(cluster, ns, "pi")
    uid = obj["metadata"]["uid"]
    assert obj["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert obj["metadata"]["labels"]["job-name"] == "pi"
    # The fake runtime runs an unscripted container until it is stopped: the job stays Running.
    pods = wait_for(lambda: [p for p in job_pods(cluster, ns, "pi") if p["status"].get("phase") == "Running"],
                    "the job's pod to run", check=cluster.check)  # fmt: skip
    assert pods[0]["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"]
    assert pods[0]["metadata"]["ownerReferences"][0]["uid"] == uid
    assert pods[0]["metadata"]["labels"]["controller-uid"] == uid
    wait_for(lambda: get_job(cluster, ns, "pi")["status"].get("ready") == 1, "status.ready")
    row = cluster.kubectl("get", "jobs", "-n", ns, "--no-headers").split()
    assert row[:3] == ["pi", "Running", "0/1"]
    assert cluster.kubectl("get", "job", "-n", ns, "pi", "-o", "jsonpath={.status.active}") == "1"
    cluster.kubectl("delete", "job", "-n", ns, "pi")
    wait_for(lambda: not cluster.pods(ns), "the job's pods to be deleted with it", check=cluster.check)


def test_suspend_and_resume(cluster: Cluster) -> None:
    ns = cluster.namespace("job-susp")
    cluster.apply(ns, job("nap", run=0.2, suspend=True))
    wait_for(
        lambda: conditions(get_job(cluster, ns, "nap")).get("Suspended", ("",))[0] == "True", "Suspended"
    )
    assert not cluster.pods(ns)
    cluster.kubectl("patch", "job", "-n", ns, "nap", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    cluster.kubectl("wait", "-n", ns, "--for=condition=complete", "job/nap", "--timeout=60s", timeout=90)
    assert conditions(get_job(cluster, ns, "nap"))["Suspended"] == ("False", "JobResumed")


def test_ttl_after_finished_deletes_the_job_and_its_pods(cluster: Cluster) -> None:
    ns = cluster.namespace("job-ttl")
    cluster.apply(ns, job("brief", ttlSecondsAfterFinished=1))
    wait_for(lambda: get_job(cluster, ns, "brief") is None and not cluster.pods(ns), "the TTL to delete the job",
             check=cluster.check)  # fmt: skip


def cronjob(name: str, schedule: str, **spec: Any) -> dict[str, Any]:
    template = job("unused")["spec"]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {"schedule": schedule, "jobTemplate": {"metadata": {"labels": {"cron": name}}, "spec": template},
                 **spec},
    }  # fmt: skip


def test_kubectl_create_job_from_a_cronjob(cluster: Cluster) -> None:
    ns = cluster.namespace("cron-manual")
    cluster.apply(ns, cronjob("yearly", "0 0 1 1 *"))
    cluster.kubectl("create", "job", "-n", ns, "by-hand", "--from=cronjob/yearly")
    made = get_job(cluster, ns, "by-hand")
    ref = made["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"]) == ("CronJob", "yearly")
    assert made["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    cluster.kubectl("wait", "-n", ns, "--for=condition=complete", "job/by-hand", "--timeout=60s", timeout=90)
    # The controller notes the success of a job it owns, though it did not schedule it.
    wait_for(
        lambda: (
            cluster.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs/yearly")
            .get("status", {})
            .get("lastSuccessfulTime")
        ),
        "lastSuccessfulTime",
        check=cluster.check,
    )
    header, row = cluster.kubectl("get", "cronjobs", "-n", ns).splitlines()[:2]
    assert header.split() == ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]
    assert row.split()[:9] == ["yearly", "0", "0", "1", "1", "*", "<none>", "False", "0"]
    assert "<none>" in row.split()[9]  # never scheduled
    described = cluster.kubectl("describe", "cronjob", "-n", ns, "yearly")
    assert "Concurrency Policy:" in described and "Allow" in described, described
    wait_for(
        lambda: cluster.events(ns, "UnexpectedJob"), "the UnexpectedJob warning for a job it did not create"
    )


def test_a_cronjob_runs_on_its_schedule(cluster: Cluster) -> None:
    ns = cluster.namespace("cron-every")
    # Each job runs 300 s; Forbid keeps it the only one however often the schedule fires (the
    # job name has minutes, so within a minute kube's naming alone already does).
    body = cronjob("often", "@every 2s", concurrencyPolicy="Forbid")
    body["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"][RUN] = "300"
    cluster.apply(ns, body)

    def cj() -> dict[str, Any]:
        return cluster.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs/often") or {}

    active = wait_for(lambda: cj().get("status", {}).get("active"), "a scheduled job", check=cluster.check)
    name = active[0]["name"]
    assert name.startswith("often-") and name[len("often-") :].isdigit()
    made = get_job(cluster, ns, name)
    assert made["metadata"]["labels"]["cron"] == "often"
    assert "batch.kubernetes.io/cronjob-scheduled-timestamp" in made["metadata"]["annotations"]
    assert cj()["status"]["lastScheduleTime"]
    jobs = cluster.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == [name]
    row = cluster.kubectl("get", "cronjobs", "-n", ns, "--no-headers").split()
    assert row[:6] == ["often", "@every", "2s", "<none>", "False", "1"]
    # Deleting the CronJob takes its jobs and their pods along.
    cluster.kubectl("delete", "cronjob", "-n", ns, "often")
    wait_for(lambda: not cluster.pods(ns) and not cluster.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"],
             "the cronjob's jobs and pods to go", check=cluster.check)  # fmt: skip


def test_job_validation_errors_reach_kubectl(cluster: Cluster) -> None:
    ns = cluster.namespace("job-invalid")
    bad = job("bad")
    bad["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    result = cluster.server.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(bad), check=False)
    assert result.returncode != 0
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Always"' in result.stderr, result.stderr


def test_kubectl_create_cronjob_and_explain(cluster: Cluster) -> None:
    ns = cluster.namespace("cron-cli")
    cluster.kubectl("create", "cronjob", "nightly", "-n", ns, "--image=grove/busybox:1.35",
                    "--schedule=30 2 * * *", "--", "echo", "hi")  # fmt: skip
    obj = cluster.get(f"/apis/batch/v1/namespaces/{ns}/cronjobs/nightly")
    spec = obj["spec"]
    assert (spec["concurrencyPolicy"], spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (
        "Allow", 3, 1,
    )  # fmt: skip
    assert spec["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    row = cluster.kubectl("get", "cj", "-n", ns, "--no-headers").split()
    assert row[:9] == ["nightly", "30", "2", "*", "*", "*", "<none>", "False", "0"]
    explained = cluster.kubectl("explain", "cronjob.spec.concurrencyPolicy")
    assert "Forbid" in explained and "Replace" in explained, explained
    bad = cluster.server.kubectl("create", "cronjob", "broken", "-n", ns, "--image=grove/busybox:1.35",
                                 "--schedule=61 * * * *", check=False)  # fmt: skip
    assert bad.returncode != 0
    assert "end of range (61) above maximum (59)" in bad.stderr, bad.stderr
