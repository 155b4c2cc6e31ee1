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
