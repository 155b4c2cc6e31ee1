"""``python -m monitoring.icmp``: ping addresses in one batch (or several on the same sockets) and print
the results as JSON, with how long each batch took, its CPU time and how long the event loop was blocked.
The namespace tests drive the pinger through it; handy for debugging a deployment."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from . import (
    DEFAULT_COUNT,
    DEFAULT_INTERVAL,
    DEFAULT_RCVBUF,
    DEFAULT_TIMEOUT,
    Pinger,
    PingerMode,
    PingerUnavailable,
    probe_privileges,
)


async def _run(args: argparse.Namespace, addresses: list[str]) -> dict:
    pinger = Pinger(args.mode, ident=args.ident, sequence_start=args.sequence_start, rcvbuf=args.rcvbuf)
    lag = {"max": 0.0}

    async def ticker() -> None:  # measures how long the event loop was blocked
        expected = time.monotonic() + 0.005
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            lag["max"] = max(lag["max"], now - expected)
            expected = now + 0.005

    report: dict = {
        "mode": pinger.mode.value,
        "ident": pinger.ident(4),
        "ident6": pinger.ident(6),
        "rcvbuf": pinger.rcvbuf(4),
        "batches": [],
    }
    tick = asyncio.create_task(ticker())
    try:
        for _ in range(args.repeat):
            lag["max"] = 0.0
            cpu, wall = time.process_time(), time.monotonic()
            results = await pinger.ping_batch(addresses, args.count, args.timeout, interval=args.interval)
            max_lag = lag["max"]
            report["batches"].append(
                {
                    "duration_s": round(time.monotonic() - wall, 4),
                    "cpu_s": round(time.process_time() - cpu, 4),
                    "loop_max_lag_ms": round(max_lag * 1000, 2),
                    "stats": pinger.last_stats,
                    "results": {address: result.as_dict() for address, result in results.items()},
                }
            )
    finally:
        tick.cancel()
        pinger.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.icmp", description="Ping addresses in one batch and print the results as JSON."
    )
    parser.add_argument("addresses", nargs="*", help="IP addresses (or give them on stdin with --stdin)")
    parser.add_argument("--stdin", action="store_true", help="read whitespace-separated addresses from stdin")
    parser.add_argument("-c", "--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("-W", "--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("-i", "--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument("--mode", choices=[m.value for m in PingerMode], default=None)
    parser.add_argument("--ident", type=int, default=None)
    parser.add_argument("--sequence-start", type=int, default=None)
    parser.add_argument("--rcvbuf", type=int, default=DEFAULT_RCVBUF, help="socket receive buffer to ask for (bytes)")
    parser.add_argument("--repeat", type=int, default=1, help="run the batch N times on the same sockets")
    parser.add_argument("--probe", action="store_true", help="only print the usable mode")
    args = parser.parse_args(argv)
    try:
        if args.probe:
            print(json.dumps({"mode": probe_privileges(args.mode).value}))
            return 0
        addresses = args.addresses + (sys.stdin.read().split() if args.stdin else [])
        report = asyncio.run(_run(args, addresses))
    except PingerUnavailable as exc:
        print(f"pinger: {exc}", file=sys.stderr)
        return 2
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
