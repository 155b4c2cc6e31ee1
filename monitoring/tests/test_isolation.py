"""A monitor that knows when it is the one cut off (monitoring/isolation.py).

The rules on their own first, then the real monitor process in network namespaces: its link taken down, its
segment's hosts and canary silent, or only the hosts silent while the canary answers.
"""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from conftest import require
from lab import netns
from machines import services
from machines.models import Machine, MachineEvent
from machines.validation import Registration
from monitoring.isolation import Isolation, Probe, parse_canaries, refused_locally
from monitoring.models import MonitorHeartbeat
from tests.support.net import wait_for
from tests.support.processes import running_monitor

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# Loopback answers here, so the route and link checks find the path whole: only the round's pattern speaks.
UP = "127.0.0.1"


def probes(ok: list[bool], answered_last_time: bool = True, failure="timeout", detail="no reply") -> list[Probe]:
    return [
        Probe(100, f"127.0.97.{i + 1}", good, None if good else failure, "1/1 replies" if good else detail,
              answered_last_time)
        for i, good in enumerate(ok)
    ]


def judge(isolation: Isolation, round_probes, at=NOW, canary=None, segment="vni=100"):
    async def canary_answers(_address):
        return canary

    return asyncio.run(isolation.judge(segment, round_probes, at, canary_answers))


def test_a_round_that_answers_is_never_held():
    verdict = judge(Isolation(minimum=3, canaries={}), probes([True, False, True]))
    assert not verdict.held and not verdict.isolated


def test_a_whole_segment_failing_without_a_canary_is_a_real_outage_and_counts():
    isolation = Isolation(minimum=3, canaries={})
    verdict = judge(isolation, probes([False] * 5))
    assert not verdict.held and not verdict.isolated


def test_a_whole_segment_and_its_canary_failing_means_the_monitor_is_cut_off():
    isolation = Isolation(minimum=3, canaries=parse_canaries("100=127.0.97.254"))
    verdict = judge(isolation, probes([False] * 3), canary=False)
    assert verdict.held and "canary 127.0.97.254" in verdict.isolated
    # Still cut off a round later: held, but not announced again.
    later = judge(isolation, probes([False] * 3), at=NOW + timedelta(seconds=10), canary=False)
    assert later.held and not later.isolated
    # The first answer ends it, with its length; that round's failures are still the cut's.
    back = judge(isolation, probes([True, False, False]), at=NOW + timedelta(seconds=25))
    assert back.rejoined_after == 25 and back.held
    assert not isolation.cut


def test_the_canary_answering_makes_a_mass_failure_real():
    isolation = Isolation(minimum=3, canaries=parse_canaries("127.0.97.254"))
    verdict = judge(isolation, probes([False] * 4), canary=True)
    assert not verdict.held and not verdict.isolated


def test_too_few_machines_or_machines_already_failing_are_no_pattern():
    isolation = Isolation(minimum=3, canaries=parse_canaries("127.0.97.254"))
    assert not judge(isolation, probes([False] * 2), canary=False).held
    assert not judge(isolation, probes([False] * 5, answered_last_time=False), canary=False).held


def test_sends_refused_for_lack_of_a_network_are_local_evidence_but_a_failed_neighbour_is_not():
    no_network = "sendto failed: Network is unreachable (ENETUNREACH)"
    assert refused_locally("unreachable", no_network)
    assert not refused_locally("unreachable", "sendto failed: No route to host (EHOSTUNREACH)")
    assert not refused_locally("unreachable", "sendto failed: Invalid argument (EINVAL: blackhole route)")
    isolation = Isolation(minimum=3, canaries={})
    # One machine is enough: the local stack speaks for the whole segment.
    verdict = judge(isolation, probes([False], failure="unreachable", detail=no_network))
    assert verdict.held and "refused every send" in verdict.isolated


def test_canary_setting_is_checked():
    assert parse_canaries("10.100.0.1") == {"*": "10.100.0.1"}
    assert parse_canaries("100=10.100.0.1 200=10.200.0.1") == {"vni=100": "10.100.0.1", "vni=200": "10.200.0.1"}
    with pytest.raises(ValueError, match="not an IP address"):
        parse_canaries("100=gateway")


# -- the real monitor in namespaces ---------------------------------------------------------------------------

HOSTS = ["10.78.0.2", "10.78.0.3", "10.78.0.4"]
CANARY = "10.78.1.9"


@pytest.fixture
def segment():
    """The monitor's namespace, a host namespace holding three machines' addresses on one link, and a gateway
    namespace (the canary) on another link."""
    import os

    require(os.geteuid() == 0 and netns.netns_available(), "needs root and `ip netns` (network namespaces)")
    with netns.Lab() as lab:
        manager, hosts, gateway = lab.namespace(), lab.namespace(), lab.namespace()
        link, _ = netns.veth(manager, hosts, "10.78.0.1/24", [f"{ip}/24" for ip in HOSTS])
        netns.veth(manager, gateway, "10.78.1.1/24", f"{CANARY}/24")
        yield manager, hosts, gateway, link


def register_all() -> list[Machine]:
    return [
        services.register_machine(
            Registration(ip_address=ip, hostname=f"seg-{i}", mac_address=f"02:00:00:00:bb:0{i}", vni=100)
        ).machine
        for i, ip in enumerate(HOSTS, 1)
    ]


def kinds() -> list[str]:
    return list(MachineEvent.objects.order_by("created_at", "id").values_list("kind", flat=True))


def statuses() -> set[str]:
    return set(Machine.objects.values_list("status", flat=True))


@pytest.mark.netns
@pytest.mark.django_db(transaction=True)
def test_a_monitor_cut_off_by_its_own_link_or_path_judges_nobody(segment):
    manager, hosts, gateway, link = segment
    machines = register_all()
    env = {"VXLANMGR_CANARY": f"100={CANARY}", "VXLANMGR_ALLOWED_PREFIXES": "10.78.0.0/16"}
    with running_monitor(manager.command(), **env) as monitor:
        wait_for(lambda: statuses() == {"active"}, 15, message=f"active\n{monitor.output()}")
        # Every machine answered its last check: wait for a round with all three, so the pattern has them.
        wait_for(lambda: all(m.last_seen_at == m.last_checked_at for m in Machine.objects.all()), 10)

        # 1. Its own link goes down: the route to the segment is gone.
        manager.ip("link", "set", link, "down")
        wait_for(lambda: "monitor_isolated" in kinds(), 10, message=f"isolated\n{monitor.output()}")
        entry = MachineEvent.objects.get(kind="monitor_isolated")
        assert entry.machine is None and entry.ip_address is None and "VNI 100" in entry.detail
        heartbeat = MonitorHeartbeat.objects.get(name=entry.hostname)
        wait_for(lambda: "vni=100" in MonitorHeartbeat.objects.get(pk=heartbeat.pk).isolation, 12)
        # Longer than threshold × retry (3 × 1 s) with margin: nobody turns unreachable, nothing is counted.
        asyncio.run(asyncio.sleep(6))
        assert statuses() == {"active"}
        assert set(Machine.objects.values_list("consecutive_failures", flat=True)) == {0}
        manager.ip("link", "set", link, "up")
        wait_for(lambda: "monitor_rejoined" in kinds(), 10, message=f"rejoined\n{monitor.output()}")
        assert "reachable again after" in MachineEvent.objects.get(kind="monitor_rejoined").detail
        assert kinds() == ["monitor_isolated", "monitor_rejoined"]

        # 2. The link stays up, but neither the hosts nor the canary answer: the path beyond is gone.
        hosts.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
        gateway.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
        wait_for(lambda: kinds().count("monitor_isolated") == 2, 10, message=f"isolated again\n{monitor.output()}")
        assert "canary" in MachineEvent.objects.filter(kind="monitor_isolated").first().detail
        asyncio.run(asyncio.sleep(5))
        assert statuses() == {"active"}
        hosts.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
        gateway.sysctl("net.ipv4.icmp_echo_ignore_all", 0)
        wait_for(lambda: kinds().count("monitor_rejoined") == 2, 10, message=f"rejoined again\n{monitor.output()}")
        wait_for(lambda: all(m.last_seen_at == m.last_checked_at for m in Machine.objects.all()), 10)

        # 3. The canary answers while every host is silent: a real outage, judged and logged per machine.
        hosts.sysctl("net.ipv4.icmp_echo_ignore_all", 1)
        wait_for(lambda: statuses() == {"unreachable"}, 15, message=f"unreachable\n{monitor.output()}")
        assert kinds().count("monitor_isolated") == 2
        assert kinds().count("unreachable") == len(machines)
