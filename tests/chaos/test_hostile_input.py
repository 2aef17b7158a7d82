"""Hostile input to the operator and to the ingress: nothing crashes, nothing wrong is written
or served, and each refusal is visible."""

from __future__ import annotations

import asyncio
import os
import random

from aiohttp import web
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from support.ingress_fixtures import Published
from support.ingresses import IngressProcess, curl
from support.kube import event_reasons, secret_path, tls_secret, wait_for
from support.operators import StartOperator
from support.responders import ScriptedServer
from support.staples import ENABLED, create_secret, staple_of

HOST = "hostile.example.test"


async def test_a_huge_tls_crt_is_refused_with_an_event(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    op = await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    padding = b"\n".join(b"# " + os.urandom(30).hex().encode() for _ in range(9000))  # ~550 KiB
    body = tls_secret(
        "huge", namespace, crt=pki.chain_pem(leaf) + padding, key=leaf.key_pem, annotations=ENABLED
    )
    created = await api.create(secret_path(namespace), body)
    await wait_for(lambda: _has(api, namespace, "huge", "ChainInvalid"), what="the refusal")
    after = await api.get(secret_path(namespace, "huge"))
    assert after["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert op.alive()


async def test_a_leaf_listing_a_hundred_responders_costs_at_most_four(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    start_operator: StartOperator,
    scripted: ScriptedServer,
) -> None:
    async def refuse(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=503)

    scripted.handler = refuse
    op = await start_operator()
    leaf = pki.leaf(ocsp_urls=[f"{scripted.url}/r{i}" for i in range(100)])
    await create_secret(api, namespace, "many-urls", pki, leaf, annotations=ENABLED)
    await wait_for(lambda: _failed_once(op), what="one failed attempt")
    asked = {path.split("/")[1] for _method, path in scripted.requests}
    assert len(asked) <= 4, asked  # the first four responder URLs, each GET then POST
    assert len(scripted.requests) <= 8
    assert await staple_of(api, namespace, "many-urls") is None


async def _failed_once(op: object) -> bool:
    records = op.reconciler.records  # type: ignore[attr-defined]
    return any(r.failures >= 1 for r in records.values())


async def _has(api: ApiClient, namespace: str, name: str, reason: str) -> bool:
    return reason in await event_reasons(api, namespace, name)


async def test_garbage_and_truncated_client_hellos(
    pki: TestPKI,
    ingress: IngressProcess,
    published: Published,
) -> None:
    await published(HOST, "hostile-tls")
    await wait_for(lambda: _served(ingress, pki), what="the route")
    rng = random.Random(1234)  # noqa: S311 (deterministic garbage, not secrets)
    hello_prefix = bytes.fromhex("160301020001000200")  # a ClientHello record header and no more
    payloads = [rng.randbytes(rng.randint(1, 4096)) for _ in range(100)] + [
        hello_prefix[:n] for n in range(1, 9)
    ]
    payloads += [
        b"\x16\x03\x01\xff\xff" + rng.randbytes(300)
    ]  # a record length lying about its size
    for payload in payloads:
        _, writer = await asyncio.open_connection("127.0.0.1", ingress.https_port)
        writer.write(payload)
        await writer.drain()
        writer.close()
    assert ingress.proc.poll() is None, "the ingress died"
    assert await _served(ingress, pki), "the ingress stopped serving"


async def _served(ingress: IngressProcess, pki: TestPKI) -> bool:
    got = await curl(ingress.https_port, HOST, "/", "--cert-status", ca=pki.path("root"))
    return got.returncode == 0 and '"backend": "echo"' in got.stdout


async def test_thousands_of_idle_connections(
    pki: TestPKI,
    ingress: IngressProcess,
    published: Published,
) -> None:
    await published(HOST, "hostile-tls")
    await wait_for(lambda: _served(ingress, pki), what="the route")
    idle = []
    for _ in range(2000):
        idle.append(await asyncio.open_connection("127.0.0.1", ingress.https_port))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await _served(ingress, pki)
    assert loop.time() - started < 5
    for _, writer in idle:
        writer.close()
