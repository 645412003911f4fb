"""A Job on real Docker: `kubectl create job` runs busybox to completion through the scheduler,
the controller manager and a Docker node agent (all processes), and `kubectl logs job/<name>`
prints what the container wrote; an Indexed job's pods see their JOB_COMPLETION_INDEX."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kvstore.localcluster import free_port
from node.images import BUSYBOX_IMAGE
from node.runtime import DockerRuntime
from tests.apiserver_fixture import ROOT, ApiServerProcess, _env, apiserver  # noqa: F401 - pytest fixture
from tests.cluster import delete_namespace_and_wait
from tests.dockerutil import wait_for

pytest_plugins = ("tests.dockerutil",)
pytestmark = [pytest.mark.docker, pytest.mark.slow]

NS = "jobdocker"
NODE = "job-docker-node"


@pytest.fixture
def control_plane(
    apiserver: ApiServerProcess,  # noqa: F811 - the module's fixture
    docker_client,
    grove_images,
) -> Iterator[None]:
    workdir = Path(tempfile.mkdtemp(prefix="grove-job-docker-"))
    procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(name: str, module: str, *args: str) -> None:
        log = workdir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=_env(), cwd=ROOT)  # fmt: skip
        procs.append((name, proc, log))

    def check() -> None:
        for name, proc, log in procs:
            assert proc.poll() is None, f"{name} exited:\n{log.read_text(errors='replace')[-3000:]}"

    try:
        start("scheduler", "orchestrator.scheduler.cli", "--server", apiserver.url, "--no-leader-elect")
        start("controllers", "orchestrator.controllers.cli", "--server", apiserver.url, "--no-leader-elect",
              "--port", "0")  # fmt: skip
        start("node", "node.cli", "--server", apiserver.url, "--name", NODE, "--runtime", "docker",
              "--node-ip", "127.0.0.1", "--address", "127.0.0.1", "--port", str(free_port()),
              "--root-dir", str(workdir / "node"))  # fmt: skip

        def node_ready() -> bool:
            check()
            r = requests.get(f"{apiserver.url}/api/v1/nodes/{NODE}", timeout=5)
            conds = r.json().get("status", {}).get("conditions", []) if r.ok else []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        wait_for(node_ready, 60, "the Docker node to be Ready")
        requests.post(
            f"{apiserver.url}/api/v1/namespaces", json={"metadata": {"name": NS}}, timeout=10
        ).raise_for_status()
        yield
        check()
    finally:
        try:
            delete_namespace_and_wait(apiserver.url, NS, 40)
        finally:
            for _, proc, _ in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for _, proc, _ in reversed(procs):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            runtime = DockerRuntime(docker_client)
            for uid, pc in runtime.list_pod_containers().items():
                if pc.namespace == NS:
                    runtime.remove_pod(uid)
            shutil.rmtree(workdir, ignore_errors=True)


def test_a_job_runs_to_completion_and_kubectl_logs_prints_its_output(
    apiserver: ApiServerProcess,  # noqa: F811 - the module's fixture
    control_plane: None,
) -> None:
    kubectl = apiserver.kubectl
    kubectl(
        "create",
        "job",
        "hello",
        "-n",
        NS,
        f"--image={BUSYBOX_IMAGE}",
        "--",
        "sh",
        "-c",
        "echo hello from a job",
    )
    kubectl("wait", "-n", NS, "--for=condition=complete", "job/hello", "--timeout=90s", timeout=120)
    assert kubectl("logs", "-n", NS, "job/hello").stdout == "hello from a job\n"
    row = kubectl("get", "jobs", "-n", NS, "hello", "--no-headers").stdout.split()
    assert row[:3] == ["hello", "Complete", "1/1"]

    indexed = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "shards"},
        "spec": {
            "completions": 2,
            "parallelism": 2,
            "completionMode": "Indexed",
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "shard", "image": BUSYBOX_IMAGE,
                                    "command": ["sh", "-c", "echo shard $JOB_COMPLETION_INDEX"]}],
                }
            },
        },
    }  # fmt: skip
    kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(indexed))
    kubectl("wait", "-n", NS, "--for=condition=complete", "job/shards", "--timeout=90s", timeout=120)
    pods = requests.get(
        f"{apiserver.url}/api/v1/namespaces/{NS}/pods",
        params={"labelSelector": "batch.kubernetes.io/job-name=shards"},
        timeout=10,
    ).json()["items"]
    logs = sorted(kubectl("logs", "-n", NS, p["metadata"]["name"]).stdout for p in pods)
    assert logs == ["shard 0\n", "shard 1\n"]
