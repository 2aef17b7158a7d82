"""``ocsp-stapler staple``: the operator's lifecycle for servers outside Kubernetes.

A host (HAProxy or nginx on a VM, any TLS service) has certificate files, not Secrets. For
each chain file this runs the operator's own decision core (``controller.lifecycle.decide``)
with the staple file as the only state: the same refresh rules, backoff, destination guard
and verification, never backwards, and an expired staple removed, never kept. Effects go
through ``consumers.Delivery`` (the file, HAProxy's runtime API, ``--exec``).

The staple file is the state, so a restart costs nothing: a file that verifies and is not
yet due is kept and no request is made. What does not survive a restart is the "same
response again" backoff; ``--once`` under a timer is therefore bounded by the timer
(one request per certificate per run at most, and only once a refresh is due).

A renewed certificate (certbot rewrote the chain file) is seen by its file changing: the
chain is prepared again and the old certificate's staple, which no longer verifies, goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ocsp_stapler.consumers.delivery import Delivery
from ocsp_stapler.consumers.errors import ConsumerError
from ocsp_stapler.controller import lifecycle
from ocsp_stapler.controller.lifecycle import Action, Facts, Found, Rejection
from ocsp_stapler.controller.preparation import (
    Issuers,
    Preparation,
    Prepared,
    Unprepared,
    prepare_chain,
)
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.net.fetching import HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.responses import CertStatus, Staple, claimed_expiry, tells_more
from ocsp_stapler.ocsp.schedules import after_failure, after_success, refresh_target
from ocsp_stapler.ocsp.stapling import Attempt, Fetched, obtain_staple
from ocsp_stapler.ocsp.transport import Fetch
from ocsp_stapler.standalone.files import read_small_file

logger = logging.getLogger(__name__)

REDELIVER = datetime.timedelta(seconds=30)
"""After a consumer refused a staple (HAProxy down, a failing command): try it again."""
MAX_STEPS = 16


@dataclass
class Certificate:
    """One chain file and what is known about its staple: the state ``decide`` looks at."""

    chain_file: Path
    delivery: Delivery
    version: object = None
    preparation: Preparation | None = None
    staple_der: bytes | None = None
    """What the staple file holds (read at start, then kept in step with every write)."""
    judged: bool = False
    held: Staple | None = None
    rejection: Rejection | None = None
    answer: Fetched | None = None
    refresh_at: datetime.datetime | None = None
    failures: int = 0
    unchanged: int = 0
    last_error: str | None = None
    redeliver_at: datetime.datetime | None = None
    said: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return str(self.chain_file)

    def stapled(self, now: datetime.datetime) -> bool:
        return self.held is not None and self.held.valid_at(now)


def _version(path: Path) -> object:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class HostStapler:
    def __init__(
        self,
        certificates: Sequence[Certificate],
        *,
        fetch: Fetch,
        settings: OperatorSettings,
        clock: Callable[[], datetime.datetime],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.certificates = list(certificates)
        self.fetch = fetch
        self.settings = settings
        self.stapling = settings.stapling()
        self.policy = settings.refresh_policy()
        self.clock = clock
        self.rand = rand
        self.issuers = Issuers()
        for cert in self.certificates:
            try:
                cert.staple_der = read_small_file(cert.delivery.staple_file) or None
            except errors.OCSPError as exc:
                self._say(cert, f"the staple file cannot be read: {exc}")

    def _say(self, cert: Certificate, message: str, level: int = logging.WARNING) -> None:
        """Log a problem once per certificate until it is solved (a retry stays quiet)."""
        if message not in cert.said:
            cert.said.add(message)
            logger.log(level, "%s: %s", cert.name, message)

    # ------------------------------------------------------------------ the decisions

    def _found(self, cert: Certificate) -> Found | None:
        if cert.staple_der is None:
            return None
        prep = cert.preparation
        found = Found(cert_sha256=prep.cert_sha256 if prep is not None else None)
        leaf = prep.leaf if prep is not None else None
        if leaf is None or cert.judged:
            return found
        try:
            expiry = claimed_expiry(cert.staple_der, serial_number=leaf.serial_number,
                                    policy=self.stapling.verify)  # fmt: skip
        except errors.OCSPError as exc:
            return Found(cert_sha256=found.cert_sha256, malformed=str(exc))
        return Found(cert_sha256=found.cert_sha256, claimed_expiry=expiry)

    def _facts(self, cert: Certificate) -> Facts:
        return lifecycle.facts_of(cert, now=self.clock(), found=self._found(cert),
                                  revoked_action=self.settings.revoked_action)  # fmt: skip

    async def process(self, cert: Certificate) -> datetime.datetime | None:
        """Carry out the decisions for one certificate until they say wait; when to wake."""
        version = _version(cert.chain_file)
        if version != cert.version:  # new, or renewed: prepare (and judge) again
            cert.version, cert.preparation, cert.judged = version, None, False
            cert.held, cert.rejection, cert.answer, cert.refresh_at = None, None, None, None
        now = self.clock()
        if cert.redeliver_at is not None and now >= cert.redeliver_at:
            # Again what consumers must have: the held staple while valid, else nothing (an
            # expired one is the lifecycle's to remove, never to hand over again).
            held = cert.held if cert.held is not None and cert.held.valid_at(now) else None
            await self._hand_over(cert, held.der if held is not None else None)
        attempt = self.settings.attempt()
        for _ in range(MAX_STEPS):
            action = lifecycle.decide(self._facts(cert))
            if isinstance(action, lifecycle.Wait):
                times = [t for t in (action.until, cert.redeliver_at) if t is not None]
                return min(times) if times else None
            await self._carry_out(cert, action, attempt)
        raise RuntimeError(f"no decision settled {cert.name} in {MAX_STEPS} steps")

    async def _carry_out(self, cert: Certificate, action: Action, attempt: Attempt) -> None:
        match action:
            case lifecycle.Prepare():
                await self._prepare(cert, attempt)
            case lifecycle.Judge(prepared=prep):
                self._judge(cert, prep)
            case lifecycle.Remove(message=message):
                self._say(cert, f"staple removed: {message}")
                await self._hand_over(cert, None)
                cert.judged, cert.held, cert.rejection = True, None, None
            case lifecycle.Fetch(prepared=prep):
                await self._refresh(cert, prep, attempt)
            case lifecycle.Write(answer=answer):
                await self._hand_over(cert, answer.staple.der)
                self._answered(cert, answer, held=answer.staple)
            case lifecycle.Withdraw(answer=answer):
                self._say(cert, "the certificate is revoked: staple removed (revokedAction)")
                await self._hand_over(cert, None)
                self._answered(cert, answer, held=None)
            case lifecycle.Discard():
                cert.answer, cert.refresh_at = None, None
            case lifecycle.Refuse(answer=answer):
                cert.answer = None
                retry_at = self._failed(cert, errors.CertificateUnknown(
                    f"{answer.responder_url} answered unknown"))  # fmt: skip
                cert.refresh_at = retry_at or self.clock() + self.policy.max_interval

    async def _prepare(self, cert: Certificate, attempt: Attempt) -> None:
        try:
            crt = read_small_file(cert.chain_file)
            if crt is None:
                raise errors.ChainInvalid(f"{cert.chain_file} is missing")
            chain = assemble_chain(crt, None)
        except errors.OCSPError as exc:
            cert.preparation = Unprepared(problem=exc)
            self._failed(cert, exc)
            return
        prep = await prepare_chain(chain, None, fetch=self.fetch, attempt=attempt,
                                   issuers=self.issuers)  # fmt: skip
        if isinstance(prep, Unprepared):
            retry_at = self._failed(cert, prep.problem)
            if not prep.permanent:
                prep = Unprepared(problem=prep.problem, leaf=prep.leaf,
                                  cert_sha256=prep.cert_sha256, retry_at=retry_at)  # fmt: skip
        cert.preparation = prep

    def _judge(self, cert: Certificate, prep: Prepared) -> None:
        cert.judged = True
        if cert.staple_der is None:
            return
        verdict = lifecycle.judge(
            cert.staple_der,
            prep,
            now=self.clock(),
            policy=self.stapling.verify,
            revoked_action=self.settings.revoked_action,
            where=f"in {cert.delivery.staple_file}",
        )
        if isinstance(verdict, Rejection):
            cert.rejection = verdict
            return
        cert.held = verdict
        target, _ = refresh_target(this_update=verdict.this_update,
                                   expires_at=verdict.expires_at, policy=self.policy)  # fmt: skip
        # Found already past its refresh point: due now. Otherwise no request at start.
        cert.refresh_at = None if target <= self.clock() else self._next_refresh(verdict)

    def _next_refresh(
        self, staple: Staple, *, unchanged: int = 0, fresh_until: datetime.datetime | None = None
    ) -> datetime.datetime:
        return after_success(
            this_update=staple.this_update,
            expires_at=staple.expires_at,
            now=self.clock(),
            policy=self.policy,
            rand=self.rand,
            unchanged=unchanged,
            fresh_until=fresh_until,
        ).at

    async def _refresh(self, cert: Certificate, prep: Prepared, attempt: Attempt) -> None:
        try:
            fetched = await obtain_staple(prep.chain, fetch=self.fetch, clock=self.clock,
                                          config=self.stapling, held=cert.held,
                                          attempt=attempt)  # fmt: skip
        except errors.OCSPError as exc:
            retry_at = self._failed(cert, exc)
            cert.refresh_at = retry_at or self.clock() + self.policy.max_interval
            return
        held = cert.held
        if held is not None and not tells_more(fetched.staple, held):
            # Nothing newer (a CDN's cached copy): keep what is held, and back off.
            cert.unchanged += 1
            cert.refresh_at = self._next_refresh(
                held, unchanged=cert.unchanged, fresh_until=fetched.fresh_until
            )
            self._succeeded(cert)
            return
        cert.unchanged = 0
        cert.answer = fetched

    def _answered(self, cert: Certificate, fetched: Fetched, *, held: Staple | None) -> None:
        staple = fetched.staple
        cert.answer, cert.held, cert.judged = None, held, True
        cert.refresh_at = self._next_refresh(staple, fresh_until=fetched.fresh_until)
        if staple.status is CertStatus.REVOKED:
            self._say(cert, f"the certificate is REVOKED (since {staple.revocation_time})")
        logger.info("%s: %s staple from %s, good until %s", cert.name, staple.status,
                    fetched.responder_url, staple.expires_at.isoformat())  # fmt: skip
        self._succeeded(cert)

    def _succeeded(self, cert: Certificate) -> None:
        cert.failures, cert.last_error = 0, None
        cert.said.clear()

    def _failed(self, cert: Certificate, exc: errors.OCSPError) -> datetime.datetime | None:
        """Count a failure, tell once, and return when to try again (None: not until the
        chain file changes)."""
        cert.failures += 1
        cert.last_error = str(exc)
        self._say(cert, str(exc))
        if not exc.retryable:
            return None
        return after_failure(
            failures=cert.failures,
            now=self.clock(),
            expires_at=cert.held.expires_at if cert.held is not None else None,
            policy=self.policy,
            rand=self.rand,
        ).at

    async def _hand_over(self, cert: Certificate, der: bytes | None) -> None:
        cert.staple_der = der
        try:
            await cert.delivery.hand_over(der)
        except ConsumerError as exc:
            self._say(cert, f"the staple did not reach every consumer: {exc}")
            cert.redeliver_at = self.clock() + REDELIVER
            return
        cert.redeliver_at = None

    # ------------------------------------------------------------------------ running

    async def process_isolated(self, cert: Certificate) -> datetime.datetime | None:
        """``process``, with a failure of this certificate's kept to it: logged once, and
        retried later, while every other certificate goes on."""
        try:
            return await self.process(cert)
        except Exception as exc:
            self._say(cert, f"internal error, retried in {REDELIVER.seconds} s: {exc!r}",
                      level=logging.ERROR)  # fmt: skip
            return self.clock() + REDELIVER

    async def run_once(self) -> bool:
        """Bring every certificate up to date once; whether each has a valid staple."""
        for cert in self.certificates:
            await self.process_isolated(cert)
        now = self.clock()
        return all(c.stapled(now) and c.redeliver_at is None for c in self.certificates)

    async def run(self, *, poll: float, stop: asyncio.Event) -> None:
        wake: dict[int, datetime.datetime | None] = {}
        seen: dict[int, object] = {}
        while not stop.is_set():
            for index, cert in enumerate(self.certificates):
                due = wake.get(index, self.clock())
                changed = _version(cert.chain_file) != seen.get(index)
                if index not in wake or changed or (due is not None and self.clock() >= due):
                    wake[index] = await self.process_isolated(cert)
                    seen[index] = cert.version
            times = [t for t in wake.values() if t is not None]
            wait = min([poll, *((t - self.clock()).total_seconds() for t in times)])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.05)):
                    await stop.wait()


async def run_host(
    certificates: Sequence[Certificate],
    *,
    settings: OperatorSettings,
    clock: Callable[[], datetime.datetime],
    poll: float,
    once: bool,
) -> int:
    """Until SIGTERM (0), or one pass with ``once`` (0: every file holds a valid staple)."""
    async with HttpFetcher(settings.fetch_settings()) as fetch:
        stapler = HostStapler(certificates, fetch=fetch, settings=settings, clock=clock)
        if once:
            return 0 if await stapler.run_once() else 2
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stapler.run(poll=poll, stop=stop)
        return 0
