"""A trigger that logs synchronously and plentifully, then waits (part of the triggerer deadlock reproducer).

Importable by the triggerer as the top-level module ``deadlock_trigger``: ``reproduce.py`` copies it into the
dags folder and puts that folder on ``PYTHONPATH``. Uses Airflow and the standard library only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TaskSuccessEvent, TriggerEvent

CLASSPATH = "deadlock_trigger.ChattyTrigger"


class ChattyTrigger(BaseTrigger):
    """Log ``lines`` lines of ``line_kb`` KB each as it starts and again every ``interval`` s (0: only at
    the start), then end the task successfully ``wait`` s after it started.

    ``async_log=False`` logs with ``self.log.info`` (a synchronous write to the triggerer's supervisor on the
    event loop's thread); ``async_log=True`` with ``await self.log.ainfo`` (structlog writes from a worker
    thread, the event loop keeps running).
    """

    def __init__(self, lines: int = 5, line_kb: int = 4, interval: float = 2.0, wait: float = 120.0,
                 async_log: bool = False) -> None:
        super().__init__()
        self.lines = lines
        self.line_kb = line_kb
        self.interval = interval
        self.wait = wait
        self.async_log = async_log

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return CLASSPATH, {"lines": self.lines, "line_kb": self.line_kb, "interval": self.interval,
                           "wait": self.wait, "async_log": self.async_log}

    async def _burst(self, first: int, pad: str) -> None:
        for n in range(first, first + self.lines):
            if self.async_log:
                await self.log.ainfo("chatty line %d: %s", n, pad)
            else:
                self.log.info("chatty line %d: %s", n, pad)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.wait
        pad = "x" * (self.line_kb * 1024)
        n = 0
        while True:
            await self._burst(n, pad)
            n += self.lines
            left = end - loop.time()
            if self.interval <= 0 or left <= 0:
                break
            await asyncio.sleep(min(self.interval, left))
        left = end - loop.time()
        if left > 0:
            await asyncio.sleep(left)
        yield TaskSuccessEvent()
