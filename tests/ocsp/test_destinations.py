"""The destination guard without a network: which addresses it refuses (embedded IPv4 forms
included) under each kind of configuration, and which URL forms it sends, encodes or refuses.

The fetcher-level behaviour (nothing reaches the wire, what does reach it) is in
test_fetch_safety.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocsp_stapler.net.destinations import (
    DEFAULT_DENY,
    RFC6052_LAYOUTS,
    DestinationGuard,
    embedded_ipv4,
    redirect_target,
    safe_url,
)
from ocsp_stapler.ocsp.errors import DestinationRefused

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def refused(guard: DestinationGuard, address: str) -> bool:
    try:
        guard.check_address(address)
    except DestinationRefused as exc:
        if exc.retryable:
            raise AssertionError(f"a retryable refusal: {exc}") from None
        return True
    return False


DEFAULT = DestinationGuard.from_lists()
DENY_EXTENDED = DestinationGuard.from_lists(deny=["10.0.0.0/8", "2001:db8::/32"])
NARROW_ALLOW = DestinationGuard.from_lists(allow=["127.0.0.0/8", "::1/128", "192.0.2.0/24"])
METADATA_ALLOW = DestinationGuard.from_lists(allow=["169.254.169.254/32"])
BROAD_ALLOW = DestinationGuard.from_lists(allow=["0.0.0.0/0", "::/0"])
BROAD_BUT_DENY = DestinationGuard.from_lists(allow=["0.0.0.0/0", "::/0"], deny=["10.0.0.0/8"])

GUARDS = {
    "default": DEFAULT,
    "deny-extended": DENY_EXTENDED,
    "narrow-allow": NARROW_ALLOW,
    "metadata-allow": METADATA_ALLOW,
    "broad-allow": BROAD_ALLOW,
    "broad-but-deny": BROAD_BUT_DENY,
}

# address, what it is, and the verdict of each guard in GUARDS order ("R" refused, "." allowed):
# default, deny-extended, narrow-allow, metadata-allow, broad-allow, broad-but-deny.
TABLE: list[tuple[str, str, str]] = [
    # plain addresses
    ("93.184.216.34", "public IPv4", "..RR.."),
    ("192.0.2.7", "public IPv4 (allowed narrowly)", "...R.."),
    ("10.1.2.3", "private IPv4", ".RRR.R"),
    ("127.0.0.1", "loopback", "RR.RRR"),
    ("127.255.255.254", "loopback, end of the /8", "RR.RRR"),
    ("::1", "IPv6 loopback", "RR.RRR"),
    ("0.0.0.0", "unspecified", "RRRRRR"),
    ("::", "IPv6 unspecified", "RRRRRR"),
    ("169.254.169.254", "cloud metadata", "RRR.RR"),
    ("169.254.1.1", "link-local, not metadata", "RRRRRR"),
    ("fe80::1", "IPv6 link-local", "RRRRRR"),
    ("fd00:ec2::254", "AWS metadata over IPv6", "RRRRRR"),
    ("100.100.100.200", "Alibaba metadata", "RRRRRR"),
    ("224.0.0.1", "multicast", "RRRRRR"),
    ("2606:4700::1111", "public IPv6", "..RR.."),
    ("2001:db8::1", "documentation IPv6 (denied by the extended list)", ".RRR.."),
    # IPv4-mapped
    ("::ffff:127.0.0.1", "IPv4-mapped loopback", "RR.RRR"),
    ("::ffff:169.254.169.254", "IPv4-mapped metadata", "RRR.RR"),
    ("::ffff:93.184.216.34", "IPv4-mapped public", "..RR.."),
    ("::ffff:10.0.0.1", "IPv4-mapped private", ".RRR.R"),
    # IPv4-compatible
    ("::169.254.169.254", "IPv4-compatible metadata", "RRR.RR"),
    ("::127.0.0.1", "IPv4-compatible loopback", "RR.RRR"),
    ("::93.184.216.34", "IPv4-compatible public", "..RR.."),
    # SIIT IPv4-translated
    ("::ffff:0:169.254.169.254", "IPv4-translated metadata", "RRR.RR"),
    ("::ffff:0:93.184.216.34", "IPv4-translated public", "..RR.."),
    # NAT64, well-known prefix
    ("64:ff9b::a9fe:a9fe", "NAT64 metadata", "RRR.RR"),
    ("64:ff9b::7f00:1", "NAT64 loopback", "RR.RRR"),
    ("64:ff9b::5db8:d822", "NAT64 public", "..RR.."),
    ("64:ff9b::a00:1", "NAT64 private", ".RRR.R"),
    # NAT64, local-use prefix, /48 layout (169.254.169.254 in bytes 6,7,9,10)
    ("64:ff9b:1:a9fe:a9:fe00::", "local NAT64 /48 metadata", "RRRRRR"),
    # local-use /96 layout: the other layouts read zeros (0.0.0.0/8), refused unless declared
    ("64:ff9b:1::a9fe:a9fe", "local NAT64 /96 metadata", "RRRRRR"),
    ("64:ff9b:1::5db8:d822", "local NAT64 /96 public, layout unknown", "RRRRRR"),
    # 6to4
    ("2002:a9fe:a9fe::1", "6to4 metadata", "RRR.RR"),
    ("2002:7f00:1::1", "6to4 loopback", "RR.RRR"),
    ("2002:5db8:d822::1", "6to4 public", "..RR.."),
    # Teredo: server 65.54.227.120 (public), client de-obfuscated from the last 32 bits. An
    # allow list opens one only when both are allowed: one allowed form proves nothing.
    ("2001:0:4136:e378:8000:63bf:56ab:5656", "Teredo, client 169.84.169.169", "..RR.."),
    ("2001:0:4136:e378:8000:63bf:5601:5601", "Teredo, client 169.254.169.254", "RRRRRR"),
    ("2001:0:a9fe:a9fe:8000:63bf:3fff:fdd2", "Teredo, server 169.254.169.254", "RRRRRR"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo, client 127.0.0.1", "RRRRRR"),
]


@pytest.mark.parametrize(("address", "what", "expected"), TABLE, ids=[t[1] for t in TABLE])
def test_the_address_table(address: str, what: str, expected: str) -> None:
    got = "".join("R" if refused(guard, address) else "." for guard in GUARDS.values())
    assert got == expected, f"{what}: {dict(zip(GUARDS, got, strict=True))}"


def test_the_table_means_what_it_says() -> None:
    """The Teredo rows decode as their comments claim (ipaddress undoes the obfuscation)."""
    assert V6("2001:0:4136:e378:8000:63bf:5601:5601").teredo == (
        V4("65.54.227.120"),
        V4("169.254.169.254"),
    )
    assert V6("2001:0:4136:e378:8000:63bf:80ff:fffe").teredo == (
        V4("65.54.227.120"),
        V4("127.0.0.1"),
    )
    assert embedded_ipv4(V6("64:ff9b:1:a9fe:a9:fe00::"), local_layouts=[48]) == (
        V4("169.254.169.254"),
    )


def test_loopback_and_unspecified_are_in_the_defaults() -> None:
    for cidr in ("127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128"):
        assert cidr in DEFAULT_DENY


@pytest.mark.parametrize(
    ("allow", "opened"),
    [
        (["127.0.0.0/8"], True),
        (["127.0.0.1/32"], True),
        (["127.0.0.2/32"], False),  # inside the default range, but not holding the address
        (["0.0.0.0/0"], False),
        (["::/0", "0.0.0.0/0"], False),
        (["96.0.0.0/3"], False),  # a supernet of 127.0.0.0/8 is not inside it
        (["::ffff:0:0/96"], False),  # IPv6 ranges never lift an IPv4 default
    ],
)
def test_only_an_allow_range_inside_a_default_range_opens_it(
    allow: list[str], opened: bool
) -> None:
    guard = DestinationGuard.from_lists(allow=allow)
    assert refused(guard, "127.0.0.1") is not opened
    assert refused(guard, "::ffff:127.0.0.1") is not opened


def test_configured_deny_beats_an_allow_inside_a_default_range() -> None:
    guard = DestinationGuard.from_lists(allow=["127.0.0.0/8"], deny=["127.0.0.1/32"])
    assert refused(guard, "127.0.0.1")
    assert not refused(guard, "127.0.0.2")


def test_refusals_name_the_range_and_the_embedded_address() -> None:
    with pytest.raises(
        DestinationRefused, match=r"embedding 169\.254\.169\.254.*169\.254\.0\.0/16"
    ):
        DEFAULT.check_address("64:ff9b::a9fe:a9fe")
    with pytest.raises(DestinationRefused, match="denied by default"):
        BROAD_ALLOW.check_address("127.0.0.1")
    with pytest.raises(DestinationRefused, match="outside the allowed ranges"):
        NARROW_ALLOW.check_address("93.184.216.34")
    with pytest.raises(DestinationRefused, match="not an IP address"):
        DEFAULT.check_address("localhost")


def _teredo(server: str, client: str) -> str:
    obfuscated = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    server_bits = int(ipaddress.IPv4Address(server)) << 64
    return str(ipaddress.IPv6Address((0x20010000 << 96) | server_bits | obfuscated))


def _local_nat64(layout48: str, layout96: str) -> str:
    packed = bytearray(ipaddress.IPv6Address("64:ff9b:1::").packed)
    packed[6], packed[7], packed[9], packed[10] = ipaddress.IPv4Address(layout48).packed
    packed[11] = 7
    packed[12:16] = ipaddress.IPv4Address(layout96).packed
    return str(ipaddress.IPv6Address(bytes(packed)))


@pytest.mark.parametrize(
    ("address", "opened"),
    [
        (_teredo("10.0.0.1", "203.0.113.5"), False),  # traffic goes to the client
        (_teredo("10.0.0.1", "10.0.0.9"), True),
        (_local_nat64("10.1.1.1", "203.0.113.5"), False),  # one allowed layout proves nothing
        ("64:ff9b::a00:1", True),  # well-known NAT64: one reading, 10.0.0.1
    ],
)
def test_an_allow_list_needs_every_embedded_destination(address: str, opened: bool) -> None:
    """Unless the IPv6 address itself is allowed, every IPv4 it could be delivered to must be."""
    guard = DestinationGuard.from_lists(allow=["10.0.0.0/8"])
    assert refused(guard, address) is not opened


def test_a_declared_local_nat64_prefix_fixes_the_layout() -> None:
    """Allowing the translator's prefix says which RFC 6052 layout to read: then a public
    IPv4 inside passes, a denied one is still refused, and the layout is not a loophole for
    addresses outside the declared prefix."""
    site = DestinationGuard.from_lists(allow=["64:ff9b:1::/96"])
    assert not refused(site, "64:ff9b:1::5db8:d822")
    assert refused(site, "64:ff9b:1::a9fe:a9fe")
    assert refused(site, "64:ff9b:1::7f00:1")
    assert refused(site, "64:ff9b:1:a9fe:a9:fe00::")  # outside the /96: outside the allow list
    wide = DestinationGuard.from_lists(allow=["64:ff9b:1::/96", "::/0", "0.0.0.0/0"])
    assert refused(wide, "64:ff9b:1:a9fe:a9:fe00::")  # read with every layout again
    by48 = DestinationGuard.from_lists(allow=["64:ff9b:1::/48"])
    assert refused(by48, "64:ff9b:1:a9fe:a9:fe00::")
    assert not refused(by48, "64:ff9b:1:5db8:d8:2200::")


# ---------------------------------------------------------------------------------------------
# The property: an embedded IPv4 address is judged as itself

ipv4s = st.builds(V4, st.integers(min_value=0, max_value=2**32 - 1))
# Addresses around every default range, so both answers come up often.
interesting = st.sampled_from(
    [n for n in (ipaddress.ip_network(c) for c in DEFAULT_DENY) if n.version == 4]
).flatmap(
    lambda net: st.integers(
        min_value=max(0, int(net.network_address) - 2),
        max_value=min(2**32 - 1, int(net.broadcast_address) + 2),
    ).map(V4)
)
any_v4 = st.one_of(ipv4s, interesting)
rest = st.integers(min_value=0, max_value=2**16 - 1)
PUBLIC = V4("192.0.2.1")


def _v6(value: int) -> str:
    return str(V6(value))


def _bytes_at(v: V4, positions: tuple[int, ...], prefix: bytes) -> str:
    packed = bytearray(16)
    packed[: len(prefix)] = prefix
    for pos, byte in zip(positions, v.packed, strict=True):
        packed[pos] = byte
    return str(V6(bytes(packed)))


# Each embedding that says unambiguously where the IPv4 address is.
EMBEDDINGS: dict[str, Callable[[V4, int], str]] = {
    "mapped": lambda v, r: _v6(0xFFFF << 32 | int(v)),
    "translated": lambda v, r: _v6(0xFFFF << 48 | int(v)),
    "nat64": lambda v, r: _v6(0x64FF9B << 96 | int(v)),
    "6to4": lambda v, r: _v6(0x2002 << 112 | int(v) << 80 | r),
    "teredo-server": lambda v, r: _v6(0x20010000 << 96 | int(v) << 64 | r << 32 | int(PUBLIC) ^ 0xFFFFFFFF),
    "teredo-client": lambda v, r: _v6(0x20010000 << 96 | int(PUBLIC) << 64 | r << 32 | int(v) ^ 0xFFFFFFFF),
}  # fmt: skip


@given(v=any_v4, form=st.sampled_from(sorted(EMBEDDINGS)), r=rest)
def test_an_embedded_ipv4_is_refused_exactly_when_it_is(v: V4, form: str, r: int) -> None:
    embedded = EMBEDDINGS[form](v, r)
    assert v in embedded_ipv4(V6(embedded))
    assert refused(DEFAULT, embedded) == refused(DEFAULT, str(v)), (form, embedded, v)


@given(v=any_v4)
def test_ipv4_compatible_is_judged_as_the_ipv4_inside(v: V4) -> None:
    """::a.b.c.d, except :: and ::1, which are IPv6's own (and refused as such)."""
    embedded = _v6(int(v))
    if int(v) > 1:
        assert embedded_ipv4(V6(embedded)) == (v,)
    assert refused(DEFAULT, embedded) == refused(DEFAULT, str(v))


LOCAL = bytes.fromhex("0064ff9b0001")


@given(v=any_v4, length=st.sampled_from(sorted(RFC6052_LAYOUTS)))
def test_local_use_nat64(v: V4, length: int) -> None:
    """Whatever the layout, a denied IPv4 inside is refused by default; with the translator's
    prefix declared, refused exactly when the IPv4 is."""
    embedded = _bytes_at(v, RFC6052_LAYOUTS[length], LOCAL)
    if refused(DEFAULT, str(v)):
        assert refused(DEFAULT, embedded)
    prefix = ipaddress.IPv6Network(f"{embedded}/{length}", strict=False)
    declared = DestinationGuard.from_lists(allow=[str(prefix), "0.0.0.0/0"])
    assert refused(declared, embedded) == refused(DEFAULT, str(v)), (embedded, prefix, v)


# ---------------------------------------------------------------------------------------------
# URL forms


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("http://ocsp.example.com", "http://ocsp.example.com/"),
        ("HTTP://OCSP.Example.COM:80/a", "http://ocsp.example.com:80/a"),
        ("http://h/a b/c", "http://h/a%20b/c"),
        ("http://h/é/ü?x=ÿ y", "http://h/%C3%A9/%C3%BC?x=%C3%BF%20y"),
        (
            "http://h/MEIwQDA%2BMDwwOjAJBgUrDgMCGgUA%3D",
            "http://h/MEIwQDA%2BMDwwOjAJBgUrDgMCGgUA%3D",
        ),
        ("http://h/ME+/=", "http://h/ME+/="),
        ("http://h/100%", "http://h/100%25"),
        ("http://h/%zz%4", "http://h/%25zz%254"),
        ('http://h/<>"{}|\\^`[]', "http://h/%3C%3E%22%7B%7D%7C%5C%5E%60%5B%5D"),
        ("http://h/a#frag ment", "http://h/a"),
        ("http://h/a?", "http://h/a?"),
        ("http://h:/a", "http://h/a"),
        ("http://h:0080/", "http://h:80/"),
        ("http://[::FFFF:169.254.169.254]:8/", "http://[::ffff:a9fe:a9fe]:8/"),
        ("http://h/\udcff", "http://h/%FF"),  # a header's undecodable byte, as it was
        ("https://ocsp.example.com./x", "https://ocsp.example.com/x"),  # one name, one form
        ("http://127.0.0.1./", "http://127.0.0.1/"),  # an IPv4 literal, judged as one
        ("http://under_score.example/", "http://under_score.example/"),
    ],
)
def test_what_is_sent(url: str, sent: str) -> None:
    assert safe_url(url) == sent
    assert safe_url(sent) == sent  # idempotent: sending what was sent changes nothing


def test_a_long_get_url_passes() -> None:
    url = "http://ocsp.example.com/" + "a" * 2000 + "/" + "%2B" * 85
    assert safe_url(url) == url
    with pytest.raises(DestinationRefused, match="longer than 8192"):
        safe_url("http://h/" + "a" * 8200)


CONTROLS = ["\x00", "\r", "\n", "\t", "\x7f", "\x01", "\x1b", "\x1f"]


@pytest.mark.parametrize("char", CONTROLS, ids=[f"{ord(c):#04x}" for c in CONTROLS])
@pytest.mark.parametrize(
    "where", ["http://ex{c}ample.com/", "http://h/p{c}ath", "http://h/?q{c}=1", "http://h/#f{c}"]
)
def test_control_characters_are_refused_anywhere(char: str, where: str) -> None:
    with pytest.raises(DestinationRefused, match="control characters") as info:
        safe_url(where.format(c=char))
    assert info.value.retryable is False
    assert char not in info.value.message  # shown escaped: nothing raw reaches Events or logs


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://h/", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("//h/x", "scheme 'none'"),
        (" http://h/", "scheme 'none'"),
        ("http:/h", "no host"),
        ("http:///x", "no host"),
        ("http://:80/", "no host"),
        ("http://u:p@h/", "credentials"),
        ("http://h@127.0.0.1/", "credentials"),
        ("http://a b/", "characters a host name cannot have"),
        ("http://é.example/", "characters a host name cannot have"),
        ("http://h%41/", "characters a host name cannot have"),
        ("http://h\\@127.0.0.1/", "credentials"),
        ("http://h\\x/", "characters a host name cannot have"),
        ("http://a..b/", "not a valid host name"),
        ("http://" + "a" * 64 + ".b/", "not a valid host name"),
        ("http://127.1/", "non-canonical IPv4"),
        ("http://2130706433/", "non-canonical IPv4"),
        ("http://0x7f.0.0.1/", "non-canonical IPv4"),
        ("http://0177.0.0.1/", "non-canonical IPv4"),
        ("http://[::1/", "malformed IPv6"),
        ("http://[::1]x/", "malformed IPv6"),
        ("http://[zz]/", "invalid IPv6"),
        ("http://[v1.x]/", "invalid IPv6"),
        ("http://[fe80::1%25eth0]/", "IPv6 zone"),
        ("http://h:99999/", "invalid port"),
        ("http://h:0/", "invalid port"),
        ("http://h:-1/", "invalid port"),
        ("http://h:8a/", "invalid port"),
        ("http://h:1:2/", "invalid port"),
        ("http://h/\ud800", "no UTF-8 encoding"),
    ],
)
def test_refused_forms(url: str, why: str) -> None:
    with pytest.raises(DestinationRefused, match=why) as info:
        safe_url(url)
    assert info.value.retryable is False


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("/b c", "http://h:8/b%20c"),
        ("d é", "http://h:8/a/d%20%C3%A9"),
        ("../x", "http://h:8/x"),
        ("?q=1 2", "http://h:8/a/c?q=1%202"),
        ("//other.example/x", "http://other.example/x"),
        ("https://other.example/x", "https://other.example/x"),
    ],
)
def test_redirect_targets(location: str, target: str) -> None:
    assert redirect_target("http://h:8/a/c", location) == target


@pytest.mark.parametrize("location", ["/a\r\nSet-Cookie: x", "/a\tb", "/\x00", "\n/x", "/x\x7f"])
def test_redirect_locations_with_control_characters_are_refused(location: str) -> None:
    """Before joining: urljoin would silently drop tabs and line breaks."""
    with pytest.raises(DestinationRefused, match="Location has control characters"):
        redirect_target("http://h/", location)


def test_check_url_judges_literal_hosts() -> None:
    with pytest.raises(DestinationRefused, match="169.254.0.0/16"):
        DEFAULT.check_url("http://[64:ff9b::a9fe:a9fe]/")
    with pytest.raises(DestinationRefused, match="127.0.0.0/8"):
        DEFAULT.check_url("http://127.0.0.1:8080/")
    assert DEFAULT.check_url("http://ca.example/a b") == "http://ca.example/a%20b"  # by resolver


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/",
        "http://LOCALHOST.:80/",
        "http://admin.localhost/",
        "http://a.localhost./",
    ],
)
def test_localhost_names_are_loopback_without_resolving(url: str) -> None:
    """RFC 6761: judged as loopback by name, so that a proxy (which resolves for us) or a
    resolver that fails here cannot turn them into a way in; loopback allowed opens them."""
    with pytest.raises(DestinationRefused, match="127.0.0.0/8"):
        DEFAULT.check_url(url)
    opened = DestinationGuard.from_lists(allow=["127.0.0.0/8", "::1/128"])
    assert opened.check_url(url).startswith("http://")


def test_a_trailing_dot_is_the_same_name() -> None:
    assert DEFAULT.check_url("http://CA.Example./x") == "http://ca.example/x"
    assert NARROW_ALLOW.check_url("http://[::1]:9/") == "http://[::1]:9/"
