"""Running a control-plane component's main coroutine as a process: until SIGINT/SIGTERM, then a
clean cancel (a leader hands its Lease back), with an OS error such as a taken port as one line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import Any

import click
import uvloop


def run_until_signalled(main: Coroutine[Any, Any, Any]) -> None:
    async def wrapper() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await main

    try:
        uvloop.run(wrapper())
    except OSError as exc:  # e.g. the metrics port is taken
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
