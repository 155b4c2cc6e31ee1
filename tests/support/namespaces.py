import os
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import require
from lab import netns

MANAGER_IP, HOST_IP = "10.77.0.1", "10.77.0.2"


@contextmanager
def manager_and_host() -> Iterator[tuple[netns.NetNS, netns.NetNS]]:
    """A manager namespace and a host namespace joined by a veth pair; nothing routes out."""
    require(os.geteuid() == 0 and netns.netns_available(), "needs root and `ip netns` (network namespaces)")
    with netns.Lab() as lab:
        manager, host = lab.namespace(), lab.namespace()
        netns.veth(manager, host, f"{MANAGER_IP}/24", f"{HOST_IP}/24")
        yield manager, host
