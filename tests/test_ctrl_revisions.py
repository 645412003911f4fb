"""DaemonSet revision history: which ControllerRevision is current, what to create, renumber,
deduplicate and prune — kube's constructHistory and cleanupHistory over plain snapshots."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from orchestrator.controllers.daemonset import calculate_status, daemonset_hash, pin_to_node
from orchestrator.controllers.revisions import (
    REVISION_HASH_LABEL,
    matches,
    new_revision,
    plan_history,
    revisions_to_prune,
    template_hash,
    template_patch,
)
from orchestrator.controllers.testing import T0, node, owner_ref, pod, template, uid
from orchestrator.controllers.util import format_time
from orchestrator.tables import to_table
from orchestrator.validation import validate, validate_update


def daemonset(image: str = "busybox:1", **spec_extra):
    labels = {"app": "agent"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": "agent",
            "namespace": "default",
            "uid": uid(),
            "generation": 1,
            "annotations": {"kubernetes.io/change-cause": f"image {image}"},
            "creationTimestamp": format_time(T0 - 9999),
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "template": template(labels, image=image),
            **spec_extra,
        },
        "status": {},
    }


def with_image(ds, image):
    out = copy.deepcopy(ds)
    out["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return out


def revision_of(ds, number):
    return new_revision(ds, number, owner_ref(ds), template_hash(ds))


def test_a_revision_holds_the_template_patch_labels_annotations_and_owner():
    ds = daemonset()
    rev = revision_of(ds, 1)
    h = daemonset_hash(ds)
    assert rev["kind"] == "ControllerRevision" and rev["apiVersion"] == "apps/v1"
    assert rev["metadata"]["name"] == f"agent-{h}"
    assert rev["metadata"]["labels"] == {"app": "agent", REVISION_HASH_LABEL: h}
    assert rev["metadata"]["annotations"]["kubernetes.io/change-cause"] == "image busybox:1"
    assert rev["metadata"]["ownerReferences"][0]["uid"] == ds["metadata"]["uid"]
    assert rev["revision"] == 1
    assert rev["data"] == template_patch(ds)
    patched = copy.deepcopy(rev["data"]["spec"]["template"])
    assert patched.pop("$patch") == "replace"
    assert patched == ds["spec"]["template"]


def test_match_ignores_key_order_and_empty_values_but_not_the_image():
    ds = daemonset()
    rev = revision_of(ds, 1)
    reordered = copy.deepcopy(rev)
    tmpl = reordered["data"]["spec"]["template"]
    reordered["data"]["spec"]["template"] = dict(reversed(list(tmpl.items())))
    tmpl["metadata"]["annotations"] = {}
    assert matches(ds, reordered)
    assert not matches(with_image(ds, "busybox:2"), rev)


def test_first_sync_creates_revision_one():
    ds = daemonset()
    plan = plan_history(ds, [], owner_ref(ds))
    assert plan.current is None and plan.create is not None
    assert plan.create["revision"] == 1
    assert plan.hash == daemonset_hash(ds)
    assert plan.old == [] and plan.duplicates == [] and plan.renumber is None


def test_current_revision_at_the_top_needs_no_write():
    ds1 = daemonset()
    ds2 = with_image(ds1, "busybox:2")
    revs = [revision_of(ds1, 1), revision_of(ds2, 2)]
    plan = plan_history(ds2, revs, owner_ref(ds2))
    assert plan.create is None and plan.renumber is None
    assert plan.current["revision"] == 2
    assert [r["revision"] for r in plan.old] == [1]
    assert plan.hash == daemonset_hash(ds2)


def test_a_new_template_gets_the_next_revision_number():
    ds1 = daemonset()
    ds2 = with_image(ds1, "busybox:2")
    ds3 = with_image(ds1, "busybox:3")
    plan = plan_history(ds3, [revision_of(ds1, 1), revision_of(ds2, 2)], owner_ref(ds3))
    assert plan.create["revision"] == 3
    assert plan.create["data"]["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:3"
    assert sorted(r["revision"] for r in plan.old) == [1, 2]


def test_rolling_back_to_an_old_template_moves_its_revision_to_the_top():
    ds1 = daemonset()
    ds2 = with_image(ds1, "busybox:2")
    ds3 = with_image(ds1, "busybox:3")
    revs = [revision_of(ds1, 1), revision_of(ds2, 2), revision_of(ds3, 3)]
    back = with_image(ds3, "busybox:1")  # what `kubectl rollout undo --to-revision=1` leaves
    plan = plan_history(back, revs, owner_ref(back))
    assert plan.create is None
    assert plan.current["revision"] == 1 and plan.renumber == 4
    assert plan.hash == revs[0]["metadata"]["labels"][REVISION_HASH_LABEL]
    assert sorted(r["revision"] for r in plan.old) == [2, 3]


def test_duplicate_current_revisions_keep_the_highest():
    ds1 = daemonset()
    ds2 = with_image(ds1, "busybox:2")
    dup = revision_of(ds1, 3)
    dup["metadata"]["name"] = "agent-other"
    dup["metadata"]["labels"][REVISION_HASH_LABEL] = "other"
    revs = [revision_of(ds1, 1), revision_of(ds2, 2), dup]
    plan = plan_history(ds1, revs, owner_ref(ds1))
    assert plan.current["metadata"]["name"] == "agent-other" and plan.renumber is None
    assert [d["revision"] for d in plan.duplicates] == [1]
    assert plan.hash == "other"


def test_revisions_without_the_hash_label_are_labelled_with_their_name():
    ds = daemonset()
    rev = revision_of(ds, 1)
    del rev["metadata"]["labels"][REVISION_HASH_LABEL]
    plan = plan_history(ds, [rev], owner_ref(ds))
    assert [r["metadata"]["labels"][REVISION_HASH_LABEL] for r in plan.label] == [rev["metadata"]["name"]]
    assert REVISION_HASH_LABEL not in rev["metadata"]["labels"]  # the input is not modified


def test_prune_keeps_the_limit_and_every_revision_a_pod_still_runs():
    ds = daemonset(revisionHistoryLimit=2)
    old = []
    for n in range(1, 6):
        old.append(revision_of(with_image(ds, f"busybox:{n}"), n))
    live = pod(
        owner=ds,
        labels={"app": "agent", REVISION_HASH_LABEL: old[0]["metadata"]["labels"][REVISION_HASH_LABEL]},
    )
    pruned = revisions_to_prune(ds, old, [live])
    # 5 old, limit 2: three go, oldest first, but revision 1 still runs a pod.
    assert [r["revision"] for r in pruned] == [2, 3, 4]
    assert revisions_to_prune(ds, old[:2], []) == []


def test_prune_defaults_to_ten_and_zero_keeps_none():
    ds = daemonset()
    old = [revision_of(with_image(ds, f"busybox:{n}"), n) for n in range(1, 13)]
    assert [r["revision"] for r in revisions_to_prune(ds, old, [])] == [1, 2]
    none_kept = daemonset(revisionHistoryLimit=0)
    assert len(revisions_to_prune(none_kept, old, [])) == 12


def test_updated_number_scheduled_counts_pods_of_the_current_revision():
    ds = daemonset()
    current = daemonset_hash(ds)
    nodes = [node("n1"), node("n2"), node("n3")]
    by_node = {}
    for i, n in enumerate(nodes):
        h = current if i < 2 else "old"
        p = pod(owner=ds, labels={"app": "agent", REVISION_HASH_LABEL: h}, node=n["metadata"]["name"])
        p["spec"]["affinity"] = pin_to_node(None, n["metadata"]["name"])
        by_node[n["metadata"]["name"]] = [p]
    st = calculate_status(ds, nodes, by_node, current, T0, 1)
    assert st["desiredNumberScheduled"] == 3 and st["updatedNumberScheduled"] == 2


def test_the_api_server_validates_revisions_and_keeps_data_immutable():
    ds = daemonset()
    rev = revision_of(ds, 1)
    assert validate("ControllerRevision", rev) == []
    missing = {k: v for k, v in rev.items() if k != "data"}
    assert [c.field for c in validate("ControllerRevision", missing)] == ["data"]
    negative = {**rev, "revision": -1}
    assert [c.field for c in validate("ControllerRevision", negative)] == ["revision"]
    renumbered = {**rev, "revision": 7}
    assert validate_update("ControllerRevision", renumbered, rev) == []
    changed = {**rev, "data": template_patch(with_image(ds, "busybox:9"))}
    assert [c.message for c in validate_update("ControllerRevision", changed, rev)] == [
        'Invalid value: "": field is immutable'
    ]


def test_kubectl_get_shows_the_controller_and_the_revision():
    ds = daemonset()
    rev = revision_of(ds, 3)
    rev["metadata"]["creationTimestamp"] = format_time(T0 - 120)
    table = to_table("controllerrevisions", [rev], now=datetime.fromtimestamp(T0, UTC))
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Controller", "Revision", "Age"]
    assert table["rows"][0]["cells"] == [rev["metadata"]["name"], "daemonset.apps/agent", 3, "2m"]
    orphan = {**rev, "metadata": {**rev["metadata"], "ownerReferences": []}}
    assert to_table("controllerrevisions", [orphan])["rows"][0]["cells"][1] == "<none>"
