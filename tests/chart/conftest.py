"""Fixtures for chart tests: a PKI and a responder for the end-to-end RBAC proof."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(Path(tmp_path_factory.mktemp("chart-pki")), "ec")


@pytest.fixture(scope="session")
def responder(pki: TestPKI) -> Iterator[OpenSSLResponder]:
    with OpenSSLResponder(pki, signer="delegate") as r:
        yield r
