"""The namespace deleter's decisions: the conditions kube reports while content remains, and
condition merging that writes only when something changed."""

from __future__ import annotations

from orchestrator.controllers.namespace import Remaining, content_conditions, grace_estimate, merge_conditions
from orchestrator.controllers.testing import T0, pod
from orchestrator.controllers.util import get_condition


def test_namespace_conditions_report_what_remains():
    rem = Remaining(counts={"pods": 2, "configmaps": 1}, finalizers={"example.com/keep": 1}, estimate=30)
    conds = content_conditions(rem, T0)
    remaining = get_condition(conds, "NamespaceContentRemaining")
    assert remaining["status"] == "True" and remaining["reason"] == "SomeResourcesRemain"
    assert remaining["message"] == (
        "Some resources are remaining: configmaps has 1 resource instances, pods has 2 resource instances"
    )
    fin = get_condition(conds, "NamespaceFinalizersRemaining")
    assert (
        fin["message"]
        == "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances"
    )
    done = content_conditions(Remaining(), T0 + 10)
    merged, changed = merge_conditions(conds, done)
    assert changed
    assert get_condition(merged, "NamespaceContentRemaining")["status"] == "False"
    # Same content again: nothing to write, transition times kept.
    again, changed = merge_conditions(merged, content_conditions(Remaining(), T0 + 20))
    assert not changed and again == merged


def test_estimate_follows_the_grace_period_of_what_remains():
    p = pod(deleting=True)
    p["metadata"]["deletionGracePeriodSeconds"] = 30
    assert grace_estimate(p, T0) == 30
    assert grace_estimate({"metadata": {}, "spec": {}}, T0) == 1
    assert Remaining().empty and not Remaining(counts={"pods": 1}).empty
    assert not Remaining(discovery_failure="boom").empty
