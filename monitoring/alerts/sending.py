"""Sending one message through Apprise, on a sender thread: the text of a group of alerts, the kind Apprise
shows it as, and reasons for failures that never carry the channel URL's credentials."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, unquote, urlsplit

import apprise

from ..models import AlertKind, Channel, Notification
from . import messages

logger = logging.getLogger("vxlanmgr.alerts")

# One Apprise call may take this long (connect, read, retries); it also sizes a delivery claim's lease.
SEND_TIMEOUT = 30.0

_FAILURE = {AlertKind.UNREACHABLE, AlertKind.MONITOR_DOWN, AlertKind.FLAPPING, AlertKind.STILL_UNREACHABLE}
_SUCCESS = {AlertKind.RECOVERED, AlertKind.MONITOR_BACK, AlertKind.STABLE}


def notify_type(alerts: list[Notification]) -> str:
    kinds = {alert.kind for alert in alerts}
    if kinds & _FAILURE:
        return apprise.NotifyType.FAILURE
    if AlertKind.MAC_CHANGED in kinds:
        return apprise.NotifyType.WARNING
    if kinds <= _SUCCESS:
        return apprise.NotifyType.SUCCESS
    return apprise.NotifyType.INFO


def send(url: str, title: str, body: str, kind: str = apprise.NotifyType.INFO,
         timeout: float = SEND_TIMEOUT) -> tuple[bool, str]:
    """Send one message to one Apprise URL: (delivered, why not). The reason never contains the URL's
    credentials."""
    app = apprise.Apprise()
    if not app.add(url):
        return False, "the Apprise URL is not valid, or its service is not available here"
    try:
        # Plain text: Apprise escapes or converts it for services that want HTML or Markdown.
        with app.notify(body=body, title=title, notify_type=kind, body_format=apprise.NotifyFormat.TEXT,
                        timeout=timeout) as result:
            if result:
                return True, ""
            reasons = [entry.message for entry in result.logs() if entry.level in {"WARNING", "ERROR", "CRITICAL"}]
            reason = "; ".join(dict.fromkeys(reasons)) or f"Apprise reported {result.status.name.lower()}"
            if result.status == apprise.AppriseResultStatus.TIMEOUT:
                reason = f"no answer within {timeout:g} s; {reason}"
    except Exception as exc:
        # A plugin's bug must not stop the worker; its text may hold the URL.
        reason = f"Apprise failed: {type(exc).__name__}"
    return False, redact(reason, url)


def deliver(channel: Channel, alerts: list[Notification], timeout: float,
            vtep_hosts: dict[str, int] | None = None) -> tuple[bool, str]:
    try:
        message = messages.render(channel, alerts, vtep_hosts)
    except Exception as exc:  # a bug in the text must back off and end as failed like any other failure
        logger.exception("alert channel %r (#%d): could not write the message", channel.name, channel.pk)
        return False, f"could not write the message: {type(exc).__name__}: {exc}"
    return send(channel.url, message.title, message.body, notify_type(alerts), timeout)


def redact(text: str, url: str) -> str:
    """Remove from `text` whatever in `url` could be a credential: user, password, and the tokens many
    services carry in the host, path or query (slack://TokenA/TokenB/TokenC)."""
    try:
        parts = urlsplit(url)
        username, password, host = parts.username, parts.password, parts.hostname or ""
    except ValueError:
        return text.replace(url, "***")
    secrets = {url, unquote(parts.netloc.rpartition("@")[0])}
    secrets |= {value for value in (username, password) if value and len(value) >= 4}
    # Short pieces and names (a host name with dots, an e-mail address) are no secrets, and replacing them
    # would garble the reason.
    pieces = [host, *(unquote(segment) for segment in parts.path.split("/"))]
    pieces += [value for _key, value in parse_qsl(parts.query)]
    secrets |= {
        piece for piece in pieces if len(piece) >= 6 and not {".", "@", ":"} & set(piece) and piece != "localhost"
    }
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def warm_up() -> None:
    """Apprise finds its services on first use (about a second): at start-up, not on the first alert's time."""
    apprise.Apprise.instantiate("json://localhost")
