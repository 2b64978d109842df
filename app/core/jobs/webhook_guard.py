"""Where webhooks may go: never to loopback, private, link-local or other non-public
addresses unless the operator allows them (TRAJX_WEBHOOK_ALLOW_PRIVATE), never with
credentials in the URL.

Checked twice: on the URL when a job is created (IP literals, integer-encoded ones
included, since URL parsing normalises `http://2130706433/` to 127.0.0.1), and on
the resolved address at delivery, where `PinnedTransport` connects to exactly the
address it checked, so a DNS answer that changes in between (rebinding) cannot
redirect the request. No HTTP-layer imports: the worker delivers with it.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOCAL_NAMES = ("localhost", "localhost.", "localhost.localdomain")


class DestinationRefused(Exception):
    """A webhook URL or its resolved address is not an allowed destination."""


def address_fault(address: IPAddress) -> str | None:
    """Why `address` is no public unicast destination, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_multicast:
        return "a multicast address"
    if not address.is_global:  # loopback, private, link-local, unspecified, shared, reserved...
        return "not a public address (loopback, private, link-local or reserved)"
    return None


def url_fault(url: str, allow_private: bool) -> str | None:
    """Why `url` (already normalised by URL parsing) may not receive webhooks, or None."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return "the URL carries credentials; put a secret in the path or verify the signature instead"
    host = (parts.hostname or "").rstrip(".")
    if allow_private:
        return None
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return f"{host} is a loopback name"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: its addresses are checked at delivery
    fault = address_fault(address)
    return f"{host} is {fault}" if fault else None


def resolve_allowed(host: str, port: int, allow_private: bool) -> str:
    """One address of `host` to connect to; DestinationRefused if any address is not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DestinationRefused(f"{host} does not resolve") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise DestinationRefused(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            if address_fault(address):
                raise DestinationRefused(f"{host} resolves to a non-public address")
    return str(addresses[0])


class PinnedTransport(httpx.BaseTransport):
    """Resolves each request's host once, checks the address and connects to that very one.

    The Host header and TLS server name stay the original host, so virtual hosts and
    certificate checks work as without pinning.
    """

    def __init__(self, allow_private: bool, inner: httpx.BaseTransport | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        address = resolve_allowed(host, request.url.port or (443 if request.url.scheme == "https" else 80),
                                  self.allow_private)
        if request.url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        request.url = request.url.copy_with(host=address)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()
