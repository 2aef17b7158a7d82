"""Name lookups on threads of their own, shared fairly between the operator's tenants.

``getaddrinfo`` blocks a thread, and a lookup cannot be cancelled: when an attempt's deadline
ends the wait, the thread stays blocked until the resolver gives up (seconds to minutes for a
name whose servers do not answer). aiohttp's ThreadedResolver and ``loop.getaddrinfo`` use the
loop's default executor (6 threads on a 2-core node), so a few certificates naming such hosts,
retried now and then, would hold every thread, and no other tenant's responder could be
resolved: one namespace would stop staples for all.

So lookups run on a pool of their own (``threads``), and each owner (the operator's scheduler
sets the namespace whose Secret a worker is attempting: ``LOOKUP_OWNER``) may hold at most
``per_owner`` of its threads, counted until the thread is back, not until its caller stops
waiting. A lookup beyond that ends at once in a retryable ``FetchFailed``. The bound: one
namespace holds at most ``per_owner`` threads, so ``threads // per_owner`` namespaces with
hanging names are needed before another namespace's lookup waits for a thread (8 with the
defaults), and then for no longer than its attempt's deadline.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

from ocsp_stapler.ocsp.errors import FetchFailed

LOOKUP_OWNER: ContextVar[Hashable] = ContextVar("lookup_owner", default=None)
"""Whose lookups the current task makes (the scheduler sets a Secret's namespace)."""

AddrInfo = tuple[Any, ...]
"""One ``socket.getaddrinfo`` answer: (family, type, proto, canonname, sockaddr)."""
Lookup = Callable[..., list[AddrInfo]]
"""``socket.getaddrinfo``'s signature: (host, port, family, type, proto, flags)."""

THREADS = 32
PER_OWNER = 4


class Lookups:
    """``await lookups.getaddrinfo(host, port)`` on a bounded pool, fair between owners."""

    def __init__(
        self,
        *,
        threads: int = THREADS,
        per_owner: int = PER_OWNER,
        lookup: Lookup = socket.getaddrinfo,
    ) -> None:
        self.per_owner = per_owner
        self._lookup = lookup
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lookup")
        self.in_flight: collections.Counter[Hashable] = collections.Counter()
        """Threads each owner holds (or has queued) now."""

    async def getaddrinfo(
        self,
        host: str,
        port: int | None,
        *,
        family: int = 0,
        type: int = socket.SOCK_STREAM,
        flags: int = 0,
    ) -> list[AddrInfo]:
        owner = LOOKUP_OWNER.get()
        if self.in_flight[owner] >= self.per_owner:
            raise FetchFailed(
                f"{host[:200]}: {self.in_flight[owner]} name lookups of the same namespace "
                "are still in progress (a resolver that does not answer); tried again later",
                retryable=True,
            )
        loop = asyncio.get_running_loop()
        try:
            future: Future[list[AddrInfo]] = self._pool.submit(
                self._lookup, host, port, family, type, 0, flags
            )
        except RuntimeError:  # the pool is shut down: the fetcher is closing
            raise FetchFailed(f"{host[:200]}: shutting down", retryable=True) from None
        self.in_flight[owner] += 1

        def released(_: Future[list[AddrInfo]]) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody counts any more
                loop.call_soon_threadsafe(self._release, owner)

        future.add_done_callback(released)
        return await asyncio.wrap_future(future)

    def _release(self, owner: Hashable) -> None:
        self.in_flight[owner] -= 1
        if self.in_flight[owner] <= 0:
            del self.in_flight[owner]

    def close(self) -> None:
        """Stop taking lookups; threads still blocked end on their own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
