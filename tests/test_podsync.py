"""The node agent's decisions and pod status, from hand-made engine snapshots (no engine, no clock)."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from node.podsync import (
    BackOff,
    NoProbes,
    Waiting,
    compute_actions,
    go_duration,
    parse_time,
    pod_phase,
    pod_status,
    rfc3339,
    terminated_phase,
)
from node.runtime.spec import spec_hash
from node.runtime.types import KIND_CONTAINER, KIND_SANDBOX, ContainerInfo, ContainerState, PodContainers

NOW = 1_700_000_000.0
UID = "0b5c1f0e-1111-2222-3333-444455556666"
_seq = itertools.count(1)


def make_pod(
    containers: list[dict[str, Any]], init: list[dict[str, Any]] | None = None, **spec: Any
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": UID},
        "spec": {"containers": containers, "restartPolicy": "Always", **spec},
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }
    if init:
        pod["spec"]["initContainers"] = init
    return pod


def ctr(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "grove/busybox:1.35", **extra}


def running(started: float = NOW - 30) -> ContainerState:
    return ContainerState("running", started_at=rfc3339(started))


def exited(code: int, finished: float = NOW - 1, started: float | None = None) -> ContainerState:
    return ContainerState(
        "terminated",
        reason="Completed" if code == 0 else "Error",
        exit_code=code,
        started_at=rfc3339(started if started is not None else finished - 1),
        finished_at=rfc3339(finished),
    )


def info(
    spec: dict[str, Any] | None,
    state: ContainerState,
    restart: int = 0,
    sandbox: str = "sandbox-1",
    kind: str = KIND_CONTAINER,
    ip: str = "",
) -> ContainerInfo:
    n = next(_seq)
    name = "POD" if spec is None else spec["name"]
    cid = f"{n:064x}"
    state.container_id = f"docker://{cid}"
    return ContainerInfo(
        id=cid,
        name=f"grove_default_web_{name}_{restart}",
        kind=kind,
        pod_uid=UID,
        pod_namespace="default",
        pod_name="web",
        container_name=name,
        restart_count=restart,
        image="grove/busybox:1.35",
        image_id="sha256:abc",
        created=f"2024-01-01T00:00:{n:02d}.000000000Z",
        state=state,
        ip=ip,
        sandbox_id="" if kind == KIND_SANDBOX else sandbox,
        spec_hash="" if spec is None else spec_hash(spec),
    )


def sandbox(state: ContainerState | None = None, attempt: int = 0, ip: str = "10.88.0.5") -> ContainerInfo:
    s = info(None, state or running(), restart=attempt, kind=KIND_SANDBOX, ip=ip)
    s.id = f"sandbox-{attempt + 1}"
    return s


def observed(*containers: ContainerInfo, sandboxes: list[ContainerInfo] | None = None) -> PodContainers:
    return PodContainers(
        uid=UID,
        namespace="default",
        name="web",
        sandboxes=[sandbox()] if sandboxes is None else sandboxes,
        containers=list(containers),
    )


class Probes:
    """A probe view with results set by the test."""

    def __init__(self, ready: bool = True, started: bool = True, failed: str | None = None) -> None:
        self.ready, self.is_started, self.failure = ready, started, failed

    def started(self, uid: str, name: str, container_id: str, has_probe: bool) -> bool:
        return self.is_started or not has_probe

    def readiness(self, uid: str, name: str, container_id: str) -> bool:
        return self.ready

    def failed(self, uid: str, name: str, container_id: str) -> str | None:
        return self.failure


def names(actions: Any) -> list[tuple[str, int]]:
    return [(s.name, s.restart_count) for s in actions.start]


# --- actions -------------------------------------------------------------------------------------


def test_new_pod_gets_a_sandbox_and_all_containers() -> None:
    pod = make_pod([ctr("a"), ctr("b")])
    actions = compute_actions(pod, None, NoProbes(), BackOff(), NOW)
    assert actions.create_sandbox and actions.sandbox_attempt == 0 and not actions.kill_pod
    assert names(actions) == [("a", 0), ("b", 0)]


def test_running_pod_is_left_alone_which_is_how_adoption_works() -> None:
    a, b = ctr("a"), ctr("b")
    pod = make_pod([a, b])
    actions = compute_actions(
        pod, observed(info(a, running()), info(b, running())), NoProbes(), BackOff(), NOW
    )
    assert not actions.changes_anything and actions.terminal_phase is None and actions.requeue_after is None


def test_init_containers_run_one_at_a_time_in_order() -> None:
    i1, i2, app = ctr("init-1"), ctr("init-2"), ctr("app")
    pod = make_pod([app], init=[i1, i2])
    first = compute_actions(pod, None, NoProbes(), BackOff(), NOW)
    assert first.create_sandbox and names(first) == [("init-1", 0)] and first.start[0].init
    # init-1 still running: nothing new starts
    busy = compute_actions(pod, observed(info(i1, running())), NoProbes(), BackOff(), NOW)
    assert not busy.start
    # init-1 done: init-2 next
    nxt = compute_actions(pod, observed(info(i1, exited(0))), NoProbes(), BackOff(), NOW)
    assert names(nxt) == [("init-2", 0)]
    # both done: the app container
    done = compute_actions(
        pod, observed(info(i1, exited(0)), info(i2, exited(0))), NoProbes(), BackOff(), NOW
    )
    assert names(done) == [("app", 0)] and not done.start[0].init


def test_failed_init_container_is_retried_with_backoff_or_fails_the_pod_under_never() -> None:
    i1, app = ctr("init-1"), ctr("app")
    snapshot = observed(info(i1, exited(2)))
    retry = compute_actions(
        make_pod([app], init=[i1], restartPolicy="OnFailure"), snapshot, NoProbes(), BackOff(), NOW
    )
    assert names(retry) == [("init-1", 1)]
    never = compute_actions(
        make_pod([app], init=[i1], restartPolicy="Never"), snapshot, NoProbes(), BackOff(), NOW
    )
    assert never.terminal_phase == "Failed" and not never.start and never.kill_pod  # the sandbox is stopped


def test_init_is_not_rerun_once_app_containers_run_even_if_init_instances_are_gone() -> None:
    i1, app = ctr("init-1"), ctr("app")
    pod = make_pod([app], init=[i1])
    actions = compute_actions(pod, observed(info(app, running())), NoProbes(), BackOff(), NOW)
    assert not actions.start


def test_crash_loop_backoff_doubles_and_reports_the_kubelets_message() -> None:
    app = ctr("app")
    pod = make_pod([app])
    backoff = BackOff(initial=10, maximum=300)
    # First crash: restarted at once, and the back-off starts at 10 s.
    first = compute_actions(pod, observed(info(app, exited(1, finished=NOW - 1))), NoProbes(), backoff, NOW)
    assert names(first) == [("app", 1)] and backoff.get(f"{UID}/app") == 10
    # Second crash 2 s later: within 10 s of its finish, so it waits.
    crashed = observed(
        info(app, exited(1, finished=NOW - 2), restart=0), info(app, exited(1, finished=NOW), restart=1)
    )
    wait = compute_actions(pod, crashed, NoProbes(), backoff, NOW + 1)
    assert not wait.start
    assert wait.waiting["app"] == Waiting(
        "CrashLoopBackOff", f"back-off 10s restarting failed container=app pod=web_default({UID})"
    )
    assert wait.requeue_after == pytest.approx(9)
    # After the back-off: started again, and the next delay is 20 s.
    later = compute_actions(pod, crashed, NoProbes(), backoff, NOW + 10.5)
    assert names(later) == [("app", 2)] and backoff.get(f"{UID}/app") == 20


def test_backoff_caps_at_the_maximum_and_resets_after_a_long_run() -> None:
    b = BackOff(initial=10, maximum=300)
    delays = [b.next("k", NOW + i) for i in range(8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]
    assert b.in_backoff_since("k", NOW + 7, NOW + 8)
    # A container that ran for more than 10 minutes is not crash-looping: back to 10 s.
    assert not b.in_backoff_since("k", NOW + 7, NOW + 7 + 601)
    assert b.next("k", NOW + 7 + 601) == 10


def test_image_pull_backoff_counts_from_the_last_failure() -> None:
    b = BackOff(initial=10, maximum=300)
    assert not b.in_backoff_since_update("img", NOW)
    b.next("img", NOW)
    assert b.in_backoff_since_update("img", NOW + 9) and not b.in_backoff_since_update("img", NOW + 10)


@pytest.mark.parametrize(
    ("policy", "code", "restarts", "phase"),
    [
        ("Always", 0, True, None),
        ("Always", 1, True, None),
        ("OnFailure", 0, False, "Succeeded"),
        ("OnFailure", 1, True, None),
        ("Never", 0, False, "Succeeded"),
        ("Never", 1, False, "Failed"),
    ],
)
def test_restart_policy(policy: str, code: int, restarts: bool, phase: str | None) -> None:
    app = ctr("app")
    pod = make_pod([app], restartPolicy=policy)
    actions = compute_actions(pod, observed(info(app, exited(code))), NoProbes(), BackOff(), NOW)
    assert bool(actions.start) == restarts
    assert actions.terminal_phase == phase
    assert actions.kill_pod == (phase is not None)  # a finished pod's sandbox is stopped


def test_finished_pod_with_a_stopped_sandbox_is_not_started_again() -> None:
    app = ctr("app")
    pod = make_pod([app], restartPolicy="OnFailure")
    snapshot = observed(info(app, exited(0)), sandboxes=[sandbox(exited(0))])
    actions = compute_actions(pod, snapshot, NoProbes(), BackOff(), NOW)
    assert not actions.create_sandbox and not actions.start and actions.terminal_phase == "Succeeded"


def test_terminal_phase_in_the_api_wins() -> None:
    app = ctr("app")
    pod = make_pod([app])
    pod["status"]["phase"] = "Failed"
    actions = compute_actions(pod, observed(info(app, running())), NoProbes(), BackOff(), NOW)
    assert actions.kill_pod and not actions.start and actions.terminal_phase == "Failed"


def test_liveness_failure_kills_the_container_then_it_restarts() -> None:
    app = ctr("app", livenessProbe={"exec": {"command": ["false"]}})
    pod = make_pod([app])
    live = info(app, running())
    message = "Container app failed liveness probe, will be restarted"
    actions = compute_actions(pod, observed(live), Probes(failed=message), BackOff(), NOW)
    assert [(k.info.id, k.message, k.probe_failure) for k in actions.kill] == [(live.id, message, True)]
    assert actions.requeue_after == 0 and not actions.start
    # Killed (exit 137): restarted like any exited container under the restart policy.
    after = compute_actions(pod, observed(info(app, exited(137))), NoProbes(), BackOff(), NOW)
    assert names(after) == [("app", 1)]


def test_changed_container_spec_recreates_the_container() -> None:
    old, new = ctr("app", image="grove/busybox:1.35"), ctr("app", image="grove/busybox:latest")
    actions = compute_actions(make_pod([new]), observed(info(old, running())), NoProbes(), BackOff(), NOW)
    assert len(actions.kill) == 1 and "definition changed" in actions.kill[0].message


def test_dead_sandbox_is_recreated_and_everything_restarts() -> None:
    app = ctr("app")
    pod = make_pod([app])
    snapshot = observed(info(app, running()), sandboxes=[sandbox(exited(0))])
    actions = compute_actions(pod, snapshot, NoProbes(), BackOff(), NOW)
    assert actions.kill_pod and actions.create_sandbox and actions.sandbox_attempt == 1
    assert names(actions) == [("app", 1)]


def test_dead_sandbox_under_never_fails_the_pod() -> None:
    app = ctr("app")
    pod = make_pod([app], restartPolicy="Never")
    snapshot = observed(info(app, running()), sandboxes=[sandbox(exited(0))])
    actions = compute_actions(pod, snapshot, NoProbes(), BackOff(), NOW)
    assert not actions.create_sandbox and actions.terminal_phase == "Failed"


def test_old_instances_are_removed_keeping_the_previous_one_for_logs() -> None:
    app = ctr("app")
    pod = make_pod([app])
    oldest, previous, latest = info(app, exited(1), 0), info(app, exited(1), 1), info(app, running(), 2)
    old_sandbox = sandbox(exited(0), attempt=0)
    new_sandbox = sandbox(running(), attempt=1)
    new_sandbox.created = "2030-01-01T00:00:00Z"
    for c in (oldest, previous, latest):
        c.sandbox_id = new_sandbox.id
    snapshot = observed(oldest, previous, latest, sandboxes=[old_sandbox, new_sandbox])
    actions = compute_actions(pod, snapshot, NoProbes(), BackOff(), NOW)
    assert {c.id for c in actions.remove} == {oldest.id, old_sandbox.id}
    assert not actions.start


def test_created_but_never_started_container_is_started_again_with_the_same_count() -> None:
    app = ctr("app")
    actions = compute_actions(
        make_pod([app]), observed(info(app, ContainerState("waiting", reason="ContainerCreating"), 3)),
        NoProbes(), BackOff(), NOW,
    )  # fmt: skip
    assert names(actions) == [("app", 3)]


def test_sidecar_runs_before_app_containers_and_is_kept_running() -> None:
    side, app = ctr("side", restartPolicy="Always"), ctr("app")
    pod = make_pod([app], init=[side])
    assert names(compute_actions(pod, observed(), NoProbes(), BackOff(), NOW)) == [("side", 0)]
    up = compute_actions(pod, observed(info(side, running())), NoProbes(), BackOff(), NOW)
    assert names(up) == [("app", 0)]
    dead = compute_actions(
        pod, observed(info(side, exited(0)), info(app, running())), NoProbes(), BackOff(), NOW
    )
    assert names(dead) == [("side", 1)]


# --- status --------------------------------------------------------------------------------------


def status_of(
    pod: dict[str, Any], snapshot: PodContainers | None, probes: Any = None, **kw: Any
) -> dict[str, Any]:
    return pod_status(pod, snapshot, probes or NoProbes(), host_ip="192.0.2.10", now=NOW, **kw)


def cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


def test_status_of_a_running_ready_pod() -> None:
    a = ctr("a")
    live = info(a, running(NOW - 30))
    status = status_of(make_pod([a]), observed(live))
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.88.0.5" and status["podIPs"] == [{"ip": "10.88.0.5"}]
    assert status["hostIP"] == "192.0.2.10" and status["qosClass"] == "BestEffort"
    assert status["startTime"] == rfc3339(NOW)
    cs = status["containerStatuses"][0]
    assert cs == {
        "name": "a",
        "image": "grove/busybox:1.35",
        "imageID": "docker://sha256:abc",
        "containerID": live.container_id,
        "ready": True,
        "started": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": rfc3339(NOW - 30)}},
        "lastState": {},
    }
    for ctype in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"):
        assert cond(status, ctype)["status"] == "True", ctype


def test_readiness_probe_drives_ready() -> None:
    a = ctr("a", readinessProbe={"exec": {"command": ["true"]}})
    pod = make_pod([a])
    snapshot = observed(info(a, running()))
    not_ready = status_of(pod, snapshot, Probes(ready=False))
    assert not_ready["phase"] == "Running"
    ready_cond = cond(not_ready, "Ready")
    assert ready_cond["status"] == "False" and ready_cond["reason"] == "ContainersNotReady"
    assert ready_cond["message"] == "containers with unready status: [a]"
    assert not_ready["containerStatuses"][0]["ready"] is False
    assert cond(status_of(pod, snapshot, Probes(ready=True)), "Ready")["status"] == "True"


def test_startup_probe_gates_started_and_ready() -> None:
    a = ctr("a", startupProbe={"exec": {"command": ["true"]}})
    status = status_of(make_pod([a]), observed(info(a, running())), Probes(started=False))
    cs = status["containerStatuses"][0]
    assert cs["started"] is False and cs["ready"] is False


def test_condition_transition_time_is_kept_while_the_status_holds() -> None:
    a = ctr("a")
    pod = make_pod([a])
    pod["status"]["conditions"] = [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2019-01-01T00:00:00Z"},
        {"type": "DisruptionTarget", "status": "False", "lastTransitionTime": "2019-01-01T00:00:00Z"},
    ]
    status = status_of(pod, observed(info(a, running())))
    assert cond(status, "Ready")["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert cond(status, "ContainersReady")["lastTransitionTime"] == rfc3339(NOW)
    assert cond(status, "DisruptionTarget")["status"] == "False"  # someone else's condition is kept
    assert [c["type"] for c in status["conditions"]].count("PodScheduled") == 1


def test_waiting_reasons_for_containers_not_yet_created() -> None:
    a, b = ctr("a"), ctr("b")
    status = status_of(
        make_pod([a, b]), observed(),
        waiting={"a": Waiting("ErrImagePull", 'failed to pull image "x": not found')},
    )  # fmt: skip
    by_name = {s["name"]: s for s in status["containerStatuses"]}
    assert by_name["a"]["state"] == {
        "waiting": {"reason": "ErrImagePull", "message": 'failed to pull image "x": not found'}
    }
    assert by_name["b"]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert status["phase"] == "Pending"


def test_crash_loop_status_has_waiting_state_and_last_state() -> None:
    a = ctr("a")
    dead = info(a, exited(3), restart=2)
    wait = Waiting("CrashLoopBackOff", "back-off 20s restarting failed container=a pod=web_default(x)")
    status = status_of(make_pod([a]), observed(dead), waiting={"a": wait})
    cs = status["containerStatuses"][0]
    assert cs["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": wait.message}}
    assert (
        cs["lastState"]["terminated"]["exitCode"] == 3 and cs["lastState"]["terminated"]["reason"] == "Error"
    )
    assert cs["restartCount"] == 2 and cs["ready"] is False
    assert status["phase"] == "Running"  # restartPolicy Always: the pod runs, the container loops


def test_restarted_container_shows_the_previous_instance_as_last_state() -> None:
    a = ctr("a")
    status = status_of(make_pod([a]), observed(info(a, exited(1), 0), info(a, running(), 1)))
    cs = status["containerStatuses"][0]
    assert (
        "running" in cs["state"]
        and cs["lastState"]["terminated"]["exitCode"] == 1
        and cs["restartCount"] == 1
    )


def test_completed_pod() -> None:
    a = ctr("a")
    pod = make_pod([a], restartPolicy="Never")
    status = status_of(
        pod, observed(info(a, exited(0)), sandboxes=[sandbox(exited(0))]), terminal_phase="Succeeded"
    )
    assert status["phase"] == "Succeeded"
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert cond(status, "Ready")["reason"] == "PodCompleted"
    assert cond(status, "PodReadyToStartContainers")["status"] == "False"


def test_pod_ip_is_kept_after_the_sandbox_stopped_and_host_network_uses_the_node_ip() -> None:
    a = ctr("a")
    pod = make_pod([a], restartPolicy="Never")
    pod["status"]["podIP"] = "10.88.0.9"
    status = status_of(
        pod, observed(info(a, exited(0)), sandboxes=[sandbox(exited(0))]), terminal_phase="Succeeded"
    )
    assert status["podIP"] == "10.88.0.9"
    host = status_of(
        make_pod([a], hostNetwork=True), observed(info(a, running()), sandboxes=[sandbox(ip="")])
    )
    assert host["podIP"] == "192.0.2.10"


def test_init_status_while_initialising() -> None:
    i1, i2, app = ctr("init-1"), ctr("init-2"), ctr("app")
    status = status_of(make_pod([app], init=[i1, i2]), observed(info(i1, running())))
    assert status["phase"] == "Pending"
    init = {s["name"]: s for s in status["initContainerStatuses"]}
    assert "running" in init["init-1"]["state"]
    assert init["init-2"]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    initialized = cond(status, "Initialized")
    assert initialized["status"] == "False" and initialized["reason"] == "ContainersNotInitialized"
    assert initialized["message"] == "containers with incomplete status: [init-1 init-2]"


def test_failed_init_under_never_is_a_failed_pod() -> None:
    i1, app = ctr("init-1"), ctr("app")
    pod = make_pod([app], init=[i1], restartPolicy="Never")
    status = status_of(pod, observed(info(i1, exited(1))))
    assert status["phase"] == "Failed"


@pytest.mark.parametrize(
    ("policy", "states", "phase"),
    [
        ("Always", [{"running": {}}, {"waiting": {}}], "Pending"),
        ("Always", [{"running": {}}, {"running": {}}], "Running"),
        ("Always", [{"terminated": {"exitCode": 0}}], "Running"),
        ("Never", [{"terminated": {"exitCode": 0}}, {"terminated": {"exitCode": 0}}], "Succeeded"),
        ("Never", [{"terminated": {"exitCode": 0}}, {"terminated": {"exitCode": 2}}], "Failed"),
        ("OnFailure", [{"terminated": {"exitCode": 2}}], "Running"),
        ("Never", [{"terminated": {"exitCode": 0}}, {"running": {}}], "Running"),
    ],
)
def test_pod_phase(policy: str, states: list[dict[str, Any]], phase: str) -> None:
    pod = make_pod([ctr(f"c{i}") for i in range(len(states))], restartPolicy=policy)
    statuses = [{"name": f"c{i}", "state": s, "lastState": {}} for i, s in enumerate(states)]
    assert pod_phase(pod, [], statuses) == phase


def test_phase_of_a_pod_stopped_for_deletion() -> None:
    a, b = ctr("a"), ctr("b")
    pod = make_pod([a, b])
    assert terminated_phase(observed(info(a, exited(0)), info(b, exited(0))), pod) == "Succeeded"
    assert terminated_phase(observed(info(a, exited(0)), info(b, exited(143))), pod) == "Failed"


def test_status_does_not_mutate_the_pod() -> None:
    a = ctr("a")
    pod = make_pod([a])
    before = copy.deepcopy(pod)
    status_of(pod, observed(info(a, running())))
    compute_actions(pod, observed(info(a, running())), NoProbes(), BackOff(), NOW)
    assert pod == before


@pytest.mark.parametrize(
    ("seconds", "text"), [(10, "10s"), (20, "20s"), (80, "1m20s"), (300, "5m0s"), (0.5, "0.5s")]
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_times_round_trip() -> None:
    assert parse_time(rfc3339(NOW)) == NOW
    assert (
        parse_time("2024-01-01T00:00:00.123456789Z") is None
        or parse_time("2024-01-01T00:00:00Z") == 1704067200.0
    )
    assert parse_time(None) is None and parse_time("garbage") is None
