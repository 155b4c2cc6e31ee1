"""The lab's webhook receiver: an HTTP server in the manager's namespace that takes the alerts the manager sends
through Apprise's ``json://`` and appends each one as a line of JSON to a file, which ``vxlanlab alerts`` prints.

It listens on 127.0.0.1 inside the manager's namespace, the one place the lab's web and monitor (both in that
namespace) reach and nothing else does; with --monitors, one more in each monitor's namespace. Only the standard
library: ``python -m lab.receiver --port P --output F``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 1024 * 1024
READY = "listening on"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    output: Path
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        body = self.rfile.read(length) if length > 0 else b""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"raw": body.decode(errors="replace")}
        record = {"received_at": datetime.now(UTC).isoformat(timespec="milliseconds"), "path": self.path,
                  "payload": payload}
        with self.server.lock, open(self.server.output, "a", encoding="utf-8") as handle:
            # With --monitors a receiver runs in every monitor's namespace too, all appending to this one file.
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_PUT = do_POST

    def log_message(self, format, *args) -> None:
        pass


def serve(port: int, output: Path) -> None:
    server = _Server(("127.0.0.1", port), _Handler)
    server.output, server.lock = output, threading.Lock()
    output.touch()
    print(f"{READY} http://127.0.0.1:{port}/, writing to {output}", flush=True)
    server.serve_forever()


def read(path: Path) -> list[dict]:
    """What the receiver got so far, oldest first (a line being written is left for the next read)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def describe(record: dict) -> str:
    """One received alert as `vxlanlab alerts` prints it: time, type and title, then the body indented."""
    payload = record.get("payload") or {}
    when = record.get("received_at", "")
    try:
        when = datetime.fromisoformat(when).astimezone().strftime("%H:%M:%S")
    except (TypeError, ValueError):
        pass
    if "raw" in payload:
        return f"{when}  (not JSON)  {payload['raw']}"
    head = f"{when}  {str(payload.get('type', '')).upper():8}  {payload.get('title', '')}"
    body = [f"          {line}" for line in str(payload.get("message", "")).splitlines()]
    return "\n".join([head, *body])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True, help="file the alerts are appended to (JSON lines)")
    args = parser.parse_args(argv)
    serve(args.port, args.output)


if __name__ == "__main__":
    main()
