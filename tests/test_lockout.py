"""Guessing passwords: every sign-in form locks out per user name and per address, until time or an administrator
lets it go."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone

pytestmark = [pytest.mark.django_db]
PASSWORD = "correct horse battery"
FORMS = {"/login/": "/", "/admin/login/": "/admin/"}


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("admin", "", PASSWORD)


def sign_in(path: str, password: str, address: str = "127.0.0.1", username: str = "admin"):
    data = {"username": username, "password": password, "next": FORMS[path]}
    return Client(REMOTE_ADDR=address).post(path, data)


@pytest.mark.parametrize("path", list(FORMS))
def test_five_wrong_passwords_lock_the_user_name_on_either_form(admin_user, settings, path):
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(path, "nope", f"127.0.1.{n}").status_code == 200
    # The failure that reaches the limit is answered with the lockout already.
    assert sign_in(path, "nope", "127.0.1.99").status_code == 429
    # Now from yet another address, and with the right password: still refused, without checking it.
    locked = sign_in(path, PASSWORD, "127.0.2.1")
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    assert "Too many sign-in attempts" in locked.content.decode()


def test_an_address_is_locked_whatever_names_it_tries(admin_user, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in("/login/", "nope", "127.0.3.1", username=f"guess-{n}")
    assert sign_in("/login/", PASSWORD, "127.0.3.1").status_code == 429
    # The right user from elsewhere is not locked out by someone else's guessing.
    assert sign_in("/login/", PASSWORD, "127.0.3.2").status_code == 302


def test_an_ipv6_64_counts_as_one_address(admin_user, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in("/admin/login/", "nope", f"2001:db8:1:2::{n + 1:x}", username=f"guess-{n}")
    assert sign_in("/admin/login/", PASSWORD, "2001:db8:1:2:ffff::9").status_code == 429
    assert sign_in("/admin/login/", PASSWORD, "2001:db8:1:3::1").status_code == 302


def test_the_lockout_ends_with_time_or_an_administrator(admin_user, django_user_model, settings):
    django_user_model.objects.create_user("ops", password=PASSWORD)
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in("/login/", "nope", f"127.0.4.{n}", username="ops")
    assert sign_in("/login/", PASSWORD, "127.0.5.1", username="ops").status_code == 429
    # The administrator sees the attempts and removes them.
    admin = Client()
    admin.force_login(admin_user)
    listing = admin.get("/admin/axes/accessattempt/").content.decode()
    assert "ops" in listing
    AccessAttempt.objects.filter(username="ops").delete()
    assert sign_in("/login/", PASSWORD, "127.0.5.1", username="ops").status_code == 302
    # Time: attempts older than the cool-off no longer count.
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in("/login/", "nope", f"127.0.6.{n}", username="ops")
    assert sign_in("/login/", PASSWORD, "127.0.7.1", username="ops").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    assert sign_in("/login/", PASSWORD, "127.0.7.1", username="ops").status_code == 302
