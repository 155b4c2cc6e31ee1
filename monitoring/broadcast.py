"""Telling open dashboards that machines changed, through the channel layer.

Events carry ids only: each dashboard socket renders the rows itself, in its operator's language.
A broadcast never fails its caller: a registration or a check is worth more than a live update,
and dashboards re-sync when they reconnect.
"""

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

logger = logging.getLogger("vxlanmgr.broadcast")
GROUP = "dashboard"
SEND_TIMEOUT = 2.0
_layer_down = False


def event(changed=(), deleted=(), created: bool = False, announce: dict | None = None) -> dict:
    return {
        "type": "machines.changed",
        "changed": sorted(set(changed)),
        "deleted": sorted(set(deleted)),
        "created": created,
        # machine id -> new status, for the screen-reader announcement
        "announce": {str(key): value for key, value in (announce or {}).items()},
    }


async def push(message: dict) -> bool:
    global _layer_down
    try:
        await asyncio.wait_for(get_channel_layer().group_send(GROUP, message), SEND_TIMEOUT)
    except Exception as exc:  # Redis down, timeout, anything: keep working, say so once
        if not _layer_down:
            logger.warning("live updates paused, channel layer unavailable: %s: %s", type(exc).__name__, exc)
        _layer_down = True
        return False
    if _layer_down:
        logger.info("live updates resumed, channel layer reachable again")
    _layer_down = False
    return True


def push_after_commit(message: dict) -> None:
    """From synchronous web code: send once the change is committed and visible to the sockets."""
    transaction.on_commit(lambda: async_to_sync(push)(message))
