"""Tests of orchestrator.patch: JSON merge, JSON patch, strategic merge and server-side apply.

Strategic merge is checked against the real thing too: `kubectl patch --local` runs
apimachinery's strategicpatch on a file without a server, so each case in ORACLE_CASES must
give exactly what kubectl 1.32 gives.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import pytest

from orchestrator.patch import (
    ApplyConflict,
    PatchError,
    field_paths,
    fields_v1_to_paths,
    json_merge_patch,
    json_patch,
    path_string,
    paths_to_fields_v1,
    server_side_apply,
    strategic_merge_patch,
    track_update,
)

# --------------------------------------------------------------------------------------------
# JSON merge patch: the RFC 7386 appendix vectors
# --------------------------------------------------------------------------------------------

RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "expected"), RFC7386)
def test_json_merge_patch_rfc7386(target, patch, expected):
    before = copy.deepcopy(target)
    assert json_merge_patch(target, patch) == expected
    assert target == before, "the input must not be modified"


def test_json_merge_patch_rejects_non_object():
    with pytest.raises(PatchError) as err:
        json_merge_patch({"a": 1}, ["x"])
    assert err.value.code == 400


# --------------------------------------------------------------------------------------------
# JSON patch
# --------------------------------------------------------------------------------------------


def test_json_patch_operations():
    obj = {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1, "list": [1, 2]}}
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/a"},
        {"op": "add", "path": "/spec/list/-", "value": 3},
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "copy", "from": "/spec/replicas", "path": "/spec/copied"},
    ]
    out = json_patch(obj, ops)
    assert out == {
        "metadata": {"labels": {"b": "2"}},
        "spec": {"replicas": 3, "list": [1, 2, 3], "copied": 3},
    }
    assert obj["spec"]["replicas"] == 1


def test_json_patch_failed_test_is_422():
    with pytest.raises(PatchError) as err:
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert err.value.code == 422


def test_json_patch_missing_path_is_422():
    with pytest.raises(PatchError) as err:
        json_patch({"a": 1}, [{"op": "remove", "path": "/nope"}])
    assert err.value.code == 422


@pytest.mark.parametrize("ops", [{"op": "add"}, [1, 2], "x"])
def test_json_patch_malformed_is_400(ops):
    with pytest.raises(PatchError) as err:
        json_patch({"a": 1}, ops)
    assert err.value.code == 400


def test_json_patch_unknown_op_is_rejected():
    with pytest.raises(PatchError):
        json_patch({"a": 1}, [{"op": "frobnicate", "path": "/a"}])


# --------------------------------------------------------------------------------------------
# Strategic merge patch: semantics
# --------------------------------------------------------------------------------------------


def _pod():
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "p",
            "labels": {"app": "web", "tier": "front"},
            "finalizers": ["a.io/x", "a.io/y"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1"}],
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "nginx:1",
                    "args": ["-a", "-b"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "a", "operator": "Exists"}],
            "hostAliases": [{"ip": "10.0.0.1", "hostnames": ["a"]}],
        },
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "Initialized", "status": "True"}]
        },
    }


def smp(patch, obj=None, kind="Pod"):
    return strategic_merge_patch(obj if obj is not None else _pod(), patch, kind)


def names(items):
    return [i["name"] for i in items]


def test_containers_merge_by_name_and_new_ones_come_first():
    out = smp(
        {"spec": {"containers": [{"name": "sidecar", "image": "busybox:2"}, {"name": "new", "image": "x"}]}}
    )
    containers = out["spec"]["containers"]
    assert names(containers) == ["web", "sidecar", "new"]
    assert containers[1]["image"] == "busybox:2"
    assert containers[0]["env"][0] == {"name": "A", "value": "1"}, "untouched container keeps its fields"
    out = smp({"spec": {"containers": [{"name": "new", "image": "x"}]}})
    assert names(out["spec"]["containers"]) == ["new", "web", "sidecar"]


def test_nested_lists_merge_by_their_keys():
    out = smp(
        {
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                        "ports": [{"containerPort": 443, "name": "tls"}],
                        "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                    }
                ]
            }
        }
    )
    web = out["spec"]["containers"][0]
    assert web["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]
    assert web["ports"] == [{"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "tls"}]
    assert web["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True}]


def test_lists_without_strategy_are_replaced():
    out = smp(
        {
            "spec": {
                "tolerations": [{"key": "b", "operator": "Exists"}],
                "containers": [{"name": "web", "args": ["-c"]}],
            }
        }
    )
    assert out["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]
    assert out["spec"]["containers"][0]["args"] == ["-c"]


def test_delete_directive_in_list():
    out = smp({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}})
    assert names(out["spec"]["containers"]) == ["web"]
    out = smp({"spec": {"containers": [{"name": "web", "env": [{"name": "A", "$patch": "delete"}]}]}})
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]


def test_replace_directive_in_list():
    out = smp({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}})
    assert out["spec"]["containers"] == [{"name": "only", "image": "x"}]


def test_replace_and_delete_directives_in_maps():
    out = smp({"metadata": {"labels": {"$patch": "replace", "new": "1"}}})
    assert out["metadata"]["labels"] == {"new": "1"}
    # Inside a list, `$patch: replace` is about the list: the marked element itself is dropped.
    out = smp({"spec": {"containers": [{"name": "web", "$patch": "replace", "image": "only-this"}]}})
    assert out["spec"]["containers"] == []
    out = smp({"metadata": {"labels": {"$patch": "delete"}}})
    assert out["metadata"]["labels"] == {}, "like Go, a deleted map field is left empty"
    assert "annotations" not in smp({"metadata": {"annotations": {"$patch": "delete"}}})["metadata"]


def test_null_deletes_a_field():
    out = smp({"metadata": {"labels": {"tier": None}}, "spec": {"hostAliases": None}})
    assert out["metadata"]["labels"] == {"app": "web"}
    assert "hostAliases" not in out["spec"]


def test_primitive_merge_list_is_a_set_and_delete_from_primitive_list():
    out = smp({"metadata": {"finalizers": ["a.io/z", "a.io/x"]}})
    assert out["metadata"]["finalizers"] == ["a.io/z", "a.io/x", "a.io/y"]
    out = smp({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/x"]}})
    assert out["metadata"]["finalizers"] == ["a.io/y"]


def test_set_element_order():
    out = smp(
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "web", "image": "nginx:2"}],
            }
        }
    )
    assert names(out["spec"]["containers"]) == ["sidecar", "web"]
    assert out["spec"]["containers"][1]["image"] == "nginx:2"
    out = smp({"metadata": {"$setElementOrder/finalizers": ["a.io/y", "a.io/x"]}})
    assert out["metadata"]["finalizers"] == ["a.io/y", "a.io/x"]


def test_set_element_order_must_agree_with_the_patch_list():
    with pytest.raises(PatchError) as err:
        smp(
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "web"}],
                    "containers": [{"name": "sidecar", "image": "x"}],
                }
            }
        )
    assert err.value.code == 400


def test_retain_keys_clears_other_fields():
    deploy = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    out = smp({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}, deploy, "Deployment")
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    with pytest.raises(PatchError):
        smp({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}, deploy, "Deployment")


def test_other_keys():
    out = smp({"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}})
    assert out["metadata"]["ownerReferences"][0]["name"] == "rs"
    assert out["metadata"]["ownerReferences"][0]["controller"] is True
    out = smp({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "Initialized", "status": "True"},
    ]
    out = smp({"spec": {"hostAliases": [{"ip": "10.0.0.1", "hostnames": ["b"]}]}})
    assert out["spec"]["hostAliases"] == [{"ip": "10.0.0.1", "hostnames": ["b"]}]
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    out = smp({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}, svc, "Service")
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


def test_new_field_from_patch_drops_directives_and_nulls():
    out = smp({"spec": {"initContainers": [{"name": "i", "image": "x", "env": None}]}})
    assert out["spec"]["initContainers"] == [{"name": "i", "image": "x"}]


def test_unknown_kind_uses_json_merge():
    obj = {"spec": {"items": [1, 2], "m": {"a": 1}}}
    assert strategic_merge_patch(obj, {"spec": {"items": [3], "m": {"b": 2}}}, "Widget") == {
        "spec": {"items": [3], "m": {"a": 1, "b": 2}}
    }


@pytest.mark.parametrize(
    "patch",
    [
        {"spec": {"containers": [{"image": "no-name"}]}},
        {"spec": {"containers": [{"$patch": "delete"}]}},
        {"metadata": {"labels": {"$patch": "bogus"}}},
        {"spec": {"containers": [{"$patch": "merge", "name": "web"}]}},
        {"$bogus": 1},
    ],
)
def test_bad_strategic_patches_are_400(patch):
    with pytest.raises(PatchError) as err:
        smp(patch)
    assert err.value.code == 400


def test_input_not_modified():
    pod = _pod()
    before = copy.deepcopy(pod)
    patch = {"spec": {"containers": [{"name": "web", "$patch": "delete"}]}}
    patch_before = copy.deepcopy(patch)
    smp(patch, pod)
    assert pod == before and patch == patch_before


# --------------------------------------------------------------------------------------------
# Strategic merge patch: kubectl as the oracle
# --------------------------------------------------------------------------------------------

_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "d"},
    "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {
                "containers": [
                    {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
                    {"name": "b", "image": "b:1"},
                ],
                "volumes": [{"name": "v", "emptyDir": {}}, {"name": "w", "emptyDir": {}}],
            },
        },
    },
}
_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "s"},
    "spec": {
        "selector": {"app": "d"},
        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}],
    },
}

ORACLE_CASES = [
    ("pod", {"spec": {"containers": [{"name": "new", "image": "n"}]}}),
    ("pod", {"spec": {"containers": [{"name": "sidecar", "image": "s:2"}, {"name": "x", "image": "x"}]}}),
    ("pod", {"spec": {"containers": [{"name": "web", "$patch": "delete"}]}}),
    ("pod", {"spec": {"containers": [{"name": "solo", "image": "s"}, {"$patch": "replace"}]}}),
    (
        "pod",
        {
            "spec": {
                "containers": [
                    {"name": "web", "env": [{"name": "C", "value": "3"}, {"name": "A", "value": "9"}]}
                ]
            }
        },
    ),
    (
        "pod",
        {
            "spec": {
                "containers": [
                    {"name": "web", "ports": [{"containerPort": 8080}, {"containerPort": 80, "name": "h"}]}
                ]
            }
        },
    ),
    (
        "pod",
        {
            "spec": {
                "containers": [{"name": "web", "volumeMounts": [{"name": "data", "mountPath": "/other"}]}]
            }
        },
    ),
    ("pod", {"spec": {"tolerations": [{"key": "z", "operator": "Exists"}]}}),
    ("pod", {"spec": {"containers": [{"name": "web", "$patch": "replace", "image": "z"}]}}),
    ("pod", {"metadata": {"labels": {"$patch": "delete"}}}),
    ("pod", {"metadata": {"finalizers": ["a.io/w"], "$deleteFromPrimitiveList/finalizers": ["a.io/y"]}}),
    ("pod", {"metadata": {"$setElementOrder/finalizers": ["a.io/y", "a.io/x"]}}),
    (
        "pod",
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}],
                "containers": [{"name": "web", "image": "nginx:9"}],
            }
        },
    ),
    ("pod", {"metadata": {"labels": {"tier": None, "new": "1"}}}),
    ("pod", {"metadata": {"labels": {"$patch": "replace", "only": "1"}}}),
    ("pod", {"metadata": {"ownerReferences": [{"uid": "u2", "apiVersion": "v1", "kind": "X", "name": "x"}]}}),
    (
        "pod",
        {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"},
                ]
            }
        },
    ),
    ("pod", {"spec": {"hostAliases": [{"ip": "10.0.0.2", "hostnames": ["b"]}]}}),
    ("pod", {"spec": {"containers": [{"name": "web", "args": ["-z"]}]}}),
    ("deployment", {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    (
        "deployment",
        {
            "spec": {
                "template": {
                    "spec": {
                        "volumes": [
                            {"name": "v", "hostPath": {"path": "/x"}, "$retainKeys": ["hostPath", "name"]}
                        ]
                    }
                }
            }
        },
    ),
    (
        "deployment",
        {
            "spec": {
                "template": {
                    "spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]}
                }
            }
        },
    ),
    (
        "service",
        {
            "spec": {
                "ports": [{"port": 443, "targetPort": 8443, "name": "https"}, {"port": 8080, "name": "alt"}]
            }
        },
    ),
]


@pytest.fixture(scope="module")
def kubectl():
    path = shutil.which("kubectl")
    assert path, "kubectl (1.32) must be installed: it is the reference for strategic merge patch"
    return path


@pytest.mark.parametrize(("which", "patch"), ORACLE_CASES)
def test_strategic_merge_matches_kubectl(kubectl, tmp_path, which, patch):
    obj = {"pod": _pod(), "deployment": copy.deepcopy(_DEPLOYMENT), "service": copy.deepcopy(_SERVICE)}[which]
    source = tmp_path / "obj.json"
    source.write_text(json.dumps(obj))
    proc = subprocess.run(
        [
            kubectl,
            "patch",
            "--local",
            "-f",
            str(source),
            "--type",
            "strategic",
            "-p",
            json.dumps(patch),
            "-o",
            "json",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"KUBECONFIG": "/dev/null", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert strategic_merge_patch(obj, patch, obj["kind"]) == json.loads(proc.stdout)


# --------------------------------------------------------------------------------------------
# Field paths and fieldsV1
# --------------------------------------------------------------------------------------------


def _deployment(replicas=2, image="nginx:1", labels=None, extra_env=None):
    env = [{"name": "A", "value": "1"}] + (extra_env or [])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": labels if labels is not None else {"app": "web"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "web", "image": image, "ports": [{"containerPort": 80}], "env": env}
                    ]
                },
            },
        },
    }


def test_fields_v1_format():
    fields = paths_to_fields_v1(field_paths(_deployment(), "Deployment"))
    assert "f:name" not in fields["f:metadata"], "server-owned metadata is not tracked"
    assert fields["f:metadata"] == {"f:labels": {"f:app": {}}}
    assert fields["f:spec"]["f:selector"] == {}, "label selectors are atomic"
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert container["."] == {}
    assert container["f:ports"]['k:{"containerPort":80,"protocol":"TCP"}'] == {".": {}, "f:containerPort": {}}
    assert container["f:env"]['k:{"name":"A"}'] == {".": {}, "f:name": {}, "f:value": {}}
    pod_fields = paths_to_fields_v1(field_paths({"metadata": {"finalizers": ["a", "b"]}}, "Pod"))
    assert pod_fields == {"f:metadata": {"f:finalizers": {'v:"a"': {}, 'v:"b"': {}}}}


def test_fields_v1_round_trip():
    paths = field_paths(_deployment(), "Deployment")
    assert fields_v1_to_paths(paths_to_fields_v1(paths)) == paths


def test_path_string():
    path = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"web"}', "f:image")
    assert path_string(path) == '.spec.template.spec.containers[name="web"].image'
    assert path_string(("f:metadata", "f:finalizers", 'v:"a"')) == '.metadata.finalizers[="a"]'


# --------------------------------------------------------------------------------------------
# Server-side apply
# --------------------------------------------------------------------------------------------


def _managers(obj):
    return {(e["manager"], e["operation"]) for e in obj["metadata"]["managedFields"]}


def _owned(obj, manager):
    for e in obj["metadata"]["managedFields"]:
        if e["manager"] == manager:
            return fields_v1_to_paths(e["fieldsV1"])
    return set()


def test_apply_creates_and_records_ownership():
    obj, entry = server_side_apply(None, _deployment(), "kubectl", False, time="2024-01-01T00:00:00Z")
    assert obj["spec"]["replicas"] == 2
    assert entry["manager"] == "kubectl" and entry["operation"] == "Apply"
    assert entry["apiVersion"] == "apps/v1" and entry["time"] == "2024-01-01T00:00:00Z"
    assert entry["fieldsType"] == "FieldsV1"
    assert obj["metadata"]["managedFields"] == [entry]
    assert ("f:spec", "f:replicas") in _owned(obj, "kubectl")


def test_reapply_changes_fields_and_removes_dropped_ones():
    obj, _ = server_side_apply(
        None, _deployment(extra_env=[{"name": "B", "value": "2"}]), "kubectl", False, "t1"
    )
    obj["status"] = {"replicas": 2}  # written by a controller through /status
    obj, _ = server_side_apply(obj, _deployment(image="nginx:2", labels={}), "kubectl", False, "t2")
    web = obj["spec"]["template"]["spec"]["containers"][0]
    assert web["image"] == "nginx:2"
    assert web["env"] == [{"name": "A", "value": "1"}], "env B was applied before and is gone now"
    assert "labels" not in obj["metadata"] or obj["metadata"]["labels"] == {}
    assert obj["status"] == {"replicas": 2}, "fields nobody applied are never dropped"


def test_other_managers_fields_are_kept():
    obj, _ = server_side_apply(None, _deployment(), "kubectl", False, "t1")
    edited = copy.deepcopy(obj)
    edited["metadata"]["annotations"] = {"note": "by hand"}
    obj = track_update(obj, edited, "kubectl-edit", "t2")
    assert ("f:metadata", "f:annotations", "f:note") in _owned(obj, "kubectl-edit")
    obj, _ = server_side_apply(obj, _deployment(), "kubectl", False, "t3")
    assert obj["metadata"]["annotations"] == {"note": "by hand"}
    assert _managers(obj) == {("kubectl", "Apply"), ("kubectl-edit", "Update")}


def test_conflict_with_another_manager_and_force():
    obj, _ = server_side_apply(None, _deployment(replicas=2), "kubectl", False, "t1")
    scaled = copy.deepcopy(obj)
    scaled["spec"]["replicas"] = 5
    obj = track_update(obj, scaled, "kube-controller-manager", "2024-05-01T10:00:00Z")
    assert ("f:spec", "f:replicas") not in _owned(obj, "kubectl"), "an update takes ownership"
    with pytest.raises(ApplyConflict) as err:
        server_side_apply(obj, _deployment(replicas=3), "kubectl", False, "t3")
    conflict = err.value
    assert conflict.conflicts == [("kube-controller-manager", ".spec.replicas")]
    assert conflict.message == (
        'Apply failed with 1 conflict: conflict with "kube-controller-manager" using apps/v1 at '
        "2024-05-01T10:00:00Z: .spec.replicas"
    )
    status = conflict.status()
    assert status["code"] == 409 and status["reason"] == "Conflict"
    assert status["details"]["causes"][0]["reason"] == "FieldManagerConflict"
    assert status["details"]["causes"][0]["field"] == ".spec.replicas"

    forced, _ = server_side_apply(obj, _deployment(replicas=3), "kubectl", True, "t4")
    assert forced["spec"]["replicas"] == 3
    assert ("f:spec", "f:replicas") in _owned(forced, "kubectl")
    assert ("kube-controller-manager", "Update") not in _managers(forced), "it owned nothing else"


def test_same_value_is_shared_not_a_conflict():
    obj, _ = server_side_apply(None, _deployment(replicas=2), "alice", False, "t1")
    obj, _ = server_side_apply(obj, _deployment(replicas=2), "bob", False, "t2")
    assert ("f:spec", "f:replicas") in _owned(obj, "alice")
    assert ("f:spec", "f:replicas") in _owned(obj, "bob")
    # alice stops applying the env entry; bob still owns it, so it stays.
    cfg = _deployment(replicas=2)
    cfg["spec"]["template"]["spec"]["containers"][0]["env"] = []
    obj, _ = server_side_apply(obj, cfg, "alice", False, "t3")
    assert obj["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]


def test_multiple_conflicts_message():
    obj, _ = server_side_apply(None, _deployment(replicas=2, image="a"), "alice", False, "t1")
    with pytest.raises(ApplyConflict) as err:
        server_side_apply(obj, _deployment(replicas=3, image="b"), "bob", False, "t2")
    assert len(err.value.conflicts) == 2
    assert err.value.message.startswith('Apply failed with 2 conflicts: conflicts with "alice":\n- ')
    assert '- .spec.template.spec.containers[name="web"].image' in err.value.message


def test_apply_removes_list_items_it_stopped_applying():
    two = _deployment()
    two["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "busybox"})
    obj, _ = server_side_apply(None, two, "kubectl", False, "t1")
    obj, _ = server_side_apply(obj, _deployment(), "kubectl", False, "t2")
    assert names(obj["spec"]["template"]["spec"]["containers"]) == ["web"]


def test_atomic_selector_is_replaced_whole():
    obj, _ = server_side_apply(None, _deployment(), "kubectl", False, "t1")
    cfg = _deployment()
    cfg["spec"]["selector"] = {"matchLabels": {"tier": "x"}}
    obj, _ = server_side_apply(obj, cfg, "kubectl", False, "t2")
    assert obj["spec"]["selector"] == {"matchLabels": {"tier": "x"}}


def test_track_update_create_and_removal():
    obj = track_update(None, _deployment(), "kubectl-create", "t1")
    assert _managers(obj) == {("kubectl-create", "Update")}
    smaller = copy.deepcopy(obj)
    del smaller["metadata"]["labels"]
    obj = track_update(obj, smaller, "someone", "t2")
    assert not any(p[:2] == ("f:metadata", "f:labels") for p in _owned(obj, "kubectl-create"))
    assert ("someone", "Update") not in _managers(obj), "a pure removal owns nothing"
