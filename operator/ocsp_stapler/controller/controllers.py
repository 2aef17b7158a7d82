"""The operator instance kopf hands to every handler (through ``memo``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import kopf

from ocsp_stapler.controller.reconciler import Reconciler
from ocsp_stapler.k8s.client import Credentials, connection_fields


@dataclass
class Controller:
    reconciler: Reconciler
    credentials: Credentials
    background: list[asyncio.Task[None]] = field(default_factory=list)
    """Tasks that live as long as the operator (the scheduler); stopped before kopf exits."""

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        self.background.clear()

    @staticmethod
    def of(memo: kopf.Memo) -> Controller:
        controller = memo["controller"]
        if not isinstance(controller, Controller):
            raise TypeError("kopf memo carries no ocsp-stapler Controller")
        return controller

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
