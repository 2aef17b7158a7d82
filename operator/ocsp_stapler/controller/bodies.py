"""Reading Secret bodies (plain dicts, as kopf and the API give them) without surprises.

The operator sees every TLS Secret event in scope, so the first questions (is it a TLS Secret?
does it opt in? does it carry anything of ours?) are answered from metadata alone, before any
base64 is decoded. Values are copied out as the API sent them (base64 strings), so that a
later write can test them byte for byte.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ocsp_stapler.names import (
    ANNOTATION_PREFIX,
    CA_CERT_KEY,
    ENABLED,
    RESPONDER_URL,
    STAPLE_CERT_SHA256,
    STAPLE_ISSUER,
    TLS_CERT_KEY,
    TLS_SECRET_TYPE,
)

Body = Mapping[str, Any]
MAX_URL_LENGTH = 2048


@dataclass(frozen=True, order=True)
class SecretRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def ref_of(body: Body) -> SecretRef:
    meta = body.get("metadata") or {}
    return SecretRef(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")))


def annotations_of(body: Body) -> Mapping[str, str]:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return annotations if isinstance(annotations, Mapping) else {}


def data_of(body: Body) -> Mapping[str, str]:
    data = body.get("data") or {}
    return data if isinstance(data, Mapping) else {}


def is_tls(body: Body) -> bool:
    return body.get("type") == TLS_SECRET_TYPE


def is_enabled(body: Body) -> bool:
    return annotations_of(body).get(ENABLED) == "true"


@dataclass(frozen=True)
class Traces:
    """What to remove from a Secret to leave nothing of ocsp-stapler on it."""

    data_keys: list[str]
    annotation_keys: list[str]

    def __bool__(self) -> bool:
        return bool(self.data_keys or self.annotation_keys)


def traces_of(body: Body, staple_key: str, *, opted_in: bool, user_annotations: bool) -> Traces:
    """The staple and the annotations the operator wrote; ``opted_in``: the Secret was
    managed, so its staple key is the operator's whatever else it carries (otherwise the
    staple is ours only with the certificate annotation written beside it: a staple someone
    else put into a Secret that never opted in is left alone); ``user_annotations``: the
    opt-in and the responder override go too (a whole uninstall, not an opt-out)."""
    annotations = annotations_of(body)
    ours = opted_in or STAPLE_CERT_SHA256 in annotations
    data_keys = [staple_key] if ours and staple_key in data_of(body) else []
    kept = () if user_annotations else (ENABLED, RESPONDER_URL)
    keys = [k for k in annotations if k.startswith(ANNOTATION_PREFIX) and k not in kept]
    return Traces(data_keys=data_keys, annotation_keys=keys)


def has_traces(body: Body, staple_key: str) -> bool:
    """Whether anything we wrote is on this Secret that is not (or no longer) opted in, by
    our annotations alone: it opted out while no operator ran. A staple without them is
    someone else's (a hand-made one, another tool's) and is left alone."""
    return bool(traces_of(body, staple_key, opted_in=False, user_annotations=False))


def check_responder_override(value: str | None) -> str | None:
    """The override URL, or ValueError with a reason a user can act on."""
    if value is None:
        return None
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"{RESPONDER_URL} is {len(value)} characters, more than {MAX_URL_LENGTH}")
    if not value.isascii() or any(c.isspace() for c in value):
        raise ValueError(f"{RESPONDER_URL} must be an ASCII URL without spaces")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{RESPONDER_URL} must be an http:// or https:// URL with a host")
    return value


def decode(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class SecretView:
    """What the operator needs of one Secret, as the API sent it."""

    ref: SecretRef
    uid: str
    crt_b64: str | None
    ca_b64: str | None
    staple_b64: str | None
    staple_cert_sha256: str | None
    override_url: str | None
    staple_issuer_b64: str | None = None

    @classmethod
    def of(cls, body: Body, staple_key: str) -> SecretView:
        data, annotations = data_of(body), annotations_of(body)
        meta = body.get("metadata") or {}
        return cls(
            ref=ref_of(body),
            uid=str(meta.get("uid", "")),
            crt_b64=data.get(TLS_CERT_KEY),
            ca_b64=data.get(CA_CERT_KEY),
            staple_b64=data.get(staple_key),
            staple_cert_sha256=annotations.get(STAPLE_CERT_SHA256),
            override_url=annotations.get(RESPONDER_URL),
            staple_issuer_b64=annotations.get(STAPLE_ISSUER),
        )

    def same_certificate(self, other: SecretView) -> bool:
        """Whether what the staple depends on (chain, override) is unchanged."""
        return (self.crt_b64, self.ca_b64, self.override_url, self.uid) == (
            other.crt_b64,
            other.ca_b64,
            other.override_url,
            other.uid,
        )
