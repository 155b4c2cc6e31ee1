import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vxlanmgr.settings")
# Django must be set up before anything that imports models (the consumers) is loaded.
django_http = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from monitoring.routing import websocket_urlpatterns  # noqa: E402
from vxlanmgr.request_id import WebSocketRequestId  # noqa: E402
from vxlanmgr.websocket_origin import SameOriginValidator  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Serving our own few static files keeps `make run` a single process with nothing else to set up.
        "http": ASGIStaticFilesHandler(django_http),
        "websocket": WebSocketRequestId(SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
    }
)
