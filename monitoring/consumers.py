"""The dashboard's live channel: each open page gets changed rows rendered in its own language."""

import json
import logging

from channels.db import aclose_old_connections, database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import translation

from . import broadcast
from .push import MAX_VISIBLE, View, render_for

logger = logging.getLogger("vxlanmgr.live")


def _language(scope) -> str:
    cookies = scope.get("cookies", {})
    session = scope.get("session")
    chosen = cookies.get(settings.LANGUAGE_COOKIE_NAME) or (session.get("_language") if session else None)
    if not chosen:
        headers = dict(scope.get("headers", []))
        accept = headers.get(b"accept-language", b"").decode("latin-1")
        for code, _quality in translation.trans_real.parse_accept_lang_header(accept):
            if code != "*":
                chosen = code
                break
    try:
        return translation.get_supported_language_variant(chosen or settings.LANGUAGE_CODE)
    except LookupError:
        return settings.LANGUAGE_CODE


class DashboardConsumer(AsyncWebsocketConsumer):
    groups = [broadcast.GROUP]

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        self.language = _language(self.scope)
        self.view = View()
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        # The page says which machines it shows, so pushes never target rows it does not have.
        try:
            data = json.loads(text_data or "{}")
            visible = [int(part) for part in str(data.get("visible", "")).split(",") if part.strip().isdigit()]
            page = str(data.get("page", "1"))
            self.view = View(
                visible=frozenset(visible[:MAX_VISIBLE]),
                status=str(data.get("status", ""))[:16],
                q=str(data.get("q", ""))[:100],
                page=int(page) if page.isdigit() and int(page) > 0 else 1,
            )
        except (ValueError, AttributeError):
            logger.debug("ignored a malformed message from a dashboard socket")

    async def machines_changed(self, event):
        await aclose_old_connections()
        html = await database_sync_to_async(render_for)(event, self.view, self.language)
        if html:
            await self.send(text_data=html)
