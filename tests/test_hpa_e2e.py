"""The horizontal pod autoscaler end to end, driven by kubectl 1.32.

Real processes: a 3-member store, the API server (which serves metrics.k8s.io from the node
agents' Summary API), the scheduler, a hollow node agent (`grove node --runtime fake`, whose
containers report the CPU rate a pod's `grove.io/fake-cpu-millicores` annotation asks for) and the
controller manager running the replicaset, deployment and horizontalpodautoscaling controllers
with a 1 s HPA sync period. `kubectl autoscale` a deployment whose pods "use" 8x their target: it
grows to --max; the template then asks for little CPU, the rollout replaces the pods, and after
the (test-shortened, through spec.behavior) stabilization window it shrinks to --min.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import waiting
from tests.apiserver_fixture import (
    ApiServerProcess,
    apiserver,  # noqa: F401 - the module's store + API server
)
from tests.cluster import Cluster

pytestmark = [pytest.mark.slow]

DEADLINE = 60.0
NS = "default"
HPA = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/web"
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
CPU_ANNOTATION = "grove.io/fake-cpu-millicores"


def wait_for(cond: Callable[[], Any], what: str, check: Callable[[], None] | None = None, **kw: Any) -> Any:
    return waiting.wait_for(cond, what, DEADLINE, check=check, **kw)


class HpaCluster(Cluster):
    """The shared process cluster, plus what these tests read of the Deployment and the HPA."""

    def replicas(self) -> int:
        return int(self.get(DEPLOYMENT)["spec"].get("replicas") or 0)

    def hpa_status(self) -> dict[str, Any]:
        return self.get(HPA).get("status") or {}

    def detail(self) -> str:
        return json.dumps(self.hpa_status(), indent=1) + "\n" + self.procs[-1].log()[-2000:]


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServerProcess) -> Iterator[HpaCluster]:  # noqa: F811
    workdir = tempfile.mkdtemp(prefix="grove-hpa-e2e-")
    c = HpaCluster(apiserver, workdir)
    try:
        c.start("scheduler", "orchestrator.scheduler.cli", "--server", apiserver.url, "--no-leader-elect")
        c.start(
            "nodes", "node.cli", "--server", apiserver.url, "--runtime", "fake", "--count", "1",
            "--name-prefix", "hpa-node-", "--port", "0", "--root-dir", os.path.join(workdir, "root"),
            "--node-ip", "127.0.0.1", "--node-status-update-frequency", "1", "--cpu", "8", "--no-events",
        )  # fmt: skip
        wait_for(lambda: c.node_ready("hpa-node-0"), "node hpa-node-0 Ready", check=c.check)
        c.start(
            "manager", "orchestrator.controllers.cli", "--server", apiserver.url, "--no-leader-elect",
            "--controllers", "replicaset,deployment,horizontalpodautoscaling", "--port", "0",
            "--horizontal-pod-autoscaler-sync-period", "1s",
        )  # fmt: skip
        yield c
    finally:
        c.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def deployment(cpu_millicores: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {CPU_ANNOTATION: str(cpu_millicores)}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "app", "image": "busybox:1", "resources": {"requests": {"cpu": "100m"}}}
                    ],
                },
            },
        },
    }


TARGETS = re.compile(r"^web\s+Deployment/web\s+cpu: (\d+|<unknown>)%?/50%\s+1\s+5\s+(\d+)\s+\S+\s*$", re.M)


def test_autoscale_up_to_max_then_down_after_stabilization(cluster: HpaCluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(deployment(400)))
    out = cluster.kubectl("autoscale", "deployment", "web", "--cpu-percent=50", "--min=1", "--max=5")
    assert "autoscaled" in out
    hpa = cluster.get(HPA)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 50,
    }
    assert hpa["spec"]["minReplicas"] == 1

    # 400m used of 100m requested is 400% against a 50% target: up to --max in one step.
    wait_for(lambda: cluster.replicas() == 5, "the HPA to scale web to 5", check=cluster.check,
             detail=cluster.detail)  # fmt: skip
    status = wait_for(
        lambda: (s := cluster.hpa_status()).get("currentReplicas") == 5 and s, "status.currentReplicas 5",
        check=cluster.check, detail=cluster.detail,
    )  # fmt: skip
    assert status["desiredReplicas"] == 5
    assert status.get("lastScaleTime")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["ScalingActive"]["status"] == "True"
    assert conditions["ScalingActive"]["reason"] == "ValidMetricFound"
    assert conditions["AbleToScale"]["status"] == "True"
    current = status["currentMetrics"][0]["resource"]
    assert current["name"] == "cpu" and current["current"]["averageUtilization"] > 50

    table = cluster.kubectl("get", "hpa")
    assert table.split()[:7] == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    row = TARGETS.search(table)
    assert row is not None, table
    assert row.group(1) != "<unknown>" and int(row.group(1)) > 50, table
    described = cluster.kubectl("describe", "hpa", "web")
    assert "Deployment/web" in described and "SuccessfulRescale" in described, described

    # Little CPU from now on; a short scale-down stabilization window instead of kube's 5 minutes.
    cluster.kubectl(
        "patch", "hpa", "web", "--type=merge",
        "-p", json.dumps({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}}}}),
    )  # fmt: skip
    behavior = cluster.get(HPA)["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 3
    assert behavior["scaleUp"]["policies"]  # the rest of a given behavior is defaulted
    template_patch = {"spec": {"template": {"metadata": {"annotations": {CPU_ANNOTATION: "10"}}}}}
    cluster.kubectl("patch", "deployment", "web", "-p", json.dumps(template_patch))
    wait_for(lambda: cluster.replicas() == 1, "the HPA to scale web down to 1", check=cluster.check,
             detail=cluster.detail)  # fmt: skip
    status = cluster.hpa_status()
    assert status["desiredReplicas"] == 1
    events = cluster.get(f"/api/v1/namespaces/{NS}/events")["items"]
    rescales = [e["message"] for e in events if e["reason"] == "SuccessfulRescale"]
    assert any(m.startswith("New size: 5; reason: cpu resource utilization") for m in rescales), rescales
    assert any(m == "New size: 1; reason: All metrics below target" for m in rescales), rescales


def test_missing_target_is_reported_in_conditions(cluster: HpaCluster) -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "ghost", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nosuch"},
            "maxReplicas": 3,
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(hpa))
    path = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/ghost"

    def failed_get_scale() -> dict[str, Any] | None:
        conds = {c["type"]: c for c in (cluster.get(path).get("status") or {}).get("conditions") or []}
        able = conds.get("AbleToScale")
        return able if able and able["status"] == "False" else None

    able = wait_for(failed_get_scale, "AbleToScale False on ghost", check=cluster.check)
    assert able["reason"] == "FailedGetScale"
    assert 'deployments.apps "nosuch" not found' in able["message"]
    row = cluster.kubectl("get", "hpa", "ghost", "--no-headers").split()
    assert row[:5] == ["ghost", "Deployment/nosuch", "cpu:", "<unknown>/80%", "1"], row
