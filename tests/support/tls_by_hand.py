"""TLS by hand over a blocking loopback socket, for what an ssl socket will not do: a TCP FIN
(half-close) without close_notify, while the other direction goes on."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class HandTLS:
    """One client connection: ``send`` application bytes, ``half_close`` with a bare FIN,
    ``read`` until enough (or the server's close_notify, or the end)."""

    def __init__(self, raw: socket.socket, host: str, ca: Path) -> None:
        self.raw = raw
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ssl.create_default_context(cafile=str(ca)).wrap_bio(
            self.incoming, self.outgoing, server_hostname=host
        )
        for _ in range(10):  # a handshake takes two round trips at most
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(self.outgoing.read())
                self.incoming.write(raw.recv(65536))

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.raw.sendall(self.outgoing.read())

    def half_close(self) -> None:
        """A TCP FIN, no close_notify."""
        self.raw.shutdown(socket.SHUT_WR)

    def read(self, enough: Callable[[bytes], bool] = lambda got: False) -> bytes:
        """Until ``enough``, the server's close_notify or the end of the connection."""
        got = b""
        while not enough(got) and (chunk := self.raw.recv(65536)):
            self.incoming.write(chunk)
            try:
                while data := self.tls.read(65536):
                    got += data
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLZeroReturnError:
                break
        return got


@contextmanager
def hand_tls(port: int, host: str, ca: Path) -> Iterator[HandTLS]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        yield HandTLS(raw, host, ca)
