"""Refusals quote URLs and names taken from certificates and annotations; what they say goes
into Events, status, metrics and logs, so no control character survives into a message."""

from __future__ import annotations

import pytest
from devcluster.pki import TestPKI

from ocsp_stapler.net.fetching import HttpFetcher
from ocsp_stapler.ocsp import errors
from ocsp_stapler.ocsp.chains import assemble_chain
from ocsp_stapler.ocsp.stapling import obtain_staple
from support.clocks import utcnow


@pytest.mark.parametrize("char", ["\x00", "\x01", "\n", "\r", "\x1b", "\x7f"])
async def test_a_refused_url_is_quoted_without_its_control_characters(
    char: str, ec_pki: TestPKI, fetch: HttpFetcher
) -> None:
    url = f"http://127.0.0.1:9/oc{char}sp"
    leaf = ec_pki.leaf(ocsp_urls=[url])
    with pytest.raises(errors.DestinationRefused) as caught:
        await obtain_staple(assemble_chain(ec_pki.chain_pem(leaf)), fetch=fetch, clock=utcnow)
    for text in (caught.value.message, str(caught.value), *map(str, caught.value.args)):
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text), repr(text)
    assert f"\\x{ord(char):02x}" in caught.value.message


def test_every_message_is_printable_however_it_is_set() -> None:
    exc = errors.FetchFailed("a\x00b")
    exc.message += " and \x1b[31m"
    assert exc.message == "a\\x00b and \\x1b[31m"
    assert exc.args == (exc.message,)
