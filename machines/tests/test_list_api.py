import pytest
from django.test import Client

from machines.models import Machine


def get(client, path, token=None, **params):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(path, params, **headers)


@pytest.mark.django_db
class TestMachineListApi:
    def test_it_needs_an_api_token_or_a_session(self, operator_client, api_token, register_token):
        client = Client()
        assert get(client, "/api/machines").status_code == 401
        assert get(client, "/api/machines", register_token).status_code == 403
        assert get(client, "/api/machines", api_token).status_code == 200
        assert operator_client.get("/api/machines").status_code == 200

    def test_it_pages_and_filters(self, client, api_token, make_machine):
        for n in range(7):
            make_machine(hostname=f"web-{n}", status="active" if n % 2 else "unreachable")
        make_machine(hostname="db-1", mac_address="02:aa:bb:cc:dd:ee")
        body = get(client, "/api/machines", api_token, page_size=3, page=2).json()
        assert (body["count"], body["page"], body["page_size"]) == (8, 2, 3)
        assert len(body["results"]) == 3
        assert get(client, "/api/machines", api_token, status="active").json()["count"] == 3
        assert get(client, "/api/machines", api_token, q="DB-").json()["count"] == 1
        assert get(client, "/api/machines", api_token, q="02:AA:bb").json()["count"] == 1
        assert get(client, "/api/machines", api_token, page=99).json()["results"] == []

    @pytest.mark.parametrize(
        ("params", "field"),
        [({"status": "down"}, "status"), ({"page": "0"}, "page"), ({"page": "x"}, "page"),
         ({"page_size": "501"}, "page_size"), ({"page_size": "-1"}, "page_size")],
    )
    def test_bad_parameters_are_named(self, client, api_token, params, field):
        response = get(client, "/api/machines", api_token, **params)
        assert response.status_code == 400
        assert field in response.json()["errors"]

    def test_detail_by_id(self, client, api_token, make_machine):
        machine = make_machine()
        body = get(client, f"/api/machines/{machine.pk}", api_token).json()
        assert body["ip_address"] == machine.ip_address
        assert get(client, "/api/machines/999999", api_token).status_code == 404
        assert get(client, "/api/machines/abc", api_token).status_code == 404
        assert get(client, f"/api/machines/{machine.pk}").status_code == 401

    def test_page_size_500_is_allowed(self, client, api_token):
        assert get(client, "/api/machines", api_token, page_size=500).status_code == 200
        assert Machine.objects.count() == 0


@pytest.mark.django_db
class TestOddInput:
    def test_unicode_digits_are_not_ids_or_pages(self, client, api_token, make_machine):
        make_machine()
        assert get(client, "/api/machines/١", api_token).status_code == 404
        assert get(client, "/api/machines/²", api_token).status_code == 404
        assert get(client, "/api/machines", api_token, page="²").status_code == 400
        assert get(client, "/api/machines", api_token, page_size="٣").status_code == 400

    def test_an_absurd_page_is_a_400_not_a_500(self, client, api_token):
        response = get(client, "/api/machines", api_token, page="99999999999999999999")
        assert response.status_code == 400 and "page" in response.json()["errors"]

    def test_the_list_answers_json_405_for_other_methods(self, client, api_token):
        response = client.post("/api/machines", HTTP_AUTHORIZATION=f"Bearer {api_token}")
        assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
        assert "error" in response.json()
