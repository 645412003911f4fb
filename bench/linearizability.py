"""Linearizability checker for single-key registers (read, write, compare-and-swap).

Benchmarks drive the store from many clients at once, record every operation with its invocation
and completion in a `History`, and then ask `check()` whether one order of the operations explains
every result while respecting real time (Herlihy & Wing). No maintained PyPI package does this, so
it lives here. The search is Wing & Gong's as refined by Lowe and used by Knossos and Porcupine:
place operations "just in time" from a list of call/return events, backtrack at a return whose op
could not be placed, and memoise (placed-set bitmask, register state) so no configuration is
explored twice. Histories are split per key first (P-compositionality: independent registers are
linearizable together iff each one is), which keeps long histories tractable.

Outcomes, as Jepsen names them:
  ok    the operation completed with a result (a CAS whose compare failed is `ok` with False);
  fail  it definitely did not take effect (e.g. refused before it reached the leader): ignored;
  info  unknown (timeout, connection lost): it may take effect at one instant after its
        invocation, or never; it is treated as completing at +infinity. An `info` read is ignored.

Register semantics: the state is a string or None (key absent). A write of None deletes the key;
a CAS with `expected=None` succeeds only when the key is absent (create-if-absent).
Equal timestamps count as concurrent (never as "one before the other").

Exact shortcuts keep unknown outcomes and high concurrency affordable (see `_plan`, `_search`):
an unknown op whose value nobody reads is only tried where a failed CAS needs it; one whose unique
value was read becomes definite; an op that leaves the register unchanged and is legal now is
placed at once without alternatives; a branch that overwrites a value some pending read still
needs, with nothing left to write it again, is cut. The problem is NP-complete all the same: for
fast checks, write unique values and keep each key's concurrency moderate (tens of clients).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

Kind = Literal["read", "write", "cas"]
Status = Literal["ok", "fail", "info"]

KINDS: tuple[str, ...] = ("read", "write", "cas")
STATUSES: tuple[str, ...] = ("ok", "fail", "info")
JSON_FORMAT = "grove-linearizability-history"
JSON_VERSION = 1

# How many search steps between two looks at the clock when a timeout is set.
_CLOCK_EVERY = 256


def _is_value(value: object) -> bool:
    return value is None or isinstance(value, str)


def _is_time(moment: object) -> bool:
    return isinstance(moment, int | float) and not isinstance(moment, bool) and math.isfinite(moment)


def _check_result(op_id: int, kind: str, result: object) -> None:
    if kind == "cas" and not isinstance(result, bool):
        raise ValueError(f"op {op_id}: a completed cas has result True or False, not {result!r}")
    if kind == "read" and not _is_value(result):
        raise ValueError(f"op {op_id}: a read returns a string or null (key absent), not {result!r}")


@dataclass
class Op:
    """One operation on one key, from one client.

    `value` is the value written (write) or the new value (cas); `expected` is the value a CAS
    compares against. `complete` is None while the outcome is unknown. `result` is the value read
    (read, None = key absent), True/False for a completed CAS, and ignored for a write.
    """

    client: int
    key: str
    kind: Kind
    value: str | None = None
    expected: str | None = None
    invoke: float = 0.0
    complete: float | None = None
    result: object = None
    status: Status = "ok"
    id: int = -1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"op {self.id}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.status not in STATUSES:
            raise ValueError(
                f"op {self.id}: status must be one of {', '.join(STATUSES)}, not {self.status!r}"
            )
        if not isinstance(self.key, str):
            raise ValueError(f"op {self.id}: key must be a string, not {self.key!r}")
        for name in ("value", "expected"):
            if not _is_value(getattr(self, name)):
                raise ValueError(
                    f"op {self.id}: {name} must be a string or null, not {getattr(self, name)!r}"
                )
        for name in ("invoke", "complete"):
            moment = getattr(self, name)
            if (moment is not None or name == "invoke") and not _is_time(moment):
                raise ValueError(f"op {self.id}: {name} must be a finite number, not {moment!r}")
        if self.complete is None and self.status == "ok":
            self.status = "info"
        if self.status == "ok":
            assert self.complete is not None
            if self.complete < self.invoke:
                raise ValueError(
                    f"op {self.id}: completes at {self.complete} before its invocation at {self.invoke}"
                )
            _check_result(self.id, self.kind, self.result)

    def describe(self) -> str:
        """One line a person can read, e.g. `#7 client 2 cas 'a'->'b' = True [1.0, 2.5]`."""
        if self.kind == "read":
            what = "read" if self.status != "ok" else f"read = {self.result!r}"
        elif self.kind == "write":
            what = f"write {self.value!r}"
        else:
            what = f"cas {self.expected!r}->{self.value!r}"
            if self.status == "ok":
                what += f" = {self.result}"
        end = "?" if self.status == "info" or self.complete is None else f"{self.complete:.10g}"
        suffix = {"ok": "", "fail": " (failed)", "info": " (unknown outcome)"}[self.status]
        return f"#{self.id} client {self.client} {what} [{self.invoke:.10g}, {end}]{suffix}"


@dataclass
class CheckResult:
    """Verdict of `check()`.

    linearizable: True, False, or None when the search gave up at the timeout.
    key: the first key found not linearizable (or the key being checked at the timeout).
    ops_checked: operations that took part in the check of the keys fully checked
    (failed ops and unknown-outcome reads constrain nothing and are not counted).
    """

    linearizable: bool | None
    key: str | None
    ops_checked: int
    detail: str
    keys_checked: int = 0


class History:
    """Thread- and asyncio-safe recorder of operations, in the order clients invoke them.

    A client calls `invoke()` just before sending a request and exactly one of `ok()`, `fail()`
    or `info()` when it knows the outcome. Operations never completed count as `info`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._open: set[int] = set()

    def invoke(
        self, client: int, key: str, kind: Kind, value: str | None = None, expected: str | None = None
    ) -> int:
        """Record an invocation now; returns the op id to complete it with."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        now = self._clock()
        with self._lock:
            op_id = len(self._ops)
            self._ops.append(
                Op(client, key, kind, value=value, expected=expected, invoke=now, status="info", id=op_id)
            )
            self._open.add(op_id)
        return op_id

    def ok(self, op_id: int, result: object = None) -> None:
        """The op completed: `result` is the value read, or True/False for a cas."""
        now = self._clock()
        with self._lock:
            op = self._take_open(op_id)
            try:
                _check_result(op_id, op.kind, result)
            except ValueError:
                self._open.add(op_id)  # still open: the caller may complete it properly
                raise
            op.complete, op.result, op.status = now, result, "ok"

    def fail(self, op_id: int) -> None:
        """The op definitely did not take effect."""
        now = self._clock()
        with self._lock:
            op = self._take_open(op_id)
            op.complete, op.status = now, "fail"

    def info(self, op_id: int) -> None:
        """The outcome is unknown (timeout, lost connection): it may or may not have happened."""
        with self._lock:
            op = self._take_open(op_id)
            op.complete, op.status = None, "info"

    def _take_open(self, op_id: int) -> Op:
        if op_id not in self._open:
            if 0 <= op_id < len(self._ops):
                raise ValueError(f"op {op_id} was already completed")
            raise ValueError(f"no op with id {op_id} was invoked")
        self._open.discard(op_id)
        return self._ops[op_id]

    def ops(self) -> list[Op]:
        """A snapshot copy of every op; ops still open are reported as `info`."""
        with self._lock:
            return [Op(**asdict(op)) for op in self._ops]

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)

    def to_json(self) -> str:
        """Serialise the history (open ops as `info`) so a bench can save it to a file."""
        return json.dumps(
            {"format": JSON_FORMAT, "version": JSON_VERSION, "ops": [asdict(op) for op in self.ops()]},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes, clock: Callable[[], float] = time.monotonic) -> History:
        """Load a history written by `to_json()`; raises ValueError with the reason on bad input."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"history is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
            raise ValueError(f"not a history file: expected an object with format {JSON_FORMAT!r}")
        if doc.get("version") != JSON_VERSION:
            raise ValueError(f"history version {doc.get('version')!r} is not supported (want {JSON_VERSION})")
        raw = doc.get("ops")
        if not isinstance(raw, list):
            raise ValueError("history has no 'ops' list")  # noqa: TRY004 - bad file content, not a caller bug
        history = cls(clock)
        names = set(Op.__dataclass_fields__)
        for index, item in enumerate(raw):
            if not isinstance(item, dict) or not {"client", "key", "kind", "invoke"} <= item.keys():
                raise ValueError(f"op at position {index} needs at least client, key, kind and invoke")
            unknown = set(item) - names
            if unknown:
                raise ValueError(f"op at position {index} has unknown fields: {', '.join(sorted(unknown))}")
            try:
                op = Op(**{**item, "id": index})
            except TypeError as exc:
                raise ValueError(f"op at position {index}: {exc}") from None
            history._ops.append(op)
        return history


def check(
    ops: Iterable[Op],
    initial: str | None | Mapping[str, str | None] = None,
    timeout_s: float | None = None,
) -> CheckResult:
    """Decide whether `ops` is linearizable as a set of independent registers, one per key.

    `initial` is every key's value before the history (None = absent), or a mapping per key.
    With `timeout_s`, the whole check gives up after that many seconds and answers None.
    Keys are checked in sorted order; the first that fails is reported.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    checked_ops = 0
    keys_checked = 0
    for key in sorted(by_key):
        start = initial.get(key) if isinstance(initial, Mapping) else initial
        planned = _plan(by_key[key], start)
        verdict, detail = _search(planned, start, deadline)
        if verdict is None:
            return CheckResult(
                None,
                key,
                checked_ops,
                f"gave up after {timeout_s:g} s while checking key {key!r} ({len(planned)} ops); "
                f"{keys_checked} of {len(by_key)} keys were linearizable",
                keys_checked,
            )
        if not verdict:
            return CheckResult(
                False, key, checked_ops, f"key {key!r} is not linearizable: {detail}", keys_checked
            )
        checked_ops += len(planned)
        keys_checked += 1
    return CheckResult(
        True, None, checked_ops, f"{keys_checked} keys, {checked_ops} ops: linearizable", keys_checked
    )


class _Junk:
    """The one register state that stands for every value no operation ever looks at."""

    def __repr__(self) -> str:
        return "<a value nobody read>"


_JUNK = _Junk()
_NOTHING = object()


@dataclass(slots=True)
class _Planned:
    """An op as the search sees it, after the reductions of `_plan`."""

    op: Op
    value: object
    result: object
    definite: bool
    invoke: float
    end: float


@dataclass
class _Plan:
    """One key's history reduced for the search.

    items go through the event list; spares are unknown-outcome ops kept aside, as sorted
    invocation times per effect: ("write", value) or ("cas", expected, value).
    """

    items: list[_Planned]
    spares: dict[tuple[object, ...], list[float]]

    def __len__(self) -> int:
        return len(self.items) + sum(len(times) for times in self.spares.values())


def _plan(ops: list[Op], initial: str | None) -> _Plan:
    """Reduce one key's history to what decides its verdict, so unknown outcomes stay cheap.

    Every step keeps the verdict exact:
    - failed ops never happened, and reads with unknown outcome constrain nothing;
    - a value that no op ever compares with (no read returns it, no cas expects it) differs from
      every value that matters, so all such values are one state (_JUNK);
    - an unknown op whose value no read returns and no successful or unknown cas expects is a
      "spare": it can only help a cas that completed with False although the register held its
      expected value, and any linearization can move it to just before such a cas. The search
      uses spares on demand there (see _search) instead of trying them everywhere;
    - an unknown op whose value is written by no other op and is seen by a completed read or a
      successful cas must have taken effect before the first of those completed: it is definite.
    """
    kept = [op for op in ops if op.status == "ok" or (op.status == "info" and op.kind != "read")]
    compared: set[object] = {initial}  # any value an op compares the register with
    relied_on: set[object] = set()  # values a read, a successful cas or an unknown cas needs
    first_seen: dict[object, float] = {}
    writers: dict[object, int] = {}
    for op in kept:
        if op.kind != "read":
            writers[op.value] = writers.get(op.value, 0) + 1
        if op.kind == "cas":
            compared.add(op.expected)
            if op.status != "ok" or op.result is True:
                relied_on.add(op.expected)
        if op.status == "ok" and op.kind == "read":
            compared.add(op.result)
            relied_on.add(op.result)
        if op.status == "ok" and (op.kind == "read" or (op.kind == "cas" and op.result is True)):
            assert op.complete is not None
            seen = op.result if op.kind == "read" else op.expected
            first_seen[seen] = min(first_seen.get(seen, math.inf), op.complete)

    items: list[_Planned] = []
    spares: dict[tuple[object, ...], list[float]] = {}
    for op in kept:
        value = op.value if op.value in compared else _JUNK
        if op.status == "ok":
            assert op.complete is not None
            items.append(_Planned(op, value, op.result, True, op.invoke, op.complete))
        elif op.value not in relied_on:
            effect = ("write", value) if op.kind == "write" else ("cas", op.expected, value)
            spares.setdefault(effect, []).append(op.invoke)
        elif (
            writers[op.value] == 1
            and op.value != initial
            and first_seen.get(op.value, -math.inf) >= op.invoke
        ):
            result = True if op.kind == "cas" else None
            items.append(_Planned(op, value, result, True, op.invoke, first_seen[op.value]))
        else:
            items.append(_Planned(op, value, None, False, op.invoke, math.inf))
    for times in spares.values():
        times.sort()
    return _Plan(items, spares)


def _step(state: object, item: _Planned) -> tuple[bool, object]:
    """Apply an op to a register in `state`: (is its result legal here, state after)."""
    op = item.op
    if op.kind == "read":
        return state == item.result, state
    if op.kind == "write":
        return True, item.value
    if not item.definite:  # an unknown cas applies if the compare holds, else it failed harmlessly
        return True, item.value if state == op.expected else state
    if item.result:
        return state == op.expected, item.value
    return state != op.expected, state


class _Entry:
    """A call or return event in the doubly linked event list of Lowe's algorithm."""

    __slots__ = ("is_call", "item", "makes", "match", "needs", "next", "prev", "weight")

    def __init__(self, item: _Planned | None, weight: int, is_call: bool) -> None:
        self.item = item
        self.weight = weight
        self.is_call = is_call
        self.needs: object = _NOTHING  # the value a read or a successful cas needs the register to hold
        self.makes: object = _NOTHING  # the value a write or an applied cas leaves in the register
        if item is not None and item.definite and (item.op.kind == "read" or item.result is True):
            self.needs = item.result if item.op.kind == "read" else item.op.expected
        if item is not None and item.op.kind != "read" and item.result is not False:
            self.makes = item.value
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


class _Spares:
    """Spare unknown ops, counted per effect.

    Spares of one effect are interchangeable, so the memo key holds how many of each were used
    (a bit field per effect, above the ops' own bits) instead of which ones.
    """

    def __init__(self, spares: dict[tuple[object, ...], list[float]], first_bit: int) -> None:
        self.effects = list(spares)
        self.times = [spares[effect] for effect in self.effects]
        self.used = [0] * len(self.effects)
        self.weights = []
        bit = first_bit
        for times in self.times:
            self.weights.append(1 << bit)
            bit += len(times).bit_length()
        self.writes: dict[object, int] = {}
        self.cases: dict[object, dict[object, int]] = {}
        for i, effect in enumerate(self.effects):
            if effect[0] == "write":
                self.writes[effect[1]] = i
            else:
                self.cases.setdefault(effect[1], {})[effect[2]] = i

    def options(self, state: object, frontier: float) -> list[int]:
        """Effects that could have just changed `state`, one per resulting value, using spares
        invoked by `frontier`. For one resulting value a cas expecting `state` is taken before a
        write: the write can stand in for the cas later, not the other way round."""
        chosen: dict[object, int] = {}
        for value, i in self.cases.get(state, {}).items():
            if value != state and self._free(i, frontier):
                chosen[value] = i
        for value, i in self.writes.items():
            if value != state and value not in chosen and self._free(i, frontier):
                chosen[value] = i
        return sorted(chosen.values())

    def _free(self, i: int, frontier: float) -> bool:
        return bisect.bisect_right(self.times[i], frontier) > self.used[i]


def _search(plan: _Plan, initial: str | None, deadline: float | None) -> tuple[bool | None, str]:
    """Lowe's just-in-time linearization search for one register; (verdict, explanation).

    The memo key is (placed ops, state), where placed ops is a sum of per-op bits and of
    per-effect spare counters. A call entry may offer several options (a failed cas explained
    by different spares); backtracking resumes at the next option of the same entry.
    """
    items = plan.items
    definite = sum(1 for item in items if item.definite)
    if definite == 0:
        return True, "no completed ops"
    spares = _Spares(plan.spares, len(items))
    events: list[tuple[float, int, int, _Entry]] = []
    for index, item in enumerate(items):
        call, ret = _Entry(item, 1 << index, True), _Entry(item, 1 << index, False)
        call.match = ret
        events.append((item.invoke, 0, index, call))  # calls sort before returns at equal times
        events.append((item.end, 1, index, ret))
    events.sort(key=lambda e: e[:3])
    head = _Entry(None, 0, False)
    prev = head
    for *_, entry in events:
        prev.next, entry.prev = entry, prev
        prev = entry
    # Unplaced ops that need the register to hold a value, and ops that could still put it there.
    needed: dict[object, int] = {}
    makers: dict[object, int] = {}
    for *_, entry in events:
        if entry.is_call:
            needed[entry.needs] = needed.get(entry.needs, 0) + 1
            makers[entry.makes] = makers.get(entry.makes, 0) + 1
    # (Spares never make a value that a read or a successful cas needs, so they are not makers.)

    state: object = initial
    placed = 0
    remaining = definite
    cache: set[tuple[int, object]] = set()
    stack: list[tuple[_Entry, object, int, int, bool]] = []  # (call, state before, option, spare, forced)
    best_depth = -1
    best: tuple[list[tuple[Op, bool, object]], Op, str] | None = None

    def record(blocked: Op, why: str) -> None:
        nonlocal best, best_depth
        if len(stack) > best_depth:
            best_depth = len(stack)
            prefix = [
                (e.item.op, s >= 0, spares.effects[s][-1] if s >= 0 else None) for e, _, _, s, _ in stack
            ]  # type: ignore[union-attr]
            best = (prefix, blocked, why)

    steps = 0
    entry = _next_candidate(head, state)
    option = 0
    while True:
        if deadline is not None and steps % _CLOCK_EVERY == 0 and time.monotonic() >= deadline:
            return None, "timeout"
        steps += 1
        assert entry is not None and entry.item is not None  # the list ends with a return while ops remain
        item = entry.item
        if entry.is_call:
            legal, after = _step(state, item)
            spare = -1
            weight = entry.weight
            # An op that leaves the register as it is and is legal now can be moved to the front
            # of any legal continuation, so it goes first and nothing else is tried in its place.
            forced = legal and item.definite and item.op.kind != "write" and after == state
            if legal:
                # Placing an unknown op that changes nothing only removes options: leave it pending.
                legal = option == 0 and (item.definite or after is not state)
            elif item.op.kind == "cas" and item.result is False and spares.effects:
                # A cas that failed although the register held its expected value: only an
                # unknown op that had just changed the register can explain it.
                frontier = entry.next
                while frontier.is_call:  # type: ignore[union-attr]
                    frontier = frontier.next
                choices = spares.options(state, frontier.item.end)  # type: ignore[union-attr]
                if option < len(choices):
                    spare = choices[option]
                    legal, weight = True, weight + spares.weights[spare]
                    after = spares.effects[spare][-1]
            if not legal:
                entry, option = entry.next, 0
                continue
            if after != state and needed.get(state, 0) > (entry.needs == state) and not makers.get(state):
                # This overwrites a value some unplaced op still needs and nothing can restore.
                if len(stack) > best_depth:
                    needer = _first_needing(head, state)
                    record(
                        needer.op,
                        f": it needs {state!r}, which {item.op.describe()} would overwrite for good",
                    )
                option += 1
                continue
            key = (placed + weight, after)
            if key not in cache:
                cache.add(key)
                stack.append((entry, state, option, spare, forced))
                state, placed = after, key[0]
                if spare >= 0:
                    spares.used[spare] += 1
                needed[entry.needs] -= 1
                makers[entry.makes] -= 1
                _lift(entry)
                if item.definite:
                    remaining -= 1
                    if remaining == 0:
                        return True, f"{len(plan)} ops linearizable"
                entry, option = _next_candidate(head, state), 0
                continue
            if not forced:
                option += 1
                continue
            # Already refuted with this forced op placed, so refuted without it too: backtrack.
        else:
            # A return: its op was not placed yet, so nothing after it may go first. Backtrack.
            record(item.op, "")
        while True:  # undo placements; a forced one has no alternative, so keep undoing past it
            if not stack:
                assert best is not None
                return False, _explain(best, initial)
            entry, state, option, spare, forced = stack.pop()
            placed -= entry.weight
            if spare >= 0:
                spares.used[spare] -= 1
                placed -= spares.weights[spare]
            if entry.item.definite:  # type: ignore[union-attr]
                remaining += 1
            _unlift(entry)
            needed[entry.needs] += 1
            makers[entry.makes] += 1
            if not forced:
                break
        option += 1


def _next_candidate(head: _Entry, state: object) -> _Entry:
    """Where to continue after a placement: an op that would be forced (see _search) if one is
    callable now, since trying anything else first is wasted work; else the list's first entry."""
    entry = head.next
    assert entry is not None
    while entry.is_call:
        item = entry.item
        assert item is not None
        if item.definite and item.op.kind != "write":
            legal, after = _step(state, item)
            if legal and after == state:
                return entry
        entry = entry.next  # type: ignore[assignment]
    return head.next  # type: ignore[return-value]


def _lift(entry: _Entry) -> None:
    """Unlink a call entry and its return entry from the event list."""
    entry.prev.next = entry.next  # type: ignore[union-attr]
    entry.next.prev = entry.prev  # type: ignore[union-attr]
    ret = entry.match
    ret.prev.next = ret.next  # type: ignore[union-attr]
    if ret.next is not None:  # type: ignore[union-attr]
        ret.next.prev = ret.prev  # type: ignore[union-attr]


def _unlift(entry: _Entry) -> None:
    """Relink what `_lift` unlinked, in reverse order."""
    ret = entry.match
    ret.prev.next = ret  # type: ignore[union-attr]
    if ret.next is not None:  # type: ignore[union-attr]
        ret.next.prev = ret  # type: ignore[union-attr]
    entry.prev.next = entry  # type: ignore[union-attr]
    entry.next.prev = entry  # type: ignore[union-attr]


def _first_needing(head: _Entry, value: object) -> _Planned:
    """The earliest unplaced op that needs the register to hold `value`."""
    entry = head.next
    while entry is not None and not (entry.is_call and entry.needs == value):
        entry = entry.next
    assert entry is not None and entry.item is not None
    return entry.item


def _explain(best: tuple[list[tuple[Op, bool, object]], Op, str], initial: str | None) -> str:
    prefix, blocked, why = best
    state: object = initial  # replayed with the real values, which the search may have merged
    steps = []
    for op, after_spare, spare_value in prefix:
        if after_spare:
            steps.append(f"an unknown-outcome op writes {spare_value!r}")
            state = spare_value
        steps.append(op.describe())
        if op.kind == "write" or (op.kind == "cas" and state == op.expected and op.result is not False):
            state = op.value
    shown = steps[-5:]
    more = f"... {len(steps) - len(shown)} earlier steps ; " if len(steps) > len(shown) else ""
    order = " ; ".join(shown) or "(nothing)"
    return (
        f"{blocked.describe()} cannot be placed{why}. Longest legal order found has {len(prefix)} ops "
        f"(initial value {initial!r}): {more}{order} -> register holds {state!r}"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.linearizability HISTORY.json`: exit 0 linearizable, 1 not, 2 unknown/error."""
    parser = argparse.ArgumentParser(prog="python -m bench.linearizability", description=main.__doc__)
    parser.add_argument("path", help="history file written by History.to_json()")
    parser.add_argument(
        "--initial", default=None, help="every key's value before the history (default: absent)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    args = parser.parse_args(argv)
    try:
        with open(args.path, encoding="utf-8") as handle:
            history = History.from_json(handle.read())
    except (OSError, ValueError) as exc:
        print(f"error: cannot read history {args.path}: {exc}", file=sys.stderr)
        return 2
    result = check(history.ops(), initial=args.initial, timeout_s=args.timeout)
    print(result.detail)
    return {True: 0, False: 1, None: 2}[result.linearizable]


if __name__ == "__main__":
    sys.exit(main())
