"""The running operator as kopf hands it to every handler (through ``memo``): the reconciler,
the credentials kopf logs in with, and the background tasks (the scheduler) that live as long
as the operator and are stopped before kopf exits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import kopf

from ocsp_stapler.controller.reconciler import Reconciler
from ocsp_stapler.k8s.client import Credentials, connection_fields


@dataclass
class OperatorInstance:
    reconciler: Reconciler
    credentials: Credentials
    background: list[asyncio.Task[None]] = field(default_factory=list)
    """Tasks that live as long as the operator (the scheduler); stopped before kopf exits."""

    def running(self) -> bool:
        """Whether every background task is still running (none died)."""
        return all(not task.done() for task in self.background)

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.background.clear()

    @staticmethod
    def of(memo: kopf.Memo) -> OperatorInstance:
        instance = memo["operator"]
        if not isinstance(instance, OperatorInstance):
            raise TypeError("kopf memo carries no ocsp-stapler OperatorInstance")
        return instance

    def connection_info(self) -> kopf.ConnectionInfo:
        c = connection_fields(self.credentials)
        return kopf.ConnectionInfo(
            server=c.server,
            ca_path=c.ca_path,
            insecure=c.insecure,
            certificate_path=c.certificate_path,
            private_key_path=c.private_key_path,
            scheme=c.scheme,
            token=c.token,
        )
