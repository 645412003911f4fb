"""The horizontal pod autoscaler's pure parts: kube's replica calculator, stabilization windows and
scale-rate policies, pod readiness for CPU, HPA defaults (and the autoscaling/v1 conversion),
validation, the `kubectl get hpa` TARGETS cell, and the hollow runtime's scripted CPU usage."""

from __future__ import annotations

import pytest

from node.fake import CPU_MILLICORES_ANNOTATION, FakeRuntime
from orchestrator.controllers.hpa import (
    AutoscalerMemory,
    MetricError,
    PodSample,
    behavior_rules,
    calc_replicas,
    format_milli,
    limit_by_behavior,
    milli,
    pod_counts_as_ready,
    pod_request,
    record_scale_event,
    stabilize,
)
from orchestrator.controllers.util import format_time
from orchestrator.defaults import apply_defaults, hpa_v2_to_v1, to_served_version
from orchestrator.tables import format_hpa_metrics
from orchestrator.validation import invalid_message, validate

T0 = 1_700_000_000.0


def ready_pods(*usages: float | None, request: float = 100.0) -> list[PodSample]:
    return [PodSample(f"p{i}", u, request) for i, u in enumerate(usages)]


# --- the replica calculator -----------------------------------------------------------------------------


def test_utilization_scales_to_ceil_of_ratio_times_ready_pods() -> None:
    # 2 pods at 90m of 100m = 90% against 50%: ceil(2 * 1.8) = 4.
    proposal = calc_replicas(2, ready_pods(90, 90), target_utilization=50)
    assert (proposal.replicas, proposal.utilization, proposal.average) == (4, 90, 90.0)


def test_within_tolerance_keeps_current_replicas() -> None:
    assert calc_replicas(3, ready_pods(54, 54, 54), target_utilization=50).replicas == 3  # ratio 1.08
    assert calc_replicas(3, ready_pods(56, 56, 56), target_utilization=50).replicas == 4  # ratio 1.12
    assert calc_replicas(3, ready_pods(56, 56, 56), target_utilization=50, tolerance=0.2).replicas == 3


def test_scale_down() -> None:
    assert calc_replicas(5, ready_pods(10, 10, 10, 10, 10), target_utilization=50).replicas == 1


def test_missing_metrics_do_not_cause_a_scale_down() -> None:
    # Two pods at 20% would ask for 1 of 4; the two without metrics count as 100% of their
    # request on the way down: (20+20+100+100)/4 = 60% -> ratio 1.2, the other direction: stay.
    assert calc_replicas(4, ready_pods(20, 20, None, None), target_utilization=50).replicas == 4
    # With usage far below target the scale down still happens, damped by the missing pod:
    # (5+5+5+100)/4 = 28% -> ceil(4 * 0.575) = 3 rather than ceil(3 * 0.1) = 1.
    assert calc_replicas(4, ready_pods(5, 5, 5, None), target_utilization=50).replicas == 3


def test_missing_metrics_count_as_zero_on_the_way_up() -> None:
    # 2 pods at 100% (ratio 2) and 2 without metrics (0): 50% over 4 pods -> within tolerance.
    assert calc_replicas(4, ready_pods(100, 100, None, None), target_utilization=50).replicas == 4
    assert calc_replicas(4, ready_pods(200, 200, None, None), target_utilization=50).replicas == 8


def test_unready_pods_count_as_zero_only_for_a_scale_up() -> None:
    pods = [*ready_pods(100, 100), PodSample("new", 300, 100, ready=False)]
    # Ready pods alone say ratio 2 (-> 4); the unready one at 0 gives 200/300 = 66% -> ceil(3*1.33) = 4.
    assert calc_replicas(3, pods, target_utilization=50).replicas == 4
    # On the way down unready pods are left out altogether.
    pods = [*ready_pods(10, 10), PodSample("new", 300, 100, ready=False)]
    assert calc_replicas(3, pods, target_utilization=50).replicas == 1


def test_deleted_and_failed_pods_are_ignored() -> None:
    pods = [*ready_pods(100, 100), PodSample("gone", 0, 100, ignored=True)]
    assert calc_replicas(2, pods, target_utilization=50).replicas == 4


def test_average_value_target() -> None:
    proposal = calc_replicas(2, ready_pods(300, 300), target_average=100.0)
    assert proposal.replicas == 6 and proposal.utilization is None and proposal.average == 300.0


def test_errors_without_pods_metrics_or_requests() -> None:
    with pytest.raises(MetricError, match="no pods returned by selector"):
        calc_replicas(1, [], target_utilization=50)
    with pytest.raises(MetricError, match="did not receive metrics"):
        calc_replicas(1, ready_pods(None), target_utilization=50)
    with pytest.raises(MetricError, match="missing request"):
        calc_replicas(1, ready_pods(10, request=0), target_utilization=50)
    # An average value target needs no requests.
    assert calc_replicas(1, ready_pods(50, request=0), target_average=100.0).replicas == 1


def _pod(phase: str = "Running", ready: bool = True, started: float = T0 - 3600, changed: float = T0 - 3600):
    return {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "250m"}}}]},
        "status": {
            "phase": phase,
            "startTime": format_time(started),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": format_time(changed),
                }
            ],
        },
    }


def test_pod_readiness_for_cpu() -> None:
    assert pod_counts_as_ready(_pod(), T0, 1.0, T0, cpu=True)
    assert not pod_counts_as_ready(_pod(phase="Pending"), T0, 1.0, T0, cpu=True)
    # Young pod: ready, but its metric was taken before readiness plus the metric window.
    young = _pod(started=T0 - 10, changed=T0 - 2)
    assert not pod_counts_as_ready(young, T0 - 1.5, 1.0, T0, cpu=True)
    assert pod_counts_as_ready(young, T0 - 0.5, 1.0, T0, cpu=True)
    assert not pod_counts_as_ready(_pod(ready=False, started=T0 - 10, changed=T0 - 10), T0, 1.0, T0, cpu=True)
    # An old pod that turned unready long after it started still counts (it was ready once); one
    # whose readiness last changed within the initial readiness delay of its start does not.
    assert pod_counts_as_ready(_pod(ready=False, changed=T0 - 60), T0, 1.0, T0, cpu=True)
    assert not pod_counts_as_ready(_pod(ready=False, changed=T0 - 3590), T0, 1.0, T0, cpu=True)
    # Memory ignores readiness.
    assert pod_counts_as_ready(_pod(ready=False, started=T0 - 10), T0, 1.0, T0, cpu=False)


def test_quantities() -> None:
    assert milli("250m") == 250.0 and milli("1") == 1000.0 and milli("1500000n") == 1.5
    assert pod_request(_pod(), "cpu") == 250.0
    assert pod_request(_pod(), "memory") == 0.0  # a container without a request: no utilization
    assert format_milli(400.4, "cpu") == "400m"
    assert format_milli(4 * 2**20 * 1000, "memory") == str(4 * 2**20)


# --- behavior ------------------------------------------------------------------------------------------------

UP, DOWN = behavior_rules({})


def test_default_behavior_rules_are_kubes() -> None:
    assert UP["stabilizationWindowSeconds"] == 0 and DOWN["stabilizationWindowSeconds"] == 300
    assert {(p["type"], p["value"], p["periodSeconds"]) for p in UP["policies"]} == {
        ("Pods", 4, 15),
        ("Percent", 100, 15),
    }
    assert DOWN["policies"] == [{"type": "Percent", "value": 100, "periodSeconds": 15}]
    up, down = behavior_rules({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}}})
    assert up == UP and down["stabilizationWindowSeconds"] == 3 and down["policies"] == DOWN["policies"]


def test_scale_down_waits_for_the_highest_recommendation_in_the_window() -> None:
    mem = AutoscalerMemory()
    assert stabilize(mem, 5, 5, 0, 300, T0)[0] == 5
    replicas, reason, _ = stabilize(mem, 5, 1, 0, 300, T0 + 15)
    assert (replicas, reason) == (5, "ScaleDownStabilized")
    assert stabilize(mem, 5, 2, 0, 300, T0 + 200)[0] == 5
    # The recommendation of 5 leaves the window; 2 (at T0+200) is now the highest.
    assert stabilize(mem, 5, 1, 0, 300, T0 + 301)[0] == 2
    assert stabilize(mem, 2, 1, 0, 300, T0 + 501)[:2] == (1, "ReadyForNewScale")


def test_scale_up_window_takes_the_lowest_recommendation() -> None:
    mem = AutoscalerMemory()
    stabilize(mem, 2, 2, 60, 300, T0)
    replicas, reason, _ = stabilize(mem, 2, 6, 60, 300, T0 + 10)
    assert (replicas, reason) == (2, "ScaleUpStabilized")
    assert stabilize(mem, 2, 6, 60, 300, T0 + 61)[0] == 6


def test_scale_up_rate_limit_and_max() -> None:
    mem = AutoscalerMemory()
    # From 1: 1+4 pods or 1*2: 5 allowed; 10 wanted, max 20 -> ScaleUpLimit.
    assert limit_by_behavior(mem, 1, 10, 1, 20, UP, DOWN, T0)[:2] == (5, "ScaleUpLimit")
    # From 10: 10+4 or 20: the max (15) binds first.
    assert limit_by_behavior(mem, 10, 30, 1, 15, UP, DOWN, T0)[:2] == (15, "TooManyReplicas")
    assert limit_by_behavior(mem, 3, 4, 1, 15, UP, DOWN, T0)[:2] == (4, "DesiredWithinRange")


def test_scale_events_within_a_period_count_against_the_rate() -> None:
    mem = AutoscalerMemory()
    rules = {"selectPolicy": "Max", "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}
    record_scale_event(mem, 2, 4, T0, rules, DOWN)
    # 4 now, 2 at the start of the period: 2+2 = 4 is all the period allows.
    assert limit_by_behavior(mem, 4, 10, 1, 20, rules, DOWN, T0 + 30)[:2] == (4, "ScaleUpLimit")
    assert limit_by_behavior(mem, 4, 10, 1, 20, rules, DOWN, T0 + 61)[0] == 6


def test_scale_down_rate_min_and_disabled() -> None:
    mem = AutoscalerMemory()
    rules = {"selectPolicy": "Max", "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}]}
    assert limit_by_behavior(mem, 10, 1, 1, 20, UP, rules, T0)[:2] == (5, "ScaleDownLimit")
    assert limit_by_behavior(mem, 10, 1, 3, 20, UP, DOWN, T0)[:2] == (3, "TooFewReplicas")
    disabled = {**DOWN, "selectPolicy": "Disabled"}
    assert limit_by_behavior(mem, 10, 1, 1, 20, UP, disabled, T0)[:2] == (10, "ScaleDownDisabled")
    # selectPolicy Min picks the policy that changes least.
    both = {
        "selectPolicy": "Min",
        "policies": [
            {"type": "Pods", "value": 1, "periodSeconds": 15},
            {"type": "Percent", "value": 50, "periodSeconds": 15},
        ],
    }
    assert limit_by_behavior(mem, 10, 1, 1, 20, UP, both, T0)[0] == 9


# --- defaults, validation, table ------------------------------------------------------------------------------


def v1_hpa(**spec: object) -> dict:
    return {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, **spec},
        "status": {"currentReplicas": 0, "desiredReplicas": 0},
    }


def test_v1_bodies_are_stored_as_v2_with_defaults() -> None:
    hpa = apply_defaults("HorizontalPodAutoscaler", v1_hpa(maxReplicas=5, targetCPUUtilizationPercentage=50))
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 1
    assert "targetCPUUtilizationPercentage" not in hpa["spec"]
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
        }
    ]
    assert "behavior" not in hpa["spec"]  # as kube: only a given behavior is filled in
    assert hpa["status"] == {"desiredReplicas": 0}
    # Without a target: 80% CPU.
    bare = apply_defaults("HorizontalPodAutoscaler", v1_hpa(maxReplicas=5))
    assert bare["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    # And back for v1 readers.
    assert hpa_v2_to_v1(hpa)["spec"]["targetCPUUtilizationPercentage"] == 50
    v1 = to_served_version("autoscaling/v1", hpa)
    assert v1["apiVersion"] == "autoscaling/v1" and "metrics" not in v1["spec"]
    assert to_served_version("autoscaling/v2", hpa) is hpa


def test_validation_in_kubes_words() -> None:
    hpa = apply_defaults("HorizontalPodAutoscaler", v1_hpa(maxReplicas=2, minReplicas=3))
    causes = validate("HorizontalPodAutoscaler", hpa)
    assert invalid_message("HorizontalPodAutoscaler", "web", causes) == (
        'HorizontalPodAutoscaler.autoscaling "web" is invalid: spec.maxReplicas: Invalid value: 2: '
        "must be greater than or equal to `minReplicas`"
    )
    hpa = apply_defaults("HorizontalPodAutoscaler", v1_hpa(maxReplicas=0, minReplicas=0))
    fields = {c.field for c in validate("HorizontalPodAutoscaler", hpa)}
    assert fields == {"spec.minReplicas", "spec.maxReplicas"}
    hpa["spec"].update(minReplicas=1, maxReplicas=3, scaleTargetRef={"name": "web"})
    hpa["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 4000, "policies": []}}
    fields = {c.field for c in validate("HorizontalPodAutoscaler", hpa)}
    assert fields == {
        "spec.scaleTargetRef.kind",
        "spec.behavior.scaleDown.stabilizationWindowSeconds",
        "spec.behavior.scaleDown.policies",
    }
    ok = apply_defaults("HorizontalPodAutoscaler", v1_hpa(maxReplicas=5, targetCPUUtilizationPercentage=50))
    assert validate("HorizontalPodAutoscaler", ok) == []


def test_targets_cell() -> None:
    cpu = {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
    }
    mem = {
        "type": "Resource",
        "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}},
    }
    assert format_hpa_metrics([cpu], []) == "cpu: <unknown>/50%"
    now = [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]
    assert format_hpa_metrics([cpu], now) == "cpu: 12%/50%"
    assert format_hpa_metrics([cpu, mem], now) == "cpu: 12%/50%, memory: <unknown>/100Mi"
    assert format_hpa_metrics([cpu, mem, cpu], now).endswith(" + 1 more...")
    assert format_hpa_metrics([], []) == "<none>"


# --- the hollow runtime's scripted CPU ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("annotation", "rates"), [(None, (1, 1)), ("400", (400, 400)), ("a=250,b=5", (250, 5))]
)
def test_fake_cpu_annotation(annotation: str | None, rates: tuple[int, int]) -> None:
    clock = Clock()
    rt = FakeRuntime(clock=clock)
    pod = {
        "metadata": {
            "name": "p", "namespace": "default", "uid": "u1",
            "annotations": {CPU_MILLICORES_ANNOTATION: annotation} if annotation else {},
        },
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]},
    }  # fmt: skip
    sandbox = rt.run_sandbox(pod)
    ids = [rt.create_container(pod, c, sandbox, {}, {}, 0) for c in pod["spec"]["containers"]]
    for cid in ids:
        rt.start_container(cid)
    before = [rt.stats(cid).cpu_usage_nanoseconds for cid in ids]
    clock.now += 2.0
    after = [rt.stats(cid).cpu_usage_nanoseconds for cid in ids]
    # millicores = nanoseconds of CPU per second / 1e6
    assert tuple(round((a - b) / 2.0 / 1e6) for a, b in zip(after, before, strict=True)) == rates


def test_fake_cpu_annotation_rejects_nonsense() -> None:
    rt = FakeRuntime()
    pod = {
        "metadata": {
            "name": "p",
            "namespace": "default",
            "uid": "u2",
            "annotations": {CPU_MILLICORES_ANNOTATION: "lots"},
        },
        "spec": {"containers": [{"name": "a", "image": "x"}]},
    }
    sandbox = rt.run_sandbox(pod)
    with pytest.raises(Exception, match="not a number of millicores"):
        rt.create_container(pod, pod["spec"]["containers"][0], sandbox, {}, {}, 0)
