"""Bearer tokens: lookup by hash, seeding from the environment, and bookkeeping of last use."""

import hmac
import time
from datetime import timedelta

from django.conf import settings
from django.core.signals import setting_changed
from django.db import IntegrityError, transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from .models import ApiToken, hash_token

ENV_TOKENS = (
    ("VXLANMGR_REGISTER_TOKEN", ApiToken.Scope.REGISTER),
    ("VXLANMGR_API_TOKEN", ApiToken.Scope.API),
)
# Writing last_used_at on every call would turn each registration into two writes.
_LAST_USED_GRANULARITY = timedelta(minutes=1)

# A boot storm presents the same token thousands of times: each process remembers the tokens it looked up for
# this long instead of asking the database on every request. Saving or deleting a token (the admin's form)
# forgets them at once in this process; a revocation by a bulk update (the admin's "Revoke selected tokens"
# action) or by another process takes effect within these seconds. Unknown tokens are never remembered, so a
# new token works at once.
TOKEN_CACHE_SECONDS = 5.0
_MAX_REMEMBERED = 1000
_remembered: dict[str, tuple[float, ApiToken]] = {}


def forget_remembered_tokens(**_kwargs) -> None:
    _remembered.clear()


def _forget_on_env_change(setting: str, **_kwargs) -> None:
    if setting in {"REGISTER_TOKEN", "API_TOKEN"}:
        forget_remembered_tokens()


post_save.connect(forget_remembered_tokens, sender=ApiToken, dispatch_uid="machines.tokens.saved")
post_delete.connect(forget_remembered_tokens, sender=ApiToken, dispatch_uid="machines.tokens.deleted")
setting_changed.connect(_forget_on_env_change, dispatch_uid="machines.tokens.setting_changed")


def _lookup(digest: str) -> ApiToken | None:
    now = time.monotonic()
    remembered = _remembered.get(digest)
    if remembered is not None and now - remembered[0] < TOKEN_CACHE_SECONDS:
        return remembered[1]
    token = ApiToken.objects.filter(token_hash=digest).first()
    if token is not None:
        if len(_remembered) >= _MAX_REMEMBERED:
            _remembered.clear()
        _remembered[digest] = (now, token)
    return token


def _env_values() -> dict[str, str]:
    return {"VXLANMGR_REGISTER_TOKEN": settings.REGISTER_TOKEN, "VXLANMGR_API_TOKEN": settings.API_TOKEN}


def seed_environment_tokens() -> list[ApiToken]:
    """Make sure the tokens named in the environment exist; revoke ones seeded from an older value."""
    values = _env_values()
    seeded = []
    for variable, scope in ENV_TOKENS:
        raw = values[variable]
        stale = ApiToken.objects.filter(from_environment=variable, revoked_at__isnull=True)
        if raw:
            stale = stale.exclude(token_hash=hash_token(raw))
        stale.update(revoked_at=timezone.now())
        forget_remembered_tokens()
        if raw:
            seeded.append(_seed(variable, scope, raw))
    return seeded


def _seed(variable: str, scope: str, raw: str) -> ApiToken:
    try:
        with transaction.atomic():
            token, _created = ApiToken.objects.get_or_create(
                token_hash=hash_token(raw),
                defaults={"name": variable, "scope": scope, "prefix": raw[:8], "from_environment": variable},
            )
    except IntegrityError:
        token = ApiToken.objects.get(token_hash=hash_token(raw))
    return token


def authenticate(header: str) -> ApiToken | None:
    """The live token named by an `Authorization: Bearer …` header, or None."""
    scheme, _sep, raw = header.partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw or len(raw) > 200:
        return None
    token = _lookup(hash_token(raw))
    values = _env_values()
    if token is None:
        for variable, scope in ENV_TOKENS:
            if values[variable] and hmac.compare_digest(values[variable], raw):
                token = _seed(variable, scope, raw)
                break
        else:
            return None
    if token.is_revoked:
        return None
    if token.from_environment and not hmac.compare_digest(values.get(token.from_environment, ""), raw):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_GRANULARITY:
        # Set first: the requests of other threads holding this remembered token then skip the write.
        token.last_used_at = now
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def create_token(name: str, scope: str) -> tuple[ApiToken, str]:
    raw = ApiToken.generate_raw()
    token = ApiToken(name=name, scope=scope)
    token.set_raw(raw)
    token.save()
    return token, raw
