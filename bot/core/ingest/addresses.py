"""Where a link may lead: only public addresses, checked when DNS answers and again on the address
actually connected to (so a name that re-resolves to 127.0.0.1 cannot slip through)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(Exception):
    """The host resolves to an address links may not reach (not an OSError: aiohttp must not retry it)."""

    def __init__(self, host: str, address: str):
        super().__init__(host, address)
        self.host, self.address = host, address


def is_public_address(address: IpAddress) -> bool:
    """Whether a link may lead there: a global unicast address, also for IPv4 wrapped in IPv6."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is not None and not is_public_address(embedded):
            return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


class CheckedResolver(AbstractResolver):
    """DNS through the system resolver, refusing a host when any of its addresses is not allowed."""

    def __init__(self, allowed: Callable[[IpAddress], bool]):
        self.inner = aiohttp.ThreadedResolver()
        self.allowed = allowed

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        results = await self.inner.resolve(host, port, family)
        for result in results:
            if not self.allowed(ipaddress.ip_address(result["host"])):
                raise RefusedAddress(host, result["host"])
        return results

    async def close(self) -> None:
        await self.inner.close()


class CheckedConnector(aiohttp.TCPConnector):
    """Connections through CheckedResolver, and the address actually connected to checked once more
    before anything is sent (whatever path the connection took to it)."""

    def __init__(self, allowed: Callable[[IpAddress], bool], **kwargs: Any):
        super().__init__(resolver=CheckedResolver(allowed), **kwargs)
        self.allowed = allowed

    async def connect(self, req, traces, timeout):
        connection = await super().connect(req, traces, timeout)
        transport = connection.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if peer and not self.allowed(ipaddress.ip_address(peer[0].split("%")[0])):
            connection.close()
            raise RefusedAddress(req.host, peer[0])
        return connection
