"""What the node agent should do for one pod, and what the pod's status is — no I/O.

`compute_actions(pod, observed, ...)` compares a pod's spec with the containers found on the
engine (a `PodContainers` snapshot) and returns the next steps, the way the kubelet's
computePodActions does: create the sandbox, run init containers in order, start, restart (with
the CrashLoopBackOff back-off) or kill app containers, remove dead instances no longer needed,
and decide when a pod has finished. `pod_status(...)` turns a snapshot into the PodStatus kubectl
expects (phase, conditions, containerStatuses, IPs, QoS class). Both are functions of their
arguments plus two small stateful helpers passed in — `BackOff` (the kubelet's exponential
back-off per container) and a probe view — so every rule is tested without an engine or a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from node.runtime.spec import spec_hash
from node.runtime.types import ContainerInfo, ContainerState, PodContainers

__all__ = [
    "BackOff",
    "KillContainer",
    "PodActions",
    "ProbeView",
    "StartContainer",
    "Waiting",
    "compute_actions",
    "go_duration",
    "is_sidecar",
    "parse_time",
    "pod_phase",
    "pod_status",
    "rfc3339",
    "should_restart",
]

# Waiting reasons, as the kubelet spells them.
CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
CREATE_CONTAINER_ERROR = "CreateContainerError"
RUN_CONTAINER_ERROR = "RunContainerError"

TERMINAL_PHASES = ("Succeeded", "Failed")
# Conditions the node agent owns; any other condition in a pod's status is someone else's.
AGENT_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")


# --- time -------------------------------------------------------------------------------------


def rfc3339(epoch: float) -> str:
    """Seconds since the epoch as Kubernetes writes times (seconds, UTC)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> float | None:
    """An RFC 3339 time as seconds since the epoch (None when unset or unreadable)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def go_duration(seconds: float) -> str:
    """A duration the way Go prints it in kubelet messages: 10s, 1m20s, 5m0s."""
    total = int(round(seconds))
    if total < 60:
        return f"{seconds:g}s" if seconds < 1 else f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}s"


# --- back-off -----------------------------------------------------------------------------------


@dataclass
class _BackOffEntry:
    backoff: float
    last_update: float


class BackOff:
    """The kubelet's per-key exponential back-off (client-go flowcontrol.Backoff).

    `next(key, t)` records a restart at event time t: the delay starts at `initial` and doubles up
    to `maximum`; it starts over when t is more than `reset_after` (default 2 x maximum, i.e.
    10 minutes) past the previous restart — a container that ran that long is not crash-looping.
    """

    def __init__(
        self, initial: float = 10.0, maximum: float = 300.0, reset_after: float | None = None
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = 2 * maximum if reset_after is None else reset_after
        self._entries: dict[str, _BackOffEntry] = {}

    def get(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry.backoff if entry else 0.0

    def _expired(self, t: float, entry: _BackOffEntry) -> bool:
        return t - entry.last_update > self.reset_after

    def in_backoff_since(self, key: str, event_time: float, now: float) -> bool:
        """True when less than the current delay has passed since `event_time` (a container's
        finish): it must not be restarted yet."""
        entry = self._entries.get(key)
        if entry is None or self._expired(now, entry):
            return False
        return now - event_time < entry.backoff

    def in_backoff_since_update(self, key: str, now: float) -> bool:
        """True when less than the current delay has passed since the last `next` (image pulls)."""
        entry = self._entries.get(key)
        if entry is None or self._expired(now, entry):
            return False
        return now - entry.last_update < entry.backoff

    def remaining(self, key: str, since: float, now: float) -> float:
        return max(0.0, since + self.get(key) - now)

    def next(self, key: str, event_time: float) -> float:
        """Record a (re)start or failure at `event_time`; returns the delay now in force."""
        entry = self._entries.get(key)
        if entry is None or self._expired(event_time, entry):
            entry = self._entries[key] = _BackOffEntry(self.initial, event_time)
        else:
            entry.backoff = min(entry.backoff * 2, self.maximum)
            entry.last_update = event_time
        return entry.backoff

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget(self, prefix: str) -> None:
        """Drop every key starting with `prefix` (a pod's uid, when the pod is gone)."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


# --- inputs and outputs -------------------------------------------------------------------------


class ProbeView(Protocol):
    """Probe results for one container instance (see node.probes.ProbeManager)."""

    def started(self, uid: str, name: str, container_id: str, has_probe: bool) -> bool: ...

    def readiness(self, uid: str, name: str, container_id: str) -> bool: ...

    def failed(self, uid: str, name: str, container_id: str) -> str | None: ...


class NoProbes:
    """A probe view for runtimes that run no probes (the fake runtime): healthy at once."""

    def started(self, uid: str, name: str, container_id: str, has_probe: bool) -> bool:
        return True

    def readiness(self, uid: str, name: str, container_id: str) -> bool:
        return True

    def failed(self, uid: str, name: str, container_id: str) -> str | None:
        return None


@dataclass(frozen=True)
class Waiting:
    """Why a container is not running: a kubelet waiting reason and its message."""

    reason: str
    message: str = ""

    def to_k8s(self) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": self.reason}
        if self.message:
            body["message"] = self.message
        return {"waiting": body}


@dataclass
class StartContainer:
    container: Mapping[str, Any]
    init: bool
    restart_count: int

    @property
    def name(self) -> str:
        return str(self.container.get("name"))


@dataclass
class KillContainer:
    info: ContainerInfo
    message: str  # for the Killing event
    probe_failure: bool = False


@dataclass
class PodActions:
    """The next steps for one pod. Execute in order: kill_pod, kill, create_sandbox, start, remove."""

    kill_pod: bool = False  # stop every running container and the sandbox
    create_sandbox: bool = False
    sandbox_attempt: int = 0
    kill: list[KillContainer] = field(default_factory=list)
    start: list[StartContainer] = field(default_factory=list)
    remove: list[ContainerInfo] = field(default_factory=list)
    waiting: dict[str, Waiting] = field(default_factory=dict)  # e.g. CrashLoopBackOff, decided here
    terminal_phase: str | None = None  # Succeeded/Failed once the pod has finished for good
    requeue_after: float | None = None

    @property
    def changes_anything(self) -> bool:
        return bool(self.kill_pod or self.create_sandbox or self.kill or self.start or self.remove)

    def requeue(self, delay: float) -> None:
        delay = max(0.0, delay)
        self.requeue_after = delay if self.requeue_after is None else min(self.requeue_after, delay)


# --- helpers -------------------------------------------------------------------------------------


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("spec") or {}


def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def restart_policy(pod: Mapping[str, Any]) -> str:
    return str(_spec(pod).get("restartPolicy") or "Always")


def is_sidecar(container: Mapping[str, Any]) -> bool:
    """An init container with restartPolicy Always: started in order, then kept running."""
    return container.get("restartPolicy") == "Always"


def should_restart(policy: str, exit_code: int | None) -> bool:
    """Whether a container that exited with `exit_code` is started again under `policy`."""
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return (exit_code or 0) != 0
    return False


def history(observed: PodContainers | None, name: str) -> list[ContainerInfo]:
    """Instances of a Kubernetes container, newest (highest restart count) first."""
    if observed is None:
        return []
    mine = [c for c in observed.containers if c.container_name == name]
    return sorted(mine, key=lambda c: (c.restart_count, c.created), reverse=True)


def backoff_key(uid: str, name: str) -> str:
    return f"{uid}/{name}"


def _live_sandbox(observed: PodContainers | None) -> ContainerInfo | None:
    sandbox = observed.sandbox if observed is not None else None
    return sandbox if sandbox is not None and sandbox.state.running else None


def _alive(info: ContainerInfo, sandbox: ContainerInfo | None) -> bool:
    """Running, in the pod's current sandbox."""
    if not info.state.running or sandbox is None:
        return False
    return not info.sandbox_id or info.sandbox_id == sandbox.id


def _never_started(info: ContainerInfo) -> bool:
    return info.state.status == "waiting"


# --- actions ------------------------------------------------------------------------------------


def compute_actions(
    pod: Mapping[str, Any],
    observed: PodContainers | None,
    probes: ProbeView,
    backoff: BackOff,
    now: float,
) -> PodActions:
    """The next steps toward the pod's spec (a pod that is being deleted is not handled here)."""
    actions = PodActions()
    meta, spec = _meta(pod), _spec(pod)
    uid = str(meta.get("uid") or "")
    policy = restart_policy(pod)
    init_specs = list(spec.get("initContainers") or [])
    app_specs = list(spec.get("containers") or [])
    sandbox = _live_sandbox(observed)
    newest_sandbox = observed.sandbox if observed is not None else None
    ran_before = bool(observed and observed.containers)
    api_phase = (pod.get("status") or {}).get("phase")

    if api_phase in TERMINAL_PHASES:
        # Finished pods are never started again; make sure nothing of them still runs.
        actions.terminal_phase = api_phase
        actions.kill_pod = _anything_runs(observed)
        _collect_garbage(pod, observed, sandbox, actions)
        return actions

    new_sandbox = sandbox is None
    if new_sandbox and ran_before:
        # Without a sandbox, a pod whose containers all exited for good is over (its sandbox was
        # stopped when it finished); under restartPolicy Never a pod whose sandbox died is too.
        phase = _finished_phase(pod, observed)
        if phase is None and policy == "Never":
            phase = _finished_phase(pod, observed, dead_sandbox=True)
        if phase is not None:
            actions.terminal_phase = phase
            actions.kill_pod = _anything_runs(observed)
            _collect_garbage(pod, observed, None, actions)
            return actions
    if new_sandbox:
        actions.kill_pod = _anything_runs(observed)
        actions.create_sandbox = True
        actions.sandbox_attempt = newest_sandbox.restart_count + 1 if newest_sandbox is not None else 0

    def current(info: ContainerInfo) -> bool:
        """The instance belongs to the pod's current sandbox (not to one that died)."""
        return sandbox is not None and (not info.sandbox_id or info.sandbox_id == sandbox.id)

    def start(c: Mapping[str, Any], init: bool) -> None:
        hist = history(observed, str(c.get("name")))
        latest = hist[0] if hist else None
        if latest is None:
            actions.start.append(StartContainer(c, init, 0))
        elif not current(latest):
            actions.start.append(StartContainer(c, init, latest.restart_count + 1))
        elif _never_started(latest):
            actions.start.append(StartContainer(c, init, latest.restart_count))
        else:
            _restart_with_backoff(pod, c, latest, init, backoff, now, actions)

    # Regular containers of the current sandbox mean initialisation finished (even if the init
    # containers' instances were removed since).
    initialized = not init_specs or any(
        (hist := history(observed, str(c.get("name")))) and current(hist[0]) for c in app_specs
    )
    if not initialized:
        for ic in init_specs:
            name = str(ic.get("name"))
            hist = history(observed, name)
            latest = hist[0] if hist else None
            if latest is None or not current(latest):
                start(ic, True)
                break
            if is_sidecar(ic):
                if _alive(latest, sandbox):
                    if probes.started(uid, name, latest.id, bool(ic.get("startupProbe"))):
                        continue
                    break  # the next init container waits for this one's startup probe
                start(ic, True)
                break
            if _alive(latest, sandbox):
                break  # still initialising
            if _never_started(latest):
                start(ic, True)
                break
            if latest.state.terminated and (latest.state.exit_code or 0) == 0:
                continue
            if policy == "Never":
                actions.terminal_phase = "Failed"
                actions.kill_pod = _anything_runs(observed)
                return actions
            start(ic, True)
            break
        else:
            initialized = True

    if initialized:
        for c in [*(ic for ic in init_specs if is_sidecar(ic)), *app_specs]:
            name = str(c.get("name"))
            hist = history(observed, name)
            latest = hist[0] if hist else None
            if latest is None or not current(latest) or _never_started(latest):
                start(c, is_sidecar(c))
                continue
            if _alive(latest, sandbox):
                if latest.spec_hash and latest.spec_hash != spec_hash(c):
                    message = f"Container {name} definition changed, will be restarted"
                    actions.kill.append(KillContainer(latest, message))
                    actions.requeue(0)
                    continue
                reason = probes.failed(uid, name, latest.id)
                if reason:
                    actions.kill.append(KillContainer(latest, reason, probe_failure=True))
                    actions.requeue(0)
                continue
            if should_restart("Always" if is_sidecar(c) else policy, latest.state.exit_code):
                start(c, is_sidecar(c))
        if not new_sandbox and not actions.kill and not actions.start and not actions.waiting:
            phase = _finished_phase(pod, observed)
            if phase is not None:
                actions.terminal_phase = phase
                actions.kill_pod = _anything_runs(observed)
    _collect_garbage(pod, observed, sandbox, actions)
    return actions


def _restart_with_backoff(
    pod: Mapping[str, Any],
    c: Mapping[str, Any],
    latest: ContainerInfo,
    init: bool,
    backoff: BackOff,
    now: float,
    actions: PodActions,
) -> None:
    meta = _meta(pod)
    uid, name = str(meta.get("uid") or ""), str(c.get("name"))
    key = backoff_key(uid, name)
    finished = parse_time(latest.state.finished_at) or now
    if backoff.in_backoff_since(key, finished, now):
        delay = backoff.get(key)
        actions.waiting[name] = Waiting(
            CRASH_LOOP_BACK_OFF,
            f"back-off {go_duration(delay)} restarting failed container={name} "
            f"pod={meta.get('name')}_{meta.get('namespace') or 'default'}({uid})",
        )
        actions.requeue(backoff.remaining(key, finished, now))
        return
    backoff.next(key, finished)
    actions.start.append(StartContainer(c, init, latest.restart_count + 1))


def _anything_runs(observed: PodContainers | None) -> bool:
    if observed is None:
        return False
    return any(c.state.running for c in [*observed.containers, *observed.sandboxes])


def _finished_phase(
    pod: Mapping[str, Any], observed: PodContainers | None, dead_sandbox: bool = False
) -> str | None:
    """Succeeded/Failed when every app container has exited for good under the restart policy."""
    policy = restart_policy(pod)
    if policy == "Always" and not dead_sandbox:
        return None
    codes: list[int] = []
    for c in _spec(pod).get("containers") or []:
        hist = history(observed, str(c.get("name")))
        latest = hist[0] if hist else None
        if latest is None:
            if dead_sandbox:
                codes.append(1)
                continue
            return None
        if latest.state.running or _never_started(latest):
            if dead_sandbox:
                codes.append(1)
                continue
            return None
        code = latest.state.exit_code or 0
        if not dead_sandbox and should_restart(policy, code):
            return None
        codes.append(code)
    return "Succeeded" if all(code == 0 for code in codes) else "Failed"


def _collect_garbage(
    pod: Mapping[str, Any], observed: PodContainers | None, sandbox: ContainerInfo | None, actions: PodActions
) -> None:
    """Dead instances that are neither the latest nor the one before it (`logs --previous`),
    dead instances of containers the spec no longer has, and dead sandboxes but the newest."""
    if observed is None:
        return
    spec = _spec(pod)
    names = {
        str(c.get("name")) for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    }
    for name in {c.container_name for c in observed.containers}:
        hist = history(observed, name)
        keep = 2 if name in names else 0
        for info in hist[keep:]:
            if not info.state.running:
                actions.remove.append(info)
    newest = observed.sandbox
    for s in observed.sandboxes:
        if s is not newest and not s.state.running:
            actions.remove.append(s)


# --- status -------------------------------------------------------------------------------------


def _terminated(state: ContainerState) -> dict[str, Any]:
    return state.to_k8s() if state.terminated else {}


def _container_status(
    c: Mapping[str, Any],
    uid: str,
    observed: PodContainers | None,
    sandbox: ContainerInfo | None,
    probes: ProbeView,
    waiting: Waiting | None,
    default_waiting: str,
    will_restart: bool,
    image_id_prefix: str,
) -> dict[str, Any]:
    name = str(c.get("name"))
    hist = history(observed, name)
    latest = hist[0] if hist else None
    previous = hist[1] if len(hist) > 1 else None
    status: dict[str, Any] = {
        "name": name,
        "image": str(c.get("image") or ""),
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": {},
        "lastState": {},
    }
    if latest is None:
        status["state"] = (waiting or Waiting(default_waiting)).to_k8s()
        return status
    status["restartCount"] = latest.restart_count
    status["containerID"] = latest.container_id
    if latest.image_id:
        status["imageID"] = f"{image_id_prefix}{latest.image_id}"
    last = _terminated(previous.state) if previous is not None else {}
    if _alive(latest, sandbox):
        started = probes.started(uid, name, latest.id, bool(c.get("startupProbe")))
        ready = started and (probes.readiness(uid, name, latest.id) if c.get("readinessProbe") else True)
        status.update(state=latest.state.to_k8s(), lastState=last, started=started, ready=ready)
    elif _never_started(latest):
        status.update(state=(waiting or Waiting(CONTAINER_CREATING)).to_k8s(), lastState=last)
    elif will_restart and waiting is not None:
        status.update(state=waiting.to_k8s(), lastState=_terminated(latest.state))
    else:
        status.update(state=_terminated(latest.state) or latest.state.to_k8s(), lastState=last)
    return status


def pod_phase(
    pod: Mapping[str, Any], init_statuses: Sequence[Mapping[str, Any]], statuses: Sequence[Mapping[str, Any]]
) -> str:
    """The kubelet's getPhase over the container statuses it computed."""
    policy = restart_policy(pod)
    pending_init = failed_init = 0
    sidecars = {str(c.get("name")) for c in _spec(pod).get("initContainers") or [] if is_sidecar(c)}
    for s in init_statuses:
        state, last = s.get("state") or {}, s.get("lastState") or {}
        if s.get("name") in sidecars:
            if "running" not in state or not s.get("started"):
                pending_init += 1
            continue
        if "terminated" in state:
            if state["terminated"].get("exitCode") == 0:
                continue
            failed_init += 1
        elif "waiting" in state and "terminated" in last:
            if last["terminated"].get("exitCode") != 0:
                failed_init += 1
            # (an init container waiting after success is being re-run: not pending)
        else:
            pending_init += 1
    if failed_init and policy == "Never":
        return "Failed"
    if (pending_init or failed_init) and not any(
        "running" in (s.get("state") or {}) or "terminated" in (s.get("state") or {}) for s in statuses
    ):
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for s in statuses:
        state, last = s.get("state") or {}, s.get("lastState") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
        elif "terminated" in last:
            stopped += 1  # waiting to be restarted
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    ctype: str,
    ok: bool,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if ok else "False"
    old = previous.get(ctype)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    cond: dict[str, Any] = {
        "type": ctype,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since or now,
    }
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def pod_status(
    pod: Mapping[str, Any],
    observed: PodContainers | None,
    probes: ProbeView,
    *,
    host_ip: str,
    now: float,
    waiting: Mapping[str, Waiting] | None = None,
    terminal_phase: str | None = None,
    qos_class: str = "",
    image_id_prefix: str = "docker://",
) -> dict[str, Any]:
    """The pod's status as the kubelet would write it, from an engine snapshot and probe results.

    `waiting` holds reasons for containers that could not be started (ErrImagePull, back-off,
    config errors); `terminal_phase` is given once the pod has finished (or been stopped for a
    deletion) and wins over the computed phase.
    """
    meta, spec = _meta(pod), _spec(pod)
    uid = str(meta.get("uid") or "")
    old = pod.get("status") or {}
    waiting = waiting or {}
    now_text = rfc3339(now)
    previous_conditions = {str(c.get("type")): c for c in old.get("conditions") or []}
    sandbox = _live_sandbox(observed)
    policy = restart_policy(pod)
    init_specs = list(spec.get("initContainers") or [])
    app_specs = list(spec.get("containers") or [])
    terminal = terminal_phase in TERMINAL_PHASES

    init_done = _initialized(init_specs, observed, sandbox, uid, probes)
    default_reason = POD_INITIALIZING if init_specs and not init_done else CONTAINER_CREATING

    def will_restart(c: Mapping[str, Any]) -> bool:
        hist = history(observed, str(c.get("name")))
        if terminal or not hist:
            return False
        return should_restart("Always" if is_sidecar(c) else policy, hist[0].state.exit_code)

    init_statuses = [
        _container_status(
            c, uid, observed, sandbox, probes, waiting.get(str(c.get("name"))), POD_INITIALIZING, will_restart(c),
            image_id_prefix,
        )
        for c in init_specs
    ]  # fmt: skip
    statuses = [
        _container_status(
            c, uid, observed, sandbox, probes, waiting.get(str(c.get("name"))), default_reason, will_restart(c),
            image_id_prefix,
        )
        for c in app_specs
    ]  # fmt: skip
    phase = terminal_phase if terminal else pod_phase(pod, init_statuses, statuses)

    unready = [s["name"] for s in statuses if not s["ready"]]
    unready += [
        s["name"]
        for s in init_statuses
        if s["name"] in {str(c.get("name")) for c in init_specs if is_sidecar(c)} and not s["ready"]
    ]
    incomplete = _incomplete_init(init_specs, init_statuses)
    conditions: list[dict[str, Any]] = [
        _condition("PodReadyToStartContainers", sandbox is not None, previous_conditions, now_text),
    ]
    if phase == "Succeeded" or not incomplete:
        conditions.append(
            _condition(
                "Initialized",
                True,
                previous_conditions,
                now_text,
                "PodCompleted" if phase == "Succeeded" and incomplete else "",
            )
        )
    else:
        conditions.append(
            _condition(
                "Initialized", False, previous_conditions, now_text, "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(incomplete)}]",
            )
        )  # fmt: skip
    if phase in TERMINAL_PHASES:
        ready_reason, ready_message, ready = "PodCompleted", "", False
    elif unready:
        ready_reason, ready_message, ready = (
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
            False,
        )
    else:
        ready_reason, ready_message, ready = "", "", True
    gates = [str(g.get("conditionType")) for g in spec.get("readinessGates") or []]
    missing_gates = [g for g in gates if (previous_conditions.get(g) or {}).get("status") != "True"]
    if ready and missing_gates:
        conditions.append(
            _condition(
                "Ready", False, previous_conditions, now_text, "ReadinessGatesNotReady",
                f"corresponding condition of pod readiness gate \"{missing_gates[0]}\" does not exist.",
            )
        )  # fmt: skip
    else:
        conditions.append(
            _condition("Ready", ready, previous_conditions, now_text, ready_reason, ready_message)
        )
    conditions.append(
        _condition("ContainersReady", ready, previous_conditions, now_text, ready_reason, ready_message)
    )
    others = [c for c in old.get("conditions") or [] if c.get("type") not in AGENT_CONDITIONS]
    if not any(c.get("type") == "PodScheduled" for c in others):
        others.insert(0, _condition("PodScheduled", True, previous_conditions, now_text))
    conditions += others

    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "startTime": old.get("startTime") or now_text,
        "containerStatuses": statuses,
        "qosClass": old.get("qosClass") or qos_class,
    }
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    pod_ip = ""
    if sandbox is not None:
        pod_ip = host_ip if sandbox.host_network or spec.get("hostNetwork") else sandbox.ip
    pod_ip = pod_ip or old.get("podIP") or ""
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    for key in ("reason", "message", "nominatedNodeName"):
        if old.get(key):
            status[key] = old[key]
    return status


def _initialized(
    init_specs: Sequence[Mapping[str, Any]],
    observed: PodContainers | None,
    sandbox: ContainerInfo | None,
    uid: str,
    probes: ProbeView,
) -> bool:
    for ic in init_specs:
        hist = history(observed, str(ic.get("name")))
        if not hist:
            return False
        latest = hist[0]
        if is_sidecar(ic):
            if not (
                _alive(latest, sandbox)
                and probes.started(uid, latest.container_name, latest.id, bool(ic.get("startupProbe")))
            ):
                return False
        elif not (latest.state.terminated and (latest.state.exit_code or 0) == 0):
            return False
    return True


def _incomplete_init(
    init_specs: Sequence[Mapping[str, Any]], init_statuses: Sequence[Mapping[str, Any]]
) -> list[str]:
    out = []
    for c, s in zip(init_specs, init_statuses, strict=True):
        state = s.get("state") or {}
        if is_sidecar(c):
            if not ("running" in state and s.get("started")):
                out.append(s["name"])
        elif not ("terminated" in state and state["terminated"].get("exitCode") == 0):
            out.append(s["name"])
    return out


def terminated_phase(observed: PodContainers | None, pod: Mapping[str, Any]) -> str:
    """The phase of a pod stopped for deletion: Succeeded when every app container exited 0."""
    for c in _spec(pod).get("containers") or []:
        hist = history(observed, str(c.get("name")))
        if not hist or not hist[0].state.terminated or (hist[0].state.exit_code or 0) != 0:
            return "Failed"
    return "Succeeded"
