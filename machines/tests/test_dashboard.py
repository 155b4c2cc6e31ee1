import re

import pytest
from django.conf import settings
from django.urls import reverse

from machines.models import Machine

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
        assert '<td data-label="VNI">—</td>' in html
        # The status in words; its icon (●, ○, ◌) comes from the stylesheet, by the row's status.
        assert '<span class="status">Unreachable</span>' in html and '<span class="status">Pending</span>' in html

    def test_each_machine_is_one_element_the_page_lays_out_as_a_row_or_a_card(self, operator_client, make_machine):
        machines = [make_machine(status="unreachable"), make_machine(status="active"), make_machine(status="pending")]
        html = operator_client.get("/").content.decode()
        for machine in machines:
            assert html.count(f'id="machine-{machine.pk}"') == 1
        assert "machine-card" not in html and not re.search(r"<(li|ul)[ >]", html)
        rows = re.findall(r"<tr id=\"machine-\d+\".*?</tr>", html, re.S)
        assert len(rows) == 3
        for row in rows:
            # Nine cells: status, host name, IP, MAC, VNI, last seen, registered, 30-day uptime, actions; the
            # card's labels.
            assert row.count("<td") == 9
            labels = re.findall(r'data-label="([^"]+)"', row)
            assert labels == ["IP address", "MAC address", "VNI", "Last seen", "Uptime"]

    def test_rows_link_to_the_machine_and_only_unreachable_ones_offer_delete(self, operator_client, make_machine):
        dead = make_machine(hostname="dead-1", status="unreachable")
        alive = make_machine(hostname="alive-1", status="active")
        html = operator_client.get("/").content.decode()
        for machine in (dead, alive):
            detail = reverse("machines-detail", args=[machine.pk])
            assert f'<a href="{detail}">{machine.hostname}</a>' in html
        confirm = reverse("machines-confirm-delete", args=[dead.pk])
        assert (
            f'<a class="button button-danger button-small" href="{confirm}" hx-get="{confirm}" '
            'aria-label="Delete dead-1">Delete</a>'
        ) in html
        alive_row = re.search(rf'<tr id="machine-{alive.pk}".*?</tr>', html, re.S).group()
        assert alive_row.endswith("<td></td></tr>")  # an empty actions cell, which the card leaves out
        # The links find the dialog through their table body (htmx inherits hx-target and hx-swap).
        assert '<tbody id="machine-rows" hx-target="#confirm-dialog-body" hx-swap="innerHTML">' in html

    def test_the_page_costs_the_same_queries_for_one_machine_or_a_hundred(
        self, operator_client, make_machine, django_assert_max_num_queries
    ):
        # One machine of each status: the page reads each status's range of the index once.
        for status in ["unreachable", "pending", "active"]:
            make_machine(status=status)
        with django_assert_max_num_queries(20) as one:
            operator_client.get("/")
        for status in ["active"] * 95 + ["unreachable", "pending"]:
            make_machine(status=status)
        with django_assert_max_num_queries(len(one.captured_queries)):
            html = operator_client.get("/").content.decode()
        assert html.count('class="machine-row') == 100

    def test_the_cards_label_column_is_sized_by_the_widest_label_in_each_language(self):
        """The stylesheet holds a hidden copy of the widest card label per language (see app.css)."""
        from django.utils import translation

        css = (settings.BASE_DIR / "static" / "css" / "app.css").read_text()
        sizers = dict(re.findall(r'(:lang\(ja\) )?\.machine-row > td\[data-label\]::after \{ content: "([^"]+)"', css))
        unescape = lambda text: re.sub(r"\\([0-9A-F]{4})", lambda m: chr(int(m.group(1), 16)), text)  # noqa: E731
        for language, key in (("en", ""), ("ja", ":lang(ja) ")):
            with translation.override(language):
                assert unescape(sizers[key]) == translation.gettext("MAC address"), (language, sizers)

    def test_the_stylesheet_gives_every_status_an_icon_for_the_eye_only(self):
        css = (settings.BASE_DIR / "static" / "css" / "app.css").read_text()
        for status, icon in [("active", "25CF"), ("unreachable", "25CB"), ("pending", "25CC")]:
            selector = ".status::before" if status == "pending" else f".row-{status} .status::before"
            rule = re.search(re.escape(selector) + r"[^{]*\{([^}]*)\}", css)
            assert rule, selector
            assert f'content: "\\{icon}" / "";' in rule.group(1), rule.group(1)

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


def _uptime_cells(html: str) -> dict[str, str]:
    rows = re.findall(r'<tr id="machine-\d+".*?</tr>', html, re.S)
    return {
        re.search(r'class="cell-hostname"><a [^>]*>([^<]+)</a>', row).group(1):
        re.search(r'<td class="cell-uptime" data-label="Uptime">([^<]*)</td>', row).group(1)
        for row in rows
    }


def _hostnames(html: str) -> list[str]:
    return re.findall(r'class="cell-hostname"><a [^>]*>([^<]+)</a>', html)


@pytest.mark.django_db
class TestUptimeColumn:
    @pytest.fixture
    def fleet(self, make_machine):
        make_machine(hostname="solid", status="active", uptime_30d=1.0)
        make_machine(hostname="flaky", status="active", uptime_30d=0.9993)
        make_machine(hostname="new", status="pending", uptime_30d=None)
        make_machine(hostname="dead", status="unreachable", uptime_30d=0.25)
        make_machine(hostname="almost", status="active", uptime_30d=0.99999)

    def test_each_row_shows_the_30_day_uptime(self, operator_client, fleet):
        html = operator_client.get("/").content.decode()
        assert '<th scope="col"><a class="sort-link" href="/?sort=uptime"' in html
        # Rounded down: a machine that missed a check does not look perfect.
        assert _uptime_cells(html) == {
            "solid": "100.00 %", "flaky": "99.93 %", "new": "—", "dead": "25.00 %", "almost": "99.99 %",
        }

    def test_the_default_order_stays_problems_first(self, operator_client, fleet):
        assert _hostnames(operator_client.get("/").content.decode()) == ["dead", "new", "almost", "flaky", "solid"]

    def test_sorting_by_uptime_worst_or_best_first_never_measured_last(self, operator_client, fleet):
        worst = operator_client.get("/", {"sort": "uptime"}).content.decode()
        assert _hostnames(worst) == ["dead", "flaky", "almost", "solid", "new"]
        assert 'aria-sort="ascending"' in worst
        # The heading now offers the other direction, and the status heading the usual order.
        assert 'href="/?sort=-uptime"' in worst and 'href="/"' in worst
        best = operator_client.get("/", {"sort": "-uptime"}).content.decode()
        assert _hostnames(best) == ["solid", "almost", "flaky", "dead", "new"]
        assert 'aria-sort="descending"' in best

    def test_the_sort_keeps_the_filters_and_the_filters_keep_the_sort(self, operator_client, fleet):
        response = operator_client.get("/", {"sort": "uptime", "status": "active", "q": "o"}, HTTP_HX_REQUEST="true")
        html = response.content.decode()
        assert _hostnames(html) == ["almost", "solid"]
        assert 'href="/?status=active&amp;q=o&amp;sort=-uptime"' in html
        # The search form outside the swapped list sends the sort along with its fields.
        assert '<input type="hidden" name="sort" value="uptime" form="filters">' in html
        assert 'name="sort"' not in operator_client.get("/", {"q": "o"}).content.decode()

    def test_an_unknown_sort_is_the_default_order(self, operator_client, fleet):
        html = operator_client.get("/", {"sort": "hostname"}).content.decode()
        assert _hostnames(html) == ["dead", "new", "almost", "flaky", "solid"]

    def test_pages_of_the_sorted_list_follow_each_other(self, operator_client, make_machine):
        from machines import queries

        for n in range(queries.PAGE_SIZE + 20):
            make_machine(status="active", uptime_30d=None if n % 10 == 0 else (n % 17) / 17)
        first = operator_client.get("/", {"sort": "uptime"}).content.decode()
        assert 'href="/?sort=uptime&amp;page=2"' in first
        second = operator_client.get("/", {"sort": "uptime", "page": 2}).content.decode()
        shown = [int(pk) for pk in re.findall(r'<tr id="machine-(\d+)"', first + second)]
        expected = sorted(
            Machine.objects.all(), key=lambda m: (m.uptime_30d is None, m.uptime_30d or 0, m.hostname)
        )
        assert shown == [m.pk for m in expected]

    def test_sorting_by_uptime_costs_the_same_queries_for_a_few_machines_or_many(
        self, operator_client, make_machine, django_assert_max_num_queries
    ):
        for n in range(3):
            make_machine(uptime_30d=n / 3)
        with django_assert_max_num_queries(20) as few:
            operator_client.get("/", {"sort": "uptime"})
        for n in range(150):
            make_machine(uptime_30d=n / 150)
        with django_assert_max_num_queries(len(few.captured_queries)):
            html = operator_client.get("/", {"sort": "uptime"}).content.decode()
        assert html.count('class="machine-row') == 100


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


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["", "unreachable", "pending", "active"])
def test_every_page_lists_what_the_sorted_list_has_at_its_place(operator_client, make_machine, status):
    import random

    from machines import queries

    rng = random.Random(7)
    statuses = ["active", "active", "unreachable", "pending"]
    for _ in range(230):
        make_machine(status=rng.choice(statuses), hostname=f"h{rng.randint(1, 60)}")
    expected = [m.pk for m in queries.problems_first(queries.search(status=status))]
    shown = []
    for number in range(1, (len(expected) - 1) // queries.PAGE_SIZE + 2):
        html = operator_client.get("/", {"page": number, "status": status}).content.decode()
        shown += [int(pk) for pk in re.findall(r'<tr id="machine-(\d+)"', html)]
    assert shown == expected
