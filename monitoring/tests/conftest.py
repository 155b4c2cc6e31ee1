import os

import pytest

from conftest import require
from monitoring import netns

from .support import HOST_IP, MANAGER_IP


@pytest.fixture
def lab():
    """A manager namespace and a host namespace joined by a veth pair; nothing routes out."""
    require(os.geteuid() == 0 and netns.netns_available(), "needs root and `ip netns` (network namespaces)")
    with netns.Lab() as lab:
        manager, host = lab.namespace(), lab.namespace()
        netns.veth(manager, host, f"{MANAGER_IP}/24", f"{HOST_IP}/24")
        yield manager, host
