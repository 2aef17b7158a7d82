"""Session resumption across workers: one ticket key, made by the supervisor, for all of them.

Checked with `openssl s_client -sess_out` (a full handshake, its ticket saved) and
`-sess_in` (the ticket offered back), TLS 1.2 and 1.3, through a real ingress: a ticket
resumes on every worker, also on a worker started after the ticket was made (so the key is
not a worker's own), never for another host, and no longer after a key rotation; whenever
a handshake carries the certificate, it carries the staple.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import time
from pathlib import Path

import pytest
from devcluster.pki import TestPKI
from OpenSSL import SSL

from ocsp_stapler.config import ConfigError
from ocsp_stapler.ingress import ticket_keys, tls
from ocsp_stapler.ingress.settings import IngressSettings
from ocsp_stapler.ingress.tls import SERVED, CertificateStore
from ocsp_stapler.k8s.client import ApiClient
from support.clocks import utcnow
from support.ingress_fixtures import Published
from support.ingresses import IngressProcess, StartIngress, put_staple, s_client, staple_in
from support.inprocess_tls import RETRYING_CLIENT, handshake, two_host_store
from support.kube import wait_for

HOST, OTHER = "www.example.test", "shop.example.test"
VERSIONS = ["-tls1_2", "-tls1_3"]


def reused(out: str) -> bool:
    """s_client says "Reused, TLSv1.x" for a resumed handshake, "New, TLSv1.x" for a full one."""
    return "\nReused, TLSv1." in out


def certificate_sent(out: str) -> bool:
    """Whether the server sent its Certificate: in every full handshake, in no resumed one
    (s_client prints the session's certificate either way, so its output cannot tell)."""
    return not reused(out)


async def fullhandshake(
    ingress: IngressProcess, host: str, version: str, sess: Path, *, ticket: bool = True
) -> str:
    """A full, stapled handshake whose session (with its ticket) is saved in ``sess``
    (``ticket``: wait for one; a server without tickets may give s_client nothing to save)."""

    async def stapled() -> str | None:
        out = await s_client(ingress.https_port, host, version, "-sess_out", str(sess))
        saved = await asyncio.to_thread(sess.exists)
        return out if staple_in(out) == "good" and (saved or not ticket) else None

    out = await wait_for(stapled, what=f"a stapled handshake with {host}")
    assert not reused(out)
    return out


async def resume(ingress: IngressProcess, host: str, version: str, sess: Path) -> str:
    out = await s_client(ingress.https_port, host, version, "-sess_in", str(sess))
    # The promise of the issue: a client gets a staple whenever it gets a certificate.
    assert not certificate_sent(out) or staple_in(out) == "good", out
    return out


async def handshake_metric(ingress: IngressProcess, version: str, staple: str) -> float:
    got = await ingress.get("/metrics")
    assert got is not None
    name = "ocsp_stapler_ingress_handshakes_total"
    for line in got[1].splitlines():
        if line.startswith(name) and f'staple="{staple}"' in line and version in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_ticket_resumes_on_every_worker_even_one_started_after_it(
    start: StartIngress, published: Published, tmp_path: Path, version: str
) -> None:
    await published(HOST, "www-tls")
    ingress = await start(workers=2)
    sess = tmp_path / "session.pem"
    await fullhandshake(ingress, HOST, version, sess)
    # SO_REUSEPORT spreads these over both workers: with a key per worker about half of
    # them would be full handshakes.
    for _ in range(8):
        out = await resume(ingress, HOST, version, sess)
        assert reused(out), out
    # Both workers killed and restarted by the supervisor: the ticket still resumes.
    before = ingress.worker_pids()
    for pid in before:
        os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        pids = ingress.worker_pids()
        return len(pids) == 2 and not set(pids) & set(before)

    await wait_for(restarted, what="the workers to be restarted")
    out = await wait_for(
        lambda: resume(ingress, HOST, version, sess), what="the restarted workers to serve"
    )
    assert reused(out), out
    tls = "TLSv1.3" if version == "-tls1_3" else "TLSv1.2"
    await wait_for(
        lambda: handshake_metric(ingress, tls, "resumed"), what="resumed handshakes counted"
    )


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_ticket_for_one_host_never_resumes_another(
    start: StartIngress, published: Published, tmp_path: Path, version: str
) -> None:
    await published(HOST, "www-tls")
    await published(OTHER, "shop-tls")
    ingress = await start(workers=1)
    sess = tmp_path / "session.pem"
    await fullhandshake(ingress, HOST, version, sess)
    other = tmp_path / "other.pem"
    await fullhandshake(ingress, OTHER, version, other)
    # Each host's own ticket resumes (not only the default certificate's) ...
    for host, its_own in ((HOST, sess), (OTHER, other)):
        assert reused(await resume(ingress, host, version, its_own)), host
    # ... and never under another name, whichever certificate is the default.
    assert not reused(await resume(ingress, HOST, version, other))
    out = await resume(ingress, OTHER, version, sess)
    assert not reused(out), out
    assert certificate_sent(out)
    assert f"CN={OTHER}" in out.replace(" = ", "=")
    assert staple_in(out) == "good"


@pytest.mark.parametrize("version", VERSIONS)
async def test_strict_must_staple_refuses_a_resumption_once_the_staple_expired(
    start: StartIngress, published: Published, api: ApiClient, namespace: str, pki: TestPKI,
    tmp_path: Path, version: str,
) -> None:  # fmt: skip
    """A ticket skips the certificate, not the policy: without a valid staple now, a
    must-staple host is refused to a returning client as to a new one."""
    leaf, _ = await published(HOST, "www-tls", staple=False, must_staple=True)
    now = utcnow().replace(microsecond=0)
    short = pki.response(
        leaf, this_update=now - datetime.timedelta(minutes=1),
        next_update=now + datetime.timedelta(seconds=4),
    )  # fmt: skip
    await put_staple(api, namespace, "www-tls", short)
    ingress = await start(workers=1, must_staple_policy="strict")
    sess = tmp_path / "session.pem"
    await fullhandshake(ingress, HOST, version, sess)
    assert reused(await resume(ingress, HOST, version, sess))

    async def refused() -> str | None:
        out = await s_client(ingress.https_port, HOST, version)
        return out if "CN = " + HOST not in out and "CN=" + HOST not in out else None

    await wait_for(refused, timeout=15, what="the expired staple to refuse full handshakes")
    out = await s_client(ingress.https_port, HOST, version, "-sess_in", str(sess))
    assert not reused(out), out


async def test_a_rotated_key_ends_resumption_and_new_tickets_resume_again(
    start: StartIngress, published: Published, tmp_path: Path
) -> None:
    await published(HOST, "www-tls")
    ingress = await start(workers=2, ticket_key_rotation_seconds="2")
    sess = tmp_path / "session.pem"
    await fullhandshake(ingress, HOST, "-tls1_3", sess)

    async def not_resumed() -> bool:
        return not reused(await resume(ingress, HOST, "-tls1_3", sess))

    await wait_for(not_resumed, timeout=15, what="the old ticket to stop resuming")
    # A ticket under the new key resumes (within its 2 s it can meet a rotation: retried).

    async def resumes_again() -> bool:
        fresh = tmp_path / "fresh.pem"
        fresh.unlink(missing_ok=True)
        await fullhandshake(ingress, HOST, "-tls1_3", fresh)
        return reused(await resume(ingress, HOST, "-tls1_3", fresh))

    await wait_for(resumes_again, timeout=15, what="a new ticket to resume")


async def test_with_session_tickets_off_every_handshake_is_full(
    start: StartIngress, published: Published, tmp_path: Path
) -> None:
    await published(HOST, "www-tls")
    ingress = await start(workers=1, session_tickets="false")
    for version in VERSIONS:
        sess = tmp_path / f"session{version}.pem"
        out = await fullhandshake(ingress, HOST, version, sess, ticket=False)
        # No ticket, no resumable session id (no session cache): nothing to offer back.
        assert "TLS session ticket:" not in out, out
        assert not sess.exists(), version
    assert await handshake_metric(ingress, "TLSv1", "resumed") == 0.0


def test_the_ticket_key_control_sets_keys_that_read_back() -> None:
    """This platform's wheel has the symbols: the mechanism is on (the tests above need it)."""
    control = ticket_keys.ticket_key_control()
    assert control is not None
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    key = ticket_keys.new_key()
    assert control.set_key(ctx, key)
    assert control.get_key(ctx) == key
    assert not control.set_key(ctx, key[:79])  # only OpenSSL's 80-byte layout


def test_a_file_that_is_not_elf_has_no_symbols(tmp_path: Path) -> None:
    other = tmp_path / "not-elf.so"
    other.write_bytes(b"MZ" + bytes(200))
    assert ticket_keys._symbols(other, {"SSL_CTX_ctrl"}) == {}


# ------------------------------------------------- in process: where a connection starts


def test_a_hello_that_cannot_be_read_first_still_gets_its_certificate_and_never_resumes(
    pki: TestPKI,
) -> None:
    store = two_host_store(pki)
    client, server, owner, _ = handshake(store, OTHER, None)
    assert server.get_context() is store.entries[OTHER].context
    assert owner.staple == SERVED
    ticket = client.get_session()
    assert tls.resumed(handshake(store, OTHER, ticket)[1])
    # Split over two records, the ClientHello's name is left to OpenSSL: SNI still picks the
    # certificate (stapled), and no ticket resumes from there.
    client, server, owner, _ = handshake(store, OTHER, ticket, split=True)
    assert not tls.resumed(server)
    assert server.get_context() is store.entries[OTHER].context
    assert owner.staple == SERVED
    assert client.get_peer_certificate() is not None


def test_after_a_hello_retry_the_second_hello_must_name_the_same_host(pki: TestPKI) -> None:
    """OpenSSL checks a ticket against the host of the first ClientHello (the one read
    first); a client that names another host in its second one, after a HelloRetryRequest,
    is refused, resumed or not."""
    store = two_host_store(pki)
    client, *_ = handshake(store, OTHER, None, client_ctx=RETRYING_CLIENT)
    ticket = client.get_session()
    _, server, owner, done = handshake(store, OTHER, ticket, client_ctx=RETRYING_CLIENT)
    assert done
    assert owner.hellos == 2
    assert tls.resumed(server)
    assert not owner.refused
    _, server, owner, done = handshake(
        store, OTHER, ticket, client_ctx=RETRYING_CLIENT, retry_as=HOST
    )
    assert owner.hellos == 2
    assert owner.refused  # OpenSSL completes the resumption: the worker aborts it
    _, server, owner, done = handshake(
        store, OTHER, None, client_ctx=RETRYING_CLIENT, retry_as=HOST
    )
    assert owner.refused
    assert not done  # a full handshake: no certificate to send


def test_strict_must_staple_is_checked_again_on_the_second_hello(pki: TestPKI) -> None:
    """A client that waits for the staple to expire before it answers a HelloRetryRequest
    gets no certificate without a staple from a strict ingress."""
    now = [time.time()]
    store = CertificateStore(must_staple_policy="strict", clock=lambda: now[0])
    leaf = pki.leaf(HOST, must_staple=True)
    staple = pki.response(
        leaf, this_update=utcnow().replace(microsecond=0),
        next_update=utcnow() + datetime.timedelta(minutes=10),
    )  # fmt: skip
    entry = {
        "version": "1", "chain": pki.chain_pem(leaf).decode(), "key": leaf.key_pem.decode(),
        "hosts": [HOST], "staple": staple.hex(), "staple_expires": now[0] + 60,
    }  # fmt: skip
    assert store.apply({HOST: entry}, HOST) == []
    _, _, owner, done = handshake(store, HOST, None, client_ctx=RETRYING_CLIENT)
    assert done
    assert owner.staple == SERVED
    assert owner.hellos == 2

    def expire() -> None:
        now[0] += 120

    _, _, owner, done = handshake(
        store, HOST, None, client_ctx=RETRYING_CLIENT, retry_as=HOST, before_retry=expire
    )
    assert owner.refused
    assert not done


@pytest.mark.parametrize("seconds", [0.5, 604801, float("inf"), float("nan")])
def test_a_rotation_no_ticket_may_live_is_refused_at_start(seconds: float) -> None:
    """The rotation is the tickets' lifetime (at most 7 days, RFC 8446); a value no Context
    could take would otherwise leave every certificate of every worker unloadable."""
    with pytest.raises(ConfigError):
        IngressSettings(ticket_key_rotation_seconds=seconds).validate()
    IngressSettings(ticket_key_rotation_seconds=604800).validate()  # the longest allowed
