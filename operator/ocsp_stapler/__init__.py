"""ocsp-stapler: verified OCSP staples for Kubernetes TLS Secrets, and an ingress that serves them.

Layers, inner to outer (kept honest by the import-linter contract in ``.importlinter``):

* ``ocsp_stapler.ocsp`` — the OCSP domain on ``cryptography`` alone: chain, issuer, responder,
  request, response, verdict, refresh time. The clock and the HTTP fetch are passed in.
* ``ocsp_stapler.k8s`` — the one place that talks to the Kubernetes API.
* the operator, the ingress and the CLI, which wire the two together.
"""

__version__ = "0.1.0"
