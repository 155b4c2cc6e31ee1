"""Small HTTP helpers shared by the API and the dashboard: client address, JSON errors, rate limits."""

import ipaddress
import logging
import math

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django_ratelimit.core import get_usage

logger = logging.getLogger("vxlanmgr.http")


def client_ip(request: HttpRequest) -> str:
    """The caller's address; X-Forwarded-For is believed only when it comes through a trusted proxy."""
    remote = _parse(request.META.get("REMOTE_ADDR", ""))
    # No peer address means a Unix socket: only a local proxy can be on the other end.
    behind_proxy = remote is None or _trusted(remote)
    if not settings.TRUSTED_PROXIES or not behind_proxy:
        return str(remote) if remote else ""
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    # Walk from the nearest hop back, skipping our own proxies; the first untrusted hop is the client.
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            break
        if not _trusted(address):
            return str(address)
    return str(remote) if remote else ""


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


def json_error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def json_field_errors(errors: dict[str, list[str]], status: int = 400) -> JsonResponse:
    return JsonResponse({"errors": errors}, status=status)


def rate_limited(request: HttpRequest, group: str, rate: str, key: str) -> int | None:
    """Count this request against `rate`; return seconds to wait when over it, else None."""
    if not settings.RATELIMIT_ENABLE:
        return None
    try:
        usage = get_usage(request, group=group, key=lambda _group, _request: key, rate=rate, increment=True)
    except Exception:
        # A cache outage must not stop hosts from registering: fail open and say so once per request.
        logger.warning("rate limit cache unavailable; %s not limited", group, exc_info=True)
        return None
    if usage and usage["should_limit"]:
        return max(1, math.ceil(usage["time_left"]))
    return None
