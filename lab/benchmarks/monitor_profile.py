"""`manage.py monitor` with its database calls timed and profiled: ``python -m lab.benchmarks.monitor_profile OUT``.

The bench starts this instead of the plain monitor when ``BENCH_MONITOR_PROFILE`` is set in its environment:
``1`` profiles and times, ``time`` only times (no profiler overhead).
The monitor does all its database work on one thread, so cProfile runs only inside the calls of interest
(enabled and disabled around each on that thread) and the ping loop's own work stays out of the profile.
On exit it writes OUT (pstats) and OUT.json: calls, total and worst seconds per function.

``BENCH_MONITOR_PATCH=FILE`` runs FILE (Python) after Django is set up and before the monitor starts: a way to
measure a change to the monitor under the bench without editing it.
"""

from __future__ import annotations

import cProfile
import functools
import json
import os
import sys
import time


def main(out: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vxlanmgr.settings")
    import django

    django.setup()
    from monitoring import checks

    if patch := os.environ.get("BENCH_MONITOR_PATCH"):
        with open(patch) as handle:
            exec(compile(handle.read(), patch, "exec"), {"__name__": "bench_monitor_patch"})  # noqa: S102

    profiler = cProfile.Profile() if os.environ.get("BENCH_MONITOR_PROFILE") != "time" else None
    timings: dict[str, list[float]] = {}

    def wrap(name: str):
        original = getattr(checks, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            try:
                return original(*args, **kwargs)
            finally:
                if profiler:
                    profiler.disable()
                timings.setdefault(name, []).append(time.perf_counter() - started)

        setattr(checks, name, timed)

    for name in ("claim_due", "record_checks"):
        wrap(name)
    from django.core.management import call_command

    try:
        call_command("monitor")
    finally:
        if profiler:
            profiler.dump_stats(out)
        summary = {name: {"calls": len(values), "total": sum(values), "max": max(values)}
                   for name, values in timings.items() if values}
        with open(out + ".json", "w") as handle:
            json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
