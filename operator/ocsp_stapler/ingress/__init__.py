"""The bundled ingress: a TLS-terminating HTTP/1.1 reverse proxy that staples from Secrets.

One supervisor process (``supervisor``) follows Ingresses, Services, EndpointSlices and TLS
Secrets and feeds a configuration snapshot to worker processes (``worker``), which share the
listening port (SO_REUSEPORT) and terminate TLS with pyOpenSSL over memory BIOs in asyncio.
``routes`` and ``http1`` are pure; ``tls`` is the only module that imports OpenSSL.
"""
