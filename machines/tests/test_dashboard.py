import re

import pytest
from django.urls import reverse

PAGES = ["/", "/?status=unreachable&q=web", "/admin/"]


@pytest.mark.django_db
class TestLoginProtection:
    @pytest.mark.parametrize("path", PAGES)
    def test_every_page_redirects_anonymous_visitors_to_login(self, client, path):
        response = client.get(path)
        assert response.status_code == 302
        assert "/login/" in response["Location"]

    def test_machine_pages_and_actions_need_a_login_too(self, client, make_machine):
        from machines.models import Machine

        machine = make_machine(status="unreachable")
        for path in [f"/machines/{machine.pk}", f"/machines/{machine.pk}/delete"]:
            assert "/login/" in client.get(path)["Location"]
        assert "/login/" in client.post(f"/machines/{machine.pk}/delete/confirm")["Location"]
        assert client.get("/api/machines").status_code == 401
        assert Machine.objects.filter(pk=machine.pk).exists()

    def test_htmx_fragments_are_protected_too(self, client):
        response = client.get("/?q=web", HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="http://testserver/?q=web")
        assert response["HX-Redirect"] == "/login/?next=%2F%3Fq%3Dweb"
        assert b"machine" not in response.content

    def test_login_and_logout(self, client, operator):
        page = client.get("/login/")
        assert b'name="password"' in page.content
        response = client.post("/login/", {"username": "operator", "password": "correct horse battery"})
        assert response.status_code == 302 and response["Location"] == "/"
        assert client.get("/").status_code == 200
        assert client.get("/logout/").status_code == 405
        client.post("/logout/")
        assert client.get("/").status_code == 302

    def test_a_wrong_password_shows_an_error(self, client, operator):
        response = client.post("/login/", {"username": "operator", "password": "nope"})
        assert response.status_code == 200
        assert b"form-error" in response.content

    def test_login_is_rate_limited(self, client, operator, settings):
        settings.LOGIN_RATE = "3/m"
        for _ in range(3):
            client.post("/login/", {"username": "operator", "password": "nope"})
        response = client.post("/login/", {"username": "operator", "password": "correct horse battery"})
        assert response.status_code == 429
        assert response["Retry-After"]
        assert client.get("/").status_code == 302


@pytest.mark.django_db
class TestDashboard:
    def test_it_lists_every_field_unreachable_first(self, operator_client, make_machine):
        make_machine(hostname="alpha", status="active", vni=4242)
        make_machine(hostname="zulu", status="unreachable")
        make_machine(hostname="mike", status="pending", vni=None)
        html = operator_client.get("/").content.decode()
        rows = re.findall(r'<tr id="machine-\d+" class="machine-row row-(\w+)"', html)
        assert rows == ["unreachable", "pending", "active"]
        assert "4242" in html and "02:00:00:00:00:01" in html
        assert "● </span>" not in html  # icon and text always together
        assert re.search(r"○</span> Unreachable", html)

    def test_summary_counts(self, operator_client, make_machine):
        for status in ["active", "active", "unreachable", "pending"]:
            make_machine(status=status)
        html = operator_client.get("/").content.decode()
        summary = html[html.index('id="summary"'):]
        summary = re.sub(r"\s+", " ", summary[: summary.index("</p>")])
        assert "4 machines" in summary
        assert "2 active" in summary and "1 unreachable" in summary and "1 pending" in summary

    def test_search_and_filter_return_the_fragment_for_htmx(self, operator_client, make_machine):
        make_machine(hostname="web-1", status="active")
        make_machine(hostname="db-1", status="unreachable")
        response = operator_client.get("/", {"q": "web"}, HTTP_HX_REQUEST="true")
        html = response.content.decode()
        assert html.lstrip().startswith('<div id="machine-list"')
        assert "web-1" in html and "db-1" not in html and "<html" not in html
        assert response["Vary"] and "HX-Request" in response["Vary"]
        html = operator_client.get("/", {"status": "unreachable"}).content.decode()
        assert "<html" in html and "db-1" in html and "web-1" not in html

    def test_a_bookmarked_filter_keeps_its_values(self, operator_client):
        html = operator_client.get("/", {"q": "rack-7", "status": "pending"}).content.decode()
        assert 'value="rack-7"' in html
        assert '<option value="pending" selected>' in html

    def test_hostile_text_is_escaped(self, operator_client, make_machine):
        make_machine(hostname="x", extra_data={"note": "<script>"})
        html = operator_client.get("/", {"q": '"><script>alert(1)</script>'}).content.decode()
        assert "<script>alert(1)" not in html

    def test_empty_states(self, operator_client, make_machine):
        assert "register-machine.sh" in operator_client.get("/").content.decode()
        make_machine(hostname="web")
        assert "No machine matches" in operator_client.get("/", {"q": "nothing"}).content.decode()

    def test_it_paginates_large_inventories(self, operator_client, make_machine):
        for _ in range(120):
            make_machine()
        html = operator_client.get("/").content.decode()
        assert html.count('class="machine-row') == 100
        assert "page=2" in html
        html = operator_client.get("/", {"page": 2}).content.decode()
        assert html.count('class="machine-row') == 20

    def test_the_list_refreshes_itself(self, operator_client):
        html = operator_client.get("/").content.decode()
        assert 'hx-trigger="vxlanmgr:refresh"' in html
        assert "htmx-2.min.js" in html


@pytest.mark.django_db
class TestJapanese:
    def test_the_browser_language_picks_japanese(self, operator_client, make_machine):
        make_machine(status="unreachable")
        html = operator_client.get("/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        assert '<html lang="ja">' in html
        assert "マシン" in html
        assert "到達不能" in html

    def test_the_switcher_sets_the_language(self, operator_client):
        operator_client.post(reverse("set_language"), {"language": "ja", "next": "/"})
        html = operator_client.get("/").content.decode()
        assert '<html lang="ja">' in html

    def test_the_login_page_in_japanese(self, client):
        html = client.get("/login/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        assert "ログイン" in html


@pytest.mark.django_db
class TestSecurityHeaders:
    def test_strict_headers_on_pages(self, client):
        response = client.get("/login/")
        csp = response["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response["X-Frame-Options"] == "DENY"
        assert response["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in response

    def test_no_inline_scripts_or_styles_in_templates(self, operator_client, make_machine):
        make_machine()
        html = operator_client.get("/").content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        assert " style=" not in html and "<style" not in html
        assert not re.search(r"\son[a-z]+=", html)
