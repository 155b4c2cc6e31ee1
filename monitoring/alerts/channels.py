"""Alert channels from the environment: every Apprise URL in VXLANMGR_NOTIFY_URLS is a channel, kept in step with
the variable at start-up (`manage.py bootstrap`, `serve`, `monitor`), as machines/tokens.py seeds tokens.

The variable owns the URL and the name of its channels; the admin may still switch one off or narrow its events,
VNIs and language, which the variable cannot say and seeding never touches. A URL that stays keeps its channel
(and those settings) wherever it moves in the list; a URL that changes in place updates its channel; a channel
whose URL left the variable is deleted with its alerts: a disabled leftover would only collect alerts that
end up "could not be delivered".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apprise
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from ..models import Channel

logger = logging.getLogger("vxlanmgr.alerts")

VARIABLE = "VXLANMGR_NOTIFY_URLS"
# Any number, the same in every process: serialises seeding processes that start together (PostgreSQL).
_SEED_LOCK_KEY = 0x7658_6D61_6C65_7274


def scheme(url: str) -> str:
    """The service part of an Apprise URL ("mailto", "slack", "json"), which holds no credential."""
    head, sep, _rest = url.partition("://")
    head = head.strip().lower()
    valid = sep and head.isascii() and head.replace("+", "").replace("-", "").isalnum() and len(head) <= 20
    return head if valid else "?"


def apprise_accepts(url: str) -> bool:
    """Whether Apprise knows the URL's service and can parse it (it logs nothing: see LOGGING)."""
    return "://" in url and apprise.Apprise().add(url)


def masked(url: str) -> str:
    """What may be shown of a stored URL: its scheme only."""
    return f"{scheme(url)}://••••" if url else ""


@dataclass(frozen=True)
class Wanted:
    key: str
    name: str
    url: str


def wanted_channels(urls: list[str]) -> list[Wanted]:
    unique = list(dict.fromkeys(url for url in urls if url))
    return [
        Wanted(f"{VARIABLE}#{n}", f"{VARIABLE} #{n} ({scheme(url)})", url) for n, url in enumerate(unique, start=1)
    ]


def plan(existing: list[Channel], wanted: list[Wanted]) -> tuple[list[tuple[Channel, Wanted]], list[Wanted],
                                                                 list[Channel]]:
    """(channels to bring in line with a wanted one, wanted ones to create, channels to delete). A channel whose
    URL is still wanted keeps it; the other wanted URLs take over the remaining channels in the order of their
    keys, so a URL edited in place updates its channel."""
    remaining = sorted(existing, key=lambda channel: _position(channel.from_environment))
    keep, unmatched = [], []
    for each in wanted:
        channel = next((channel for channel in remaining if channel.url == each.url), None)
        if channel is None:
            unmatched.append(each)
        else:
            remaining.remove(channel)
            keep.append((channel, each))
    reused = list(zip(remaining, unmatched, strict=False))
    return keep + reused, unmatched[len(reused):], remaining[len(reused):]


def _position(key: str) -> tuple[int, str]:
    number = key.rpartition("#")[2]
    return (int(number), key) if number.isdigit() else (10**9, key)


def _in_line(channel: Channel, each: Wanted) -> bool:
    return (channel.url, channel.name, channel.from_environment) == (each.url, each.name, each.key)


def seed_environment_channels() -> dict[str, int]:
    """Make the seeded channels match VXLANMGR_NOTIFY_URLS; returns how many were created, updated, deleted.
    Costs one read when nothing changed."""
    wanted = wanted_channels(settings.NOTIFY_URLS)
    seeded = Channel.objects.exclude(from_environment="").order_by("pk")
    current = list(seeded)
    if len(current) == len(wanted) and all(
        _in_line(channel, each) for channel, each in zip(
            sorted(current, key=lambda channel: _position(channel.from_environment)), wanted, strict=True)
    ):
        return {"created": 0, "updated": 0, "deleted": 0}
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # SQLite needs nothing: its IMMEDIATE transactions already serialise writers.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_SEED_LOCK_KEY])
        keep, create, delete = plan(list(seeded), wanted)
        updated = [channel for channel, each in keep if not _in_line(channel, each)]
        for channel, each in keep:
            channel.url, channel.name, channel.from_environment = each.url, each.name, each.key
        Channel.objects.bulk_update(updated, ["url", "name", "from_environment"])
        Channel.objects.bulk_create(
            [Channel(name=each.name, url=each.url, from_environment=each.key) for each in create]
        )
        if delete:
            Channel.objects.filter(pk__in=[channel.pk for channel in delete]).delete()
    for each in [each for channel, each in keep if channel in updated] + create:
        if not apprise_accepts(each.url):
            # The name only: the URL holds credentials.
            logger.warning("alert channel %r: Apprise cannot use this URL (unknown service or malformed); its "
                           "alerts will fail until %s is corrected", each.name, VARIABLE)
    # Counts only: the URLs hold credentials.
    logger.info("alert channels from %s: %d created, %d updated, %d deleted", VARIABLE, len(create), len(updated),
                len(delete))
    return {"created": len(create), "updated": len(updated), "deleted": len(delete)}


def seed_at_start_up() -> None:
    """seed_environment_channels for a starting process: a database that is down or not migrated yet is logged,
    not fatal (the next start seeds)."""
    try:
        seed_environment_channels()
    except DatabaseError as exc:
        logger.warning("alert channels from %s not seeded: %s", VARIABLE, exc)
    except Exception:
        # Nothing here may keep the server or the monitor from starting.
        logger.exception("alert channels from %s not seeded", VARIABLE)
    finally:
        # The process's workers use connections of their own; this thread's would only sit idle.
        connection.close()
