"""What Secrets holding the same certificate share, and what they must not: without a cluster,
on a virtual clock (tests/support/simulated.py). Each test names the review finding it pins.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools

from simulation.cas import DAY, HOUR, Behaviour

from ocsp_stapler.k8s.client import Invalid, JsonObject, PatchType
from ocsp_stapler.names import STAPLE_CERT_SHA256, STAPLE_KEY
from ocsp_stapler.ocsp.transport import HttpRequest, HttpResponse
from support.simulated import HandDriven, played


def test_a_shared_fetch_never_takes_a_revocation_back() -> None:
    """Tenant A holds an older good response, tenant B a newer revoked one, for one
    certificate; the responder (a stale CDN edge) hands back the older good one. B was
    overwritten with good through A's fetch; now both end revoked."""

    async def body() -> None:
        old_good: list[bytes] = []

        async def stale_edge(request: HttpRequest) -> HttpResponse:
            await asyncio.sleep(1)
            return HttpResponse(200, "application/ocsp-response", old_good[0], request.url)

        hand = HandDriven(fetch=stale_edge)
        leaf = hand.ca.issue("shared.example")
        serial = leaf.serial_number
        old_good.append(hand.ca.sign(serial, this_update=hand.start - 5 * DAY))
        revoked_at = hand.start - 4 * DAY
        revoked = hand.ca.sign(serial, this_update=revoked_at, revoked_at=revoked_at)
        await hand.create("tenant-a", "site", leaf, old_good[0])
        await hand.create("tenant-b", "site", leaf, revoked)
        await hand.run_for(60)
        await hand.stop()
        for namespace in ("tenant-a", "tenant-b"):
            single = hand.staple(namespace, "site")
            assert single is not None
            assert single.certificate_status.name == "REVOKED", namespace

    played(body)


def test_identical_certificates_share_a_failure_instead_of_each_asking() -> None:
    """One certificate in 20 namespaces, the responder down: 105 requests came within a
    minute of another (0.05 s apart at the closest); now the failure is shared."""

    async def body() -> None:
        hand = HandDriven(behaviour=Behaviour(outages=((0 * DAY, 3 * HOUR),)))
        leaf = hand.ca.issue("wildcard.example")
        for i in range(20):
            await hand.create(f"tenant-{i:02d}", "site", leaf)
        await hand.run_for(3 * 3600)
        await hand.stop()
        times = sorted(hand.ca.requests.ocsp[leaf.serial_number])
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 60
        assert len(times) <= 12  # the failure backoff of one certificate, not of 20

    played(body)


def test_a_staple_removed_by_someone_else_is_written_back_at_once() -> None:
    """A kubectl replace or a secret sync dropped the staple: it came back at the next
    refresh (about 2 days); now at once, from what was fetched (no request)."""

    async def body() -> None:
        hand = HandDriven()
        leaf = hand.ca.issue("gitops.example")
        await hand.create("tenant-a", "site", leaf)
        await hand.run_for(600)
        assert hand.staple("tenant-a", "site") is not None
        asked = len(hand.ca.requests.ocsp[leaf.serial_number])
        current = hand.secret("tenant-a", "site")
        stripped: JsonObject = {
            **current,
            "data": {k: v for k, v in current["data"].items() if k != STAPLE_KEY},
            "metadata": {**current["metadata"], "annotations": {
                k: v for k, v in current["metadata"]["annotations"].items()
                if k != STAPLE_CERT_SHA256
            }},
        }  # fmt: skip
        hand.api.replace_now(hand.path("tenant-a", "site"), stripped)
        await hand.run_for(5)
        await hand.stop()
        assert hand.staple("tenant-a", "site") is not None
        assert len(hand.ca.requests.ocsp[leaf.serial_number]) == asked

    played(body)


def test_an_answer_is_never_written_after_it_expired_while_writes_were_refused() -> None:
    """An admission policy refused every write for 30 h (422, the Secret unchanged): the
    answer fetched before was written 6 hours expired, and the refusal was taken for a
    changed Secret and retried every minute. Now: backoff, and a fresh answer."""

    async def body() -> None:
        hand = HandDriven(behaviour=Behaviour(validity=DAY, regenerate_every=12 * HOUR))
        refusing = [True]
        refused = [0]
        real_patch = hand.api.patch

        async def patch(path: str, body: object, *, patch_type: PatchType = "merge") -> JsonObject:
            if refusing[0] and "/secrets/" in path:
                refused[0] += 1
                raise Invalid(422, "Invalid", "ValidatingAdmissionPolicy 'freeze' denied request")
            return await real_patch(path, body, patch_type=patch_type)

        hand.api.patch = patch  # type: ignore[method-assign]
        leaf = hand.ca.issue("frozen.example")
        await hand.create("tenant-a", "site", leaf)
        await hand.run_for(30 * 3600)
        refusing[0] = False
        await hand.run_for(2 * 3600)
        await hand.stop()
        assert refused[0] < 60  # backing off, not once a minute (it was 1,799)
        single = hand.staple("tenant-a", "site")
        assert single is not None
        assert single.next_update_utc is not None
        assert single.next_update_utc > hand.now() - datetime.timedelta(hours=2)

    played(body)


def test_a_secret_deleted_during_its_fetch_leaves_nothing_behind() -> None:
    async def body() -> None:
        hand = HandDriven(behaviour=Behaviour(latency=5.0))
        await hand.run_for(0)
        for i in range(5):
            await hand.create("tenant-a", f"site-{i}", hand.ca.issue(f"s{i}.example"))
            await hand.run_for(1)  # the fetch is in flight
            await hand.api.delete(hand.path("tenant-a", f"site-{i}"))
        await hand.run_for(30)
        await hand.stop()
        assert (hand.reconciler.records, hand.reconciler.holders, hand.reconciler.cache) == (
            {}, {}, {}
        )  # fmt: skip

    played(body)
