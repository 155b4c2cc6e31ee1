"""Log lines: plain or JSON (VXLANMGR_LOG_FORMAT), the request id on each, the monitor's round and machine, and
no secret ever written, even at DEBUG."""

import asyncio
import http.cookiejar
import json
import logging
import os
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from machines.models import ApiToken, Machine
from machines.tokens import create_token
from monitoring.icmp import PingResult
from monitoring.monitor import Monitor
from tests.support.processes import Server, process_env

ROOT = Path(__file__).resolve().parents[1]
# One request through the whole middleware stack (a 405, which Django logs), then a line outside any request.
PROBE = """
import django, logging
django.setup()
from django.test import Client
response = Client().post("/api/docs")
print(response["X-Request-ID"], flush=True)
logging.getLogger("vxlanmgr.test").warning("outside %s", "a request", extra={"round": "r1", "machine_id": 7})
"""


def _probe(tmp_path, log_format: str) -> tuple[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VXLANMGR_", "DATABASE_URL", "REDIS_URL"))}
    env.update(DJANGO_SETTINGS_MODULE="vxlanmgr.settings", VXLANMGR_VAR_DIR=str(tmp_path), VXLANMGR_SECRET_KEY="x",
               VXLANMGR_ALLOWED_HOSTS="testserver", VXLANMGR_LOG_FORMAT=log_format)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr.splitlines()


def test_json_lines_carry_timestamp_level_logger_message_request_id_and_fields(tmp_path):
    request_id, lines = _probe(tmp_path, "json")
    refused, outside = [json.loads(line) for line in lines if line.startswith("{")]
    assert refused["level"] == "WARNING" and refused["logger"] == "django.request"
    assert refused["message"] == "Method Not Allowed: /api/docs"
    assert refused["request_id"] == request_id
    assert refused["status_code"] == 405
    assert outside["message"] == "outside a request" and outside["logger"] == "vxlanmgr.test"
    assert outside["request_id"] is None
    assert (outside["round"], outside["machine_id"]) == ("r1", 7)
    for line in (refused, outside):
        stamp = datetime.fromisoformat(line["timestamp"])
        assert stamp.utcoffset() == timedelta(0)
        assert abs(timezone.now() - stamp) < timedelta(minutes=1)


def test_plain_lines_show_the_request_id_or_a_dash(tmp_path):
    request_id, lines = _probe(tmp_path, "plain")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    lines = [line for line in lines if re.match(stamp, line)]
    assert re.fullmatch(rf"{stamp} WARNING django\.request \[{request_id}\]: Method Not Allowed: /api/docs", lines[0])
    assert re.fullmatch(rf"{stamp} WARNING vxlanmgr\.test \[-\]: outside a request", lines[1])


class ScriptedPinger:
    def __init__(self, answers: dict[str, bool]):
        self.answers = answers

    async def ping_batch(self, addresses, count, timeout):
        return {
            address: PingResult(address, ok, 0.4 if ok else None, 0.0 if ok else 1.0, None if ok else "timeout", "")
            for address, ok in ((address, self.answers[address]) for address in addresses)
        }

    def close(self):
        pass


async def _one_round(monitor: Monitor) -> None:
    monitor.start_pinger()
    assert await monitor.step()
    await asyncio.wait(monitor.batches)
    monitor.pinger.close()
    await monitor.db(connections.close_all)


@pytest.mark.django_db(transaction=True)
def test_the_monitors_lines_carry_the_round_and_the_machine(make_machine, caplog):
    answers = {"10.9.0.1": True, "10.9.0.2": False}
    machines = {ip: make_machine(ip_address=ip, next_check_at=timezone.now() - timedelta(seconds=1)) for ip in answers}
    monitor = Monitor(pinger_factory=lambda: ScriptedPinger(answers), name="test-monitor:1")
    with caplog.at_level(logging.DEBUG, logger="vxlanmgr.monitor"):
        asyncio.run(_one_round(monitor))
    monitor.db_executor.shutdown()

    lines = [r for r in caplog.records if r.name == "vxlanmgr.monitor"]
    assert {r.round for r in lines} == {lines[0].round}
    assert lines[0].getMessage() == f"round {lines[0].round}: pinging 2 machines"
    about = {(r.machine_id, r.machine_ip) for r in lines if hasattr(r, "machine_id")}
    assert about == {(machine.pk, ip) for ip, machine in machines.items()}
    [change] = [r for r in lines if r.levelno == logging.INFO]
    active = machines["10.9.0.1"]
    assert change.getMessage() == (
        f"{active.hostname} 10.9.0.1 (status): pending -> active (machine {active.pk}, round {change.round})"
    )
    assert (change.machine_id, change.machine_ip, change.status) == (active.pk, "10.9.0.1", "active")


# ---------------------------------------------------------------------------------------------------------------
# Secrets: a whole session against the real server, logging everything it logs at DEBUG, as JSON.

PASSWORD = "logging-test-password-31337"
WRONG_PASSWORD = "not-the-password-but-still-secret-4711"
APPRISE_SECRET = "apprise-secret-pw-8080"
BAD_TOKEN = "vxm_this-is-no-token-but-a-secret-all-the-same"


class Session:
    """A browser-ish HTTP client with cookies, for the real server."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def call(self, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=20) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def json(self, method: str, path: str, token: str, payload: dict | None = None) -> tuple[int, dict]:
        body = json.dumps(payload).encode() if payload is not None else None
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        status, text = self.call(method, path, body, **headers)
        return status, json.loads(text) if text else {}

    def form(self, path: str, page: str, **fields: str) -> tuple[int, str]:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        return self.call("POST", path, body, **{"Content-Type": "application/x-www-form-urlencoded"})


@pytest.fixture
def server(transactional_db, settings, django_user_model):
    # Hashed the way the server process checks it (the suite's fast MD5 hasher is only known in-process).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("operator", password=PASSWORD)
    user.groups.add(Group.objects.get(name="operator"))
    env = process_env(
        VXLANMGR_LOG_LEVEL="DEBUG", VXLANMGR_LOG_FORMAT="json",
        VXLANMGR_NOTIFY_URLS=f"json://alert:{APPRISE_SECRET}@127.0.0.1:9/hook",
    )
    server = Server(env, monitor="yes").start()
    yield server
    server.cleanup()


def test_no_secret_reaches_the_log_of_a_whole_session(server):
    _register, register_token = create_token("host", ApiToken.Scope.REGISTER)
    _api, api_token = create_token("automation", ApiToken.Scope.API)
    session = Session(server.url)

    status, created = session.json("PUT", "/api/machines/127.0.0.1", register_token,
                                   {"hostname": "web-01", "mac_address": "02:00:00:00:00:01"})
    assert status == 201, created
    assert session.json("PUT", "/api/machines/127.0.0.1", register_token,
                        {"hostname": "web-02", "mac_address": "02:00:00:00:00:02"})[0] == 200
    assert session.json("GET", "/api/machines", BAD_TOKEN)[0] == 401
    assert session.json("GET", "/api/machines", api_token)[0] == 200

    status, page = session.call("GET", "/login/")
    assert status == 200
    status, page = session.form("/login/", page, username="operator", password=WRONG_PASSWORD)
    assert status == 200 and "id_password" in page
    status, page = session.form("/login/", page, username="operator", password=PASSWORD)
    assert status == 200 and "web-02" in page  # the dashboard, after the redirect

    status, _body = session.json("DELETE", f"/api/machines/{created['id']}?force=true", api_token)
    assert status == 204
    assert not Machine.objects.exists()
    status, page = session.form("/logout/", page)
    assert status == 200 and "id_password" in page

    log = server.output()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    # It did log, at DEBUG, with request ids: the registrations, the deletion and every request.
    assert f"registered web-01 127.0.0.1 as machine {created['id']}" in messages
    assert any(m.startswith("deleted web-02 127.0.0.1") for m in messages)
    assert any(m.startswith("POST /login/ -> 302") for m in messages)
    assert all(line["request_id"] for line in lines if line["logger"] == "vxlanmgr.inventory")
    for secret in (register_token, api_token, BAD_TOKEN, PASSWORD, WRONG_PASSWORD, APPRISE_SECRET):
        assert secret not in log
    # Nor the part after the well-known prefix, nor any Authorization header.
    for token in (register_token, api_token, BAD_TOKEN):
        assert token.removeprefix("vxm_") not in log
    assert "Bearer" not in log and "authorization" not in log.lower()
