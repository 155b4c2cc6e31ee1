"""Boot storms hit the register endpoint from many hosts at once; prove the upsert holds on PostgreSQL."""

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from machines.models import Machine

BODY = {"hostname": "web-01", "mac_address": "02:00:00:00:00:01"}


def _put(url: str, token: str, body: dict, barrier: threading.Barrier) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="PUT",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    barrier.wait()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _storm(live_server, token, targets):
    barrier = threading.Barrier(len(targets))
    with ThreadPoolExecutor(len(targets)) as pool:
        futures = [
            pool.submit(_put, f"{live_server.url}/api/machines/{ip}", token, body, barrier) for ip, body in targets
        ]
        return [future.result() for future in futures]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestConcurrentRegistration:
    def test_concurrent_registrations_of_one_ip_make_one_row(self, require_postgres, live_server, api_token):
        targets = [("10.0.0.1", {**BODY, "hostname": f"web-{n}"}) for n in range(16)]
        codes = _storm(live_server, api_token, targets)
        assert sorted(codes) == [200] * 15 + [201]
        assert Machine.objects.filter(ip_address="10.0.0.1").count() == 1

    def test_the_machine_limit_holds_under_a_storm(self, require_postgres, live_server, api_token, settings):
        settings.MAX_MACHINES = 5
        targets = [(f"10.0.1.{n}", BODY) for n in range(1, 17)]
        codes = _storm(live_server, api_token, targets)
        assert codes.count(201) == 5 and codes.count(503) == 11
        assert Machine.objects.count() == 5

    def test_a_storm_far_below_the_limit_creates_all(self, require_postgres, live_server, api_token, settings):
        # Small ids need no count and no lock (machines.services._check_room): nothing serialises these.
        settings.MAX_MACHINES = 10**6
        targets = [(f"10.0.2.{n}", {**BODY, "hostname": f"web-{n}"}) for n in range(1, 17)]
        codes = _storm(live_server, api_token, targets)
        assert codes == [201] * 16
        assert Machine.objects.count() == 16

    def test_the_limit_holds_when_only_some_creations_count(self, require_postgres, live_server, api_token, settings):
        # Past the id bound every creation counts, and the last ones before the limit take turns.
        first = Machine.objects.create(ip_address="10.0.3.250", hostname="seed", mac_address="02:00:00:00:00:09")
        settings.MAX_MACHINES = 8
        assert first.pk + 500 > settings.MAX_MACHINES
        targets = [(f"10.0.3.{n}", BODY) for n in range(1, 17)]
        codes = _storm(live_server, api_token, targets)
        assert codes.count(201) == 7 and codes.count(503) == 9
        assert Machine.objects.count() == 8


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_thousand_concurrent_creations_never_pass_a_limit_of_990(require_postgres, settings):
    from django.db import connection

    from machines import services
    from machines.validation import Registration

    settings.MAX_MACHINES = 990

    def create(n: int) -> str:
        address = f"10.4.{n // 250}.{n % 250 + 1}"
        data = Registration(ip_address=address, hostname=f"h{n}", mac_address=BODY["mac_address"])
        try:
            services.register_machine(data)
            return "created"
        except services.MachineLimitReached:
            return "full"
        finally:
            connection.close()

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(create, range(1000)))
    assert Machine.objects.count() == 990
    assert outcomes.count("created") == 990 and outcomes.count("full") == 10
