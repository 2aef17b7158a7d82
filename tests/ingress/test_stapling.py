"""The ingress staples, checked by real TLS clients: openssl s_client, curl, gnutls-cli."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import subprocess
from pathlib import Path

from devcluster.pki import TestPKI

from ocsp_stapler.k8s.client import ApiClient
from support.backends import EchoBackend, expose
from support.clocks import utcnow
from support.ingress_fixtures import Published
from support.ingresses import (
    IngressProcess,
    MakeSite,
    StartIngress,
    curl,
    fetch_staple,
    publish,
    put_staple,
    s_client,
    staple_in,
)
from support.kube import wait_for

HOST = "www.example.test"


async def stapled(port: int, host: str, *extra: str) -> str | None:
    out = await s_client(port, host, *extra)
    return out if staple_in(out) else None


async def test_a_good_staple_on_tls12_and_tls13(
    pki: TestPKI,
    ingress: IngressProcess,
    published: Published,
) -> None:
    await published(HOST, "www-tls")

    out13 = await wait_for(
        lambda: stapled(ingress.https_port, HOST, "-tls1_3"), what="a stapled handshake"
    )
    assert staple_in(out13) == "good"
    assert "Protocol  : TLSv1.3" in out13 or "New, TLSv1.3" in out13
    out12 = await s_client(ingress.https_port, HOST, "-tls1_2")
    assert staple_in(out12) == "good"
    assert "Protocol  : TLSv1.2" in out12

    got = await curl(ingress.https_port, HOST, "/hello", "--cert-status", ca=pki.path("root"))
    assert got.returncode == 0, got.stderr
    assert '"path": "/hello"' in got.stdout

    # Workers report every second: wait for the counters to arrive.
    await wait_for(lambda: _metric_seen(ingress, 'version="TLSv1.3"'), what="handshake metrics")
    await wait_for(
        lambda: _metric_seen(ingress, 'ocsp_stapler_ingress_requests_total{code="200"}'),
        what="request metrics",
    )


async def _metric_seen(ingress: IngressProcess, needle: str) -> bool:
    got = await ingress.get("/metrics")
    return bool(got and needle in got[1] and 'staple="served"' in got[1])


async def test_gnutls_checks_the_staple(
    pki: TestPKI, ingress: IngressProcess, published: Published, tmp_path: Path,
) -> None:  # fmt: skip
    _leaf, der = await published(HOST, "www-tls")
    await wait_for(lambda: stapled(ingress.https_port, HOST), what="the route")
    saved = tmp_path / "gnutls-ocsp.der"
    proc = await asyncio.to_thread(
        subprocess.run,
        ["gnutls-cli", "--x509cafile", str(pki.path("root")), "-p", str(ingress.https_port),
         f"--save-ocsp={saved}", f"--sni-hostname={HOST}", f"--verify-hostname={HOST}",
         "127.0.0.1"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "- Options: OCSP status request" in proc.stdout, proc.stdout + proc.stderr
    assert "The certificate is trusted" in proc.stdout
    assert saved.read_bytes() == der


async def test_no_staple_and_expired_staple_fail_curl_cert_status(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    ingress: IngressProcess,
    published: Published,
) -> None:
    leaf, _ = await published(HOST, "www-tls", staple=False)
    plain = await wait_for(lambda: _routed(ingress, pki), what="the route")
    assert plain.returncode == 0
    out = await s_client(ingress.https_port, HOST)
    assert "OCSP response: no response sent" in out
    got = await curl(ingress.https_port, HOST, "/", "--cert-status", ca=pki.path("root"))
    assert got.returncode == 91, got.stderr

    now = utcnow()
    expired = pki.response(
        leaf,
        this_update=now - datetime.timedelta(hours=2),
        next_update=now - datetime.timedelta(minutes=1),
    )
    await put_staple(api, namespace, "www-tls", expired)
    await asyncio.sleep(1.0)  # let the change reach the workers (hot reload is sub-second)
    out = await s_client(ingress.https_port, HOST)
    assert "OCSP response: no response sent" in out
    got = await curl(ingress.https_port, HOST, "/", "--cert-status", ca=pki.path("root"))
    assert got.returncode == 91


async def _routed(ingress: IngressProcess, pki: TestPKI) -> subprocess.CompletedProcess[str] | None:
    got = await curl(ingress.https_port, HOST, "/", ca=pki.path("root"))
    return got if got.returncode == 0 and "echo" in got.stdout else None


async def test_a_staple_expiring_while_loaded_stops_being_served(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    ingress: IngressProcess,
    published: Published,
) -> None:
    leaf, _ = await published(HOST, "www-tls", staple=False)
    now = utcnow().replace(microsecond=0)  # OCSP times have whole seconds
    short = pki.response(
        leaf,
        this_update=now - datetime.timedelta(minutes=1),
        next_update=now + datetime.timedelta(seconds=4),
    )
    await put_staple(api, namespace, "www-tls", short)
    await wait_for(lambda: stapled(ingress.https_port, HOST), what="the short staple")

    async def gone() -> bool:
        return staple_in(await s_client(ingress.https_port, HOST)) is None

    await wait_for(gone, timeout=15, what="the expired staple to stop being served")
    assert utcnow() >= now + datetime.timedelta(seconds=4)


async def test_a_new_staple_reaches_new_handshakes_at_once(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    ingress: IngressProcess,
    published: Published,
) -> None:
    leaf, _ = await published(HOST, "www-tls")
    await wait_for(lambda: stapled(ingress.https_port, HOST), what="the first staple")
    now = utcnow()
    revoked = pki.response(
        leaf, this_update=now, next_update=now + datetime.timedelta(hours=1), status="revoked"
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    await put_staple(api, namespace, "www-tls", revoked)

    async def revoked_seen() -> bool:
        return staple_in(await s_client(ingress.https_port, HOST)) == "revoked"

    await wait_for(revoked_seen, timeout=10, what="the new staple")
    print(f"staple update visible after {loop.time() - began:.3f} s")  # the benchmark measures it


async def test_two_hosts_two_certificates_by_sni(
    api: ApiClient,
    namespace: str,
    ingress: IngressProcess,
    backend: EchoBackend,
    site: MakeSite,
) -> None:
    await site("a.example.test", "a-tls")
    await site("b.example.test", "b-tls", staple=False)
    await expose(api, namespace, "echo", [backend.port])
    await publish(api, namespace, host="a.example.test", secret="a-tls", service="echo")
    await publish(api, namespace, host="b.example.test", secret="b-tls", service="echo")
    a = await wait_for(lambda: stapled(ingress.https_port, "a.example.test"), what="host a")
    assert "CN = a.example.test" in a or "CN=a.example.test" in a
    b = await wait_for(lambda: _handshake(ingress.https_port, "b.example.test"), what="host b")
    assert "CN = b.example.test" in b or "CN=b.example.test" in b
    assert staple_in(b) is None
    other = await s_client(ingress.https_port, "nobody.example.test")
    assert "ocsp-stapler ingress default certificate" in other


async def test_must_staple_strict_refuses_lenient_serves(
    api: ApiClient, namespace: str, pki: TestPKI, ingress: IngressProcess, published: Published, start: StartIngress,
) -> None:  # fmt: skip
    leaf, _ = await published("ms.example.test", "ms-tls", staple=False, must_staple=True)
    lenient = await wait_for(
        lambda: _handshake(ingress.https_port, "ms.example.test"), what="lenient"
    )
    assert "CN = ms.example.test" in lenient or "CN=ms.example.test" in lenient

    strict = await start(workers=1, must_staple_policy="strict")
    out = await s_client(strict.https_port, "ms.example.test")
    assert "Cipher is (NONE)" in out or "handshake failure" in out or "alert" in out, out
    assert "CN = ms.example.test" not in out
    # Once a valid staple is held, the strict ingress serves the certificate, stapled.
    await put_staple(api, namespace, "ms-tls", await fetch_staple(pki, leaf))
    out = await wait_for(
        lambda: stapled(strict.https_port, "ms.example.test"), what="strict + staple"
    )
    assert staple_in(out) == "good"
    assert await strict.stop() == 0


async def _handshake(port: int, host: str) -> str | None:
    """s_client's output once the ingress serves ``host``'s own certificate."""
    out = await s_client(port, host)
    return out if f"CN = {host}" in out else None


async def test_a_new_certificate_is_used_and_open_connections_live_on(
    pki: TestPKI,
    ingress: IngressProcess,
    site: MakeSite,
    published: Published,
) -> None:
    await published(HOST, "www-tls")
    await wait_for(lambda: stapled(ingress.https_port, HOST), what="the route")
    ctx = ssl.create_default_context(cafile=str(pki.path("root")))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", ingress.https_port, ssl=ctx, server_hostname=HOST
    )
    request = f"GET /keep HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    assert await _exchange(reader, writer, request) == 200

    new, _ = await site(
        HOST, "www-tls"
    )  # cert-manager renews: new key, new certificate, new staple
    new_pem = new.pem.decode().strip()

    async def new_cert_served() -> bool:
        return new_pem in await s_client(ingress.https_port, HOST)

    await wait_for(new_cert_served, what="the new certificate")
    assert staple_in(await s_client(ingress.https_port, HOST)) == "good"
    assert await _exchange(reader, writer, request) == 200  # the older connection lives on
    writer.close()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(ln.split(b":")[1])
        for ln in head.split(b"\r\n")
        if ln.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return int(head.split(b" ")[1])
