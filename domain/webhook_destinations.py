"""Where a webhook may be sent: only to public addresses, unless the operator allows private ones
(`KACCY_WEBHOOK_ALLOW_PRIVATE=true`, for receivers on the same host or network).

A webhook URL is chosen by whoever holds an admin key; without this rule it could aim the
service's POSTs at what only the service can reach (the node's RPC port, a cloud metadata
endpoint at 169.254.169.254, a database on the private network). The rule is checked on every
address the URL's host resolves to, when the webhook is registered and again before each
connection (DNS answers can change between the two).
"""
from __future__ import annotations

import ipaddress
from typing import Iterable
from urllib.parse import urlsplit

from kaccy_bitcoin.domain.errors import InvalidWebhookUrl

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.ip_network("100.64.0.0/10")              # RFC 6598, carrier-grade NAT
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))   # RFC 6052, 8215
# IANA's special-purpose blocks that are not globally reachable, named here so the rule does not
# depend on the Python version's `is_global` table.
_SPECIAL = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4",
    "240.0.0.0/4", "::/127", "100::/64", "2001::/23", "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7",
    "fe80::/10", "fec0::/10", "ff00::/8"))


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
    (::a.b.c.d), 6to4 (2002::/16), NAT64 (64:ff9b::/96 and the local-use /48)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _NAT64) or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: str | _IP) -> str | None:
    """Why a webhook may not be sent to `address`, or None when it is a public address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if inner is not None:   # the packets reach the IPv4 address: it decides
            why = refusal(inner)
            return None if why is None else f"{why} (as {ip})"
    checks = (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
              ("multicast", ip.is_multicast), ("shared (carrier-grade NAT)", ip in _SHARED),
              ("private", ip.is_private),
              ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
              ("reserved", ip.is_reserved), ("special-purpose", any(ip in net for net in _SPECIAL)),
              ("not globally routable", not ip.is_global))
    for name, applies in checks:
        if applies:
            return f"{ip.compressed} is {'an' if name[0] in 'aeiou' else 'a'} {name} address"
    return None


def webhook_host(url: str) -> str:
    """The host a webhook URL names (an IPv6 literal without its brackets), lowercase."""
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        raise InvalidWebhookUrl(f"url {url!r} cannot be parsed: {exc}") from None
    if not host:
        raise InvalidWebhookUrl(f"url {url!r} names no host")
    return host


def literal_address(host: str) -> _IP | None:
    """The host as an IP address when it is written as one, else None (a name to resolve)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def check_destination(url: str, addresses: Iterable[str], allow_private: bool) -> None:
    """Refuse the URL (InvalidWebhookUrl) if any address its host resolves to is not public."""
    if allow_private:
        return
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise InvalidWebhookUrl(
                f"webhook url {url!r} resolves to {why}; webhooks go to public addresses only "
                f"(set KACCY_WEBHOOK_ALLOW_PRIVATE=true to allow private, loopback and link-local ones)")
