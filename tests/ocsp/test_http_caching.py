"""How long a responder's answer stays current by its HTTP caching headers (RFC 5019 §6).

Examples of what CAs and CDNs send, and a property over any header text: a number of
seconds or None, never an exception (the headers are the responder's, so untrusted).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocsp_stapler.net.fetching import freshness

DATE = "Thu, 03 Dec 2026 08:00:00 GMT"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Cache-Control": "max-age=300"}, 300.0),
        ({"Cache-Control": "public, no-transform, must-revalidate, max-age=21600"}, 21600.0),
        ({"Cache-Control": "max-age=300", "Age": "100"}, 200.0),
        ({"Cache-Control": "max-age=300", "Age": "400"}, None),  # already stale
        ({"Cache-Control": 'max-age="60"'}, 60.0),
        ({"Cache-Control": "no-cache, max-age=300"}, None),
        ({"Cache-Control": "no-store"}, None),
        ({"Cache-Control": "max-age=-5"}, None),
        ({"Cache-Control": "max-age=1e9"}, None),
        ({"Cache-Control": "max-age=99999999999999999999"}, None),
        ({"Expires": "Thu, 03 Dec 2026 09:00:00 GMT", "Date": DATE}, 3600.0),
        ({"Expires": "Thu, 03 Dec 2026 07:00:00 GMT", "Date": DATE}, None),
        ({"Expires": "0", "Date": DATE}, None),
        ({"Expires": "not a date", "Date": DATE}, None),
        ({"Cache-Control": "max-age=60", "Expires": "Thu, 03 Dec 2026 09:00:00 GMT"}, 60.0),
        ({}, None),
    ],
)
def test_what_responders_send(headers: dict[str, str], expected: float | None) -> None:
    assert freshness(headers) == expected


header_text = st.text(st.characters(codec="latin-1"), max_size=300)


@given(
    cache_control=st.one_of(
        st.none(), header_text, st.builds(lambda n: f"max-age={n}", st.integers())
    ),
    age=st.one_of(st.none(), header_text, st.integers().map(str)),
    expires=st.one_of(st.none(), header_text),
    date=st.one_of(st.none(), header_text),
)
def test_any_headers_give_seconds_or_none(
    cache_control: str | None, age: str | None, expires: str | None, date: str | None
) -> None:
    headers = {
        k: v
        for k, v in (
            ("Cache-Control", cache_control),
            ("Age", age),
            ("Expires", expires),
            ("Date", date),
        )
        if v is not None
    }
    got = freshness(headers)
    assert got is None or got > 0
