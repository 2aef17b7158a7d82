"""The one error type that leaves a consumer: the staple did not reach it, and why."""

from __future__ import annotations


class ConsumerError(Exception):
    """A staple could not be handed over (a file not written, a server that refused it or did
    not answer); the message names the consumer and says what it said."""
