"""Every HTTP request and WebSocket connection has a request id, so that its log lines, its JSON errors, its
response and the proxy's access log can be matched up.

django-guid keeps the id in a contextvar, which ASGI, Channels and asgiref's thread hops carry along, and
writes the X-Request-ID response header. The id comes from the request's own X-Request-ID only when the peer
is a trusted proxy (VXLANMGR_TRUSTED_PROXIES, believed exactly as for X-Forwarded-For) and the value is sane;
otherwise a new one is made: a client must not be able to pick the id its lines are filed under.
"""

import logging
import re
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.encoding import escape_uri_path
from django_guid import get_guid
from django_guid.middleware import guid_middleware
from django_guid.utils import generate_guid

from .client_address import _parse, _trusted

HEADER = "X-Request-ID"
MAX_LENGTH = 64
# What survives a header, a log line, a JSON string and a shell's grep unquoted: nginx's $request_id (32 hex
# digits), UUIDs, and the base64 and dotted ids of other proxies and tracers.
_SANE = re.compile(rf"[A-Za-z0-9._:+/=-]{{1,{MAX_LENGTH}}}")
_META = "HTTP_X_REQUEST_ID"

logger = logging.getLogger("vxlanmgr.http")


def from_trusted_proxy(peer: str) -> bool:
    """Whether the TCP peer is one of VXLANMGR_TRUSTED_PROXIES; no peer address means a Unix socket, which only
    a local proxy can be on the other end of (as vxlanmgr.client_address decides)."""
    if not settings.TRUSTED_PROXIES:
        return False
    address = _parse(peer)
    return address is None or _trusted(address)


def believed(peer: str, offered: str | None) -> str | None:
    """The request id a request came with, when it may be used; else None."""
    if offered is None or not from_trusted_proxy(peer) or not _SANE.fullmatch(offered):
        return None
    return offered


class RequestId:
    """django-guid's middleware (the id, its contextvar, the response header), behind a check that drops an
    X-Request-ID that is not to be believed, so django-guid makes a new id instead.

    First in MIDDLEWARE: the answers of every middleware below (a refused proxy request, a lockout) carry the
    id too. The id is left set after the response, because Django logs 4xx and 5xx answers after the
    middleware has returned; every request runs in a context of its own, so it cannot leak into the next.
    """

    async_capable = False

    def __init__(self, get_response):
        self.get_response = guid_middleware(get_response)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.META.get(_META)
        if offered is not None and believed(request.META.get("REMOTE_ADDR", ""), offered) is None:
            del request.META[_META]
            logger.debug("made a new request id: X-Request-ID %.80r is not from a trusted proxy or not sane", offered)
        started = time.monotonic()
        response = self.get_response(request)
        if logger.isEnabledFor(logging.DEBUG):
            elapsed = (time.monotonic() - started) * 1000
            path = escape_uri_path(request.path)
            logger.debug(
                "%s %s -> %d in %.1f ms", request.method, path, response.status_code, elapsed,
                extra={"method": request.method, "path": path, "status": response.status_code,
                       "duration_ms": round(elapsed, 1)},
            )
        return response


class WebSocketRequestId:
    """ASGI middleware for the WebSocket stack: the connection's id, by the same rules, as ``scope["request_id"]``
    for the consumer to bind. (Daphne sends no headers with its answer to the handshake, so the id cannot go
    back to the client there.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        offered = dict(scope.get("headers") or []).get(HEADER.lower().encode())
        client = scope.get("client")
        request_id = (
            believed(client[0] if client else "", offered.decode("latin-1") if offered is not None else None)
            or generate_guid()
        )
        return await self.app({**scope, "request_id": request_id}, receive, send)


class LogFilter:
    """Puts the request id being handled on every log record as ``request_id``, and ``missing`` where there is
    none (start-up, the monitor)."""

    def __init__(self, missing: str | None = None):
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = get_guid() or self.missing
        return True
