"""What a restart costs the API server: without a cluster, on a virtual clock
(tests/support/simulated.py), counting the in-memory API's requests. At 10,000 Secrets each
request per Secret is seconds of a restart (bench/results.md, "restart: all adopted after")."""

from __future__ import annotations

from ocsp_stapler.names import CRD_PLURAL
from support.simulated import HandDriven, played


def test_a_restart_reads_each_ocspstaple_once_and_creates_none() -> None:
    """The Secrets carry the operator's annotation, so the OCSPStaples exist: each is read,
    none is created (a create refused with Conflict, then a read, cost a request more each),
    and none is rewritten while its status is the same."""

    async def body() -> None:
        first = HandDriven()
        leaves = [first.ca.issue(f"site-{i}.example") for i in range(5)]
        for i, leaf in enumerate(leaves):
            await first.create("tenant", f"site-{i}", leaf)
        await first.run_for(60)
        await first.stop()
        assert all(first.staple("tenant", f"site-{i}") for i in range(5))
        first.api.requests.clear()
        second = HandDriven(api=first.api)
        await second.adopt()
        await second.run_for(1)
        await second.stop()
        requests = first.api.requests
        assert requests["create", CRD_PLURAL] == 0
        assert requests["get", CRD_PLURAL] == 5
        assert requests["patch", CRD_PLURAL] <= 5
        assert requests["patch", "secrets"] == 0  # the staples held are adopted as they are

    played(body)
