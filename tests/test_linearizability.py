"""Tests of bench.linearizability: hand-made histories with known verdicts, a brute-force oracle
on small random histories, histories simulated from a real sequential register (accepted) and
mutations of them that provably break linearizability (rejected), and the History recorder."""

from __future__ import annotations

import itertools
import json
import math
import random
import threading

import pytest

from bench.linearizability import CheckResult, History, Op, check, main

_ids = itertools.count()


def op(
    kind: str,
    invoke: float,
    complete: float | None,
    *,
    value: str | None = None,
    expected: str | None = None,
    result: object = None,
    key: str = "k",
    client: int = 0,
    status: str = "ok",
) -> Op:
    return Op(client, key, kind, value, expected, invoke, complete, result, status, next(_ids))  # type: ignore[arg-type]


def w(v: str | None, t0: float, t1: float | None, **kw) -> Op:
    return op("write", t0, t1, value=v, **kw)


def rd(result: str | None, t0: float, t1: float | None, **kw) -> Op:
    return op("read", t0, t1, result=result, **kw)


def cas(expected: str | None, v: str | None, result: bool | None, t0: float, t1: float | None, **kw) -> Op:
    return op("cas", t0, t1, value=v, expected=expected, result=result, **kw)


def verdict(ops: list[Op], initial: str | None = None) -> bool | None:
    return check(ops, initial=initial).linearizable


# --- linearizable histories -------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check([])
    assert result.linearizable is True
    assert result.ops_checked == 0


def test_sequential_history_accepted() -> None:
    ops = [
        rd(None, 0, 1),
        w("a", 2, 3),
        rd("a", 4, 5),
        w("b", 6, 7),
        rd("b", 8, 9),
        w(None, 10, 11),  # delete
        rd(None, 12, 13),
    ]
    result = check(ops)
    assert result.linearizable is True
    assert result.ops_checked == len(ops)


def test_initial_value_is_respected() -> None:
    assert verdict([rd("x", 0, 1)], initial="x") is True
    assert verdict([rd("x", 0, 1)]) is False
    assert check([rd("x", 0, 1, key="a"), rd(None, 0, 1, key="b")], initial={"a": "x"}).linearizable is True


def test_concurrent_overlapping_writes_and_reads_accepted() -> None:
    ops = [
        w("a", 0, 10, client=1),
        w("b", 1, 11, client=2),
        rd("b", 2, 3, client=3),
        rd("a", 4, 5, client=3),  # b then a, both writes still in flight
        rd("a", 12, 13, client=3),
    ]
    assert verdict(ops) is True


def test_concurrent_writes_final_value_must_be_last_write() -> None:
    ops = [
        w("a", 0, 10, client=1),
        w("b", 1, 11, client=2),
        rd("b", 2, 3, client=3),
        rd("a", 4, 5, client=3),
        rd("b", 12, 13, client=3),  # b would have to come after a, but it was read before a
    ]
    assert verdict(ops) is False


def test_read_concurrent_with_write_may_see_either_value() -> None:
    for seen in ("a", "b"):
        assert verdict([w("a", 0, 1), w("b", 2, 6, client=1), rd(seen, 3, 4, client=2)]) is True


def test_equal_timestamps_count_as_concurrent() -> None:
    # The write completes at 5 and the read starts at 5: either order is allowed.
    assert verdict([w("a", 0, 1), w("b", 2, 5), rd("a", 5, 6, client=1)]) is True
    assert verdict([w("a", 0, 1), w("b", 2, 5), rd("a", 5.001, 6, client=1)]) is False


def test_cas_chain_accepted() -> None:
    ops = [
        w("0", 0, 1),
        cas("0", "1", True, 2, 3),
        cas("1", "2", True, 4, 6, client=1),
        cas("1", "x", False, 5, 7, client=2),  # lost the race against client 1
        cas("2", "3", True, 8, 9),
        rd("3", 10, 11, client=2),
        cas(None, "new", False, 12, 13),  # create-if-absent fails: the key exists
    ]
    assert verdict(ops) is True


def test_cas_create_if_absent() -> None:
    assert verdict([cas(None, "a", True, 0, 1), rd("a", 2, 3)]) is True
    assert verdict([w("z", 0, 1), cas(None, "a", True, 2, 3)]) is False


def test_failed_cas_needs_a_different_value() -> None:
    assert verdict([w("a", 0, 1), cas("a", "b", False, 2, 3)]) is False
    assert verdict([w("a", 0, 1), cas("a", "b", False, 2, 5), w("c", 3, 4, client=1)]) is True


def test_indeterminate_write_that_took_effect() -> None:
    ops = [w("a", 0, 1), w("b", 2, None, client=1), rd("b", 5, 6, client=2), rd("b", 7, 8)]
    assert verdict(ops) is True


def test_indeterminate_write_that_did_not_take_effect() -> None:
    ops = [w("a", 0, 1), w("b", 2, None, client=1), rd("a", 5, 6, client=2), rd("a", 7, 8)]
    assert verdict(ops) is True


def test_indeterminate_write_may_take_effect_late() -> None:
    # It may land long after the client gave up, even after later completed ops.
    ops = [
        w("a", 0, 1),
        w("b", 2, None, client=1),
        rd("a", 5, 6),
        w("c", 7, 8),
        rd("c", 9, 10),
        rd("b", 11, 12),
    ]
    assert verdict(ops) is True


def test_indeterminate_write_takes_effect_at_most_once() -> None:
    ops = [
        w("a", 0, 1),
        w("b", 2, None, client=1),
        rd("b", 3, 4),
        w("c", 5, 6),
        rd("c", 7, 8),
        rd("b", 9, 10),
    ]
    assert verdict(ops) is False


def test_indeterminate_op_cannot_take_effect_before_its_invocation() -> None:
    ops = [w("a", 0, 1), rd("b", 2, 3, client=2), w("b", 4, None, client=1)]
    assert verdict(ops) is False
    ops = [w("a", 0, 1), rd("b", 2, 5, client=2), w("b", 4, None, client=1)]
    assert verdict(ops) is True


def test_indeterminate_cas_may_apply_or_not() -> None:
    assert verdict([w("a", 0, 1), cas("a", "b", None, 2, None, status="info"), rd("b", 3, 4)]) is True
    assert verdict([w("a", 0, 1), cas("a", "b", None, 2, None, status="info"), rd("a", 3, 4)]) is True
    # It can only apply when the compare holds.
    assert verdict([w("z", 0, 1), cas("a", "b", None, 2, None, status="info"), rd("b", 3, 4)]) is False


def test_indeterminate_read_constrains_nothing() -> None:
    assert verdict([w("a", 0, 1), rd("never", 2, None, status="info")]) is True


def test_failed_op_never_takes_effect() -> None:
    assert verdict([w("a", 0, 1), w("b", 2, 3, status="fail"), rd("a", 4, 5)]) is True
    assert verdict([w("a", 0, 1), w("b", 2, 3, status="fail"), rd("b", 4, 5)]) is False


def test_unobserved_unknown_writes_do_not_hide_failed_cas() -> None:
    # The unknown write of "c" is never read, but it is the only way the failed cas can be legal.
    ops = [w("a", 0, 1), w("c", 2, None, client=1), cas("a", "b", False, 3, 4)]
    assert verdict(ops) is True
    # After the failed cas at [3, 4] the register cannot hold "a" again.
    assert verdict([*ops, rd("a", 5, 6)]) is False
    # An unknown write invoked after the failed cas completed cannot explain it.
    assert verdict([w("a", 0, 1), cas("a", "b", False, 3, 4), w("c", 5, None, client=1)]) is False


def test_unknown_ops_explain_failed_cas_in_turn() -> None:
    # Each failed cas found the register holding its expected value, so an unknown op must have
    # changed it just before: the cas from "a" for the first, and only the write for the second.
    ops = [
        cas("a", "x", None, 0, None, status="info", client=1),
        w("y", 0, None, client=2),
        cas("a", "z", False, 1, 2),
        w("b", 3, 4),
        cas("b", "q", False, 5, 6),
    ]
    assert verdict(ops, initial="a") is True
    # A third such cas has nothing left to explain it.
    assert verdict([*ops, w("c", 7, 8), cas("c", "r", False, 9, 10)], initial="a") is False
    # Nor can an unknown op explain a failed cas that completed before it was invoked.
    late = [w("y", 3, None, client=2), cas("a", "z", False, 1, 2)]
    assert verdict(late, initial="a") is False


def test_choice_between_unknown_ops_is_searched() -> None:
    # The first failed cas needs "p" or "q" to have been written; only "q" lets the later ones work.
    fails = [cas("a", "z", False, 1, 2), cas("p", "z", False, 3, 4), cas("q", "z", False, 5, 6)]
    for unknown in (["p", "q"], ["q", "p"]):
        ops = [w(v, 0, None, client=9) for v in unknown] + fails
        assert verdict(ops, initial="a") is True
        assert verdict([*ops, cas("p", "z", False, 7, 8)], initial="a") is False


def test_many_unknown_writes_stay_tractable() -> None:
    ops = [w("a", 0, 1)]
    ops += [w(f"lost{i}", 2 + i, None, client=10 + i) for i in range(60)]
    ops += [w(f"v{i}", 100 + 2 * i, 101 + 2 * i) for i in range(200)]
    ops += [rd("v199", 600, 601), rd("never", 602, 603)]
    result = check(ops, timeout_s=60)
    assert result.linearizable is False


# --- known non-linearizable histories -----------------------------------------------------------


def test_stale_read_after_completed_write_rejected() -> None:
    ops = [w("a", 0, 1), w("b", 2, 3), rd("a", 4, 5, client=1)]
    result = check(ops)
    assert result.linearizable is False
    assert result.key == "k"
    assert "read = 'a'" in result.detail


def test_read_of_never_written_value_rejected() -> None:
    assert verdict([w("a", 0, 1), rd("ghost", 0.5, 2, client=1)]) is False


def test_two_cas_from_same_expected_value_both_succeeding_rejected() -> None:
    ops = [w("0", 0, 1), cas("0", "x", True, 2, 5, client=1), cas("0", "y", True, 3, 6, client=2)]
    assert verdict(ops) is False
    # With a write of "0" in between, both may succeed.
    ops.append(w("0", 2, 7, client=3))
    assert verdict(ops) is True


def test_read_observing_b_then_a_when_a_completed_before_b_began_rejected() -> None:
    ops = [w("a", 0, 1), w("b", 2, 3, client=1), rd("b", 1.5, 10, client=2), rd("a", 11, 12, client=2)]
    assert verdict(ops) is False


def test_reverted_read_new_then_old_rejected() -> None:
    ops = [w("old", 0, 1), w("new", 2, 10), rd("new", 3, 4, client=1), rd("old", 5, 6, client=2)]
    assert verdict(ops) is False


def test_failure_detail_names_the_blocking_op_and_the_state() -> None:
    ops = [w("a", 0, 1), w("b", 2, 3), rd("a", 4, 5, client=7)]
    for o, n in zip(ops, range(3), strict=True):
        o.id = n
    result = check(ops)
    assert result.linearizable is False
    assert "#2 client 7 read = 'a' [4, 5] cannot be placed: it needs 'a'" in result.detail
    assert "write 'b' [2, 3] would overwrite for good" in result.detail
    result = check([w("a", 0, 1), w("b", 2, 3), rd("ghost", 4, 5, client=7)])
    assert "read = 'ghost' [4, 5] cannot be placed" in result.detail
    assert "register holds 'b'" in result.detail


# --- partition per key ------------------------------------------------------------------------


def test_keys_are_independent_registers() -> None:
    # As one register this would be a stale read; as two keys it is fine.
    ops = [w("a", 0, 1, key="x"), w("b", 2, 3, key="y"), rd("a", 4, 5, key="x"), rd("b", 4, 5, key="y")]
    result = check(ops)
    assert result.linearizable is True
    assert result.keys_checked == 2
    assert result.ops_checked == 4


def test_first_bad_key_is_reported() -> None:
    ops = [w("a", 0, 1, key="good"), rd("a", 2, 3, key="good")]
    ops += [w("a", 0, 1, key="zbad"), w("b", 2, 3, key="zbad"), rd("a", 4, 5, key="zbad")]
    ops += [w("a", 0, 1, key="abad"), rd("nope", 2, 3, key="abad")]
    result = check(ops)
    assert result.linearizable is False
    assert result.key == "abad"  # keys are checked in sorted order
    assert "'abad'" in result.detail


def test_long_history_partitioned_per_key() -> None:
    ops = []
    for k in range(50):
        for i in range(40):
            ops.append(w(f"{k}-{i}", 10 * i, 10 * i + 15, key=f"key{k}", client=i % 2))
            ops.append(rd(f"{k}-{i}", 10 * i + 16, 10 * i + 17, key=f"key{k}", client=2))
    result = check(ops)
    assert result.linearizable is True
    assert result.keys_checked == 50
    assert result.ops_checked == len(ops)


def test_timeout_gives_unknown_verdict() -> None:
    ops = [w("a", 0, 1), rd("a", 2, 3)]
    result = check(ops, timeout_s=0)
    assert result.linearizable is None
    assert result.key == "k"
    assert "gave up" in result.detail


# --- brute-force oracle on small random histories ---------------------------------------------


def brute_force(ops: list[Op], initial: str | None) -> bool:
    """Try every subset of unknown-outcome ops and every real-time-respecting order."""
    live = [o for o in ops if o.status == "ok" or (o.status == "info" and o.kind != "read")]
    definite = [o for o in live if o.status == "ok"]
    unknown = [o for o in live if o.status == "info"]

    def before(a: Op, b: Op) -> bool:
        return a.status == "ok" and a.complete < b.invoke  # type: ignore[operator]

    def legal(state: str | None, o: Op) -> tuple[bool, str | None]:
        if o.kind == "read":
            return o.result == state, state
        if o.kind == "write":
            return True, o.value
        if o.status == "info":
            return True, o.value if state == o.expected else state
        if o.result:
            return state == o.expected, o.value
        return state != o.expected, state

    def search(placed: list[Op], rest: list[Op], state: str | None) -> bool:
        if not rest:
            return True
        for o in rest:
            if any(before(p, o) for p in rest if p is not o):
                continue
            ok, after = legal(state, o)
            if ok and search([*placed, o], [p for p in rest if p is not o], after):
                return True
        return False

    for n in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, n):
            if search([], definite + list(chosen), initial):
                return True
    return False


def random_small_history(rng: random.Random) -> list[Op]:
    values = ["a", "b", None]
    ops = []
    for i in range(rng.randint(1, 6)):
        t0 = rng.randint(0, 8)
        t1 = t0 + rng.randint(0, 4)
        status = rng.choices(["ok", "info", "fail"], weights=[7, 2, 1])[0]
        end = None if status == "info" else t1
        kind = rng.choice(["read", "write", "cas"])
        if kind == "read":
            ops.append(rd(rng.choice(values), t0, end, status=status, client=i))
        elif kind == "write":
            ops.append(w(rng.choice(values), t0, end, status=status, client=i))
        else:
            result = rng.choice([True, False]) if status == "ok" else None
            ops.append(cas(rng.choice(values), rng.choice(values), result, t0, end, status=status, client=i))
    return ops


def random_tricky_history(rng: random.Random) -> list[Op]:
    """Small histories aimed at the checker's shortcuts: unknown writes and cas with unique or
    unread values, failed cas, reads of values an unknown op may have written."""
    fresh = itertools.count()
    written: list[str | None] = [None, "a"]
    ops = []
    for i in range(rng.randint(2, 8)):
        t0 = rng.randint(0, 10)
        t1 = t0 + rng.randint(0, 5)
        status = rng.choices(["ok", "info", "fail"], weights=[6, 3, 1])[0]
        end = None if status == "info" else t1
        kind = rng.choices(["read", "write", "cas"], weights=[3, 2, 4])[0]
        value = rng.choice([f"u{next(fresh)}", f"u{next(fresh)}", "a", None])
        if kind == "read":
            ops.append(rd(rng.choice(written), t0, end, status=status, client=i))
        elif kind == "write":
            ops.append(w(value, t0, end, status=status, client=i))
        else:
            result = rng.choice([True, False]) if status == "ok" else None
            ops.append(cas(rng.choice(written), value, result, t0, end, status=status, client=i))
        if kind != "read":
            written.append(value)
    return ops


@pytest.mark.parametrize("generator", [random_small_history, random_tricky_history])
def test_matches_brute_force_on_random_small_histories(generator) -> None:
    rng = random.Random(20240611)
    outcomes = {True: 0, False: 0}
    for _ in range(4000):
        ops = generator(rng)
        initial = rng.choice(["a", None])
        expected = brute_force(ops, initial)
        got = check(ops, initial=initial).linearizable
        assert got is expected, "\n".join(o.describe() for o in ops) + f"\ninitial={initial!r}"
        outcomes[expected] += 1
    # The generator must exercise both verdicts for this comparison to mean anything.
    assert outcomes[True] > 800 and outcomes[False] > 800, outcomes


# --- histories simulated from a real register -------------------------------------------------


def simulate(rng: random.Random, clients: int, ops_per_client: int, keys: list[str]) -> list[Op]:
    """Run a real sequential register per key, with concurrent clients.

    Each op takes effect at one instant inside [invoke, complete]; unknown-outcome ops take effect
    at an instant after their invocation (possibly after the client moved on) or never; failed ops
    never take effect. Every written value is unique.
    """
    counter = itertools.count()
    planned: list[tuple[float | None, Op]] = []
    for client in range(clients):
        t = rng.uniform(0, 5)
        for _ in range(ops_per_client):
            key = rng.choice(keys)
            t0 = t
            t1 = t0 + rng.uniform(0.1, 10)
            status = rng.choices(["ok", "info", "fail"], weights=[90, 5, 5])[0]
            point: float | None = rng.uniform(t0, t1)
            if status == "fail" or (status == "info" and rng.random() < 0.5):
                point = None
            elif status == "info":
                point = rng.uniform(t0, t1 + 30)
            kind = rng.choices(["read", "write", "cas"], weights=[4, 3, 3])[0]
            end = None if status == "info" else t1
            placeholder = False if kind == "cas" else None  # a completed cas needs a bool; set below
            o = Op(client, key, kind, invoke=t0, complete=end, result=placeholder, status=status)  # type: ignore[arg-type]
            if kind in ("write", "cas"):
                o.value = f"v{next(counter)}"
            planned.append((point, o))
            t = t1 + rng.uniform(0, 2)
    register: dict[str, str | None] = {}
    recent: dict[str, list[str | None]] = {k: [None] for k in keys}
    for point, o in sorted(planned, key=lambda p: (p[0] is None, p[0] or 0)):
        if o.kind == "cas":  # mostly expect a value the key held recently, so many succeed
            o.expected = rng.choice(recent[o.key][-3:])
        if point is None:
            if o.kind == "cas" and o.status == "fail":
                o.result = None
            continue
        state = register.get(o.key)
        if o.kind == "read":
            o.result = state
        elif o.kind == "write":
            register[o.key] = o.value
            recent[o.key].append(o.value)
        else:
            applied = state == o.expected
            if applied:
                register[o.key] = o.value
                recent[o.key].append(o.value)
            if o.status == "ok":
                o.result = applied
    ops = [o for _, o in planned]
    for i, o in enumerate(ops):
        o.id = i
    return ops


def test_simulated_register_histories_accepted() -> None:
    rng = random.Random(7)
    for _ in range(40):
        ops = simulate(
            rng, clients=rng.randint(2, 6), ops_per_client=rng.randint(5, 25), keys=["x", "y", "z"]
        )
        result = check(ops, timeout_s=30)
        assert result.linearizable is True, result.detail


def test_large_simulated_history_accepted() -> None:
    rng = random.Random(99)
    ops = simulate(rng, clients=10, ops_per_client=300, keys=["a", "b", "c", "d"])
    result = check(ops, timeout_s=60)
    assert result.linearizable is True, result.detail
    assert result.keys_checked == 4
    assert result.ops_checked > 2500


def _completed(ops: list[Op], kind: str) -> list[Op]:
    return [o for o in ops if o.kind == kind and o.status == "ok"]


def test_mutation_read_of_never_written_value_rejected() -> None:
    rng = random.Random(11)
    for _ in range(25):
        ops = simulate(rng, clients=4, ops_per_client=15, keys=["x", "y"])
        reads = _completed(ops, "read")
        if not reads:
            continue
        victim = rng.choice(reads)
        victim.result = "never-written"
        result = check(ops, timeout_s=30)
        assert result.linearizable is False
        assert result.key == victim.key


def test_mutation_cas_succeeding_on_never_held_value_rejected() -> None:
    rng = random.Random(12)
    for _ in range(25):
        ops = simulate(rng, clients=4, ops_per_client=15, keys=["x", "y"])
        victims = _completed(ops, "cas")
        if not victims:
            continue
        victim = rng.choice(victims)
        victim.expected, victim.result = "never-written", True
        assert check(ops, timeout_s=30).linearizable is False


@pytest.mark.parametrize(("clients", "ops_per_client", "rounds"), [(4, 15, 60), (12, 60, 10)])
def test_mutation_stale_read_rejected(clients: int, ops_per_client: int, rounds: int) -> None:
    # A read that starts after write W completed returns the value of X, which completed before W
    # began. Values are unique, so nothing else could have put X's value back: provably stale.
    rng = random.Random(13)
    mutated = 0
    for _ in range(rounds):
        ops = simulate(rng, clients=clients, ops_per_client=ops_per_client, keys=["x"])
        writers = [
            o for o in ops if o.status == "ok" and (o.kind == "write" or (o.kind == "cas" and o.result))
        ]
        candidates = []
        for r in _completed(ops, "read"):
            # The latest start of a write W that completed before r began; X completed before it.
            bound = max((wr.invoke for wr in writers if wr.complete < r.invoke), default=-math.inf)  # type: ignore[operator]
            candidates += [(r, x) for x in writers if x.complete < bound and x.value != r.result]  # type: ignore[operator]
        if not candidates:
            continue
        r, x = rng.choice(candidates)
        assert check(ops, timeout_s=60).linearizable is True
        r.result = x.value
        assert check(ops, timeout_s=60).linearizable is False
        mutated += 1
    assert mutated > rounds // 3


# --- the recorder -----------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_history_records_outcomes() -> None:
    h = History(clock=_Clock())
    a = h.invoke(1, "k", "write", "a")
    h.ok(a)
    b = h.invoke(2, "k", "cas", "b", expected="a")
    h.ok(b, True)
    c = h.invoke(3, "k", "write", "c")
    h.fail(c)
    d = h.invoke(4, "k", "write", "d")
    h.info(d)
    e = h.invoke(5, "k", "read")  # never completed
    ops = h.ops()
    assert [o.status for o in ops] == ["ok", "ok", "fail", "info", "info"]
    assert [o.id for o in ops] == [a, b, c, d, e]
    assert ops[0].invoke == 1 and ops[0].complete == 2
    assert ops[1].result is True and ops[1].expected == "a"
    assert ops[3].complete is None and ops[4].complete is None
    assert len(h) == 5
    assert check(ops).linearizable is True


def test_history_rejects_misuse() -> None:
    h = History(clock=_Clock())
    a = h.invoke(1, "k", "write", "a")
    h.ok(a)
    with pytest.raises(ValueError, match="already completed"):
        h.ok(a)
    with pytest.raises(ValueError, match="no op with id 99"):
        h.fail(99)
    with pytest.raises(ValueError, match="kind must be one of"):
        h.invoke(1, "k", "delete")  # type: ignore[arg-type]
    c = h.invoke(1, "k", "cas", "b", expected="a")
    with pytest.raises(ValueError, match="True or False"):
        h.ok(c, "yes")
    h.ok(c, False)  # still open after the bad call, so it can be completed properly
    r = h.invoke(1, "k", "read")
    with pytest.raises(ValueError, match="string or null"):
        h.ok(r, {"value": "a"})
    with pytest.raises(ValueError, match="value must be a string or null"):
        h.invoke(1, "k", "write", 5)  # type: ignore[arg-type]
    assert len(h) == 3
    assert h.ops()[1].result is False


def test_op_validation() -> None:
    with pytest.raises(ValueError, match="before its invocation"):
        Op(0, "k", "read", invoke=5, complete=4, result=None)
    with pytest.raises(ValueError, match="kind must be one of"):
        Op(0, "k", "append", invoke=0, complete=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="True or False"):
        Op(0, "k", "cas", "b", "a", invoke=0, complete=1, result="ok")
    assert Op(0, "k", "write", "a", invoke=0, complete=None).status == "info"


def test_history_json_round_trip() -> None:
    h = History(clock=_Clock())
    h.ok(h.invoke(1, "k", "write", "a"))
    h.ok(h.invoke(2, "k", "read"), "a")
    h.ok(h.invoke(3, "k", "cas", None, expected="a"), True)
    h.info(h.invoke(4, "j", "write", "z"))
    h.fail(h.invoke(5, "j", "write", "y"))
    h.invoke(6, "j", "read")
    loaded = History.from_json(h.to_json())
    assert loaded.ops() == h.ops()
    assert check(loaded.ops()).linearizable is True
    # A loaded history keeps recording after the loaded ops.
    new = loaded.invoke(7, "k", "read")
    assert new == 6


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not valid JSON"),
        ('{"format": "other"}', "not a history file"),
        ('{"format": "grove-linearizability-history", "version": 9, "ops": []}', "not supported"),
        ('{"format": "grove-linearizability-history", "version": 1}', "no 'ops' list"),
        (
            '{"format": "grove-linearizability-history", "version": 1, "ops": [{"key": "k"}]}',
            "needs at least",
        ),
        (
            '{"format": "grove-linearizability-history", "version": 1, '
            '"ops": [{"client": 1, "key": "k", "kind": "read", "invoke": 0, "colour": 1}]}',
            "unknown fields: colour",
        ),
        (
            '{"format": "grove-linearizability-history", "version": 1, '
            '"ops": [{"client": 1, "key": "k", "kind": "scan", "invoke": 0}]}',
            "kind must be one of",
        ),
        (
            '{"format": "grove-linearizability-history", "version": 1, '
            '"ops": [{"client": 1, "key": "k", "kind": "write", "value": [1], "invoke": 0}]}',
            "value must be a string or null",
        ),
        (
            '{"format": "grove-linearizability-history", "version": 1, '
            '"ops": [{"client": 1, "key": "k", "kind": "read", "invoke": "soon"}]}',
            "invoke must be a finite number",
        ),
        (
            '{"format": "grove-linearizability-history", "version": 1, "ops": [{"client": 1, '
            '"key": "k", "kind": "read", "invoke": 0, "complete": 1, "result": 7, "status": "ok"}]}',
            "a read returns a string or null",
        ),
    ],
)
def test_history_from_json_rejects_bad_input(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        History.from_json(text)


def test_threads_on_a_locked_register_are_linearizable() -> None:
    """Real concurrency: threads share a register guarded by a lock and record what they see."""
    history = History()
    register: dict[str, str | None] = {}
    guard = threading.Lock()
    start = threading.Barrier(6)

    def client(n: int) -> None:
        rng = random.Random(n)
        start.wait()
        for i in range(150):
            key = rng.choice(["p", "q"])
            kind = rng.choice(["read", "write", "cas"])
            if kind == "read":
                op_id = history.invoke(n, key, "read")
                with guard:
                    seen = register.get(key)
                history.ok(op_id, seen)
            elif kind == "write":
                value = f"{n}-{i}"
                op_id = history.invoke(n, key, "write", value)
                if i % 10 == 3:  # refused before it reached the register
                    history.fail(op_id)
                    continue
                with guard:
                    register[key] = value
                if i % 10 == 7:  # applied, but the client never heard back
                    history.info(op_id)
                else:
                    history.ok(op_id)
            else:
                with guard:
                    guess = register.get(key)
                op_id = history.invoke(n, key, "cas", f"{n}-{i}", expected=guess)
                with guard:
                    swapped = register.get(key) == guess
                    if swapped:
                        register[key] = f"{n}-{i}"
                history.ok(op_id, swapped)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    ops = history.ops()
    assert len(ops) == 900
    result = check(ops, timeout_s=60)
    assert result.linearizable is True, result.detail
    # Breaking one completed read is caught.
    reads = [o for o in ops if o.kind == "read" and o.status == "ok"]
    reads[len(reads) // 2].result = "forged"
    assert check(ops, timeout_s=60).linearizable is False


# --- command line -----------------------------------------------------------------------------


def test_main_reports_verdict_from_file(tmp_path, capsys) -> None:
    good = History(clock=_Clock())
    good.ok(good.invoke(1, "k", "write", "a"))
    good.ok(good.invoke(2, "k", "read"), "a")
    path = tmp_path / "good.json"
    path.write_text(good.to_json())
    assert main([str(path)]) == 0
    assert "linearizable" in capsys.readouterr().out

    doc = json.loads(good.to_json())
    doc["ops"][1]["result"] = "b"
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(doc))
    assert main([str(bad_path)]) == 1
    assert "not linearizable" in capsys.readouterr().out

    assert main([str(tmp_path / "missing.json")]) == 2
    assert "cannot read history" in capsys.readouterr().err


def test_check_result_fields() -> None:
    result = check([w("a", 0, 1)])
    assert isinstance(result, CheckResult)
    assert (result.linearizable, result.key, result.ops_checked, result.keys_checked) == (True, None, 1, 1)
