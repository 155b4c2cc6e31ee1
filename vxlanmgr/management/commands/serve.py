"""`manage.py serve`: Daphne, and in the embedded default the monitor too, in one process.

One process is what lets the zero-configuration set-up use the in-memory channel layer: the monitor's
pushes reach the dashboard sockets without Redis.
"""

# Daphne installs Twisted's asyncio reactor when its server module is imported; that must come first.
from daphne.server import Server, twisted_loop  # isort: skip

import asyncio
import logging

from daphne.endpoints import build_endpoint_description_strings
from django.conf import settings
from django.core.management.base import BaseCommand
from twisted.internet import defer, reactor

from monitoring.alerts import watch
from monitoring.alerts.channels import seed_at_start_up
from monitoring.alerts.delivery import DeliveryWorker
from monitoring.monitor import Monitor
from vxlanmgr import body_limit

logger = logging.getLogger("vxlanmgr.serve")


class Command(BaseCommand):
    help = "Serve the web application with Daphne; with the embedded default, run the monitor in-process too."

    def add_arguments(self, parser):
        parser.add_argument("--host", help="TCP address to listen on (default 127.0.0.1)")
        parser.add_argument("--port", type=int, help="TCP port to listen on (default 8000)")
        parser.add_argument(
            "--unix-socket",
            help="listen on this Unix socket instead of TCP; with --host or --port as well, on both",
        )
        parser.add_argument(
            "--monitor", choices=["auto", "yes", "no"], default="auto",
            help="run the monitor in this process (auto: only in the embedded default)",
        )

    def handle(self, *args, host, port, unix_socket, monitor, **options):
        from vxlanmgr.asgi import application

        # A deployment that sets VXLANMGR_NOTIFY_URLS needs no extra step.
        seed_at_start_up()
        run_monitor = settings.EMBEDDED_MONITOR if monitor == "auto" else monitor == "yes"
        # TCP unless only a Unix socket was asked for; both when both were (the VXLAN lab does that).
        tcp = not unix_socket or host is not None or port is not None
        host = (host or "127.0.0.1") if tcp else None
        port = (8000 if port is None else port) if tcp else None
        endpoints = build_endpoint_description_strings(host=host, port=port, unix_socket=unix_socket)
        self.monitor = Monitor() if run_monitor else None
        body_limit.install()
        server = Server(
            application=application,
            endpoints=endpoints,
            ready_callable=self._ready,
            action_logger=None,
            verbosity=0,
        )
        where = " and ".join(([f"http://{host}:{port}/"] if tcp else []) + ([unix_socket] if unix_socket else []))
        self.stdout.write(f"vxlanmgr serving on {where}" + (" with the monitor in-process" if run_monitor else ""))
        server.run()

    def _ready(self) -> None:
        self.stopping = asyncio.Event()
        # Every web process watches for a dead monitor: the monitor cannot report its own death.
        tasks = [twisted_loop.create_task(watch.run(self.stopping))]
        # Alerts are delivered from here too (workers share rows by claims): a monitor_down alert must go out
        # while the monitor, whose process also delivers, is the thing that is dead.
        tasks.append(twisted_loop.create_task(DeliveryWorker().run(self.stopping)))
        if self.monitor is not None:
            tasks.append(twisted_loop.create_task(self._run_monitor()))
        # On SIGINT/SIGTERM Daphne stops the reactor; let the monitor and deliveries finish their writes first.
        reactor.addSystemEventTrigger("before", "shutdown", self._stop, asyncio.gather(*tasks))

    async def _run_monitor(self) -> None:
        try:
            # Without ICMP the web side stays up and the dashboard shows why in a banner.
            await self.monitor.run(keep_reporting=True)
        except Exception:
            logger.exception("the in-process monitor stopped")

    def _stop(self, tasks):
        self.stopping.set()
        if self.monitor is not None:
            self.monitor.stop()
        return defer.Deferred.fromFuture(tasks)
