"""Where the operator may connect: the guard against certificates that point it inward.

Anyone can create a certificate, and its AIA URLs decide where the operator connects. Left
unguarded, that is a server-side request forgery: a URL naming 169.254.169.254 reads the
cloud's instance metadata (credentials included) from inside the cluster. So every URL passes
two checks: its scheme (http or https only), and each address its host *resolves to* (a name
check alone is beaten by DNS). The resolver hook in ``fetching`` applies the address check to
the very addresses aiohttp then connects to, which also defeats DNS rebinding.

By default link-local ranges and the cloud metadata addresses are refused; ``deny`` adds
ranges, and ``allow``, when given, becomes the only ranges permitted (deny still wins).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ocsp_stapler.ocsp.errors import DestinationRefused

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY: tuple[str, ...] = (
    "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "0.0.0.0/8",  # "this host": connecting there reaches the local machine
    "::/128",
    "224.0.0.0/4",  # multicast: never an HTTP server
    "ff00::/8",
    "255.255.255.255/32",
)

ALLOWED_SCHEMES = ("http", "https")


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or bare addresses) from configuration; a clear ValueError names a bad one."""
    nets = []
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"not a CIDR or IP address: {text!r}") from None
    return tuple(nets)


def _normalized(ip: IPAddress) -> IPAddress:
    """::ffff:169.254.169.254 is 169.254.169.254: check the IPv4 inside mapped addresses."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class DestinationGuard:
    deny: tuple[IPNetwork, ...] = field(default_factory=lambda: parse_networks(DEFAULT_DENY))
    allow: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_lists(cls, *, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> DestinationGuard:
        """The defaults extended by configured lists."""
        return cls(deny=parse_networks((*DEFAULT_DENY, *deny)), allow=parse_networks(allow))

    def check_address(self, address: str | IPAddress) -> None:
        ip = _normalized(ipaddress.ip_address(address))
        for net in self.deny:
            if ip.version == net.version and ip in net:
                raise DestinationRefused(
                    f"address {ip} is in the denied range {net}", retryable=False
                )
        if self.allow and not any(ip.version == n.version and ip in n for n in self.allow):
            raise DestinationRefused(f"address {ip} is outside the allowed ranges", retryable=False)

    def check_url(self, url: str) -> str:
        """Check scheme and host form (and the address, for IP literals); return the host."""
        parts = urlsplit(url)
        if parts.scheme not in ALLOWED_SCHEMES:
            raise DestinationRefused(
                f"scheme {parts.scheme or 'none'!r} is not allowed (http and https only)",
                retryable=False,
            )
        host = parts.hostname
        if not host:
            raise DestinationRefused(f"URL has no host: {url[:200]!r}", retryable=False)
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return host
        self.check_address(literal)
        return host
