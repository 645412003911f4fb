"""The proxy's hands on the host: iptables, a few sysctls, the bridge's ports, addresses on `lo`.

Everything grove changes is recognisable as grove's and undone by `cleanup`: chains are named
GROVE-*, jump rules carry the comment "grove service proxy", load balancer addresses on `lo` carry
the label `lo:grove`, and sysctls are put back to the values saved in the state file. The rules go
through `iptables-restore --noflush`, one transaction per sync, with the same iptables binary (and
so the same backend, nft or legacy) that Docker uses on this host.

Only one proxy may own a host's rules: `HostLock` takes an exclusive lock on a fixed path (not in
the state directory, so two proxies with different state directories still exclude each other).
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .rules import JUMPS, PREFIX, TABLES, Jump, cleanup_text

log = logging.getLogger(__name__)

LB_LABEL = "lo:grove"
DEFAULT_STATE_DIR = "/run/grove"
# The iptables chains are the host's (its network namespace's), whatever the state directory.
HOST_LOCK = "/run/lock/grove-proxy.lock" if os.path.isdir("/run/lock") else "/tmp/grove-proxy.lock"


class NetfilterError(RuntimeError):
    """An iptables/ip command failed; the message carries its output."""


async def _run(*args: str, stdin: str | None = None, check: bool = True) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise NetfilterError(f"{args[0]} is not installed (apt-get install iptables iproute2)") from None
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    rc = proc.returncode or 0
    text_err = "\n".join(
        line
        for line in err.decode(errors="replace").splitlines()
        if "iptables-legacy tables present" not in line
    )
    if check and rc != 0:
        raise NetfilterError(f"{' '.join(args[:4])} ... failed ({rc}): {text_err.strip()}")
    return rc, out.decode(errors="replace"), text_err


@dataclass
class Iptables:
    """iptables through its command-line tools (whatever backend `iptables` is on this host)."""

    iptables: str = "iptables"
    restore_cmd: str = "iptables-restore"
    save_cmd: str = "iptables-save"
    wait: str = "5"

    async def restore(self, text: str) -> None:
        if text:
            await _run(self.restore_cmd, "-w", self.wait, "--noflush", stdin=text)

    async def save(self, table: str) -> str:
        return (await _run(self.save_cmd, "-t", table))[1]

    async def chains(self) -> dict[str, set[str]]:
        """The grove chains present in the kernel, per table."""
        return {table: set(chains) for table, chains in (await self.rule_counts()).items()}

    async def rule_counts(self) -> dict[str, dict[str, int]]:
        """table -> grove chain -> how many rules it holds in the kernel."""
        out: dict[str, dict[str, int]] = {}
        for table in TABLES:
            counts: dict[str, int] = {}
            for line in (await self.save(table)).splitlines():
                if line.startswith(":" + PREFIX):
                    counts.setdefault(line[1:].split()[0], 0)
                elif line.startswith("-A " + PREFIX):
                    chain = line.split()[1]
                    counts[chain] = counts.get(chain, 0) + 1
            out[table] = counts
        return out

    async def has_jump(self, jump: Jump) -> bool:
        rc, _, _ = await _run(
            self.iptables, "-w", self.wait, "-t", jump.table, "-C", jump.chain, *jump.args(), check=False
        )
        return rc == 0

    async def ensure_jumps(self, jumps: Sequence[Jump] = JUMPS) -> list[Jump]:
        """Insert the jumps that are missing at the top of their built-in chains; returns them.
        (Their targets must exist.)"""
        added = []
        for jump in jumps:
            if not await self.has_jump(jump):
                await _run(
                    self.iptables, "-w", self.wait, "-t", jump.table, "-I", jump.chain, "1", *jump.args()
                )
                added.append(jump)
        return added

    async def delete_jumps(self, jumps: Sequence[Jump] = JUMPS) -> None:
        for jump in jumps:
            while await self.has_jump(jump):
                await _run(self.iptables, "-w", self.wait, "-t", jump.table, "-D", jump.chain, *jump.args())

    async def cleanup(self) -> None:
        """Remove every jump into grove's chains, then the chains."""
        await self.delete_jumps()
        await self.restore(cleanup_text(await self.chains()))


# --- the host's interfaces --------------------------------------------------------------------


async def _addresses(dev: str | None = None) -> list[dict]:
    args = ["ip", "-j", "-4", "addr", "show"] + (["dev", dev] if dev else [])
    _, out, _ = await _run(*args)
    try:
        return json.loads(out or "[]")
    except json.JSONDecodeError as e:
        raise NetfilterError(f"cannot read `ip -j addr` output: {e}") from None


async def find_bridge(pod_cidr: str) -> str | None:
    """The interface holding an address inside the pod network (Docker's bridge for `grove`)."""
    net = ipaddress.ip_network(pod_cidr, strict=False)
    for link in await _addresses():
        for addr in link.get("addr_info") or ():
            try:
                if ipaddress.ip_address(addr.get("local", "")) in net:
                    return str(link["ifname"])
            except ValueError:
                continue
    return None


def set_hairpin(bridge: str) -> int:
    """Turn on hairpin mode on every port of the bridge, so a pod can reach itself through its own
    service (the kubelet's --hairpin-mode=hairpin-veth). Returns how many ports were changed."""
    changed = 0
    for path in Path(f"/sys/class/net/{bridge}/brif").glob("*/hairpin_mode"):
        try:
            if path.read_text().strip() == "0":
                path.write_text("1")
                changed += 1
        except OSError:
            continue  # the port went away with its pod
    return changed


async def lb_addresses() -> set[str]:
    """The load balancer IPs grove has put on `lo`."""
    found = set()
    for link in await _addresses("lo"):
        for addr in link.get("addr_info") or ():
            if addr.get("label") == LB_LABEL:
                found.add(str(addr.get("local")))
    return found


async def sync_lb_addresses(wanted: Iterable[str]) -> tuple[set[str], set[str]]:
    """Make the grove-labelled addresses on `lo` exactly `wanted` (as /32s); (added, removed)."""
    want = set(wanted)
    have = await lb_addresses()
    for ip in sorted(want - have):
        rc, _, err = await _run("ip", "addr", "add", f"{ip}/32", "dev", "lo", "label", LB_LABEL, check=False)
        if rc != 0 and "File exists" not in err:
            raise NetfilterError(f"cannot add load balancer address {ip} to lo: {err.strip()}")
    for ip in sorted(have - want):
        await _run("ip", "addr", "del", f"{ip}/32", "dev", "lo", check=False)
    return want - have, have - want


# --- sysctls, remembered so cleanup can put them back ----------------------------------------


@dataclass
class HostState:
    """Sysctl values the proxy changed, saved to disk so even a later `--cleanup` restores them."""

    path: Path
    sysctls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: str) -> HostState:
        path = Path(state_dir) / "proxy-state.json"
        try:
            data = json.loads(path.read_text())
            sysctls = {str(k): str(v) for k, v in (data.get("sysctls") or {}).items()}
        except (OSError, ValueError, AttributeError):
            sysctls = {}
        return cls(path, sysctls)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sysctls": self.sysctls}))
        tmp.replace(self.path)

    def set_sysctl(self, path: str, value: str) -> None:
        """Write a /proc/sys value, remembering the original the first time."""
        current = Path(path).read_text().strip()
        if current == value:
            return
        if path not in self.sysctls:
            self.sysctls[path] = current
            self.save()
        Path(path).write_text(value)

    def restore(self) -> None:
        for path, value in list(self.sysctls.items()):
            try:
                Path(path).write_text(value)
            except OSError:
                pass  # the interface is gone, and its setting with it
            del self.sysctls[path]
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def route_localnet_path(bridge: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"


class HostLock:
    """An exclusive lock on the host's service rules; a second proxy fails with a clear message."""

    def __init__(self, path: str = HOST_LOCK) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise NetfilterError(
                f"another grove proxy (pid {owner}) owns this host's service rules ({self.path}); "
                "run one proxy per host"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
