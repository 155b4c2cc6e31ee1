"""`manage.py history`: where each history tier stands, and a way to catch up without a monitor running."""

from django.core.management.base import BaseCommand
from django.db.models import Count, Max, Min

from monitoring import history
from monitoring.models import DailyBucket, HourlyBucket, PingResult


class Command(BaseCommand):
    help = (
        "Show each history tier (raw results, hourly and daily buckets): rows, oldest, newest, folded until. "
        "With --catch-up, fold and prune until up to date (the monitor does this continuously)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--catch-up", action="store_true", help="Fold and prune until nothing is left to do.")
        parser.add_argument(
            "--slice", type=int, default=history.SLICE, metavar="N",
            help=f"Machines per fold transaction (default {history.SLICE}).",
        )

    def handle(self, *args, **options):
        if options["catch_up"]:
            history.SLICE = max(1, options["slice"])
            folder = history.Folder()
            steps = 0
            while (done := folder.step()) is not None:
                steps += 1
                if done.startswith(("folded", "pruned")):
                    self.stdout.write(done)
            self.stdout.write(f"up to date after {steps} steps")
        self._status()

    def _status(self) -> None:
        tiers = [
            ("raw", PingResult.objects.aggregate(rows=Count("pk"), first=Min("checked_at"), last=Max("checked_at")),
             history.mark(history.HOURLY)),
            ("hour", HourlyBucket.objects.aggregate(rows=Count("start"), first=Min("start"), last=Max("start")),
             history.mark(history.DAILY)),
            ("day", DailyBucket.objects.aggregate(rows=Count("start"), first=Min("start"), last=Max("start")), None),
        ]
        for name, figures, folded in tiers:
            span = "empty"
            if figures["rows"]:
                span = f"{figures['first']:%Y-%m-%d %H:%M} … {figures['last']:%Y-%m-%d %H:%M}"
            line = f"{name:>4}: {figures['rows']:>10,} rows, {span}"
            if folded:
                line += f"; folded into the next tier until {folded:%Y-%m-%d %H:%M} UTC"
            self.stdout.write(line)
