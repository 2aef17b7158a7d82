"""ocsp-stapler: verified OCSP staples for Kubernetes TLS Secrets, and an ingress that serves them.

Layers, inner to outer (kept honest by the import-linter contracts in ``.importlinter``; each
imports only from the layers before it, and modules on one line do not import each other):

* ``names`` — every name written into a cluster.
* ``ocsp`` — the OCSP domain on ``cryptography`` alone: chain, issuer, responder, request,
  response, verdict, refresh time. The clock and the HTTP fetch are passed in. ``config``
  (settings from the environment) sits beside it.
* ``k8s`` — the one place that talks to the Kubernetes API; ``net`` — the guarded HTTP
  fetcher; ``reports`` — what ``check`` and ``verify`` print.
* ``controller`` — the operator; ``ingress`` — the ingress, the only importer of OpenSSL;
  ``logs`` — the logging set-up.
* ``cli`` — the entry point, which wires them together.
"""

__version__ = "0.1.0"
