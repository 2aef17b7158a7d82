"""Where the operator may connect: the guard against certificates that point it inward.

Anyone can create a certificate, and its AIA URLs decide where the operator connects. Left
unguarded, that is a server-side request forgery: a URL naming 169.254.169.254 reads the
cloud's instance metadata (credentials included) from inside the cluster, one naming
127.0.0.1 reaches the admin ports of the operator's own pod (sidecars, its metrics). So every
URL passes two checks before a byte is sent:

- its *form* (``safe_url``): http or https, a host that is an IP literal or an ASCII host
  name, no control characters anywhere, and a path and query percent-encoded into a valid
  request target. aiohttp would refuse a control character with a bare ValueError, and
  would send a space or raw UTF-8 in the request line as is; here both end in a verdict.
  Parsers that disagree about a URL are how guards get bypassed, so the fetcher sends
  exactly the string this module returns, and redirect targets come through the same door.
- each *address* the host resolves to (``DestinationGuard.check_address``; a name check
  alone is beaten by DNS). The resolver hook in ``fetching`` applies it to the very addresses
  aiohttp then connects to, which also defeats DNS rebinding. An IPv6 address that carries
  an IPv4 address inside (IPv4-mapped and -compatible, SIIT, NAT64 64:ff9b::/96 and
  64:ff9b:1::/48, 6to4, Teredo) is judged as itself *and* as every IPv4 inside it: a NAT64
  gateway turns 64:ff9b::a9fe:a9fe into 169.254.169.254.

The address rule, exactly:

1. A configured ``deny`` range always wins.
2. A *default* deny range (``DEFAULT_DENY``: loopback, link-local, cloud metadata,
   unspecified, multicast, broadcast) is lifted for an address only by an ``allow`` range
   that lies inside that default range: ``allow=127.0.0.0/8`` (or ``127.0.0.1/32``) opens
   loopback, ``allow=169.254.169.254/32`` opens the metadata address, but ``0.0.0.0/0`` or
   ``::/0`` opens none of them. A broad allow list must never expose them by accident.
3. When ``allow`` is set, an address must be in some allow range as itself, or else every
   IPv4 address inside it must be (an IPv6 address can carry several, and traffic reaches
   only one of them: Teredo's client, one NAT64 layout).

An address is refused if any of its forms (the address, each IPv4 inside) is refused.

Local-use NAT64 (64:ff9b:1::/48) is read with every RFC 6052 layout that fits in it (/48,
/56, /64, /96), since the address does not say which one the site's translator uses; that
refuses most such addresses (the other layouts read zeros, in 0.0.0.0/8). A site that
reaches responders through such a translator allows its prefix (e.g. ``64:ff9b:1::/96``):
inside an allowed prefix of one of those lengths, only that layout is read.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin

from ocsp_stapler.ocsp.errors import DestinationRefused

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DENY: tuple[str, ...] = (
    "127.0.0.0/8",  # loopback: the operator's own pod (sidecar admin APIs, its own ports)
    "::1/128",
    "169.254.0.0/16",  # IPv4 link-local, incl. 169.254.169.254 (AWS, GCP, Azure, OpenStack)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "fd20:ce::254/128",  # GCP metadata over IPv6
    "168.63.129.16/32",  # Azure WireServer (VM agent and metadata plumbing)
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "0.0.0.0/8",  # "this host": connecting there reaches the local machine
    "::/128",
    "224.0.0.0/4",  # multicast: never an HTTP server
    "ff00::/8",
    "255.255.255.255/32",
)

ALLOWED_SCHEMES = ("http", "https")

MAX_URL_CHARS = 8192
"""Longest URL accepted: a responder URL (2048 at most in the annotation) plus a GET request
(255) fits many times over; anything longer is not an OCSP URL."""


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


# ---------------------------------------------------------------------------------------------
# IPv4 addresses inside IPv6 ones

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")  # IPv4-mapped (RFC 4291 2.5.5.2)
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT IPv4-translated (RFC 2765)
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # IPv4-compatible, deprecated (RFC 4291 2.5.5.1)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)

# RFC 6052 2.2: which bytes hold the IPv4 address for each prefix length that fits inside
# 64:ff9b:1::/48 (byte 8, the "u" octet, is always skipped). A site may use the /48 itself or
# any of these longer prefixes inside it, and nothing in the address says which.
RFC6052_LAYOUTS: dict[int, tuple[int, int, int, int]] = {
    48: (6, 7, 9, 10),
    56: (7, 9, 10, 11),
    64: (9, 10, 11, 12),
    96: (12, 13, 14, 15),
}


def embedded_ipv4(
    ip: IPAddress, *, local_layouts: Iterable[int] = tuple(RFC6052_LAYOUTS)
) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address a translator, tunnel or dual stack could turn ``ip`` into.

    ``local_layouts``: the RFC 6052 prefix lengths to read an address in 64:ff9b:1::/48 with
    (all of them unless the site declared its translator prefix, see ``DestinationGuard``).
    """
    if not isinstance(ip, ipaddress.IPv6Address):
        return ()
    packed = ip.packed
    low32 = ipaddress.IPv4Address(packed[12:])
    found: list[ipaddress.IPv4Address] = []
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64:
        found.append(low32)
    if ip in _COMPATIBLE and int(ip) > 1:  # :: and ::1 are IPv6's own, not IPv4 inside
        found.append(low32)
    if ip in _NAT64_LOCAL:
        for length in local_layouts:
            found.append(ipaddress.IPv4Address(bytes(packed[i] for i in RFC6052_LAYOUTS[length])))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found += ip.teredo  # (server, client); ipaddress undoes the client's obfuscation
    return tuple(dict.fromkeys(found))


def _within(ip: IPAddress, net: IPNetwork) -> bool:
    return ip.version == net.version and ip in net


def _inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


@dataclass(frozen=True)
class DestinationGuard:
    default_deny: tuple[IPNetwork, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_DENY)
    )
    """Refused unless an allow range *inside* one of them opens it (``DEFAULT_DENY``)."""
    deny: tuple[IPNetwork, ...] = ()
    """Configured ranges: always refused, whatever ``allow`` says."""
    allow: tuple[IPNetwork, ...] = ()
    """When set, the only ranges permitted; empty: any address not denied."""

    @classmethod
    def from_lists(cls, *, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> DestinationGuard:
        """The defaults, plus configured lists (CIDRs or bare addresses)."""
        return cls(deny=parse_networks(deny), allow=parse_networks(allow))

    def check_address(self, address: str | IPAddress) -> None:
        """DestinationRefused (not retryable) unless the rule in the module docstring allows
        ``address`` and every IPv4 address inside it."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise DestinationRefused(f"not an IP address: {address!r}", retryable=False) from None
        forms: tuple[IPAddress, ...] = (ip, *embedded_ipv4(ip, local_layouts=self._layouts(ip)))
        for form in forms:
            what = f"address {ip}" if form is ip else f"address {ip} (embedding {form})"
            for net in self.deny:
                if _within(form, net):
                    raise DestinationRefused(
                        f"{what} is in the denied range {net}", retryable=False
                    )
            for net in self.default_deny:
                if _within(form, net) and not any(
                    _within(form, a) and _inside(a, net) for a in self.allow
                ):
                    raise DestinationRefused(
                        f"{what} is in the denied range {net} (denied by default; only an "
                        "allow range inside it opens it)",
                        retryable=False,
                    )
        if self.allow and not self._allowed(forms):
            raise DestinationRefused(f"address {ip} is outside the allowed ranges", retryable=False)

    def _allowed(self, forms: tuple[IPAddress, ...]) -> bool:
        """The address itself is in an allow range, or else every IPv4 it could be delivered
        to is: a Teredo address goes to its client, not its server, and a local-use NAT64
        address to the one layout its translator uses, so one allowed reading proves nothing."""
        ip, embedded = forms[0], forms[1:]
        if any(_within(ip, a) for a in self.allow):
            return True
        return bool(embedded) and all(any(_within(f, a) for a in self.allow) for f in embedded)

    def _layouts(self, ip: IPAddress) -> tuple[int, ...]:
        """How to read ``ip`` if it is local-use NAT64: an allow range inside 64:ff9b:1::/48
        with an RFC 6052 length that holds ``ip`` is the site's translator prefix, so only its
        layout applies; otherwise every layout does (refusing whatever any of them reveals,
        which makes most local-use NAT64 addresses refused until the prefix is allowed)."""
        declared = tuple(
            a.prefixlen
            for a in self.allow
            if a.prefixlen in RFC6052_LAYOUTS and _inside(a, _NAT64_LOCAL) and _within(ip, a)
        )
        return declared or tuple(RFC6052_LAYOUTS)

    def check_url(self, url: str) -> str:
        """The URL as it may be sent (``safe_url``), once an IP literal host passes
        ``check_address`` (aiohttp resolves no literal, so the resolver hook never sees it),
        and a ``localhost`` name passes as loopback."""
        safe = safe_url(url)
        host = _host_of(safe)
        if host.startswith("["):
            self.check_address(host[1:-1])
        elif _IPV4.fullmatch(host):
            self.check_address(host)
        elif host == "localhost" or host.endswith(".localhost"):
            # RFC 6761 6.3: loopback by name, whatever a resolver (or a proxy's) would answer,
            # so judged as loopback even when it is never resolved here.
            for loopback in ("127.0.0.1", "::1"):
                self.check_address(loopback)
        return safe


# ---------------------------------------------------------------------------------------------
# The form of a URL

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_PARTS = re.compile(r"//([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?", re.DOTALL)
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_PORT = re.compile(r"[0-9]{1,5}")
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# RFC 3986 pchar minus "%" (kept only as the start of an escape): unreserved, sub-delims, ":@".
_PATH_SAFE = "-._~!$&'()*+,;=:@/"
_QUERY_SAFE = _PATH_SAFE + "?"


def _refused(why: str, url: str) -> DestinationRefused:
    return DestinationRefused(f"{why}: {url[:200]!r}", retryable=False)


def _encoded(text: str, safe: str, url: str) -> str:
    """Percent-encode what a request target cannot carry; existing %XX escapes are kept.

    Non-ASCII is encoded as UTF-8; a header's undecodable bytes (surrogate escapes) as the
    bytes they were. A lone surrogate has no bytes at all: refused.
    """
    try:
        return quote(_LONE_PERCENT.sub("%25", text), safe=safe + "%", errors="surrogateescape")
    except UnicodeError:
        raise _refused("URL has characters that have no UTF-8 encoding", url) from None


def _ipv6_host(authority: str, url: str) -> tuple[str, str]:
    """``[literal]`` (compressed) and the port text after it."""
    literal, bracket, rest = authority[1:].partition("]")
    if not bracket or (rest and not rest.startswith(":")):
        raise _refused("URL has a malformed IPv6 host", url)
    if "%" in literal:
        raise _refused("URL has an IPv6 zone (link-local hosts are never responders)", url)
    try:
        return f"[{ipaddress.IPv6Address(literal).compressed}]", rest[1:]
    except ValueError:
        raise _refused("URL has an invalid IPv6 host", url) from None


def _name_host(authority: str, url: str) -> tuple[str, str]:
    """A lower-case ASCII host name or canonical dotted quad, and the port text after it."""
    name, _, port = authority.partition(":")
    if not name:
        raise _refused("URL has no host", url)
    if not _HOST_NAME.fullmatch(name):
        raise _refused(
            "URL host has characters a host name cannot have (ASCII letters, digits, "
            "'-', '.', '_' only)",
            url,
        )
    host = name.lower().removesuffix(".")  # "ca.example." is "ca.example": judged alike
    labels = host.split(".")
    if len(host) > 253 or any(not label or len(label) > 63 for label in labels):
        raise _refused("URL host is not a valid host name", url)
    # "127.1", "2130706433", "0x7f.1" are IPv4 addresses to inet_aton: only the canonical
    # dotted quad is accepted, so that the guard judges what is connected to.
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise _refused("URL host is a non-canonical IPv4 address", url) from None
    return host, port


def _host(authority: str, url: str) -> str:
    """The host[:port] to send: an IPv6 literal (compressed), a canonical dotted-quad IPv4
    address, or a lower-case ASCII host name; a port of 1-65535."""
    if "@" in authority:
        raise _refused("credentials in a responder URL are not allowed", url)
    split = _ipv6_host if authority.startswith("[") else _name_host
    host, port = split(authority, url)
    if not port:
        return host
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise _refused("URL has an invalid port", url)
    return f"{host}:{int(port)}"


def safe_url(url: str) -> str:
    """``url`` as the fetcher may send it, or DestinationRefused (not retryable) saying why.

    Refused: control characters (0x00-0x1F, 0x7F) anywhere, schemes other than http and
    https, credentials, hosts that are neither an IP literal nor an ASCII host name, bad
    ports. Percent-encoded: in the path and query, every character a request target cannot
    carry (a space becomes %20, non-ASCII its UTF-8 bytes, a "%" not starting an escape %25);
    existing escapes stay as they are (the base64 of a GET request included). The fragment
    is dropped (it is never sent).
    """
    if len(url) > MAX_URL_CHARS:
        raise _refused(f"URL is longer than {MAX_URL_CHARS} characters", url)
    if _CONTROL.search(url):
        raise _refused("URL has control characters", url)
    scheme_match = _SCHEME.match(url)
    scheme = scheme_match.group(1).lower() if scheme_match else ""
    if scheme_match is None or scheme not in ALLOWED_SCHEMES:
        raise DestinationRefused(
            f"scheme {scheme or 'none'!r} is not allowed (http and https only)", retryable=False
        )
    parts = _PARTS.fullmatch(url, scheme_match.end())
    if parts is None:
        raise _refused("URL has no host", url)
    authority, path, query = parts.groups()
    host = _host(authority, url)
    target = _encoded(path or "/", _PATH_SAFE, url)
    if query is not None:
        target += "?" + _encoded(query, _QUERY_SAFE, url)
    return f"{scheme}://{host}{target}"


def redirect_target(base: str, location: str) -> str:
    """Where a redirect from ``base`` (a ``safe_url``) to ``location`` leads, as a safe URL.

    The Location is checked before it is resolved: ``urljoin`` silently drops tabs and line
    breaks, which would hide a header-injection attempt instead of refusing it.
    """
    if len(location) > MAX_URL_CHARS:
        raise _refused(f"redirect Location is longer than {MAX_URL_CHARS} characters", location)
    if _CONTROL.search(location):
        raise _refused("redirect Location has control characters", location)
    try:
        joined = urljoin(base, location)
    except ValueError:  # urllib's own objections (brackets, NFKC-confusable netlocs)
        raise _refused("redirect Location is not a URL", location) from None
    return safe_url(joined)


def _host_of(safe: str) -> str:
    """The host of a ``safe_url`` result (brackets kept for IPv6)."""
    authority = safe.split("//", 1)[1].split("/", 1)[0]
    if authority.startswith("["):
        return authority[: authority.index("]") + 1]
    return authority.partition(":")[0]
