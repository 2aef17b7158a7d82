"""What happens to one Secret: observe → prepare → judge the held staple → refresh → write.

``observe`` is called by the kopf handler for every TLS Secret event and does only cheap
comparisons; everything that costs (parsing, fetching, writing) runs later in ``process``,
on the scheduler's workers. The rules users rely on, and where they live:

* a staple that does not belong to the current ``tls.crt`` is removed at once (``_judge``);
* a staple is never written onto a Secret whose ``tls.crt`` changed since the fetch began
  (every patch tests ``tls.crt``, see ``secretpatches``);
* an expired staple is removed when its nextUpdate passes without a refresh (``process``);
* revoked responses are stapled (or removed, by configuration) with a Warning Event;
  ``unknown`` is never stapled and the previous good staple stays until it expires;
* no OCSP URL is one status and one Event, never a retry loop (``problem``);
* a restart re-judges the staples already in Secrets and fetches only what is due;
* identical certificates in many Secrets share one fetch (``_fetch_shared``).
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

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ocsp_stapler.controller import secretpatches
from ocsp_stapler.controller.bodies import (
    Body,
    SecretRef,
    SecretView,
    check_responder_override,
    data_of,
    decode,
    has_traces,
    is_enabled,
    is_tls,
    our_annotations,
    ref_of,
)
from ocsp_stapler.controller.eventing import EventRecorder, EventType
from ocsp_stapler.controller.metrics import Metrics
from ocsp_stapler.controller.records import CertKey, SecretRecord
from ocsp_stapler.controller.scheduling import Scheduler
from ocsp_stapler.controller.settings import OperatorSettings
from ocsp_stapler.controller.statuses import staple_object, status_of
from ocsp_stapler.k8s.client import ApiClient, ApiError, Conflict, Invalid, NotFound, resource_path
from ocsp_stapler.names import CRD_API_VERSION, CRD_PLURAL, RESPONDER_URL
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import Chain, assemble_chain, sha256_hex
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, Staple, verify_response
from ocsp_stapler.ocsp.schedules import after_failure, after_success, refresh_target
from ocsp_stapler.ocsp.sharing import SingleFlight
from ocsp_stapler.ocsp.stapling import (
    Attempt,
    Fetched,
    obtain_staple,
    resolve_issuer,
    responder_urls,
)
from ocsp_stapler.ocsp.transport import Fetch

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]

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
class CachedStaple:
    fetched: Fetched
    refresh_at: datetime.datetime
    unchanged: int = 0
    """Fetches in a row that brought nothing newer than ``fetched`` (they back off)."""
    source: Fetched | None = None
    """The fetch last remembered here (the same one remembered twice counts once)."""


class Reconciler:
    def __init__(
        self,
        *,
        api: ApiClient,
        fetch: Fetch,
        settings: OperatorSettings,
        clock: Clock,
        metrics: Metrics,
        events: EventRecorder,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.api = api
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
        self.cache: dict[CertKey, CachedStaple] = {}
        self.holders: dict[CertKey, set[SecretRef]] = {}
        self.crd_available = True
        self.issuers: dict[bytes, x509.Certificate] = {}
        self._issuer_annotations: dict[bytes, str] = {}

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
            record.view = view
            record.judged = False
            record.held = None
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
        data_keys = [self.settings.staple_key] if self.settings.staple_key in data_of(body) else []
        annotation_keys = [k for k in our_annotations(body) if k != RESPONDER_URL]
        if data_keys or annotation_keys:
            patch = secretpatches.cleanup(data_keys=data_keys, annotation_keys=annotation_keys)
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
        record = self.records.get(ref)
        if record is None:
            return
        attempt = self.settings.attempt()  # one deadline for everything this run asks
        # Not prepared until the issuer is known (a failed caIssuers download leaves the chain).
        if (
            record.cert_key is None
            and record.problem is None
            and not await self._prepare(record, attempt)
        ):
            await self._settle(record)
            return
        if record.problem is None and not record.judged:
            await self._judge(record)
        if not self._current(record):
            return
        now = self.clock()
        if record.held is not None and now >= record.held.expires_at:
            await self._remove(
                record,
                "Warning",
                "StapleExpired",
                f"the staple expired at {record.held.expires_at.isoformat()} without a "
                f"successful refresh ({record.last_error or 'no error recorded'}); removed",
            )
        if record.problem is None and (record.refresh_at is None or now >= record.refresh_at):
            await self._refresh(record, attempt)
        await self._settle(record)

    async def _settle(self, record: SecretRecord) -> None:
        if not self._current(record):
            return
        self.scheduler.schedule(record.ref, record.next_wake())
        await self._publish(record)

    async def _prepare(self, record: SecretRecord, attempt: Attempt) -> bool:
        """Parse the chain, find the issuer. False when not ready (problem or retry later)."""
        view = record.view
        try:
            crt = decode(view.crt_b64)
            if not crt:
                raise errors.ChainInvalid("tls.crt is missing or not base64")
            ca = decode(view.ca_b64) if view.ca_b64 else None
            chain = assemble_chain(crt, ca)
            try:
                override = check_responder_override(view.override_url)
            except ValueError as exc:
                raise errors.InvalidAnnotation(str(exc)) from None
            if not responder_urls(chain.leaf, override):
                raise errors.NoResponder(
                    "the certificate names no OCSP responder (AIA id-ad-ocsp) and no "
                    f"{RESPONDER_URL} annotation is set; nothing to staple"
                )
            record.chain = chain
            record.cert_sha256 = sha256_hex(chain.leaf)
            issuer = await resolve_issuer(chain, fetch=self.fetch, attempt=attempt)
        except errors.OCSPError as exc:
            await self._failed(record, exc)
            if not exc.retryable and view.staple_b64 is not None:
                await self._remove(
                    record, "Warning", "StapleRemoved", f"the staple cannot be judged: {exc}"
                )
            return False
        # Thousands of Secrets share a handful of issuers: keep one object per issuer, and only
        # the leaf and its issuer of each chain (memory at 10,000 Secrets).
        issuer = self.issuers.setdefault(issuer.fingerprint(hashes.SHA256()), issuer)
        record.issuer = issuer
        record.issuer_b64 = None if chain.issuer is not None else self._issuer_b64(issuer)
        record.chain = Chain(leaf=chain.leaf, issuer=issuer)
        key_hash = CertID.for_serial(issuer, chain.leaf.serial_number).issuer_key_hash
        record.cert_key = (key_hash, chain.leaf.serial_number, override or "")
        self.holders.setdefault(record.cert_key, set()).add(record.ref)
        return True

    def _issuer_b64(self, issuer: x509.Certificate) -> str:
        """The issuer as the staple-issuer annotation holds it (one string per issuer)."""
        key = issuer.fingerprint(hashes.SHA256())
        found = self._issuer_annotations.get(key)
        if found is None:
            found = base64.b64encode(issuer.public_bytes(serialization.Encoding.DER)).decode()
            self._issuer_annotations[key] = found
        return found

    async def _judge(self, record: SecretRecord) -> None:
        """Decide about the staple found in the Secret: keep it (verified) or remove it."""
        record.judged = True
        view = record.view
        if view.staple_b64 is None:
            return
        if view.staple_cert_sha256 != record.cert_sha256:
            await self._remove(
                record, "Normal", "StapleRemoved", "the staple belonged to another certificate"
            )
            return
        if record.chain is None or record.issuer is None:
            return
        der = decode(view.staple_b64) or b""
        try:
            staple = verify_response(
                der,
                # Any answer naming our certificate, in any accepted hash, matches: a hostile
                # first answer cannot choose the hash for us.
                cert_id=CertID.of(record.chain.leaf, record.issuer),
                issuer=record.issuer,
                now=self.clock(),
                policy=self.stapling.verify,
            )
        except errors.OCSPError as exc:
            await self._remove(
                record,
                "Warning",
                "StapleRemoved",
                f"the staple in the Secret failed verification: {exc}",
            )
            return
        unwanted = staple.status is CertStatus.UNKNOWN or (
            staple.status is CertStatus.REVOKED and self.settings.revoked_action == "remove"
        )
        if unwanted:
            await self._remove(
                record, "Normal", "StapleRemoved", f"the staple says {staple.status}"
            )
            return
        record.held = staple
        record.newest = staple
        record.ever_stapled = True
        record.last_status = staple.status
        cached = self._remember(
            key_of(record), Fetched(staple=staple, responder_url="", issuer=record.issuer)
        )
        target, _ = refresh_target(
            this_update=staple.this_update, expires_at=staple.expires_at, policy=self.policy
        )
        # Found already past its refresh point (e.g. after a long outage): due now.
        record.refresh_at = None if target <= self.clock() else cached.refresh_at

    def _remember(self, key: CertKey, fetched: Fetched) -> CachedStaple:
        """Keep the newest verified staple per certificate, with its (shared) refresh time."""
        current = self.cache.get(key)
        unchanged = 0
        if current is not None and (current.source is fetched or current.fetched is fetched):
            return current
        source = fetched
        if current is not None and not tells_more(fetched.staple, current.fetched.staple):
            if not fetched.responder_url:
                return current  # an adopted copy adds nothing
            # Fetched, and nothing newer: keep the newest (never go backwards) and back off.
            unchanged = current.unchanged + 1
            fetched = dataclasses.replace(current.fetched, fresh_until=fetched.fresh_until)
        decision = after_success(
            this_update=fetched.staple.this_update,
            expires_at=fetched.staple.expires_at,
            now=self.clock(),
            policy=self.policy,
            rand=self.rand,
            unchanged=unchanged,
            fresh_until=fetched.fresh_until,
        )
        entry = CachedStaple(
            fetched=fetched, refresh_at=decision.at, unchanged=unchanged, source=source
        )
        self.cache[key] = entry
        return entry

    async def _fetch_shared(self, record: SecretRecord, attempt: Attempt) -> Fetched:
        key, now, chain = key_of(record), self.clock(), record.chain
        if chain is None:
            raise errors.ChainInvalid("the certificate was not prepared")  # unreachable
        cached = self.cache.get(key)
        if (
            cached is not None
            and cached.refresh_at > now
            and cached.fetched.responder_url
            and cached.fetched.staple.valid_at(now)
            and (
                record.held is None or cached.fetched.staple.this_update >= record.held.this_update
            )
        ):
            return cached.fetched  # a sibling Secret fetched it: no request
        # Never go backwards, not even after the held staple expired: the newest response ever
        # verified for this Secret bounds what is accepted next (a replay after an outage).
        held = record.held or record.newest

        async def fetch_once() -> Fetched:
            start = time.monotonic()
            try:
                fetched = await obtain_staple(
                    chain,
                    fetch=self.fetch,
                    clock=self.clock,
                    config=self.stapling,
                    held=held,
                    override_url=key[2] or None,
                    attempt=attempt,
                )
            except errors.OCSPError as exc:
                self.metrics.fetches.labels(result=exc.reason).inc()
                raise
            finally:
                self.metrics.fetch_duration.observe(time.monotonic() - start)
            self.metrics.fetches.labels(result=fetched.staple.status.value).inc()
            if fetched.staple.status is not CertStatus.UNKNOWN:
                # Before the flight lands, so Secrets that come due just after reuse it.
                self._remember(key, fetched)
            return fetched

        return await self.flight.run(key, fetch_once)

    async def _refresh(self, record: SecretRecord, attempt: Attempt) -> None:
        record.last_attempt = self.clock()
        try:
            fetched = await self._fetch_shared(record, attempt)
        except errors.OCSPError as exc:
            await self._failed(record, exc)
            return
        if not self._current(record):
            return
        staple = fetched.staple
        record.newest = staple
        record.responder_url = fetched.responder_url
        record.last_status = staple.status
        if staple.status is CertStatus.UNKNOWN:
            await self._failed(
                record,
                errors.CertificateUnknown(
                    f"{fetched.responder_url} answered unknown for serial {staple.serial_number:X}"
                ),
            )
            return
        cached = self._remember(key_of(record), fetched)
        revoked = staple.status is CertStatus.REVOKED
        if revoked and self.settings.revoked_action == "remove":
            if record.view.staple_b64 is not None:
                await self._remove(record, "Warning", "StapleRemoved", "the certificate is revoked")
            record.held = None
        elif not await self._write(record, staple):
            return
        else:
            record.held = staple
        if revoked:
            await self._event(record, "Warning", "CertificateRevoked", _revocation_message(staple))
        elif not record.ever_stapled:
            await self._event(
                record,
                "Normal",
                "Stapled",
                f"first staple from {fetched.responder_url}: "
                f"good until {staple.expires_at.isoformat()}",
            )
        record.ever_stapled = record.ever_stapled or record.held is not None
        record.failures = 0
        record.last_error = None
        record.last_success = self.clock()
        record.refresh_at = cached.refresh_at

    async def _failed(self, record: SecretRecord, exc: errors.OCSPError) -> None:
        record.failures += 1
        record.last_error = str(exc)
        if not exc.retryable:
            record.problem = exc
            record.refresh_at = None
            await self._event(record, "Warning", exc.reason, exc.message)
            return
        now = self.clock()
        held_expiry = record.held.expires_at if record.held else None
        decision = after_failure(
            failures=record.failures,
            now=now,
            expires_at=held_expiry,
            policy=self.policy,
            rand=self.rand,
        )
        record.refresh_at = decision.at
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

    # ------------------------------------------------------------------------- writing

    def _secret_path(self, ref: SecretRef) -> str:
        return resource_path(
            api_version="v1", plural="secrets", namespace=ref.namespace, name=ref.name
        )

    async def _patch(
        self, record: SecretRecord, patch: list[dict[str, Any]], action: str
    ) -> Body | None:
        """Apply a guarded JSON patch; None when the Secret changed under us or is gone."""
        try:
            body = await self.api.patch(self._secret_path(record.ref), patch, patch_type="json")
        except Invalid:
            # A `test` failed: tls.crt (or the staple) changed since we read it. Re-read, and
            # let observe() start over with what is there now; the stale result is dropped.
            logger.info("%s changed during the %s; starting over", record.ref, action)
            try:
                current = await self.api.get(self._secret_path(record.ref))
            except NotFound:
                await self.forget(record.ref, deleted=True)
                return None
            await self.observe("MODIFIED", current)
            return None
        except NotFound:
            await self.forget(record.ref, deleted=True)
            return None
        self.metrics.writes.labels(action=action).inc()
        return body

    async def _write(self, record: SecretRecord, staple: Staple) -> bool:
        if record.cert_sha256 is None:
            return False
        b64 = base64.b64encode(staple.der).decode()
        view = record.view
        if (
            view.staple_b64 == b64
            and view.staple_cert_sha256 == record.cert_sha256
            and view.staple_issuer_b64 == record.issuer_b64
        ):
            return True  # already there: no write
        patch = secretpatches.write_staple(
            view,
            staple_key=self.settings.staple_key,
            staple_b64=b64,
            cert_sha256=record.cert_sha256,
            issuer_b64=record.issuer_b64,
        )
        body = await self._patch(record, patch, "write")
        if body is None:
            return False
        record.view = SecretView.of(body, self.settings.staple_key)
        return True

    async def _remove(
        self, record: SecretRecord, type_: EventType, reason: str, message: str
    ) -> None:
        record.held = None
        view = record.view
        if view.staple_b64 is None and view.staple_cert_sha256 is None:
            return
        patch = secretpatches.remove_staple(view, staple_key=self.settings.staple_key)
        body = await self._patch(record, patch, "remove")
        if body is None:
            return
        record.view = SecretView.of(body, self.settings.staple_key)
        await self._event(record, type_, reason, message)

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
        metric_status = held.status.value if held else None
        if record.problem is not None:
            metric_status = (
                "NoResponder" if isinstance(record.problem, errors.NoResponder) else "Error"
            )
        self.metrics.observe_secret(
            record.ref,
            status=metric_status,
            expires_at=held.expires_at if held else None,
            refresh_at=record.refresh_at if record.problem is None else None,
        )
        if not self.crd_available:
            return
        status = status_of(record, now=self.clock(), previous=record.published_ready)
        digest = hash(json.dumps(status, sort_keys=True))
        if digest == record.published_digest:
            return
        try:
            if not record.staple_object_created:
                collection = resource_path(
                    api_version=CRD_API_VERSION, plural=CRD_PLURAL, namespace=record.ref.namespace
                )
                try:
                    await self.api.create(collection, staple_object(record))
                except Conflict:
                    pass  # it exists (operator restart): its status is patched below
                except NotFound as exc:
                    self.crd_available = False
                    logger.error("OCSPStaple CRD not installed; status is not reported: %s", exc)
                    return
                record.staple_object_created = True
            await self.api.patch(self._staple_path(record.ref, "status"), {"status": status})
        except NotFound:
            record.staple_object_created = False  # deleted by someone: recreated next time
            return
        except (ApiError, OSError) as exc:
            logger.warning("could not report status of %s: %s", record.ref, exc)
            return
        record.published_digest = digest
        ready = status["conditions"][0]
        record.published_ready = (ready["status"], ready["lastTransitionTime"])

    async def _delete_staple_object(self, ref: SecretRef) -> None:
        if not self.crd_available:
            return
        try:
            await self.api.delete(self._staple_path(ref))
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


def tells_more(new: Staple, known: Staple) -> bool:
    """Whether ``new`` tells more than ``known``: newer, or as new and revoked where the other
    is not (a CA that rounds thisUpdate can sign both within one second)."""
    if new.this_update != known.this_update:
        return new.this_update > known.this_update
    return new.status is CertStatus.REVOKED and known.status is not CertStatus.REVOKED


def _namespace_of(ref: SecretRef) -> str:
    return ref.namespace


def key_of(record: SecretRecord) -> CertKey:
    if record.cert_key is None:
        raise errors.ChainInvalid("the certificate was not prepared")  # unreachable
    return record.cert_key


def _revocation_message(staple: Staple) -> str:
    when = staple.revocation_time.isoformat() if staple.revocation_time else "an unknown time"
    reason = f" ({staple.revocation_label})" if staple.revocation_label else ""
    return f"the certificate (serial {staple.serial_number:X}) was revoked at {when}{reason}"
