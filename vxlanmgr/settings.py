"""vxlanmgr settings, read from the environment only (see .env.example). Importing them changes nothing on disk."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from vxlanmgr.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_secret,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VXLANMGR_VAR_DIR", BASE_DIR / "var"))
# The zero-configuration mode keeps one generated key here (written by `manage.py bootstrap`).
SECRET_KEY_FILE = VAR_DIR / "secret_key"


DEBUG = env_bool("VXLANMGR_DEBUG")
DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
EMBEDDED = not DATABASE_URL

SECRET_KEY = env_secret("VXLANMGR_SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or EMBEDDED:
        # Missing until `bootstrap` writes it; the system check vxlanmgr.E001 then says so by name.
        SECRET_KEY = SECRET_KEY_FILE.read_text().strip() if SECRET_KEY_FILE.exists() else ""
    else:
        raise ImproperlyConfigured(
            "VXLANMGR_SECRET_KEY (or VXLANMGR_SECRET_KEY_FILE) is required when DATABASE_URL is set "
            "and VXLANMGR_DEBUG is off"
        )
SECRET_KEY_MISSING = not SECRET_KEY

ALLOWED_HOSTS = env_list("VXLANMGR_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("VXLANMGR_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "csp",
    "axes",
    "django_guid",
    "vxlanmgr",
    "machines",
    "monitoring",
]
# Labs and benchmarks: `make lab`, `make bench`, `make test` and `make screenshots` set this; production never does.
LAB = env_bool("VXLANMGR_LAB")
if LAB:
    INSTALLED_APPS.append("lab")

# Django's own middleware, each declared sync-only (see vxlanmgr/middleware.py for why). ApiShortcut runs the
# JSON API's views itself, with the middleware below it that the API uses (not Csrf, Messages or Htmx).
MIDDLEWARE = [
    # First, so every answer (even a refusal by the middleware below) carries the request id.
    "vxlanmgr.request_id.RequestId",
    "vxlanmgr.middleware.Security",
    "vxlanmgr.client_address.ClientAddress",
    "vxlanmgr.middleware.ContentSecurityPolicy",
    "vxlanmgr.middleware.ApiShortcut",
    "vxlanmgr.middleware.Session",
    "vxlanmgr.middleware.Locale",
    "vxlanmgr.middleware.Common",
    "vxlanmgr.middleware.Csrf",
    "vxlanmgr.middleware.Authentication",
    "vxlanmgr.middleware.Messages",
    "vxlanmgr.middleware.XFrameOptions",
    "vxlanmgr.middleware.Htmx",
    # Last, as django-axes asks: it answers the lockouts its backend raised on the way in.
    "vxlanmgr.middleware.Axes",
]

ROOT_URLCONF = "vxlanmgr.urls"
ASGI_APPLICATION = "vxlanmgr.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

try:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL or f"sqlite:///{VAR_DIR / 'vxlanmgr.sqlite3'}",
            conn_max_age=env_int("VXLANMGR_DB_CONN_MAX_AGE", 0),
            conn_health_checks=True,
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the monitor share the file: WAL lets readers run beside one writer,
    # IMMEDIATE makes writers queue up instead of failing with "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not memory) so monitor subprocesses under test can share it; one per run so runs never collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options["application_name"] = env_str("VXLANMGR_DB_APPLICATION_NAME", "vxlanmgr")
    # Under ASGI every request runs in a thread of its own, so Django's persistent connections are never
    # reused: each request would open (and a storm exhaust) PostgreSQL connections. A pool shares them.
    DB_POOL_SIZE = env_int("VXLANMGR_DB_POOL_SIZE", 20, minimum=0, maximum=1000)
    if DB_POOL_SIZE:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        options["pool"] = {"min_size": 1, "max_size": DB_POOL_SIZE, "timeout": 5, "max_idle": 300}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

def redis_channel_layer(url: str) -> dict:
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 reads with a 5 s socket timeout by default, exactly the 5 s channels_redis blocks
        # waiting for a message: an idle dashboard socket would die every five seconds without this.
        "CONFIG": {
            "hosts": [{"address": url, "socket_timeout": 15, "socket_connect_timeout": 3}],
            "prefix": "vxlanmgr",
        },
    }


if REDIS_URL:
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "vxlanmgr",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# django-axes checks every sign-in, the dashboard's and the admin's, before any password is looked at.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "machines-dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ja", _("Japanese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("VXLANMGR_TIME_ZONE", "UTC")
try:
    import zoneinfo

    zoneinfo.ZoneInfo(TIME_ZONE)
except (zoneinfo.ZoneInfoNotFoundError, ValueError):
    raise ImproperlyConfigured(f"VXLANMGR_TIME_ZONE is not a known time zone: {TIME_ZONE!r}") from None
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# Security: the defaults are the strict ones; HTTPS adds what only makes sense over TLS.
HTTPS = env_bool("VXLANMGR_HTTPS")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = 31536000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
BEHIND_TLS_PROXY = env_bool("VXLANMGR_BEHIND_TLS_PROXY")
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Django can only redirect to HTTPS (and send HSTS) when it can tell a request came over TLS: served directly
# over TLS, or told so by the proxy. /health stays plain for local probes.
SECURE_SSL_REDIRECT = env_bool("VXLANMGR_SSL_REDIRECT", HTTPS and BEHIND_TLS_PROXY)
SECURE_REDIRECT_EXEMPT = [r"^health$"]
# The pages hand htmx the CSRF token in their markup, so no script ever needs to read the cookie.
CSRF_COOKIE_HTTPONLY = True
# Messages can carry a new token's secret (shown once in the admin): kept server-side, never in a cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Machines and the API.
MAX_MACHINES = env_int("VXLANMGR_MAX_MACHINES", 1000, minimum=1)
REGISTER_TOKEN = env_secret("VXLANMGR_REGISTER_TOKEN")
API_TOKEN = env_secret("VXLANMGR_API_TOKEN")
ADMIN_PASSWORD = env_secret("VXLANMGR_ADMIN_PASSWORD")
TRUSTED_PROXIES = env_networks("VXLANMGR_TRUSTED_PROXIES")
# Beyond every global or private unicast address, these too (machines/validation.py, address_refusal).
ALLOWED_PREFIXES = env_networks("VXLANMGR_ALLOWED_PREFIXES")

RATELIMIT_ENABLE = env_bool("VXLANMGR_RATELIMIT_ENABLE", True)
RATELIMIT_USE_CACHE = "default"
REGISTER_RATE_PER_IP = env_rate("VXLANMGR_REGISTER_RATE_PER_IP", "30/m")
# A boot storm of every allowed machine must fit in one minute, with room for retries.
REGISTER_RATE_GLOBAL = env_rate("VXLANMGR_REGISTER_RATE_GLOBAL", f"{max(MAX_MACHINES * 2, 600)}/m")
if env_str("VXLANMGR_LOGIN_RATE"):
    raise ImproperlyConfigured(
        "VXLANMGR_LOGIN_RATE is retired: sign-ins now lock out per user name and per address; "
        "use VXLANMGR_LOGIN_FAILURE_LIMIT and VXLANMGR_LOGIN_LOCKOUT_MINUTES"
    )
# Failed sign-ins lock out the user name and, separately, the address (an IPv6 /64 counts as one address) for a
# while; an administrator unlocks earlier by deleting the access attempts in the admin.
AXES_FAILURE_LIMIT = env_int("VXLANMGR_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("VXLANMGR_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "vxlanmgr.client_address.lockout_address"
AXES_LOCKOUT_CALLABLE = "vxlanmgr.auth_views.locked_out"
AXES_RESET_ON_SUCCESS = True
AXES_ENABLED = env_bool("VXLANMGR_LOGIN_LOCKOUT", True)
# axes looks for its middleware by its own dotted path; ours is the same class declared synchronous.
SILENCED_SYSTEM_CHECKS = ["axes.W002"]

# Monitoring: how hosts are checked and when they count as unreachable.
PING_COUNT = env_int("VXLANMGR_PING_COUNT", 2, minimum=1, maximum=10)
PING_TIMEOUT = env_float("VXLANMGR_PING_TIMEOUT", 1.0)
CHECK_INTERVAL = env_int("VXLANMGR_CHECK_INTERVAL", 60, minimum=1)
RETRY_INTERVAL = env_int("VXLANMGR_RETRY_INTERVAL", 10, minimum=1)
FAILURE_THRESHOLD = env_int("VXLANMGR_FAILURE_THRESHOLD", 3, minimum=1)
BACKOFF_MAX = env_int("VXLANMGR_BACKOFF_MAX", 3600, minimum=1)
PING_CONCURRENCY = env_int("VXLANMGR_PING_CONCURRENCY", 1000, minimum=1, maximum=65000)
# History tiers (monitoring/history.py): raw check results, then hourly and daily buckets folded from them.
if env_str("VXLANMGR_PING_RETENTION_DAYS"):
    raise ImproperlyConfigured(
        "VXLANMGR_PING_RETENTION_DAYS is retired: raw results are now folded into hourly and daily history; "
        "use VXLANMGR_RAW_RETENTION_HOURS (default 48), VXLANMGR_HOURLY_RETENTION_DAYS (default 90) and "
        "VXLANMGR_DAILY_RETENTION_DAYS (default 730)"
    )
# Raw results must outlive the uptime and chart window they serve (24 h) and the fold's settling delay.
RAW_RETENTION_HOURS = env_int("VXLANMGR_RAW_RETENTION_HOURS", 48, minimum=25)
# Hourly buckets back the 7- and 30-day views; daily ones the year.
HOURLY_RETENTION_DAYS = env_int("VXLANMGR_HOURLY_RETENTION_DAYS", 90, minimum=31)
DAILY_RETENTION_DAYS = env_int("VXLANMGR_DAILY_RETENTION_DAYS", 730, minimum=366)

# Prometheus: /metrics answers an API token, or anyone from these networks without one.
METRICS_ALLOW = env_networks("VXLANMGR_METRICS_ALLOW")
# A series per machine (up, round trip); very large fleets may prefer only the aggregates.
METRICS_PER_MACHINE = env_bool("VXLANMGR_METRICS_PER_MACHINE", True)
# Alerts (monitoring/alerts): Apprise URLs seeded as channels, separated by spaces (or one per line in the file).
NOTIFY_URLS = env_secret("VXLANMGR_NOTIFY_URLS").split()
# Links in alerts point here (e.g. https://vxlanmgr.example.net); without it messages carry no link.
BASE_URL = env_str("VXLANMGR_BASE_URL").rstrip("/")
if BASE_URL and not BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured(f"VXLANMGR_BASE_URL must start with http:// or https://, got {BASE_URL!r}")
# No heartbeat for this long means no monitor: the web process alerts (monitor_down).
# A monitor beats every 10 s, so anything shorter than a few beats would call live monitors dead.
MONITOR_STALE = env_int("VXLANMGR_MONITOR_STALE", 120, minimum=15)
# What `manage.py monitor` checks when no --scope is given: "vni=100,200", "prefix=10.100.0.0/24", or everything.
MONITOR_SCOPE = env_str("VXLANMGR_MONITOR_SCOPE")
# Isolation (monitoring/isolation.py): this many machines of a segment that answered last time all failing in
# one round make the monitor doubt its own path, and ask the segment's canary (gateway) when one is set:
# "10.100.0.1" for every segment, or "100=10.100.0.1 200=10.200.0.1" per VNI.
ISOLATION_MIN = env_int("VXLANMGR_ISOLATION_MIN", 3, minimum=1)
CANARY = env_str("VXLANMGR_CANARY")
# Undeliverable alerts are retried with backoff for this long, then marked failed.
NOTIFY_MAX_AGE = env_int("VXLANMGR_NOTIFY_MAX_AGE", 24 * 3600, minimum=60)
# More than THRESHOLD machines changing within WINDOW seconds make one message per channel.
NOTIFY_GROUP_THRESHOLD = env_int("VXLANMGR_NOTIFY_GROUP_THRESHOLD", 5, minimum=1)
NOTIFY_GROUP_WINDOW = env_int("VXLANMGR_NOTIFY_GROUP_WINDOW", 10, minimum=0, maximum=600)
# More than this many state changes of one machine in an hour: one "flapping" alert, then quiet until stable.
FLAP_LIMIT = env_int("VXLANMGR_FLAP_LIMIT", 4, minimum=2)
FLAP_STABLE_MINUTES = 30

# `make run` (the embedded default) runs the monitor inside the web process; production runs it apart.
EMBEDDED_MONITOR = env_bool("VXLANMGR_EMBEDDED_MONITOR", EMBEDDED)

# Bodies past this are refused with 413 as they arrive (vxlanmgr/body_limit.py); forms and the API stay far below.
MAX_REQUEST_BODY = env_int("VXLANMGR_MAX_REQUEST_BODY", 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_REQUEST_BODY

LOG_LEVEL = env_str("VXLANMGR_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"VXLANMGR_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")

# plain: one readable line per event; json: one JSON object per line (timestamp in UTC, level, logger, message,
# request_id and the event's own fields) for jq, Loki or Elasticsearch. Plain unless asked, wherever the output goes.
LOG_FORMAT = env_choice("VXLANMGR_LOG_FORMAT", ("plain", "json"), "plain")
# The request id (vxlanmgr/request_id.py): django-guid reads and answers X-Request-ID; a value from anyone but a
# trusted proxy is dropped before it looks.
DJANGO_GUID = {"GUID_HEADER_NAME": "X-Request-ID", "VALIDATE_GUID": False, "EXPOSE_HEADER": False}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "vxlanmgr.request_id.LogFilter", "missing": "-" if LOG_FORMAT == "plain" else None},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message", "request_id"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
        "null": {"class": "logging.NullHandler"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "vxlanmgr": {"level": LOG_LEVEL, "propagate": True},
        "django.channels.server": {"level": "WARNING"},
        # It says at INFO, for every request, whether the id was made or taken.
        "django_guid": {"level": "WARNING"},
        # Apprise quotes the URLs it cannot parse, credentials included; delivery.py records failures itself.
        "apprise": {"handlers": ["null"], "propagate": False},
    },
}
