"""vxlanmgr settings, read from the environment only (see .env.example)."""

import ipaddress
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VXLANMGR_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str = "") -> str:
    # An empty value (NAME= in an env file) means "use the default", as if it were unset.
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool = False) -> bool:
    raw = env_str(name).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ImproperlyConfigured(f"{name} must be {bound}, got {value}")
    return value


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = env_str(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value <= minimum:
        raise ImproperlyConfigured(f"{name} must be greater than {minimum}, got {value}")
    return value


def env_secret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/systemd credentials)."""
    path = env_str(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE cannot be read: {exc}") from None
    return env_str(name, default)


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_rate(name: str, default: str) -> str:
    value = env_str(name, default)
    count, _sep, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or period not in {"s", "m", "h", "d"}:
        raise ImproperlyConfigured(f"{name} must look like 30/m (count per s, m, h or d), got {value!r}")
    return value


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        return [ipaddress.ip_network(item, strict=False) for item in env_list(name)]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a comma-separated list of IPs or networks: {exc}") from None


def _embedded_secret_key() -> str:
    # The zero-configuration mode keeps one generated key so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


DEBUG = env_bool("VXLANMGR_DEBUG")
DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
EMBEDDED = not DATABASE_URL

SECRET_KEY = env_secret("VXLANMGR_SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or EMBEDDED:
        SECRET_KEY = _embedded_secret_key()
    else:
        raise ImproperlyConfigured(
            "VXLANMGR_SECRET_KEY (or VXLANMGR_SECRET_KEY_FILE) is required when DATABASE_URL is set "
            "and VXLANMGR_DEBUG is off"
        )

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
    "machines",
    "monitoring",
]

# Django's own middleware, each declared sync-only (see machines/middleware.py for why).
MIDDLEWARE = [
    "machines.middleware.Security",
    "machines.middleware.ContentSecurityPolicy",
    "machines.middleware.Session",
    "machines.middleware.Locale",
    "machines.middleware.Common",
    "machines.middleware.Csrf",
    "machines.middleware.Authentication",
    "machines.middleware.Messages",
    "machines.middleware.XFrameOptions",
    "machines.middleware.Htmx",
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
    if EMBEDDED:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
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
if env_bool("VXLANMGR_BEHIND_TLS_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

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

RATELIMIT_ENABLE = env_bool("VXLANMGR_RATELIMIT_ENABLE", True)
RATELIMIT_USE_CACHE = "default"
REGISTER_RATE_PER_IP = env_rate("VXLANMGR_REGISTER_RATE_PER_IP", "30/m")
# A boot storm of every allowed machine must fit in one minute, with room for retries.
REGISTER_RATE_GLOBAL = env_rate("VXLANMGR_REGISTER_RATE_GLOBAL", f"{max(MAX_MACHINES * 2, 600)}/m")
LOGIN_RATE = env_rate("VXLANMGR_LOGIN_RATE", "10/m")

# Monitoring: how hosts are checked and when they count as unreachable.
PING_COUNT = env_int("VXLANMGR_PING_COUNT", 2, minimum=1, maximum=10)
PING_TIMEOUT = env_float("VXLANMGR_PING_TIMEOUT", 1.0)
CHECK_INTERVAL = env_int("VXLANMGR_CHECK_INTERVAL", 60, minimum=1)
RETRY_INTERVAL = env_int("VXLANMGR_RETRY_INTERVAL", 10, minimum=1)
FAILURE_THRESHOLD = env_int("VXLANMGR_FAILURE_THRESHOLD", 3, minimum=1)
BACKOFF_MAX = env_int("VXLANMGR_BACKOFF_MAX", 3600, minimum=1)
PING_CONCURRENCY = env_int("VXLANMGR_PING_CONCURRENCY", 1000, minimum=1, maximum=65000)
PING_RETENTION_DAYS = env_int("VXLANMGR_PING_RETENTION_DAYS", 7, minimum=1)
# `make run` (the embedded default) runs the monitor inside the web process; production runs it apart.
EMBEDDED_MONITOR = env_bool("VXLANMGR_EMBEDDED_MONITOR", EMBEDDED)

DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

LOG_LEVEL = env_str("VXLANMGR_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"VXLANMGR_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "vxlanmgr": {"level": LOG_LEVEL, "propagate": True},
        "django.channels.server": {"level": "WARNING"},
    },
}
