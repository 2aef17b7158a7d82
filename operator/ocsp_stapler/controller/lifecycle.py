"""The staple lifecycle as one pure policy: what to do next for one Secret, and when to wake.

``decide`` looks at the facts about one Secret (what it holds, whether its certificate is
prepared, the verdict on the staple found in it, a fetched answer not yet applied, the refresh
time, ``now``) and returns one action; the reconciler carries it out and asks again, until the
answer is ``Wait``. No I/O and no clock here, so every rule is tested without a cluster, and
the simulation (``hack/simulation``) runs the same rules over a virtual month.

The rules, first match wins (cert-manager's policy chains are the model):

1. an unprepared certificate is prepared, again when a transient problem's retry is due;
2. a staple in the Secret that belongs to another certificate is removed, whatever else;
3. one that can never be judged (the certificate will not prepare until the Secret changes)
   is removed;
4. one not judged yet is judged (verified) as soon as the issuer is known;
5. one that failed judgement (or says ``unknown``, or ``revoked`` with ``revokedAction:
   remove``) is removed;
6. one past its expiry is removed: the verified nextUpdate when judged, else the latest
   nextUpdate it claims, so a caIssuers outage never keeps an expired staple (bug 1);
7. a fetched answer is applied: ``good`` and ``revoked`` are stapled, ``revoked`` is withdrawn
   with ``revokedAction: remove``, ``unknown`` is refused (the previous good staple stays
   until it expires); one that expired before it could be written (the API server refused
   writes for a while) is discarded, and fetched again;
8. a prepared certificate is fetched when its refresh is due;
9. otherwise wait until the next of: refresh, preparation retry, expiry of what is held.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal, Protocol

from ocsp_stapler.controller.eventing import EventType
from ocsp_stapler.controller.preparation import Preparation, Prepared, Unprepared
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import CertStatus, Staple, VerifyPolicy, verify_response
from ocsp_stapler.ocsp.stapling import Fetched

RevokedAction = Literal["staple", "remove"]


@dataclass(frozen=True)
class Found:
    """A staple (or its certificate annotation) in the Secret, as far as it is known unverified."""

    cert_sha256: str | None
    """The certificate the staple says it belongs to (our annotation)."""
    claimed_expiry: datetime.datetime | None = None
    """The latest nextUpdate it claims (``None`` when there are no staple bytes)."""
    malformed: str | None = None
    """Why no answer in it could ever verify, when that is known without the issuer."""


@dataclass(frozen=True)
class Rejection:
    type: EventType
    message: str


@dataclass(frozen=True)
class Facts:
    now: datetime.datetime
    preparation: Preparation | None
    """None: not prepared yet."""
    found: Found | None
    """What the Secret holds; None: no staple and no annotation of ours."""
    judged: bool
    """Whether the staple found in the Secret was judged (``held`` or ``rejection``)."""
    held: Staple | None
    """The verified staple the Secret holds."""
    rejection: Rejection | None
    """Why the staple found in the Secret cannot stay, when judging said so."""
    answer: Fetched | None
    """A verified answer fetched and not yet applied to the Secret."""
    refresh_at: datetime.datetime | None
    """When the next fetch is due; None: due now."""
    revoked_action: RevokedAction
    last_error: str | None = None


class Record(Protocol):
    """What an executor keeps per certificate (a Secret's record, a host's chain file)."""

    preparation: Preparation | None
    judged: bool
    held: Staple | None
    rejection: Rejection | None
    answer: Fetched | None
    refresh_at: datetime.datetime | None
    last_error: str | None


def facts_of(
    record: Record, *, now: datetime.datetime, found: Found | None, revoked_action: RevokedAction
) -> Facts:
    return Facts(
        now=now,
        preparation=record.preparation,
        found=found,
        judged=record.judged,
        held=record.held,
        rejection=record.rejection,
        answer=record.answer,
        refresh_at=record.refresh_at,
        revoked_action=revoked_action,
        last_error=record.last_error,
    )


@dataclass(frozen=True)
class Prepare:
    pass


@dataclass(frozen=True)
class Judge:
    prepared: Prepared


@dataclass(frozen=True)
class Remove:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Fetch:
    prepared: Prepared


@dataclass(frozen=True)
class Write:
    """Write ``answer`` into the Secret (a no-op when it is there already)."""

    answer: Fetched
    prepared: Prepared


@dataclass(frozen=True)
class Withdraw:
    """The certificate is revoked and configured to go without a staple: remove any."""

    answer: Fetched
    prepared: Prepared


@dataclass(frozen=True)
class Refuse:
    """The responder does not know the certificate: never stapled; keep what is held."""

    answer: Fetched


@dataclass(frozen=True)
class Discard:
    """The answer expired before it could be written: drop it, and fetch again."""

    answer: Fetched


@dataclass(frozen=True)
class Wait:
    until: datetime.datetime | None
    """None: nothing to do until the Secret changes."""


Action = Prepare | Judge | Remove | Fetch | Write | Withdraw | Refuse | Discard | Wait


def unwanted(staple: Staple, revoked_action: RevokedAction) -> bool:
    """Whether a verified answer must not be in the Secret."""
    return staple.status is CertStatus.UNKNOWN or (
        staple.status is CertStatus.REVOKED and revoked_action == "remove"
    )


def judge(
    der: bytes,
    prepared: Prepared,
    *,
    now: datetime.datetime,
    policy: VerifyPolicy,
    revoked_action: RevokedAction,
    where: str = "in the Secret",
) -> Staple | Rejection:
    """Rule 4's verdict on a staple found in the Secret (or a host's staple file): verified
    and wanted, or why it cannot stay."""
    try:
        staple = verify_response(
            der,
            # Any answer naming our certificate, in any accepted hash, matches: a hostile
            # first answer cannot choose the hash for us.
            cert_id=CertID.of(prepared.leaf, prepared.issuer),
            issuer=prepared.issuer,
            now=now,
            policy=policy,
        )
    except errors.OCSPError as exc:
        return Rejection("Warning", f"the staple {where} failed verification: {exc}")
    if unwanted(staple, revoked_action):
        return Rejection("Normal", f"the staple says {staple.status}")
    return staple


def _preparation_due(facts: Facts) -> bool:
    prep = facts.preparation
    if prep is None:
        return True
    return (
        isinstance(prep, Unprepared)
        and prep.retry_at is not None
        and not prep.permanent
        and facts.now >= prep.retry_at
    )


def _foreign(facts: Facts, found: Found) -> Action | None:
    """Rules 2 and 3: a staple of another certificate, or one that can never be judged."""
    prep = facts.preparation
    cert_sha256 = prep.cert_sha256 if prep is not None else None
    if cert_sha256 is not None and found.cert_sha256 != cert_sha256:
        return Remove("Normal", "StapleRemoved", "the staple belonged to another certificate")
    if isinstance(prep, Unprepared) and prep.permanent:
        return Remove("Warning", "StapleRemoved", f"the staple cannot be judged: {prep.problem}")
    return None


def _about_found(facts: Facts, found: Found) -> Action | None:
    """Rules 4 to 6: judge the staple found in the Secret, or remove it when it has to go."""
    if isinstance(facts.preparation, Prepared) and not facts.judged:
        return Judge(facts.preparation)
    if facts.judged and facts.rejection is not None:
        return Remove(facts.rejection.type, "StapleRemoved", facts.rejection.message)
    if not facts.judged and found.malformed is not None:
        return Remove(
            "Warning", "StapleRemoved", f"the staple in the Secret is unusable: {found.malformed}"
        )
    expiry = facts.held.expires_at if facts.held is not None else None
    if not facts.judged:
        expiry = found.claimed_expiry
    if expiry is not None and facts.now >= expiry:
        return Remove(
            "Warning",
            "StapleExpired",
            f"the staple expired at {expiry.isoformat()} without a successful refresh "
            f"({facts.last_error or 'no error recorded'}); removed",
        )
    return None


def _about_answer(
    answer: Fetched, prepared: Prepared, revoked_action: RevokedAction, now: datetime.datetime
) -> Action:
    """Rule 7."""
    if not answer.staple.valid_at(now):
        return Discard(answer)
    if answer.staple.status is CertStatus.UNKNOWN:
        return Refuse(answer)
    if unwanted(answer.staple, revoked_action):
        return Withdraw(answer, prepared)
    return Write(answer, prepared)


def decide(facts: Facts) -> Action:
    """The one next step for a Secret (see the module docstring for the rules)."""
    if _preparation_due(facts):
        return Prepare()
    if facts.found is not None:
        about = _foreign(facts, facts.found) or _about_found(facts, facts.found)
        if about is not None:
            return about
    prep = facts.preparation
    if not isinstance(prep, Prepared):
        return Wait(next_wake(facts))
    if facts.answer is not None:
        return _about_answer(facts.answer, prep, facts.revoked_action, facts.now)
    if facts.refresh_at is None or facts.now >= facts.refresh_at:
        return Fetch(prep)
    return Wait(next_wake(facts))


def next_wake(facts: Facts) -> datetime.datetime | None:
    """The next time anything is due: refresh, preparation retry, or the end of what is held.

    A permanent problem stops refreshes and retries, never the removal of an expiring staple.
    """
    prep = facts.preparation
    times: list[datetime.datetime] = []
    if isinstance(prep, Prepared) and facts.refresh_at is not None:
        times.append(facts.refresh_at)
    if isinstance(prep, Unprepared) and not prep.permanent and prep.retry_at is not None:
        times.append(prep.retry_at)
    if facts.found is not None:
        if facts.held is not None:
            times.append(facts.held.expires_at)
        elif not facts.judged and facts.found.claimed_expiry is not None:
            times.append(facts.found.claimed_expiry)
    return min(times) if times else None
