"""Real receivers for alerts, on 127.0.0.1 only: an HTTP server that records what it gets (a webhook, Apprise's
json://), and an SMTP server (aiosmtpd) that records the mail it is sent."""

import email
import email.policy
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .net import free_port, wait_for


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    # time.monotonic() when the request arrived, before any delay.
    received_at: float

    def json(self):
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    # stop() must not wait for a slow request still sleeping.
    daemon_threads = True


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self):
        receiver: HttpReceiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        receiver._record(Request(self.command, self.path, dict(self.headers), body, time.monotonic()))
        if receiver.delay:
            time.sleep(receiver.delay)
        payload = b"{}"
        try:
            self.send_response(receiver.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The sender gave up waiting (a slow receiver) or was killed.
            pass

    do_PUT = do_POST

    def log_message(self, format, *args):
        pass


class HttpReceiver:
    """Records every request; `delay` seconds before each answer makes it a slow receiver. stop() and start()
    again keep the port, like a webhook receiver that goes down and comes back."""

    def __init__(self, delay: float = 0.0, status: int = 200, port: int | None = None):
        self.delay = delay
        self.status = status
        self.port = port or free_port()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/hook", scheme: str = "json", query: str = "") -> str:
        """The Apprise URL of this receiver."""
        return f"{scheme}://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def start(self) -> "HttpReceiver":
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"receiver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def received(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path.split("?")[0] == path]

    def messages(self, path: str | None = None) -> list[dict]:
        """The JSON bodies received (Apprise's json:// sends title, message and type)."""
        return [request.json() for request in self.received(path)]

    def wait_for(self, count: int, timeout: float, path: str | None = None) -> list[Request]:
        wait_for(lambda: len(self.received(path)) >= count, timeout, interval=0.05,
                 message=f"{count} requests at {self.url(path or '')}")
        return self.received(path)

    def __enter__(self) -> "HttpReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    body: str
    received_at: float = field(default_factory=time.monotonic)


class _SmtpHandler:
    def __init__(self, receiver: "SmtpReceiver"):
        self.receiver = receiver

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        part = message.get_body(preferencelist=("plain", "html"))
        body = part.get_content().replace("\r\n", "\n") if part is not None else ""
        with self.receiver._lock:
            self.receiver.mails.append(
                Mail(envelope.mail_from, list(envelope.rcpt_tos), str(message["Subject"] or ""), body)
            )
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, plain and without authentication."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.mails: list[Mail] = []
        self._lock = threading.Lock()
        self._controller = None

    def url(self, to: str = "ops@example.com", sender: str = "vxlanmgr@example.com") -> str:
        # mailto:// (not mailtos://) is Apprise's insecure mode: no TLS; no user, so no login.
        return f"mailto://127.0.0.1:{self.port}?from={sender}&to={to}"

    def start(self) -> "SmtpReceiver":
        from aiosmtpd.controller import Controller

        self._controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def received(self) -> list[Mail]:
        with self._lock:
            return list(self.mails)

    def wait_for(self, count: int, timeout: float) -> list[Mail]:
        wait_for(lambda: len(self.received()) >= count, timeout, interval=0.05,
                 message=f"{count} mails at 127.0.0.1:{self.port}")
        return self.received()

    def __enter__(self) -> "SmtpReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
