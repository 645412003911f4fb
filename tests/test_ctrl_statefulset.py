"""The StatefulSet controller's pure decisions: which pod to create, delete or replace next under
OrderedReady and Parallel, partitioned rolling updates, status — plus the API server's defaults
and validation of the kind. No I/O: pods are dicts with the phase and Ready condition we say."""

from __future__ import annotations

from typing import Any

from orchestrator.controllers.statefulset import (
    POD_INDEX_LABEL,
    POD_NAME_LABEL,
    compute_status,
    new_pod,
    ordinal_of,
    plan,
    revision_template,
)
from orchestrator.defaults import apply_defaults
from orchestrator.validation import validate, validate_update

NOW = 1_000_000.0
OLD, NEW = "web-old", "web-new"


def sts(replicas: int = 3, policy: str = "OrderedReady", partition: int | None = 0, **spec: Any) -> dict:
    strategy: dict[str, Any] = {"type": spec.pop("strategy", "RollingUpdate")}
    if partition is not None and strategy["type"] == "RollingUpdate":
        strategy["rollingUpdate"] = {"partition": partition}
    return {
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "generation": 2},
        "spec": {
            "replicas": replicas,
            "podManagementPolicy": policy,
            "updateStrategy": strategy,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}},
            **spec,
        },
        "status": {},
    }


def pod(ordinal: int, rev: str = NEW, phase: str = "Running", ready: bool = True, **meta: Any) -> dict:
    return {
        "metadata": {
            "name": f"web-{ordinal}",
            "labels": {
                "app": "web",
                "controller-revision-hash": rev,
                POD_NAME_LABEL: f"web-{ordinal}",
                POD_INDEX_LABEL: str(ordinal),
            },
            **meta,
        },
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": "1970-01-01T00:00:00Z",
                }
            ],
        },
    }


def created(p) -> list[int]:
    return [o for o, _ in p.create]


def deleted(p) -> list[str]:
    return [d["metadata"]["name"] for d in p.delete]


def test_ordinals_come_from_names_of_the_set_only():
    s = sts()
    assert ordinal_of(s, pod(4)) == 4
    for name in ("web-01", "web-x", "webby-1", "web-", "other-1", "web-1-2"):
        assert ordinal_of(s, {"metadata": {"name": name}}) is None


def test_ordered_ready_creates_one_pod_after_the_previous_is_running_and_ready():
    s = sts()
    assert created(plan(s, [], NEW, NEW, NOW)) == [0]
    step = plan(s, [pod(0, ready=False)], NEW, NEW, NOW)
    assert created(step) == [] and "web-0" in step.waiting
    step = plan(s, [pod(0, phase="Pending", ready=False)], NEW, NEW, NOW)
    assert created(step) == []
    assert created(plan(s, [pod(0)], NEW, NEW, NOW)) == [1]
    assert created(plan(s, [pod(0), pod(1)], NEW, NEW, NOW)) == [2]
    done = plan(s, [pod(0), pod(1), pod(2)], NEW, NEW, NOW)
    assert (done.create, done.delete, done.waiting) == ([], [], "")


def test_gaps_are_filled_from_the_lowest_ordinal():
    s = sts()
    assert created(plan(s, [pod(0), pod(2)], NEW, NEW, NOW)) == [1]


def test_parallel_creates_every_missing_pod_at_once():
    s = sts(replicas=4, policy="Parallel")
    assert created(plan(s, [pod(1, ready=False)], NEW, NEW, NOW)) == [0, 2, 3]


def test_min_ready_seconds_holds_the_next_pod_and_asks_to_look_again():
    s = sts(minReadySeconds=30)
    step = plan(s, [pod(0)], NEW, NEW, 10.0)  # ready since 0: not yet 30 s
    assert created(step) == [] and step.requeue == 30.0
    assert created(plan(s, [pod(0)], NEW, NEW, 31.0)) == [1]


def test_ordered_scale_down_deletes_the_highest_ordinal_first_one_at_a_time():
    s = sts(replicas=1)
    pods = [pod(0), pod(1), pod(2)]
    assert deleted(plan(s, pods, NEW, NEW, NOW)) == ["web-2"]
    terminating = [pod(0), pod(1), pod(2, deletionTimestamp="2026-01-01T00:00:00Z")]
    step = plan(s, terminating, NEW, NEW, NOW)
    assert deleted(step) == [] and "web-2" in step.waiting
    assert deleted(plan(s, [pod(0), pod(1)], NEW, NEW, NOW)) == ["web-1"]


def test_ordered_scale_down_waits_while_a_kept_pod_is_unhealthy():
    s = sts(replicas=1)
    step = plan(s, [pod(0, ready=False), pod(1)], NEW, NEW, NOW)
    assert deleted(step) == []


def test_ordered_scale_down_deletes_an_unhealthy_pod_only_when_it_is_the_first_unhealthy_one():
    s = sts(replicas=1)
    # web-1 is the first unhealthy pod; web-2 (unhealthy too) waits, and web-1 is not the highest.
    assert deleted(plan(s, [pod(0), pod(1, ready=False), pod(2, ready=False)], NEW, NEW, NOW)) == []
    assert deleted(plan(s, [pod(0), pod(1), pod(2, ready=False)], NEW, NEW, NOW)) == ["web-2"]


def test_parallel_scale_down_deletes_all_condemned_pods():
    s = sts(replicas=1, policy="Parallel")
    assert sorted(deleted(plan(s, [pod(0), pod(1), pod(2, ready=False)], NEW, NEW, NOW))) == [
        "web-1",
        "web-2",
    ]


def test_pods_that_lost_their_identity_labels_are_relabelled():
    s = sts()
    stripped = pod(1)
    del stripped["metadata"]["labels"][POD_INDEX_LABEL]
    step = plan(s, [pod(0), stripped, pod(2)], NEW, NEW, NOW)
    assert [p["metadata"]["name"] for p in step.relabel] == ["web-1"]
    assert plan(s, [pod(0), pod(1), pod(2)], NEW, NEW, NOW).relabel == []


def test_failed_pods_are_deleted_to_be_recreated():
    s = sts()
    assert deleted(plan(s, [pod(0, phase="Failed", ready=False)], NEW, NEW, NOW)) == ["web-0"]


def test_rolling_update_goes_from_the_highest_ordinal_down_to_the_partition():
    s = sts(partition=1)
    pods = [pod(0, OLD), pod(1, OLD), pod(2, OLD)]
    assert deleted(plan(s, pods, OLD, NEW, NOW)) == ["web-2"]
    # web-2 is gone: it comes back at the update revision (above the partition).
    step = plan(s, [pod(0, OLD), pod(1, OLD)], OLD, NEW, NOW)
    assert step.create == [(2, NEW)]
    # web-2 updated but not ready yet: web-1 waits.
    step = plan(s, [pod(0, OLD), pod(1, OLD), pod(2, NEW, ready=False)], OLD, NEW, NOW)
    assert deleted(step) == [] and created(step) == []
    assert deleted(plan(s, [pod(0, OLD), pod(1, OLD), pod(2, NEW)], OLD, NEW, NOW)) == ["web-1"]
    # The partition keeps web-0 at the old revision, even when it has to be recreated.
    final = plan(s, [pod(0, OLD), pod(1, NEW), pod(2, NEW)], OLD, NEW, NOW)
    assert (final.create, final.delete) == ([], [])
    assert plan(s, [pod(1, NEW), pod(2, NEW)], OLD, NEW, NOW).create == [(0, OLD)]


def test_on_delete_never_replaces_pods_but_recreates_at_the_update_revision():
    s = sts(strategy="OnDelete", partition=None)
    step = plan(s, [pod(0, OLD), pod(1, OLD), pod(2, OLD)], OLD, NEW, NOW)
    assert (step.create, step.delete) == ([], [])
    assert plan(s, [pod(0, OLD), pod(1, OLD)], OLD, NEW, NOW).create == [(2, NEW)]


def test_status_counts_and_completes_the_rollout():
    s = sts(partition=2)
    pods = [pod(0, OLD), pod(1, OLD), pod(2, NEW, ready=False)]
    st = compute_status(s, pods, OLD, NEW, NOW, 2)
    assert st == {
        "observedGeneration": 2,
        "replicas": 3,
        "readyReplicas": 2,
        "currentReplicas": 2,
        "updatedReplicas": 1,
        "availableReplicas": 2,
        "currentRevision": OLD,
        "updateRevision": NEW,
        "collisionCount": 0,
    }
    done = compute_status(s, [pod(0, NEW), pod(1, NEW), pod(2, NEW)], OLD, NEW, NOW, 2)
    assert (done["currentRevision"], done["currentReplicas"], done["updatedReplicas"]) == (NEW, 3, 3)
    terminating = compute_status(s, [pod(0, NEW, deletionTimestamp="x")], NEW, NEW, NOW, 2)
    assert (terminating["replicas"], terminating["updatedReplicas"]) == (1, 0)


def test_new_pod_carries_its_identity():
    s = sts()
    rev = {"data": {"spec": {"template": {**s["spec"]["template"], "$patch": "replace"}}}}
    ref = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "u1", "controller": True}
    p = new_pod(s, revision_template(rev), 2, NEW, ref)
    assert p["metadata"]["name"] == "web-2" and "generateName" not in p["metadata"]
    assert p["metadata"]["labels"] == {
        "app": "web",
        POD_NAME_LABEL: "web-2",
        POD_INDEX_LABEL: "2",
        "controller-revision-hash": NEW,
    }
    assert (p["spec"]["hostname"], p["spec"]["subdomain"]) == ("web-2", "web")
    assert p["metadata"]["ownerReferences"] == [ref]


# --- defaults and validation ------------------------------------------------------------------------


def minimal() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
            },
        },
    }


def test_defaults_are_kubes():
    spec = apply_defaults("StatefulSet", minimal())["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    on_delete = minimal()
    on_delete["spec"]["updateStrategy"] = {"type": "OnDelete"}
    assert apply_defaults("StatefulSet", on_delete)["spec"]["updateStrategy"] == {"type": "OnDelete"}


def messages(causes) -> list[str]:
    return [f"{c.field}: {c.message}" for c in causes]


def test_a_defaulted_statefulset_is_valid():
    assert validate("StatefulSet", apply_defaults("StatefulSet", minimal())) == []


def test_validation_names_each_problem():
    bad = apply_defaults("StatefulSet", minimal())
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    bad["spec"]["podManagementPolicy"] = "Sometimes"
    bad["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = -1
    bad["spec"]["serviceName"] = "Not_A_Label"
    found = "\n".join(messages(validate("StatefulSet", bad)))
    assert "spec.template.metadata.labels" in found and "`selector` does not match template `labels`" in found
    assert "spec.podManagementPolicy" in found and "must be 'OrderedReady' or 'Parallel'" in found
    assert "spec.updateStrategy.rollingUpdate.partition" in found
    assert "spec.serviceName" in found
    empty = apply_defaults("StatefulSet", minimal())
    empty["spec"]["selector"] = {}
    assert "empty selector is invalid for statefulset" in "\n".join(messages(validate("StatefulSet", empty)))


def test_volume_claim_templates_are_refused_with_the_reason():
    obj = apply_defaults("StatefulSet", minimal())
    obj["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {}}]
    found = messages(validate("StatefulSet", obj))
    assert any(
        m.startswith("spec.volumeClaimTemplates: Forbidden") and "PersistentVolume" in m for m in found
    )


def test_only_kubes_mutable_fields_may_change():
    old = apply_defaults("StatefulSet", minimal())
    new = apply_defaults("StatefulSet", minimal())
    new["spec"]["replicas"] = 5
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    new["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = 2
    new["spec"]["minReadySeconds"] = 3
    assert validate_update("StatefulSet", new, old) == []
    for field, value in (("serviceName", "other"), ("podManagementPolicy", "Parallel")):
        changed = apply_defaults("StatefulSet", minimal())
        changed["spec"][field] = value
        found = messages(validate_update("StatefulSet", changed, old))
        assert any(m.startswith("spec: Forbidden: updates to statefulset spec") for m in found), field
