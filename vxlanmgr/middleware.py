"""The middleware stack, declared synchronous so a request crosses into a worker thread once.

Django's built-in middleware is "async-capable" by running each of its hooks in a worker thread: under
Daphne a registration crossed threads some twenty times on its way in and out, most of its cost. Declared
sync-only, the whole stack and the view run in one worker thread, entered once per request.

Below the last middleware, though, Django's ASGI handler still goes back to its event loop to call the
view (and every ``process_view`` hook) in a thread again. :class:`ApiShortcut` saves the JSON API those
crossings and the middleware that only pages use.
"""

from asgiref.sync import iscoroutinefunction
from axes.middleware import AxesMiddleware
from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, CSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import setting_changed
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.locale import LocaleMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, get_resolver
from django.utils.module_loading import import_string
from django_htmx.middleware import HtmxMiddleware


def _sync_only(middleware: type) -> type:
    return type(middleware.__name__, (middleware,), {"async_capable": False, "__module__": __name__})


Security = _sync_only(SecurityMiddleware)
Session = _sync_only(SessionMiddleware)
Locale = _sync_only(LocaleMiddleware)
Common = _sync_only(CommonMiddleware)
Csrf = _sync_only(CsrfViewMiddleware)
Authentication = _sync_only(AuthenticationMiddleware)
Messages = _sync_only(MessageMiddleware)
XFrameOptions = _sync_only(XFrameOptionsMiddleware)
Htmx = _sync_only(HtmxMiddleware)

# What makes django-csp build a response's policy anew: a csp_* view decorator's own policy, or a nonce.
_OWN_POLICY = ("_csp_config", "_csp_update", "_csp_replace", "_csp_config_ro", "_csp_update_ro", "_csp_replace_ro")
_HEADERS = (
    (HEADER, "CONTENT_SECURITY_POLICY", "_csp_exempt", False),
    (HEADER_REPORT_ONLY, "CONTENT_SECURITY_POLICY_REPORT_ONLY", "_csp_exempt_ro", True),
)
_built_policies: dict[bool, tuple[str, tuple[str, ...]]] = {}


def _site_policy(setting: str, report_only: bool) -> tuple[str, tuple[str, ...]]:
    """The header django-csp builds from the settings alone, and the path prefixes it leaves out."""
    built = _built_policies.get(report_only)
    if built is None:
        policy = getattr(settings, setting, None) or {}
        built = _built_policies[report_only] = (
            build_policy(report_only=report_only),
            tuple(policy.get("EXCLUDE_URL_PREFIXES", None) or ()),
        )
    return built


def _forget_built_policies(setting: str, **_kwargs) -> None:
    if setting in {"CONTENT_SECURITY_POLICY", "CONTENT_SECURITY_POLICY_REPORT_ONLY"}:
        _built_policies.clear()


setting_changed.connect(_forget_built_policies, dispatch_uid="vxlanmgr.middleware.csp")


class ContentSecurityPolicy(_sync_only(CSPMiddleware)):
    """django-csp's middleware, building the site-wide header once instead of for every response.

    django-csp deep-copies the settings and joins the header again for each response; every response without
    a policy of its own (no csp_* decorator, no nonce) gets the same one. Those get it from a cache, with the
    same checks (DEBUG error pages, exempt views, excluded prefixes) as django-csp 4.0; any other response
    goes through django-csp itself.
    """

    def process_response(self, request, response):
        if getattr(request, "_csp_nonce", None) is not None or any(hasattr(response, n) for n in _OWN_POLICY):
            return super().process_response(request, response)
        if response.status_code in (500, 404) and settings.DEBUG:
            return response
        for header, setting, exempt, report_only in _HEADERS:
            policy, excluded = _site_policy(setting, report_only)
            if (
                policy
                and header not in response
                and getattr(response, exempt, False) is False
                and not request.path_info.startswith(excluded)
            ):
                response[header] = policy
        # As django-csp: a nonce asked for after the header is written could not be in it.
        request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response


class ApiShortcut:
    """Runs CSRF-exempt views under ``/api/`` (and ``/metrics``) right here, through only the middleware below
    that they use.

    The API is token-authenticated (the list also takes a dashboard session, so sessions and users stay),
    answers JSON in the caller's language and never uses messages or htmx; its views are all
    ``csrf_exempt``, so CSRF middleware has nothing to do for them. For such a request this middleware
    runs the middleware listed below it in MIDDLEWARE except :attr:`PAGES_ONLY`, then the view, all in
    the thread the request is already on: no crossing back to Django's event loop and out again for the
    view. Anything else (pages, an API view that is not CSRF-exempt or is async, an unknown URL) goes on
    down the whole stack as before. Middleware above this one (security headers, CSP, the client address)
    applies to every request. ``/metrics`` is token- or address-authenticated and read-only like the API,
    and taken the same way.
    """

    async_capable = False
    PREFIXES = ("/api/", "/metrics")
    PAGES_ONLY = frozenset({f"{__name__}.Csrf", f"{__name__}.Messages", f"{__name__}.Htmx"})

    def __init__(self, get_response):
        self.get_response = get_response
        self._view_hooks = []
        self._exception_hooks = []
        handler = convert_exception_to_response(self._call_view)
        for path in reversed(self._below()):
            if path in self.PAGES_ONLY:
                continue
            try:
                middleware = import_string(path)(handler)
            except MiddlewareNotUsed:
                continue
            if getattr(middleware, "async_capable", False) and not getattr(middleware, "sync_capable", True):
                raise ImproperlyConfigured(f"{path} is async-only; ApiShortcut runs API requests synchronously")
            if hasattr(middleware, "process_view"):
                self._view_hooks.insert(0, middleware.process_view)
            if hasattr(middleware, "process_exception"):
                self._exception_hooks.append(middleware.process_exception)
            if hasattr(middleware, "process_template_response"):
                raise ImproperlyConfigured(f"{path} has process_template_response; ApiShortcut does not run it")
            handler = convert_exception_to_response(middleware)
        self.api = handler

    def _below(self) -> list[str]:
        paths = list(settings.MIDDLEWARE)
        for index, path in enumerate(paths):
            if import_string(path) is type(self):
                return paths[index + 1 :]
        raise ImproperlyConfigured(f"{type(self).__name__} is used but not listed in MIDDLEWARE")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self.PREFIXES) and not hasattr(request, "urlconf"):
            try:
                match = get_resolver().resolve(request.path_info)
            except Resolver404:
                match = None
            if match is not None and getattr(match.func, "csrf_exempt", False) and not iscoroutinefunction(match.func):
                request.resolver_match = match
                return self.api(request)
        return self.get_response(request)

    def _call_view(self, request: HttpRequest) -> HttpResponse:
        """BaseHandler._get_response for one resolved, synchronous, template-less view."""
        match = request.resolver_match
        for hook in self._view_hooks:
            response = hook(request, match.func, match.args, match.kwargs)
            if response:
                return response
        view = match.func
        for alias, settings_dict in connections.settings.items():
            if settings_dict["ATOMIC_REQUESTS"] and alias not in getattr(view, "_non_atomic_requests", set()):
                view = transaction.atomic(using=alias)(view)
        try:
            response = view(request, *match.args, **match.kwargs)
        except Exception as exc:
            for hook in self._exception_hooks:
                response = hook(request, exc)
                if response:
                    return response
            raise
        if response is None:
            raise ValueError(f"The view {match._func_path} didn't return an HttpResponse object. It returned None.")
        if hasattr(response, "render") and callable(response.render):
            response = response.render()
        return response
Axes = _sync_only(AxesMiddleware)
