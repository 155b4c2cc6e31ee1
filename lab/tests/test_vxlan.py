"""The VXLAN lab's plan, state and settings (no root needed).

The lab itself, for real, is tested end to end in lab/tests/test_lab_e2e.py.
"""

import signal
import subprocess
import sys

import pytest

from lab import manager, vxlan
from lab.plan import MONITOR_DEFAULTS


def test_the_default_plan():
    plan = vxlan.make_plan(vxlan.Config())
    assert plan.namespaces == [
        "vxlab-lab-sw", "vxlab-lab-mgr", "vxlab-lab-h1", "vxlab-lab-h2", "vxlab-lab-h3", "vxlab-lab-h4",
        "vxlab-lab-h5",
    ]
    assert (plan.manager_underlay_ip, plan.manager_overlay_ip) == ("192.168.100.1", "10.100.0.1")
    assert plan.manager_url == "http://10.100.0.1:8000"
    assert [(h.hostname, h.underlay_ip, h.overlay_ip) for h in plan.hosts][:2] == [
        ("lab-h1", "192.168.100.11", "10.100.0.11"),
        ("lab-h2", "192.168.100.12", "10.100.0.12"),
    ]
    assert plan.vxlan_dev == "vxlan100" and plan.overlay_prefixlen == 24


def test_a_custom_plan():
    config = vxlan.Config(name="demo", hosts=2, vni=16777215, overlay="172.20.0.0/16", underlay="10.9.9.0/24")
    plan = vxlan.make_plan(config)
    assert plan.prefix == "vxlab-demo-" and all(ns.startswith("vxlab-demo-") for ns in plan.namespaces)
    assert [h.overlay_ip for h in plan.hosts] == ["172.20.0.11", "172.20.0.12"]
    assert plan.vxlan_dev == "vxlan16777215" and len(plan.vxlan_dev) <= 15


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Lab-1"}, "lowercase letters or digits"),
        ({"name": "a" * 13}, "lowercase letters or digits"),
        ({"hosts": 0}, "--hosts"),
        ({"hosts": 51}, "--hosts"),
        ({"vni": 0}, "--vni"),
        ({"vni": 1 << 24}, "--vni"),
        ({"port": 0}, "--port"),
        ({"manager_port": 70000}, "--manager-port"),
        ({"overlay": "8.8.8.0/24"}, "private range"),
        ({"overlay": "127.0.0.0/8"}, "private range"),
        ({"underlay": "not a network"}, "--underlay must be an IPv4 network"),
        ({"overlay": "10.100.0.1/24"}, "--overlay must be an IPv4 network"),
        ({"overlay": "10.100.0.0/28", "hosts": 5}, "too small"),
        ({"underlay": "10.100.0.0/16"}, "overlap"),
    ],
)
def test_bad_configurations_are_refused_with_the_reason(changes, message):
    config = vxlan.Config(**changes)
    with pytest.raises(vxlan.LabError, match=message):
        vxlan.make_plan(config)


def test_hosts_are_found_by_key_number_name_address_or_namespace():
    plan = vxlan.make_plan(vxlan.Config())
    for ref in ("h3", "3", "lab-h3", "10.100.0.13", "192.168.100.13", "vxlab-lab-h3", " h3 "):
        assert plan.find(ref).key == "h3"
    with pytest.raises(vxlan.LabError, match="h1, h2, h3, h4, h5"):
        plan.find("h9")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", ""),
        ("sqlite:////work/var/test.sqlite3", "sqlite:////work/var/test.sqlite3"),
        ("postgres://postgres@/vxlanmgr?host=/var/run/postgresql", "postgres://postgres@/vxlanmgr?host=/var/run/postgresql"),
        ("postgres://postgres@127.0.0.1:5432/vxlanmgr", "postgres://postgres@:5432/vxlanmgr?host=%2Fvar%2Frun%2Fpostgresql"),
        ("postgresql://u:p%40ss@localhost/db?sslmode=disable", "postgresql://u:p%40ss@/db?sslmode=disable&host=%2Fvar%2Frun%2Fpostgresql"),
    ],
)
def test_database_urls_are_made_reachable_from_the_namespace(url, expected):
    assert vxlan.lab_database_url(url) == expected


def test_a_database_the_namespace_cannot_reach_is_refused():
    with pytest.raises(vxlan.LabError, match=r"cannot reach db\.example\.com"):
        vxlan.lab_database_url("postgres://u@db.example.com/vxlanmgr")
    with pytest.raises(vxlan.LabError, match="SQLite or a local PostgreSQL"):
        vxlan.lab_database_url("mysql://u@localhost/vxlanmgr")


def test_the_unix_socket_form_is_what_django_connects_to():
    import dj_database_url

    parsed = dj_database_url.parse(vxlan.lab_database_url("postgres://postgres@127.0.0.1:5432/vxlanmgr"))
    assert (parsed["HOST"], parsed["PORT"], parsed["OPTIONS"]["host"]) == ("", 5432, "/var/run/postgresql")


def test_monitor_settings_are_snappy_but_follow_the_environment():
    assert vxlan.monitor_settings({}) == MONITOR_DEFAULTS
    settings = vxlan.monitor_settings(
        {"VXLANMGR_CHECK_INTERVAL": "9", "VXLANMGR_PING_COUNT": "1", "VXLANMGR_RETRY_INTERVAL": " ", "HOME": "/"}
    )
    assert settings["VXLANMGR_CHECK_INTERVAL"] == "9" and settings["VXLANMGR_PING_COUNT"] == "1"
    assert settings["VXLANMGR_RETRY_INTERVAL"] == "2" and "HOME" not in settings


def test_the_state_survives_a_round_trip_and_is_private(tmp_path):
    state = vxlan.new_state(tmp_path, vxlan.Config(hosts=2), "", environ={"VXLANMGR_ADMIN_PASSWORD": "lab-password"})
    state.manager = vxlan.Proc(123, "456")
    state.failed = {"h2": "silent"}
    state.save()
    assert (tmp_path / "state.json").stat().st_mode & 0o077 == 0
    loaded = vxlan.load_state(tmp_path)
    assert loaded == state
    assert loaded.admin_password == "lab-password" and loaded.register_token.startswith("vxm_")
    assert loaded.register_token != loaded.api_token
    assert loaded.url == "http://127.0.0.1:8800/"


def test_a_missing_or_broken_state_file_reads_as_no_lab(tmp_path):
    assert vxlan.load_state(tmp_path) is None
    (tmp_path / "state.json").write_text("{not json")
    assert vxlan.load_state(tmp_path) is None


def test_the_managers_environment_never_inherits_the_callers_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgres://elsewhere/db")
    monkeypatch.setenv("VXLANMGR_API_TOKEN", "not-the-labs")
    state = vxlan.new_state(tmp_path, vxlan.Config(), "sqlite:////tmp/vxlan.sqlite3", environ={})
    env = manager.manager_env(state)
    assert "REDIS_URL" not in env  # one process: the in-memory channel layer
    assert env["DATABASE_URL"] == "sqlite:////tmp/vxlan.sqlite3"
    assert env["VXLANMGR_API_TOKEN"] == state.api_token
    assert env["VXLANMGR_ALLOWED_HOSTS"] == "127.0.0.1,localhost,[::1],10.100.0.1"
    assert env["VXLANMGR_VAR_DIR"] == str(tmp_path / "var")
    assert env["VXLANMGR_CHECK_INTERVAL"] == "5"


def test_a_process_is_recognised_by_pid_and_start_time():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        proc = vxlan.Proc.of(child.pid)
        assert proc.alive()
        assert not vxlan.Proc(child.pid, "1").alive()  # the same pid, another process
        proc.stop(signal.SIGTERM, timeout=5)
        assert not proc.alive()
    finally:
        child.kill()
        child.wait()


def test_a_plan_of_two_overlays_with_a_monitor_each():
    config = vxlan.Config(hosts=5, vni=100, vnis=(100, 200), monitors=2)
    plan = vxlan.make_plan(config)
    assert [(s.vni, s.overlay, s.vxlan_dev, s.manager_overlay_ip) for s in plan.segments] == [
        (100, "10.100.0.0/24", "vxlan100", "10.100.0.1"), (200, "10.200.0.0/24", "vxlan200", "10.200.0.1"),
    ]
    # The hosts split in order, each keeping .(10 + N) on its own overlay.
    assert [(h.key, h.vni, h.overlay_ip, h.vxlan_dev) for h in plan.hosts] == [
        ("h1", 100, "10.100.0.11", "vxlan100"), ("h2", 100, "10.100.0.12", "vxlan100"),
        ("h3", 100, "10.100.0.13", "vxlan100"), ("h4", 200, "10.200.0.14", "vxlan200"),
        ("h5", 200, "10.200.0.15", "vxlan200"),
    ]
    assert [(m.name, m.namespace, m.hostname, m.underlay_ip, m.overlay_ip, m.scope) for m in plan.monitors] == [
        ("lab-monitor-100", "vxlab-lab-mon100", "lab-mon100", "192.168.100.2", "10.100.0.2", "vni=100"),
        ("lab-monitor-200", "vxlab-lab-mon200", "lab-mon200", "192.168.100.3", "10.200.0.2", "vni=200"),
    ]
    assert plan.namespaces[:4] == ["vxlab-lab-sw", "vxlab-lab-mgr", "vxlab-lab-mon100", "vxlab-lab-mon200"]
    # Each host registers with the manager's address on its own overlay.
    assert plan.manager_url_for(plan.find("h5").vni) == "http://10.200.0.1:8000"
    assert [h.key for h in plan.hosts_on(200)] == ["h4", "h5"]
    assert plan.monitor("200") == plan.monitor("lab-monitor-200") == plan.monitors[1]
    with pytest.raises(vxlan.LabError, match="VNI 100, 200"):
        plan.monitor("300")
    with pytest.raises(vxlan.LabError, match="no monitors of their own"):
        vxlan.make_plan(vxlan.Config()).monitor("100")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vnis": (100, 100)}, "lists a VNI twice"),
        ({"vnis": (100, 200), "monitors": 1}, "one monitor per VNI: give 2"),
        ({"vnis": (1, 2, 3), "hosts": 2}, "at least the number of VNIs"),
        ({"vnis": (100, 356)}, r"overlap.*give --overlay A,B"),
        ({"vnis": (100, 200), "overlays": ("10.1.0.0/24",)}, "one subnet per VNI"),
        ({"vnis": tuple(range(1, 10)), "hosts": 9}, "1 to 8 VNIs"),
        ({"vnis": (100, 0)}, "--vnis must be from 1"),
    ],
)
def test_bad_overlay_and_monitor_configurations_are_refused(changes, message):
    with pytest.raises(vxlan.LabError, match=message):
        vxlan.make_plan(vxlan.Config(**changes))


def test_the_monitors_share_the_labs_redis_on_its_unix_socket(tmp_path):
    import redis

    config = vxlan.Config(hosts=4, vnis=(100, 200), overlays=("10.1.0.0/24", "10.2.0.0/24"), monitors=2)
    state = vxlan.new_state(tmp_path, config, "postgres://postgres@127.0.0.1/lab", environ={})
    state.monitors = {"100": vxlan.Proc(1, "2"), "200": None}
    state.redis = vxlan.Proc(3, "4")
    state.save()
    assert vxlan.load_state(tmp_path) == state
    env = manager.manager_env(state)
    assert env["REDIS_URL"] == f"unix://{tmp_path}/redis.sock?db=0"
    assert env["VXLANMGR_ALLOWED_HOSTS"] == "127.0.0.1,localhost,[::1],10.1.0.1,10.2.0.1"
    assert env["DATABASE_URL"] == "postgres://postgres@/lab?host=%2Fvar%2Frun%2Fpostgresql"
    # What redis-py (under the channel layer and the cache) makes of it: the socket, no TCP.
    pool = redis.ConnectionPool.from_url(env["REDIS_URL"])
    assert pool.connection_class is redis.UnixDomainSocketConnection
    assert pool.connection_kwargs["path"] == str(tmp_path / "redis.sock")
    # Without --monitors there is no Redis: web and monitor share one process.
    assert state.redis_url and not vxlan.new_state(tmp_path, vxlan.Config(), "", environ={}).redis_url
