"""`manage.py serve` listens on TCP, a Unix socket (the VXLAN lab's manager), or both."""

import pytest
from django.core.management import call_command

from vxlanmgr.management.commands import serve


class _FakeServer:
    endpoints: list[str] = []

    def __init__(self, *, endpoints, **kwargs):
        _FakeServer.endpoints = endpoints

    def run(self):
        pass


@pytest.mark.parametrize(
    ("options", "endpoints"),
    [
        ({}, ["tcp:port=8000:interface=127.0.0.1"]),
        ({"host": "0.0.0.0", "port": 9000}, ["tcp:port=9000:interface=0.0.0.0"]),
        ({"unix_socket": "/tmp/x.sock"}, ["unix:/tmp/x.sock"]),
        (
            {"unix_socket": "/tmp/x.sock", "host": "10.100.0.1"},
            ["tcp:port=8000:interface=10.100.0.1", "unix:/tmp/x.sock"],
        ),
        ({"unix_socket": "/tmp/x.sock", "port": 8001}, ["tcp:port=8001:interface=127.0.0.1", "unix:/tmp/x.sock"]),
    ],
)
def test_serve_listens_on_tcp_a_unix_socket_or_both(monkeypatch, capsys, options, endpoints):
    monkeypatch.setattr(serve, "Server", _FakeServer)
    call_command("serve", monitor="no", **options)
    assert _FakeServer.endpoints == endpoints
    said = capsys.readouterr().out
    assert ("http://" in said) == any(e.startswith("tcp:") for e in endpoints)
    assert ("/tmp/x.sock" in said) == ("unix_socket" in options)
