"""Every name ocsp-stapler writes into a cluster, in one place (changing one breaks users).

Annotations live under ``ocsp-stapler.dev/``; the staple itself under the Secret data key that
Istio and kgateway already read.
"""

from __future__ import annotations

GROUP = "ocsp-stapler.dev"
CRD_VERSION = "v1alpha1"
CRD_API_VERSION = f"{GROUP}/{CRD_VERSION}"
CRD_KIND = "OCSPStaple"
CRD_PLURAL = "ocspstaples"

ANNOTATION_PREFIX = f"{GROUP}/"
ENABLED = f"{ANNOTATION_PREFIX}enabled"
"""Opt-in on a kubernetes.io/tls Secret: the value "true" (exactly) enables stapling."""
RESPONDER_URL = f"{ANNOTATION_PREFIX}responder-url"
"""Per-Secret responder override; subject to the same destination guard as AIA URLs."""
STAPLE_CERT_SHA256 = f"{ANNOTATION_PREFIX}staple-cert-sha256"
"""Written with every staple: the SHA-256 of the leaf certificate the staple belongs to."""

STAPLE_ISSUER = f"{ANNOTATION_PREFIX}staple-issuer"
"""Written with a staple whose issuer is in neither tls.crt nor ca.crt (it was downloaded from
the leaf's caIssuers URL): that issuer certificate, base64 DER, so that a consumer (the
bundled ingress) can check the staple as the operator did."""

STAPLE_KEY = "tls.ocsp-staple"
"""Default Secret data key for the DER staple (Istio, kgateway)."""
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
CA_CERT_KEY = "ca.crt"
TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 (a type name, not a password)

INGRESS_CONTROLLER = f"{GROUP}/ingress"
"""The IngressClass controller, and the reporting controller of the ingress's Events."""
OPERATOR_CONTROLLER = f"{GROUP}/operator"
"""The reporting controller of the operator's Events."""
INGRESS_CLASS = "ocsp-stapler"

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "ocsp-stapler"
"""The label (and value) on every OCSPStaple the operator creates: the only ones it deletes."""

LEASE_NAME = "ocsp-stapler-operator"
"""The coordination.k8s.io/v1 Lease operator replicas elect their leader on."""

ENV_PREFIX = "OCSP_STAPLER_"
METRICS_PREFIX = "ocsp_stapler_"
