"""kubectl 1.32 against grove's API server: the everyday commands, and errors worded as a real
cluster words them. One store cluster + API server for the module (tests/apiserver_fixture.py)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading

import pytest
import yaml

from tests import waiting
from tests.apiserver_fixture import KUBECTL, ROOT, apiserver  # noqa: F401

EXAMPLES = os.path.join(ROOT, "examples")
pytestmark = pytest.mark.slow


def wait_until(check, timeout: float = 10.0, what: str = "condition"):
    return waiting.wait_for(check, what, timeout)


def get_json(server, *args: str) -> dict:
    return json.loads(server.kubectl("get", *args, "-o", "json").stdout)


def test_version_and_api_resources(apiserver):  # noqa: F811
    version = json.loads(apiserver.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.32.0-grove"
    assert version["serverVersion"]["major"] == "1" and version["serverVersion"]["minor"] == "32"
    out = apiserver.kubectl("api-resources").stdout
    rows: dict[str, list[str]] = {}
    for line in out.splitlines()[1:]:  # the first row of a name: core and apps come before metrics.k8s.io
        rows.setdefault(line.split()[0], line.split())
    for name, short in [
        ("pods", "po"), ("services", "svc"), ("deployments", "deploy"), ("replicasets", "rs"),
        ("daemonsets", "ds"), ("namespaces", "ns"), ("nodes", "no"), ("configmaps", "cm"),
        ("endpoints", "ep"), ("events", "ev"),
    ]:  # fmt: skip
        assert short in rows[name], rows.get(name)
    assert "leases" in rows and "coordination.k8s.io/v1" in rows["leases"]
    explain = apiserver.kubectl("explain", "deployment.spec").stdout
    assert "replicas" in explain and "selector" in explain


def test_apply_examples_then_only_the_change(apiserver):  # noqa: F811
    out = apiserver.kubectl("apply", "-f", EXAMPLES).stdout
    for line in (
        "deployment.apps/web created",
        "service/web created",
        "configmap/web-content created",
        "secret/web-credentials created",
        "daemonset.apps/node-reporter created",
    ):
        assert line in out, out
    again = apiserver.kubectl("apply", "-f", os.path.join(EXAMPLES, "web-deployment.yaml")).stdout
    assert "deployment.apps/web unchanged" in again
    before = get_json(apiserver, "deployment", "web")
    # Someone else adds an annotation; applying a changed file must keep it and change only replicas.
    apiserver.kubectl("annotate", "deployment", "web", "team=storefront")
    with open(os.path.join(EXAMPLES, "web-deployment.yaml")) as f:
        manifest = yaml.safe_load(f)
    manifest["spec"]["replicas"] = 5
    out = apiserver.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest)).stdout
    assert "deployment.apps/web configured" in out
    after = get_json(apiserver, "deployment", "web")
    assert after["spec"]["replicas"] == 5
    assert after["metadata"]["annotations"]["team"] == "storefront"
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    assert {k: v for k, v in after["spec"].items() if k != "replicas"} == {
        k: v for k, v in before["spec"].items() if k != "replicas"
    }
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    svc = get_json(apiserver, "service", "web")
    assert (
        svc["spec"]["clusterIP"].startswith("10.") and 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
    )
    secret = get_json(apiserver, "secret", "web-credentials")
    assert "stringData" not in secret and secret["data"]["username"] == "YWRtaW4="  # base64("admin")


def test_apply_server_side(apiserver):  # noqa: F811
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}}
    out = apiserver.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(cm)).stdout
    assert "configmap/ssa serverside-applied" in out
    apiserver.kubectl("patch", "configmap", "ssa", "--type", "merge", "-p", '{"data":{"other":"x"}}')
    cm["data"] = {"a": "1"}  # stop managing b
    apiserver.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(cm))
    data = get_json(apiserver, "configmap", "ssa")["data"]
    assert data == {"a": "1", "other": "x"}  # b removed (applier owned it), other kept (patch owns it)
    cm["data"] = {"a": "1", "other": "mine"}
    conflict = apiserver.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(cm), check=False)
    assert conflict.returncode != 0 and "conflict" in conflict.stderr.lower(), conflict.stderr
    apiserver.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(cm))
    assert get_json(apiserver, "configmap", "ssa")["data"]["other"] == "mine"


def test_get_output_formats_and_selectors(apiserver):  # noqa: F811
    apiserver.kubectl("create", "namespace", "getter")
    for i in range(3):
        apiserver.kubectl("create", "configmap", f"cm{i}", "-n", "getter", f"--from-literal=k={i}")
        apiserver.kubectl(
            "label", "configmap", f"cm{i}", "-n", "getter", f"tier={'front' if i < 2 else 'back'}"
        )
    table = apiserver.kubectl("get", "configmaps", "-n", "getter").stdout.splitlines()
    assert table[0].split() == ["NAME", "DATA", "AGE"] and len(table) == 4
    names = apiserver.kubectl("get", "cm", "-n", "getter", "-l", "tier=front", "-o", "name").stdout.split()
    assert names == ["configmap/cm0", "configmap/cm1"]
    names = apiserver.kubectl(
        "get", "cm", "-n", "getter", "-l", "tier in (back)", "-o", "name"
    ).stdout.split()
    assert names == ["configmap/cm2"]
    picked = apiserver.kubectl(
        "get",
        "cm",
        "-n",
        "getter",
        "--field-selector",
        "metadata.name=cm1",
        "-o",
        "jsonpath={.items[*].data.k}",
    ).stdout
    assert picked == "1"
    doc = yaml.safe_load(apiserver.kubectl("get", "cm", "cm2", "-n", "getter", "-o", "yaml").stdout)
    assert doc["kind"] == "ConfigMap" and doc["data"] == {"k": "2"}
    everywhere = apiserver.kubectl("get", "namespaces", "-A", "-o", "name").stdout.split()
    assert {
        "namespace/default",
        "namespace/kube-system",
        "namespace/kube-node-lease",
        "namespace/getter",
    } <= set(everywhere)
    all_cms = apiserver.kubectl("get", "cm", "-A").stdout.splitlines()
    assert all_cms[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert any(line.startswith("getter") for line in all_cms)
    # -o wide on pods adds IP and NODE
    apiserver.kubectl("run", "wide", "-n", "getter", "--image=grove/busybox:1.35", "--", "sleep", "3600")
    wide = apiserver.kubectl("get", "pods", "-n", "getter", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert wide[1].split()[:3] == ["wide", "0/1", "Pending"]


def test_get_watch_sees_a_later_change(apiserver):  # noqa: F811
    apiserver.kubectl("create", "configmap", "watched", "--from-literal=v=1")
    proc = subprocess.Popen(
        [KUBECTL, "--kubeconfig", apiserver.kubeconfig, "get", "configmap", "watched", "-w",
         "-o", "jsonpath={.data.v}{\"\\n\"}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=apiserver.kubectl_env(),
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=15) == "1"
        apiserver.kubectl("patch", "configmap", "watched", "--type", "merge", "-p", '{"data":{"v":"2"}}')
        assert lines.get(timeout=15) == "2"
    finally:
        proc.kill()
        proc.wait()


def test_describe(apiserver):  # noqa: F811
    apiserver.kubectl("create", "deployment", "described", "--image=grove/busybox:1.35", "--replicas=2")
    out = apiserver.kubectl("describe", "deployment", "described").stdout
    assert "Name:" in out and "described" in out
    assert "Replicas:               2 desired" in out
    assert "StrategyType:           RollingUpdate" in out
    assert "grove/busybox:1.35" in out


def test_create_commands(apiserver):  # noqa: F811
    # kubectl's typed clients send these as protobuf
    assert "namespace/made created" in apiserver.kubectl("create", "namespace", "made").stdout
    apiserver.kubectl(
        "create", "deployment", "d1", "-n", "made", "--image=grove/busybox:1.35", "--replicas=3"
    )
    apiserver.kubectl("create", "secret", "generic", "s1", "-n", "made", "--from-literal=user=admin")
    apiserver.kubectl("create", "configmap", "c1", "-n", "made", "--from-literal=x=y")
    ns = get_json(apiserver, "namespace", "made")
    assert (
        ns["status"]["phase"] == "Active"
        and ns["metadata"]["labels"]["kubernetes.io/metadata.name"] == "made"
    )
    deployment = get_json(apiserver, "deployment", "d1", "-n", "made")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "d1"}}
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "grove/busybox:1.35"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert deployment["metadata"]["generation"] == 1
    assert get_json(apiserver, "secret", "s1", "-n", "made")["data"] == {"user": "YWRtaW4="}
    assert get_json(apiserver, "configmap", "c1", "-n", "made")["data"] == {"x": "y"}


def test_label_annotate_patch_scale_edit(apiserver, tmp_path):  # noqa: F811
    apiserver.kubectl("create", "namespace", "edits")
    apiserver.kubectl("create", "configmap", "c", "-n", "edits", "--from-literal=x=before")
    apiserver.kubectl("label", "configmap", "c", "-n", "edits", "tier=backend")
    apiserver.kubectl("annotate", "configmap", "c", "-n", "edits", "note=hello")
    apiserver.kubectl("patch", "configmap", "c", "-n", "edits", "--type", "merge", "-p", '{"data":{"z":"1"}}')
    apiserver.kubectl(
        "patch",
        "configmap",
        "c",
        "-n",
        "edits",
        "--type",
        "json",
        "-p",
        '[{"op":"add","path":"/data/w","value":"2"}]',
    )
    cm = get_json(apiserver, "configmap", "c", "-n", "edits")
    assert cm["data"] == {"x": "before", "z": "1", "w": "2"}
    assert cm["metadata"]["labels"] == {"tier": "backend"} and cm["metadata"]["annotations"] == {
        "note": "hello"
    }
    apiserver.kubectl("create", "deployment", "app", "-n", "edits", "--image=grove/busybox:1.35")
    apiserver.kubectl(
        "patch", "deployment", "app", "-n", "edits", "--type", "strategic",
        "-p", '{"spec":{"template":{"spec":{"containers":[{"name":"busybox","image":"grove/busybox:1.36"}]}}}}',
    )  # fmt: skip
    deployment = get_json(apiserver, "deployment", "app", "-n", "edits")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["grove/busybox:1.36"]  # merged by name, not appended
    assert deployment["metadata"]["generation"] == 2
    assert (
        "deployment.apps/app scaled"
        in apiserver.kubectl("scale", "deployment", "app", "-n", "edits", "--replicas=4").stdout
    )
    scaled = get_json(apiserver, "deployment", "app", "-n", "edits")
    assert scaled["spec"]["replicas"] == 4 and scaled["metadata"]["generation"] == 3
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^  x: before$/  x: edited/' \"$1\"\n")
    editor.chmod(0o755)
    out = apiserver.kubectl("edit", "configmap", "c", "-n", "edits", env={"EDITOR": str(editor)}).stdout
    assert "configmap/c edited" in out
    assert get_json(apiserver, "configmap", "c", "-n", "edits")["data"]["x"] == "edited"


def test_delete_variants(apiserver):  # noqa: F811
    apiserver.kubectl("create", "namespace", "gone")
    for i in range(4):
        apiserver.kubectl("create", "configmap", f"c{i}", "-n", "gone")
    apiserver.kubectl("label", "configmap", "c1", "c2", "-n", "gone", "doomed=yes")
    assert 'configmap "c0" deleted' in apiserver.kubectl("delete", "configmap", "c0", "-n", "gone").stdout
    out = apiserver.kubectl("delete", "configmap", "-l", "doomed=yes", "-n", "gone").stdout
    assert 'configmap "c1" deleted' in out and 'configmap "c2" deleted' in out
    assert apiserver.kubectl("get", "cm", "-n", "gone", "-o", "name").stdout.split() == ["configmap/c3"]
    assert 'configmap "c3" deleted' in apiserver.kubectl("delete", "configmap", "--all", "-n", "gone").stdout
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "from-file", "namespace": "gone"},
    }
    apiserver.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    out = apiserver.kubectl("delete", "-f", "-", input=json.dumps(manifest)).stdout
    assert 'configmap "from-file" deleted' in out
    # A pod on a node waits for its node agent; --grace-period=0 --force removes it at once.
    apiserver.kubectl("run", "bound", "-n", "gone", "--image=grove/busybox:1.35")
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "bound"},
        "target": {"kind": "Node", "name": "n1"},
    }
    apiserver.kubectl(
        "create", "--raw", "/api/v1/namespaces/gone/pods/bound/binding", "-f", "-", input=json.dumps(binding)
    )
    out = apiserver.kubectl("delete", "pod", "bound", "-n", "gone", "--grace-period=0", "--force")
    assert 'pod "bound" force deleted' in out.stdout
    assert apiserver.kubectl("get", "pods", "-n", "gone", "-o", "name").stdout.strip() == ""


def test_errors_are_shown_like_a_real_cluster(apiserver):  # noqa: F811
    mismatch = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
        "spec": {
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "y"}},
                         "spec": {"containers": [{"name": "c", "image": "grove/busybox:1.35"}]}},
        },
    }  # fmt: skip
    err = apiserver.kubectl("apply", "-f", "-", input=json.dumps(mismatch), check=False).stderr
    assert (
        'The Deployment "bad" is invalid: spec.template.metadata.labels: Invalid value: '
        'map[string]string{"app":"y"}: `selector` does not match template `labels`'
    ) in err
    unknown = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "datta": {"a": "b"}}
    err = apiserver.kubectl("apply", "-f", "-", input=json.dumps(unknown), check=False).stderr
    assert (
        'Error from server (BadRequest): error when creating "STDIN": ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "datta"'
        in err
    )
    typed = dict(mismatch, metadata={"name": "typed"})
    typed["spec"] = dict(mismatch["spec"], replicas="three")
    err = apiserver.kubectl("apply", "-f", "-", input=json.dumps(typed), check=False).stderr
    assert (
        "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32" in err
    )
    bad_name = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}
    err = apiserver.kubectl("apply", "-f", "-", input=json.dumps(bad_name), check=False).stderr
    assert (
        'The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'
        in err
    )
    elsewhere = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "nowhere"}}
    err = apiserver.kubectl("apply", "-f", "-", input=json.dumps(elsewhere), check=False).stderr
    assert 'Error from server (NotFound): error when creating "STDIN": namespaces "nowhere" not found' in err
    err = apiserver.kubectl("get", "deployment", "missing", check=False).stderr
    assert 'Error from server (NotFound): deployments.apps "missing" not found' in err
    dup = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup"}}
    apiserver.kubectl("create", "-f", "-", input=json.dumps(dup))
    err = apiserver.kubectl("create", "-f", "-", input=json.dumps(dup), check=False).stderr
    assert (
        'Error from server (AlreadyExists): error when creating "STDIN": configmaps "dup" already exists'
        in err
    )
    err = apiserver.kubectl("get", "pods", "--field-selector", "spec.color=red", check=False).stderr
    assert "field label not supported: spec.color" in err
