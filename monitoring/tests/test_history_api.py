"""GET /api/machines/{id}/history: a machine's checks over time, raw or in hourly or daily buckets."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from monitoring.models import DailyBucket, HourlyBucket, PingResult

pytestmark = pytest.mark.django_db


def _get(client, machine_id, token=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(f"/api/machines/{machine_id}/history", params, **headers)


def _bucket(model, machine, start, checks=60, answered=60, **fields):
    return model.objects.create(machine=machine, start=start, checks=checks, answered=answered,
                                loss_sum=float(checks - answered), **fields)


def _iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def test_raw_results_of_the_last_24_hours_by_default(client, api_token, make_machine):
    machine, other = make_machine(), make_machine()
    now = timezone.now()
    PingResult.objects.create(machine=machine, checked_at=now - timedelta(hours=25), ok=True, rtt_ms=1.0)
    failed = PingResult.objects.create(machine=machine, checked_at=now - timedelta(hours=2), ok=False, loss=1.0,
                                       failure="timeout")
    answered = PingResult.objects.create(machine=machine, checked_at=now - timedelta(hours=1), ok=True, rtt_ms=0.25)
    PingResult.objects.create(machine=other, checked_at=now - timedelta(hours=1), ok=True, rtt_ms=9.0)

    response = _get(client, machine.pk, api_token, resolution="raw")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["machine"] == machine.pk and body["resolution"] == "raw"
    since, until = (datetime.fromisoformat(body[key]) for key in ("since", "until"))
    assert until - since == timedelta(hours=24) and abs(until - timezone.now()) < timedelta(minutes=1)
    assert body["points"] == [
        {"at": _iso(failed.checked_at), "ok": False, "rtt_ms": None, "loss": 1.0, "failure": "timeout"},
        {"at": _iso(answered.checked_at), "ok": True, "rtt_ms": 0.25, "loss": 0.0, "failure": None},
    ]


def test_hourly_buckets_of_the_last_7_days_by_default(client, api_token, make_machine):
    machine = make_machine()
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    _bucket(HourlyBucket, machine, hour - timedelta(days=8))
    _bucket(HourlyBucket, machine, hour - timedelta(days=2), checks=60, answered=45, rtt_min=1.0, rtt_sum=90.0,
            rtt_max=4.0, unreachable_seconds=300)
    body = _get(client, machine.pk, api_token).json()
    assert body["resolution"] == "hour"
    assert body["points"] == [
        {"start": _iso(hour - timedelta(days=2)), "checks": 60, "answered": 45, "loss": 0.25, "rtt_min_ms": 1.0,
         "rtt_mean_ms": 2.0, "rtt_max_ms": 4.0, "unreachable_seconds": 300},
    ]


def test_daily_buckets_of_the_last_365_days_by_default(client, api_token, make_machine):
    machine = make_machine()
    day = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [day - timedelta(days=400), day - timedelta(days=300), day - timedelta(days=1)]
    for start in starts:
        _bucket(DailyBucket, machine, start, checks=1440, answered=1440)
    body = _get(client, machine.pk, api_token, resolution="day").json()
    assert [point["start"] for point in body["points"]] == [_iso(start) for start in starts[1:]]
    assert body["points"][0]["rtt_mean_ms"] is None  # nothing answered with a round trip


def test_a_range_in_any_offset_is_answered_in_utc(client, api_token, make_machine):
    machine = make_machine()
    for hour in (8, 9, 10, 11):
        _bucket(HourlyBucket, machine, datetime(2026, 5, 1, hour, tzinfo=UTC))
    # 18:00+09:00 is 09:00 UTC; a time without an offset is UTC.
    body = _get(client, machine.pk, api_token, since="2026-05-01T18:00:00+09:00", until="2026-05-01T11:00").json()
    assert (body["since"], body["until"]) == ("2026-05-01T09:00:00Z", "2026-05-01T11:00:00Z")
    assert [point["start"] for point in body["points"]] == ["2026-05-01T09:00:00Z", "2026-05-01T10:00:00Z"]


def test_only_since_reaches_up_to_now(client, api_token, make_machine):
    machine = make_machine()
    since = timezone.now() - timedelta(hours=3)
    PingResult.objects.create(machine=machine, checked_at=since + timedelta(hours=2), ok=True, rtt_ms=1.0)
    body = _get(client, machine.pk, api_token, resolution="raw", since=_iso(since)).json()
    assert len(body["points"]) == 1 and body["since"] == _iso(since)


def test_every_bad_parameter_is_named(client, api_token, make_machine):
    machine = make_machine()
    response = _get(client, machine.pk, api_token, resolution="minute", since="yesterday", until="2026-13-01")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"resolution", "since", "until"}


def test_a_range_that_ends_before_it_starts_is_refused(client, api_token, make_machine):
    machine = make_machine()
    response = _get(client, machine.pk, api_token, since="2026-05-02T00:00:00Z", until="2026-05-01T00:00:00Z")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["until"]


@pytest.mark.parametrize(("resolution", "longest"), [("raw", timedelta(hours=48)), ("hour", timedelta(days=92)),
                                                     ("day", timedelta(days=1830))])
def test_the_span_of_one_request_is_limited(client, api_token, make_machine, resolution, longest):
    machine = make_machine()
    until = datetime(2026, 5, 1, tzinfo=UTC)
    ok = _get(client, machine.pk, api_token, resolution=resolution, since=_iso(until - longest), until=_iso(until))
    assert ok.status_code == 200, ok.content
    response = _get(client, machine.pk, api_token, resolution=resolution,
                    since=_iso(until - longest - timedelta(seconds=1)), until=_iso(until))
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["since"]


def test_it_needs_the_same_credentials_as_reading_the_inventory(client, api_token, register_token, make_machine):
    machine = make_machine()
    missing = _get(client, machine.pk)
    assert missing.status_code == 401 and missing["WWW-Authenticate"] == 'Bearer realm="vxlanmgr"'
    assert _get(client, machine.pk, "vxm_not-a-real-token").status_code == 401
    assert _get(client, machine.pk, register_token).status_code == 403


def test_a_signed_in_viewer_may_read_it(viewer_client, make_machine):
    assert _get(viewer_client, make_machine().pk).status_code == 200


def test_an_unknown_machine_is_404(client, api_token, make_machine):
    make_machine()
    for key in ("999999", "web-01", "1" * 30):
        response = _get(client, key, api_token)
        assert response.status_code == 404, key
        assert "error" in response.json()


def test_it_only_reads(client, api_token, make_machine):
    response = client.post(f"/api/machines/{make_machine().pk}/history", HTTP_AUTHORIZATION=f"Bearer {api_token}")
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
