import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

logger = logging.getLogger("vxlanmgr.health")
CHECK_TIMEOUT = 3.0


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check_channel_layer() -> None:
    layer = get_channel_layer()
    # A send to an empty group still has to reach the layer's backend (Redis in production).
    await layer.group_send("health", {"type": "health.ping"})


# No session or form behind it: an unknown method gets 405 from the method check, not a CSRF 403 first.
@csrf_exempt
@require_http_methods(["GET", "HEAD"])
async def health(request: HttpRequest) -> JsonResponse:
    checks = {
        "database": sync_to_async(_check_database, thread_sensitive=True)(),
        "channel_layer": _check_channel_layer(),
    }
    results = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT)
            results[name] = "ok"
        except Exception as exc:  # any failure of a dependency is what this endpoint reports
            # Details (hosts, ports) go to the log, not to whoever can reach this unauthenticated endpoint.
            logger.warning("health check %s failed: %s: %s", name, type(exc).__name__, exc)
            results[name] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in results.values())
    return JsonResponse({"status": "ok" if healthy else "error", "checks": results}, status=200 if healthy else 503)
