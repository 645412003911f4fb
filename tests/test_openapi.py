"""OpenAPI documents and field validation: unit checks, then kubectl 1.32 and the kubernetes client.

The second half serves discovery, OpenAPI and canned objects from the modules under test on a
tiny aiohttp app (free loopback port, own thread) and runs the real kubectl against it: if
kubectl can explain a field, sends fieldValidation=Strict, rejects an unknown field of a List
on the client side, and prints a Table, then it consumed what grove serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from orchestrator import openapi, resources, tables
from orchestrator.resources import DEFAULT_REGISTRY, GroupVersionKind

KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
    },
}


def _with_bogus_field(obj: dict[str, Any]) -> dict[str, Any]:
    bad = json.loads(json.dumps(obj))
    bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    return bad


# ---------------------------------------------------------------------------------------------
# Documents


def test_definitions_come_back_as_openapi_with_kubernetes_extensions() -> None:
    defs = openapi.definitions()
    pod_spec = defs["io.k8s.api.core.v1.PodSpec"]
    containers = pod_spec["properties"]["containers"]
    assert containers["type"] == "array"
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"
    assert containers["x-kubernetes-list-map-keys"] == ["name"]
    # JSON-schema spellings are undone: no nullable type lists, no $defs, no pinned kinds.
    text = json.dumps(defs)
    assert '"null"' not in text
    assert "#/$defs/" not in text
    deployment = defs["io.k8s.api.apps.v1.Deployment"]
    assert "enum" not in deployment["properties"]["kind"]
    assert deployment["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}
    ]
    assert defs[openapi.INT_OR_STRING] == {"type": "string", "format": "int-or-string"}


def test_v3_index_lists_each_group_version_with_the_hash_of_its_bytes() -> None:
    index = openapi.openapi_v3_index()
    assert set(index["paths"]) == {
        "api/v1",
        "apis/apps/v1",
        "apis/autoscaling/v1",
        "apis/autoscaling/v2",
        "apis/batch/v1",
        "apis/coordination.k8s.io/v1",
        "apis/discovery.k8s.io/v1",
    }
    for path, entry in index["paths"].items():
        url, _, digest = entry["serverRelativeURL"].partition("?hash=")
        assert url == f"/openapi/v3/{path}"
        data = openapi.openapi_v3_bytes(path)
        assert data is not None
        assert digest == hashlib.sha512(data).hexdigest().upper()
    assert openapi.openapi_v3_document("apis/policy/v1") is None  # not served


def test_v3_documents_describe_only_served_kinds_and_the_meta_types_they_use() -> None:
    apps = openapi.openapi_v3_document("apis/apps/v1")
    assert apps is not None
    schemas = apps["components"]["schemas"]
    for name in (
        "Deployment",
        "DeploymentList",
        "ReplicaSet",
        "DaemonSet",
        "StatefulSet",
        "ControllerRevision",
    ):
        assert f"io.k8s.api.apps.v1.{name}" in schemas
    assert "io.k8s.api.policy.v1.PodDisruptionBudget" not in schemas  # not served by grove
    assert "io.k8s.api.autoscaling.v1.Scale" in schemas
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    # Every reference resolves inside the document.
    refs = {r for r in openapi._refs(apps)}
    assert refs <= set(schemas)
    # Meta types keep only the group versions grove serves.
    gvks = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]["x-kubernetes-group-version-kind"]
    assert {(g["group"], g["version"]) for g in gvks} <= {
        ("", "v1"),
        ("apps", "v1"),
        ("autoscaling", "v1"),
        ("autoscaling", "v2"),
        ("batch", "v1"),
        ("coordination.k8s.io", "v1"),
        ("discovery.k8s.io", "v1"),
        ("autoscaling", "v1"),
    }
    # Refs with siblings are wrapped in allOf; int-or-string is a oneOf.
    template = schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["template"]
    assert template["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}]
    assert "oneOf" in schemas[openapi.INT_OR_STRING]


def test_v3_patch_operations_advertise_field_validation_and_patch_types() -> None:
    core = openapi.openapi_v3_document("api/v1")
    assert core is not None
    patches = [
        (path, item["patch"])
        for path, item in core["paths"].items()
        if "patch" in item and item["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Pod"
    ]
    assert {p for p, _ in patches} == {
        "/api/v1/namespaces/{namespace}/pods/{name}",
        "/api/v1/namespaces/{namespace}/pods/{name}/status",
    }
    for _, op in patches:
        assert "fieldValidation" in {p["name"] for p in op["parameters"]}
        assert "application/strategic-merge-patch+json" in op["requestBody"]["content"]
        assert op["x-kubernetes-action"] == "patch"
    binding = core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"]
    assert binding["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Binding", "version": "v1"}
    assert "/api/v1/pods" in core["paths"]  # list across namespaces
    assert "/api/v1/nodes/{name}/status" in core["paths"]
    assert "/api/v1/namespaces/{name}/finalize" in core["paths"]


def test_v2_document_is_swagger_with_definitions_and_paths() -> None:
    doc = openapi.openapi_v2_document()
    assert doc["swagger"] == "2.0"
    assert "io.k8s.api.core.v1.Pod" in doc["definitions"]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList" in doc["definitions"]
    op = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
    assert op["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale", "version": "v1"}
    refs = {r for r in openapi._refs(doc)}
    assert refs <= set(doc["definitions"])
    assert json.loads(openapi.openapi_v2_bytes()) == doc


def test_protobuf_negotiation() -> None:
    assert openapi.wants_openapi_v2_protobuf("application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
    assert not openapi.wants_openapi_v2_protobuf("application/json")
    assert not openapi.wants_openapi_v2_protobuf(None)
    assert openapi.openapi_v2_protobuf().startswith(b"\x0a\x032.0")  # field 1 (swagger) = "2.0"


# ---------------------------------------------------------------------------------------------
# Unknown and duplicate fields


def test_unknown_fields_reports_paths_and_skips_below_unknown_and_free_form() -> None:
    obj = _with_bogus_field(DEPLOYMENT)
    obj["spec"]["foo"] = {"deeper": 1}
    obj["metadata"]["labels"] = {"any.key/works": "yes"}
    obj["metadata"]["managedFields"] = [{"manager": "x", "fieldsV1": {"f:anything": {}}}]
    assert openapi.unknown_fields("Deployment", obj) == [
        ".spec.template.spec.containers[0].bogus",
        ".spec.foo",
    ]
    assert openapi.unknown_fields(GroupVersionKind("apps", "v1", "Deployment"), DEPLOYMENT) == []
    assert openapi.unknown_fields(
        resources.PODS, {"spec": {"containers": [{"name": "a", "ports": [{"x": 1}]}]}}
    ) == [".spec.containers[0].ports[0].x"]
    assert openapi.unknown_fields("NoSuchKind", {"a": 1}) == []


def test_duplicate_fields_in_json_and_yaml() -> None:
    body = b'{"metadata": {"name": "a", "name": "b", "labels": {"x": "1", "x": "2"}}, '
    body += b'"spec": [{"k": 1, "k": 2}]}'
    assert openapi.find_duplicate_fields(body, "application/json") == [
        ".metadata.name",
        ".metadata.labels.x",
        ".spec[0].k",
    ]
    text = "metadata:\n  name: a\n  name: b\nspec:\n  items:\n  - k: 1\n    k: 2\n"
    assert openapi.find_duplicate_fields(text, "application/yaml") == [".metadata.name", ".spec.items[0].k"]
    with pytest.raises(openapi.BodyDecodeError):
        openapi.find_duplicate_fields(b"{not json", "application/json")


INVALID_JSON = b"""{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "dupename", "name": "web", "unknownMeta": "metaVal"},
  "spec": {
    "unknown1": "val1", "unknownDupe": "valDupe", "unknownDupe": "valDupe2",
    "paused": true, "paused": false,
    "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
      {"name": "c", "image": "busybox", "unknownNested": "val",
       "imagePullPolicy": "Always", "imagePullPolicy": "Never"}]}}
  }
}"""


def test_check_fields_json_matches_kube_apiserver_wording_and_order() -> None:
    result = openapi.check_fields("Deployment", INVALID_JSON, "application/json")
    expected = [
        'duplicate field "metadata.name"',
        'unknown field "metadata.unknownMeta"',
        'unknown field "spec.unknown1"',
        'unknown field "spec.unknownDupe"',
        'duplicate field "spec.paused"',
        'unknown field "spec.template.spec.containers[0].unknownNested"',
        'duplicate field "spec.template.spec.containers[0].imagePullPolicy"',
    ]
    assert list(result.warnings) == expected
    assert result.strict_error() == "strict decoding error: " + ", ".join(expected)
    clean = openapi.check_fields("Deployment", json.dumps(DEPLOYMENT), "application/json")
    assert not clean and clean.strict_error() is None and clean.warnings == ()


def test_check_fields_yaml_reports_lines_then_sorted_unknown_fields() -> None:
    body = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dupename\n  name: web\n  unknownMeta: x\n"
        "spec:\n  unknown1: v\n  unknownDupe: a\n  unknownDupe: b\n  paused: true\n  paused: false\n"
        "  template:\n    spec:\n      containers:\n      - name: c\n        unknownNested: v\n"
        "        imagePullPolicy: Always\n        imagePullPolicy: Never\n"
    )
    result = openapi.check_fields("Deployment", body, "application/yaml")
    lines = [
        'line 5: key "name" already set in map',
        'line 10: key "unknownDupe" already set in map',
        'line 12: key "paused" already set in map',
        'line 19: key "imagePullPolicy" already set in map',
    ]
    unknown = [
        'unknown field "metadata.unknownMeta"',
        'unknown field "spec.template.spec.containers[0].unknownNested"',
        'unknown field "spec.unknown1"',
        'unknown field "spec.unknownDupe"',
    ]
    assert list(result.warnings) == lines + unknown
    assert result.strict_error() == (
        "strict decoding error: yaml: unmarshal errors:\n  " + "\n  ".join(lines) + ", " + ", ".join(unknown)
    )


# ---------------------------------------------------------------------------------------------
# A tiny API server made of the modules under test, for kubectl and the kubernetes client


class TinyApiServer:
    """Discovery, OpenAPI, Table lists and validated creates on a free loopback port, in a thread."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.objects = objects or {}
        self.requests: list[tuple[str, str, str]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept", "")
        self.requests.append((request.method, str(request.rel_url), accept))
        path = request.path
        found = resources.discovery_document(DEFAULT_REGISTRY, path, accept, f"127.0.0.1:{self.port}")
        if found is not None:
            doc, content_type = found
            return web.Response(body=json.dumps(doc), headers={"Content-Type": content_type})
        if path == "/version":
            return web.json_response({"major": "1", "minor": "32", "gitVersion": openapi.KUBERNETES_VERSION})
        if path == "/openapi/v3":
            return web.json_response(openapi.openapi_v3_index())
        if path.startswith("/openapi/v3/") and (data := openapi.openapi_v3_bytes(path)) is not None:
            return web.Response(body=data, headers={"Content-Type": "application/json"})
        if path == "/openapi/v2":
            if openapi.wants_openapi_v2_protobuf(accept):
                ctype = openapi.OPENAPI_V2_PROTOBUF_RESPONSE
                return web.Response(body=openapi.openapi_v2_protobuf(), headers={"Content-Type": ctype})
            return web.Response(body=openapi.openapi_v2_bytes(), headers={"Content-Type": "application/json"})
        parts = path.strip("/").split("/")
        resource = parts[-1]
        res = DEFAULT_REGISTRY.resolve(resource)
        if request.method == "GET" and res is not None and res.resource == resource:
            items = self.objects.get(resource, [])
            if tables.wants_table(accept):
                table = tables.to_table(
                    res,
                    items,
                    include_object=request.query.get("includeObject", "Metadata"),
                    resource_version="7",
                )
                return web.json_response(table)
            return web.json_response({"kind": res.list_kind, "apiVersion": res.api_version, "items": items})
        if request.method == "POST" and res is not None:
            raw = await request.read()
            result = openapi.check_fields(res, raw, request.headers.get("Content-Type"))
            mode = request.query.get("fieldValidation", "Warn")
            if result and mode == "Strict":
                status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400}
                status |= {"reason": "BadRequest", "message": result.strict_error()}
                return web.json_response(status, status=400)
            headers = {}
            if result and mode == "Warn":
                headers["Warning"] = ", ".join(f"299 - {json.dumps(w)}" for w in result.warnings)
            body = yaml.safe_load(raw)
            body.setdefault("metadata", {})["uid"] = "0b7e0d6e-0000-4000-8000-000000000001"
            return web.json_response(body, status=201, headers=headers)
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "code": 404,
        }
        return web.json_response(status, status=404)

    def start(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[OSError] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app)
            try:
                loop.run_until_complete(runner.setup())
                loop.run_until_complete(web.SockSite(runner, sock).start())
            except OSError as exc:  # surfaced to the test thread below
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(runner.cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name="tiny-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"tiny API server did not start: {failure}")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@pytest.fixture
def apiserver() -> Iterator[TinyApiServer]:
    server = TinyApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_kubectl(
    server: TinyApiServer, tmp_path: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    assert os.path.exists(KUBECTL), "kubectl 1.32 must be installed (it is on every grove machine)"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig"), "HOME": str(tmp_path)}
    cmd = [
        KUBECTL,
        "--server",
        server.url,
        "--cache-dir",
        str(tmp_path / "kube-cache"),
        "--request-timeout",
        "20s",
        *args,
    ]
    return subprocess.run(cmd, check=False, input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_kubectl_explain_reads_the_v3_documents(apiserver: TinyApiServer, tmp_path: Path) -> None:
    out = run_kubectl(apiserver, tmp_path, "explain", "deployment.spec")
    assert out.returncode == 0, out.stderr
    assert "KIND:       Deployment" in out.stdout
    assert "FIELD: spec <DeploymentSpec>" in out.stdout
    assert "template\t<PodTemplateSpec> -required-" in out.stdout
    port = run_kubectl(apiserver, tmp_path, "explain", "po.spec.containers.livenessProbe.httpGet.port")
    assert port.returncode == 0, port.stderr
    assert "FIELD: port <IntOrString>" in port.stdout
    lease = run_kubectl(apiserver, tmp_path, "explain", "leases.spec.holderIdentity")
    assert lease.returncode == 0 and "<string>" in lease.stdout, lease.stderr
    fetched = [path for method, path, _ in apiserver.requests if path.startswith("/openapi/v3/")]
    assert any(p.startswith("/openapi/v3/apis/apps/v1?hash=") for p in fetched)


def test_kubectl_explain_v2_reads_the_protobuf_document(apiserver: TinyApiServer, tmp_path: Path) -> None:
    out = run_kubectl(apiserver, tmp_path, "explain", "--output", "plaintext-openapiv2", "svc.spec.ports")
    assert out.returncode == 0, out.stderr
    assert "RESOURCE: ports <[]Object>" in out.stdout
    assert "targetPort\t<string>" in out.stdout


def test_kubectl_api_resources_uses_aggregated_discovery(apiserver: TinyApiServer, tmp_path: Path) -> None:
    out = run_kubectl(apiserver, tmp_path, "api-resources", "--no-headers")
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()}
    assert rows["deployments"] == ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    assert rows["leases"] == ["leases", "coordination.k8s.io/v1", "true", "Lease"]
    assert rows["namespaces"] == ["namespaces", "ns", "v1", "false", "Namespace"]
    discovery = [accept for _, path, accept in apiserver.requests if path.startswith("/apis?")]
    assert discovery and resources.negotiate_discovery(discovery[0]) == "v2"


def test_kubectl_sends_strict_field_validation_and_shows_the_servers_message(
    apiserver: TinyApiServer, tmp_path: Path
) -> None:
    good = run_kubectl(apiserver, tmp_path, "create", "-f", "-", stdin=yaml.safe_dump(DEPLOYMENT))
    assert good.returncode == 0, good.stderr
    assert "deployment.apps/web created" in good.stdout
    posts = [path for method, path, _ in apiserver.requests if method == "POST"]
    assert "fieldValidation=Strict" in posts[-1]

    bad = run_kubectl(
        apiserver, tmp_path, "create", "-f", "-", stdin=yaml.safe_dump(_with_bogus_field(DEPLOYMENT))
    )
    assert bad.returncode != 0
    assert 'strict decoding error: unknown field "spec.template.spec.containers[0].bogus"' in bad.stderr

    warn = run_kubectl(
        apiserver,
        tmp_path,
        "create",
        "--validate=warn",
        "-f",
        "-",
        stdin=yaml.safe_dump(_with_bogus_field(DEPLOYMENT)),
    )
    assert warn.returncode == 0, warn.stderr
    assert 'Warning: unknown field "spec.template.spec.containers[0].bogus"' in warn.stderr


def test_kubectl_validates_a_list_on_the_client_with_the_v2_schemas(
    apiserver: TinyApiServer, tmp_path: Path
) -> None:
    manifest = {"apiVersion": "v1", "kind": "List", "items": [_with_bogus_field(DEPLOYMENT)]}
    out = run_kubectl(
        apiserver,
        tmp_path,
        "create",
        "--dry-run=client",
        "--validate=strict",
        "-f",
        "-",
        stdin=yaml.safe_dump(manifest),
    )
    assert out.returncode != 0
    assert 'unknown field "bogus" in io.k8s.api.core.v1.Container' in out.stderr
    ok = {"apiVersion": "v1", "kind": "List", "items": [DEPLOYMENT]}
    fine = run_kubectl(
        apiserver,
        tmp_path,
        "create",
        "--dry-run=client",
        "--validate=strict",
        "-f",
        "-",
        stdin=yaml.safe_dump(ok),
    )
    assert fine.returncode == 0, fine.stderr
    assert "deployment.apps/web created (dry run)" in fine.stdout


def test_kubectl_get_prints_the_servers_table(apiserver: TinyApiServer, tmp_path: Path) -> None:
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    apiserver.objects["deployments"] = [
        {
            **DEPLOYMENT,
            "metadata": {**DEPLOYMENT["metadata"], "creationTimestamp": created},
            "status": {"readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1},
        }
    ]
    out = run_kubectl(apiserver, tmp_path, "get", "deploy", "-n", "default", "-o", "wide")
    assert out.returncode == 0, out.stderr
    header, row = out.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert row.split()[:4] == ["web", "1/1", "1", "1"]
    assert row.split()[5:] == ["c", "busybox", "app=web"]


def test_kubernetes_python_client_reads_discovery(apiserver: TinyApiServer, tmp_path: Path) -> None:
    from kubernetes import client
    from kubernetes.dynamic import DynamicClient

    config = client.Configuration(host=apiserver.url)
    with client.ApiClient(config) as api:
        core = client.CoreV1Api(api).get_api_resources()
        pods = next(r for r in core.resources if r.name == "pods")
        assert (pods.kind, pods.namespaced, pods.short_names, pods.categories) == (
            "Pod",
            True,
            ["po"],
            ["all"],
        )
        groups = client.ApisApi(api).get_api_versions()
        assert [g.name for g in groups.groups] == [
            "apps", "autoscaling", "batch", "coordination.k8s.io", "discovery.k8s.io"
        ]  # fmt: skip
        apps = client.AppsV1Api(api).get_api_resources()
        scale = next(r for r in apps.resources if r.name == "deployments/scale")
        assert (scale.group, scale.version, scale.kind) == ("autoscaling", "v1", "Scale")
        assert client.CoreApi(api).get_api_versions().versions == ["v1"]

        dynamic = DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
        deployments = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
        assert deployments.namespaced and deployments.short_names == ["deploy"]
        assert "scale" in deployments.subresources and "status" in deployments.subresources
        nodes = dynamic.resources.get(api_version="v1", kind="Node")
        assert not nodes.namespaced
