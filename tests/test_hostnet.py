"""A pod subnet claimed by another host interface: abandoned bridges go, other overlaps are refused.

The real-engine tests use their own network name and subnet (10.231.0.0/16), so they never
touch the `grove` network other tests share.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import docker
import pytest

from node.runtime import hostnet
from node.runtime.docker_runtime import DockerRuntime
from node.runtime.types import NetworkError
from tests.dockerutil import docker_client  # noqa: F401 - fixture

SUBNET = "10.231.0.0/16"


def addr(name: str, local: str, prefixlen: int, master: str | None = None) -> dict:
    entry = {"ifname": name, "addr_info": [{"family": "inet", "local": local, "prefixlen": prefixlen}]}
    if master:
        entry["master"] = master
    return entry


def test_overlap_ignores_the_own_bridge_and_other_subnets() -> None:
    addrs = [
        addr("br-aaaaaaaaaaaa", "10.88.0.1", 16),
        addr("eth0", "192.0.2.2", 24),
        addr("docker0", "172.17.0.1", 16),
        {"ifname": "lo", "addr_info": [{"family": "inet6", "local": "::1", "prefixlen": 128}]},
    ]
    assert hostnet.overlapping_claims(addrs, "10.88.0.0/16", "br-aaaaaaaaaaaa") == []


def test_overlap_finds_a_second_bridge_and_a_wider_network() -> None:
    addrs = [
        addr("br-aaaaaaaaaaaa", "10.88.0.1", 16),
        addr("br-bbbbbbbbbbbb", "10.88.0.1", 16),
        addr("vpn0", "10.0.0.7", 8),
        addr("veth1", "10.89.0.1", 16),
    ]
    claims = hostnet.overlapping_claims(addrs, "10.88.0.0/16", "br-aaaaaaaaaaaa")
    assert [(c.interface, c.address) for c in claims] == [
        ("br-bbbbbbbbbbbb", "10.88.0.1"),
        ("vpn0", "10.0.0.7"),
    ]


def test_only_a_portless_docker_bridge_unknown_to_the_engine_is_abandoned() -> None:
    stale = hostnet.Claim("br-0123456789ab", "10.88.0.1", has_ports=False)
    assert hostnet.abandoned(stale, ["ffff" * 16])
    assert not hostnet.abandoned(stale, ["0123456789ab" + "0" * 52])  # the engine still has it
    assert not hostnet.abandoned(hostnet.Claim("br-0123456789ab", "10.88.0.1", has_ports=True), [])
    assert not hostnet.abandoned(hostnet.Claim("vpn0", "10.0.0.7", has_ports=False), [])


def test_ports_are_seen_through_master() -> None:
    addrs = [addr("br-bbbbbbbbbbbb", "10.88.0.1", 16), {"ifname": "veth9", "master": "br-bbbbbbbbbbbb"}]
    (claim,) = hostnet.overlapping_claims(addrs, "10.88.0.0/16", "br-aaaaaaaaaaaa")
    assert claim.has_ports


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.fixture
def runtime(docker_client: docker.DockerClient) -> Iterator[DockerRuntime]:  # noqa: F811
    name = f"grove-hostnet-{uuid.uuid4().hex[:6]}"
    yield DockerRuntime(docker_client, network=name, subnet=SUBNET)
    for net in docker_client.networks.list(names=[name]):
        net.remove()


@pytest.fixture
def interface() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        if link_exists(name):
            ip("link", "delete", name)


@pytest.mark.docker
def test_a_bridge_left_by_a_dead_engine_is_removed(runtime: DockerRuntime, interface: list[str]) -> None:
    stale = "br-" + uuid.uuid4().hex[:12]
    interface.append(stale)
    ip("link", "add", stale, "type", "bridge")
    ip("addr", "add", "10.231.0.1/16", "dev", stale)
    ip("link", "set", stale, "up")

    info = runtime.ensure_network()

    assert info.subnet == SUBNET
    assert not link_exists(stale)
    assert hostnet.overlapping_claims(hostnet.host_addresses() or [], SUBNET, f"br-{info.id[:12]}") == []


@pytest.mark.docker
def test_any_other_interface_in_the_subnet_is_refused(runtime: DockerRuntime, interface: list[str]) -> None:
    other = "grovetest" + uuid.uuid4().hex[:4]
    interface.append(other)
    ip("link", "add", other, "type", "bridge")  # not named like a Docker bridge
    ip("addr", "add", "10.231.5.5/24", "dev", other)

    with pytest.raises(NetworkError, match=f"{other} holds 10.231.5.5.*--pod-subnet"):
        runtime.ensure_network()
    assert link_exists(other)  # not ours to remove
