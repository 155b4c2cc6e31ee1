"""`manage.py monitor`: the liveness daemon, one asyncio process beside the web server."""

import asyncio
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring.alerts.channels import seed_at_start_up
from monitoring.alerts.delivery import DeliveryWorker
from monitoring.icmp import PingerUnavailable
from monitoring.monitor import Monitor, use_one_persistent_connection
from monitoring.scope import Scope, ScopeError

logger = logging.getLogger("vxlanmgr.monitor")


class Command(BaseCommand):
    help = "Ping every registered machine, track failures and recoveries, and push changes to dashboards."

    def add_arguments(self, parser):
        parser.add_argument(
            "--scope", default=settings.MONITOR_SCOPE,
            help="check only these machines: vni=100,200 or prefix=10.100.0.0/24 (terms joined by ';' add up); "
                 "default VXLANMGR_MONITOR_SCOPE, or every machine",
        )
        parser.add_argument("--name", default="", help="the name the dashboard shows (default host:pid)")

    def handle(self, *args, scope: str, name: str, **options):
        try:
            scope = Scope.parse(scope)
        except ScopeError as exc:
            raise CommandError(str(exc)) from None
        use_one_persistent_connection()
        # The channels of VXLANMGR_NOTIFY_URLS, before the worker sends through them.
        seed_at_start_up()
        monitor = Monitor(name=name or None, scope=scope)
        try:
            monitor.start_pinger()
        except PingerUnavailable as exc:
            raise CommandError(str(exc)) from None
        asyncio.run(self._run(monitor))

    async def _run(self, monitor: Monitor) -> None:
        loop = asyncio.get_running_loop()
        # Handlers only ask the loop to stop; the loop finishes the writes in flight and returns.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, monitor.stop)
        # The monitor process also delivers alerts; it stops with the monitor, after its sends in flight.
        delivery = asyncio.create_task(DeliveryWorker().run(monitor.shutdown))
        try:
            await monitor.run()
        finally:
            monitor.stop()
            await delivery
