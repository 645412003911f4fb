"""grove's Docker runtime: pods as a pause sandbox plus joined containers, on a real engine.

The first part checks the pure Kubernetes rules (quantities, command/args, `$(VAR)`, DNS,
volumes) without an engine; the rest starts real pods and removes them afterwards, pass or fail.
"""

from __future__ import annotations

import base64
import io
import re
import socket
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

pytest.register_assert_rewrite("tests.dockerutil")

from node.images import BUSYBOX_IMAGE  # noqa: E402
from node.runtime import (  # noqa: E402
    LABEL_CONTAINER_NAME,
    LABEL_KIND,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_RESTART_COUNT,
    CreateContainerError,
    DockerRuntime,
    ExecTimeoutError,
    ForeignContainerError,
    ImageNotPresentError,
    ImagePullError,
    SandboxError,
    VolumeError,
    materialise_volumes,
    state_from_engine,
)
from node.runtime import spec as k8s  # noqa: E402
from tests.dockerutil import Pods, container_logs, make_pod, wait_for  # noqa: E402

pytest_plugins = ("tests.dockerutil",)

BB = BUSYBOX_IMAGE


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": BB, "command": ["sh", "-c", script], **extra}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- pure rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("128Mi", 128 * 2**20), ("500m", 0.5), ("1", 1), ("1.5Gi", 1.5 * 2**30), ("1e3", 1000), ("2k", 2000)],
)
def test_parse_quantity(text: str, value: float) -> None:
    assert float(k8s.parse_quantity(text)) == value


def test_bad_quantity_is_a_create_error() -> None:
    with pytest.raises(CreateContainerError, match="quantities must match"):
        k8s.container_resources({"name": "c", "resources": {"limits": {"memory": "lots"}}})


def test_container_resources() -> None:
    res = k8s.container_resources({"resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}})
    assert (res.mem_limit, res.nano_cpus, res.cpu_shares) == (64 * 2**20, 250_000_000, 256)
    assert k8s.container_resources({}).cpu_shares == 2


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$(A)-$(B)", "1-two"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("cost $$5", "cost $5"),
        ("plain $A", "plain $A"),
        ("$(A", "$(A"),
    ],
)
def test_expand(text: str, expanded: str) -> None:
    assert k8s.expand(text, {"A": "1", "B": "two"}) == expanded


def test_command_and_args_map_to_entrypoint_and_cmd() -> None:
    env = {"X": "x"}
    assert k8s.entrypoint_and_cmd({}, env) == (None, None)
    assert k8s.entrypoint_and_cmd({"command": ["run", "$(X)"]}, env) == (["run", "x"], None)
    assert k8s.entrypoint_and_cmd({"args": ["a"]}, env) == (None, ["a"])
    assert k8s.entrypoint_and_cmd({"command": ["run"], "args": ["$(X)"]}, env) == (["run"], ["x"])


def test_container_name_is_engine_safe() -> None:
    name = k8s.container_name("kube-system", "web.1", "nginx", 3, "0f1e2d3c-aaaa-bbbb-cccc-000000000000")
    assert name == "grove_kube-system_web.1_nginx_3_0f1e2d3c"


def test_dns_cluster_first() -> None:
    pod = make_pod("p", [], namespace="team", dnsConfig={"options": [{"name": "ndots", "value": "2"}]})
    host = k8s.ResolvConf(nameservers=["127.0.0.53"], searches=["corp.example"])
    conf = k8s.pod_dns(pod, ["10.96.0.10"], "cluster.local", host)
    assert conf is not None
    assert conf.nameservers == ["10.96.0.10"]
    assert conf.searches == ["team.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
    assert conf.options == ["ndots:2"]


def test_dns_policies_without_cluster_dns() -> None:
    host = k8s.ResolvConf(nameservers=["127.0.0.53", "192.0.2.53"], searches=["corp.example"])
    assert k8s.pod_dns(make_pod("p", []), [], "cluster.local", host) is None  # engine default
    none = make_pod("p", [], dnsPolicy="None", dnsConfig={"nameservers": ["1.1.1.1"], "searches": ["a.b"]})
    conf = k8s.pod_dns(none, ["10.96.0.10"], "cluster.local", host)
    assert conf is not None and (conf.nameservers, conf.searches, conf.options) == (["1.1.1.1"], ["a.b"], [])
    default = make_pod("p", [], dnsPolicy="Default", dnsConfig={"nameservers": ["9.9.9.9"]})
    conf = k8s.pod_dns(default, ["10.96.0.10"], "cluster.local", host)
    assert conf is not None and conf.nameservers == ["192.0.2.53", "9.9.9.9"]  # no loopback resolver


def test_host_ports() -> None:
    pod = make_pod(
        "p",
        [
            {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81}]},
            {
                "name": "b",
                "ports": [{"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"}],
            },
        ],
    )
    assert k8s.host_ports(pod) == {"80/tcp": [("0.0.0.0", 8080)], "53/udp": [("127.0.0.1", 5353)]}


def test_state_from_engine() -> None:
    running = state_from_engine("abc", {"Status": "running", "StartedAt": "2024-05-01T10:00:00.123456789Z"})
    assert running.to_k8s() == {"running": {"startedAt": "2024-05-01T10:00:00Z"}}
    times = {"StartedAt": "2024-05-01T10:00:00.1Z", "FinishedAt": "2024-05-01T10:00:05.9Z"}
    done = state_from_engine("abc", {"Status": "exited", "ExitCode": 0, **times}).to_k8s()["terminated"]
    assert (done["reason"], done["exitCode"], done["containerID"]) == ("Completed", 0, "docker://abc")
    assert state_from_engine("abc", {"Status": "exited", "ExitCode": 2, **times}).reason == "Error"
    oom = state_from_engine("abc", {"Status": "exited", "ExitCode": 137, "OOMKilled": True, **times})
    assert oom.reason == "OOMKilled"
    cannot = {
        "Status": "exited",
        "ExitCode": 127,
        "Error": "exec: nope: not found",
        "StartedAt": "0001-01-01T00:00:00Z",
    }
    assert state_from_engine("abc", cannot).reason == "ContainerCannotRun"
    assert state_from_engine("abc", {"Status": "created"}).to_k8s() == {
        "waiting": {"reason": "ContainerCreating"}
    }


def _volume_pod() -> dict[str, Any]:
    return make_pod(
        "vol",
        [],
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "creds",
                "secret": {
                    "secretName": "db",
                    "items": [{"key": "password", "path": "db/pass", "mode": 0o400}],
                },
            },
            {"name": "conf", "configMap": {"name": "app", "defaultMode": 0o640}},
            {"name": "maybe", "secret": {"secretName": "absent", "optional": True}},
            {
                "name": "info",
                "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]},
            },
        ],
    )


SECRETS = {"db": {"metadata": {"name": "db"}, "data": {"password": b64("s3cret"), "user": b64("admin")}}}
CONFIGMAPS = {
    "app": {
        "metadata": {"name": "app"},
        "data": {"app.conf": "mode=fast\n"},
        "binaryData": {"blob": b64("\x00\x01")},
    }
}


def test_materialise_volumes(tmp_path: Path) -> None:
    pod = _volume_pod()
    vols = materialise_volumes(pod, tmp_path, SECRETS, CONFIGMAPS)
    creds, conf = Path(vols["creds"]), Path(vols["conf"])
    assert (creds / "db/pass").read_text() == "s3cret"
    assert (creds / "db/pass").stat().st_mode & 0o777 == 0o400
    assert not (creds / "user").exists()  # items select keys
    assert (conf / "app.conf").read_text() == "mode=fast\n" and (conf / "blob").read_bytes() == b"\x00\x01"
    assert (conf / "app.conf").stat().st_mode & 0o777 == 0o640
    assert list(Path(vols["maybe"]).iterdir()) == []
    assert (Path(vols["info"]) / "name").read_text() == "vol"
    assert Path(vols["scratch"]).stat().st_mode & 0o777 == 0o777

    # An update rewrites changed keys and drops removed ones.
    updated = {"app": {"metadata": {"name": "app"}, "data": {"other.conf": "x"}}}
    materialise_volumes(pod, tmp_path, SECRETS, updated)
    assert sorted(p.name for p in conf.iterdir()) == ["other.conf"]


def test_materialise_volume_errors(tmp_path: Path) -> None:
    missing = make_pod("p", [], volumes=[{"name": "s", "secret": {"secretName": "nope"}}])
    with pytest.raises(VolumeError, match='secret "nope" not found'):
        materialise_volumes(missing, tmp_path, {}, {})
    bad_key = make_pod(
        "p", [], volumes=[{"name": "c", "configMap": {"name": "app", "items": [{"key": "k", "path": "k"}]}}]
    )
    with pytest.raises(VolumeError, match="non-existent configmap key: k"):
        materialise_volumes(bad_key, tmp_path, {}, CONFIGMAPS)
    escape = make_pod(
        "p",
        [],
        volumes=[{"name": "c", "configMap": {"name": "app", "items": [{"key": "app.conf", "path": "../x"}]}}],
    )
    with pytest.raises(VolumeError, match="must be relative"):
        materialise_volumes(escape, tmp_path, {}, CONFIGMAPS)
    host_dir = make_pod(
        "p", [], volumes=[{"name": "h", "hostPath": {"path": str(tmp_path / "nodir"), "type": "Directory"}}]
    )
    with pytest.raises(VolumeError, match="is not a Directory"):
        materialise_volumes(host_dir, tmp_path, {}, {})
    created = make_pod(
        "p",
        [],
        volumes=[{"name": "h", "hostPath": {"path": str(tmp_path / "made"), "type": "DirectoryOrCreate"}}],
    )
    assert materialise_volumes(created, tmp_path, {}, {}) == {"h": str(tmp_path / "made")}
    assert (tmp_path / "made").is_dir()
    nfs = make_pod("p", [], volumes=[{"name": "n", "nfs": {"server": "x", "path": "/"}}])
    with pytest.raises(VolumeError, match="type nfs is not supported"):
        materialise_volumes(nfs, tmp_path, {}, {})


def test_container_mounts_subpath(tmp_path: Path) -> None:
    pod = _volume_pod()
    vols = materialise_volumes(pod, tmp_path, SECRETS, CONFIGMAPS)
    container = {
        "name": "c",
        "volumeMounts": [
            {
                "name": "scratch",
                "mountPath": "/data",
                "subPath": "$(DIR)-ignored",
                "subPathExpr": "per-$(DIR)",
            },
            {"name": "conf", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
            {"name": "scratch", "mountPath": "/ro", "readOnly": True},
        ],
    }
    mounts = k8s.container_mounts(pod, container, vols, {"DIR": "x"})
    assert (
        mounts[0].source == str(Path(vols["scratch"]).resolve() / "per-x") and Path(mounts[0].source).is_dir()
    )
    assert mounts[1].source.endswith("/conf/app.conf") and mounts[1].read_only  # configMap: always read-only
    assert mounts[2].read_only and not mounts[0].read_only
    (Path(vols["scratch"]) / "link").symlink_to("/etc")
    with pytest.raises(CreateContainerError, match="leads out of volume"):
        k8s.container_mounts(
            pod,
            {"name": "c", "volumeMounts": [{"name": "scratch", "mountPath": "/x", "subPath": "link"}]},
            vols,
            {},
        )
    with pytest.raises(CreateContainerError, match="without '..'"):
        k8s.container_mounts(
            pod,
            {"name": "c", "volumeMounts": [{"name": "scratch", "mountPath": "/x", "subPath": "../x"}]},
            vols,
            {},
        )


# --- on the engine ------------------------------------------------------------------------------


def exec_ok(runtime: DockerRuntime, cid: str, *cmd: str) -> str:
    code, out = runtime.exec(cid, list(cmd), timeout=10)
    assert code == 0, f"{cmd} exited {code}: {out}"
    return out


def wait_exec(runtime: DockerRuntime, cid: str, *cmd: str, timeout: float = 10) -> str:
    """Output of the first successful run of `cmd` (e.g. once a server listens)."""

    def attempt() -> str | None:
        code, out = runtime.exec(cid, list(cmd), timeout=5)
        return out if code == 0 else None

    return wait_for(attempt, timeout, what=f"{cmd} to succeed")


def wait_terminated(runtime: DockerRuntime, cid: str) -> Any:
    return wait_for(lambda: (s := runtime.container_state(cid)).terminated and s, what="container to exit")


HTTPD = "mkdir -p /shared/www && echo hello-from-a > /shared/www/index.html && exec httpd -f -p 8080 -h /shared/www"


@pytest.mark.docker
def test_two_containers_share_localhost_and_empty_dir(pods: Pods) -> None:
    rt = pods.runtime
    mount = [{"name": "shared", "mountPath": "/shared"}]
    pod = make_pod(
        "two",
        [
            shell("a", HTTPD, volumeMounts=mount),
            shell("b", "echo written-by-b > /shared/b.txt && exec sleep 300", volumeMounts=mount),
        ],
        volumes=[{"name": "shared", "emptyDir": {}}],
    )
    running = pods.run(pod)
    a, b = running.ids["a"], running.ids["b"]
    assert wait_exec(rt, b, "wget", "-qO-", "http://localhost:8080/") == "hello-from-a\n"
    assert wait_exec(rt, a, "cat", "/shared/b.txt") == "written-by-b\n"
    assert (Path(running.volumes["shared"]) / "b.txt").read_text() == "written-by-b\n"
    assert exec_ok(rt, b, "hostname") == "two\n"

    listed = rt.list_pod_containers()[running.uid]
    assert listed.sandbox is not None and listed.sandbox.id == running.sandbox.id
    assert listed.sandbox.ip == running.sandbox.ip and running.sandbox.ip.startswith("10.88.")
    assert {c.container_name for c in listed.containers} == {"a", "b"}
    for info in listed.containers:
        assert info.labels[LABEL_POD_UID] == running.uid
        assert (info.labels[LABEL_POD_NAMESPACE], info.labels[LABEL_POD_NAME]) == ("default", "two")
        assert info.labels[LABEL_KIND] == "container" and info.labels[LABEL_RESTART_COUNT] == "0"
        assert (
            info.name
            == f"grove_default_two_{info.labels[LABEL_CONTAINER_NAME]}_0_{running.uid.replace('-', '')[:8]}"
        )
        assert info.sandbox_id == running.sandbox.id and info.state.running
    assert listed.sandbox.labels[LABEL_KIND] == "sandbox"


@pytest.mark.docker
def test_pod_ip_reachable_from_another_pod_and_host_port(pods: Pods) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        host_port = s.getsockname()[1]
    server = pods.run(
        make_pod(
            "server",
            [
                shell(
                    "web",
                    HTTPD,
                    ports=[{"containerPort": 8080, "hostPort": host_port}],
                    volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
                )
            ],
            volumes=[{"name": "shared", "emptyDir": {}}],
        )
    )
    client = pods.run(make_pod("client", [shell("c", "exec sleep 300")]))
    assert server.sandbox.ip != client.sandbox.ip
    url = f"http://{server.sandbox.ip}:8080/"
    assert wait_exec(pods.runtime, client.ids["c"], "wget", "-qO-", url) == "hello-from-a\n"

    def via_host_port() -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{host_port}/", timeout=2) as r:
                return r.read()
        except OSError:
            return None

    assert wait_for(via_host_port, what="hostPort to answer") == b"hello-from-a\n"

    # A second pod asking for the same hostPort: the engine's refusal, and nothing left behind.
    clash = make_pod(
        "clash", [shell("c", "exec sleep 300", ports=[{"containerPort": 80, "hostPort": host_port}])]
    )
    pods.uids.append(clash["metadata"]["uid"])
    with pytest.raises(SandboxError, match="already allocated"):
        pods.runtime.run_sandbox(clash)
    assert clash["metadata"]["uid"] not in pods.runtime.list_pod_containers()


@pytest.mark.docker
def test_env_secret_and_configmap_files_inside(pods: Pods) -> None:
    rt = pods.runtime
    pod = _volume_pod()
    pod["spec"]["containers"] = [
        shell(
            "app",
            "exec sleep 300",
            workingDir="/work",
            volumeMounts=[
                {"name": "creds", "mountPath": "/etc/creds"},
                {"name": "conf", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
                {"name": "info", "mountPath": "/etc/podinfo"},
                {"name": "scratch", "mountPath": "/work"},
            ],
        )
    ]
    running = pods.run(
        pod, env={"app": {"GREETING": "hello", "POD_NAME": "vol"}}, secrets=SECRETS, configmaps=CONFIGMAPS
    )
    cid = running.ids["app"]
    env = exec_ok(rt, cid, "env").splitlines()
    assert "GREETING=hello" in env and "POD_NAME=vol" in env
    assert exec_ok(rt, cid, "pwd") == "/work\n"
    assert exec_ok(rt, cid, "cat", "/etc/creds/db/pass") == "s3cret"
    assert exec_ok(rt, cid, "stat", "-c", "%a", "/etc/creds/db/pass") == "400\n"
    assert exec_ok(rt, cid, "cat", "/etc/app.conf") == "mode=fast\n"
    assert exec_ok(rt, cid, "cat", "/etc/podinfo/name") == "vol"
    code, out = rt.exec(cid, ["sh", "-c", "echo x > /etc/creds/new"], timeout=10)
    assert code != 0 and "Read-only file system" in out


@pytest.mark.docker
def test_command_and_args_semantics(pods: Pods, docker_client: docker.DockerClient) -> None:
    rt = pods.runtime
    tag = f"grove-test/entry:{uuid.uuid4().hex[:8]}"
    dockerfile = f'FROM {BB}\nENTRYPOINT ["echo", "entry"]\nCMD ["default-cmd"]\n'
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    try:
        cases = {
            "image": ({}, "entry default-cmd"),
            "command": ({"command": ["echo", "own"]}, "own"),
            "args": ({"args": ["my", "$(WHO)"]}, "entry my world"),
            "both": ({"command": ["echo", "$(WHO)"], "args": ["$$(WHO)", "$(NOPE)"]}, "world $(WHO) $(NOPE)"),
        }
        containers = [{"name": name, "image": tag, **fields} for name, (fields, _) in cases.items()]
        running = pods.run(make_pod("cmds", containers), env={name: {"WHO": "world"} for name in cases})
        for name, (_, expected) in cases.items():
            state = wait_terminated(rt, running.ids[name])
            assert state.exit_code == 0 and state.reason == "Completed"
            assert container_logs(rt, running.ids[name]) == expected + "\n", name
    finally:
        docker_client.images.remove(tag, force=True)


@pytest.mark.docker
def test_graceful_stop(pods: Pods) -> None:
    rt = pods.runtime
    trapper = "trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 1 & wait $!; done"
    ignorer = "trap '' TERM; echo ready; while :; do sleep 1; done"
    running = pods.run(make_pod("stopper", [shell("trapper", trapper), shell("ignorer", ignorer)]))
    for cid in running.ids.values():
        wait_for(lambda cid=cid: "ready" in container_logs(rt, cid), what="trap to be installed")

    grace = 30
    started = time.monotonic()
    rt.stop_container(running.ids["trapper"], grace)
    elapsed = time.monotonic() - started
    state = rt.container_state(running.ids["trapper"])
    assert state.terminated and state.exit_code == 0  # the trap ran; a SIGKILL would be 137
    assert "got TERM" in container_logs(rt, running.ids["trapper"])
    assert elapsed < grace / 2  # returned when the container exited, not at the deadline

    started = time.monotonic()
    rt.stop_container(running.ids["ignorer"], 2)
    elapsed = time.monotonic() - started
    state = rt.container_state(running.ids["ignorer"])
    assert state.terminated and state.exit_code == 137 and state.reason == "Error"
    assert elapsed >= 2  # SIGKILL only after the grace period


@pytest.mark.docker
def test_exec_output_exit_code_and_timeout(pods: Pods) -> None:
    rt = pods.runtime
    cid = pods.run(make_pod("exec", [shell("c", "exec sleep 300")])).ids["c"]
    code, out = rt.exec(cid, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert code == 3
    assert sorted(out.splitlines()) == ["err", "out"]  # both streams; their relative order is not kept
    with pytest.raises(ExecTimeoutError, match="timed out after 1s"):
        rt.exec(cid, ["sh", "-c", "echo started; sleep 60"], timeout=1)
    # The timed-out command was killed, not left behind.
    wait_for(
        lambda: "sleep 60" not in exec_ok(rt, cid, "ps", "-o", "args"), what="timed-out exec to be killed"
    )


@pytest.mark.docker
def test_logs_tail_timestamps_and_exit_reasons(pods: Pods) -> None:
    rt = pods.runtime
    running = pods.run(
        make_pod(
            "logs",
            [
                shell("ok", "for i in 1 2 3 4 5; do echo line$i; done; echo oops >&2"),
                shell("bad", "echo failing; exit 3"),
            ],
        )
    )
    ok, bad = running.ids["ok"], running.ids["bad"]
    assert wait_terminated(rt, ok).reason == "Completed"
    state = wait_terminated(rt, bad)
    assert (state.reason, state.exit_code) == ("Error", 3)
    assert state.finished_at is not None and state.started_at is not None

    assert "oops" in container_logs(rt, ok)  # stderr is in the log too
    tail = rt.logs(ok, tail=3)
    assert isinstance(tail, bytes)
    stamped = rt.logs(ok, timestamps=True)
    assert isinstance(stamped, bytes)
    lines = stamped.decode().splitlines()
    assert len(lines) == 6
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z (line\d|oops)", line) for line in lines)
    assert len(tail.decode().splitlines()) == 3 and tail.decode().splitlines() == [
        line.split(" ", 1)[1] for line in lines[-3:]
    ]
    assert rt.logs(ok, since=time.time() + 3600) == b""
    followed = b"".join(rt.logs(bad, follow=True))  # an exited container: the stream ends
    assert followed == b"failing\n"


@pytest.mark.docker
def test_missing_image_gives_engine_message(pods: Pods, docker_client: docker.DockerClient) -> None:
    rt = DockerRuntime(docker_client, pull_timeout=30)
    ref = f"grove-test/no-such-image:{uuid.uuid4().hex[:8]}"
    assert not rt.image_present(ref)
    try:
        docker_client.api.pull(ref.split(":")[0], tag=ref.split(":")[1])
        engine_message = None
    except docker.errors.APIError as e:
        engine_message = str(e.explanation)
    with pytest.raises(ImagePullError) as caught:
        rt.pull_image(ref)
    assert engine_message and engine_message in str(caught.value)
    assert ref in str(caught.value)

    running = pods.run(make_pod("noimg", []))
    with pytest.raises(ImageNotPresentError, match=re.escape(ref)):
        rt.create_container(running.pod, {"name": "c", "image": ref}, running.sandbox, {}, {}, 0)


@pytest.mark.docker
def test_containers_carry_the_node_name_and_listing_follows_changes_made_behind_its_back(
    pods: Pods, docker_client: docker.DockerClient
) -> None:
    rt = DockerRuntime(docker_client, node_name="node-a")
    running = pods.run(make_pod("named", [shell("c", "exec sleep 300")]), runtime=rt)
    found = rt.list_pod_containers(running.uid)[running.uid]
    assert [s.labels[k8s.LABEL_NODE] for s in found.sandboxes] == ["node-a"]
    assert [c.labels[k8s.LABEL_NODE] for c in found.containers] == ["node-a"]
    assert found.containers[0].state.running
    # The engine changes the container without this runtime: the next listing shows it.
    docker_client.api.kill(running.ids["c"], signal="KILL")
    wait_for(lambda: docker_client.api.inspect_container(running.ids["c"])["State"]["Status"] == "exited", 20,
             "the killed container to exit")  # fmt: skip
    state = rt.list_pod_containers(running.uid)[running.uid].containers[0].state
    assert state.terminated and state.exit_code == 137
    docker_client.api.remove_container(running.ids["c"], force=True)
    assert rt.list_pod_containers(running.uid)[running.uid].containers == []
    assert rt.list_pod_containers()[running.uid].sandboxes[0].state.running
    # An image found present and then removed: the create says so, and the next check asks again.
    tag = f"grove-test/gone:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(BB).tag(tag)
    assert rt.image_present(tag)
    docker_client.images.remove(tag)
    with pytest.raises(ImageNotPresentError, match=re.escape(tag)):
        rt.create_container(running.pod, {"name": "d", "image": tag}, running.sandbox, {}, {}, 0)
    assert not rt.image_present(tag)


@pytest.mark.docker
def test_foreign_container_is_never_listed_or_touched(pods: Pods) -> None:
    rt = pods.runtime
    # Carries some grove-looking labels, but no pod uid: not grove's.
    intruder = pods.scratch(
        command=["sleep", "300"], labels={LABEL_POD_NAME: "intruder", LABEL_KIND: "container"}
    )
    mine = pods.run(make_pod("mine", [shell("c", "exec sleep 300")]))
    listed = rt.list_pod_containers()
    assert mine.uid in listed
    assert intruder.id not in {c.id for p in listed.values() for c in [*p.containers, *p.sandboxes]}
    for action in (
        lambda: rt.stop_container(intruder.id, 1),
        lambda: rt.remove_container(intruder.id),
        lambda: rt.exec(intruder.id, ["true"], timeout=5),
        lambda: rt.logs(intruder.id),
        lambda: rt.inspect_container(intruder.id),
        lambda: rt.stats(intruder.id),
        lambda: rt.start_container(intruder.id),
    ):
        with pytest.raises(ForeignContainerError, match="grove does not touch it"):
            action()
    rt.stop_pod(mine.uid, 1)
    rt.remove_pod(mine.uid)
    assert mine.uid not in rt.list_pod_containers()
    intruder.reload()
    assert intruder.status == "running"


@pytest.mark.docker
def test_limits_stats_and_oom(pods: Pods, docker_client: docker.DockerClient) -> None:
    rt = pods.runtime
    limits = {"resources": {"limits": {"memory": "32Mi", "cpu": "500m"}}}
    running = pods.run(
        make_pod(
            "limits",
            [
                shell("busy", "while :; do :; done", **limits),
                # tail buffers a line that never ends: it grows until the limit kills it.
                shell("hog", "exec tail /dev/zero", **limits),
            ],
        )
    )
    busy = running.ids["busy"]
    host_config = docker_client.api.inspect_container(busy)["HostConfig"]
    assert host_config["Memory"] == 32 * 2**20 and host_config["MemorySwap"] == 32 * 2**20
    assert host_config["NanoCpus"] == 500_000_000
    stats = wait_for(lambda: (s := rt.stats(busy)).cpu_usage_nanoseconds > 0 and s, what="cpu usage")
    assert 0 < stats.memory_working_set_bytes <= 32 * 2**20
    state = wait_terminated(rt, running.ids["hog"])
    assert (state.reason, state.exit_code) == ("OOMKilled", 137)


@pytest.mark.docker
def test_cluster_dns_written_into_the_pod(pods: Pods, docker_client: docker.DockerClient) -> None:
    rt = DockerRuntime(docker_client, cluster_dns=["10.96.0.10"], cluster_domain="cluster.local")
    running = pods.run(make_pod("dns", [shell("c", "exec sleep 300")], namespace="team"), runtime=rt)
    conf = k8s.parse_resolv_conf(exec_ok(rt, running.ids["c"], "cat", "/etc/resolv.conf"))
    assert conf.nameservers == ["10.96.0.10"]
    assert conf.searches[:3] == ["team.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    assert "ndots:5" in conf.options


@pytest.mark.docker
def test_restart_creates_a_new_instance(pods: Pods) -> None:
    rt = pods.runtime
    pod = make_pod("restart", [shell("c", "echo run; exit 1")])
    running = pods.run(pod)
    first = running.ids["c"]
    wait_terminated(rt, first)
    second = rt.create_container(pod, pod["spec"]["containers"][0], running.sandbox, {}, {}, 1)
    rt.start_container(second)
    wait_terminated(rt, second)
    listed = rt.list_pod_containers(running.uid)[running.uid]
    latest = listed.latest("c")
    assert latest is not None and latest.id == second and latest.restart_count == 1
    assert {c.id for c in listed.containers} == {first, second}
    assert latest.spec_hash == rt.inspect_container(first).spec_hash  # same spec, same hash

    # A dead instance left with the name of a new one is replaced; a running one is not.
    again = rt.create_container(pod, pod["spec"]["containers"][0], running.sandbox, {}, {}, 1)
    assert again != second and rt.list_pod_containers(running.uid)[running.uid].latest("c").id == again
    rt.start_container(again)
    wait_terminated(rt, again)
    sleeper = shell("c", "exec sleep 300")
    live = rt.create_container(pod, sleeper, running.sandbox, {}, {}, 2)
    rt.start_container(live)
    with pytest.raises(CreateContainerError, match="Conflict|in use"):
        rt.create_container(pod, sleeper, running.sandbox, {}, {}, 2)
