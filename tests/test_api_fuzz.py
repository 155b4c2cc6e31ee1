"""The API fuzzed from its contract: schemathesis generates requests for every operation of docs/openapi.yaml
and sends them to the real server; no answer may be a 5xx, and every answer must be one the document allows."""

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from machines.models import ApiToken
from machines.tokens import create_token
from tests.support.processes import Server, process_env

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = schemathesis.openapi.from_path(ROOT / "docs" / "openapi.yaml")
# A few hundred cases in all: about 60 per operation, the same ones every run, so CI is repeatable.
CASES = settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(transactional_db):
    # Limits off: a fuzzer from one address would otherwise mostly meet 429s; they are tested on their own.
    running = Server(process_env(VXLANMGR_RATELIMIT_ENABLE="0", VXLANMGR_ALLOWED_PREFIXES="10.0.0.0/8,127.0.0.0/8"))
    yield running.start()
    running.cleanup()


@pytest.fixture
def api_token(transactional_db):
    return create_token("fuzzer", ApiToken.Scope.API)[1]


@SCHEMA.parametrize()
@CASES
def test_every_operation_answers_as_documented(case, server, api_token):
    headers = {"Authorization": f"Bearer {api_token}"} if case.operation.path.startswith("/api/") else {}
    # A schema cannot say which addresses VXLANMGR_ALLOWED_PREFIXES admits, so a well-formed address may be
    # refused (400 naming ip_address): for registrations, "valid data is accepted" is not a rule to check.
    # A valid body may still be refused for what the spec cannot say: a machine that must exist, an end that
    # must lie ahead.
    excluded = [positive_data_acceptance] if case.operation.method.upper() in {"PUT", "POST", "PATCH"} else []
    response = case.call_and_validate(
        base_url=server.url, headers={**(case.headers or {}), **headers}, excluded_checks=excluded
    )
    assert response.status_code < 500
