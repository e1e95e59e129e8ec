"""The loop helpers: a thread-safe wake-up and the loop's own clock."""

from __future__ import annotations

import threading

import anyio
import pytest

from dbtbus._wakeup import capture_clock, capture_scheduler

pytestmark = pytest.mark.anyio


async def test_the_captured_clock_is_the_one_anyio_reads() -> None:
    clock = capture_clock()
    before = anyio.current_time()
    await anyio.sleep(0.01)
    now = clock()
    after = anyio.current_time()
    assert before + 0.01 <= now <= after


async def test_a_callback_scheduled_from_another_thread_runs_in_the_loop() -> None:
    schedule = capture_scheduler()
    loop_thread = threading.get_ident()
    ran_on: list[int] = []
    done = anyio.Event()

    def callback() -> None:
        ran_on.append(threading.get_ident())
        done.set()

    thread = threading.Thread(target=schedule, args=(callback,))
    thread.start()
    with anyio.fail_after(5):
        await done.wait()
    thread.join()
    assert ran_on == [loop_thread]


async def test_a_callback_scheduled_on_the_loops_own_thread_runs_at_once() -> None:
    ran: list[bool] = []
    capture_scheduler()(lambda: ran.append(True))
    assert ran == [True]
