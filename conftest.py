"""Shared fixtures. Tests that need a real tool skip with a reason locally and fail under CI=true."""

import contextlib
import os

import pytest
from django.conf import settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a real component a test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI must run this test for real, but: {reason}")
    pytest.skip(reason)


def pytest_configure(config):
    # SQLite test databases live in the data directory, which otherwise only `manage.py bootstrap` creates.
    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)


@pytest.fixture
def lab():
    """A manager and a host in network namespaces of their own, joined by a veth pair."""
    from tests.support.namespaces import manager_and_host

    with manager_and_host() as pair:
        yield pair


@pytest.fixture(params=["configured", "in-memory"])
def layer(request, settings):
    """Each test twice: on the configured channel layer (Redis in CI) and on the in-memory one `make run` uses."""
    from channels.layers import channel_layers

    if request.param == "in-memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield request.param
    channel_layers.backends.clear()


@pytest.fixture
def require_icmp():
    """The monitor must be allowed to send pings here (root, CAP_NET_RAW or ping_group_range)."""
    from monitoring.icmp import PingerUnavailable, probe_privileges

    try:
        probe_privileges()
    except PingerUnavailable as exc:
        require(False, f"the monitor cannot send pings here: {exc}")


@pytest.fixture
def require_postgres():
    require(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
        "needs PostgreSQL: set DATABASE_URL=postgres://postgres@127.0.0.1:5432/vxlanmgr",
    )


@pytest.fixture
def require_redis():
    require(bool(settings.REDIS_URL), "needs Redis: set REDIS_URL=redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    yield
    # Pooled connections would keep the test database busy and stop it being dropped.
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all():
            if hasattr(connection, "close_pool"):
                connection.close_pool()


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Rate-limit counters live in the cache; one test's requests must not throttle the next.
    from django.core.cache import cache

    # A test that stops Redis on purpose restores it itself.
    with contextlib.suppress(Exception):
        cache.clear()
    yield


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # Real hashing costs ~0.3 s per user; tests check behaviour, not key stretching.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def operator(django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("operator", password="correct horse battery")
    user.groups.add(Group.objects.get(name="operator"))
    return user


@pytest.fixture
def viewer_client(client, django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("viewer", password="correct horse battery")
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    return client


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def register_token(db):
    from machines.models import ApiToken
    from machines.tokens import create_token

    _token, raw = create_token("test register", ApiToken.Scope.REGISTER)
    return raw


@pytest.fixture
def api_token(db):
    from machines.models import ApiToken
    from machines.tokens import create_token

    _token, raw = create_token("test api", ApiToken.Scope.API)
    return raw


@pytest.fixture
def make_machine(db):
    """Saved machines numbered 1, 2, …: pending and due, with only the fields a test gives beyond identity.
    (Pages that should look lived-in use tests.support.machines.build_machine.)"""
    from machines.models import Machine

    counter = iter(range(1, 100000))

    def make(**fields):
        n = next(counter)
        plain = {
            "hostname": f"host-{n:03d}",
            "ip_address": f"10.1.{n // 250}.{n % 250 + 1}",
            "mac_address": f"02:00:00:00:{n // 256:02x}:{n % 256:02x}",
            "vni": 100,
        }
        return Machine.objects.create(**(plain | fields))

    return make
