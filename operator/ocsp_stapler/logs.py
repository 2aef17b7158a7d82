"""Logging for the long-running commands: plain lines for people, JSON lines for collectors.

kopf's own formatters are used so that its log records and ours look the same. Nothing logged
anywhere in the package contains key material: Secrets are named by namespace/name, and
certificates by serial and fingerprint.
"""

from __future__ import annotations

import logging

import kopf


def configure_logging(log_format: str, *, debug: bool = False) -> None:
    kopf.configure(
        debug=debug,
        verbose=debug,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
