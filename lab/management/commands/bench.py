"""`manage.py bench`: the benchmarks behind `make bench`; writes docs/benchmarks.md.

It needs PostgreSQL (DATABASE_URL naming a database whose name contains "bench": it is dropped and created
again), Redis (REDIS_URL, a database number of its own: it is flushed), root for network namespaces, nft
and fping. See lab/benchmarks/.
"""

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from lab import netns

PARTS = ("register", "dashboard", "metrics", "push", "sweep", "daemon", "scale", "shared", "storage", "alerts")
METHODS = [
    "- **Sweep**: N targets 127.10.x.y in a fresh network namespace (only `lo`, where all of 127.0.0.0/8 "
    "answers). A child process inside it alternates our round (`monitoring.icmp.Pinger.ping_batch`, 1 echo "
    "request, 1 s timeout, in the ICMP mode the monitor picks, on a Pinger opened before the clock starts; wall "
    "time and the process's CPU time around the batch) and `fping -c1 -t1000 -i0 -q` on the same targets (wall "
    "time around the process, its CPU time from getrusage); medians of the repetitions. Then an nft set drops "
    "echo requests to every tenth target silently and both run again. Ratio = ours / fping.",
    "- **Sweep (daemon)**: the real `manage.py monitor` in a namespace, on PostgreSQL through its Unix socket, "
    "default ping settings (2 requests, 1 s timeout, 1,000 checks in flight). (a) Every machine due at once "
    "and due again 1 s after each check: ping results written per second after a warm-up. (b) The default "
    "schedule's steady state (every machine once a minute, due times spread evenly): checks per second and the "
    "age of the oldest due check not yet claimed, sampled every 0.25 s. RSS is the monitor's VmHWM.",
    "- **Monitor at scale**: the real `manage.py monitor`, as in the daemon sweep, on machines written by one "
    "`INSERT … SELECT generate_series` (127.10.0.0 and up), each monitor in a namespace of its own. One monitor "
    "with `--scale-machines` (100,000), then two unscoped monitors sharing `--shared-machines` (10,000). (a) "
    "Every machine due at once and due again 1 s after each check: the ceiling. (b) The default schedule: once "
    "the monitors' first heartbeats are in, every machine's due time is spread evenly over the next 60 s (in an "
    "order shuffled against the ids); after a warm-up, checks per second over exactly one interval (from the "
    "batches' commit times), the oldest due-but-unclaimed check sampled every 0.25 s, and each machine's ping "
    "results in that interval counted: on schedule a machine has one, a machine checked twice in a round two. "
    "The closest two checks of one machine over the whole run are shown too. RSS is the VmHWM of the monitor(s) "
    "over both runs. The load average before and after is in the notes.",
    "- **Register**: the real server (`manage.py serve --monitor no`, Daphne) on 127.0.0.1 with PostgreSQL "
    "and Redis. 50 concurrent asyncio tasks each PUT `/api/machines/{ip}` with a *register* token through an "
    "`httpx` client of the host's own, bound to its source address `ip` (on lo): one new connection per host, "
    "as rebooting hosts do; latency is from handing the request to httpx (so connecting counts) to the last "
    "byte of the answer. The reference: the same tasks GET a static file the same way, a new client and "
    "connection per request, 1,000 times after every storm (and before a single one); the target is the "
    "ratio of the storms' median to the median of these. The clients' CPU per request (the bench process's "
    "CPU time around storm and reference) shows what they take from the cores the server runs on. Hosts "
    "answered 429 are then registered by `docs/register-machine.sh` (its retry and backoff) with an API "
    "token; the count of registered machines is checked afterwards. The profile: in the bench process, "
    "Django's test client PUTs 300 new hosts through the full middleware stack and the view against the same "
    "database and Redis (no Daphne, no thread hand-off), timed once as is and once under cProfile; the "
    "functions with the most own time, and the project's functions with the most cumulative time, as shares "
    "of the profiled time.",
    "- **Dashboard**: the same server, logged in, one request at a time on one kept-alive `httpx` connection "
    "per figure, the figures taking turns: `/` (full page), `/?q=…` with `HX-Request` (the fragment htmx swaps) and "
    "`GET /api/machines?page_size=500` (API token). Server time = time to the response head (Django renders "
    "the whole body first). The page-vs-list ratio divides the first page's median server time by the JSON "
    "list's, both from the same run. The client's own share of these times is measured in the same run: "
    "httpx's time to the response head from a loopback server (a process of its own) that answers at once. "
    "Machines in a running installation's mix: 1 % unreachable, 0.5 % pending, the rest active.",
    "- **Metrics**: the same server, `GET /metrics` with an API token, one request at a time on one kept-alive "
    "`httpx` connection, per-machine series on (`VXLANMGR_METRICS_PER_MACHINE=1`), the same machine mix, and one "
    "live monitor heartbeat carrying counters. Server time = time to the response head (the whole text is "
    "rendered first). The body is parsed with `prometheus_client.parser` and its machine counts are checked "
    "against the database. In the bench process the collector is then timed in two halves: the database read "
    "into metric families, and `prometheus_client.generate_latest`.",
    "- **Push**: WebSocket clients (the `websockets` library, without compression, as the server accepts "
    "none) on the server's `/ws/dashboard/` showing the first page. A producer commits a status flip of a "
    "machine on that page through `monitoring.checks.record_checks` with a claim, then pushes the monitor's "
    "own event (`monitoring.monitor.change_event`) through `monitoring.broadcast.push`. Time from commit to "
    "each client receiving the frame with that row; 200 changes, one after the other. The fragment's size is "
    "the length of that frame's text in characters (its UTF-8 bytes in the notes); its reference is the "
    "length measured the same way with each machine rendered twice, as a table row and a phone card.",
    "- **Alerts**: the real delivery worker (`manage.py deliver_alerts`, the one the monitor runs, on its own) "
    "sends through Apprise's `json://` to recording HTTP servers on 127.0.0.1 in the bench process, with the "
    "default group threshold and window; the channels take `unreachable` and `recovered` only. Latency (at the "
    "largest N): a producer claims an active machine, a different one each time, and commits a failed check "
    "that makes it unreachable through `monitoring.checks.record_checks`, which writes the alert in that "
    "transaction; the clock runs from that commit to the request arriving at the receiver. One change at a "
    "time, the next after the alert arrived and a pause, so every alert is alone in its group window and waits "
    "it out. Storm: every machine is claimed one check short of unreachable and the failures are recorded in "
    "batches of `VXLANMGR_PING_CONCURRENCY` (1,000), back to back, as the monitor records its batches; 3 "
    "channels. Messages are counted per channel, with the machines they name, once every alert row is sent and "
    "no message came for 3 s; the time runs from the first commit to the last message of any channel.",
    "- **Storage**: one day of ping results (one per minute, the default interval) for 100 machines, inserted "
    "minute by minute like the monitor writes them; `pg_total_relation_size` (heap, indexes, TOAST) after "
    "VACUUM ANALYZE, divided by the machines.",
]


class Context:
    def __init__(self, stdout, log_dir: Path):
        self.stdout = stdout
        self.log_dir = log_dir
        self.raw: dict = {}
        self.started = time.monotonic()

    def log(self, message: str) -> None:
        self.stdout.write(f"[{time.monotonic() - self.started:6.1f} s] {message}")
        self.stdout.flush()


class Command(BaseCommand):
    help = (
        "Run the benchmarks (sweep, register, dashboard, metrics, push, scale, storage, alerts) and write "
        "docs/benchmarks.md."
    )

    def add_arguments(self, parser):
        parser.add_argument("--sizes", default="1000,10000", help="machine counts, comma-separated")
        parser.add_argument("--reps", type=int, default=5, help="repetitions of each sweep round")
        parser.add_argument("--storm-reps", type=int, default=3, help="storms at N ≤ 1,000 (one at larger N)")
        parser.add_argument("--storm-budget", type=float, default=60.0, help="seconds one storm may take")
        parser.add_argument("--page-reps", type=int, default=20, help="requests per dashboard and metrics figure")
        parser.add_argument("--changes", type=int, default=200, help="status changes per push figure")
        parser.add_argument(
            "--alert-changes", type=int, default=50,
            help="single status changes for the alert latency (each waits the group window, 10 s by default)",
        )
        parser.add_argument(
            "--scale-machines", type=int, default=100_000,
            help="machines for the one-monitor scale run (part 'scale'); 0 leaves it out",
        )
        parser.add_argument("--shared-machines", type=int, default=10_000,
                            help="machines two monitors share (part 'shared')")
        parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run, of {', '.join(PARTS)}")
        parser.add_argument("--output", default=str(Path(settings.BASE_DIR) / "docs" / "benchmarks.md"))
        parser.add_argument("--log-dir", default=str(Path(settings.BASE_DIR) / "var" / "bench"))

    def handle(self, *args, sizes, reps, storm_reps, storm_budget, page_reps, changes, alert_changes, only, output,
               log_dir, scale_machines, shared_machines, **options):
        sizes = sorted(int(size) for size in sizes.split(","))
        parts = {part.strip() for part in only.split(",") if part.strip()}
        if unknown := parts - set(PARTS):
            raise CommandError(f"unknown parts: {', '.join(sorted(unknown))}")
        if scale_machines <= 0:
            parts.discard("scale")
        if max(sizes) > settings.MAX_MACHINES:
            raise CommandError(f"VXLANMGR_MAX_MACHINES={settings.MAX_MACHINES} is below N={max(sizes)}")
        self._check_environment(parts)
        try:  # httpx and websockets, the harness's clients, are development requirements
            from lab.benchmarks import alerts, common, dashboard, metrics, push, register, report, scale, storage, sweep
        except ModuleNotFoundError as exc:
            raise CommandError(f"{exc}: install the development requirements (requirements-dev.txt)") from exc
        log_path = Path(log_dir)
        shutil.rmtree(log_path, ignore_errors=True)
        log_path.mkdir(parents=True)
        ctx = Context(self.stdout, log_path)
        load_before = report.load_average()
        self._fresh_database()
        ctx.log(f"fresh database {settings.DATABASES['default']['NAME']} and Redis DB; sizes {sizes}")

        from django.core.cache import cache

        from machines.models import ApiToken
        from machines.tokens import create_token

        cache.clear()
        rows = []
        server_env = common.child_env(VXLANMGR_LOG_LEVEL="WARNING", VXLANMGR_METRICS_PER_MACHINE="1")
        with common.Server(log_path, server_env) as server:
            ctx.log(f"server on 127.0.0.1:{server.port}")
            cookie = common.session_cookie()
            _token, api_token = create_token("bench reader", ApiToken.Scope.API)
            for n in sizes:
                if "register" in parts:
                    storms = storm_reps if n <= 1000 else 1
                    rows += register.run(ctx, server.port, n, storms, storm_budget, profile=n == sizes[0])
                else:
                    common.reset_inventory()
                    common.seed_machines(n)
                common.apply_mix()
                if "dashboard" in parts:
                    rows += dashboard.run(ctx, server.port, server.process.pid, cookie, api_token, n, page_reps)
                if "metrics" in parts:
                    rows += metrics.run(ctx, server.port, server.process.pid, api_token, n, page_reps)
                if "push" in parts:
                    unshared = 10 if n == max(sizes) else 0
                    rows += push.run(ctx, server.port, cookie, n, (1, 50), changes, unshared_changes=unshared)
                if "sweep" in parts:
                    rows += sweep.run_rounds(ctx, n, reps)
                if "daemon" in parts:
                    rows += sweep.run_daemon(ctx, n, 12.0)
                if "alerts" in parts:
                    rows += alerts.run(ctx, n, alert_changes, latency=n == max(sizes))
            # Machines of their own (the inventory is written again), before storage, which needs only 100.
            if "scale" in parts:
                rows += scale.run_scale(ctx, scale_machines)
            if "shared" in parts:
                rows += scale.run_shared(ctx, shared_machines)
            if "storage" in parts:
                rows += storage.run(ctx)
        duration = time.monotonic() - ctx.started
        daemon = ctx.raw.get(f"daemon_{max(sizes)}")
        meta = {
            "date": report.now_utc(),
            "duration": duration,
            "load_before": load_before,
            "load_after": report.load_average(),
            "max_machines": settings.MAX_MACHINES,
            "server_note": "the server (one Daphne process) with its default PostgreSQL connection pool",
            "methods": METHODS,
            "register_profile": ctx.raw.get("register_profile"),
            "daemon_slow": bool(daemon and daemon["rate"] < 2 * daemon["demand"]),
        }
        text = report.render(rows, report.machine_info(), meta)
        report.write(Path(output), text)
        (log_path / "results.json").write_text(
            json.dumps({"rows": [dataclasses.asdict(row) for row in rows], "raw": ctx.raw, "meta": meta}, indent=1)
        )
        ctx.log(f"wrote {output} in {duration:.0f} s total")
        missed = [row for row in rows if row.met is False]
        for row in missed:
            ctx.log(f"target missed: {row.area} {row.figure} N={row.n}: {row.value} {row.unit} ({row.target})")

    def _check_environment(self, parts: set[str]) -> None:
        database = settings.DATABASES["default"]
        if database["ENGINE"] != "django.db.backends.postgresql":
            raise CommandError("set DATABASE_URL to a PostgreSQL database, e.g. postgres://postgres@127.0.0.1/vxlanmgr_bench")
        if "bench" not in database["NAME"]:
            raise CommandError(f"the database {database['NAME']!r} is dropped and created again: its name must "
                               "contain 'bench'")
        if not settings.REDIS_URL:
            raise CommandError("set REDIS_URL to a Redis database of its own, e.g. redis://127.0.0.1:6379/14")
        if parts & {"sweep", "daemon", "scale", "shared"}:
            if not netns.netns_available():
                raise CommandError("the sweep needs root and `ip netns` (iproute2)")
            if not netns.nft_available():
                raise CommandError("the sweep needs nftables (Debian: nftables)")
            if not shutil.which("fping"):
                raise CommandError("the sweep compares with fping (Debian: fping)")
            netns.cleanup_stale_namespaces()
        if os.geteuid() != 0 and "register" in parts:
            raise CommandError("run as root: the register storm binds 127.10.x.y source addresses")

    def _fresh_database(self) -> None:
        import psycopg
        from django.db import connections
        from psycopg import sql

        database = settings.DATABASES["default"]
        connections.close_all()
        params = {
            "host": database.get("HOST") or None,
            "port": database.get("PORT") or None,
            "user": database.get("USER") or None,
            "password": database.get("PASSWORD") or None,
        }
        with psycopg.connect(dbname="postgres", autocommit=True, **{k: v for k, v in params.items() if v}) as pg:
            name = sql.Identifier(database["NAME"])
            pg.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            pg.execute(sql.SQL("CREATE DATABASE {}").format(name))
        call_command("migrate", verbosity=0, interactive=False)
