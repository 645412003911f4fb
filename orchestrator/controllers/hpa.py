"""The horizontal pod autoscaler: resize a workload to keep its pods' resource usage on target.

Every `sync_period` (kube's --horizontal-pod-autoscaler-sync-period, 15 s) `sync(key)` reads the
HPA, its target's `/scale` subresource (replicas and the pods' label selector), the selected pods
(from the shared pod cache) and their PodMetrics from the API server's metrics.k8s.io/v1beta1
(grove serves it from the node agents' Summary API). For each Resource metric it proposes a
replica count the way kube's replica calculator does — ceil(ready pods * usage/target), nothing
when within the 10 % tolerance, not-yet-ready pods and pods without metrics counted so that they
damp a change instead of causing one — takes the largest proposal, then applies the HPA's
behavior: stabilization windows over recent recommendations, scale-rate policies, min/max. It
writes the new size through `/scale`, records SuccessfulRescale, and the status (current and
desired replicas, current metrics, lastScaleTime, AbleToScale/ScalingActive/ScalingLimited).

The arithmetic (`calc_replicas`, `stabilize`, `limit_by_behavior`) is pure and unit-tested;
recommendations and scale events live in memory per HPA, as in kube-controller-manager.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from orchestrator.apiclient import PODS, ApiError, GroupVersionResource, Obj
from orchestrator.defaults import hpa_default_scale_down_rules, hpa_default_scale_up_rules, hpa_scaling_rules
from orchestrator.selectors import SelectorError, parse_label_selector
from orchestrator.validation import QuantityError, parse_quantity

from .base import BaseController, ControllerContext, update_status_with_retry
from .util import (
    being_deleted,
    format_time,
    generation_of,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    parse_time,
    pod_condition,
    spec,
    status,
)

log = logging.getLogger(__name__)

HPAS = GroupVersionResource("autoscaling", "v2", "horizontalpodautoscalers")
COMPONENT = "horizontal-pod-autoscaler"
METRICS_PODS = "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
DEFAULT_SYNC_PERIOD = 15.0  # --horizontal-pod-autoscaler-sync-period
DEFAULT_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
CPU_INITIALIZATION_PERIOD = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
INITIAL_READINESS_DELAY = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay

# scaleTargetRef kinds -> their resource (the scale subresource's owner).
SCALE_RESOURCES: dict[str, str] = {
    "Deployment": "deployments",
    "ReplicaSet": "replicasets",
    "StatefulSet": "statefulsets",
    "ReplicationController": "replicationcontrollers",
}


class MetricError(Exception):
    """A metric that cannot give a replica count; `reason` is the condition/event reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# --- the replica calculator (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class PodSample:
    """One selected pod as the calculator sees it: its usage and request in milli-units (None when
    it has no metrics), and whether it counts as ready."""

    name: str
    usage: float | None
    request: float
    ready: bool = True
    ignored: bool = False  # being deleted or failed


@dataclass(frozen=True)
class Proposal:
    """What one metric asks for: replicas, and the current value (utilization % or average)."""

    replicas: int
    utilization: int | None
    average: float


def _ratio(
    samples: Mapping[str, tuple[float, float]], target_utilization: int | None, target_average: float
) -> tuple[float, int | None, float]:
    """(usage ratio, utilization %, average usage) over pods with (usage, request)."""
    total = sum(u for u, _ in samples.values())
    average = total / len(samples) if samples else 0.0
    if target_utilization is not None:
        requests = sum(r for _, r in samples.values())
        utilization = int(total * 100 / requests) if requests else 0
        return utilization / target_utilization, utilization, average
    return average / target_average, None, average


def calc_replicas(
    current_replicas: int,
    pods: Sequence[PodSample],
    *,
    target_utilization: int | None = None,
    target_average: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Proposal:
    """kube's GetResourceReplicas (target_utilization, % of requests) or GetRawResourceReplicas
    (target_average, milli-units per pod). Raises MetricError when there is nothing to go on."""
    if target_utilization is None and not target_average:
        raise MetricError(
            "InvalidMetricSourceType", "a Resource metric needs averageUtilization or averageValue"
        )
    if not pods:
        raise MetricError(
            "FailedGetResourceMetric", "no pods returned by selector while calculating replica count"
        )
    live = [p for p in pods if not p.ignored]
    samples: dict[str, tuple[float, float]] = {
        p.name: (p.usage, p.request) for p in live if p.ready and p.usage is not None
    }
    unready = [p for p in live if not p.ready]
    missing = [p for p in live if p.ready and p.usage is None]
    if target_utilization is not None and any(p.request <= 0 for p in live):
        bad = next(p for p in live if p.request <= 0)
        raise MetricError("FailedGetResourceMetric", f"missing request for the resource in pod {bad.name}")
    if not samples:
        raise MetricError(
            "FailedGetResourceMetric", "did not receive metrics for targeted pods (pods might be unready)"
        )
    ratio, utilization, average = _ratio(samples, target_utilization, target_average or 0.0)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if abs(1.0 - ratio) <= tolerance:
            return Proposal(current_replicas, utilization, average)
        return Proposal(math.ceil(ratio * len(samples)), utilization, average)
    # Assume the worst for the direction of change: missing pods use their whole request (or the
    # target) on the way down and nothing on the way up; unready pods nothing on the way up.
    for p in missing:
        if ratio < 1.0:
            full = p.request if target_utilization is not None else float(target_average or 0.0)
            samples[p.name] = (full, p.request)
        elif ratio > 1.0:
            samples[p.name] = (0.0, p.request)
    if scale_up_with_unready:
        for p in unready:
            samples[p.name] = (0.0, p.request)
    new_ratio, _, _ = _ratio(samples, target_utilization, target_average or 0.0)
    if (
        abs(1.0 - new_ratio) <= tolerance
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return Proposal(current_replicas, utilization, average)
    replicas = math.ceil(new_ratio * len(samples))
    if (new_ratio < 1.0 and replicas > current_replicas) or (new_ratio > 1.0 and replicas < current_replicas):
        return Proposal(current_replicas, utilization, average)
    return Proposal(replicas, utilization, average)


def pod_counts_as_ready(
    pod: Mapping[str, Any],
    metric_time: float | None,
    metric_window: float,
    now: float,
    cpu: bool,
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
    readiness_delay: float = INITIAL_READINESS_DELAY,
) -> bool:
    """kube's groupPods: for CPU, a pod that is (or only just became) ready during its first
    minutes, or whose metric predates its readiness, is not yet trusted."""
    if status(pod).get("phase") == "Pending":
        return False
    if not cpu:
        return True
    cond = pod_condition(pod, "Ready")
    started = parse_time(status(pod).get("startTime"))
    if cond is None or started is None:
        return False
    ready = cond.get("status") == "True"
    changed = parse_time(cond.get("lastTransitionTime")) or started
    if started + cpu_initialization_period > now:
        return ready and (metric_time is None or metric_time >= changed + metric_window)
    return ready or started + readiness_delay <= changed


# --- behavior: stabilization and rate limits (pure) ------------------------------------------------------


@dataclass
class Recommendation:
    time: float
    replicas: int


@dataclass
class ScaleEvent:
    time: float
    change: int


@dataclass
class AutoscalerMemory:
    """What an HPA remembers between syncs (kube keeps the same in the controller)."""

    recommendations: list[Recommendation] = field(default_factory=list)
    scale_up_events: list[ScaleEvent] = field(default_factory=list)
    scale_down_events: list[ScaleEvent] = field(default_factory=list)


def behavior_rules(hpa_spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scaleUp, scaleDown) rules with kube's defaults for what the HPA leaves out."""
    behavior = hpa_spec.get("behavior") or {}
    return (
        hpa_scaling_rules(behavior.get("scaleUp"), hpa_default_scale_up_rules()),
        hpa_scaling_rules(behavior.get("scaleDown"), hpa_default_scale_down_rules()),
    )


def stabilize(
    memory: AutoscalerMemory,
    current: int,
    desired: int,
    up_window: float,
    down_window: float,
    now: float,
) -> tuple[int, str, str]:
    """kube's stabilizeRecommendationWithBehaviors: scale up no further than the lowest, and down
    no further than the highest, recommendation within each window. Records `desired`."""
    up, down = desired, desired
    for rec in memory.recommendations:
        if rec.time > now - up_window:
            up = min(up, rec.replicas)
        if rec.time > now - down_window:
            down = max(down, rec.replicas)
    result = max(current, up)
    result = min(result, down)
    horizon = max(up_window, down_window)
    memory.recommendations = [r for r in memory.recommendations if r.time > now - horizon]
    memory.recommendations.append(Recommendation(now, desired))
    if result == desired:
        return result, "ReadyForNewScale", "recommended size matches current size"
    if result > desired:
        return (
            result,
            "ScaleDownStabilized",
            (
                "recent recommendations were higher than current one, applying the highest recent recommendation"
            ),
        )
    return (
        result,
        "ScaleUpStabilized",
        ("recent recommendations were lower than current one, applying the lowest recent recommendation"),
    )


def _changed_within(events: Sequence[ScaleEvent], period: float, now: float) -> int:
    return sum(e.change for e in events if e.time > now - period)


def _scale_limit(
    memory: AutoscalerMemory, current: int, rules: Mapping[str, Any], now: float, scale_up: bool
) -> int:
    """The replica count the scaling policies allow in one direction: each policy proposes its
    step from the count at the start of its period (the changes made within it undone); selectPolicy
    Max takes the largest change, Min the smallest, Disabled none."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    proposals = []
    for policy in rules.get("policies") or ():
        period = float(policy.get("periodSeconds") or 0)
        start = (
            current
            - _changed_within(memory.scale_up_events, period, now)
            + _changed_within(memory.scale_down_events, period, now)
        )
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposals.append(start + value if scale_up else start - value)
        elif scale_up:
            proposals.append(math.ceil(start * (1 + value / 100)))
        else:
            proposals.append(int(start * (1 - value / 100)))
    if not proposals:
        return current
    largest_change, smallest_change = (max, min) if scale_up else (min, max)
    return smallest_change(proposals) if select == "Min" else largest_change(proposals)


def scale_up_limit(memory: AutoscalerMemory, current: int, rules: Mapping[str, Any], now: float) -> int:
    """kube's calculateScaleUpLimitWithScalingRules."""
    return _scale_limit(memory, current, rules, now, scale_up=True)


def scale_down_limit(memory: AutoscalerMemory, current: int, rules: Mapping[str, Any], now: float) -> int:
    """kube's calculateScaleDownLimitWithBehaviors (Min picks the smaller change: the larger count)."""
    return _scale_limit(memory, current, rules, now, scale_up=False)


def limit_by_behavior(
    memory: AutoscalerMemory,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    up_rules: Mapping[str, Any],
    down_rules: Mapping[str, Any],
    now: float,
) -> tuple[int, str, str]:
    """kube's convertDesiredReplicasWithBehaviorRate: (replicas, ScalingLimited reason, message)."""
    if desired > current:
        if up_rules.get("selectPolicy") == "Disabled":
            return current, "ScaleUpDisabled", "scaling up is disabled by scale up policy"
        limit = max(current, scale_up_limit(memory, current, up_rules, now))
        if max_replicas > limit:
            allowed, reason = limit, "ScaleUpLimit"
            message = "the desired replica count is increasing faster than the maximum scale rate"
        else:
            allowed, reason = max_replicas, "TooManyReplicas"
            message = "the desired replica count is more than the maximum replica count"
        if desired > allowed:
            return allowed, reason, message
    elif desired < current:
        if down_rules.get("selectPolicy") == "Disabled":
            return current, "ScaleDownDisabled", "scaling down is disabled by scale down policy"
        limit = min(current, scale_down_limit(memory, current, down_rules, now))
        if min_replicas < limit:
            allowed, reason = limit, "ScaleDownLimit"
            message = "the desired replica count is decreasing faster than the maximum scale rate"
        else:
            allowed, reason = min_replicas, "TooFewReplicas"
            message = "the desired replica count is less than the minimum replica count"
        if desired < allowed:
            return allowed, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


def record_scale_event(
    memory: AutoscalerMemory, before: int, after: int, now: float, up_rules: Mapping[str, Any],
    down_rules: Mapping[str, Any],
) -> None:  # fmt: skip
    """Remember a rescale for the rate policies; forget events older than the longest period."""

    def longest(rules: Mapping[str, Any]) -> float:
        return max((float(p.get("periodSeconds") or 0) for p in rules.get("policies") or ()), default=0.0)

    memory.scale_up_events = [e for e in memory.scale_up_events if e.time > now - longest(up_rules)]
    memory.scale_down_events = [e for e in memory.scale_down_events if e.time > now - longest(down_rules)]
    if after > before:
        memory.scale_up_events.append(ScaleEvent(now, after - before))
    elif after < before:
        memory.scale_down_events.append(ScaleEvent(now, before - after))


# --- quantities ----------------------------------------------------------------------------------------------


def milli(value: Any) -> float:
    """A quantity in milli-units (CPU millicores, memory milli-bytes), as kube's MilliValue."""
    return float(Fraction(parse_quantity(value)) * 1000)


def format_milli(value: float, resource: str) -> str:
    """A milli-unit value back as a quantity: `400m` for CPU, whole units where exact."""
    whole = int(round(value))
    if resource == "cpu" or whole % 1000:
        return f"{whole}m"
    return str(whole // 1000)


def missing_request(pod: Mapping[str, Any], resource: str, container: str | None = None) -> str | None:
    """The first container (of those the metric covers) without a request of `resource`."""
    for c in spec(pod).get("containers") or ():
        if container is not None and c.get("name") != container:
            continue
        if ((c.get("resources") or {}).get("requests") or {}).get(resource) is None:
            return str(c.get("name") or "")
    return None


def pod_request(pod: Mapping[str, Any], resource: str, container: str | None = None) -> float:
    """The sum of the pod's containers' requests of `resource` in milli-units; 0 when any lacks one."""
    total = 0.0
    for c in spec(pod).get("containers") or ():
        if container is not None and c.get("name") != container:
            continue
        value = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if value is None:
            return 0.0
        try:
            total += milli(value)
        except QuantityError:
            return 0.0
    return total


# --- the controller --------------------------------------------------------------------------------------------


def set_condition(conditions: list[Obj], new: Obj) -> None:
    """kube's setCondition for HPAs: replace the condition of new's type in place (reason and
    message always), keeping lastTransitionTime while the status stays the same."""
    for i, cur in enumerate(conditions):
        if cur.get("type") == new["type"]:
            if cur.get("status") == new["status"] and cur.get("lastTransitionTime"):
                new["lastTransitionTime"] = cur["lastTransitionTime"]
            conditions[i] = new
            return
    conditions.append(new)


def _condition(ctype: str, ok: bool, reason: str, message: str, now: float) -> Obj:
    return {
        "type": ctype,
        "status": "True" if ok else "False",
        "lastTransitionTime": format_time(now),
        "reason": reason,
        "message": message,
    }


def _metric_name(source: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    if target.get("type") == "Utilization":
        return f"{source.get('name')} resource utilization (percentage of request)"
    return f"{source.get('name')} resource"


class HorizontalPodAutoscalerController(BaseController):
    name = "horizontalpodautoscaling"
    default_workers = 5  # --concurrent-horizontal-pod-autoscaler-syncs

    def __init__(
        self,
        ctx: ControllerContext,
        *,
        sync_period: float | None = None,
        tolerance: float = DEFAULT_TOLERANCE,
        cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
        readiness_delay: float = INITIAL_READINESS_DELAY,
    ) -> None:
        super().__init__(ctx)
        if sync_period is None:
            sync_period = float(
                getattr(ctx.options, "horizontal_pod_autoscaler_sync_period", DEFAULT_SYNC_PERIOD)
            )
        self.sync_period = sync_period
        self.tolerance = tolerance
        self.cpu_initialization_period = cpu_initialization_period
        self.readiness_delay = readiness_delay
        self.recorder = ctx.recorder(COMPONENT)
        self.memory: dict[str, AutoscalerMemory] = {}
        self.hpas = self.informer(HPAS)
        self.pods = self.informer(PODS)
        self.hpas.add_handler(self.enqueue_obj, self._hpa_updated, self._hpa_deleted)

    def _hpa_updated(self, old: Obj, cur: Obj) -> None:
        # Our own status writes come back as updates; only a spec change is worth a sync now.
        if spec(old) != spec(cur) or generation_of(old) != generation_of(cur):
            self.enqueue_obj(cur)

    def _hpa_deleted(self, obj: Obj) -> None:
        self.memory.pop(key_of(obj), None)

    async def sync(self, key: str) -> None:
        hpa = self.hpas.get(key)
        if hpa is None or being_deleted(hpa):
            self.memory.pop(key, None)
            return
        try:
            await self.reconcile(key, hpa)
        finally:
            self.enqueue_after(key, self.sync_period)

    async def reconcile(self, key: str, hpa: Obj) -> None:
        now = self.now()
        hpa_spec = spec(hpa)
        old_status = status(hpa)
        conditions: list[Obj] = [dict(c) for c in old_status.get("conditions") or ()]
        new_status: Obj = {
            k: v for k, v in old_status.items() if k in ("lastScaleTime", "currentMetrics", "currentReplicas")
        }
        new_status["desiredReplicas"] = int(old_status.get("desiredReplicas") or 0)
        if generation_of(hpa):
            new_status["observedGeneration"] = generation_of(hpa)
        ref = hpa_spec.get("scaleTargetRef") or {}
        kind, target_name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        ns = namespace_of(hpa)
        min_replicas = int(hpa_spec.get("minReplicas") or 1)
        max_replicas = int(hpa_spec.get("maxReplicas") or 1)

        async def finish() -> None:
            new_status["conditions"] = conditions
            if new_status != dict(old_status):
                await update_status_with_retry(self.client, HPAS, hpa, new_status)

        group, _, version = str(ref.get("apiVersion") or "apps/v1").rpartition("/")
        resource = SCALE_RESOURCES.get(kind, kind.lower() + "s")
        reference = f"{kind}/{target_name}"
        try:
            scale = await self.client.get(
                group, version, resource, target_name, namespace=ns, subresource="scale"
            )
        except ApiError as exc:
            message = f"the HPA controller was unable to get the target's current scale: {exc.message}"
            set_condition(conditions, _condition("AbleToScale", False, "FailedGetScale", message, now))
            self.recorder.warning(hpa, "FailedGetScale", exc.message)
            await finish()
            return
        set_condition(
            conditions,
            _condition(
                "AbleToScale", True, "SucceededGetScale",
                "the HPA controller was able to get the target's current scale", now,
            ),
        )  # fmt: skip
        spec_replicas = int(spec(scale).get("replicas") or 0)
        new_status["currentReplicas"] = int(status(scale).get("replicas") or 0)
        up_rules, down_rules = behavior_rules(hpa_spec)
        memory = self.memory.setdefault(key, AutoscalerMemory())
        rescale_reason = ""

        if spec_replicas == 0 and min_replicas != 0:
            desired = 0
            set_condition(
                conditions,
                _condition(
                    "ScalingActive", False, "ScalingDisabled",
                    "scaling is disabled since the replica count of the target is zero", now,
                ),
            )  # fmt: skip
        elif spec_replicas > max_replicas:
            desired, rescale_reason = max_replicas, "Current number of replicas above Spec.MaxReplicas"
        elif spec_replicas < min_replicas:
            desired, rescale_reason = min_replicas, "Current number of replicas below Spec.MinReplicas"
        else:
            try:
                proposed, metric, metrics_status = await self.compute_replicas(hpa, scale, spec_replicas, now)
            except MetricError as exc:
                set_condition(
                    conditions,
                    _condition(
                        "ScalingActive", False, exc.reason,
                        f"the HPA was unable to compute the replica count: {exc.message}", now,
                    ),
                )  # fmt: skip
                self.recorder.warning(hpa, exc.reason, exc.message)
                self.recorder.warning(
                    hpa, "FailedComputeMetricsReplicas", f"invalid metrics, first error is: {exc.message}"
                )
                new_status.pop("currentMetrics", None)
                await finish()
                return
            new_status["currentMetrics"] = metrics_status
            set_condition(
                conditions,
                _condition(
                    "ScalingActive", True, "ValidMetricFound",
                    f"the HPA was able to successfully calculate a replica count from {metric}", now,
                ),
            )  # fmt: skip
            stabilized, reason, message = stabilize(
                memory,
                spec_replicas,
                proposed,
                float(up_rules.get("stabilizationWindowSeconds") or 0),
                float(down_rules.get("stabilizationWindowSeconds") or 0),
                now,
            )
            set_condition(conditions, _condition("AbleToScale", True, reason, message, now))
            desired, limit_reason, limit_message = limit_by_behavior(
                memory, spec_replicas, stabilized, min_replicas, max_replicas, up_rules, down_rules, now
            )
            set_condition(
                conditions,
                _condition("ScalingLimited", desired != stabilized, limit_reason, limit_message, now),
            )
            if desired > spec_replicas:
                rescale_reason = f"{metric} above target"
            elif desired < spec_replicas:
                rescale_reason = "All metrics below target"

        if desired != spec_replicas and rescale_reason:
            body = {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {**(scale.get("metadata") or {}), "name": target_name, "namespace": ns},
                "spec": {"replicas": desired},
            }
            body["metadata"].pop("resourceVersion", None)
            try:
                await self.client.update(group, version, resource, body, namespace=ns, subresource="scale")
            except ApiError as exc:
                set_condition(
                    conditions,
                    _condition(
                        "AbleToScale", False, "FailedUpdateScale",
                        f"the HPA controller was unable to update the target scale: {exc.message}", now,
                    ),
                )  # fmt: skip
                self.recorder.warning(hpa, "FailedRescale", f"New size: {desired}; reason: {rescale_reason}; "
                                      f"error: {exc.message}")  # fmt: skip
                await finish()
                return
            set_condition(
                conditions,
                _condition(
                    "AbleToScale", True, "SucceededRescale",
                    f"the HPA controller was able to update the target scale to {desired}", now,
                ),
            )  # fmt: skip
            record_scale_event(memory, spec_replicas, desired, now, up_rules, down_rules)
            self.recorder.normal(hpa, "SuccessfulRescale", f"New size: {desired}; reason: {rescale_reason}")
            log.info(
                "%s: scaled %s from %d to %d (%s)", key, reference, spec_replicas, desired, rescale_reason
            )
            new_status["lastScaleTime"] = format_time(now)
        new_status["desiredReplicas"] = desired
        await finish()

    async def compute_replicas(
        self, hpa: Obj, scale: Obj, current: int, now: float
    ) -> tuple[int, str, list[Obj]]:
        """The largest proposal over the HPA's metrics, the name of the metric that made it, and
        currentMetrics. A failed metric only counts when nothing else works or it would hide a scale
        up (kube: no scale down while a metric is invalid)."""
        selector_text = str(status(scale).get("selector") or "")
        if not selector_text:
            raise MetricError("InvalidSelector", "selector is required")
        try:
            selector = parse_label_selector(selector_text)
        except SelectorError as exc:
            raise MetricError("InvalidSelector", f"couldn't convert selector into a corresponding internal "
                              f"selector object: {exc}") from None  # fmt: skip
        ns = namespace_of(hpa)
        pods = [p for p in self.pods.list(ns) if selector.matches(labels_of(p))]
        usage = await self.pod_metrics(ns, selector_text)
        best: tuple[int, str] | None = None
        statuses: list[Obj] = []
        first_error: MetricError | None = None
        invalid = 0
        specs = list(spec(hpa).get("metrics") or ())
        for metric in specs:
            try:
                replicas, name, current_status = self.resource_proposal(metric, pods, usage, current, now)
            except MetricError as exc:
                invalid += 1
                first_error = first_error or exc
                statuses.append({"type": ""})
                continue
            statuses.append(current_status)
            if best is None or replicas > best[0]:
                best = (replicas, name)
        if best is None or (invalid and best[0] < current):
            raise first_error or MetricError(
                "FailedGetResourceMetric", "no metrics to compute a replica count from"
            )
        return best[0], best[1], statuses

    def resource_proposal(
        self,
        metric: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]],
        usage: Mapping[str, tuple[dict[str, float], float | None, float]],
        current: int,
        now: float,
    ) -> tuple[int, str, Obj]:
        """(replicas, metric name, MetricStatus) of one Resource or ContainerResource metric."""
        mtype = metric.get("type")
        if mtype not in ("Resource", "ContainerResource"):
            raise MetricError("InvalidMetricSourceType", f"metric type {mtype} is not supported by grove yet")
        field_name = "resource" if mtype == "Resource" else "containerResource"
        source = metric.get(field_name) or {}
        resource = str(source.get("name") or "")
        container = source.get("container") if mtype == "ContainerResource" else None
        target = source.get("target") or {}
        samples = []
        for pod in pods:
            pname = name_of(pod)
            got = usage.get(pname)
            value = None
            metric_time, window = None, 0.0
            if got is not None:
                per_container, metric_time, window = got
                if container is not None:
                    value = per_container.get(f"{container}/{resource}")
                else:
                    value = per_container.get(resource)
            terminal = being_deleted(pod) or status(pod).get("phase") == "Failed"
            ready = pod_counts_as_ready(
                pod,
                metric_time,
                window,
                now,
                resource == "cpu",
                self.cpu_initialization_period,
                self.readiness_delay,
            )
            samples.append(
                PodSample(pname, value, pod_request(pod, resource, container), ready=ready, ignored=terminal)
            )
        target_utilization = target.get("averageUtilization") if target.get("type") == "Utilization" else None
        if target_utilization is not None:
            for pod, sample in zip(pods, samples, strict=True):
                lacking = None if sample.ignored else missing_request(pod, resource, container)
                if lacking is not None:
                    raise MetricError(
                        "FailedGetResourceMetric",
                        f"failed to get {resource} utilization: missing request for {resource} in container "
                        f"{lacking} of Pod {name_of(pod)}",
                    )
        target_average = None
        if target_utilization is None:
            try:
                target_average = milli(target.get("averageValue"))
            except (QuantityError, TypeError, ValueError):
                raise MetricError(
                    "InvalidMetricSourceType", f"bad averageValue target for {resource}"
                ) from None
        try:
            proposal = calc_replicas(
                current, samples, target_utilization=target_utilization, target_average=target_average,
                tolerance=self.tolerance,
            )  # fmt: skip
        except MetricError as exc:
            prefix = (
                f"failed to get {resource} utilization"
                if target_utilization
                else f"failed to get {resource} usage"
            )
            raise MetricError(exc.reason, f"{prefix}: {exc.message}") from None
        current_value: Obj = {"averageValue": format_milli(proposal.average, resource)}
        if proposal.utilization is not None:
            current_value["averageUtilization"] = proposal.utilization
        body: Obj = {"name": resource, "current": current_value}
        if container is not None:
            body["container"] = container
        return proposal.replicas, _metric_name(source, target), {"type": mtype, field_name: body}

    async def pod_metrics(
        self, namespace: str, selector: str
    ) -> dict[str, tuple[dict[str, float], float | None, float]]:
        """pod name -> ({resource or container/resource: milli-units}, timestamp, window seconds)."""
        try:
            answer = await self.client.get(
                METRICS_PODS.format(namespace=namespace), params={"labelSelector": selector}
            )
        except ApiError as exc:
            raise MetricError(
                "FailedGetResourceMetric", f"unable to get metrics for resource: unable to fetch metrics from "
                f"resource metrics API: {exc.message}",
            ) from None  # fmt: skip
        out: dict[str, tuple[dict[str, float], float | None, float]] = {}
        for item in answer.get("items") or ():
            totals: dict[str, float] = {}
            try:
                for c in item.get("containers") or ():
                    for res, q in (c.get("usage") or {}).items():
                        value = milli(q)
                        totals[res] = totals.get(res, 0.0) + value
                        totals[f"{c.get('name')}/{res}"] = value
            except QuantityError:
                continue
            window = _seconds(item.get("window"))
            out[name_of(item)] = (totals, parse_time(item.get("timestamp")), window)
        return out


def _seconds(duration: Any) -> float:
    """A Go duration such as `1.5s` or `1m0s` in seconds (0 when unreadable)."""
    text = str(duration or "")
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text[i : i + 2] == "ms" else ch
        try:
            total += float(number) * units.get(unit, 0.0)
        except ValueError:
            return 0.0
        number = ""
        i += len(unit)
    return total


__all__ = [
    "AutoscalerMemory",
    "HorizontalPodAutoscalerController",
    "MetricError",
    "PodSample",
    "Proposal",
    "calc_replicas",
    "limit_by_behavior",
    "pod_counts_as_ready",
    "record_scale_event",
    "stabilize",
]
