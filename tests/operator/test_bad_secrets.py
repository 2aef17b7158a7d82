"""Secrets the operator must not touch, or must refuse with one clear Event, while it keeps
stapling the good ones."""

from __future__ import annotations

import base64

import pytest
from devcluster.pki import TestPKI, issue, name, new_key
from devcluster.responder import OpenSSLResponder

from ocsp_stapler.k8s.client import ApiClient
from support.kube import SecretHistory, event_reasons, events_for, secret_path, tls_secret, wait_for
from support.operators import StartOperator
from support.staples import ENABLED, create_secret, staple_of


def _body(namespace: str, name_: str, crt: bytes | None, **kw: object) -> dict[str, object]:
    return tls_secret(name_, namespace, crt=crt, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("garbage-pem", "ChainInvalid"),
        ("not-pem-at-all", "ChainInvalid"),
        ("empty-tls-crt", "ChainInvalid"),  # the API server requires the key itself
        ("wrong-order", "ChainInvalid"),
        ("self-signed", "IssuerNotFound"),
        ("no-aia", "NoResponder"),
        ("fifty-certificates", "ChainInvalid"),
        ("bad-override", "InvalidAnnotation"),
    ],
)
async def test_bad_secrets_get_one_event_and_no_write(
    api: ApiClient, namespace: str, pki: TestPKI, responder: OpenSSLResponder,
    start_operator: StartOperator, case: str, reason: str,
) -> None:  # fmt: skip
    op = await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    annotations = dict(ENABLED)
    crt: bytes
    if case == "garbage-pem":
        crt = b"-----BEGIN CERTIFICATE-----\nAAAA!!!!\n-----END CERTIFICATE-----\n"
    elif case == "not-pem-at-all":
        crt = "naïve text, not a certificate".encode()
    elif case == "empty-tls-crt":
        crt = b""
    elif case == "wrong-order":
        crt = pki.intermediate.pem + leaf.pem
    elif case == "self-signed":
        crt = issue(
            subject=name("self.test"), key=new_key("ec"), issuer=None, ocsp_urls=[responder.url]
        ).pem
    elif case == "no-aia":
        crt = pki.chain_pem(pki.leaf(ocsp_urls=[]))
    elif case == "fifty-certificates":
        crt = leaf.pem + pki.intermediate.pem * 49
    else:
        crt = pki.chain_pem(leaf)
        annotations["ocsp-stapler.dev/responder-url"] = "http://ocsp.example.test/" + "é" * 3000
    async with SecretHistory(api, namespace) as history:
        created = await api.create(
            secret_path(namespace), _body(namespace, "bad", crt, annotations=annotations)
        )
        await wait_for(lambda: _has(api, namespace, "bad", reason), what=f"a {reason} Event")
        # The operator is alive: a good Secret next to it is stapled.
        good = pki.leaf(ocsp_urls=[responder.url])
        await create_secret(api, namespace, "good", pki, good, annotations=ENABLED)
        await wait_for(lambda: staple_of(api, namespace, "good"))
        await op.settle()
    body = await api.get(secret_path(namespace, "bad"))
    assert body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]  # no write
    warnings = [e for e in await events_for(api, namespace, "bad") if e["reason"] == reason]
    assert len(warnings) == 1
    assert warnings[0]["type"] == "Warning"
    history.assert_no_trace_of_kopf()


async def _has(api: ApiClient, namespace: str, name_: str, reason: str) -> bool:
    return reason in await event_reasons(api, namespace, name_)


async def test_secrets_that_do_not_opt_in_are_never_touched(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    op = await start_operator()
    leaf = pki.leaf(ocsp_urls=[responder.url])
    chain = pki.chain_pem(leaf)
    bodies = [
        _body(namespace, "plain-tls", chain),  # TLS, not annotated
        _body(
            namespace, "opaque", chain, annotations=ENABLED, type_="Opaque"
        ),  # annotated, not TLS
        _body(
            namespace, "disabled", chain, annotations={"ocsp-stapler.dev/enabled": "yes"}
        ),  # not "true"
        # A large unrelated Secret, like a Helm release's.
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "helm.sh/release.v1",
            "metadata": {"name": "sh.helm.release.v1.app.v1", "namespace": namespace},
            "data": {"release": base64.b64encode(b"H" * 900_000).decode()},
        },
    ]
    async with SecretHistory(api, namespace) as history:
        created = [await api.create(secret_path(namespace), b) for b in bodies]
        await create_secret(
            api, namespace, "marker", pki, pki.leaf(ocsp_urls=[responder.url]), annotations=ENABLED
        )
        await wait_for(lambda: staple_of(api, namespace, "marker"))
        await op.settle()
    for before in created:
        name_ = before["metadata"]["name"]
        after = await api.get(secret_path(namespace, name_))
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], name_
        assert await events_for(api, namespace, name_) == []
    # Only the opted-in TLS Secret is known to the reconciler; the others were dropped early.
    assert [str(r) for r in op.reconciler.records] == [f"{namespace}/marker"]
    history.assert_no_trace_of_kopf()


async def test_a_deleted_secret_is_forgotten(
    api: ApiClient,
    namespace: str,
    pki: TestPKI,
    responder: OpenSSLResponder,
    start_operator: StartOperator,
) -> None:
    op = await start_operator()
    await create_secret(
        api, namespace, "tmp", pki, pki.leaf(ocsp_urls=[responder.url]), annotations=ENABLED
    )
    await wait_for(lambda: staple_of(api, namespace, "tmp"))
    await api.delete(secret_path(namespace, "tmp"))
    await wait_for(lambda: _forgotten(op), what="the record to go")
    assert op.reconciler.metrics.registry.get_sample_value("ocsp_stapler_managed_secrets") == 0


async def _forgotten(op: object) -> bool:
    return not op.reconciler.records  # type: ignore[attr-defined]
