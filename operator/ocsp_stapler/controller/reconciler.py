"""The executor of the staple lifecycle: carries out what ``lifecycle.decide`` says, for each
Secret, and keeps what several Secrets share (fetches, issuers, refresh times).

``observe`` is called by the kopf handler for every TLS Secret event and does only cheap
comparisons; everything that costs (parsing, fetching, writing) runs later in ``process``, on
the scheduler's workers: it asks ``decide`` for the next step, carries it out, and asks again
until the answer is to wait (the rules themselves are in ``lifecycle``). What lives here:

* a staple is never written onto a Secret whose ``tls.crt`` changed since the fetch began
  (every patch tests ``tls.crt``, see ``secretpatches``); a patch the API server refuses for
  that ends the run, and the watch event that follows starts over;
* identical certificates in many Secrets share one fetch (``_fetch_shared``) and one refresh
  time (``_cache_and_schedule``);
* Events repeat only when their text changes, and status is published when it changes;
* a restart re-judges the staples already in Secrets and fetches only what is due.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocsp_stapler.controller import lifecycle, secretpatches
from ocsp_stapler.controller.bodies import (
    Body,
    SecretRef,
    SecretView,
    decode,
    has_traces,
    is_enabled,
    is_tls,
    ref_of,
    traces_of,
)
from ocsp_stapler.controller.eventing import EventRecorder, EventType
from ocsp_stapler.controller.lifecycle import (
    Action,
    Discard,
    Facts,
    Fetch,
    Found,
    Judge,
    Prepare,
    Refuse,
    Rejection,
    Remove,
    Wait,
    Withdraw,
    Write,
    decide,
    judge,
)
from ocsp_stapler.controller.metrics import Metrics
from ocsp_stapler.controller.preparation import CertKey, Issuers, Prepared, Unprepared, prepare
from ocsp_stapler.controller.records import SecretRecord
from ocsp_stapler.controller.scheduling import Scheduler
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.controller.statuses import metric_status, staple_object, status_of
from ocsp_stapler.k8s.client import (
    Api,
    ApiError,
    Conflict,
    Invalid,
    JsonObject,
    NotFound,
    resource_path,
)
from ocsp_stapler.names import CRD_API_VERSION, CRD_PLURAL, MANAGED_BY, MANAGED_BY_LABEL
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.responses import (
    CertStatus,
    Staple,
    claimed_expiry,
    tells_more,
)
from ocsp_stapler.ocsp.schedules import after_failure, after_success, refresh_target
from ocsp_stapler.ocsp.sharing import SingleFlight
from ocsp_stapler.ocsp.stapling import Attempt, Fetched, obtain_staple, responder_urls
from ocsp_stapler.ocsp.transport import Fetch as FetchBytes

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]

MAX_STEPS = 12
"""Decisions carried out in one run at most (a run takes six at most: prepare, remove a
foreign staple, judge, fetch, write, and wait)."""

CHANGED_RETRY = datetime.timedelta(minutes=1)
"""After the API server refused a patch because the Secret changed: look again then, if the
watch event about the change has not started the Secret over already."""

_VERIFICATION_ERRORS = (
    errors.ResponseMalformed,
    errors.ResponderError,
    errors.CertIDMismatch,
    errors.SignatureInvalid,
    errors.SignerUnauthorized,
    errors.NotYetValid,
    errors.Expired,
    errors.NoNextUpdate,
    errors.Stale,
    errors.NonceMismatch,
)


@dataclass(frozen=True)
class SharedAnswer:
    """The newest verified answer for one certificate, shared by the Secrets that hold it,
    and when any of them asks again."""

    staple: Staple
    fetched: Fetched | None
    """The fetch that brought it; None when it was found in a Secret (nobody asked yet)."""
    refresh_at: datetime.datetime
    unchanged: int = 0
    """Fetches in a row that brought nothing newer than ``staple`` (they back off)."""
    source: Fetched | None = None
    """The fetch last counted here (the same fetch seen by many Secrets counts once)."""


@dataclass(frozen=True)
class KeyFailure:
    error: errors.OCSPError
    failures: int
    retry_at: datetime.datetime


@dataclass(frozen=True)
class Adopted(Fetched):
    """An answer no request was made for: verified in another Secret holding the same
    certificate (``_fetch_shared``); it is not counted as a fetch."""


class Reconciler:
    def __init__(
        self,
        *,
        api: Api,
        fetch: FetchBytes,
        settings: OperatorSettings,
        clock: Clock,
        metrics: Metrics,
        events: EventRecorder,
        rand: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.monotonic = monotonic
        """The clock of attempt deadlines (the simulation's is virtual)."""
        self.fetch = fetch
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.events = events
        self.rand = rand
        self.policy = settings.refresh_policy()
        self.stapling = settings.stapling()
        self.records: dict[SecretRef, SecretRecord] = {}
        self.scheduler: Scheduler[SecretRef] = Scheduler(
            work=self.process,
            clock=clock,
            concurrency=settings.concurrency,
            group=_namespace_of,  # one namespace's failing Secrets cannot starve another's
        )
        self.flight: SingleFlight[CertKey, Fetched] = SingleFlight()
        self.cache: dict[CertKey, SharedAnswer] = {}
        self.holders: dict[CertKey, set[SecretRef]] = {}
        self.key_failures: dict[CertKey, KeyFailure] = {}
        """The last failed fetch per certificate, until its retry time: Secrets holding the
        same certificate that come due before it share the failure instead of asking."""
        self.crd_available = True
        self.issuers = Issuers()

    # ----------------------------------------------------------------- events from kopf

    async def observe(self, event_type: str | None, body: Body) -> None:
        """A watch event for a Secret: decide cheaply whether work is needed, and schedule it."""
        if not is_tls(body):
            return
        ref = ref_of(body)
        if event_type == "DELETED":
            await self.forget(ref, deleted=True)
            return
        if not is_enabled(body):
            if ref in self.records or has_traces(body, self.settings.staple_key):
                await self.disable(ref, body)
            return
        view = SecretView.of(body, self.settings.staple_key)
        record = self.records.get(ref)
        if record is None or not view.same_certificate(record.view):
            if record is not None:
                self._release(record)
            fresh = SecretRecord(view=view)
            if record is not None and record.view.uid == view.uid:
                fresh.staple_object_created = record.staple_object_created
                fresh.published_digest = record.published_digest
                fresh.published_ready = record.published_ready
                fresh.last_event = record.last_event
                fresh.ever_stapled = record.ever_stapled
            self.records[ref] = fresh
            self.metrics.managed.set(len(self.records))
            self.scheduler.run_now(ref)
            return
        if (view.staple_b64, view.staple_cert_sha256) != (
            record.view.staple_b64,
            record.view.staple_cert_sha256,
        ):
            # Someone else changed the staple (or a stale event): judge what is there now.
            held = record.held
            record.view = view
            record.judged, record.held, record.rejection = False, None, None
            if view.staple_b64 is None and held is not None and held.valid_at(self.clock()):
                # Removed (a kubectl replace, a secret sync): write it back now, from what
                # was fetched (no request while it is fresh), a minute after our last write
                # at the soonest, so that we never race another writer.
                last = record.last_write
                soonest = last + self.policy.min_spacing if last is not None else None
                record.refresh_at = soonest if soonest and soonest > self.clock() else None
            self.scheduler.run_now(ref)
        else:
            record.view = view

    async def forget(self, ref: SecretRef, *, deleted: bool = False) -> None:
        record = self.records.pop(ref, None)
        self.scheduler.cancel(ref)
        self.metrics.managed.set(len(self.records))
        self.metrics.forget_secret(ref)
        if record is not None:
            self._release(record)
        if deleted:
            await self._delete_staple_object(ref)

    async def disable(self, ref: SecretRef, body: Body) -> None:
        """Opt-out: remove the staple and our annotations, and the OCSPStaple object."""
        record = self.records.get(ref)
        await self.forget(ref)
        # Managed until now (a record): its staple key is ours. Otherwise only what our
        # annotations say we wrote (the opt-out happened while no operator ran).
        traces = traces_of(body, self.settings.staple_key, opted_in=record is not None,
                           user_annotations=False)  # fmt: skip
        if traces:
            patch = secretpatches.cleanup(traces)
            try:
                await self.api.patch(self._secret_path(ref), patch, patch_type="json")
                self.metrics.writes.labels(action="cleanup").inc()
            except (Invalid, NotFound):
                pass  # changed or gone meanwhile: the next event brings the new state
            if record is not None:
                await self._event(
                    record, "Normal", "StapleRemoved", "stapling disabled: staple removed"
                )
        await self._delete_staple_object(ref)

    # ------------------------------------------------------------------- the work itself

    def _current(self, record: SecretRecord) -> bool:
        """Whether ``record`` is still the one for its Secret (not replaced by a newer event)."""
        return self.records.get(record.ref) is record

    async def process(self, ref: SecretRef) -> None:
        """Carry out the lifecycle's decisions for one Secret until it says wait."""
        record = self.records.get(ref)
        if record is None:
            return
        attempt = self.settings.attempt(self.monotonic)  # one deadline for all this run asks
        for _ in range(MAX_STEPS):
            if not self._current(record):
                return
            action = decide(self._facts(record))
            if isinstance(action, Wait):
                self.scheduler.schedule(ref, action.until)
                await self._publish(record)
                return
            if not await self._carry_out(record, action, attempt):
                if record.write_refused is not None and self._current(record):
                    # Nothing else would tell: no OCSPStaple, no Event, no metric otherwise.
                    await self._event(record, "Warning", "WriteRefused", record.write_refused)
                    await self._publish(record)
                return
        # Every action changes the facts it was decided on: this is a bug, and the scheduler
        # retries it with a backoff and logs the traceback once.
        raise RuntimeError(f"no decision settled {ref} in {MAX_STEPS} steps")

    def _facts(self, record: SecretRecord) -> Facts:
        return lifecycle.facts_of(record, now=self.clock(), found=self._found(record),
                                  revoked_action=self.settings.revoked_action)  # fmt: skip

    def _found(self, record: SecretRecord) -> Found | None:
        """What the Secret holds, read once per staple (its claimed expiry is parsed)."""
        view = record.view
        if view.staple_b64 is None and view.staple_cert_sha256 is None:
            return None
        cached = record.found
        if cached is not None and cached[:2] == (view.staple_b64, view.staple_cert_sha256):
            return cached[2]
        found = Found(cert_sha256=view.staple_cert_sha256)
        leaf = record.leaf
        if leaf is None:
            return found  # its claimed expiry needs the serial: read once tls.crt is parsed
        if view.staple_b64 is not None:
            try:
                expiry = claimed_expiry(
                    decode(view.staple_b64) or b"",
                    serial_number=leaf.serial_number,
                    policy=self.stapling.verify,
                )
                found = dataclasses.replace(found, claimed_expiry=expiry)
            except errors.OCSPError as exc:
                found = dataclasses.replace(found, malformed=str(exc))
        record.found = (view.staple_b64, view.staple_cert_sha256, found)
        return found

    async def _carry_out(self, record: SecretRecord, action: Action, attempt: Attempt) -> bool:
        """One effect of a decision; False when this run must stop (the Secret changed)."""
        match action:
            case Prepare():
                await self._prepare(record, attempt)
            case Judge(prepared=prep):
                self._judge(record, prep)
            case Remove(type=type_, reason=reason, message=message):
                return await self._remove(record, type_, reason, message)
            case Fetch(prepared=prep):
                await self._refresh(record, prep, attempt)
            case Write(answer=answer, prepared=prep):
                if not await self._write(record, prep, answer.staple):
                    return False
                await self._answered(record, prep, answer, held=answer.staple)
            case Withdraw(answer=answer, prepared=prep):
                if not await self._remove(
                    record, "Warning", "StapleRemoved", "the certificate is revoked"
                ):
                    return False
                await self._answered(record, prep, answer, held=None)
            case Discard():
                record.answer, record.refresh_at = None, None
            case Refuse(answer=answer):
                record.answer = None
                problem = errors.CertificateUnknown(
                    f"{answer.responder_url} answered unknown for serial "
                    f"{answer.staple.serial_number:X}"
                )
                record.refresh_at = await self._failed(record, problem)
        return True

    async def _prepare(self, record: SecretRecord, attempt: Attempt) -> None:
        prep = await prepare(record.view, fetch=self.fetch, attempt=attempt, issuers=self.issuers)
        if not self._current(record):
            return
        if isinstance(prep, Unprepared):
            retry_at = await self._failed(record, prep.problem)
            if not prep.permanent:
                prep = dataclasses.replace(prep, retry_at=retry_at)
        else:
            record.failures, record.last_error, record.last_reason = 0, None, None
            self.holders.setdefault(prep.cert_key, set()).add(record.ref)
        record.preparation = prep

    def _judge(self, record: SecretRecord, prep: Prepared) -> None:
        """Verify the staple found in the Secret: held, or a rejection saying why it goes."""
        record.judged = True
        view = record.view
        if view.staple_b64 is None:
            return  # only the certificate annotation is there (it goes with the next write)
        verdict = judge(
            decode(view.staple_b64) or b"",
            prep,
            now=self.clock(),
            policy=self.stapling.verify,
            revoked_action=self.settings.revoked_action,
        )
        if isinstance(verdict, Rejection):
            record.rejection = verdict
            return
        staple = verdict
        record.held = record.newest = staple
        record.ever_stapled = True
        record.last_status = staple.status
        cached = self._cache_and_schedule(prep.cert_key, staple, None)
        target, _ = refresh_target(
            this_update=staple.this_update, expires_at=staple.expires_at, policy=self.policy
        )
        # Found already past its refresh point (e.g. after a long outage), or another Secret
        # holds a newer answer for the certificate (taken without a request): due now.
        behind = tells_more(cached.staple, staple)
        record.refresh_at = None if target <= self.clock() or behind else cached.refresh_at

    def _cache_and_schedule(
        self, key: CertKey, staple: Staple, fetched: Fetched | None
    ) -> SharedAnswer:
        """Keep the newest verified answer per certificate, and decide when to ask again: the
        refresh time every Secret holding the certificate shares. ``fetched``: the fetch that
        brought ``staple``; None when it was found in a Secret (never asked for)."""
        current = self.cache.get(key)
        if current is not None and fetched is not None and current.source is fetched:
            return current  # the same fetch, counted already (siblings share one flight)
        unchanged = 0
        if current is not None and not tells_more(staple, current.staple):
            if fetched is None:
                return current  # a copy found in a Secret adds nothing
            # Fetched, and nothing newer: keep the newest (never go backwards) and back off.
            unchanged = current.unchanged + 1
            if tells_more(current.staple, staple):  # older, or good as new as a revoked one
                staple, fetched = current.staple, current.fetched
        fresh_until = fetched.fresh_until if fetched is not None else None
        decision = after_success(
            this_update=staple.this_update,
            expires_at=staple.expires_at,
            now=self.clock(),
            policy=self.policy,
            rand=self.rand,
            unchanged=unchanged,
            fresh_until=fresh_until,
        )
        entry = SharedAnswer(
            staple=staple,
            fetched=fetched,
            refresh_at=decision.at,
            unchanged=unchanged,
            source=fetched,
        )
        self.cache[key] = entry
        if current is not None and tells_more(staple, current.staple):
            self._news_for_holders(key, staple)
        return entry

    def _news_for_holders(self, key: CertKey, staple: Staple) -> None:
        """A newer answer for a certificate (a revocation, above all) reaches every Secret
        holding it now, not at each one's own refresh time; no request is made for it."""
        for ref in self.holders.get(key, ()):
            record = self.records.get(ref)
            held = record.held if record is not None else None
            if record is not None and held is not None and tells_more(staple, held):
                record.refresh_at = None
                self.scheduler.run_now(ref)

    def _bound(self, record: SecretRecord, key: CertKey) -> Staple | None:
        """The answer a new one must not tell less than: the newest verified for this Secret
        or for any Secret holding the certificate (never go backwards, not even after the held
        staple expired, nor because a sibling started the fetch)."""
        known = [s for s in (record.held, record.newest) if s is not None]
        cached = self.cache.get(key)
        if cached is not None:
            known.append(cached.staple)
        best: Staple | None = None
        for staple in known:
            if best is None or tells_more(staple, best):
                best = staple
        return best

    async def _fetch_shared(
        self, record: SecretRecord, prep: Prepared, attempt: Attempt
    ) -> Fetched:
        key, now = prep.cert_key, self.clock()
        cached = self.cache.get(key)
        mine = record.held or record.newest
        if cached is not None and cached.staple.valid_at(now):
            behind = mine is not None and tells_more(mine, cached.staple)
            if cached.fetched is not None and cached.refresh_at > now and not behind:
                return cached.fetched  # a sibling Secret fetched it: no request
            if cached.fetched is None and (mine is None or tells_more(cached.staple, mine)):
                # Verified in another Secret's staple (after a restart): a revocation seen
                # there reaches every Secret holding the certificate, without a request.
                return self._adopted(prep, cached.staple)
        failure = self.key_failures.get(key)
        if failure is not None and now < failure.retry_at:
            raise failure.error.with_traceback(None)  # a sibling's attempt failed just now
        bound = self._bound(record, key)

        async def fetch_once() -> Fetched:
            start = time.monotonic()
            try:
                fetched = await obtain_staple(
                    prep.chain,
                    fetch=self.fetch,
                    clock=self.clock,
                    config=self.stapling,
                    held=bound,
                    override_url=prep.override_url,
                    attempt=attempt,
                )
            except errors.OCSPError as exc:
                self.metrics.fetches.labels(result=exc.reason).inc()
                self._key_failed(key, exc, bound)
                raise
            finally:
                self.metrics.fetch_duration.observe(time.monotonic() - start)
            self.key_failures.pop(key, None)
            self.metrics.fetches.labels(result=fetched.staple.status.value).inc()
            if fetched.staple.status is not CertStatus.UNKNOWN and key in self.holders:
                # Before the flight lands, so Secrets that come due just after reuse it.
                self._cache_and_schedule(key, fetched.staple, fetched)
            return fetched

        return await self.flight.run(key, fetch_once)

    def _newer_shared(self, prep: Prepared, staple: Staple, mine: Staple | None) -> Fetched | None:
        """The shared answer, when it tells more than ``staple`` and than ``mine``."""
        cached = self.cache.get(prep.cert_key)
        if cached is None or not cached.staple.valid_at(self.clock()):
            return None
        if not tells_more(cached.staple, staple) or (
            mine is not None and not tells_more(cached.staple, mine)
        ):
            return None
        return cached.fetched or self._adopted(prep, cached.staple)

    def _adopted(self, prep: Prepared, staple: Staple) -> Adopted:
        urls = responder_urls(prep.leaf, prep.override_url)
        return Adopted(staple=staple, responder_url=urls[0] if urls else "", issuer=prep.issuer)

    def _key_failed(self, key: CertKey, exc: errors.OCSPError, bound: Staple | None) -> None:
        previous = self.key_failures.get(key)
        failures = previous.failures + 1 if previous is not None else 1
        retry_at = self._retry_at(failures, bound)
        self.key_failures[key] = KeyFailure(error=exc, failures=failures, retry_at=retry_at)

    async def _refresh(self, record: SecretRecord, prep: Prepared, attempt: Attempt) -> None:
        record.last_attempt = self.clock()
        try:
            fetched = await self._fetch_shared(record, prep, attempt)
        except errors.OCSPError as exc:
            retry_at = await self._failed(record, exc)
            # A refusal no retry can fix soon (a responder the destination rules refuse) is
            # still asked again after the longest interval: DNS answers and rules change.
            record.refresh_at = retry_at or self.clock() + self.policy.max_interval
            return
        if not self._current(record):
            return
        mine = record.held or record.newest
        newer = self._newer_shared(prep, fetched.staple, mine)
        if newer is not None:
            fetched = newer  # another Secret with this certificate learnt more meanwhile
        elif mine is not None and tells_more(mine, fetched.staple):
            # A fetch shared with another Secret that knew less: nothing newer for this one.
            cached = self.cache.get(prep.cert_key)
            later = cached.refresh_at if cached is not None else None
            record.refresh_at = (
                later
                if later and later > self.clock()
                else (self.clock() + self.policy.min_spacing)
            )
            return
        record.newest = fetched.staple
        record.responder_url = fetched.responder_url
        record.last_status = fetched.staple.status
        record.answer = fetched

    async def _answered(
        self, record: SecretRecord, prep: Prepared, fetched: Fetched, *, held: Staple | None
    ) -> None:
        """The fetched answer is applied (written, or withdrawn): success, and when next."""
        staple = fetched.staple
        if isinstance(fetched, Adopted):
            cached = self.cache.get(prep.cert_key) or self._cache_and_schedule(
                prep.cert_key, staple, None
            )
        else:
            cached = self._cache_and_schedule(prep.cert_key, staple, fetched)
        record.answer = None
        record.held = held
        if staple.status is CertStatus.REVOKED:
            await self._event(record, "Warning", "CertificateRevoked", _revocation_message(staple))
        elif not record.ever_stapled:
            await self._event(
                record,
                "Normal",
                "Stapled",
                f"first staple from {fetched.responder_url}: "
                f"good until {staple.expires_at.isoformat()}",
            )
        record.ever_stapled = record.ever_stapled or held is not None
        record.failures = 0
        record.last_error = record.last_reason = None
        record.last_success = self.clock()
        record.refresh_at = cached.refresh_at

    async def _failed(
        self, record: SecretRecord, exc: errors.OCSPError
    ) -> datetime.datetime | None:
        """Count a failure, tell about it once, and return when to try again (None: never,
        until the Secret changes)."""
        record.failures += 1
        record.last_error, record.last_reason = str(exc), exc.reason
        if not exc.retryable:
            await self._event(record, "Warning", exc.reason, exc.message)
            return None
        retry_at = self._retry_at(record.failures, record.held)
        if isinstance(exc, _VERIFICATION_ERRORS):
            await self._event(
                record, "Warning", "VerificationFailed", f"{exc.reason}: {exc.message}"
            )
        elif isinstance(exc, errors.CertificateUnknown):
            await self._event(record, "Warning", exc.reason, exc.message)
        elif record.failures == self.settings.unreachable_after:
            await self._event(
                record,
                "Warning",
                "ResponderUnreachable",
                f"{record.failures} attempts failed; last: {exc.message}; retrying, "
                "the held staple is kept until it expires",
            )
        logger.info("refresh of %s failed (%d in a row): %s", record.ref, record.failures, exc)
        return retry_at

    def _retry_at(self, failures: int, held: Staple | None) -> datetime.datetime:
        """When to try again after ``failures`` in a row, before ``held`` expires."""
        return after_failure(
            failures=failures,
            now=self.clock(),
            expires_at=held.expires_at if held is not None else None,
            policy=self.policy,
            rand=self.rand,
        ).at

    # ------------------------------------------------------------------------- writing

    def _secret_path(self, ref: SecretRef) -> str:
        return resource_path(
            api_version="v1", plural="secrets", namespace=ref.namespace, name=ref.name
        )

    async def _patch(self, record: SecretRecord, patch: list[dict[str, Any]], action: str) -> bool:
        """Apply a guarded JSON patch and take the Secret as it is after it; False when the
        Secret changed under us (a ``test`` failed), is gone, or the write was refused."""
        path = self._secret_path(record.ref)
        try:
            body = await self.api.patch(path, patch, patch_type="json")
        except Invalid as exc:
            if await self._changed(record):
                # tls.crt (or the staple) changed since we read it: the stale result is
                # dropped. The watch event about the change starts the Secret over; should it
                # be late, the Secret is looked at again in a minute.
                logger.info("%s changed during the %s; starting over", record.ref, action)
                self.scheduler.schedule(record.ref, self.clock() + CHANGED_RETRY)
            else:
                self._refused(record, action, exc)
            return False
        except NotFound:
            await self.forget(record.ref, deleted=True)
            return False
        except (ApiError, OSError) as exc:
            self._refused(record, action, exc)
            return False
        self.metrics.writes.labels(action=action).inc()
        record.view = SecretView.of(body, self.settings.staple_key)
        record.write_refusals, record.write_refused = 0, None
        return True

    async def _changed(self, record: SecretRecord) -> bool:
        """Whether what our patches test (tls.crt, the staple) differs from ``record.view``."""
        try:
            body = await self.api.get(self._secret_path(record.ref))
        except (ApiError, OSError):
            return True  # gone or unreadable: the watch tells what happened
        now = SecretView.of(body, self.settings.staple_key)
        return (now.crt_b64, now.staple_b64) != (record.view.crt_b64, record.view.staple_b64)

    def _refused(self, record: SecretRecord, action: str, exc: Exception) -> None:
        """The API server refused a write for another reason than a changed Secret (an
        admission policy, an immutable Secret, an outage): back off like a failed fetch."""
        record.write_refusals += 1
        record.write_refused = f"the API server refused the {action} of the staple: {exc}"
        if record.write_refusals == 1:
            logger.warning("the %s of %s was refused: %s", action, record.ref, exc)
        self.scheduler.schedule(record.ref, self._retry_at(record.write_refusals, None))

    async def _write(self, record: SecretRecord, prep: Prepared, staple: Staple) -> bool:
        b64 = base64.b64encode(staple.der).decode()
        view = record.view
        if (
            view.staple_b64 == b64
            and view.staple_cert_sha256 == prep.cert_sha256
            and view.staple_issuer_b64 == prep.issuer_b64
        ):
            return True  # already there: no write
        patch = secretpatches.write_staple(
            view,
            staple_key=self.settings.staple_key,
            staple_b64=b64,
            cert_sha256=prep.cert_sha256,
            issuer_b64=prep.issuer_b64,
        )
        if not await self._patch(record, patch, "write"):
            return False
        record.last_write = self.clock()
        record.judged, record.rejection = True, None  # what is there now is what we verified
        return True

    async def _remove(
        self, record: SecretRecord, type_: EventType, reason: str, message: str
    ) -> bool:
        """Remove the staple the Secret holds (as ``record.view`` saw it), with an Event."""
        record.held = None
        view = record.view
        if view.staple_b64 is None and view.staple_cert_sha256 is None:
            return True
        patch = secretpatches.remove_staple(view, staple_key=self.settings.staple_key)
        if not await self._patch(record, patch, "remove"):
            return False
        record.judged, record.rejection = False, None
        await self._event(record, type_, reason, message)
        return True

    async def _event(
        self, record: SecretRecord, type_: EventType, reason: str, message: str
    ) -> None:
        """Post an Event unless it repeats the last one for this Secret (retries stay quiet)."""
        if record.last_event == (reason, message):
            return
        record.last_event = (reason, message)
        await self.events.post(
            record.ref, uid=record.view.uid, type=type_, reason=reason, message=message
        )

    # ------------------------------------------------------------------------ reporting

    def _staple_path(self, ref: SecretRef, subresource: str | None = None) -> str:
        return resource_path(
            api_version=CRD_API_VERSION,
            plural=CRD_PLURAL,
            namespace=ref.namespace,
            name=ref.name,
            subresource=subresource,
        )

    async def _publish(self, record: SecretRecord) -> None:
        held = record.held
        failing = record.problem is not None or record.last_error is not None
        self.metrics.observe_secret(
            record.ref,
            status=metric_status(record),
            expires_at=held.expires_at if held else None,
            # Only a refresh a success scheduled: during failures the next retry is no
            # promise, and the expiry alert must not wait for it.
            refresh_at=None if failing else record.refresh_at,
        )
        if not self.crd_available:
            return
        status = self._status(record)
        digest = hash(json.dumps(status, sort_keys=True))
        if digest == record.published_digest:
            return
        try:
            if not record.staple_object_created:
                existing = await self._existing_or_created(record)
                if not self.crd_available:
                    return
                if existing is not None:
                    # It exists (a restart, a takeover): keep its Ready transition time when
                    # Ready is unchanged, and write nothing if its status is already this.
                    status, unchanged = self._status_against(record, existing)
                    digest = hash(json.dumps(status, sort_keys=True))
                    if unchanged:
                        record.staple_object_created = True
                        self._published(record, status, digest)
                        return
                record.staple_object_created = True
            patched = await self.api.patch(
                self._staple_path(record.ref, "status"), {"status": status}
            )
            # The CRD keeps the spec fixed, so this stays 1; an object someone else's CRD let
            # change is observed from the next status on.
            record.staple_generation = _generation(patched, record.staple_generation)
        except NotFound:
            record.staple_object_created = False  # deleted by someone: recreated next time
            return
        except (ApiError, OSError) as exc:
            logger.warning("could not report status of %s: %s", record.ref, exc)
            return
        self._published(record, status, digest)

    async def _existing_or_created(self, record: SecretRecord) -> JsonObject | None:
        """The Secret's OCSPStaple as an earlier run left it, or None once it is created now.

        A Secret with the operator's own staple annotation was handled by an earlier run (a
        restart, a takeover), so its OCSPStaple is read first: at 10,000 Secrets a restart
        then costs one request each when the status is already right, not a create refused
        with Conflict and a read. Any other Secret's is created first."""
        path = self._staple_path(record.ref)
        if record.view.staple_cert_sha256 is not None:
            try:
                return await self.api.get(path)
            except NotFound:
                pass  # removed since (or the CRD is missing: the create says which)
        collection = resource_path(
            api_version=CRD_API_VERSION, plural=CRD_PLURAL, namespace=record.ref.namespace
        )
        try:
            created = await self.api.create(collection, staple_object(record))
        except Conflict:
            return await self.api.get(path)
        except NotFound as exc:
            self.crd_available = False
            logger.error("OCSPStaple CRD not installed; status is not reported: %s", exc)
            return None
        record.staple_generation = _generation(created, record.staple_generation)
        return None

    @staticmethod
    def _published(record: SecretRecord, status: dict[str, Any], digest: int) -> None:
        record.published_digest = digest
        ready = status["conditions"][0]
        record.published_ready = (ready["status"], ready["lastTransitionTime"])

    def _status_against(
        self, record: SecretRecord, existing: JsonObject
    ) -> tuple[dict[str, Any], bool]:
        """The status to publish over one another process published: (status, whether it is
        that one already)."""
        old = existing.get("status") or {}
        conditions = old.get("conditions") or [{}]
        previous = (conditions[0].get("status"), conditions[0].get("lastTransitionTime"))
        if isinstance(previous[0], str) and isinstance(previous[1], str):
            record.published_ready = (previous[0], previous[1])
        record.staple_generation = _generation(existing, record.staple_generation)
        status = self._status(record)
        # None values are sent as null (a merge patch removes them): the stored status has none.
        return status, old == {k: v for k, v in status.items() if v is not None}

    def _status(self, record: SecretRecord) -> dict[str, Any]:
        return status_of(record, now=self.clock(), previous=record.published_ready,
                         generation=record.staple_generation)  # fmt: skip

    async def _delete_staple_object(self, ref: SecretRef) -> None:
        if not self.crd_available:
            return
        path = self._staple_path(ref)
        try:
            existing = await self.api.get(path)
            labels = (existing.get("metadata") or {}).get("labels") or {}
            if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                return  # someone else's object of the same name
            await self.api.delete(path)
        except NotFound:
            pass
        except (ApiError, OSError) as exc:
            logger.warning("could not delete OCSPStaple %s: %s", ref, exc)

    def _release(self, record: SecretRecord) -> None:
        key = record.cert_key
        if key is None:
            return
        holders = self.holders.get(key)
        if holders is not None:
            holders.discard(record.ref)
            if not holders:
                del self.holders[key]
                self.cache.pop(key, None)

    async def drain(self) -> None:
        """Wait until no work is due now (tests and benchmarks)."""
        await asyncio.sleep(0)
        await self.scheduler.idle()


def _generation(obj: JsonObject, default: int) -> int:
    """metadata.generation of an API answer (the in-memory API of the simulation has none)."""
    value = (obj.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) and value > 0 else default


def _namespace_of(ref: SecretRef) -> str:
    return ref.namespace


def _revocation_message(staple: Staple) -> str:
    when = staple.revocation_time.isoformat() if staple.revocation_time else "an unknown time"
    reason = f" ({staple.revocation_label})" if staple.revocation_label else ""
    return f"the certificate (serial {staple.serial_number:X}) was revoked at {when}{reason}"
