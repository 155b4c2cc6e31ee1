"""GET /metrics: what it exports agrees with the API, who may read it, and the monitor's counters reaching it
through the heartbeat."""

import asyncio
import gc
import ipaddress
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from machines import services
from machines.models import Machine
from machines.validation import Registration
from monitoring.icmp import PingResult as IcmpResult
from monitoring.metrics import RTT_BUCKETS, CheckCounters, VxlanmgrCollector, cyclic_gc_paused, exposition
from monitoring.models import MonitorHeartbeat
from monitoring.monitor import Monitor
from monitoring.rules import Outcome
from tests.support.net import wait_for
from tests.support.processes import running_monitor


def scrape(client, token: str | None = None, **extra) -> dict:
    """The families of one scrape, by name (a counter's without `_total`)."""
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def values(family, sample: str | None = None, **match) -> dict:
    """Labels (a sorted tuple of items, less those matched) -> value of the family's samples named `sample`
    (default: the family's name, or with `_total` for a counter)."""
    sample = sample or family.name + ("_total" if family.type == "counter" else "")
    return {
        tuple(sorted((k, v) for k, v in s.labels.items() if k not in match)): s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in match.items())
    }


def by_name(family, name: str) -> list:
    return [sample for sample in family.samples if sample.name == name]


@pytest.fixture
def fleet(make_machine):
    """Every status on two VNIs and one machine registered without a VNI."""
    now = timezone.now()
    return [
        make_machine(status="active", vni=100, last_rtt_ms=0.25, last_seen_at=now),
        make_machine(status="active", vni=100, last_rtt_ms=12.5, last_seen_at=now),
        make_machine(status="active", vni=200, last_rtt_ms=None),  # answered, no round trip measured
        make_machine(status="unreachable", vni=200, last_rtt_ms=3.0, unreachable_since=now),
        make_machine(status="pending", vni=100),
        make_machine(status="active", vni=None, last_rtt_ms=1.0),
    ]


@pytest.mark.django_db
class TestMetricsAgreeWithTheApi:
    def test_counts_per_status_and_vni_are_the_apis(self, client, api_token, fleet):
        families = scrape(client, api_token)
        listed = client.get("/api/machines", {"page_size": 500}, HTTP_AUTHORIZATION=f"Bearer {api_token}").json()
        assert listed["count"] == len(fleet)
        expected = {}
        for machine in listed["results"]:
            key = (("status", machine["status"]), ("vni", "" if machine["vni"] is None else str(machine["vni"])))
            expected[key] = expected.get(key, 0) + 1
        exported = values(families["vxlanmgr_machines"])
        assert {key: n for key, n in exported.items() if n} == expected
        # Each VNI has every status, zeros included.
        assert exported[(("status", "pending"), ("vni", "200"))] == 0
        assert sum(exported.values()) == listed["count"]

    def test_machine_up_is_the_apis_status_and_pending_has_none(self, client, api_token, fleet):
        families = scrape(client, api_token)
        listed = client.get("/api/machines", {"page_size": 500}, HTTP_AUTHORIZATION=f"Bearer {api_token}").json()
        samples = families["vxlanmgr_machine_up"].samples
        up = {s.labels["ip"]: (s.value, s.labels["hostname"], s.labels["vni"]) for s in samples}
        expected = {
            m["ip_address"]: (1.0 if m["status"] == "active" else 0.0, m["hostname"], str(m["vni"] or ""))
            for m in listed["results"]
            if m["status"] != "pending"
        }
        assert up == expected
        assert len(up) == len(fleet) - 1

    def test_round_trips_are_seconds_of_active_machines(self, client, api_token, fleet):
        rtt = {s.labels["ip"]: s.value for s in scrape(client, api_token)["vxlanmgr_machine_rtt_seconds"].samples}
        assert rtt == {
            m.ip_address: m.last_rtt_ms / 1000 for m in fleet if m.status == "active" and m.last_rtt_ms is not None
        }

    def test_an_empty_inventory_still_says_zero(self, client, api_token):
        families = scrape(client, api_token)
        assert values(families["vxlanmgr_machines"]) == {
            (("status", status), ("vni", "")): 0.0 for status in Machine.Status.values
        }
        assert families["vxlanmgr_machine_up"].samples == []
        assert values(families["vxlanmgr_monitors_alive"]) == {(): 0.0}

    def test_per_machine_series_can_be_turned_off(self, client, api_token, fleet, settings):
        settings.METRICS_PER_MACHINE = False
        families = scrape(client, api_token)
        assert "vxlanmgr_machine_up" not in families and "vxlanmgr_machine_rtt_seconds" not in families
        counts = values(families["vxlanmgr_machines"])
        assert counts[(("status", "active"), ("vni", "100"))] == 2
        assert counts[(("status", "active"), ("vni", ""))] == 1
        assert sum(counts.values()) == len(fleet)


@pytest.mark.django_db
class TestWhoMayScrape:
    def test_an_api_token_may(self, client, api_token):
        scrape(client, api_token)

    def test_a_register_token_may_not(self, client, register_token):
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {register_token}")
        assert response.status_code == 403 and "API token" in response.json()["error"]

    def test_no_token_asks_for_one(self, client):
        response = client.get("/metrics")
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer") and "error" in response.json()

    def test_an_unknown_token_is_refused(self, client):
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer vxm_not-a-token")
        assert response.status_code == 401 and "unknown" in response.json()["error"]

    def test_an_allowed_network_needs_no_token(self, client, settings):
        settings.METRICS_ALLOW = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")]
        scrape(client, REMOTE_ADDR="192.0.2.9")
        scrape(client, REMOTE_ADDR="2001:db8::9")
        assert client.get("/metrics", REMOTE_ADDR="198.51.100.9").status_code == 401

    def test_the_allowed_network_is_the_clients_behind_a_proxy(self, client, settings):
        settings.METRICS_ALLOW = [ipaddress.ip_network("192.0.2.0/24")]
        settings.TRUSTED_PROXIES = [ipaddress.ip_network("127.0.0.1/32")]
        scrape(client, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.9")
        # The proxy's own address is not the client's.
        settings.METRICS_ALLOW = [ipaddress.ip_network("127.0.0.1/32")]
        assert client.get("/metrics", HTTP_X_FORWARDED_FOR="198.51.100.9").status_code == 401

    def test_only_get_and_head(self, client, api_token):
        response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert response.status_code == 405 and response["Allow"] == "GET, HEAD"

    def test_it_runs_like_the_api_without_the_page_middleware(self, client, api_token):
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert not hasattr(response.wsgi_request, "htmx") and not hasattr(response.wsgi_request, "_messages")
        assert "sessionid" not in response.cookies and "csrftoken" not in response.cookies


@pytest.mark.django_db
class TestTheCycleCollectorWaitsOutAScrape:
    """A scrape's ~2 samples per machine would otherwise push a full collection into every second scrape."""

    @pytest.fixture
    def seen(self, monkeypatch):
        """Whether the cycle collector was on while the collector read the database."""
        seen = []
        collect = VxlanmgrCollector.collect

        def spy(self):
            seen.append(gc.isenabled())
            yield from collect(self)

        monkeypatch.setattr(VxlanmgrCollector, "collect", spy)
        return seen

    def test_off_during_the_scrape_and_on_after(self, client, api_token, fleet, seen):
        assert gc.isenabled()
        families = scrape(client, api_token)
        assert seen == [False] and gc.isenabled()
        assert len(families["vxlanmgr_machine_up"].samples) == 5  # the active and unreachable machines

    def test_on_again_after_a_failed_scrape(self, monkeypatch):
        def broken(self):
            raise RuntimeError("the database went away")
            yield

        monkeypatch.setattr(VxlanmgrCollector, "collect", broken)
        with pytest.raises(RuntimeError):
            exposition(per_machine=True)
        assert gc.isenabled()

    def test_left_off_when_it_was_off(self, fleet, seen):
        gc.disable()
        try:
            assert b"vxlanmgr_machine_up{" in exposition(per_machine=True)
            assert not gc.isenabled()
        finally:
            gc.enable()

    def test_overlapping_scrapes_leave_it_on(self):
        first, second = cyclic_gc_paused(), cyclic_gc_paused()
        first.__enter__()
        second.__enter__()  # another thread's scrape, begun while the first one runs
        first.__exit__(None, None, None)
        assert gc.isenabled()  # the scrape that found it on turned it back on
        second.__exit__(None, None, None)
        assert gc.isenabled()


class TestCheckCounters:
    def test_results_and_round_trips_are_counted(self):
        counters = CheckCounters()
        for outcome in (Outcome(True, 0.4), Outcome(True, 1.0), Outcome(True, 7000.0), Outcome(True, None),
                        Outcome(False, None, "timeout"), Outcome(False, None, "unreachable"),
                        Outcome(False, None, "something new")):
            counters.observe(outcome)
        snapshot = counters.snapshot()
        assert snapshot["checks"] == {"ok": 4, "timeout": 1, "unreachable": 1, "error": 1}
        buckets = dict(snapshot["rtt_buckets"])
        assert list(buckets) == [*(str(b) for b in RTT_BUCKETS), "+Inf"]
        # A value on a bound is in that bucket (le); 7 s is only in +Inf.
        assert buckets["0.0005"] == 1 and buckets["0.001"] == 2 and buckets["5.0"] == 2 and buckets["+Inf"] == 3
        assert snapshot["rtt_sum"] == pytest.approx(7.0014)

    def test_the_due_lag_is_the_worst_since_the_last_heartbeat(self):
        counters = CheckCounters()
        counters.claimed(0.5)
        counters.claimed(2.0)
        counters.claimed(1.0)
        assert counters.snapshot()["due_lag_seconds"] == 2.0
        assert counters.snapshot()["due_lag_seconds"] == 0.0


class ScriptedPinger:
    """Answers each address as told, sending nothing."""

    mode = "scripted"

    def __init__(self, answers: dict[str, tuple[float | None, str | None]]):
        self.answers = answers

    async def ping_batch(self, addresses, count, timeout):
        results = {}
        for address in addresses:
            rtt_ms, failure = self.answers[address]
            ok = failure is None
            results[address] = IcmpResult(address, ok, rtt_ms, 0.0 if ok else 1.0, failure, "scripted")
        return results

    def close(self):
        pass


async def _one_round(monitor: Monitor) -> None:
    """Claim and check what is due, see that nothing more is due, and beat."""
    monitor.start_pinger()
    assert await monitor.step()
    await asyncio.wait(monitor.batches)
    assert not await monitor.step()
    await monitor._beat_safely()
    monitor.pinger.close()
    # The monitor's database thread has a connection of its own; the test database is dropped at the end.
    await monitor.db(connections.close_all)


@pytest.mark.django_db(transaction=True)
def test_the_monitors_counters_reach_metrics_through_its_heartbeat(make_machine, client, api_token):
    answers = {
        "10.9.0.1": (0.3, None), "10.9.0.2": (40.0, None), "10.9.0.3": (None, "timeout"),
        "10.9.0.4": (None, "unreachable"), "10.9.0.5": (None, "error"),
    }
    for ip in answers:
        make_machine(ip_address=ip, next_check_at=timezone.now() - timedelta(seconds=3))
    monitor = Monitor(pinger_factory=lambda: ScriptedPinger(answers), name="test-monitor:1")
    before = timezone.now().timestamp()
    asyncio.run(_one_round(monitor))
    monitor.db_executor.shutdown()

    families = scrape(client, api_token)
    assert values(families["vxlanmgr_checks"], monitor="test-monitor:1") == {
        (("result", "ok"),): 2, (("result", "timeout"),): 1, (("result", "unreachable"),): 1, (("result", "error"),): 1,
    }
    rtt = families["vxlanmgr_check_rtt_seconds"]
    assert [s.value for s in by_name(rtt, "vxlanmgr_check_rtt_seconds_count")] == [2]
    assert by_name(rtt, "vxlanmgr_check_rtt_seconds_sum")[0].value == pytest.approx(0.0403)
    buckets = {s.labels["le"]: s.value for s in by_name(rtt, "vxlanmgr_check_rtt_seconds_bucket")}
    assert buckets["0.0005"] == 1 and buckets["0.025"] == 1 and buckets["0.05"] == 2 and buckets["+Inf"] == 2
    lag = values(families["vxlanmgr_monitor_due_lag_seconds"])[(("monitor", "test-monitor:1"),)]
    assert 3 <= lag < 30
    last_round = values(families["vxlanmgr_monitor_last_round_timestamp_seconds"])[(("monitor", "test-monitor:1"),)]
    assert before <= last_round <= timezone.now().timestamp()
    assert values(families["vxlanmgr_monitors_alive"]) == {(): 1.0}
    # The same moment's inventory: two answered, three failed once and still pending.
    assert values(families["vxlanmgr_machines"])[(("status", "active"), ("vni", "100"))] == 2


@pytest.mark.django_db
def test_dead_and_blind_monitors_are_not_alive(client, api_token):
    counters = CheckCounters()
    counters.observe(Outcome(True, 1.0))
    now = timezone.now()
    MonitorHeartbeat.objects.create(name="alive:1", last_beat_at=now, counters=counters.snapshot())
    long_ago = now - timedelta(minutes=5)
    MonitorHeartbeat.objects.create(name="dead:2", last_beat_at=long_ago, counters=counters.snapshot())
    MonitorHeartbeat.objects.create(name="no-icmp:3", last_beat_at=now, error="no permission", counters={})
    # Alive, but of a version that sent no counters.
    MonitorHeartbeat.objects.create(name="old-version:4", last_beat_at=now)
    families = scrape(client, api_token)
    assert values(families["vxlanmgr_monitors_alive"]) == {(): 2.0}
    monitors = {s.labels["monitor"] for family in ("vxlanmgr_checks", "vxlanmgr_check_rtt_seconds")
                for s in families[family].samples}
    assert monitors == {"alive:1"}


@pytest.mark.django_db(transaction=True)
def test_real_pings_on_loopback_are_counted(require_icmp, client, api_token):
    for n in (1, 2, 3):
        services.register_machine(Registration(ip_address=f"127.0.97.{n}", hostname=f"loop-{n}",
                                               mac_address="02:00:00:00:97:01"))
    monitor = Monitor(name="loopback:1")
    asyncio.run(_one_round(monitor))
    monitor.db_executor.shutdown()
    families = scrape(client, api_token)
    assert values(families["vxlanmgr_checks"], monitor="loopback:1", result="ok") == {(): 3.0}
    rtt = families["vxlanmgr_check_rtt_seconds"]
    assert by_name(rtt, "vxlanmgr_check_rtt_seconds_count")[0].value == 3
    assert {s.value for s in families["vxlanmgr_machine_up"].samples} == {1.0}


@pytest.mark.django_db(transaction=True)
def test_a_monitor_process_reaches_metrics(require_icmp, client, api_token):
    for n in (1, 2):
        services.register_machine(Registration(ip_address=f"127.0.98.{n}", hostname=f"proc-{n}",
                                               mac_address="02:00:00:00:98:01"))

    def checked() -> float:
        ok = [s.value for s in scrape(client, api_token)["vxlanmgr_checks"].samples
              if s.name == "vxlanmgr_checks_total" and s.labels["result"] == "ok"]
        return sum(ok) >= 2

    # The monitor beats when it starts and every 10 s after.
    with running_monitor() as monitor:
        wait_for(checked, 45, interval=0.5, message=f"checks on /metrics\n{monitor.output()}")
    families = scrape(client, api_token)
    assert values(families["vxlanmgr_monitors_alive"]) == {(): 1.0}
    names = {s.labels["monitor"] for s in families["vxlanmgr_checks"].samples}
    assert len(names) == 1 and names == set(MonitorHeartbeat.objects.values_list("name", flat=True))
