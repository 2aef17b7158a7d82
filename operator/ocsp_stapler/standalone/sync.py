"""``ocsp-stapler sync``: the sidecar that brings each refreshed staple from a mounted Secret to
the server next to it (nginx, HAProxy, anything with ``--exec``), with no API access.

The kubelet updates a Secret volume by writing a new timestamped directory and swapping the
``..data`` link in one rename, so every look at the volume sees one whole version. The
sidecar looks every ``poll`` seconds (a ``stat`` of a few files: no inotify needed, and it
also sees a plain directory or files given one by one), and on a new version, or when the
staple it handed over expires, decides again (``choose``):

* a staple is handed over only once verified as the operator verifies it (the same policy,
  from the same settings): signed for this certificate by its issuer, current, not
  ``unknown`` (nor ``revoked`` with ``revokedAction: remove``);
* never backwards: a staple telling less than the one handed over is kept out while that one
  is valid;
* a staple of the old certificate goes the moment the certificate changes, one about to
  expire a margin before its nextUpdate (``EXPIRY_MARGIN``), and one the Secret no longer
  holds at once: consumers are then told there is none (nginx stops stapling, the file goes,
  HAProxy drops it, see ``consumers.haproxy``).

The issuer comes from the volume (``tls.crt``, ``ca.crt``), ``--issuer``, or the leaf's
caIssuers URL through the guarded fetcher, once per certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from ocsp_stapler.consumers import commands, haproxy
from ocsp_stapler.consumers.delivery import Delivery
from ocsp_stapler.consumers.errors import ConsumerError
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.names import CA_CERT_KEY, STAPLE_KEY, TLS_CERT_KEY
from ocsp_stapler.net.fetching import HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import (
    Chain,
    assemble_chain,
    find_issuer,
    load_certificates,
    sha256_hex,
)
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import (
    CertStatus,
    Staple,
    VerifyPolicy,
    tells_more,
    verify_response,
)
from ocsp_stapler.ocsp.stapling import Attempt, resolve_issuer
from ocsp_stapler.ocsp.transport import Fetch
from ocsp_stapler.standalone.files import read_small_file
from ocsp_stapler.standalone.health import SyncMetrics, health_server

logger = logging.getLogger(__name__)

RETRY = datetime.timedelta(seconds=30)
"""After a problem that looking again can fix (a caIssuers outage, a consumer that refused)."""

STEP_BOUND = commands.TIMEOUT + 4 * haproxy.TIMEOUT + 60.0
"""Seconds one look may take at worst (a command at its limit, every HAProxy command at its
limit, a caIssuers download): /healthz calls the loop stuck only past this (plus 10 polls)."""

EXPIRY_MARGIN = datetime.timedelta(seconds=60)
"""Consumers are told to let a staple go this long before its nextUpdate: a reload takes a
moment to reach every nginx worker, and a client's clock may run a little fast (HAProxy
itself stops 5 minutes early)."""

RevokedAction = Literal["staple", "remove"]


@dataclass(frozen=True)
class Source:
    """Where the certificate and its staple are read: a Secret volume, or files."""

    cert: Path
    staple: Path
    ca: Path | None = None
    issuer: Path | None = None

    @classmethod
    def secret_volume(cls, directory: Path, staple_key: str = STAPLE_KEY) -> Source:
        return cls(cert=directory / TLS_CERT_KEY, staple=directory / staple_key,
                   ca=directory / CA_CERT_KEY)  # fmt: skip

    @classmethod
    def given(
        cls,
        *,
        secret_dir: Path | None,
        cert: Path | None,
        staple: Path | None,
        ca: Path | None,
        issuer: Path | None,
        staple_key: str = STAPLE_KEY,
    ) -> Source:
        """From the command line: a Secret volume, or a certificate and a staple file
        (``ValueError`` for any other combination)."""
        if secret_dir is not None and cert is None and staple is None and ca is None:
            volume = cls.secret_volume(secret_dir, staple_key)
            return cls(cert=volume.cert, staple=volume.staple, ca=volume.ca, issuer=issuer)
        if secret_dir is None and cert is not None and staple is not None:
            return cls(cert=cert, staple=staple, ca=ca, issuer=issuer)
        raise ValueError("give --secret-dir, or --cert and --staple (and --ca if needed)")

    def version(self) -> tuple[object, ...]:
        """Changes whenever what would be read changes (the kubelet's link swap included)."""
        seen: list[object] = []
        for path in (self.cert, self.staple, self.ca, self.issuer, self.cert.parent / "..data"):
            try:
                st = os.stat(path) if path is not None else None
            except OSError:
                st = None
            seen.append((st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else None)
        return tuple(seen)


@dataclass(frozen=True)
class Verdict:
    """What the source holds now, as far as stapling goes."""

    cert_sha256: str | None
    """None: no certificate could be read (nothing can be stapled)."""
    staple: Staple | None
    """The verified, wanted, current staple; None when there is none."""
    problem: str | None = None
    retryable: bool = False
    """Whether looking again without a change can help (a caIssuers download failed)."""
    rejected: bool = False
    """A staple was there, and is not one to hand over (invalid, foreign, unwanted)."""
    withdrawn: bool = False
    """The source says no staple must be served: none is there (the operator removed it),
    or it is a verified revocation and ``revokedAction`` is remove. A staple handed over
    before goes too; a rejected one (garbled, foreign, ``unknown``) leaves it in place."""


@dataclass(frozen=True)
class HandedOver:
    staple: Staple | None
    cert_sha256: str | None


@dataclass(frozen=True)
class Keep:
    pass


def choose(
    verdict: Verdict, handed: HandedOver | None, now: datetime.datetime
) -> Staple | Keep | None:
    """What consumers must have now: a staple, none, or what they have (``Keep``).

    ``handed`` None: nothing known of what consumers hold (a start): tell them once.
    """
    current = handed.staple if handed is not None else None
    if current is not None and (
        handed is None
        or handed.cert_sha256 != verdict.cert_sha256
        or not current.valid_at(now)
        or verdict.withdrawn
    ):
        current = None  # another certificate's, or expired: it must go
    new = verdict.staple
    if new is not None and not new.valid_at(now):
        new = None
    if new is not None and (current is None or tells_more(new, current)):
        return new
    if current is not None:
        return Keep()  # valid, of this certificate, and nothing newer
    if handed is not None and handed.staple is None:
        return Keep()  # consumers were told there is none already
    return None


class Sidecar:
    def __init__(
        self,
        source: Source,
        delivery: Delivery,
        *,
        fetch: Fetch,
        policy: VerifyPolicy,
        revoked_action: RevokedAction = "staple",
        clock: Callable[[], datetime.datetime],
        attempt: Callable[[], Attempt] = Attempt,
        metrics: SyncMetrics | None = None,
        expiry_margin: datetime.timedelta = EXPIRY_MARGIN,
    ) -> None:
        self.source = source
        self.delivery = delivery
        self.fetch = fetch
        self.policy = policy
        self.revoked_action = revoked_action
        self.clock = clock
        self.attempt = attempt
        self.metrics = metrics or SyncMetrics()
        self.expiry_margin = expiry_margin
        self.handed: HandedOver | None = None
        self._issuers: dict[str, x509.Certificate] = {}
        self._said: str | None = None
        self.retry_at: datetime.datetime | None = None
        """When to look again though nothing changed (a retryable problem)."""

    def _say(self, message: str, *, level: int = logging.WARNING) -> None:
        """Log a problem once, until it changes (a poll every few seconds stays quiet)."""
        if message != self._said:
            self._said = message
            logger.log(level, "%s", message)

    async def verdict(self) -> Verdict:
        try:
            crt = read_small_file(self.source.cert)
            if crt is None:
                return Verdict(None, None, f"{self.source.cert} is missing")
            chain = assemble_chain(crt, read_small_file(self.source.ca))
            cert_sha256 = sha256_hex(chain.leaf)
            staple_der = read_small_file(self.source.staple)
        except errors.OCSPError as exc:
            return Verdict(None, None, str(exc))
        if not staple_der:
            return Verdict(cert_sha256, None, f"no staple in {self.source.staple}",
                           withdrawn=True)  # fmt: skip
        try:
            issuer = await self._issuer(chain, cert_sha256)
        except errors.OCSPError as exc:  # a download may work next time
            problem = f"the issuer of {self.source.cert}: {exc}"
            return Verdict(cert_sha256, None, problem, retryable=exc.retryable)
        return self._judge(staple_der, chain.leaf, issuer, cert_sha256)

    def _judge(
        self, der: bytes, leaf: x509.Certificate, issuer: x509.Certificate, cert_sha256: str
    ) -> Verdict:
        try:
            staple = verify_response(der, cert_id=CertID.of(leaf, issuer), issuer=issuer,
                                     now=self.clock(), policy=self.policy)  # fmt: skip
        except errors.OCSPError as exc:  # these bytes will not get better: wait for others
            return Verdict(cert_sha256, None, f"the staple in {self.source.staple}: {exc}",
                           rejected=True)  # fmt: skip
        if staple.status is CertStatus.REVOKED and self.revoked_action == "remove":
            return Verdict(cert_sha256, None, "the staple says revoked (revokedAction: remove)",
                           rejected=True, withdrawn=True)  # fmt: skip
        if staple.status is CertStatus.UNKNOWN:
            return Verdict(cert_sha256, None, "the staple says unknown", rejected=True)
        return Verdict(cert_sha256, staple)

    async def _issuer(self, chain: Chain, cert_sha256: str) -> x509.Certificate:
        if chain.issuer is not None:
            return chain.issuer
        known = self._issuers.get(cert_sha256)
        if known is not None:
            return known
        given = read_small_file(self.source.issuer)
        if given is not None:
            found = find_issuer(chain.leaf, load_certificates(given, what=str(self.source.issuer)))
            if found is None:
                raise errors.IssuerNotFound(f"{self.source.issuer} did not issue the certificate",
                                            retryable=False)  # fmt: skip
        else:
            found = await resolve_issuer(chain, fetch=self.fetch, attempt=self.attempt())
        self._issuers = {cert_sha256: found}  # one certificate at a time
        return found

    async def step(self) -> datetime.datetime | None:
        """Look at the source once and hand over what consumers must have; when to look
        again at the latest (the handed staple's expiry), None: on the next change."""
        verdict = await self.verdict()
        self.retry_at = self.clock() + RETRY if verdict.retryable else None
        if verdict.problem is not None:
            self._say(verdict.problem, level=logging.WARNING if verdict.rejected else logging.INFO)
        if verdict.rejected:
            self.metrics.rejected.inc()
        # Judged a margin ahead: consumers let go of a staple before its nextUpdate, not after
        # (nginx's old workers keep the old staple for a moment after a reload).
        wanted = choose(verdict, self.handed, self.clock() + self.expiry_margin)
        if not isinstance(wanted, Keep):
            try:
                await self.delivery.hand_over(wanted.der if wanted is not None else None)
            except ConsumerError as exc:
                self._say(f"the staple did not reach every consumer: {exc}")
                self.handed = None  # what they hold is unknown: tell them again
                self.metrics.failed()
                self.retry_at = self.clock() + RETRY
                return None
            self.handed = HandedOver(staple=wanted, cert_sha256=verdict.cert_sha256)
            self.metrics.handed(wanted)
            if wanted is not None:
                logger.info("handed over the staple of %s, good until %s",
                            verdict.cert_sha256, wanted.expires_at.isoformat())  # fmt: skip
            else:
                logger.info("no valid staple: consumers told to staple nothing")
        held = self.handed.staple if self.handed is not None else None
        return held.expires_at - self.expiry_margin if held is not None else None

    async def run(self, *, poll: float, stop: asyncio.Event) -> None:
        """Look at each change of the source, at each retry and at each expiry, until ``stop``."""
        seen: tuple[object, ...] | None = None
        expires_at: datetime.datetime | None = None
        while not stop.is_set():
            self.metrics.beat = time.monotonic()
            version, now = self.source.version(), self.clock()
            due = [t for t in (expires_at, self.retry_at) if t is not None]
            if version != seen or any(now >= t for t in due):
                seen = version
                try:
                    expires_at = await self.step()
                except Exception as exc:
                    self._say(f"internal error, looking again in {RETRY.seconds} s: {exc!r}")
                    self.retry_at = self.clock() + RETRY
                self.metrics.looks.inc()
                due = [t for t in (expires_at, self.retry_at) if t is not None]
            # Wake for the next poll, or exactly at the expiry if that is sooner.
            wait = min([poll, *((t - self.clock()).total_seconds() for t in due)])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.01)):
                    await stop.wait()


async def run_sync(
    source: Source,
    delivery: Delivery,
    *,
    settings: OperatorSettings,
    clock: Callable[[], datetime.datetime],
    poll: float,
    once: bool,
    health: tuple[str, int] = ("0.0.0.0", 0),  # noqa: S104 (probed from the pod network)
    expiry_margin: datetime.timedelta = EXPIRY_MARGIN,
) -> int:
    """The sidecar until SIGTERM (0), or one look with ``once`` (2: a consumer failed);
    ``health`` (address, port; port 0: none) serves /healthz, /readyz and /metrics."""
    metrics = SyncMetrics()
    address, port = health
    async with (
        HttpFetcher(settings.fetch_settings()) as fetch,
        health_server(metrics, address=address, port=port, stale_after=STEP_BOUND + 10 * poll),
    ):
        sidecar = Sidecar(
            source,
            delivery,
            fetch=fetch,
            policy=settings.stapling().verify,
            revoked_action=settings.revoked_action,
            clock=clock,
            attempt=settings.attempt,
            metrics=metrics,
            expiry_margin=expiry_margin,
        )
        if once:
            await sidecar.step()
            return 2 if sidecar.handed is None else 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await sidecar.run(poll=poll, stop=stop)
        return 0
