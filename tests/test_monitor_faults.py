"""Faults around the monitor: Redis and the database going away and coming back, ICMP not allowed."""

import asyncio
import contextlib
import socket
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from conftest import require
from machines import services
from machines.models import Machine
from machines.validation import Registration
from monitoring.icmp import PingerUnavailable
from monitoring.monitor import Monitor
from monitoring.status import monitor_problem
from tests.support.namespaces import HOST_IP
from tests.support.net import free_port, wait_for
from tests.support.processes import redis_on_unix_socket, running_monitor
from vxlanmgr.settings import redis_channel_layer

pytestmark = [pytest.mark.django_db(transaction=True)]


def register(ip: str, hostname: str = "host-f") -> Machine:
    data = Registration(ip_address=ip, hostname=hostname, mac_address="02:00:00:00:bb:01", vni=7)
    return services.register_machine(data).machine


def current(machine: Machine) -> Machine:
    return Machine.objects.get(pk=machine.pk)




@pytest.fixture
def private_redis(settings):
    require(bool(__import__("shutil").which("redis-server")), "needs redis-server")
    with redis_on_unix_socket() as redis:
        settings.CHANNEL_LAYERS = {
            "default": redis_channel_layer(redis.url)
        }
        channel_layers.backends.clear()
        yield redis
        channel_layers.backends.clear()


@pytest.fixture
def session_cookie(client, django_user_model):
    from django.contrib.auth.models import Group

    watcher = django_user_model.objects.create_user("watcher")
    watcher.groups.add(Group.objects.get(name="viewer"))
    client.force_login(watcher)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def open_dashboard(cookie: str, machine: Machine) -> WebsocketCommunicator:
    from vxlanmgr.asgi import application

    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]
    communicator = WebsocketCommunicator(application, "/ws/dashboard/", headers=headers)
    connected, _subprotocol = await communicator.connect()
    assert connected
    await communicator.send_json_to({"visible": str(machine.pk), "status": "", "q": "", "page": "1"})
    return communicator


async def receive_row(communicator, machine: Machine, status: str, timeout: float, monitor=None) -> float:
    """Wait for the pushed row of `machine` in `status`; returns how long it took."""
    started = time.monotonic()
    marker = f'<tr id="machine-{machine.pk}" class="machine-row row-{status}'
    while True:
        remaining = timeout - (time.monotonic() - started)
        try:
            assert remaining > 0
            html = await communicator.receive_from(timeout=remaining)
        except (AssertionError, TimeoutError):
            seen = await sync_to_async(lambda: current(machine).status)()
            log = monitor.output() if monitor else ""
            raise AssertionError(f"no push of {status} within {timeout} s (status {seen})\n{log}") from None
        if marker in html:
            return time.monotonic() - started


@pytest.mark.netns
@pytest.mark.redis
async def test_monitor_pushes_reach_the_browser_socket_and_resume_after_redis_returns(
    lab, private_redis, session_cookie
):
    manager, host = lab
    machine = await sync_to_async(register)(HOST_IP)
    with running_monitor(manager.command(), REDIS_URL=private_redis.url) as monitor:
        communicator = await open_dashboard(session_cookie, machine)
        try:
            await receive_row(communicator, machine, "active", 15, monitor)
            await asyncio.to_thread(host.sysctl, "net.ipv4.icmp_echo_ignore_all", 1)
            await receive_row(communicator, machine, "unreachable", 15, monitor)
        finally:
            await communicator.disconnect()

        # Redis goes away: checks and their results carry on, only the pushes pause.
        private_redis.stop()
        await asyncio.to_thread(host.sysctl, "net.ipv4.icmp_echo_ignore_all", 0)
        await asyncio.to_thread(
            wait_for, lambda: current(machine).status == "active", 15, 0.1, "recovery while Redis is down"
        )
        assert "live updates paused" in monitor.output()

        # Redis is back: a dashboard that (re)connects receives pushes again.
        private_redis.start()
        channel_layers.backends.clear()
        communicator = await open_dashboard(session_cookie, machine)
        try:
            await asyncio.to_thread(host.sysctl, "net.ipv4.icmp_echo_ignore_all", 1)
            await receive_row(communicator, machine, "unreachable", 15)
        finally:
            await communicator.disconnect()
        assert "live updates resumed" in monitor.output()


class PausableProxy:
    """A TCP forwarder to PostgreSQL that can drop every connection and refuse new ones, like an outage."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def pause(self) -> None:
        if self.listener:
            # shutdown first: a bare close leaves the accept() blocked in the other thread taking connections.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for conn in self.connections:
                # shutdown, not just close: it wakes the pipe thread blocked in recv and tells both ends.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self.connections.clear()

    close = pause

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass


@pytest.mark.postgres
def test_a_database_outage_at_start_and_mid_run_judges_no_machine(require_postgres):
    from django.db import connection

    # Loopback always answers, so every status change here would be the monitor's own fault.
    machines = [register(f"127.0.79.{n}", f"loop-{n}") for n in range(1, 4)]
    proxy = PausableProxy(("127.0.0.1", int(connection.settings_dict.get("PORT") or 5432)))
    url = f"postgres://postgres@127.0.0.1:{proxy.port}/{connection.settings_dict['NAME']}"
    with running_monitor(DATABASE_URL=url) as monitor, contextlib.closing(proxy):
        # The database is unreachable at start (however long the start takes on a loaded machine).
        wait_for(lambda: _monitor_lines(monitor.output(), "database unavailable"), 30, message="an error at start")
        assert monitor.process.poll() is None, monitor.output()
        assert all(current(m).status == "pending" for m in machines)
        proxy.start()
        wait_for(lambda: all(current(m).status == "active" for m in machines), 20, message="checks after start")

        proxy.pause()  # and now mid-run, longer than the connection pool waits for a connection
        time.sleep(8)
        assert monitor.process.poll() is None
        assert _monitor_lines(monitor.output(), "database unavailable") == 2, monitor.output()
        proxy.start()
        before = max(current(m).last_checked_at for m in machines)
        wait_for(
            lambda: min(current(m).last_checked_at for m in machines) > before, 40, message="checks to resume"
        )
        assert all(current(m).status == "active" for m in machines)
        assert all(current(m).consecutive_failures == 0 for m in machines)
        output = monitor.output()
        assert _monitor_lines(output, "database reachable again") == 2, output


def test_without_icmp_the_embedded_monitor_keeps_the_web_up_and_explains_why(operator_client):
    def no_icmp():
        raise PingerUnavailable("cannot open ICMP sockets: run as root, or sysctl -w net.ipv4.ping_group_range=...")

    async def run_briefly():
        monitor = Monitor(pinger_factory=no_icmp)
        task = asyncio.create_task(monitor.run(keep_reporting=True))
        await asyncio.sleep(1.0)
        monitor.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(run_briefly())
    assert "ping_group_range" in monitor_problem()
    html = operator_client.get("/").content.decode()
    assert 'id="monitor-banner"' in html and "cannot send pings" in html


def _monitor_lines(output: str, text: str) -> int:
    """Lines of the monitor loop's own logger saying `text` (the alert worker in the process logs its own)."""
    return sum(" vxlanmgr.monitor " in line and text in line for line in output.splitlines())
