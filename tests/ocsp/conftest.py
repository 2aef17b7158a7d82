"""Fixtures for the OCSP core: a PKI per key type, real responders, a guarded fetcher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.net.destinations import DestinationGuard
from ocsp_stapler.net.fetching import FetchSettings, HttpFetcher
from support.responders import LOOPBACK_CIDRS


@pytest.fixture(scope="session", params=["ec", "rsa"])
def pki(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp(f"pki-{request.param}")), request.param)


@pytest.fixture(scope="session")
def ec_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp("pki-ec-single")), "ec")


@pytest.fixture(scope="session")
def responder(pki: TestPKI) -> Iterator[OpenSSLResponder]:
    """The CA answers itself (responder ID byName = the issuer), 1-day validity."""
    with OpenSSLResponder(pki) as r:
        yield r


@pytest.fixture(scope="session")
def delegated_responder(pki: TestPKI) -> Iterator[OpenSSLResponder]:
    with OpenSSLResponder(pki, signer="delegate") as r:
        yield r


@pytest.fixture
async def fetch() -> AsyncIterator[HttpFetcher]:
    """Loopback allowed: the responders here listen on 127.0.0.1."""
    guard = DestinationGuard.from_lists(allow=LOOPBACK_CIDRS)
    async with HttpFetcher(FetchSettings(connect_timeout=2, total_timeout=3, guard=guard)) as f:
        yield f
