"""grove's base images, built offline.

No registry is reachable where grove runs, so the images every pod needs are made locally with
`docker import` from Debian's statically linked busybox (package busybox-static):

- `grove/busybox:1.35` (also `:latest`): busybox with its applets as symlinks in /bin, plus
  /etc/passwd, /etc/group and a world-writable /tmp — enough for shells, httpd, wget, nc, ...
- `grove/pause:1.0`: the pod sandbox. It only holds the pod's network (and IPC) namespace, so it
  sleeps forever and exits 0 on SIGTERM or SIGINT.

Building is idempotent: an image that already exists is left alone unless `force` is given.
`grove images build` is the command-line face of `build_images`.
"""

from __future__ import annotations

import io
import struct
import subprocess
import tarfile
from pathlib import Path

import click
import docker
import docker.errors

BUSYBOX_REPOSITORY = "grove/busybox"
BUSYBOX_TAGS = ("1.35", "latest")
BUSYBOX_IMAGE = f"{BUSYBOX_REPOSITORY}:{BUSYBOX_TAGS[0]}"
PAUSE_REPOSITORY = "grove/pause"
PAUSE_TAG = "1.0"
PAUSE_IMAGE = f"{PAUSE_REPOSITORY}:{PAUSE_TAG}"
DEFAULT_BUSYBOX = "/bin/busybox"

IMAGE_LABEL = "io.grove.image"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Used only when the binary cannot list its own applets.
_CORE_APPLETS = (
    "sh",
    "ash",
    "awk",
    "basename",
    "cat",
    "chmod",
    "chown",
    "cp",
    "cut",
    "date",
    "dd",
    "df",
    "dirname",
    "du",
    "echo",
    "env",
    "expr",
    "false",
    "find",
    "grep",
    "head",
    "hostname",
    "httpd",
    "id",
    "ifconfig",
    "ip",
    "kill",
    "ln",
    "ls",
    "mkdir",
    "mktemp",
    "more",
    "mv",
    "nc",
    "netstat",
    "nslookup",
    "ping",
    "printf",
    "ps",
    "pwd",
    "readlink",
    "rm",
    "rmdir",
    "sed",
    "seq",
    "sleep",
    "sort",
    "stat",
    "tail",
    "tar",
    "tee",
    "test",
    "timeout",
    "top",
    "touch",
    "tr",
    "true",
    "uname",
    "uniq",
    "wc",
    "wget",
    "which",
    "xargs",
    "yes",
)

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""

GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
wheel:x:10:root
mail:x:12:
www-data:x:33:
operator:x:37:
users:x:100:
nogroup:x:65534:
"""

# Runs as PID 1 of the sandbox. A shell that is PID 1 ignores signals it has no trap for, so the
# traps are what make SIGTERM/SIGINT end it; `sleep & wait` lets a trap run at once instead of
# after the sleep, and `wait` also reaps any orphan handed to PID 1.
PAUSE_SCRIPT = """\
#!/bin/sh
# grove pause: hold the pod's namespaces until told to stop.
trap 'exit 0' TERM INT
while :; do
  /bin/sleep 86400 &
  wait $!
done
"""


class ImageBuildError(Exception):
    """The base images cannot be built; the message says what to fix."""


def is_static_elf(path: Path) -> bool:
    """True if `path` is an ELF executable without a program interpreter (statically linked)."""
    with path.open("rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            return False
        is64 = ident[4] == 2
        endian = "<" if ident[5] == 1 else ">"
        f.seek(0)
        header = f.read(64 if is64 else 52)
        if is64:
            phoff = struct.unpack_from(endian + "Q", header, 32)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
        else:
            phoff = struct.unpack_from(endian + "I", header, 28)[0]
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 42)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", f.read(4))
            if p_type == 3:  # PT_INTERP: needs a dynamic loader the image does not have
                return False
    return True


def _check_busybox(path: Path) -> None:
    if not path.is_file():
        raise ImageBuildError(
            f"{path} not found: install Debian's busybox-static (apt-get install busybox-static)"
        )
    if not is_static_elf(path):
        raise ImageBuildError(
            f"{path} is not a statically linked executable: install busybox-static instead of busybox"
        )


def busybox_applets(path: Path) -> list[str]:
    """The applets the busybox binary at `path` provides (falls back to a core list)."""
    try:
        out = subprocess.run([str(path), "--list"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return list(_CORE_APPLETS)
    names = [line.strip() for line in out.stdout.splitlines()]
    return sorted({n for n in names if n and "/" not in n and n not in ("busybox", "[", "[[")} | {"[", "[["})


def busybox_version(path: Path) -> str:
    """The version busybox reports about itself, e.g. "1.35.0", or "" if it does not say."""
    try:
        out = subprocess.run([str(path)], check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    first = (out.stdout or out.stderr).splitlines()[:1]
    words = first[0].split() if first else []
    return words[1].lstrip("v") if len(words) > 1 and words[0] == "BusyBox" else ""


class _RootFS:
    """An in-memory tar of a root filesystem, owned by root, with fixed timestamps."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.TarFile(fileobj=self._buf, mode="w", format=tarfile.GNU_FORMAT)

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        return info

    def dir(self, name: str, mode: int = 0o755) -> None:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)

    def data(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def busybox_rootfs(busybox: Path) -> bytes:
    """The tar of the busybox image's root filesystem."""
    fs = _RootFS()
    for d in ("bin", "dev", "etc", "home", "proc", "sys", "usr", "usr/bin", "var", "var/www", "var/spool"):
        fs.dir(d)
    fs.dir("root", 0o700)
    fs.dir("tmp", 0o1777)
    fs.dir("var/tmp", 0o1777)
    fs.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in busybox_applets(busybox):
        fs.symlink(f"bin/{applet}", "busybox")
    fs.symlink("usr/bin/env", "/bin/busybox")  # for `#!/usr/bin/env sh` scripts
    fs.file("etc/passwd", PASSWD.encode())
    fs.file("etc/group", GROUP.encode())
    fs.file("etc/nsswitch.conf", b"hosts: files dns\n")
    return fs.data()


def pause_rootfs(busybox: Path) -> bytes:
    """The tar of the pause image's root filesystem: busybox's sh and sleep and the pause script."""
    fs = _RootFS()
    for d in ("bin", "dev", "etc", "proc", "sys"):
        fs.dir(d)
    fs.dir("tmp", 0o1777)
    fs.file("bin/busybox", busybox.read_bytes(), 0o755)
    fs.symlink("bin/sh", "busybox")
    fs.symlink("bin/sleep", "busybox")
    fs.file("pause", PAUSE_SCRIPT.encode(), 0o755)
    fs.file("etc/passwd", b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    fs.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return fs.data()


def _image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def _import(
    client: docker.DockerClient, rootfs: bytes, repository: str, tags: tuple[str, ...], changes: list[str]
) -> None:
    previous = set()
    for tag in tags:
        try:
            previous.add(client.images.get(f"{repository}:{tag}").id)
        except docker.errors.ImageNotFound:
            pass
    try:
        client.api.import_image_from_data(rootfs, repository=repository, tag=tags[0], changes=changes)
        image = client.images.get(f"{repository}:{tags[0]}")
        for tag in tags[1:]:
            image.tag(repository, tag)
    except docker.errors.APIError as e:
        raise ImageBuildError(f"importing {repository}:{tags[0]} failed: {e.explanation or e}") from e
    for old in previous - {image.id}:
        try:  # a rebuild leaves the old image untagged; drop it unless a container still uses it
            client.images.remove(old, noprune=False)
        except docker.errors.APIError:
            pass


def build_images(
    client: docker.DockerClient, force: bool = False, busybox_path: str | Path = DEFAULT_BUSYBOX
) -> list[str]:
    """Build grove's base images; returns the references built now (empty when all existed).

    Raises ImageBuildError when the busybox binary is unusable or the engine refuses the import.
    """
    busybox = Path(busybox_path)
    built: list[str] = []
    busybox_refs = [f"{BUSYBOX_REPOSITORY}:{t}" for t in BUSYBOX_TAGS]
    if force or not all(_image_exists(client, ref) for ref in busybox_refs):
        _check_busybox(busybox)
        version = busybox_version(busybox) or "unknown"
        changes = [
            f"ENV {PATH_ENV}",
            'CMD ["sh"]',
            f"LABEL {IMAGE_LABEL}=busybox io.grove.busybox.version={version}",
        ]
        _import(client, busybox_rootfs(busybox), BUSYBOX_REPOSITORY, BUSYBOX_TAGS, changes)
        built.extend(busybox_refs)
    if force or not _image_exists(client, PAUSE_IMAGE):
        _check_busybox(busybox)
        changes = [
            f"ENV {PATH_ENV}",
            'ENTRYPOINT ["/pause"]',
            f"LABEL {IMAGE_LABEL}=pause",
        ]
        _import(client, pause_rootfs(busybox), PAUSE_REPOSITORY, (PAUSE_TAG,), changes)
        built.append(PAUSE_IMAGE)
    return built


images = click.Group("images", help="grove's offline base images (busybox and pause).")


@images.command("build")
@click.option("--force", is_flag=True, help="Rebuild images that already exist.")
@click.option(
    "--busybox",
    "busybox_path",
    default=DEFAULT_BUSYBOX,
    show_default=True,
    help="Statically linked busybox binary to build from (Debian package busybox-static).",
)
def build_command(force: bool, busybox_path: str) -> None:
    """Build grove/busybox and grove/pause from the local busybox-static binary (no registry needed)."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise click.ClickException(f"no Docker Engine answers ({e}); run scripts/ensure-docker.sh") from e
    try:
        built = build_images(client, force=force, busybox_path=busybox_path)
    except ImageBuildError as e:
        raise click.ClickException(str(e)) from e
    finally:
        client.close()
    for ref in (*(f"{BUSYBOX_REPOSITORY}:{t}" for t in BUSYBOX_TAGS), PAUSE_IMAGE):
        click.echo(f"{ref}\t{'built' if ref in built else 'present'}")
