"""The benchmark harness behind `make bench` (`python manage.py bench`).

One module per area, each with a ``run(ctx, ...)`` that returns rows for the report:

* :mod:`.sweep`     one check round in a network namespace vs ``fping -i0``; the real monitor's throughput,
                    due lag and RSS
* :mod:`.scale`     one monitor and 100,000 machines on the default schedule; two monitors sharing 10,000
                    (:mod:`.monitor_profile` times and profiles a monitor's database calls when asked)
* :mod:`.register`  a boot storm of hosts registering through the real server, 50 clients at once
* :mod:`.dashboard` server time of the dashboard page, its filtered fragment and the JSON list
* :mod:`.push`      monitor commit → WebSocket fragment on 1 and 50 connected dashboards
* :mod:`.storage`   bytes of ping results per machine per day
* :mod:`.report`    the machine description and ``docs/benchmarks.md``

Everything runs against the dedicated database and Redis DB the command is given; the database is
dropped and created again at the start, so it must be a benchmark database (its name contains "bench").
Pings only go to 127.0.0.0/8 inside namespaces the harness creates; servers listen on 127.0.0.1 only.
"""
