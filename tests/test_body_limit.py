"""Oversized request bodies are refused while they arrive, by the real server, without the server buffering them."""

import select
import socket
from pathlib import Path

import pytest

from tests.support.processes import Server, process_env

GIB = 1024**3
CHUNK = b"x" * 65536


@pytest.fixture
def server(transactional_db):
    running = Server(process_env(), monitor="no").start()
    yield running
    running.cleanup()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def upload(server: Server, path: str, *, chunked: bool, total: int = GIB) -> tuple[bytes, int]:
    """Stream `total` bytes of body (from a generator, never held whole); stop once the server answers.

    Returns the answer and how many body bytes went out before it came."""
    length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: " + str(total).encode()
    head = (
        b"PUT " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer nothing\r\n" + length + b"\r\n\r\n"
    )
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    break
                piece = CHUNK[: total - sent]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
    return answer, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_1_gib_body_gets_413_and_costs_the_server_no_memory(server, chunked):
    before = rss_kib(server.process.pid)
    answer, sent = upload(server, "/api/machines/127.0.0.9", chunked=chunked)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"error"' in answer and b"larger than" in answer
    # Refused on the headers, or as soon as the body passed the limit: not after a gigabyte.
    assert sent < 64 * 1024 * 1024
    assert rss_kib(server.process.pid) - before < 20 * 1024
    # The server is still there for everyone else.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


def test_a_body_under_the_limit_reaches_the_application(server):
    answer, _sent = upload(server, "/api/machines/127.0.0.9", chunked=False, total=100)
    # The token is wrong, so the view answers: the request got through the body limit.
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
