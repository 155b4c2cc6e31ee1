"""Scoped monitors: `monitor --scope vni=…|prefix=…` claims only its machines; overlapping scopes share them."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from machines.models import ApiToken, Machine
from machines.tokens import create_token
from monitoring import checks, coverage
from monitoring.models import MonitorHeartbeat
from monitoring.scope import Scope, ScopeError

LEASE = timedelta(seconds=30)


def make(ip: str, vni: int | None) -> Machine:
    return Machine.objects.create(hostname=f"h-{ip}", ip_address=ip, mac_address="02:00:00:00:00:01", vni=vni,
                                  next_check_at=timezone.now() - timedelta(seconds=1))


def test_scopes_parse_print_and_refuse_nonsense():
    scope = Scope.parse("vni=200,100; prefix=10.100.0.0/24")
    assert str(scope) == "vni=100,200;prefix=10.100.0.0/24"
    assert scope.covers(100, "192.0.2.1") and scope.covers(None, "10.100.0.7") and not scope.covers(300, "10.9.0.1")
    assert Scope.parse("").everything and Scope.parse("").covers(7, "10.0.0.1")
    for bad in ("vni=abc", "vni=", "vlan=3", "prefix=10.0.0.300/24", "100"):
        with pytest.raises(ScopeError):
            Scope.parse(bad)


@pytest.mark.django_db
def test_a_scoped_monitor_claims_only_its_machines_and_overlapping_ones_share():
    make("10.100.0.2", 100)
    make("10.100.0.3", 100)
    make("10.200.0.2", 200)
    make("fd00:300::2", 300)
    by_vni = checks.claim_due("a", 100, LEASE, scope=Scope.parse("vni=100"))
    assert sorted(m.ip_address for m in by_vni) == ["10.100.0.2", "10.100.0.3"]
    # Same segment by prefix: those two are claimed already, so nothing is left for this monitor.
    assert checks.claim_due("b", 100, LEASE, scope=Scope.parse("prefix=10.100.0.0/24")) == []
    by_prefix = checks.claim_due("c", 100, LEASE, scope=Scope.parse("prefix=10.200.0.0/16,fd00::/8"))
    assert sorted(m.ip_address for m in by_prefix) == ["10.200.0.2", "fd00:300::2"]
    assert checks.claim_due("d", 100, LEASE) == []


@pytest.mark.django_db
def test_machines_no_live_monitor_covers_are_not_being_checked():
    on_100, on_300 = make("10.100.0.2", 100), make("10.30.0.2", 300)
    assert coverage.unchecked([on_100]) == {on_100.pk: "no monitor is running"}
    MonitorHeartbeat.objects.create(name="m100", scope="vni=100")
    MonitorHeartbeat.objects.create(name="old", scope="", last_beat_at=timezone.now() - timedelta(hours=1))
    assert coverage.unchecked([on_100, on_300]) == {on_300.pk: "no monitor for VNI 300"}
    MonitorHeartbeat.objects.filter(name="m100").update(isolation={"vni=100": {"since": "x", "reason": "link down"}})
    assert "cut off" in coverage.unchecked([on_100])[on_100.pk]


@pytest.mark.django_db
def test_the_api_says_whether_a_machine_is_being_checked(client):
    _token, raw = create_token("t", ApiToken.Scope.API)
    machine = make("10.30.0.2", 300)
    MonitorHeartbeat.objects.create(name="m100", scope="vni=100")
    body = client.get(f"/api/machines/{machine.pk}", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    assert body["checked"] is False and body["unchecked_reason"] == "no monitor for VNI 300"


def test_the_monitor_command_refuses_a_bad_scope():
    with pytest.raises(CommandError, match="VNI is a whole number"):
        call_command("monitor", "--scope", "vni=x")


@pytest.mark.django_db
def test_the_monitors_page_lists_monitors_and_what_nobody_checks(admin_client):
    make("10.30.0.2", 300)
    make("10.30.0.3", 300)
    make("10.100.0.2", 100)
    cut = {"vni=100": {"since": "2026-12-01T00:00:00", "reason": "link vx100 is down"}}
    MonitorHeartbeat.objects.create(name="site-a:41", host="site-a", scope="vni=100", mode="unprivileged",
                                    isolation=cut)
    MonitorHeartbeat.objects.create(name="site-b:7", scope="", last_beat_at=timezone.now() - timedelta(hours=2))
    page = admin_client.get("/monitors").content.decode()
    assert "site-a:41" in page and "VNI 100" in page and "Cut off" in page and "link vx100 is down" in page
    assert "site-b:7" in page and "Not reporting" in page
    assert "VNI 300: 2 machines (no monitor for VNI 300)" in page
    # The cut-off monitor's own VNI is not being checked either.
    assert "VNI 100: 1 machine (the monitor is cut off from this segment: link vx100 is down)" in page


@pytest.mark.django_db
def test_the_monitors_page_needs_a_login(client):
    assert client.get("/monitors").status_code == 302


@pytest.mark.django_db
def test_the_list_api_says_which_machines_are_being_checked(client):
    _token, raw = create_token("t", ApiToken.Scope.API)
    make("10.100.0.2", 100)
    make("10.30.0.2", 300)
    MonitorHeartbeat.objects.create(name="m100", scope="vni=100")
    body = client.get("/api/machines", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    checked = {row["ip_address"]: (row["checked"], row["unchecked_reason"]) for row in body["results"]}
    assert checked == {"10.100.0.2": (True, None), "10.30.0.2": (False, "no monitor for VNI 300")}


@pytest.mark.django_db
def test_the_dashboard_marks_machines_nobody_checks_and_shows_a_cut_off_monitor(admin_client):
    make("10.100.0.2", 100)
    make("10.30.0.2", 300)
    MonitorHeartbeat.objects.create(name="m100", scope="vni=100")
    page = admin_client.get("/").content.decode()
    assert page.count("Not being checked: no monitor for VNI 300") == 1
    MonitorHeartbeat.objects.filter(name="m100").update(
        isolation={"vni=100": {"since": "2026-12-01T00:00:00", "reason": "link vx100 is down"}}
    )
    page = admin_client.get("/").content.decode()
    assert "Monitor m100 is cut off from VNI 100 (link vx100 is down)" in page
    assert page.count("Not being checked: the monitor is cut off from this segment: link vx100 is down") == 1


@pytest.mark.django_db
def test_with_no_monitor_at_all_the_banner_speaks_for_every_row(admin_client):
    make("10.30.0.2", 300)
    page = admin_client.get("/").content.decode()
    assert "No monitor has reported" in page and "Not being checked" not in page


@pytest.mark.django_db
def test_the_machine_page_says_when_nobody_checks_it(admin_client):
    machine = make("10.30.0.2", 300)
    MonitorHeartbeat.objects.create(name="m100", scope="vni=100")
    page = admin_client.get(f"/machines/{machine.pk}").content.decode()
    assert "Not being checked: no monitor for VNI 300. The status shown is the last one known." in page
    MonitorHeartbeat.objects.create(name="all", scope="")
    assert "Not being checked" not in admin_client.get(f"/machines/{machine.pk}").content.decode()
