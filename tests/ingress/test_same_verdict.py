"""The operator and the ingress agree: a staple the operator writes is one the ingress serves.

Before, the ingress looked for the issuer in tls.crt only and verified by its own default
rules, so staples for certificates whose issuer is in ca.crt or comes from caIssuers, or that
the operator accepted with ``requireNextUpdate: false``, were written and never served. The
decision tests feed the snapshot builder each issuer source and both policies; end to end,
the real operator and ingress processes on the real control plane staple a certificate whose
issuer only its caIssuers URL (a loopback server) gives, and ``openssl s_client`` sees it.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from devcluster.pki import TestPKI
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.ingress.snapshots import STAPLE_REJECTED, SnapshotBuilder
from ocsp_stapler.ingress.supervisor import self_signed_certificate
from ocsp_stapler.k8s.client import ApiClient
from ocsp_stapler.names import STAPLE_ISSUER
from ocsp_stapler.ocsp.responses import VerifyPolicy
from support.backends import EchoBackend, expose
from support.ingresses import StartIngress, publish, s_client, staple_in
from support.kube import get_or_none, secret_path, tls_secret, wait_for
from support.operators import StartOperator
from support.responders import ScriptedServer
from support.staples import ENABLED, staple_of

CLASSES = {
    "ocsp-stapler": {
        "metadata": {"name": "ocsp-stapler"},
        "spec": {"controller": "ocsp-stapler.dev/ingress"},
    }
}
HOST = "issuer.example.test"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def served(
    pki: TestPKI, secret: dict[str, Any], policy: VerifyPolicy | None = None
) -> tuple[bool, SnapshotBuilder]:
    builder = SnapshotBuilder(
        class_name="ocsp-stapler",
        controller="ocsp-stapler.dev/ingress",
        staple_key="tls.ocsp-staple",
        default_secret="",
        fallback_certificate=self_signed_certificate(),
        clock=now,
        verify_policy=policy or VerifyPolicy(),
    )
    ingress = {
        "metadata": {"namespace": "a", "name": "i", "uid": "u"},
        "spec": {"ingressClassName": "ocsp-stapler", "tls": [{"hosts": [HOST], "secretName": "s"}]},
    }
    snapshot = builder.build(
        ingresses={"a/i": ingress}, classes=CLASSES, services={}, slices={}, secrets={"a/s": secret}
    )
    return snapshot["certs"]["a/s"]["staple"] is not None, builder


def secret_with(pki: TestPKI, **parts: Any) -> dict[str, Any]:
    leaf = pki.leaf(HOST)
    staple = pki.response(
        leaf,
        this_update=now(),
        next_update=parts.pop("next_update", now() + datetime.timedelta(hours=1)),
    )
    data = {"tls.crt": b64(leaf.pem), "tls.key": b64(leaf.key_pem), "tls.ocsp-staple": b64(staple)}
    annotations = {}
    if parts.get("ca"):
        data["ca.crt"] = b64(pki.intermediate.pem)
    if parts.get("annotation"):
        der = pki.intermediate.cert.public_bytes(serialization.Encoding.DER)
        annotations[STAPLE_ISSUER] = parts.get("annotation_value", b64(der))
    return {"metadata": {"annotations": annotations}, "data": data}


def test_the_issuer_is_found_where_the_operator_found_it(pki: TestPKI) -> None:
    assert served(pki, secret_with(pki, ca=True))[0]  # ca.crt
    assert served(pki, secret_with(pki, annotation=True))[0]  # caIssuers, noted by the operator
    alone, builder = served(pki, secret_with(pki))
    assert not alone
    assert builder.problems["a/s"].reason == STAPLE_REJECTED
    assert "staple-issuer" in builder.problems["a/s"].message


def test_a_wrong_or_garbage_issuer_annotation_serves_nothing(pki: TestPKI) -> None:
    stranger = pki.leaf("stranger.example.test").cert.public_bytes(serialization.Encoding.DER)
    for value in (b64(stranger), "%%%", b64(b"garbage")):
        ok, builder = served(pki, secret_with(pki, annotation=True, annotation_value=value))
        assert not ok, value
        assert builder.problems["a/s"].reason == STAPLE_REJECTED


def test_the_ingress_applies_the_operators_next_update_rule(pki: TestPKI) -> None:
    without = secret_with(pki, ca=True, next_update=None)
    assert not served(pki, without)[0]
    assert served(pki, without, VerifyPolicy(require_next_update=False))[0]


async def test_a_staple_whose_issuer_comes_from_ca_issuers_is_served(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    scripted: ScriptedServer,
    start_operator: StartOperator,
    start: StartIngress,
) -> None:
    issuer_der = pki.intermediate.cert.public_bytes(serialization.Encoding.DER)

    async def ca_issuers(_: web.Request) -> web.StreamResponse:
        return web.Response(body=issuer_der, content_type="application/pkix-cert")

    scripted.handler = ca_issuers
    leaf = pki.leaf(HOST, ocsp_urls=[responder.url], ca_issuer_urls=[f"{scripted.url}/ca.der"])
    await api.create(
        secret_path(namespace),
        tls_secret("aia", namespace, crt=leaf.pem, key=leaf.key_pem, annotations=ENABLED),
    )  # tls.crt holds the leaf alone: the issuer comes from caIssuers only
    backend = await EchoBackend().start()
    try:
        await expose(api, namespace, "echo", [backend.port])
        await start_operator()
        await wait_for(lambda: staple_of(api, namespace, "aia"))
        body = await get_or_none(api, secret_path(namespace, "aia"))
        assert body is not None
        assert base64.b64decode(body["metadata"]["annotations"][STAPLE_ISSUER]) == issuer_der
        ingress = await start()
        await publish(api, namespace, host=HOST, secret="aia", service="echo")

        async def stapled() -> str | None:
            out = await s_client(ingress.https_port, HOST)
            return out if staple_in(out) else None

        out = await wait_for(stapled, what="the staple served")
        assert staple_in(out) == "good"
    finally:
        await backend.stop()
