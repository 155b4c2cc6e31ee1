"""A request body over the limit is refused with 413 while it arrives, before anything buffers it.

Daphne collects a whole body (in a temporary file past 100 KB) and then queues all of it for the application
at once, so a limit checked by Django, or by any ASGI middleware, comes after the memory is spent: one 1 GiB
upload took the server from 85 MB to over 1 GB. The check therefore sits in Daphne's request object, where
the headers arrive (a declared Content-Length over the limit) and where each chunk arrives (a chunked body
that grows past it). `install()` puts it there; `manage.py serve` calls it.
"""

import json

from daphne import http_protocol, server
from django.conf import settings

# After refusing, keep reading (and dropping) what the client still sends for a moment, so it reads our answer
# instead of a connection reset; then close.
LINGER_SECONDS = 2.0


def _response(content_type: bytes) -> bytes:
    if content_type.startswith(b"application/json"):
        body = json.dumps({"error": f"The body is larger than {settings.MAX_REQUEST_BODY} bytes."}).encode()
        kind = b"application/json"
    else:
        body = f"Request body larger than {settings.MAX_REQUEST_BODY} bytes.\n".encode()
        kind = b"text/plain; charset=utf-8"
    return (
        b"HTTP/1.1 413 Content Too Large\r\nContent-Type: " + kind + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


class LimitedRequest(http_protocol.WebRequest):
    refused = False
    received = 0

    def gotLength(self, length):
        if length is not None and length > settings.MAX_REQUEST_BODY:
            self._refuse()
        super().gotLength(None if self.refused else length)

    def handleContentChunk(self, data):
        if self.refused:
            return
        self.received += len(data)
        if self.received > settings.MAX_REQUEST_BODY:
            self._refuse()
            return
        super().handleContentChunk(data)

    def process(self):
        if not self.refused:
            return super().process()
        return None

    def _refuse(self) -> None:
        self.refused = True
        transport = self.channel.transport
        transport.write(_response((self.requestHeaders.getRawHeaders(b"content-type") or [b""])[0].lower()))
        if hasattr(transport, "loseWriteConnection"):
            transport.loseWriteConnection()
        from twisted.internet import reactor

        reactor.callLater(LINGER_SECONDS, transport.abortConnection)


class LimitedHTTPFactory(http_protocol.HTTPFactory):
    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = LimitedRequest
        return protocol


def install() -> None:
    """Make Daphne's server build its HTTP connections with the limited request."""
    server.HTTPFactory = LimitedHTTPFactory
