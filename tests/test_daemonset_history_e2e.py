"""DaemonSet revision history through kubectl 1.32: `rollout history`, `--revision=N`, `rollout
undo` and revisionHistoryLimit, against real processes — a 3-member store, the API server, the
scheduler, the controller manager and two hollow nodes (`grove node --runtime fake`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.apiserver_fixture import (
    ApiServerProcess,
    apiserver,  # noqa: F401 - the module's store + API server
)
from tests.cluster import Cluster, control_plane, wait_for
from tests.test_controllers_e2e import pod_template

pytestmark = [pytest.mark.slow]

NODES = {"hist-0", "hist-1"}


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServerProcess) -> Iterator[Cluster]:  # noqa: F811
    with control_plane(apiserver, "ds-history", "hist-") as c:
        yield c


def history_revisions(cluster: Cluster, ns: str) -> list[int]:
    out = cluster.kubectl("rollout", "history", "-n", ns, "daemonset/agent")
    return sorted(int(m.group(1)) for m in re.finditer(r"^(\d+)\s", out, re.MULTILINE))


def rolled_out(cluster: Cluster, ns: str, image: str) -> bool:
    ds = cluster.obj(ns, "daemonset", "agent") or {}
    st = ds.get("status", {})
    pods = cluster.running(ns, "app=agent")
    return (
        ds["spec"]["template"]["spec"]["containers"][0]["image"] == image
        and st.get("observedGeneration") == ds["metadata"]["generation"]
        and st.get("updatedNumberScheduled") == 2
        and st.get("numberAvailable") == 2
        and {p["spec"]["nodeName"] for p in pods} == NODES
        and len(cluster.live_pods(ns, "app=agent")) == 2
        and {p["spec"]["containers"][0]["image"] for p in pods} == {image}
    )


def revisions(cluster: Cluster, ns: str) -> dict[int, dict]:
    items = cluster.get(f"/apis/apps/v1/namespaces/{ns}/controllerrevisions")["items"]
    return {r["revision"]: r for r in items}


def test_rollout_history_and_undo(cluster: Cluster) -> None:
    ns = cluster.namespace("ds-history")
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": pod_template("agent")},
    }
    cluster.apply(ns, ds)
    wait_for(lambda: rolled_out(cluster, ns, "busybox:1"), "busybox:1 on both nodes", check=cluster.check)
    for image in ("busybox:2", "busybox:3"):
        cluster.kubectl("set", "image", "-n", ns, "daemonset/agent", f"c={image}")
        wait_for(
            lambda image=image: rolled_out(cluster, ns, image), f"{image} rolled out", check=cluster.check
        )

    # One revision per template, owned by the DaemonSet, each pod labelled with the current hash.
    wait_for(lambda: sorted(revisions(cluster, ns)) == [1, 2, 3], "three revisions")
    revs = revisions(cluster, ns)
    current_hash = revs[3]["metadata"]["labels"]["controller-revision-hash"]
    assert revs[3]["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
    assert {
        p["metadata"]["labels"]["controller-revision-hash"] for p in cluster.live_pods(ns, "app=agent")
    } == {current_hash}
    assert history_revisions(cluster, ns) == [1, 2, 3]
    table = cluster.kubectl("get", "controllerrevisions", "-n", ns)
    assert table.split("\n")[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert table.count("daemonset.apps/agent") == 3

    detail = cluster.kubectl("rollout", "history", "-n", ns, "daemonset/agent", "--revision=1")
    assert "busybox:1" in detail and "busybox:3" not in detail

    # Undo to revision 1: the template comes back and revision 1 becomes revision 4.
    out = cluster.kubectl("rollout", "undo", "-n", ns, "daemonset/agent", "--to-revision=1")
    assert "rolled back" in out
    wait_for(lambda: rolled_out(cluster, ns, "busybox:1"), "rolled back to busybox:1", check=cluster.check)
    wait_for(lambda: history_revisions(cluster, ns) == [2, 3, 4], "history 2, 3, 4")
    assert revisions(cluster, ns)[4]["metadata"]["name"] == revs[1]["metadata"]["name"]

    # Undo without a revision goes back to the previous one (3: busybox:3).
    cluster.kubectl("rollout", "undo", "-n", ns, "daemonset/agent")
    wait_for(lambda: rolled_out(cluster, ns, "busybox:3"), "undone to busybox:3", check=cluster.check)
    wait_for(lambda: history_revisions(cluster, ns) == [2, 4, 5], "history 2, 4, 5")

    # A smaller revisionHistoryLimit prunes the oldest revisions no pod runs.
    cluster.kubectl(
        "patch",
        "-n",
        ns,
        "daemonset/agent",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"revisionHistoryLimit": 1}}),
    )
    wait_for(lambda: sorted(revisions(cluster, ns)) == [4, 5], "revision 2 pruned")

    # Deleting the DaemonSet deletes its revisions (the garbage collector follows the owner).
    cluster.kubectl("delete", "-n", ns, "daemonset/agent")
    wait_for(lambda: not revisions(cluster, ns), "the revisions collected")
