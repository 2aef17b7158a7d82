"""Simulated CAs that answer as real ones do: pre-generated responses behind a CDN.

Each ``SimCA`` has a real key and certificate, issues real leaf certificates naming its
responder (and, when asked, a caIssuers URL instead of shipping the issuer), and signs real
OCSP responses the operator verifies with its own code. What is simulated is how a CA hands
them out (``Behaviour``):

* responses are generated on a schedule (every ``regenerate_every``, each certificate at its
  own phase, as CAs work through their database in batches), each valid ``validity`` from its
  thisUpdate; asked twice within one period, the CA hands back the same bytes;
* a CDN in front caches each certificate's response for ``cdn_max_age`` and says so in
  ``Cache-Control: max-age`` (the fetcher's reading of the header is tested on its own; here
  it arrives as ``HttpResponse.fresh_for``); a revocation purges it (Let's Encrypt does);
* a revocation makes the CA sign a revoked response at once;
* outages (nothing answers), slow and hanging responders, caIssuers outages.

Every request is counted per certificate with its virtual time, for ``measures``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from ocsp_stapler.ocsp.errors import FetchFailed
from ocsp_stapler.ocsp.transport import HttpRequest, HttpResponse

Clock = Callable[[], datetime.datetime]
Window = tuple[datetime.timedelta, datetime.timedelta]
"""From when to when, counted from the start of the run."""

DAY = datetime.timedelta(days=1)
HOUR = datetime.timedelta(hours=1)


@dataclass(frozen=True)
class Behaviour:
    validity: datetime.timedelta = 7 * DAY
    regenerate_every: datetime.timedelta | None = 3 * DAY
    """None: one response per certificate for the whole run (a 10-year nextUpdate)."""
    cdn_max_age: datetime.timedelta | None = 12 * HOUR
    outages: tuple[Window, ...] = ()
    """The responder answers nothing (connection refused) in these windows."""
    issuer_outages: tuple[Window, ...] = ()
    """The caIssuers URL answers nothing in these windows."""
    latency: float = 0.0
    """Seconds each answer takes."""
    hangs: bool = False
    """The responder accepts the connection and never answers."""


@dataclass
class Requests:
    ocsp: dict[int, list[datetime.datetime]] = field(default_factory=lambda: defaultdict(list))
    """serial -> times the responder was asked about it."""
    issuer: int = 0
    signed: int = 0


class SimCA:
    def __init__(self, name: str, *, clock: Clock, behaviour: Behaviour, start: datetime.datetime):
        self.name = name
        self.clock = clock
        self.behaviour = behaviour
        self.start = start
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Simulated CA {name}")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - 365 * DAY)
            .not_valid_after(start + 20 * 365 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.certificate_der = self.certificate.public_bytes(serialization.Encoding.DER)
        self.certificate_pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.leaves: dict[int, x509.Certificate] = {}
        self.revoked: dict[int, datetime.datetime] = {}
        self.requests = Requests()
        self._signed: dict[tuple[int, datetime.datetime, bool], bytes] = {}
        self._edge: dict[int, tuple[bytes, datetime.datetime, datetime.datetime]] = {}
        """serial -> (response, fresh until, cached at) at the CDN's edge."""
        self._serials = iter(range(10_000, 10**9))
        self.on_request: Callable[[int], None] | None = None
        """Called with the serial of each OCSP request, before it is answered."""

    @property
    def ocsp_url(self) -> str:
        return f"http://ocsp.{self.name}.sim"

    @property
    def issuer_url(self) -> str:
        return f"http://ca.{self.name}.sim/issuer.der"

    def issue(self, common_name: str, *, ca_issuers: bool = False) -> x509.Certificate:
        serial = next(self._serials)
        access = [
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(self.ocsp_url)
            )
        ]
        if ca_issuers:
            access.append(
                x509.AccessDescription(
                    AuthorityInformationAccessOID.CA_ISSUERS,
                    x509.UniformResourceIdentifier(self.issuer_url),
                )
            )
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(serial)
            .not_valid_before(self.start - DAY)
            .not_valid_after(self.start + 400 * DAY)
            .add_extension(x509.AuthorityInformationAccess(access), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.leaves[serial] = leaf
        return leaf

    def revoke(self, serial: int, at: datetime.datetime) -> None:
        self.revoked[serial] = at

    # ---------------------------------------------------------------- what the CA signs

    def _phase(self, serial: int) -> datetime.timedelta:
        period = self.behaviour.regenerate_every
        if period is None:
            return datetime.timedelta(0)
        digest = int.from_bytes(hashlib.sha256(serial.to_bytes(8, "big")).digest()[:4], "big")
        return period * (digest / 2**32)

    def generated_at(self, serial: int, now: datetime.datetime) -> datetime.datetime:
        """thisUpdate of the newest response the CA holds for ``serial`` at ``now``."""
        period = self.behaviour.regenerate_every
        first = self.start - (period or DAY) + self._phase(serial)
        generated = first if period is None else first + period * ((now - first) // period)
        revoked_at = self.revoked.get(serial)
        if revoked_at is not None and revoked_at <= now:
            generated = max(generated, revoked_at)  # signed at once on revocation
        return generated

    def response(self, serial: int, now: datetime.datetime) -> bytes:
        this_update = self.generated_at(serial, now)
        revoked_at = self.revoked.get(serial)
        revoked = revoked_at is not None and revoked_at <= this_update
        key = (serial, this_update, revoked)
        der = self._signed.get(key)
        if der is None:
            der = self.sign(
                serial, this_update=this_update, revoked_at=revoked_at if revoked else None
            )
            self._signed[key] = der
        return der

    def sign(
        self,
        serial: int,
        *,
        this_update: datetime.datetime,
        revoked_at: datetime.datetime | None = None,
    ) -> bytes:
        self.requests.signed += 1
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=self.leaves[serial],
            issuer=self.certificate,
            algorithm=hashes.SHA1(),  # noqa: S303 (the CertID hash every responder answers)
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked_at else ocsp.OCSPCertStatus.GOOD,
            this_update=this_update,
            next_update=this_update + self.behaviour.validity,
            revocation_time=revoked_at,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked_at else None,
        )
        resp = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.certificate).sign(
            self.key, hashes.SHA256()
        )
        return resp.public_bytes(serialization.Encoding.DER)

    def _through_cdn(self, serial: int, now: datetime.datetime) -> tuple[bytes, float | None]:
        """The edge's copy while it is fresh (purged by a revocation), else the CA's newest."""
        max_age = self.behaviour.cdn_max_age
        if max_age is None:
            return self.response(serial, now), None
        cached = self._edge.get(serial)
        revoked_at = self.revoked.get(serial)
        if (
            cached is None
            or now >= cached[1]
            or (revoked_at is not None and cached[2] < revoked_at <= now)
        ):
            expires = self.generated_at(serial, now) + self.behaviour.validity
            cached = (self.response(serial, now), min(now + max_age, expires), now)
            self._edge[serial] = cached
        return cached[0], (cached[1] - now).total_seconds()

    # ------------------------------------------------------------------ the network side

    def _down(self, windows: tuple[Window, ...], now: datetime.datetime) -> bool:
        return any(self.start + a <= now < self.start + b for a, b in windows)

    async def answer(self, request: HttpRequest) -> HttpResponse:
        now = self.clock()
        parts = urlsplit(request.url)
        if parts.hostname == urlsplit(self.issuer_url).hostname:
            self.requests.issuer += 1
            if self._down(self.behaviour.issuer_outages, now):
                raise FetchFailed(f"{request.url}: connection refused (simulated outage)")
            return HttpResponse(
                status=200, content_type="application/pkix-cert", body=self.certificate_der,
                url=request.url,
            )  # fmt: skip
        if request.method == "GET":
            der = base64.b64decode(unquote(parts.path.rsplit("/", 1)[-1]))
        else:
            der = request.body or b""
        serial = ocsp.load_der_ocsp_request(der).serial_number
        self.requests.ocsp[serial].append(now)
        if self.on_request is not None:
            self.on_request(serial)
        if self._down(self.behaviour.outages, now):
            raise FetchFailed(f"{request.url}: connection refused (simulated outage)")
        if self.behaviour.hangs:
            await asyncio.sleep(365 * 86400)  # until the attempt's deadline cancels it
        if self.behaviour.latency:
            await asyncio.sleep(self.behaviour.latency)
        if serial not in self.leaves:
            return HttpResponse(status=404, content_type="text/plain", body=b"", url=request.url)
        body, fresh_for = self._through_cdn(serial, self.clock())
        return HttpResponse(
            status=200, content_type="application/ocsp-response", body=body, url=request.url,
            fresh_for=fresh_for,
        )  # fmt: skip


class SimNetwork:
    """The ``Fetch`` the reconciler is given: each URL's host leads to its CA."""

    def __init__(self) -> None:
        self.cas: dict[str, SimCA] = {}

    def add(self, ca: SimCA) -> SimCA:
        self.cas[urlsplit(ca.ocsp_url).hostname or ""] = ca
        self.cas[urlsplit(ca.issuer_url).hostname or ""] = ca
        return ca

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        ca = self.cas.get(urlsplit(request.url).hostname or "")
        if ca is None:
            raise FetchFailed(f"{request.url}: no such host (simulated)")
        return await ca.answer(request)
