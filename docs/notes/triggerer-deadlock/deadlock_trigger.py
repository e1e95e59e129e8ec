"""The trigger and the task of ``deadlock_dag.py``: a module the triggerer must be able to import (put it on
the triggerer's PYTHONPATH, e.g. the plugins folder); see that file."""

from __future__ import annotations

import asyncio
from datetime import datetime

from airflow.sdk import BaseSensorOperator
from airflow.triggers.base import BaseTrigger, StartTriggerArgs, TaskSuccessEvent

LINE = "x" * 20_000


class ChattyTrigger(BaseTrigger):
    """Writes log lines synchronously (as many triggers do) for a while, then succeeds."""

    def __init__(self, chatty: bool = False, seconds: float = 60.0) -> None:
        super().__init__()
        self.chatty = chatty
        self.seconds = seconds

    def serialize(self) -> tuple[str, dict[str, object]]:
        return ("deadlock_trigger.ChattyTrigger", {"chatty": self.chatty, "seconds": self.seconds})

    async def run(self):  # type: ignore[no-untyped-def]
        deadline = asyncio.get_running_loop().time() + self.seconds
        while asyncio.get_running_loop().time() < deadline:
            if self.chatty:
                self.log.info("%s %s", datetime.now().isoformat(), LINE)  # a blocking write on the event loop
            await asyncio.sleep(0.01)
        yield TaskSuccessEvent()


class WaitingTask(BaseSensorOperator):
    def __init__(self, *, chatty: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="deadlock_trigger.ChattyTrigger", trigger_kwargs={"chatty": chatty}, next_method="execute_complete",
            next_kwargs=None, timeout=None)

    def execute_complete(self, context: object, event: object = None) -> None:
        return None
