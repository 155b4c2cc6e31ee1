"""ICMP echo checks for the machine monitor. This is the only vxlanmgr code that sends ICMP.

Usage from the monitor loop (one :class:`Pinger` for the life of the process)::

    pinger = Pinger()                     # probes privileges, opens one ICMP socket per address family
    results = await pinger.ping_batch(["10.1.0.7", "fd00::7"], count=2, timeout=1.0)
    results["10.1.0.7"].ok, .rtt_ms, .loss, .failure, .detail
    pinger.close()                        # on shutdown

The modules:

* :mod:`~monitoring.icmp.sockets`: which ICMP sockets this process may open (:func:`probe_privileges`,
  :class:`PingerMode`, :class:`PingerUnavailable`) and how each is configured;
* :mod:`~monitoring.icmp.codec`: the echo requests we send and the decoding of replies and ICMP errors;
* :mod:`~monitoring.icmp.engine`: :class:`Pinger`, which runs batches: rounds, matching, the deadline;
* :mod:`~monitoring.icmp.batch`: a batch's targets and counters, from input addresses to results;
* :mod:`~monitoring.icmp.results`: :class:`PingResult` and what ``ok`` / ``failure`` mean.

Run ``python -m monitoring.icmp --help`` for a command-line front end that prints JSON (used by the
namespace tests, handy for debugging a deployment).
"""

from .engine import DEFAULT_COUNT, DEFAULT_INTERVAL, DEFAULT_TIMEOUT, MAX_COUNT, Pinger, ping_batch
from .results import Failure, PingResult
from .sockets import DEFAULT_RCVBUF, PingerMode, PingerUnavailable, probe_privileges

__all__ = [
    "DEFAULT_COUNT",
    "DEFAULT_INTERVAL",
    "DEFAULT_RCVBUF",
    "DEFAULT_TIMEOUT",
    "MAX_COUNT",
    "Failure",
    "PingResult",
    "Pinger",
    "PingerMode",
    "PingerUnavailable",
    "ping_batch",
    "probe_privileges",
]
