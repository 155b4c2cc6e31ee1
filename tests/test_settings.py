"""Start-up configuration: every bad value stops the process with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from vxlanmgr.env import env_bool, env_float, env_int, env_networks, env_rate, env_secret

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.CHANNEL_LAYERS['default']['BACKEND'])"
)


def _clean_env(tmp_path, **env) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VXLANMGR_", "DATABASE_URL", "REDIS_URL"))}
    base.update({"VXLANMGR_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "vxlanmgr.settings"}, **env)
    return base


def start(tmp_path, **env):
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=_clean_env(tmp_path, **env), capture_output=True, text=True,
        timeout=60,
    )


def manage(tmp_path, *argv, **env):
    return subprocess.run(
        [sys.executable, "manage.py", *argv], cwd=ROOT, env=_clean_env(tmp_path, **env), capture_output=True,
        text=True, timeout=120,
    )


@pytest.mark.parametrize(
    "reader,variable,value",
    [
        (lambda name: env_bool(name), "VXLANMGR_DEBUG", "maybe"),
        (lambda name: env_int(name, 1000, minimum=1), "VXLANMGR_MAX_MACHINES", "many"),
        (lambda name: env_int(name, 1000, minimum=1), "VXLANMGR_MAX_MACHINES", "0"),
        (lambda name: env_int(name, 2, minimum=1, maximum=10), "VXLANMGR_PING_COUNT", "11"),
        (lambda name: env_float(name, 1.0), "VXLANMGR_PING_TIMEOUT", "0"),
        (lambda name: env_float(name, 1.0), "VXLANMGR_PING_TIMEOUT", "soon"),
        (lambda name: env_rate(name, "30/m"), "VXLANMGR_REGISTER_RATE_PER_IP", "fast"),
        (lambda name: env_rate(name, "30/m"), "VXLANMGR_REGISTER_RATE_GLOBAL", "10/week"),
        (lambda name: env_networks(name), "VXLANMGR_TRUSTED_PROXIES", "10.0.0.0/33"),
        (lambda name: env_secret(name.removesuffix("_FILE")), "VXLANMGR_SECRET_KEY_FILE", "/nonexistent/secret"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch, reader, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ImproperlyConfigured, match=variable):
        reader(variable)


def test_an_empty_value_means_the_default(monkeypatch):
    monkeypatch.setenv("VXLANMGR_MAX_MACHINES", " ")
    assert env_int("VXLANMGR_MAX_MACHINES", 1000) == 1000


def test_a_secret_comes_from_its_file(monkeypatch, tmp_path):
    (tmp_path / "key").write_text("from-a-file\n")
    monkeypatch.setenv("VXLANMGR_SECRET_KEY_FILE", str(tmp_path / "key"))
    assert env_secret("VXLANMGR_SECRET_KEY") == "from-a-file"


def test_trusted_proxies_are_networks(monkeypatch):
    monkeypatch.setenv("VXLANMGR_TRUSTED_PROXIES", "10.0.0.1, fd00::/64")
    assert [str(net) for net in env_networks("VXLANMGR_TRUSTED_PROXIES")] == ["10.0.0.1/32", "fd00::/64"]


# The settings module as a whole: a fresh process each, as a deployment starts it.
@pytest.mark.parametrize(
    "variable,value",
    [
        ("VXLANMGR_TIME_ZONE", "Mars/Olympus"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("VXLANMGR_LOG_LEVEL", "chatty"),
        ("VXLANMGR_LOG_FORMAT", "yaml"),
    ],
)
def test_start_up_stops_on_a_bad_value_naming_it(tmp_path, variable, value):
    result = start(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    "variable,value",
    [
        ("VXLANMGR_RAW_RETENTION_HOURS", "24"),  # shorter than the 24 h the charts and uptime read raw
        ("VXLANMGR_BASE_URL", "vxlanmgr.example.net"),
        ("VXLANMGR_METRICS_ALLOW", "10.0.0.0/33"),
        ("VXLANMGR_NOTIFY_GROUP_WINDOW", "soon"),
    ],
)
def test_history_metrics_and_alert_settings_name_a_bad_value(tmp_path, variable, value):
    result = start(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr.splitlines()[-1]


def test_the_retired_ping_retention_names_its_replacements(tmp_path):
    result = start(tmp_path, VXLANMGR_PING_RETENTION_DAYS="7")
    assert result.returncode != 0
    last = result.stderr.splitlines()[-1]
    assert "VXLANMGR_PING_RETENTION_DAYS is retired" in last and "VXLANMGR_RAW_RETENTION_HOURS" in last
    assert start(tmp_path, VXLANMGR_RAW_RETENTION_HOURS="72").returncode == 0


def test_production_needs_a_secret_key(tmp_path):
    result = start(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/vxlanmgr")
    assert result.returncode != 0
    assert "VXLANMGR_SECRET_KEY" in result.stderr.splitlines()[-1]


def test_the_embedded_default_changes_nothing_on_disk_until_bootstrap(tmp_path):
    var = tmp_path / "var"
    env = {"VXLANMGR_VAR_DIR": str(var)}
    result = start(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "channels.layers.InMemoryChannelLayer"]
    assert not var.exists()
    # Without its key the embedded mode says which command makes one.
    check = manage(tmp_path, "check", **env)
    assert check.returncode != 0
    assert "python manage.py bootstrap" in check.stderr
    assert manage(tmp_path, "bootstrap", **env).returncode == 0
    key = (var / "secret_key").read_text()
    assert len(key) > 40 and oct((var / "secret_key").stat().st_mode)[-3:] == "600"
    assert manage(tmp_path, "check", **env).returncode == 0
    manage(tmp_path, "bootstrap", **env)
    assert (var / "secret_key").read_text() == key


def test_urls_select_postgres_and_redis(tmp_path):
    result = start(
        tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/vxlanmgr", REDIS_URL="redis://127.0.0.1:6379/0",
        VXLANMGR_SECRET_KEY_FILE=str(_secret(tmp_path)),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "channels_redis.core.RedisChannelLayer"]


def _secret(tmp_path):
    path = tmp_path / "key"
    path.write_text("from-a-file\n")
    return path


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, ["False", "False", "0", "False"]),
        ({"VXLANMGR_HTTPS": "1"}, ["True", "True", "31536000", "False"]),
        # Only behind a proxy that says which requests came over TLS can Django redirect the others.
        ({"VXLANMGR_HTTPS": "1", "VXLANMGR_BEHIND_TLS_PROXY": "1"}, ["True", "True", "31536000", "True"]),
    ],
)
def test_https_turns_on_secure_cookies_hsts_and_the_redirect(tmp_path, env, expected):
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_SSL_REDIRECT)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=_clean_env(tmp_path, VXLANMGR_SECRET_KEY="x", **env),
        capture_output=True, text=True,
    )
    assert result.stdout.split() == expected, result.stderr
