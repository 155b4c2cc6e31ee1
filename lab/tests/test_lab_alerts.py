"""Alerts on the VXLAN lab: the lab's manager sends them through Apprise's json:// to the lab's own webhook
receiver, in its namespace, and `vxlanlab alerts` prints what arrived.

One lab serves the whole story (an `up` is the expensive part): one host fails and recovers, then four fail
and recover together with a group threshold of 3. The manager uses the test database, so the test also sees
the outbox. The lab is taken down by the `start_lab` fixture of test_lab_e2e, which checks that no namespace,
process or file is left behind.
"""

import json
import subprocess
import sys

import apprise
import pytest

from lab import manager, receiver, vxlan
from lab.plan import ROOT
from lab.tests.test_lab_e2e import start_lab  # noqa: F401  (the fixture: a lab per call, always taken down)
from machines.models import Machine
from monitoring.models import Channel, Notification
from tests.support.net import free_port, wait_for
from tests.support.processes import database_url

# Unreachable after ~3 + 3 × (1 + 2) s; every alert then waits the group window (10 s) for company.
ALERT_TIMEOUT = 60


def received(state: vxlan.State, count: int) -> list[dict]:
    """Wait until the receiver has `count` alerts; their JSON bodies (Apprise: title, message, type)."""

    def arrived() -> list[dict] | None:
        records = receiver.read(state.alerts_path)
        return records if len(records) >= count else None

    records = wait_for(arrived, ALERT_TIMEOUT, interval=0.2, message=f"{count} alerts at the lab's receiver")
    return [record["payload"] for record in records]


@pytest.mark.netns
@pytest.mark.django_db(transaction=True)
def test_one_message_per_incident_reaches_the_labs_receiver(start_lab, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VXLANMGR_NOTIFY_GROUP_THRESHOLD", "3")
    running = start_lab("--database-url", database_url())
    state = running.state
    h1, h2, h3, h4, h5 = state.plan.hosts
    assert state.settings["VXLANMGR_NOTIFY_GROUP_THRESHOLD"] == "3"
    assert "vxlanlab alerts" in running.up_output
    # The lab's receiver is the manager's one channel, seeded from VXLANMGR_NOTIFY_URLS.
    [channel] = Channel.objects.all()
    assert channel.url == vxlan.RECEIVER_URL and channel.from_environment
    assert "No alerts yet" in running.run("alerts")

    # 1. One host fails: exactly one "unreachable" message, naming it, linking to its page on the dashboard.
    running.run("fail", h2.key)
    [down] = received(state, 1)
    pk = Machine.objects.get(ip_address=h2.overlay_ip).pk
    assert down["type"] == "failure"
    assert down["title"] == f"[vxlanmgr] {h2.hostname} ({h2.overlay_ip}) became unreachable"
    assert f"IP address: {h2.overlay_ip}" in down["message"] and "VNI: 100" in down["message"]
    assert f"Machine page: {state.url}machines/{pk}" in down["message"]

    # 2. It comes back: exactly one "recovered" message with the outage's length.
    running.run("recover", h2.key)
    up = received(state, 2)[1]
    assert (up["type"], up["title"]) == ("success", f"[vxlanmgr] {h2.hostname} ({h2.overlay_ip}) recovered")
    assert "outage of" in up["message"]

    # 3. Four hosts fail at once, more than the threshold of 3: one message listing them.
    four = [h1, h3, h4, h5]
    running.run("fail", *(host.key for host in four))
    group = received(state, 3)[2]
    assert group["title"] == "[vxlanmgr] 4 machines became unreachable"
    assert all(f"{host.hostname} ({host.overlay_ip})" in group["message"] for host in four)
    assert h2.overlay_ip not in group["message"]

    # 4. And they come back together: one message again.
    running.run("recover", *(host.key for host in four))
    back = received(state, 4)[3]
    assert back["title"] == "[vxlanmgr] 4 machines recovered"

    # Nothing else is on its way: every host is active, every alert row sent, and the receiver got those four.
    wait_for(lambda: not Machine.objects.exclude(status="active").exists(), 30, message="every host active")
    wait_for(lambda: not Notification.objects.exclude(state=Notification.State.SENT).exists(), 30,
             message="every alert sent")
    assert Notification.objects.count() == 1 + 1 + 4 + 4
    assert [record["payload"] for record in receiver.read(state.alerts_path)] == [down, up, group, back]

    # What an operator sees.
    text = running.run("alerts")
    assert text.count("FAILURE") == 2 and text.count("SUCCESS") == 2
    assert "4 machines became unreachable" in text and f"IP address: {h2.overlay_ip}" in text
    lines = running.run("alerts", "--json").splitlines()
    assert [json.loads(line)["payload"]["title"] for line in lines] == [
        down["title"], up["title"], group["title"], back["title"]
    ]
    assert "4 received" in running.run("status")


def test_the_receiver_records_what_apprise_posts_and_the_command_prints_it(tmp_path):
    """Without a lab: lab/receiver.py on this machine's loopback, sent to by Apprise as the manager does."""
    port, output = free_port(), tmp_path / "alerts.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "lab.receiver", "--port", str(port), "--output", str(output)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert receiver.READY in process.stdout.readline()
        app = apprise.Apprise()
        assert app.add(f"json://127.0.0.1:{port}/alerts")
        assert app.notify(title="[vxlanmgr] lab-h2 (10.100.0.12) became unreachable", body="Host: lab-h2\nVNI: 100",
                          notify_type=apprise.NotifyType.FAILURE)
    finally:
        process.terminate()
        process.wait(10)
    [record] = receiver.read(output)
    assert record["path"] == "/alerts" and record["payload"]["type"] == "failure"
    text = receiver.describe(record)
    assert "FAILURE   [vxlanmgr] lab-h2 (10.100.0.12) became unreachable" in text
    assert text.splitlines()[1:] == ["          Host: lab-h2", "          VNI: 100"]


def test_the_labs_manager_alerts_its_own_receiver_with_the_group_settings_of_up(tmp_path):
    environ = {"VXLANMGR_NOTIFY_GROUP_THRESHOLD": "3", "VXLANMGR_FLAP_LIMIT": "6", "VXLANMGR_NOTIFY_URLS": "json://x"}
    state = vxlan.new_state(tmp_path, vxlan.Config(port=8900), "", environ=environ)
    env = manager.manager_env(state)
    # Only the lab's receiver: the manager's namespace has no route to anything else.
    assert env["VXLANMGR_NOTIFY_URLS"] == vxlan.RECEIVER_URL == "json://127.0.0.1:8025/alerts"
    assert env["VXLANMGR_BASE_URL"] == "http://127.0.0.1:8900"
    assert env["VXLANMGR_NOTIFY_GROUP_THRESHOLD"] == "3" and env["VXLANMGR_FLAP_LIMIT"] == "6"
    assert "127.0.0.1" in env["no_proxy"].split(",") and "127.0.0.1" in env["NO_PROXY"].split(",")
    assert state.alerts_path == tmp_path / "alerts.jsonl"
