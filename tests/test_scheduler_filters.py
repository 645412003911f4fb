"""Each scheduler filter alone, over hand-built snapshots: what passes, what fails, and the
exact kube-scheduler reason it gives. No I/O."""

from __future__ import annotations

import pytest

from orchestrator.scheduler import filters as f
from orchestrator.scheduler.snapshot import Resources, int_value, milli_value, pod_requests
from orchestrator.scheduler.testing import anti_affinity, info, node, pod, snapshot, taint


def run(filter_fn, p, n, snap=None):
    snap = snap or snapshot(n)
    return filter_fn(info(p), snap.nodes[n["metadata"]["name"]], snap)


def prepared(prepare, p, snap, node_name):
    pod_info = info(p)
    check = prepare(pod_info, snap)
    assert check is not None
    return check(pod_info, snap.nodes[node_name], snap)


# --- quantities and requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "milli"),
    [("100m", 100), ("1.5", 1500), ("2", 2000), ("2e3", 2_000_000), ("0.1", 100), ("1001u", 2), (3, 3000)],
)
def test_cpu_quantities_in_millicores(text, milli):
    assert milli_value(text) == milli


@pytest.mark.parametrize(
    ("text", "value"),
    [("128Mi", 128 * 2**20), ("1G", 10**9), ("1Gi", 2**30), ("2e3", 2000), ("1.5Ki", 1536), ("500m", 1)],
)
def test_memory_quantities_in_bytes(text, value):
    assert int_value(text) == value


def test_unparseable_quantity_counts_as_zero():
    assert milli_value("lots") == 0


def test_requests_sum_containers_take_max_with_init_and_add_overhead():
    spec = {
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m"}, "limits": {"memory": "32Mi"}}},
        ],
        "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "16Mi"}}}],
        "overhead": {"cpu": "50m"},
    }
    r = pod_requests(spec)
    # cpu: max(300m, 1000m) + 50m overhead; memory: 64Mi + 32Mi (limit stands in for a request).
    assert (r.cpu, r.memory) == (1050, 96 * 2**20)


def test_sidecar_init_containers_add_to_the_running_total():
    spec = {
        "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
        "initContainers": [
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
            {"name": "init", "resources": {"requests": {"cpu": "250m"}}},
        ],
    }
    # Running: 100m + 200m sidecar; while "init" runs: 250m + 200m sidecar = 450m.
    assert pod_requests(spec).cpu == 450


def test_non_zero_requests_default_for_request_less_containers():
    spec = {"containers": [{"name": "a"}, {"name": "b", "resources": {"requests": {"cpu": "0"}}}]}
    r = pod_requests(spec, non_zero=True)
    assert r.cpu == 100  # an explicit 0 stays 0
    assert r.memory == 2 * 200 * 2**20


def test_extended_resources_are_parsed():
    assert Resources.from_list({"nvidia.com/gpu": "2", "pods": "10"}).scalar == {"nvidia.com/gpu": 2}


# --- NodeUnschedulable, NodeName, NodeReady -----------------------------------------------------


def test_cordoned_node_is_unschedulable():
    assert run(f.node_unschedulable, pod("p"), node("n", unschedulable=True)) == "node(s) were unschedulable"
    assert run(f.node_unschedulable, pod("p"), node("n")) is None


def test_cordon_toleration_lets_a_pod_in():
    tolerant = pod("p", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}])
    assert run(f.node_unschedulable, tolerant, node("n", unschedulable=True)) is None


def test_node_name_preset():
    assert (
        run(f.node_name, pod("p", node_name="other"), node("n"))
        == "node(s) didn't match the requested node name"
    )
    assert run(f.node_name, pod("p", node_name="n"), node("n")) is None


@pytest.mark.parametrize(
    ("ready", "key"),
    [
        ("False", "node.kubernetes.io/not-ready"),
        ("Unknown", "node.kubernetes.io/unreachable"),
        (None, "node.kubernetes.io/unreachable"),
    ],
)
def test_node_not_ready_repels_like_its_taint(ready, key):
    assert run(f.node_ready, pod("p"), node("n", ready=ready)) == f"node(s) had untolerated taint {{{key}: }}"
    tolerant = pod("p", tolerations=[{"key": key, "operator": "Exists", "effect": "NoSchedule"}])
    assert run(f.node_ready, tolerant, node("n", ready=ready)) is None


def test_ready_node_passes():
    assert run(f.node_ready, pod("p"), node("n")) is None


# --- TaintToleration ----------------------------------------------------------------------------


def test_untolerated_taint_is_named_with_key_and_value():
    n = node("n", taints=[taint("dedicated", "gpu")])
    assert run(f.taint_toleration, pod("p"), n) == "node(s) had untolerated taint {dedicated: gpu}"


def test_control_plane_taint_renders_empty_value():
    n = node("n", taints=[taint("node-role.kubernetes.io/control-plane")])
    assert (
        run(f.taint_toleration, pod("p"), n)
        == "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
    )


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "gpu"},  # operator defaults to Equal, effect empty = all
        {"key": "dedicated", "operator": "Exists"},
        {"operator": "Exists"},  # empty key with Exists tolerates everything
    ],
)
def test_tolerations_that_match(toleration):
    n = node("n", taints=[taint("dedicated", "gpu")])
    assert run(f.taint_toleration, pod("p", tolerations=[toleration]), n) is None


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "dedicated", "value": "cpu"},
        {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},
        {"key": "other", "operator": "Exists"},
    ],
)
def test_tolerations_that_do_not_match(toleration):
    n = node("n", taints=[taint("dedicated", "gpu")])
    assert run(f.taint_toleration, pod("p", tolerations=[toleration]), n) is not None


def test_no_execute_filters_prefer_no_schedule_does_not():
    assert run(f.taint_toleration, pod("p"), node("n", taints=[taint("k", "v", "NoExecute")])) is not None
    assert run(f.taint_toleration, pod("p"), node("n", taints=[taint("k", "v", "PreferNoSchedule")])) is None


def test_first_untolerated_taint_is_reported():
    n = node("n", taints=[taint("a", "1"), taint("b", "2")])
    tolerant_of_a = pod("p", tolerations=[{"key": "a", "operator": "Exists"}])
    assert run(f.taint_toleration, tolerant_of_a, n) == "node(s) had untolerated taint {b: 2}"


# --- NodeResourcesFit ---------------------------------------------------------------------------


def test_fits_when_requests_fit_allocatable():
    assert (
        run(f.node_resources_fit, pod("p", cpu="4", memory="8Gi"), node("n", cpu="4", memory="8Gi")) is None
    )


def test_insufficient_cpu_and_memory_are_both_reported():
    reasons = run(f.node_resources_fit, pod("p", cpu="5", memory="9Gi"), node("n", cpu="4", memory="8Gi"))
    assert reasons == ("Insufficient cpu", "Insufficient memory")


def test_pods_already_there_count_against_allocatable():
    n = node("n", cpu="1", memory="1Gi")
    snap = snapshot(n, pods=(pod("a", cpu="600m", node_name="n"),))
    assert run(f.node_resources_fit, pod("b", cpu="400m"), n, snap) is None
    assert run(f.node_resources_fit, pod("b", cpu="500m"), n, snap) == ("Insufficient cpu",)


def test_too_many_pods():
    n = node("n", pods=1)
    snap = snapshot(n, pods=(pod("a", node_name="n"),))
    assert run(f.node_resources_fit, pod("b"), n, snap) == ("Too many pods",)


def test_ephemeral_storage_and_extended_resources():
    n = node("n", extra={"ephemeral-storage": "1Gi", "example.com/dongle": "1"})
    big_disk = pod("p")
    big_disk["spec"]["containers"][0]["resources"] = {"requests": {"ephemeral-storage": "2Gi"}}
    assert run(f.node_resources_fit, big_disk, n) == ("Insufficient ephemeral-storage",)
    dongles = pod("p")
    dongles["spec"]["containers"][0]["resources"] = {"requests": {"example.com/dongle": "2"}}
    assert run(f.node_resources_fit, dongles, n) == ("Insufficient example.com/dongle",)
    gpu = pod("p")
    gpu["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    assert run(f.node_resources_fit, gpu, n) == ("Insufficient nvidia.com/gpu",)


def test_removing_a_pod_gives_its_room_back():
    n = node("n", cpu="1")
    snap = snapshot(n, pods=(pod("a", cpu="1", node_name="n"),))
    assert run(f.node_resources_fit, pod("b", cpu="1"), n, snap) == ("Insufficient cpu",)
    snap.remove_pod("default/a")
    assert run(f.node_resources_fit, pod("b", cpu="1"), n, snap) is None


# --- NodeAffinity -------------------------------------------------------------------------------

AFFINITY_ERR = "node(s) didn't match Pod's node affinity/selector"


def required(*terms):
    return {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}
    }


def expr(key, operator, *values):
    e = {"key": key, "operator": operator}
    if values:
        e["values"] = list(values)
    return {"matchExpressions": [e]}


def test_node_selector():
    n = node("n", labels={"disk": "ssd"})
    assert run(f.node_affinity, pod("p", nodeSelector={"disk": "ssd"}), n) is None
    assert run(f.node_affinity, pod("p", nodeSelector={"disk": "hdd"}), n) == AFFINITY_ERR
    assert run(f.node_affinity, pod("p", nodeSelector={"gpu": "yes"}), n) == AFFINITY_ERR


@pytest.mark.parametrize(
    ("term", "fits"),
    [
        (expr("zone", "In", "a", "b"), True),
        (expr("zone", "In", "c"), False),
        (expr("zone", "NotIn", "c"), True),
        (expr("zone", "NotIn", "a"), False),
        (expr("zone", "Exists"), True),
        (expr("gpu", "Exists"), False),
        (expr("gpu", "DoesNotExist"), True),
        (expr("zone", "DoesNotExist"), False),
        (expr("cores", "Gt", "8"), True),
        (expr("cores", "Gt", "16"), False),
        (expr("cores", "Lt", "32"), True),
        (expr("cores", "Lt", "16"), False),
        (expr("zone", "Gt", "1"), False),  # not an integer: no match
        ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}, True),
        ({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["m"]}]}, False),
        ({}, False),  # an empty term matches nothing
    ],
)
def test_required_node_affinity_operators(term, fits):
    n = node("n", labels={"zone": "a", "cores": "16"})
    result = run(f.node_affinity, pod("p", affinity=required(term)), n)
    assert (result is None) is fits


def test_node_affinity_terms_are_ored_expressions_anded():
    n = node("n", labels={"zone": "a", "disk": "ssd"})
    both = {
        "matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]},
            {"key": "disk", "operator": "In", "values": ["hdd"]},
        ]
    }
    assert run(f.node_affinity, pod("p", affinity=required(both)), n) == AFFINITY_ERR
    assert run(f.node_affinity, pod("p", affinity=required(both, expr("disk", "In", "ssd"))), n) is None


def test_node_selector_and_affinity_must_both_hold():
    n = node("n", labels={"zone": "a"})
    p = pod("p", nodeSelector={"zone": "b"}, affinity=required(expr("zone", "In", "a")))
    assert run(f.node_affinity, p, n) == AFFINITY_ERR


# --- NodePorts ----------------------------------------------------------------------------------

PORTS_ERR = "node(s) didn't have free ports for the requested pod ports"


def port(host_port, protocol="TCP", host_ip=None):
    p = {"containerPort": 80, "hostPort": host_port, "protocol": protocol}
    if host_ip:
        p["hostIP"] = host_ip
    return p


@pytest.mark.parametrize(
    ("existing", "wanted", "free"),
    [
        (port(8080), port(8080), False),
        (port(8080), port(8081), True),
        (port(8080, "UDP"), port(8080, "TCP"), True),
        (port(8080, host_ip="10.0.0.1"), port(8080, host_ip="10.0.0.2"), True),
        (port(8080, host_ip="10.0.0.1"), port(8080, host_ip="10.0.0.1"), False),
        (port(8080, host_ip="10.0.0.1"), port(8080), False),  # 0.0.0.0 clashes with any address
        (port(8080), port(8080, host_ip="10.0.0.1"), False),
    ],
)
def test_host_ports(existing, wanted, free):
    n = node("n")
    snap = snapshot(n, pods=(pod("a", node_name="n", ports=[existing]),))
    result = run(f.node_ports, pod("b", ports=[wanted]), n, snap)
    assert result == (None if free else PORTS_ERR)


def test_host_network_uses_container_ports_as_host_ports():
    n = node("n")
    snap = snapshot(n, pods=(pod("a", node_name="n", hostNetwork=True, ports=[{"containerPort": 53}]),))
    assert run(f.node_ports, pod("b", ports=[port(53)]), n, snap) == PORTS_ERR


# --- InterPodAffinity ---------------------------------------------------------------------------


def zoned(name, zone):
    return node(name, labels={"topology.kubernetes.io/zone": zone})


def test_anti_affinity_by_hostname():
    snap = snapshot(node("n1"), node("n2"), pods=(pod("a", labels={"app": "web"}, node_name="n1"),))
    p = pod("b", labels={"app": "web"}, affinity=anti_affinity({"app": "web"}))
    assert (
        prepared(f.prepare_inter_pod_affinity, p, snap, "n1")
        == "node(s) didn't match pod anti-affinity rules"
    )
    assert prepared(f.prepare_inter_pod_affinity, p, snap, "n2") is None


def test_anti_affinity_by_zone_covers_every_node_of_the_zone():
    snap = snapshot(
        zoned("n1", "a"),
        zoned("n2", "a"),
        zoned("n3", "b"),
        pods=(pod("x", labels={"app": "db"}, node_name="n1"),),
    )
    p = pod("y", affinity=anti_affinity({"app": "db"}, "topology.kubernetes.io/zone"))
    assert (
        prepared(f.prepare_inter_pod_affinity, p, snap, "n2")
        == "node(s) didn't match pod anti-affinity rules"
    )
    assert prepared(f.prepare_inter_pod_affinity, p, snap, "n3") is None


def test_existing_pods_anti_affinity_is_respected():
    placed = pod("a", labels={"app": "solo"}, node_name="n1", affinity=anti_affinity({"app": "web"}))
    snap = snapshot(node("n1"), node("n2"), pods=(placed,))
    newcomer = pod("b", labels={"app": "web"})
    assert (
        prepared(f.prepare_inter_pod_affinity, newcomer, snap, "n1")
        == "node(s) didn't satisfy existing pods anti-affinity rules"
    )
    assert prepared(f.prepare_inter_pod_affinity, newcomer, snap, "n2") is None


def test_anti_affinity_ignores_other_namespaces():
    snap = snapshot(node("n1"), pods=(pod("a", labels={"app": "web"}, namespace="other", node_name="n1"),))
    p = pod("b", affinity=anti_affinity({"app": "web"}))
    assert prepared(f.prepare_inter_pod_affinity, p, snap, "n1") is None


def affinity_to(labels, topology_key="topology.kubernetes.io/zone"):
    return {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": labels}, "topologyKey": topology_key}
            ]
        }
    }


def test_pod_affinity_needs_a_matching_pod_in_the_domain():
    snap = snapshot(
        zoned("n1", "a"),
        zoned("n2", "a"),
        zoned("n3", "b"),
        pods=(pod("cache", labels={"app": "cache"}, node_name="n1"),),
    )
    p = pod("web", affinity=affinity_to({"app": "cache"}))
    assert prepared(f.prepare_inter_pod_affinity, p, snap, "n2") is None
    assert prepared(f.prepare_inter_pod_affinity, p, snap, "n3") == "node(s) didn't match pod affinity rules"


def test_pod_affinity_needs_the_topology_label():
    snap = snapshot(
        node("bare"), zoned("n1", "a"), pods=(pod("cache", labels={"app": "cache"}, node_name="n1"),)
    )
    p = pod("web", affinity=affinity_to({"app": "cache"}))
    assert (
        prepared(f.prepare_inter_pod_affinity, p, snap, "bare") == "node(s) didn't match pod affinity rules"
    )


def test_first_pod_of_a_self_affine_group_may_go_anywhere():
    snap = snapshot(zoned("n1", "a"))
    first = pod("w1", labels={"app": "w"}, affinity=affinity_to({"app": "w"}))
    assert prepared(f.prepare_inter_pod_affinity, first, snap, "n1") is None
    loner = pod("x", labels={"app": "x"}, affinity=affinity_to({"app": "w"}))
    assert (
        prepared(f.prepare_inter_pod_affinity, loner, snap, "n1") == "node(s) didn't match pod affinity rules"
    )


def test_inter_pod_affinity_is_skipped_when_nothing_asks_for_it():
    snap = snapshot(node("n1"), pods=(pod("a", labels={"app": "web"}, node_name="n1"),))
    assert f.prepare_inter_pod_affinity(info(pod("b")), snap) is None


# --- PodTopologySpread (DoNotSchedule) ----------------------------------------------------------


def spread(max_skew=1, key="topology.kubernetes.io/zone", when="DoNotSchedule", labels=None):
    return [
        {
            "maxSkew": max_skew,
            "topologyKey": key,
            "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": labels or {"app": "web"}},
        }
    ]


def test_topology_spread_limits_skew_between_zones():
    placed = tuple(pod(f"w{i}", labels={"app": "web"}, node_name="n1") for i in range(2))
    snap = snapshot(zoned("n1", "a"), zoned("n2", "b"), pods=placed)
    p = pod("w9", labels={"app": "web"}, topologySpreadConstraints=spread(max_skew=1))
    # zone a has 2, zone b has 0: another in a would make the skew 3.
    assert (
        prepared(f.prepare_topology_spread, p, snap, "n1")
        == "node(s) didn't match pod topology spread constraints"
    )
    assert prepared(f.prepare_topology_spread, p, snap, "n2") is None
    looser = pod("w9", labels={"app": "web"}, topologySpreadConstraints=spread(max_skew=3))
    assert prepared(f.prepare_topology_spread, looser, snap, "n1") is None


def test_topology_spread_requires_the_label():
    snap = snapshot(zoned("n1", "a"), node("bare"))
    p = pod("w", labels={"app": "web"}, topologySpreadConstraints=spread())
    assert (
        prepared(f.prepare_topology_spread, p, snap, "bare")
        == "node(s) didn't match pod topology spread constraints (missing required label)"
    )


def test_topology_spread_only_counts_nodes_the_pod_could_use():
    # n2 (zone b) is excluded by the pod's nodeSelector, so zone b is no domain: zone a's min is itself.
    placed = (pod("w0", labels={"app": "web"}, node_name="n1"),)
    snap = snapshot(
        node("n1", labels={"topology.kubernetes.io/zone": "a", "pool": "x"}),
        node("n2", labels={"topology.kubernetes.io/zone": "b", "pool": "y"}),
        pods=placed,
    )
    p = pod("w1", labels={"app": "web"}, nodeSelector={"pool": "x"}, topologySpreadConstraints=spread())
    assert prepared(f.prepare_topology_spread, p, snap, "n1") is None


def test_schedule_anyway_is_no_filter():
    snap = snapshot(zoned("n1", "a"))
    p = pod("w", labels={"app": "web"}, topologySpreadConstraints=spread(when="ScheduleAnyway"))
    assert f.prepare_topology_spread(info(p), snap) is None


def test_preemption_helps_only_for_resolvable_reasons():
    assert f.preemption_might_help(("Insufficient cpu", "Too many pods"))
    assert not f.preemption_might_help(("node(s) were unschedulable",))
    assert not f.preemption_might_help(("node(s) had untolerated taint {a: b}",))
