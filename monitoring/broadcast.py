"""Telling open dashboards that machines changed, through the channel layer.

Events carry ids only: each dashboard socket renders the rows itself, in its operator's language.
A broadcast never fails its caller: a registration or a check is worth more than a live update,
and dashboards re-sync when they reconnect.
"""

import asyncio
import logging
import threading
import time
import uuid

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
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
        # Unique per event, so dashboards showing the same page share one render of it (push.render_for).
        "id": uuid.uuid4().hex,
    }


async def push(message: dict, group: str = GROUP) -> bool:
    global _layer_down
    try:
        await asyncio.wait_for(get_channel_layer().group_send(group, message), SEND_TIMEOUT)
    except Exception as exc:  # Redis down, timeout, anything: keep working, say so once
        if not _layer_down:
            logger.warning("live updates paused, channel layer unavailable: %s: %s", type(exc).__name__, exc)
        _layer_down = True
        return False
    if _layer_down:
        logger.info("live updates resumed, channel layer reachable again")
    _layer_down = False
    return True


def merge(messages: list[dict]) -> dict:
    """One event saying everything several events said; a machine deleted in any of them is gone."""
    changed, deleted, announce = set(), set(), {}
    for message in messages:
        changed.update(message["changed"])
        deleted.update(message["deleted"])
        announce.update(message["announce"])
    merged = event(
        changed=changed - deleted,
        deleted=deleted,
        created=any(message["created"] for message in messages),
    )
    merged["announce"] = {key: value for key, value in announce.items() if int(key) not in deleted}
    return merged


class _Coalescer:
    """Sends the pushes of request threads from one thread of its own, merged per short window.

    A registration then pays for a queue append instead of a channel-layer round trip, and a boot storm of
    hundreds of registrations a second reaches each dashboard as a few events instead of hundreds.
    """

    WINDOW = 0.05

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: list[dict] = []
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def submit(self, message: dict) -> None:
        with self.lock:
            self.pending.append(message)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="broadcast", daemon=True)
                self.thread.start()
        self.wake.set()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            self.wake.wait()
            time.sleep(self.WINDOW)
            with self.lock:
                self.wake.clear()
                batch, self.pending = self.pending, []
            if batch:
                loop.run_until_complete(push(merge(batch)))


_coalescer = _Coalescer()


def _send_now(message: dict) -> None:
    # The in-memory layer lives on the web server's event loop; it cannot be fed from another loop.
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        async_to_sync(push)(message)
    else:
        _coalescer.submit(message)


def push_after_commit(message: dict) -> None:
    """From synchronous web code: send once the change is committed and visible to the sockets."""
    transaction.on_commit(lambda: _send_now(message))


_pending_sends: set[asyncio.Task] = set()


def send_to_group(group: str, message: dict) -> None:
    """From synchronous code, at once: a message to one group of sockets (not a dashboard change)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(push)(message, group)
    else:  # synchronous code running inside an event loop's thread (a script or test driving one)
        task = loop.create_task(push(message, group))
        _pending_sends.add(task)
        task.add_done_callback(_pending_sends.discard)
