"""The client's address behind a reverse proxy, believed only from FORWARDED_ALLOW_IPS.

gunicorn reads ``X-Forwarded-Proto`` from trusted peers but leaves ``REMOTE_ADDR`` as the proxy's
own address, so behind nginx every rejected callback and denied key would be logged as
127.0.0.1. From a trusted peer, the last ``X-Forwarded-For`` entry (the one that peer added) is
the client; from anyone else the header is ignored, so a client cannot claim another address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_BY = "delegation_vault.forwarded_by"  # the WSGI environ key: the peer that told us
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def trusted_networks(value: str) -> list[Network] | None:
    """FORWARDED_ALLOW_IPS as gunicorn spells it: addresses or networks, comma separated; None for '*'."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if "*" in entries:
        return None
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue  # a host name: gunicorn ignores it too
    return networks


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None


class ForwardedFor:
    """WSGI middleware: ``REMOTE_ADDR`` becomes the forwarded client address from a trusted peer."""

    def __init__(self, app: WsgiApp, allowed: str) -> None:
        self.app = app
        self.networks = trusted_networks(allowed)

    def trusted(self, peer: str | None) -> bool:
        address = _address(peer)
        if address is None:
            return False
        return self.networks is None or any(address in net for net in self.networks)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded and self.trusted(environ.get("REMOTE_ADDR")):
            client = _address(forwarded.rsplit(",", 1)[-1])
            if client is not None:
                # Any process that can connect from a trusted address may say this: the peer
                # is kept beside it, so the status page shows who vouched for the address.
                environ[FORWARDED_BY] = environ.get("REMOTE_ADDR")
                environ["REMOTE_ADDR"] = str(client)
        return self.app(environ, start_response)
