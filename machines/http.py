"""Small HTTP helpers shared by the API and the dashboard: JSON errors and rate limits."""

import logging
import math
import re
import time
import weakref
import zlib

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest, JsonResponse
from django_guid import get_guid
from django_ratelimit.core import get_usage

logger = logging.getLogger("vxlanmgr.http")

_RATE = re.compile(r"(\d+)/(\d*)([smhd])?")
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Counters outlive their window by this much, as django-ratelimit's do.
_EXPIRATION_FUDGE = 5

# Each counter in turn: count this request, stop at the first one over its limit (later ones are not counted).
# KEYS: the counters; ARGV: limit and lifetime of each. Returns the 1-based index of the limit hit, or 0.
_COUNT_SCRIPT = """
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[2 * i]) end
  if count > tonumber(ARGV[2 * i - 1]) then return i end
end
return 0
"""
_scripts: "weakref.WeakKeyDictionary[object, object]" = weakref.WeakKeyDictionary()


def _with_request_id(body: dict) -> dict:
    # The id of the request being answered (django-guid's, set by vxlanmgr.request_id), so a caller can quote it
    # and an operator find its log lines.
    request_id = get_guid()
    return body | {"request_id": request_id} if request_id else body


def json_error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse(_with_request_id({"error": message}), status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def json_field_errors(errors: dict[str, list[str]], status: int = 400) -> JsonResponse:
    return JsonResponse(_with_request_id({"errors": errors}), status=status)


def rate_limited(request: HttpRequest, group: str, rate: str, key: str) -> int | None:
    """Count this request against `rate`; return seconds to wait when over it, else None."""
    return first_rate_limit_hit(request, [(group, rate, key)])


def first_rate_limit_hit(request: HttpRequest, limits: list[tuple[str, str, str]]) -> int | None:
    """Count this request against each (group, rate, key) in turn, stopping at the first it is over;
    return the seconds to wait for that one, else None.

    With Redis all of them take one round trip (a script), not two per limit as django-ratelimit's does.
    """
    if not limits or not getattr(settings, "RATELIMIT_ENABLE", True):
        return None
    cache = caches[getattr(settings, "RATELIMIT_USE_CACHE", "default")]
    try:
        if isinstance(cache, RedisCache):
            return _count_in_redis(cache, limits)
        for group, rate, key in limits:
            usage = get_usage(request, group=group, key=_constant(key), rate=rate, increment=True)
            if usage and usage["should_limit"]:
                return max(1, math.ceil(usage["time_left"]))
    except Exception:
        # A cache outage must not stop hosts from registering: fail open and say so once per request.
        logger.warning("rate limit cache unavailable; %s not limited", limits[0][0], exc_info=True)
    return None


def _constant(key: str):
    return lambda _group, _request: key


def _count_in_redis(cache: RedisCache, limits: list[tuple[str, str, str]]) -> int | None:
    now = time.time()
    keys, args, ends = [], [], []
    for group, rate, key in limits:
        count, period = _split_rate(rate)
        end = _window_end(key, period, int(now))
        keys.append(cache.make_key(f"ratelimit:{group}:{count}/{period}s:{key}:{end}"))
        args += [count, period + _EXPIRATION_FUDGE]
        ends.append(end)
    hit = _script_for(cache)(keys=keys, args=args)
    if not hit:
        return None
    return max(1, math.ceil(ends[int(hit) - 1] - now))


def _script_for(cache: RedisCache):
    # Django's Redis backend builds a new client object for every call; one per connection pool is enough.
    backend = cache._cache
    script = _scripts.get(backend)
    if script is None:
        script = _scripts[backend] = backend.get_client(write=True).register_script(_COUNT_SCRIPT)
    return script


def _split_rate(rate: str) -> tuple[int, int]:
    """'30/m' -> (30, 60); '5/10s' -> (5, 10), as django-ratelimit reads rates."""
    count, multiple, unit = _RATE.match(rate).groups()
    return int(count), int(multiple or 1) * _PERIODS[unit or "s"]


def _window_end(value: str, period: int, now: int) -> int:
    """The end of the fixed window `now` falls in; windows are offset per key so they do not all end at once
    (django-ratelimit's scheme)."""
    if period == 1:
        return now
    end = now - now % period + zlib.crc32(value.encode()) % period
    return end + period if end < now else end
