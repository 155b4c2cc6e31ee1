"""The dashboard's VNI filter (next to the status filter) and its per-VNI counts."""

import re

import pytest
from django.utils import translation

from machines import queries
from machines.models import Machine

pytestmark = pytest.mark.django_db


def _hostnames(html: str) -> list[str]:
    return re.findall(r'class="cell-hostname"><a [^>]*>([^<]+)</a>', html)


def _vni_options(html: str) -> list[tuple[str, str, bool]]:
    select = re.search(r'<select id="filter-vni" name="vni">(.*?)</select>', html, re.S).group(1)
    return [
        (value, label, bool(selected))
        for value, selected, label in re.findall(r'<option value="([^"]*)"( selected)?>([^<]*)</option>', select)
    ]


def _vni_summary(html: str) -> str:
    start = html.index('id="vni-summary"')
    return re.sub(r"<[^>]+>", "", html[start : html.index("</p>", start)]).split(">", 1)[1]


@pytest.fixture
def fleet(make_machine):
    make_machine(hostname="a-web", vni=100, status="active")
    make_machine(hostname="a-db", vni=100, status="unreachable")
    make_machine(hostname="a-new", vni=100, status="pending")
    make_machine(hostname="b-web", vni=200, status="active")
    make_machine(hostname="b-db", vni=200, status="active")
    make_machine(hostname="loner", vni=None, status="unreachable")
    make_machine(hostname="c-web", vni=16777215, status="active")


class TestParsing:
    @pytest.mark.parametrize(
        ("raw", "parsed"),
        [
            ("", ""), (None, ""), ("100", "100"), (" 0042 ", "42"), ("0", "0"), ("16777215", "16777215"),
            ("16777216", ""), ("-1", ""), ("1e3", ""), ("١٢", ""), ("abc", ""), ("none", "none"), ("None", ""),
            ("9" * 40, ""),
        ],
    )
    def test_a_vni_filter_is_canonical_or_nothing(self, raw, parsed):
        assert queries.parse_vni(raw) == parsed


class TestFilter:
    def test_only_that_vnis_machines_problems_first(self, operator_client, fleet):
        html = operator_client.get("/", {"vni": "100"}).content.decode()
        assert _hostnames(html) == ["a-db", "a-new", "a-web"]
        assert _hostnames(operator_client.get("/", {"vni": "none"}).content.decode()) == ["loner"]
        assert _hostnames(operator_client.get("/", {"vni": "16777215"}).content.decode()) == ["c-web"]

    def test_with_the_status_filter_the_search_and_the_sort(self, operator_client, fleet):
        assert _hostnames(operator_client.get("/", {"vni": "100", "status": "active"}).content.decode()) == ["a-web"]
        assert _hostnames(operator_client.get("/", {"vni": "200", "q": "db"}).content.decode()) == ["b-db"]
        html = operator_client.get("/", {"vni": "200", "sort": "uptime"}, HTTP_HX_REQUEST="true").content.decode()
        assert sorted(_hostnames(html)) == ["b-db", "b-web"]
        # The sortable headings keep the VNI.
        assert 'href="/?vni=200&amp;sort=-uptime"' in html and 'href="/?vni=200"' in html

    def test_a_vni_without_machines_matches_nothing_and_a_malformed_one_is_ignored(self, operator_client, fleet):
        html = operator_client.get("/", {"vni": "300"}).content.decode()
        assert _hostnames(html) == [] and "No machine matches this search." in html
        assert len(_hostnames(operator_client.get("/", {"vni": "x1"}).content.decode())) == 7

    def test_the_filter_lists_every_vni_in_order_and_keeps_the_chosen_one(self, operator_client, fleet):
        options = _vni_options(operator_client.get("/").content.decode())
        assert options == [
            ("", "All VNIs", False), ("100", "VNI 100", False), ("200", "VNI 200", False),
            ("16777215", "VNI 16777215", False), ("none", "No VNI", False),
        ]
        # A bookmark keeps what it filters by, even a VNI without machines (any more).
        chosen = _vni_options(operator_client.get("/", {"vni": "0300"}).content.decode())
        assert [value for value, _label, selected in chosen if selected] == ["300"]
        html = operator_client.get("/", {"vni": "200"}).content.decode()
        assert [value for value, _label, selected in _vni_options(html) if selected] == ["200"]

    def test_it_sits_next_to_the_status_filter_and_changing_it_reloads_the_list(self, operator_client, fleet):
        html = operator_client.get("/").content.decode()
        form = re.search(r'<form id="filters".*?</form>', html, re.S).group()
        assert form.index('id="filter-status"') < form.index('id="filter-vni"') < form.index('type="submit"')
        assert "change from:#filter-vni" in form
        assert '<label class="visually-hidden" for="filter-vni">VNI</label>' in form

    def test_the_live_view_tells_the_socket_the_vni(self, operator_client, fleet):
        html = operator_client.get("/", {"vni": "100"}, HTTP_HX_REQUEST="true").content.decode()
        live = re.search(r'<form id="live-view".*?</form>', html, re.S).group()
        assert '<input type="hidden" name="vni" value="100">' in live
        # The list reloads itself (a new machine, a change that moves one onto the page) with the VNI too.
        assert 'hx-get="/?vni=100"' in html

    def test_pages_of_one_vni(self, operator_client, make_machine):
        for n in range(queries.PAGE_SIZE * 2):
            make_machine(vni=100 if n % 3 else 200, status="unreachable" if n % 7 == 0 else "active")
        in_100 = Machine.objects.filter(vni=100).count()
        first = operator_client.get("/", {"vni": "100"}).content.decode()
        assert 'href="/?vni=100&amp;page=2"' in first
        assert f"Page 1 of {(in_100 - 1) // queries.PAGE_SIZE + 1}" in first
        shown = []
        for number in (1, 2):
            html = operator_client.get("/", {"vni": "100", "page": number}).content.decode()
            shown += [int(pk) for pk in re.findall(r'<tr id="machine-(\d+)"', html)]
        assert shown == [m.pk for m in queries.problems_first(queries.search(vni="100"))]

    @pytest.mark.parametrize("status", ["", "unreachable", "active"])
    def test_every_page_of_a_vni_lists_what_the_sorted_list_has_at_its_place(self, operator_client, make_machine,
                                                                              status):
        import random

        rng = random.Random(11)
        for _ in range(260):
            make_machine(status=rng.choice(["active", "active", "unreachable", "pending"]),
                         hostname=f"h{rng.randint(1, 60)}", vni=rng.choice([7, 8, None]))
        for vni in ("7", "none"):
            expected = [m.pk for m in queries.problems_first(queries.search(status=status, vni=vni))]
            shown = []
            for number in range(1, (len(expected) - 1) // queries.PAGE_SIZE + 2):
                html = operator_client.get("/", {"page": number, "status": status, "vni": vni}).content.decode()
                shown += [int(pk) for pk in re.findall(r'<tr id="machine-(\d+)"', html)]
            assert shown == expected

    def test_filtering_costs_no_more_queries_than_the_whole_list(
        self, operator_client, fleet, django_assert_max_num_queries
    ):
        with django_assert_max_num_queries(20) as whole:
            operator_client.get("/")
        with django_assert_max_num_queries(len(whole.captured_queries)):
            operator_client.get("/", {"vni": "100"})


class TestCounts:
    def test_per_vni_totals_and_unreachable_problems_first(self, operator_client, fleet):
        html = operator_client.get("/").content.decode()
        assert _vni_summary(html) == (
            "By VNI: VNI 100: 3 machines, 1 unreachable No VNI: 1 machine, 1 unreachable VNI 200: 2 machines"
            " VNI 16777215: 1 machine"
        )
        # The overall counts stay as they were, whatever the filter.
        for params in ({}, {"vni": "200"}):
            html = operator_client.get("/", params).content.decode()
            summary = html[html.index('id="summary"') :]
            assert "7 machines" in summary[: summary.index("</p>")]

    def test_the_chosen_vni_stands_out(self, operator_client, fleet):
        html = operator_client.get("/", {"vni": "200"}).content.decode()
        assert '<span id="vni-200" class="vni-count-selected" aria-current="true">VNI 200: 2 machines</span>' in html
        assert html.count('aria-current="true"') == 1

    def test_hundreds_of_vnis_stay_a_short_list(self, operator_client, make_machine):
        for vni in range(300):
            make_machine(vni=vni, status="unreachable" if vni in (250, 40) else "active")
        make_machine(vni=40, status="unreachable")
        html = operator_client.get("/", {"vni": "299"}).content.decode()
        summary = _vni_summary(html)
        entries = re.findall(r"VNI (\d+):", summary)
        # The most unreachable first, then the largest, then by number; the chosen one always.
        assert entries == ["40", "250", "0", "1", "2", "3", "4", "299"]
        assert summary.endswith("and 292 more VNIs")
        assert len(_vni_options(html)) == 301  # the filter still offers every VNI

    def test_no_machines_no_vni_counts(self, operator_client):
        html = operator_client.get("/").content.decode()
        assert '<p id="vni-summary" class="vni-summary" hidden></p>' in html

    def test_one_query_for_the_status_and_the_vni_counts(self, fleet, django_assert_num_queries):
        with django_assert_num_queries(1):
            counts, by_vni = queries.inventory_counts()
        assert counts == queries.status_counts() == {"active": 4, "unreachable": 2, "pending": 1, "total": 7}
        assert by_vni["100"] == {"active": 1, "unreachable": 1, "pending": 1, "total": 3}
        assert by_vni["none"]["unreachable"] == 1 and set(by_vni) == {"100", "200", "16777215", "none"}

    def test_in_japanese(self, operator_client, fleet):
        with translation.override("ja"):
            html = operator_client.get("/", {"vni": "100"}, HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        assert '<html lang="ja">' in html
        options = _vni_options(html)
        assert options[0] == ("", "すべてのVNI", False) and options[-1] == ("none", "VNIなし", False)
        summary = _vni_summary(html)
        assert summary.startswith("VNI別: VNI 100: マシン 3台、到達不能 1 VNIなし: マシン 1台、到達不能 1"), summary

