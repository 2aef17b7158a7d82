"""The error types that leave a consumer: the staple did not reach it, and why."""

from __future__ import annotations


class ConsumerError(Exception):
    """A staple could not be handed over (a file not written, a server that refused it or did
    not answer); the message names the consumer and says what it said."""


class NotRunning(ConsumerError):
    """The server is not running (yet): it reads the staple file when it starts, so this is
    no failure of the hand-over (a sidecar may start before its server: nginx and HAProxy
    then find the file in place)."""
