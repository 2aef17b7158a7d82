"""Why a staple could not be had: one exception class per reason a cluster operator can act on.

Every class carries a stable ``reason`` (CamelCase, as in Kubernetes Event reasons and
condition reasons), so the operator can put it in Events, status and metric labels without
parsing messages. ``retryable`` says whether asking again later can help.
"""

from __future__ import annotations

_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def printable(text: str) -> str:
    """``text`` with control characters escaped: messages quote URLs and names taken from
    certificates and annotations, and end up in Events, status, metrics and logs."""
    return text.translate(_UNPRINTABLE)


class OCSPError(Exception):
    """Base: a staple could not be fetched or verified."""

    reason = "OCSPError"
    retryable = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, text: str) -> None:
        self._message = printable(text)
        self.args = (self._message,)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class ChainInvalid(OCSPError):
    """tls.crt (or ca.crt) is not a usable PEM certificate chain."""

    reason = "ChainInvalid"
    retryable = False


class IssuerNotFound(OCSPError):
    """No certificate in the chain (or at the AIA caIssuers URL) signed the leaf."""

    reason = "IssuerNotFound"


class NoResponder(OCSPError):
    """The certificate names no OCSP responder, and no override is set. Not an error loop."""

    reason = "NoResponder"
    retryable = False


class FetchFailed(OCSPError):
    """The responder could not be reached, or answered something other than an OCSP response."""

    reason = "FetchFailed"


class DestinationRefused(FetchFailed):
    """The URL's scheme or resolved address is not allowed by the destination guard."""

    reason = "DestinationRefused"


class ResponseMalformed(OCSPError):
    """The body is not a parseable OCSP response."""

    reason = "ResponseMalformed"


class ResponderError(OCSPError):
    """responseStatus is not successful: tryLater, internalError, unauthorized, ..."""

    reason = "ResponderError"

    def __init__(self, status: str) -> None:
        super().__init__(f"responder answered {status}")
        self.status = status


class CertIDMismatch(OCSPError):
    """The response does not hold exactly one answer for our certificate."""

    reason = "CertIDMismatch"


class SignatureInvalid(OCSPError):
    """The response's signature does not verify under the key that should have made it."""

    reason = "SignatureInvalid"


class SignerUnauthorized(OCSPError):
    """The response was signed by a certificate the issuer did not authorize for OCSP."""

    reason = "SignerUnauthorized"


class NotYetValid(OCSPError):
    """thisUpdate lies in the future beyond the allowed clock skew."""

    reason = "NotYetValid"


class Expired(OCSPError):
    """nextUpdate has passed: the response is no longer current."""

    reason = "Expired"


class NoNextUpdate(OCSPError):
    """The response has no nextUpdate, and the policy requires one."""

    reason = "NoNextUpdate"


class Stale(OCSPError):
    """The response is older than the one already held: never go backwards."""

    reason = "Stale"


class NonceMismatch(OCSPError):
    """We sent a nonce and the response echoes a different one: a replay or a mix-up."""

    reason = "NonceMismatch"


class CertificateUnknown(OCSPError):
    """The responder answered ``unknown``: it does not know this certificate (yet)."""

    reason = "CertificateUnknown"


class InvalidAnnotation(OCSPError):
    """An ocsp-stapler.dev annotation on the Secret has an unusable value."""

    reason = "InvalidAnnotation"
    retryable = False
