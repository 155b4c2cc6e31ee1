import json

import pytest
from asgiref.sync import async_to_sync
from csp.decorators import csp_exempt, csp_update
from csp.utils import build_policy
from django.db import connection, connections
from django.http import HttpResponse, JsonResponse
from django.test import AsyncClient, Client
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from machines.models import Machine


def get(client, path, token=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(path, params, **headers)


@pytest.mark.django_db
class TestMachineListApi:
    def test_it_needs_an_api_token_or_a_session(self, operator_client, api_token, register_token):
        client = Client()
        assert get(client, "/api/machines").status_code == 401
        assert get(client, "/api/machines", register_token).status_code == 403
        assert get(client, "/api/machines", api_token).status_code == 200
        assert operator_client.get("/api/machines").status_code == 200

    def test_it_pages_and_filters(self, client, api_token, make_machine):
        for n in range(7):
            make_machine(hostname=f"web-{n}", status="active" if n % 2 else "unreachable")
        make_machine(hostname="db-1", mac_address="02:aa:bb:cc:dd:ee")
        body = get(client, "/api/machines", api_token, page_size=3, page=2).json()
        assert (body["count"], body["page"], body["page_size"]) == (8, 2, 3)
        assert len(body["results"]) == 3
        assert get(client, "/api/machines", api_token, status="active").json()["count"] == 3
        assert get(client, "/api/machines", api_token, q="DB-").json()["count"] == 1
        assert get(client, "/api/machines", api_token, q="02:AA:bb").json()["count"] == 1
        assert get(client, "/api/machines", api_token, page=99).json()["results"] == []

    @pytest.mark.parametrize(
        ("params", "field"),
        [({"status": "down"}, "status"), ({"page": "0"}, "page"), ({"page": "x"}, "page"),
         ({"page_size": "501"}, "page_size"), ({"page_size": "-1"}, "page_size")],
    )
    def test_bad_parameters_are_named(self, client, api_token, params, field):
        response = get(client, "/api/machines", api_token, **params)
        assert response.status_code == 400
        assert field in response.json()["errors"]

    def test_detail_by_id(self, client, api_token, make_machine):
        machine = make_machine()
        body = get(client, f"/api/machines/{machine.pk}", api_token).json()
        assert body["ip_address"] == machine.ip_address
        assert get(client, "/api/machines/999999", api_token).status_code == 404
        assert get(client, "/api/machines/abc", api_token).status_code == 404
        assert get(client, f"/api/machines/{machine.pk}").status_code == 401

    def test_page_size_500_is_allowed(self, client, api_token):
        assert get(client, "/api/machines", api_token, page_size=500).status_code == 200
        assert Machine.objects.count() == 0


@pytest.mark.django_db
class TestOddInput:
    def test_unicode_digits_are_not_ids_or_pages(self, client, api_token, make_machine):
        make_machine()
        assert get(client, "/api/machines/١", api_token).status_code == 404
        assert get(client, "/api/machines/²", api_token).status_code == 404
        assert get(client, "/api/machines", api_token, page="²").status_code == 400
        assert get(client, "/api/machines", api_token, page_size="٣").status_code == 400

    def test_an_absurd_page_is_a_400_not_a_500(self, client, api_token):
        response = get(client, "/api/machines", api_token, page="99999999999999999999")
        assert response.status_code == 400 and "page" in response.json()["errors"]

    def test_the_list_answers_json_405_for_other_methods(self, client, api_token):
        response = client.post("/api/machines", HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
        assert "error" in response.json()


# The API runs through vxlanmgr.middleware.ApiShortcut: its views straight from the middleware thread, with the
# middleware they use. These check it keeps what the full stack gave them, and leaves everything else to it.


@csrf_exempt
def _exempt_view(request):
    return JsonResponse(
        {
            "htmx": hasattr(request, "htmx"),
            "messages": hasattr(request, "_messages"),
            "atomic_blocks": len(connection.atomic_blocks),
            "user": request.user.is_authenticated,
        }
    )


def _protected_view(request):
    return HttpResponse("changed")


@csrf_exempt
def _broken_view(request):
    raise RuntimeError("a bug in an API view")


@csp_update({"img-src": ["https://tiles.example"]})
def _page_with_own_policy(request):
    return HttpResponse("page")


@csp_exempt()
def _page_without_policy(request):
    return HttpResponse("page")


urlpatterns = [
    path("api/test/exempt", _exempt_view),
    path("api/test/protected", _protected_view),
    path("api/test/broken", _broken_view),
    path("test/own-policy", _page_with_own_policy),
    path("test/no-policy", _page_without_policy),
    path("", include("vxlanmgr.urls")),
]


@pytest.fixture
def test_urls(settings):
    settings.ROOT_URLCONF = __name__


def _policy(header: str) -> dict[str, set[str]]:
    # django-csp joins the directives in no fixed order.
    return {name: set(sources) for name, *sources in (part.split() for part in header.split(";") if part.strip())}


@pytest.mark.django_db
class TestApiShortcut:
    def test_api_answers_keep_the_security_headers(self, client, api_token):
        api = get(client, "/api/machines", api_token)
        page = client.get("/login/")
        for header in ("X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy"):
            assert api[header] == page[header], header
        assert _policy(api["Content-Security-Policy"]) == _policy(page["Content-Security-Policy"]) == _policy(
            build_policy()
        )
        assert "Accept-Language" in api["Vary"] and api["Content-Language"] == "en"

    def test_api_answers_follow_the_language(self, client, api_token):
        response = client.get("/api/machines", {"page": "0"}, HTTP_AUTHORIZATION=f"Bearer {api_token}",
                              HTTP_ACCEPT_LANGUAGE="ja")
        assert response.status_code == 400 and response["Content-Language"] == "ja"

    def test_api_requests_skip_the_page_only_middleware(self, client, test_urls, operator):
        body = client.get("/api/test/exempt").json()
        assert body["htmx"] is False and body["messages"] is False
        page = client.get("/login/")
        assert hasattr(page.wsgi_request, "htmx") and hasattr(page.wsgi_request, "_messages")

    def test_a_dashboard_session_still_reads_the_api(self, operator_client, test_urls):
        assert operator_client.get("/api/test/exempt").json()["user"] is True
        response = operator_client.get("/api/machines")
        assert response.status_code == 200 and "Cookie" in response["Vary"]

    def test_an_api_view_that_is_not_csrf_exempt_keeps_csrf(self, operator, test_urls):
        client = Client(enforce_csrf_checks=True)
        client.force_login(operator)
        assert client.post("/api/test/protected").status_code == 403
        assert client.post("/api/test/exempt").status_code == 200

    def test_a_failing_api_view_is_a_500(self, test_urls):
        assert Client(raise_request_exception=False).get("/api/test/broken").status_code == 500

    def test_unknown_api_paths_are_the_usual_404(self, client):
        response = client.get("/api/nothing-here")
        assert response.status_code == 404 and response["Content-Type"].startswith("text/html")

    def test_atomic_requests_apply_as_in_django(self, client, test_urls, monkeypatch):
        outside = client.get("/api/test/exempt").json()["atomic_blocks"]
        monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
        assert client.get("/api/test/exempt").json()["atomic_blocks"] == outside + 1


@pytest.mark.django_db(transaction=True)
def test_the_asgi_handler_serves_registrations(api_token):
    # Driven from sync code, so the test's own queries stay on the test's connection.
    response = async_to_sync(AsyncClient().put)(
        "/api/machines/10.0.0.1",
        data=json.dumps({"hostname": "web-01", "mac_address": "02:00:00:00:00:01"}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_token}"},
    )
    assert response.status_code == 201
    assert response["X-Frame-Options"] == "DENY" and "Content-Security-Policy" in response
    assert Machine.objects.count() == 1


@pytest.mark.django_db
class TestContentSecurityPolicy:
    """vxlanmgr.middleware.ContentSecurityPolicy builds the site-wide header once; it must match django-csp."""

    def test_a_changed_policy_is_used_at_once(self, client, settings):
        settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
        assert client.get("/login/")["Content-Security-Policy"] == "default-src 'none'"

    def test_report_only_and_excluded_prefixes(self, client, api_token, settings):
        settings.CONTENT_SECURITY_POLICY = {
            "EXCLUDE_URL_PREFIXES": ["/api/"],
            "DIRECTIVES": {"default-src": ["'self'"]},
        }
        settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": {"script-src": ["'none'"]}}
        api = get(client, "/api/machines", api_token)
        assert "Content-Security-Policy" not in api
        report_only = _policy(api["Content-Security-Policy-Report-Only"])
        assert report_only == _policy(build_policy(report_only=True)) and report_only["script-src"] == {"'none'"}
        assert client.get("/login/")["Content-Security-Policy"] == "default-src 'self'"

    def test_views_with_their_own_policy_go_through_django_csp(self, client, test_urls):
        own = _policy(client.get("/test/own-policy")["Content-Security-Policy"])
        assert own["img-src"] == _policy(build_policy())["img-src"] | {"https://tiles.example"}
        assert "Content-Security-Policy" not in client.get("/test/no-policy")

    def test_debug_error_pages_have_no_policy(self, client, settings):
        settings.DEBUG = True
        assert "Content-Security-Policy" not in client.get("/no-such-page")
