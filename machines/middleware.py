"""The middleware stack, declared synchronous so a request crosses into a worker thread once.

Django's built-in middleware is "async-capable" by running each of its hooks in a worker thread: under
Daphne a registration crossed threads some twenty times on its way in and out, most of its cost. Declared
sync-only, the whole stack and the view run in one worker thread, entered once per request.
"""

from csp.middleware import CSPMiddleware
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.locale import LocaleMiddleware
from django.middleware.security import SecurityMiddleware
from django_htmx.middleware import HtmxMiddleware


def _sync_only(middleware: type) -> type:
    return type(middleware.__name__, (middleware,), {"async_capable": False, "__module__": __name__})


Security = _sync_only(SecurityMiddleware)
ContentSecurityPolicy = _sync_only(CSPMiddleware)
Session = _sync_only(SessionMiddleware)
Locale = _sync_only(LocaleMiddleware)
Common = _sync_only(CommonMiddleware)
Csrf = _sync_only(CsrfViewMiddleware)
Authentication = _sync_only(AuthenticationMiddleware)
Messages = _sync_only(MessageMiddleware)
XFrameOptions = _sync_only(XFrameOptionsMiddleware)
Htmx = _sync_only(HtmxMiddleware)
