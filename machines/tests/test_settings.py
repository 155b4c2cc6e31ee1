"""Start-up configuration: every bad value stops the process with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DATABASES['default']['ENGINE'], settings.CHANNEL_LAYERS['default']['BACKEND'])"
)


def start(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VXLANMGR_", "DATABASE_URL", "REDIS_URL"))}
    base.update({"VXLANMGR_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "vxlanmgr.settings"}, **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT, env=base, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    "variable,value",
    [
        ("VXLANMGR_DEBUG", "maybe"),
        ("VXLANMGR_MAX_MACHINES", "many"),
        ("VXLANMGR_MAX_MACHINES", "0"),
        ("VXLANMGR_TIME_ZONE", "Mars/Olympus"),
        ("VXLANMGR_REGISTER_RATE_PER_IP", "fast"),
        ("VXLANMGR_REGISTER_RATE_GLOBAL", "10/week"),
        ("VXLANMGR_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("VXLANMGR_SECRET_KEY_FILE", "/nonexistent/secret"),
        ("VXLANMGR_LOG_LEVEL", "chatty"),
        ("VXLANMGR_PING_TIMEOUT", "0"),
        ("VXLANMGR_PING_COUNT", "11"),
    ],
)
def test_a_bad_value_names_the_variable(tmp_path, variable, value):
    result = start(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr.splitlines()[-1]


def test_production_needs_a_secret_key(tmp_path):
    result = start(tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/vxlanmgr")
    assert result.returncode != 0
    assert "VXLANMGR_SECRET_KEY" in result.stderr.splitlines()[-1]


def test_the_embedded_default_needs_nothing_and_keeps_one_key(tmp_path):
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "channels.layers.InMemoryChannelLayer"]
    key = (tmp_path / "secret_key").read_text()
    assert oct((tmp_path / "secret_key").stat().st_mode)[-3:] == "600"
    start(tmp_path)
    assert (tmp_path / "secret_key").read_text() == key


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


def test_https_turns_on_secure_cookies_and_hsts(tmp_path):
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VXLANMGR_", "DATABASE_URL", "REDIS_URL"))}
    env.update(VXLANMGR_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="vxlanmgr.settings", VXLANMGR_HTTPS="1")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.split() == ["True", "True", "31536000"], result.stderr
