"""One hand-over of the current staple (or of "there is none") to every configured consumer.

The order matters on a bad day: the staple file is written before anything points at it, and
when no valid staple exists nginx is first told to staple nothing, then the file goes (its
configuration test never sees a directive naming a missing file), and HAProxy drops the
response it holds (``consumers.haproxy.withdraw_staple``; it would stop stapling an expired
one by itself, but not a revoked or removed one that is still within its validity). Every
consumer is tried, and the failures are reported together, so one broken consumer does not
starve the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocsp_stapler.consumers import commands, haproxy, nginx
from ocsp_stapler.consumers.errors import ConsumerError, NotRunning
from ocsp_stapler.consumers.files import remove_file, write_atomically
from ocsp_stapler.ocsp.errors import OCSPError
from ocsp_stapler.ocsp.responses import parse_response

MAX_TARGET = 64 * 1024
"""A staple is far smaller (HAProxy would not take one over 15 KiB)."""


def looks_like_ocsp_response(data: bytes, *, oversized: bool = False) -> bool:
    """Whether ``data`` parses as an OCSP response (DER); PEM, text, keys do not."""
    if oversized:
        return False
    try:
        parse_response(data)
    except OCSPError:
        return False
    return True


@dataclass(frozen=True)
class Delivery:
    staple_file: Path
    haproxy_socket: Path | None = None
    nginx_include: Path | None = None
    """With ``nginx_pidfile``: the include that names the staple file while it is valid."""
    nginx_pidfile: Path | None = None
    command: tuple[str, ...] = ()
    haproxy_crt: Path | None = None
    """The ``crt`` HAProxy serves; by default the staple file's name without ``.ocsp``."""

    @property
    def haproxy_certificate(self) -> Path | None:
        """HAProxy reads ``<crt>.ocsp`` next to ``<crt>``: the staple file names the crt."""
        if self.haproxy_crt is not None:
            return self.haproxy_crt
        name = self.staple_file.name
        if not name.endswith(".ocsp") or name == ".ocsp":
            return None
        return self.staple_file.with_name(name[: -len(".ocsp")])

    def check_target(self) -> None:
        """Refuse a staple file that already holds something else (a mistyped ``--out``
        naming the certificate, its key, a configuration): it would be replaced or removed.
        ``ConsumerError`` saying so; a missing file, or an OCSP response, is fine."""
        try:
            with self.staple_file.open("rb") as handle:
                head = handle.read(MAX_TARGET + 1)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConsumerError(f"cannot read {self.staple_file}: {exc.strerror}") from None
        if head and not looks_like_ocsp_response(head, oversized=len(head) > MAX_TARGET):
            raise ConsumerError(
                f"{self.staple_file} holds something other than an OCSP response: refusing "
                "to replace or remove it (is it the certificate, or a configuration?)"
            )

    async def hand_over(self, der: bytes | None) -> None:
        """Give consumers ``der`` (None: no valid staple); ``ConsumerError`` naming each one
        that failed (a staple that could not be written reaches no one)."""
        if der is not None:
            write_atomically(self.staple_file, der)
        staple_file = self.staple_file if der is not None else None
        problems: list[str] = []
        if self.nginx_include is not None:
            try:
                nginx.write_include(self.nginx_include, staple_file)
                if self.nginx_pidfile is not None:
                    nginx.reload(self.nginx_pidfile)
            except ConsumerError as exc:
                problems.append(str(exc))
        try:
            if der is None:
                remove_file(self.staple_file)
                if self.haproxy_socket is not None and self.haproxy_certificate is not None:
                    await haproxy.withdraw_staple(self.haproxy_socket, self.haproxy_certificate)
            elif self.haproxy_socket is not None:
                await haproxy.set_ocsp_response(
                    self.haproxy_socket, der, certificate=self.haproxy_certificate
                )
        except NotRunning:
            pass  # it reads the file (written, or removed, above) when it starts
        except ConsumerError as exc:
            problems.append(str(exc))
        if self.command:
            try:
                await commands.run_command(self.command, staple_file)
            except ConsumerError as exc:
                problems.append(str(exc))
        if problems:
            raise ConsumerError("; ".join(problems))
