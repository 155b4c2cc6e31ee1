"""The dashboard's live channel: each open page gets changed rows rendered in its own language."""

import asyncio
import json
import logging
import time

from channels.db import aclose_old_connections, database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import translation
from django_guid import set_guid
from django_guid.utils import generate_guid

from machines import queries

from . import broadcast, sessions
from .fragments import MAX_VISIBLE, View, render_for

logger = logging.getLogger("vxlanmgr.live")
# The page's script takes this code as "signed out" and goes to the login page instead of reconnecting.
CLOSE_SIGNED_OUT = 4401
CLOSE_FORBIDDEN = 4403


def _language(scope) -> str:
    cookies = scope.get("cookies", {})
    chosen = cookies.get(settings.LANGUAGE_COOKIE_NAME)
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
    """One open dashboard. It lives only as long as the sign-in it was opened with: logging out closes it at
    once (sessions.ended), and before each push and every minute it checks the session still holds (expiry,
    a password change, an administrator deleting the session)."""

    groups = [broadcast.GROUP]
    signed_out = False

    async def connect(self):
        # Every line written for this connection, now or at any later event, carries its request id: the one
        # vxlanmgr.request_id chose for the handshake, or a new one when the consumer runs without it.
        set_guid(self.scope.get("request_id") or generate_guid())
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None or not session.session_key:
            await self.close(code=CLOSE_SIGNED_OUT)
            return
        if not await database_sync_to_async(user.has_perm)("machines.view_machine"):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.language = _language(self.scope)
        self.can_delete = await database_sync_to_async(user.has_perm)("machines.delete_machine")
        self.view = View(can_delete=self.can_delete)
        self.session_key = session.session_key
        self.checked_at = time.monotonic()
        own = [sessions.session_group(self.session_key), sessions.user_group(user.pk)]
        for group in own:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups = [*self.groups, *own]
        self.watch = asyncio.create_task(self._watch_session())
        await self.accept()
        logger.debug("dashboard socket opened for user %s", user.pk, extra={"user_id": user.pk})

    async def disconnect(self, code):
        watch = getattr(self, "watch", None)
        if watch:
            watch.cancel()
        logger.debug("dashboard socket closed (code %s)", code)

    async def receive(self, text_data=None, bytes_data=None):
        # The page says which machines it shows, so pushes never target rows it does not have.
        try:
            data = json.loads(text_data or "{}")
            visible = [int(part) for part in str(data.get("visible", "")).split(",") if part.strip().isdigit()]
            page = str(data.get("page", "1"))
            self.view = View(
                visible=frozenset(visible[:MAX_VISIBLE]),
                status=str(data.get("status", ""))[:16],
                vni=queries.parse_vni(str(data.get("vni", ""))),
                # The VNIs its per-VNI line shows, so a push updates those in place (fragments.render_push).
                vnis=frozenset(queries.parse_vni(part) for part in str(data.get("vnis", "")).split(",")[:100]) - {""},
                q=str(data.get("q", ""))[:100],
                page=int(page) if page.isdigit() and int(page) > 0 else 1,
                can_delete=self.can_delete,
            )
        except (ValueError, AttributeError):
            logger.debug("ignored a malformed message from a dashboard socket")

    async def machines_changed(self, event):
        if self.signed_out:
            return
        await aclose_old_connections()
        if time.monotonic() - self.checked_at > sessions.RECHECK_SECONDS and not await self._signed_in():
            return
        html = await database_sync_to_async(render_for)(event, self.view, self.language)
        if html:
            await self.send(text_data=html)

    async def sessions_ended(self, event):
        await self._sign_out()

    async def sessions_check(self, event):
        await aclose_old_connections()
        await self._signed_in()

    async def _signed_in(self) -> bool:
        self.checked_at = time.monotonic()
        user = self.scope["user"]
        if await database_sync_to_async(sessions.still_signed_in)(self.session_key, user.pk):
            return True
        await self._sign_out()
        return False

    async def _sign_out(self) -> None:
        # Until the client's close handshake ends the consumer, group messages still arrive: none may pass.
        logger.debug("dashboard socket closed: its sign-in ended")
        self.signed_out = True
        for group in self.groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.close(code=CLOSE_SIGNED_OUT)

    async def _watch_session(self) -> None:
        while True:
            await asyncio.sleep(sessions.WATCH_SECONDS)
            await aclose_old_connections()
            if not await self._signed_in():
                return
