"""Running the operator in-process for tests: real kopf, real API server, injectable clock.

The operator runs in a thread with an event loop of its own, as it would in its own process:
kopf treats every task in its loop as its own at shutdown, so sharing the test's loop would
make it wait for (and cancel) the test's tasks. Tests talk to it through the API server, and
to its reconciler only to move the fake clock and to wait until it is idle.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ocsp_stapler.controller.instance import OperatorInstance
from ocsp_stapler.controller.reconciler import Reconciler
from ocsp_stapler.controller.running import run_operator
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.k8s.client import Credentials
from support.clocks import FakeClock


@dataclass
class RunningOperator:
    settings: OperatorSettings
    credentials: Credentials
    clock: FakeClock | None = None
    instance: OperatorInstance | None = None
    loop: asyncio.AbstractEventLoop | None = None
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    ready: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def reconciler(self) -> Reconciler:
        assert self.instance is not None
        return self.instance.reconciler

    def _main(self) -> None:
        kwargs: dict[str, Any] = {"clock": self.clock} if self.clock is not None else {}

        def on_instance(instance: OperatorInstance) -> None:
            self.instance = instance
            self.loop = asyncio.get_running_loop()

        try:
            asyncio.run(
                run_operator(
                    self.settings,
                    credentials=self.credentials,
                    stop_flag=self.stop,
                    ready_flag=self.ready,
                    instance_ready=on_instance,
                    **kwargs,
                )
            )
        except BaseException as exc:  # reported to the test by start()
            self.error = exc
            self.ready.set()

    async def start(self, *, wait_ready: bool = True) -> RunningOperator:
        """Start it; ``wait_ready`` False: return at once (a standby is never ready)."""
        self.thread = threading.Thread(target=self._main, name="operator", daemon=True)
        self.thread.start()
        if not wait_ready:
            return self
        await self.wait_ready()
        return self

    async def wait_ready(self, timeout: float = 30) -> None:
        await asyncio.to_thread(self.ready.wait, timeout)
        if self.error is not None:
            raise self.error
        if not self.ready.is_set() or self.instance is None:
            raise TimeoutError(f"the operator did not become ready in {timeout} s")

    async def _in_operator(self, coro_factory: Callable[[], Awaitable[Any]]) -> Any:
        assert self.loop is not None

        async def run() -> Any:
            return await coro_factory()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), self.loop))

    async def settle(self) -> None:
        """Wait until every Secret event so far is handled and no work is due."""
        await asyncio.sleep(0.3)  # let kopf deliver in-flight watch events
        await self._in_operator(self.reconciler.drain)

    async def advance(self, **delta: float) -> None:
        """Move the fake clock and let due work run."""
        assert self.clock is not None
        assert self.loop is not None
        self.clock.advance(datetime.timedelta(**delta))
        self.loop.call_soon_threadsafe(self.reconciler.scheduler.wake)
        await self.settle()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and self.error is None

    async def shutdown(self) -> None:
        self.stop.set()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.join, 30)
            assert not self.thread.is_alive(), "the operator did not stop within 30 s"


StartOperator = Callable[..., Awaitable[RunningOperator]]
