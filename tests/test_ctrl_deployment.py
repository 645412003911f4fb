"""The Deployment controller's decisions over snapshots: template hashes and revisions, rolling
updates within maxSurge/maxUnavailable (simulated to the end), Recreate, proportional scaling,
pause, history cleanup, progress conditions, rollback to an old ReplicaSet."""

from __future__ import annotations

import copy
import itertools

import pytest

from orchestrator.controllers.deployment import (
    DeploymentPlanner,
    max_surge,
    max_unavailable,
    resolve_fenceposts,
)
from orchestrator.controllers.history import (
    CHANGE_CAUSE_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    compute_hash,
    equal_ignore_hash,
    fnv32a,
    safe_encode_string,
    set_new_replica_set_annotations,
)
from orchestrator.controllers.testing import T0, deployment, owner_ref, pod, replicaset, template, uid
from orchestrator.controllers.util import format_time, get_condition

# --- hashes and revisions ------------------------------------------------------------------------


def test_fnv32a_known_vectors():
    assert fnv32a(b"") == 0x811C9DC5
    assert fnv32a(b"a") == 0xE40C292C
    assert fnv32a(b"foobar") == 0xBF9CF968


def test_safe_encode_string_uses_kubes_alphabet():
    assert safe_encode_string("0123456789") == "456789bcdf"
    encoded = safe_encode_string(str(fnv32a(b"x")))
    assert all(c in "bcdfghjklmnpqrstvwxz2456789" for c in encoded)


def test_hash_is_stable_ignores_empty_fields_and_moves_with_collisions():
    t = template(image="web:1")
    assert compute_hash(t) == compute_hash(copy.deepcopy(t))
    spelled_out = copy.deepcopy(t)
    spelled_out["metadata"]["annotations"] = {}
    spelled_out["metadata"]["creationTimestamp"] = None
    assert compute_hash(spelled_out) == compute_hash(t)
    assert compute_hash(template(image="web:2")) != compute_hash(t)
    assert compute_hash(t, 1) != compute_hash(t) and compute_hash(t, 1) != compute_hash(t, 2)


def test_equal_ignore_hash():
    t = template()
    hashed = copy.deepcopy(t)
    hashed["metadata"]["labels"]["pod-template-hash"] = "abc"
    assert equal_ignore_hash(t, hashed)
    assert not equal_ignore_hash(t, template(image="other"))


def test_revision_annotations_new_and_rollback_history():
    d = deployment(annotations={CHANGE_CAUSE_ANNOTATION: "kubectl set image", REVISION_ANNOTATION: "9"})
    rs = replicaset()
    assert set_new_replica_set_annotations(d, rs, 1, False, 3, 4)
    ann = rs["metadata"]["annotations"]
    assert ann[REVISION_ANNOTATION] == "1"
    assert ann[CHANGE_CAUSE_ANNOTATION] == "kubectl set image"
    assert ann[DESIRED_REPLICAS_ANNOTATION] == "3" and ann[MAX_REPLICAS_ANNOTATION] == "4"
    # Becoming current again (a rollback) moves it to a new revision and remembers the old ones.
    assert set_new_replica_set_annotations(d, rs, 3, True, 3, 4)
    assert ann[REVISION_ANNOTATION] == "3" and ann[REVISION_HISTORY_ANNOTATION] == "1"
    assert set_new_replica_set_annotations(d, rs, 5, True, 3, 4)
    assert ann[REVISION_HISTORY_ANNOTATION] == "1,3"
    assert not set_new_replica_set_annotations(d, rs, 5, True, 3, 4)


def test_fenceposts_round_surge_up_and_unavailable_down():
    assert resolve_fenceposts("25%", "25%", 10) == (3, 2)
    assert resolve_fenceposts("10%", "10%", 5) == (1, 0)
    assert resolve_fenceposts(0, 0, 5) == (0, 1)
    assert resolve_fenceposts("0%", "0%", 5) == (0, 1)
    d = deployment(replicas=4, max_surge=0, max_unavailable="100%")
    assert max_surge(d) == 0 and max_unavailable(d) == 4
    assert max_unavailable(deployment(replicas=0)) == 0
    assert max_surge(deployment(strategy={"type": "Recreate"})) == 0


# --- a small world to run the planner in ---------------------------------------------------------


class World:
    """A Deployment and its ReplicaSets; pods of a ReplicaSet appear at once and turn available one
    step after they appear (unless `stuck`), as a fake kubelet + ReplicaSet controller would."""

    def __init__(self, d: dict, rss: list[dict] | None = None) -> None:
        self.d = d
        self.rss = {r["metadata"]["name"]: r for r in rss or []}
        self.now = T0
        self.clock = itertools.count(1)
        self.events: list[tuple[str, str, str]] = []
        self.stuck = False

    def plan(self):
        return DeploymentPlanner(self.d, list(self.rss.values()), {}, self.now).plan()

    def apply(self, plan) -> None:
        for w in plan.writes:
            obj = copy.deepcopy(w.obj)
            if w.op == "create_rs":
                assert obj["metadata"]["name"] not in self.rss
                obj["metadata"]["uid"] = uid()
                obj["metadata"]["generation"] = 1
                obj["metadata"]["creationTimestamp"] = format_time(self.now + next(self.clock))
                self.rss[obj["metadata"]["name"]] = obj
            elif w.op == "update_rs":
                cur = self.rss[obj["metadata"]["name"]]
                if cur["spec"] != obj["spec"]:
                    obj["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
                obj["status"] = cur["status"]
                self.rss[obj["metadata"]["name"]] = obj
            elif w.op == "delete_rs":
                del self.rss[obj["metadata"]["name"]]
            elif w.op == "update_status":
                self.d["status"] = obj["status"]
                self.d["metadata"]["annotations"] = obj["metadata"].get("annotations", {})
            self.events.extend(w.events)

    def kubelet(self) -> None:
        for rs in self.rss.values():
            want = rs["spec"]["replicas"]
            st = rs.setdefault("status", {})
            had = st.get("replicas", 0)
            available = min(st.get("availableReplicas", 0), want)
            if not self.stuck:
                available = max(available, min(want, had))
            st.update(replicas=want, readyReplicas=available, availableReplicas=available)
            st["observedGeneration"] = rs["metadata"].get("generation", 1)

    def step(self) -> None:
        self.apply(self.plan())
        self.kubelet()
        self.now += 1

    def total(self, field: str) -> int:
        return sum(rs["status"].get(field, 0) for rs in self.rss.values())

    def settle(self, max_steps: int = 100, check=None) -> None:
        for _ in range(max_steps):
            before = (copy.deepcopy(self.d["status"]), copy.deepcopy(self.rss))
            self.step()
            if check:
                check(self)
            if (self.d["status"], self.rss) == before:
                return
        raise AssertionError("the rollout did not settle")


def test_new_deployment_creates_first_replicaset_at_revision_1():
    d = deployment(replicas=3, annotations={CHANGE_CAUSE_ANNOTATION: "first"})
    plan = DeploymentPlanner(d, [], {}, T0).plan()
    creates = [w for w in plan.writes if w.op == "create_rs"]
    assert len(creates) == 1
    rs = creates[0].obj
    h = compute_hash(d["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{h}"
    assert rs["metadata"]["labels"]["pod-template-hash"] == h
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == h
    assert rs["spec"]["replicas"] == 3
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    ann = rs["metadata"]["annotations"]
    assert ann[REVISION_ANNOTATION] == "1" and ann[CHANGE_CAUSE_ANNOTATION] == "first"
    assert creates[0].events == [
        ("Normal", "ScalingReplicaSet", f"Scaled up replica set web-{h} from 0 to 3")
    ]
    status = [w for w in plan.writes if w.op == "update_status"][-1].obj
    assert status["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    cond = get_condition(status["status"]["conditions"], "Progressing")
    assert (
        cond["reason"] == "NewReplicaSetCreated" and cond["message"] == f'Created new replica set "web-{h}"'
    )


@pytest.mark.parametrize(
    "replicas,surge,unavailable",
    [(4, 1, 1), (10, "25%", "25%"), (5, 0, 1), (5, 2, 0), (3, "50%", "0%"), (1, 1, 0), (6, "30%", "30%")],
)
def test_rolling_update_stays_within_surge_and_unavailability(replicas, surge, unavailable):
    d = deployment(replicas=replicas, max_surge=surge, max_unavailable=unavailable)
    world = World(d)
    world.settle()
    assert world.total("availableReplicas") == replicas
    assert world.d["status"]["updatedReplicas"] == replicas

    # Roll to a new image; check every intermediate state.
    world.d["spec"]["template"] = template(image="busybox:2")
    world.d["metadata"]["generation"] += 1
    min_available = replicas - max_unavailable(world.d)
    max_total = replicas + max_surge(world.d)

    def check(w: World) -> None:
        assert w.total("availableReplicas") >= min_available
        assert w.total("replicas") <= max_total

    world.settle(check=check)
    new_hash = compute_hash(template(image="busybox:2"))
    new = world.rss[f"web-{new_hash}"]
    old = [rs for name, rs in world.rss.items() if name != f"web-{new_hash}"]
    assert new["spec"]["replicas"] == replicas and new["status"]["availableReplicas"] == replicas
    assert all(rs["spec"]["replicas"] == 0 for rs in old)
    assert new["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    assert world.d["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    st = world.d["status"]
    assert st["observedGeneration"] == world.d["metadata"]["generation"]
    assert get_condition(st["conditions"], "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert get_condition(st["conditions"], "Available")["reason"] == "MinimumReplicasAvailable"
    assert any(e[1] == "ScalingReplicaSet" and "Scaled down" in e[2] for e in world.events)


def test_rolling_update_first_step_surges_then_scales_old_down():
    old_t = template(image="busybox:1")
    d = deployment(replicas=4, max_surge=1, max_unavailable=1, tmpl=template(image="busybox:2"))
    old = replicaset(
        f"web-{compute_hash(old_t)}",
        replicas=4,
        owner=d,
        tmpl=old_t,
        annotations={REVISION_ANNOTATION: "1"},
        status={"replicas": 4, "readyReplicas": 4, "availableReplicas": 4, "observedGeneration": 1},
    )
    world = World(d, [old])
    plan = world.plan()
    # One sync: surge one new pod (max total 5), and since 5 - 3 (min available) - 1 (the new pod,
    # not available yet) = 1, one old pod may go at once.
    rs_writes = [
        (w.op, w.obj["metadata"]["name"], w.obj["spec"]["replicas"])
        for w in plan.writes
        if w.op.endswith("_rs")
    ]
    new_name = f"web-{compute_hash(template(image='busybox:2'))}"
    assert rs_writes == [("create_rs", new_name, 1), ("update_rs", old["metadata"]["name"], 3)]
    world.apply(plan)
    world.kubelet()
    plan = world.plan()  # 4 pods, one surge slot again: the new set grows to 2
    rs_writes = [
        (w.op, w.obj["metadata"]["name"], w.obj["spec"]["replicas"])
        for w in plan.writes
        if w.op.endswith("_rs")
    ]
    assert rs_writes == [("update_rs", new_name, 2)]


def test_stuck_rollout_never_takes_availability_below_minimum_and_times_out():
    d = deployment(replicas=4, max_surge=1, max_unavailable=1, progress_deadline=60)
    world = World(d)
    world.settle()
    world.d["spec"]["template"] = template(image="broken")
    world.d["metadata"]["generation"] += 1
    world.stuck = True  # new pods never become ready
    for _ in range(10):
        world.step()
        assert world.total("availableReplicas") >= 3
    world.now += 120
    world.step()
    cond = get_condition(world.d["status"]["conditions"], "Progressing")
    assert cond["status"] == "False" and cond["reason"] == "ProgressDeadlineExceeded"
    assert "has timed out progressing" in cond["message"]


def test_requeue_at_progress_deadline():
    d = deployment(replicas=2, progress_deadline=600)
    world = World(d)
    world.settle()
    world.d["spec"]["template"] = template(image="v2")
    world.stuck = True
    for _ in range(4):
        world.step()
    plan = world.plan()
    assert plan.requeue_after is not None and 0 < plan.requeue_after <= 601


def test_recreate_scales_old_to_zero_and_waits_for_their_pods():
    old_t = template(image="v1")
    d = deployment(replicas=3, strategy={"type": "Recreate"}, tmpl=template(image="v2"))
    old = replicaset(
        "web-old",
        replicas=3,
        owner=d,
        tmpl=old_t,
        annotations={REVISION_ANNOTATION: "1"},
        status={"replicas": 3, "availableReplicas": 3, "readyReplicas": 3},
    )
    plan = DeploymentPlanner(d, [old], {}, T0).plan()
    assert [w.op for w in plan.writes if w.op.endswith("_rs")] == ["update_rs"]
    assert plan.writes[0].obj["spec"]["replicas"] == 0
    # Scaled to zero, but a pod is still terminating: no new ReplicaSet yet.
    old["spec"]["replicas"] = 0
    old["status"] = {"replicas": 0}
    still_running = pod(owner=old, node="n1")
    plan = DeploymentPlanner(d, [old], {old["metadata"]["uid"]: [still_running]}, T0).plan()
    assert not [w for w in plan.writes if w.op == "create_rs"]
    plan = DeploymentPlanner(d, [old], {old["metadata"]["uid"]: []}, T0).plan()
    (create,) = [w for w in plan.writes if w.op == "create_rs"]
    assert create.obj["spec"]["replicas"] == 3


def test_scaling_mid_rollout_is_proportional():
    # kube's example: 10 replicas with maxSurge 3 mid-rollout (8 old + 5 new), scaled to 15.
    d = deployment(replicas=15, max_surge=3, max_unavailable=2, tmpl=template(image="v2"))
    ann = {DESIRED_REPLICAS_ANNOTATION: "10", MAX_REPLICAS_ANNOTATION: "13"}
    old = replicaset(
        "web-old",
        replicas=8,
        owner=d,
        tmpl=template(image="v1"),
        created=T0 - 1000,
        annotations={**ann, REVISION_ANNOTATION: "1"},
        status={"replicas": 8, "availableReplicas": 8},
    )
    new = replicaset(
        "web-new",
        replicas=5,
        owner=d,
        tmpl=template(image="v2"),
        created=T0 - 10,
        annotations={**ann, REVISION_ANNOTATION: "2"},
        status={"replicas": 5, "availableReplicas": 0},
    )
    d["status"] = {"replicas": 13}
    plan = DeploymentPlanner(d, [old, new], {}, T0).plan()
    sizes = {w.obj["metadata"]["name"]: w.obj["spec"]["replicas"] for w in plan.writes if w.op == "update_rs"}
    assert sizes == {"web-old": 11, "web-new": 7}
    for w in plan.writes:
        if w.op == "update_rs":
            assert w.obj["metadata"]["annotations"][DESIRED_REPLICAS_ANNOTATION] == "15"
            assert w.obj["metadata"]["annotations"][MAX_REPLICAS_ANNOTATION] == "18"
    assert not [w for w in plan.writes if w.op == "create_rs"]


def test_paused_deployment_does_not_roll_but_reports_paused():
    d = deployment(replicas=2, paused=True)
    world = World(d)
    world.d["spec"]["paused"] = False
    world.settle()
    world.d["spec"]["paused"] = True
    world.d["spec"]["template"] = template(image="v2")
    plan = world.plan()
    assert not [w for w in plan.writes if w.op == "create_rs"]
    cond = get_condition(plan.writes[0].obj["status"]["conditions"], "Progressing")
    assert cond["status"] == "Unknown" and cond["reason"] == "DeploymentPaused"
    world.apply(plan)
    world.d["spec"]["paused"] = False
    plan = world.plan()
    first = get_condition(plan.writes[0].obj["status"]["conditions"], "Progressing")
    assert first["reason"] == "DeploymentResumed"
    assert [w for w in plan.writes if w.op == "create_rs"]


def test_revision_history_limit_deletes_oldest_scaled_down_sets():
    d = deployment(replicas=1, revision_history_limit=1, tmpl=template(image="v4"))
    rss = []
    for rev in (1, 2, 3):
        rss.append(
            replicaset(
                f"web-r{rev}",
                replicas=0,
                owner=d,
                tmpl=template(image=f"v{rev}"),
                created=T0 - 1000 + rev,
                annotations={REVISION_ANNOTATION: str(rev)},
                status={"replicas": 0, "observedGeneration": 1},
            )
        )
    current = replicaset(
        "web-r4",
        replicas=1,
        owner=d,
        tmpl=template(image="v4"),
        annotations={REVISION_ANNOTATION: "4"},
        status={"replicas": 1, "availableReplicas": 1, "readyReplicas": 1, "observedGeneration": 1},
    )
    d["status"] = {"replicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "observedGeneration": 1}
    plan = DeploymentPlanner(d, [*rss, current], {}, T0).plan()
    deleted = [w.obj["metadata"]["name"] for w in plan.writes if w.op == "delete_rs"]
    assert deleted == ["web-r1", "web-r2"]


def test_rollback_makes_the_old_replicaset_the_newest_revision():
    v1, v2 = template(image="v1"), template(image="v2")
    d = deployment(replicas=2, tmpl=v1)  # kubectl rollout undo copied v1 back
    r1 = replicaset(
        f"web-{compute_hash(v1)}",
        replicas=0,
        owner=d,
        tmpl=v1,
        created=T0 - 100,
        annotations={REVISION_ANNOTATION: "1", CHANGE_CAUSE_ANNOTATION: "v1"},
        status={},
    )
    r2 = replicaset(
        f"web-{compute_hash(v2)}",
        replicas=2,
        owner=d,
        tmpl=v2,
        created=T0 - 50,
        annotations={REVISION_ANNOTATION: "2"},
        status={"replicas": 2, "availableReplicas": 2},
    )
    world = World(d, [r1, r2])
    world.settle()
    back = world.rss[r1["metadata"]["name"]]
    assert back["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    assert back["metadata"]["annotations"][REVISION_HISTORY_ANNOTATION] == "1"
    assert back["spec"]["replicas"] == 2 and world.rss[r2["metadata"]["name"]]["spec"]["replicas"] == 0
    assert world.d["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    assert len(world.rss) == 2  # no third ReplicaSet


def test_found_new_replicaset_condition_when_none_reported():
    d = deployment(replicas=1)
    rs = replicaset(
        f"web-{compute_hash(d['spec']['template'])}",
        replicas=1,
        owner=d,
        tmpl=d["spec"]["template"],
        annotations={REVISION_ANNOTATION: "1"},
        status={"replicas": 1},
    )
    plan = DeploymentPlanner(d, [rs], {}, T0).plan()
    first = plan.writes[0].obj
    assert get_condition(first["status"]["conditions"], "Progressing")["reason"] == "FoundNewReplicaSet"


def test_unavailable_condition_while_below_minimum():
    d = deployment(replicas=4, max_surge=1, max_unavailable=1)
    world = World(d)
    world.stuck = True
    world.step()
    world.step()
    cond = get_condition(world.d["status"]["conditions"], "Available")
    assert cond["status"] == "False" and cond["reason"] == "MinimumReplicasUnavailable"
    assert world.d["status"]["unavailableReplicas"] == 4


def test_owner_ref_helper_matches_controller_ref_shape():
    d = deployment()
    ref = owner_ref(d)
    assert ref["controller"] and ref["blockOwnerDeletion"] and ref["kind"] == "Deployment"
