"""Browser tests: the real server (`manage.py serve`) against the pytest-django test database, driven by Chromium.

One Chromium serves the whole package. Playwright's sync API marks its event loop as running in this thread
for as long as it is started, which Django would take for async context: the package-scoped browser allows
sync ORM calls exactly while it is alive, and is stopped before any test outside this package runs.
"""

import os
import shutil

import pytest

from conftest import require
from tests.support.processes import Server, process_env

from .support import CHROMIUM, DESKTOP, PASSWORD, USERNAME, PageErrors, launch_chromium


def server_env(**overrides: str) -> dict[str, str]:
    """The server's environment: the test database, the test's channel layer (Redis when configured)."""
    return process_env(share_redis=True, VXLANMGR_SECRET_KEY="browser-tests-not-a-secret",
                       VXLANMGR_BACKOFF_MAX="2", **overrides)


@pytest.fixture(scope="package")
def browser():
    require(shutil.which(CHROMIUM) is not None, f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def user(browser, transactional_db, django_user_model, settings):
    # Hashed the way the server process checks it (the suite's fast MD5 hasher is only known in-process).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(USERNAME, password=PASSWORD)
    user.groups.add(Group.objects.get(name="operator"))
    return user


@pytest.fixture
def start_server(transactional_db, user):
    """Start servers against the test database; each is stopped before the database is flushed."""
    servers: list[Server] = []

    def start(monitor: str = "no", **env: str) -> Server:
        server = Server(server_env(**env), monitor)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def server(start_server):
    return start_server("no")


@pytest.fixture
def errors():
    return PageErrors()


@pytest.fixture
def new_context(browser):
    contexts = []

    def new(**options):
        options.setdefault("viewport", DESKTOP)
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield new
    for context in contexts:
        context.close()
