"""Other host interfaces that claim the pod subnet.

A Docker bridge network only works if its subnet is routed to its own bridge. When an engine
dies without cleaning up (or a second engine with its own --data-root ran earlier), its
`br-<id>` interface can stay behind holding the same addresses; a new engine happily creates a
second bridge on the same subnet, the kernel routes pod traffic to the dead one, and pods cannot
reach each other — silently. This module finds such interfaces (pure, from `ip -j addr`), and
removes the ones that are provably abandoned: a docker-style bridge with no ports, unknown to
the running engine. Anything else that overlaps is reported, so the user can pick another
`--pod-subnet` instead of chasing dropped packets.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_DOCKER_BRIDGE = re.compile(r"^br-([0-9a-f]{12})$")


@dataclass(frozen=True)
class Claim:
    """A host interface with an address inside the pod subnet."""

    interface: str
    address: str
    has_ports: bool

    def docker_network_id(self) -> str | None:
        """The 12-hex network id a Docker engine named this bridge after, if it is one."""
        m = _DOCKER_BRIDGE.match(self.interface)
        return m.group(1) if m else None


def overlapping_claims(addrs: Iterable[Mapping[str, Any]], subnet: str, own_interface: str) -> list[Claim]:
    """Interfaces other than `own_interface` whose IPv4/IPv6 networks overlap `subnet`.

    `addrs` is `ip -j addr show` output, each entry with `ifname`, `addr_info` and, for
    interfaces enslaved to a bridge, `master`.
    """
    net = ipaddress.ip_network(subnet, strict=False)
    entries = list(addrs)
    masters = {e.get("master") for e in entries if e.get("master")}
    claims = []
    for e in entries:
        name = e.get("ifname", "")
        if name == own_interface:
            continue
        for info in e.get("addr_info") or []:
            try:
                iface_net = ipaddress.ip_interface(f"{info['local']}/{info.get('prefixlen', 32)}").network
            except (KeyError, ValueError):
                continue
            if iface_net.version == net.version and iface_net.overlaps(net):
                claims.append(Claim(name, str(info["local"]), has_ports=name in masters))
                break
    return claims


def abandoned(claim: Claim, engine_network_ids: Iterable[str]) -> bool:
    """A docker bridge no container uses and the running engine does not know: safe to delete."""
    short = claim.docker_network_id()
    if short is None or claim.has_ports:
        return False
    return not any(nid.startswith(short) for nid in engine_network_ids)


def host_addresses() -> list[dict[str, Any]] | None:
    """`ip -j addr show`, or None where iproute2 is missing or fails (then nothing is checked)."""
    ip = shutil.which("ip")
    if ip is None:
        return None
    try:
        out = subprocess.run(
            [ip, "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True
        )
        return json.loads(out.stdout or "[]")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def delete_interface(name: str) -> str | None:
    """Remove a host link; the error text when that fails, None on success."""
    try:
        subprocess.run(["ip", "link", "delete", name], capture_output=True, text=True, timeout=10, check=True)
    except subprocess.CalledProcessError as e:
        return (e.stderr or str(e)).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return None
