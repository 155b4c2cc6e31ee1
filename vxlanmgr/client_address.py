"""The caller's address, set once per request as ``request.client_ip`` for every view below the project."""

import ipaddress
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponseBadRequest

from machines.http import json_error

logger = logging.getLogger("vxlanmgr.http")


class UnknownClient(Exception):
    """A trusted proxy sent no usable X-Forwarded-For: the client cannot be told apart from the proxy."""


def client_ip(request: HttpRequest) -> str:
    """The caller's address; X-Forwarded-For is believed only when it comes through a trusted proxy.

    Behind a trusted proxy the client is the right-most X-Forwarded-For entry that is not a trusted proxy
    itself. A missing or unparsable header raises UnknownClient instead of falling back to the proxy's own
    address, which every client would then share (one rate-limit bucket, one address a register token may use).
    """
    remote = _parse(request.META.get("REMOTE_ADDR", ""))
    # No peer address means a Unix socket: only a local proxy can be on the other end.
    behind_proxy = remote is None or _trusted(remote)
    if not settings.TRUSTED_PROXIES or not behind_proxy:
        return str(remote) if remote else ""
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    if not any(hops):
        raise UnknownClient("no X-Forwarded-For")
    for hop in reversed(hops):
        address = _parse(_without_port(hop))
        if address is None:
            raise UnknownClient(f"unparsable X-Forwarded-For entry {hop[:60]!r}")
        if not _trusted(address):
            return str(address)
    raise UnknownClient("every X-Forwarded-For entry is a trusted proxy")


def _without_port(hop: str) -> str:
    """``[2001:db8::1]:4711``, ``[2001:db8::1]``, ``192.0.2.1:4711`` -> the address alone."""
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def _parse(value: str):
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _trusted(address) -> bool:
    return any(address in network for network in settings.TRUSTED_PROXIES)


class ClientAddress:
    """Sets ``request.client_ip``, so apps read the address without knowing about proxies."""

    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        try:
            request.client_ip = client_ip(request)
        except UnknownClient as exc:
            logger.warning("refused a request from a trusted proxy: %s", exc)
            message = "The proxy did not say which client this request comes from (X-Forwarded-For)."
            if request.path.startswith("/api/"):
                return json_error(400, message)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def lockout_address(request: HttpRequest) -> str:
    """The address failed sign-ins count against: the client's, with an IPv6 /64 as one address (a host there
    can take any of its 2^64 addresses)."""
    address = _parse(getattr(request, "client_ip", ""))
    if address is None:
        return ""
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False).network_address)
    return str(address)
