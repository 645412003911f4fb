"""Waiting on a condition with a deadline: the one way tests wait for something to happen.

Tests never sleep for a fixed time to let something happen; they poll a condition until it
holds or a deadline passes, and fail saying what they waited for (`wait_for`), or, for
best-effort cleanup, just report whether it held (`poll`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def poll(
    cond: Callable[[], T],
    timeout: float,
    *,
    check: Callable[[], None] | None = None,
    errors: tuple[type[Exception], ...] = (),
    interval: float = 0.02,
    max_interval: float = 0.25,
) -> tuple[T | None, Exception | None]:
    """Poll `cond` until it returns something truthy or `timeout` passes.

    Returns (the truthy value or None, the last exception in `errors` it raised). `check` runs
    before each poll (e.g. to fail at once when a process died). The interval starts short and
    doubles up to `max_interval`.
    """
    end = time.monotonic() + timeout
    last: Exception | None = None
    delay = interval
    while True:
        if check is not None:
            check()
        try:
            value = cond()
        except errors as exc:
            last, value = exc, None
        if value:
            return value, last
        if time.monotonic() > end:
            return None, last
        time.sleep(delay)
        delay = min(delay * 2, max_interval)


def wait_for(
    cond: Callable[[], T],
    what: str = "condition",
    timeout: float = 30.0,
    *,
    check: Callable[[], None] | None = None,
    detail: Callable[[], str] | None = None,
    errors: tuple[type[Exception], ...] = (),
    interval: float = 0.02,
    max_interval: float = 0.25,
) -> T:
    """Poll `cond` until it returns something truthy and return that; fail the test at the deadline.

    Exceptions in `errors` count as "not yet" and the last one is named at the deadline; `detail`
    adds context (e.g. the end of a log) to the failure.
    """
    value, last = poll(
        cond, timeout, check=check, errors=errors, interval=interval, max_interval=max_interval
    )
    if value:
        return value
    message = f"timed out after {timeout:g}s waiting for {what}"
    if last is not None:
        message += f" (last error: {last!r})"
    if detail is not None:
        message += "\n" + detail()
    pytest.fail(message, pytrace=False)
