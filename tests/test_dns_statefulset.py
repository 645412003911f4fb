"""A StatefulSet's stable network identity: `<pod>.<service>.<ns>.svc.cluster.local`.

The StatefulSet controller gives each pod hostname = its name and subdomain = spec.serviceName;
the endpoints controller then names the pod's address in the headless Service's Endpoints with
that hostname, and cluster DNS answers the name, as CoreDNS does. Checked on the zone alone
(pure) and end to end: store, API server, scheduler, controller manager, hollow nodes and
`grove dns` as real processes, with the name following the pod's IP and the set's scale."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from kvstore.localcluster import free_port
from node.dns import ClusterZone
from tests import waiting
from tests.apiserver_fixture import ROOT, ApiServerProcess, _env, apiserver  # noqa: F401 - pytest fixture
from tests.cluster import Cluster, control_plane, stop_process, wait_for
from tests.test_dns import nxdomain, sync_query, wait_answer
from tests.test_statefulset_e2e import statefulset

pytestmark = [pytest.mark.slow]


def test_zone_answers_pod_names_under_a_headless_service():
    zone = ClusterZone()
    svc = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"clusterIP": "None", "ports": [{"port": 80}]},
    }
    ep = {
        "metadata": {"name": "web", "namespace": "shop"},
        "subsets": [
            {
                "addresses": [
                    {"ip": "10.128.0.4", "hostname": "web-0"},
                    {"ip": "10.128.1.7", "hostname": "web-1"},
                ],
                "notReadyAddresses": [{"ip": "10.128.0.9", "hostname": "web-2"}],
                "ports": [{"port": 80}],
            }
        ],
    }
    zone.load([svc], [ep])

    def ask(name: str) -> DNSRecord:
        reply = zone.answer(DNSRecord.question(name, "A"))
        assert reply is not None
        return reply

    assert [str(r.rdata) for r in ask("web-0.web.shop.svc.cluster.local").rr] == ["10.128.0.4"]
    assert [str(r.rdata) for r in ask("WEB-1.web.shop.svc.cluster.local.").rr] == ["10.128.1.7"]
    assert sorted(str(r.rdata) for r in ask("web.shop.svc.cluster.local").rr) == ["10.128.0.4", "10.128.1.7"]
    # Not ready: no name yet (publishNotReadyAddresses would have put it among the addresses).
    assert ask("web-2.web.shop.svc.cluster.local").header.rcode == RCODE.NXDOMAIN
    # PTR of a pod address is its stable name.
    ptr = zone.answer(DNSRecord.question("4.0.128.10.in-addr.arpa", "PTR"))
    assert ptr is not None and [str(r.rdata) for r in ptr.rr] == ["web-0.web.shop.svc.cluster.local."]


@pytest.fixture(scope="module")
def cluster(apiserver: ApiServerProcess) -> Iterator[Cluster]:  # noqa: F811
    with control_plane(apiserver, "sts-dns", "stsdns-") as c:
        yield c


@pytest.fixture
def dns(apiserver: ApiServerProcess, tmp_path) -> Iterator[tuple[str, int]]:  # noqa: F811
    port = free_port()
    with open(tmp_path / "dns.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.proxy_cli", "dns", "--server", apiserver.url,
             "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9"],
            stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
        )  # fmt: skip
        try:
            yield ("127.0.0.1", port)
        finally:
            stop_process(proc, timeout=10)


def pod_ip(cluster: Cluster, ns: str, name: str) -> str:
    pod = cluster.get(f"/api/v1/namespaces/{ns}/pods/{name}", missing_ok=True) or {}
    return pod.get("status", {}).get("podIP", "")


def test_statefulset_pods_resolve_by_name(cluster: Cluster, dns: tuple[str, int]) -> None:
    ns = cluster.namespace("sts-dns")
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]},
    }
    cluster.apply(ns, headless, statefulset("web", 2))
    wait_for(lambda: pod_ip(cluster, ns, "web-1"), "web-1 has an IP", check=cluster.check)
    ips = {name: pod_ip(cluster, ns, name) for name in ("web-0", "web-1")}
    wait_answer(dns, f"web-0.web.{ns}.svc.cluster.local", [ips["web-0"]])
    wait_answer(dns, f"web-1.web.{ns}.svc.cluster.local", [ips["web-1"]])
    wait_answer(dns, f"web.{ns}.svc.cluster.local", sorted(ips.values()))
    wait_answer(
        dns,
        f"_http._tcp.web.{ns}.svc.cluster.local",
        sorted(f"0 50 8080 web-{i}.web.{ns}.svc.cluster.local." for i in range(2)),
        "SRV",
    )

    # Scaled down, web-1's name goes away; web-0 keeps its name.
    cluster.kubectl("scale", "-n", ns, "sts/web", "--replicas=1")
    waiting.wait_for(
        lambda: nxdomain(sync_query(dns, f"web-1.web.{ns}.svc.cluster.local")),
        "web-1's name to go after the scale down", 30, check=cluster.check,
    )  # fmt: skip
    reply = sync_query(dns, f"web-0.web.{ns}.svc.cluster.local")
    assert reply is not None and [str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A] == [ips["web-0"]]

    # A pod that is deleted comes back under the same name, and the name follows its new address.
    cluster.kubectl("delete", "pod", "-n", ns, "web-0", "--wait=false")
    wait_for(
        lambda: (
            (p := cluster.get(f"/api/v1/namespaces/{ns}/pods/web-0", missing_ok=True))
            and not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("podIP")
        ),
        "web-0 recreated",
        check=cluster.check,
    )
    wait_answer(dns, f"web-0.web.{ns}.svc.cluster.local", [pod_ip(cluster, ns, "web-0")])
