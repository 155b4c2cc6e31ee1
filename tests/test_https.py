"""Cookies and transport: what a browser is told, behind a TLS proxy and without one."""

import pytest
from django.test import Client

from machines.models import ApiToken

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def behind_tls_proxy(settings):
    settings.HTTPS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True


def test_behind_a_tls_proxy_plain_requests_are_redirected_and_tls_ones_get_hsts(behind_tls_proxy):
    client = Client()
    plain = client.get("/login/", HTTP_X_FORWARDED_PROTO="http")
    assert plain.status_code == 301 and plain["Location"] == "https://testserver/login/"
    secure = client.get("/login/", HTTP_X_FORWARDED_PROTO="https")
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")
    assert secure.cookies["csrftoken"]["secure"]
    # Local health probes speak plain HTTP.
    assert client.get("/health", HTTP_X_FORWARDED_PROTO="http").status_code == 200


def test_scripts_cannot_read_the_csrf_cookie(client):
    assert client.get("/login/").cookies["csrftoken"]["httponly"]


def test_a_new_tokens_secret_is_never_put_in_a_cookie(admin_client):
    saved = admin_client.post("/admin/machines/apitoken/add/", {"name": "rack 7", "scope": ApiToken.Scope.REGISTER})
    assert saved.status_code == 302
    # Signed is not encrypted: a message in a cookie could be read back by anyone who sees the cookie.
    assert "messages" not in saved.cookies
    page = admin_client.get(saved["Location"]).content.decode()
    token = ApiToken.objects.get(name="rack 7")
    raw = page.split("copy it now): ")[1].split("<")[0].strip()
    assert raw.startswith(token.prefix) and len(raw) > 30
    assert "copy it now" not in admin_client.get(saved["Location"]).content.decode()
