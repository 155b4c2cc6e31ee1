"""Dashboard sockets follow their sign-in: the groups that reach one session's or one user's sockets, and the
check that a session still signs its user in."""

import hashlib
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from . import broadcast

# A socket re-reads its session before a push when its last check is older than this, and on its own every
# WATCH_SECONDS: an expired session or a changed password ends its sockets within that time. Logging out, and
# a password change through Django, end them at once.
RECHECK_SECONDS = 5.0
WATCH_SECONDS = 60.0


def session_group(session_key: str) -> str:
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def user_group(user_pk) -> str:
    return f"user.{user_pk}"


def still_signed_in(session_key: str, user_pk) -> bool:
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_pk):
        return False
    user = get_user_model()._default_manager.filter(pk=user_pk).first()
    if user is None or not user.is_active:
        return False
    return constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


def end_session_sockets(sender, request, user, **kwargs) -> None:
    """user_logged_out: close the sockets this browser session opened."""
    if request is not None and request.session.session_key:
        broadcast.send_to_group(session_group(request.session.session_key), {"type": "sessions.ended"})


def recheck_user_sockets(sender, instance, created=False, update_fields=None, **kwargs) -> None:
    """post_save of a user: a new password (or a deactivated user) ends the sockets it no longer signs in."""
    if created or (update_fields is not None and not {"password", "is_active"} & set(update_fields)):
        return
    broadcast.send_to_group(user_group(instance.pk), {"type": "sessions.check"})
