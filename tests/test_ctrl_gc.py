"""The garbage collector's decisions: solid, dangling and waiting owners; background, foreground
and orphan propagation; blocking dependents; and the patches it sends."""

from __future__ import annotations

from orchestrator.controllers.garbagecollector import (
    Action,
    blocking_dependents,
    classify,
    decide,
    remove_refs_patch,
    unblock_patch,
)
from orchestrator.controllers.testing import deployment, owner_ref, pod, replicaset


def foreground_deleting(obj):
    obj["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    obj["metadata"]["finalizers"] = ["foregroundDeletion"]
    return obj


def uid(obj):
    return obj["metadata"]["uid"]


def test_owner_present_keeps_the_dependent():
    rs = replicaset()
    p = pod(owner=rs)
    c = classify(p["metadata"]["ownerReferences"], {uid(rs): rs})
    assert decide(p, c, []) == Action("none")


def test_owner_gone_deletes_the_dependent_in_the_background():
    rs = replicaset()
    p = pod(owner=rs)
    c = classify(p["metadata"]["ownerReferences"], {uid(rs): None})
    assert c.dangling and not c.solid
    action = decide(p, c, [])
    assert action.kind == "delete" and action.policy == "Background"


def test_dependent_keeps_its_own_deletion_finalizers_as_policy():
    d = deployment()
    rs = replicaset(owner=d)
    rs["metadata"]["finalizers"] = ["orphan"]
    c = classify(rs["metadata"]["ownerReferences"], {uid(d): None})
    assert decide(rs, c, []).policy == "Orphan"
    rs["metadata"]["finalizers"] = ["foregroundDeletion"]
    assert decide(rs, c, []).policy == "Foreground"


def test_one_gone_owner_among_solid_ones_is_only_unlinked():
    a, b = replicaset("a"), replicaset("b")
    p = pod(owner=a)
    p["metadata"]["ownerReferences"].append(owner_ref(b, controller=False))
    c = classify(p["metadata"]["ownerReferences"], {uid(a): a, uid(b): None})
    action = decide(p, c, [])
    assert action.kind == "remove_refs" and [r["uid"] for r in action.refs] == [uid(b)]


def test_owner_deleting_in_foreground_deletes_dependents_with_dependents_in_foreground():
    d = foreground_deleting(deployment())
    rs = replicaset(owner=d)
    c = classify(rs["metadata"]["ownerReferences"], {uid(d): d})
    assert c.waiting and not c.solid
    children = [pod(owner=rs)]
    action = decide(rs, c, children)
    assert action.kind == "delete" and action.policy == "Foreground" and action.unblock == []
    # Without dependents of its own it just goes.
    assert decide(rs, c, []).policy == "Background"


def test_cycle_with_a_waiting_dependent_unblocks_the_owner():
    d = foreground_deleting(deployment())
    rs = replicaset(owner=d)
    child = foreground_deleting(pod(owner=rs))
    c = classify(rs["metadata"]["ownerReferences"], {uid(d): d})
    action = decide(rs, c, [child])
    assert action.kind == "delete" and [r["uid"] for r in action.unblock] == [uid(d)]


def test_blocking_dependents_are_those_with_block_owner_deletion():
    rs = replicaset()
    blocking = pod(owner=rs)
    loose = pod(owner=rs)
    loose["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] = False
    other = pod()
    assert blocking_dependents(rs, [blocking, loose, other]) == [blocking]


def test_patches_name_the_object_uid_as_precondition():
    rs = replicaset()
    p = pod(owner=rs)
    patch = remove_refs_patch(p, [uid(rs)])
    assert patch == {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid(rs)}], "uid": uid(p)}}
    unblock = unblock_patch(p, p["metadata"]["ownerReferences"])
    assert unblock["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is False
    assert unblock["metadata"]["ownerReferences"][0]["uid"] == uid(rs)
