"""`manage.py deliver_alerts`: only the alert delivery worker, until SIGTERM.

The monitor (and `manage.py serve` in the embedded default) delivers alerts already; this runs more workers
beside it, or delivery alone (e.g. while the monitor is stopped for maintenance).
"""

import asyncio
import signal

from django.core.management.base import BaseCommand

from monitoring.alerts.delivery import SEND_TIMEOUT, DeliveryWorker
from monitoring.monitor import use_one_persistent_connection


class Command(BaseCommand):
    help = "Send pending alerts through their channels (Apprise) until stopped."

    def add_arguments(self, parser):
        parser.add_argument(
            "--send-timeout", type=float, default=SEND_TIMEOUT,
            help=f"seconds one send may take before it counts as failed (default {SEND_TIMEOUT:g}); a killed "
                 "worker's alerts are sent again after about twice this",
        )

    def handle(self, *args, send_timeout, **options):
        use_one_persistent_connection()
        asyncio.run(self._run(DeliveryWorker(send_timeout=send_timeout)))

    async def _run(self, worker: DeliveryWorker) -> None:
        loop = asyncio.get_running_loop()
        # Handlers only ask the worker to stop; it lets sends in flight finish and returns.
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
