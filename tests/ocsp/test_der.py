"""The few DER reads done by hand: exact on what a CA writes, a DerError on anything else.

Responses are built field by field (support.ocsp_der) with drawn extensions, answers and
reason codes, so the reader is checked against what was written, not against itself; then
the same bytes are damaged (cut, flipped, lengths rewritten) and every read must end in a
value or a ``DerError``, never another exception.
"""

from __future__ import annotations

import contextlib
import datetime

import pytest
from cryptography.x509 import ocsp
from devcluster.pki import issue, name, new_key
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsp_stapler.ocsp import der
from support.ocsp_der import Answer, Extension, ResponseSpec, oid, tlv

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
_CA = issue(subject=name("DER CA"), key=new_key("ec"), issuer=None, ca=True)

# Arcs past one byte and past 2^32 (OIDs are unbounded), first arc 0, 1 and 2.
object_ids = st.builds(
    lambda first, second, rest: ".".join(map(str, (first, second, *rest))),
    st.sampled_from([0, 1, 2]),
    st.integers(0, 39),
    st.lists(st.integers(0, 2**70), max_size=6),
)
extension_lists = st.lists(st.builds(Extension, oid=object_ids, critical=st.booleans()), max_size=3)


@st.composite
def responses(draw: st.DrawFn) -> tuple[ResponseSpec, bytes]:
    answers = [
        Answer(
            serial=draw(st.integers(1, 2**64)),
            issuer=_CA.cert,
            status=draw(st.sampled_from(["good", "revoked", "unknown"])),
            reason=draw(st.none() | st.integers(0, 2**31)),  # cryptography parses no wider
            next_update=draw(st.none() | st.just(NOW + datetime.timedelta(days=1))),
            extensions=draw(extension_lists),
        )
        for _ in range(draw(st.integers(1, 4)))
    ]
    spec = ResponseSpec(
        answers=answers,
        key=_CA.key,  # type: ignore[arg-type]
        responder=_CA.cert,
        by_name=draw(st.booleans()),
        extensions=draw(extension_lists),
    )
    tbs = ocsp.load_der_ocsp_response(spec.der(NOW)).tbs_response_bytes
    return spec, tbs


@settings(max_examples=200, deadline=None)
@given(case=responses())
def test_reads_give_back_what_was_written(case: tuple[ResponseSpec, bytes]) -> None:
    spec, tbs = case
    for index, answer in enumerate(spec.answers):
        found = der.critical_extensions(tbs, index)
        assert found.response == [e.oid for e in spec.extensions if e.critical]
        assert found.single == [e.oid for e in answer.extensions if e.critical]
        if answer.status == "revoked":
            assert der.revocation_reason_code(tbs, index) == answer.reason
        else:
            with pytest.raises(der.DerError):
                der.revocation_reason_code(tbs, index)
    with pytest.raises(der.DerError):
        der.critical_extensions(tbs, len(spec.answers))


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    _, tbs = draw(responses())
    data = bytearray(tbs)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "flip", "length"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "cut":
            del data[at:]
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            data[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x84, 0x85, 0xFF]))
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(data=damaged(), index=st.integers(0, 4))
def test_damaged_bytes_end_in_a_value_or_der_error(data: bytes, index: int) -> None:
    for read in (der.critical_extensions, der.revocation_reason_code):
        with contextlib.suppress(der.DerError):  # anything else fails the test
            read(data, index)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x81",  # a last byte that says "more follows"
        b"\x2a\x86",
        b"\xff" * 60000 + b"\x7f",  # one huge arc: quadratic to decode, too long for str()
    ],
    ids=["empty", "continued", "continued-after-arc", "huge-arc"],
)
def test_truncated_object_identifiers(content: bytes) -> None:
    with pytest.raises(der.DerError):
        der.object_identifier(tlv(0x06, content), der.element(tlv(0x06, content), 0))


def test_object_identifier_round_trip() -> None:
    for dotted in ("1.3.6.1.5.5.7.48.1.2", "2.999.1", "0.0", "2.25.340282366920938463463"):
        data = oid(dotted)
        assert der.object_identifier(data, der.element(data, 0)) == dotted
