"""grove's offline base images: built from busybox-static, idempotent, and they behave.

The root filesystem checks need no engine; the rest run against the real Docker Engine.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import docker
import pytest
from click.testing import CliRunner

pytest.register_assert_rewrite("tests.dockerutil")
from node.images import (  # noqa: E402 - after register_assert_rewrite
    BUSYBOX_IMAGE,
    BUSYBOX_REPOSITORY,
    PAUSE_IMAGE,
    ImageBuildError,
    build_images,
    busybox_rootfs,
    images,
    is_static_elf,
    pause_rootfs,
)
from tests.dockerutil import Pods, wait_for  # noqa: E402

pytest_plugins = ("tests.dockerutil",)

BUSYBOX = Path("/bin/busybox")
# CI installs busybox-static (scripts/ensure-docker.sh): there a missing binary must fail, not skip.
needs_busybox = pytest.mark.skipif(
    not os.environ.get("CI") and (not BUSYBOX.is_file() or not is_static_elf(BUSYBOX)),
    reason="busybox-static is not installed",
)


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


@needs_busybox
def test_busybox_rootfs_layout() -> None:
    members = _members(busybox_rootfs(BUSYBOX))
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    for applet in ("sh", "wget", "nc", "httpd", "nslookup", "sleep", "cat", "echo", "ls", "env"):
        assert members[f"bin/{applet}"].issym() and members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
    assert {"etc/passwd", "etc/group"} <= members.keys()
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())


@needs_busybox
def test_pause_rootfs_holds_only_what_pause_needs() -> None:
    members = _members(pause_rootfs(BUSYBOX))
    assert members["pause"].mode == 0o755
    assert members["bin/sh"].linkname == "busybox" and members["bin/sleep"].linkname == "busybox"
    assert "bin/wget" not in members


def test_static_elf_detection(tmp_path: Path) -> None:
    dynamic = Path("/bin/ls")  # coreutils is always dynamically linked on Debian
    assert not is_static_elf(dynamic)
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert not is_static_elf(script)


@pytest.mark.docker
def test_build_is_idempotent(docker_client: docker.DockerClient, grove_images: list[str]) -> None:
    before = {ref: docker_client.images.get(ref).id for ref in grove_images}
    assert build_images(docker_client) == []
    after = {ref: docker_client.images.get(ref).id for ref in grove_images}
    assert after == before
    assert docker_client.images.get(f"{BUSYBOX_REPOSITORY}:latest").id == before[BUSYBOX_IMAGE]


@pytest.mark.docker
def test_force_rebuilds_every_image(docker_client: docker.DockerClient, grove_images: list[str]) -> None:
    built = build_images(docker_client, force=True)
    assert set(built) == {BUSYBOX_IMAGE, f"{BUSYBOX_REPOSITORY}:latest", PAUSE_IMAGE}
    assert (
        docker_client.images.get(f"{BUSYBOX_REPOSITORY}:latest").id
        == docker_client.images.get(BUSYBOX_IMAGE).id
    )


@pytest.mark.docker
def test_unusable_busybox_is_one_clear_error(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="busybox-static"):
        build_images(docker_client, force=True, busybox_path=tmp_path / "missing")
    result = CliRunner().invoke(images, ["build", "--force", "--busybox", "/bin/ls"])
    assert result.exit_code == 1
    assert "not a statically linked executable" in result.output
    assert "Traceback" not in result.output


@pytest.mark.docker
def test_cli_reports_each_image(grove_images: list[str]) -> None:
    result = CliRunner().invoke(images, ["build"])
    assert result.exit_code == 0, result.output
    for ref in grove_images:
        assert f"{ref}\tpresent" in result.output


@pytest.mark.docker
def test_busybox_image_is_usable(pods: Pods, grove_images: list[str]) -> None:
    applets = ["sh", "wget", "nc", "httpd", "nslookup", "sleep", "cat", "echo", "ls", "env"]
    script = (
        "stat -c '%a' /tmp; id -un; id -u nobody; echo $PATH; "
        f"for a in {' '.join(applets)}; do which $a; done"
    )
    c = pods.scratch(command=["sh", "-c", script])
    assert c.wait(timeout=20)["StatusCode"] == 0, c.logs().decode()
    lines = c.logs().decode().split()
    assert lines[:3] == ["1777", "root", "65534"]
    assert "/bin" in lines[3].split(":")
    assert [path.rsplit("/", 1)[1] for path in lines[4:]] == applets  # each found on PATH


@pytest.mark.docker
def test_pause_exits_cleanly_on_sigterm_and_sigint(pods: Pods, docker_client: docker.DockerClient) -> None:
    for sig in ("SIGTERM", "SIGINT"):
        c = docker_client.containers.run(PAUSE_IMAGE, detach=True)
        pods.scratch_ids.append(c.id)
        wait_for(lambda c=c: c.reload() or c.status == "running", what="pause to run")
        # Exit code 0 means the trap ran: PID 1 without a handler ignores the signal and a
        # SIGKILL would show as 137.
        c.kill(signal=sig)
        assert c.wait(timeout=20)["StatusCode"] == 0
