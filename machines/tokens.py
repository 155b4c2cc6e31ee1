"""Bearer tokens: lookup by hash, seeding from the environment, and bookkeeping of last use."""

import hmac
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import ApiToken, hash_token

ENV_TOKENS = (
    ("VXLANMGR_REGISTER_TOKEN", ApiToken.Scope.REGISTER),
    ("VXLANMGR_API_TOKEN", ApiToken.Scope.API),
)
# Writing last_used_at on every call would turn each registration into two writes.
_LAST_USED_GRANULARITY = timedelta(minutes=1)


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
    token = ApiToken.objects.filter(token_hash=hash_token(raw)).first()
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
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def create_token(name: str, scope: str) -> tuple[ApiToken, str]:
    raw = ApiToken.generate_raw()
    token = ApiToken(name=name, scope=scope)
    token.set_raw(raw)
    token.save()
    return token, raw
