"""Fuzzing the parsers that read what anyone can write: certificate chains and OCSP responses.
Whatever the bytes, the only outcome besides success is a named OCSPError (bounded examples, so
CI time stays bounded)."""

from __future__ import annotations

import contextlib
import datetime

from devcluster.pki import TestPKI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.errors import OCSPError
from ocsp_stapler.ocsp.queries import CertID
from ocsp_stapler.ocsp.responses import verify_response

FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(min_value=0, max_value=1 << 20), st.integers(0, 255)), max_size=8
)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_chains_from_random_bytes(data: bytes) -> None:
    with contextlib.suppress(OCSPError):
        assemble_chain(data)


@FUZZ
@given(changes=edits, cut=st.integers(min_value=0, max_value=4000))
def test_chains_from_mutated_pem(pki: TestPKI, changes: list[tuple[int, int]], cut: int) -> None:
    leaf = _leaf(pki)
    data = _mutate(pki.chain_pem(leaf), changes)[: cut or None]
    try:
        chain = assemble_chain(data)
    except OCSPError:
        return
    assert chain.leaf is not None


_cache: dict[str, object] = {}


def _leaf(pki: TestPKI) -> object:
    if "leaf" not in _cache:
        _cache["leaf"] = pki.leaf(register=False)
    return _cache["leaf"]


@FUZZ
@given(changes=edits, cut=st.integers(min_value=0, max_value=2000))
def test_responses_from_mutated_der(pki: TestPKI, changes: list[tuple[int, int]], cut: int) -> None:
    leaf = _leaf(pki)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    if "der" not in _cache:
        _cache["der"] = pki.response(
            leaf, this_update=now, next_update=now + datetime.timedelta(hours=4)
        )  # type: ignore[arg-type]
    der = _mutate(_cache["der"], changes)[: cut or None]  # type: ignore[arg-type]
    issuer = pki.intermediate.cert
    try:
        staple = verify_response(der, cert_id=CertID.of(leaf.cert, issuer), issuer=issuer, now=now)  # type: ignore[attr-defined]
    except OCSPError:
        return
    # Anything that verifies must still be a response for our certificate, signed as required.
    assert staple.serial_number == leaf.cert.serial_number  # type: ignore[attr-defined]
