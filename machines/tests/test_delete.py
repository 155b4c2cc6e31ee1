import pytest
from django.test import Client

from machines.models import Machine, MachineEvent


@pytest.fixture
def dead(make_machine):
    return make_machine(hostname="dead-1", status="unreachable", vni=77)


HX = {"HTTP_HX_REQUEST": "true"}


@pytest.mark.django_db
class TestDeleteFromDashboard:
    def test_only_unreachable_machines_offer_delete(self, operator_client, make_machine, dead):
        alive = make_machine(hostname="alive-1", status="active")
        html = operator_client.get("/").content.decode()
        assert f'hx-get="/machines/{dead.pk}/delete"' in html
        assert f'hx-get="/machines/{alive.pk}/delete"' not in html

    def test_the_confirmation_shows_the_details_and_changes_nothing(self, operator_client, dead):
        response = operator_client.get(f"/machines/{dead.pk}/delete", **HX)
        html = response.content.decode()
        assert response.status_code == 200 and "<html" not in html
        for text in ["Delete dead-1?", dead.ip_address, dead.mac_address, "77", "Unreachable since", "Last seen"]:
            assert text in html
        assert f'hx-post="/machines/{dead.pk}/delete/confirm"' in html
        assert Machine.objects.filter(pk=dead.pk).exists()

    def test_confirm_deletes_logs_and_removes_ping_results(self, operator_client, operator, dead):
        response = operator_client.post(f"/machines/{dead.pk}/delete/confirm", **HX)
        assert response.status_code == 200
        assert "was deleted" in response.content.decode()
        assert "vxlanmgr:deleted" in response["HX-Trigger"]
        assert not Machine.objects.filter(pk=dead.pk).exists()
        entry = MachineEvent.objects.get(kind="deleted")
        assert (entry.hostname, entry.ip_address, entry.mac_address, entry.actor) == (
            "dead-1", dead.ip_address, dead.mac_address, "operator",
        )

    def test_a_recovered_machine_is_not_deleted(self, operator_client, dead):
        Machine.objects.filter(pk=dead.pk).update(status="active")
        response = operator_client.post(f"/machines/{dead.pk}/delete/confirm", **HX)
        assert response.status_code == 409
        assert "not deleted" in response.content.decode()
        assert Machine.objects.filter(pk=dead.pk).exists()
        assert not MachineEvent.objects.exists()

    def test_an_already_deleted_machine_gets_a_friendly_answer(self, operator_client, dead):
        operator_client.post(f"/machines/{dead.pk}/delete/confirm", **HX)
        response = operator_client.post(f"/machines/{dead.pk}/delete/confirm", **HX)
        assert response.status_code == 404
        assert "Already deleted" in response.content.decode()
        assert MachineEvent.objects.filter(kind="deleted").count() == 1

    def test_delete_needs_post_csrf_and_login(self, dead, operator):
        anonymous = Client()
        assert anonymous.post(f"/machines/{dead.pk}/delete/confirm").status_code == 302
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(operator)
        assert strict.post(f"/machines/{dead.pk}/delete/confirm").status_code == 403
        assert strict.get(f"/machines/{dead.pk}/delete/confirm").status_code == 405
        assert Machine.objects.filter(pk=dead.pk).exists()

    def test_it_works_without_javascript(self, operator_client, dead):
        page = operator_client.get(f"/machines/{dead.pk}/delete").content.decode()
        assert "<html" in page and 'method="post"' in page
        response = operator_client.post(f"/machines/{dead.pk}/delete/confirm", follow=True)
        assert "was deleted" in response.content.decode()


@pytest.mark.django_db
class TestDeleteApi:
    def call(self, client, pk, token, query=""):
        return client.delete(f"/api/machines/{pk}{query}", HTTP_AUTHORIZATION=f"Bearer {token}")

    def test_it_deletes_unreachable_machines(self, client, api_token, dead):
        assert self.call(client, dead.pk, api_token).status_code == 204
        assert MachineEvent.objects.get(kind="deleted").actor == "API token test api"
        assert self.call(client, dead.pk, api_token).status_code == 404

    def test_it_refuses_live_machines_unless_forced(self, client, api_token, make_machine):
        alive = make_machine(status="active")
        response = self.call(client, alive.pk, api_token)
        assert response.status_code == 409 and "force" in response.json()["error"]
        assert self.call(client, alive.pk, api_token, "?force=true").status_code == 204

    def test_it_needs_an_api_token(self, client, register_token, dead):
        assert client.delete(f"/api/machines/{dead.pk}").status_code == 401
        assert self.call(client, dead.pk, register_token).status_code == 403
        assert Machine.objects.filter(pk=dead.pk).exists()


@pytest.mark.django_db
class TestMachinePage:
    def test_it_shows_details_pings_and_log(self, operator_client, dead):
        MachineEvent.snapshot(dead, "unreachable", "3 consecutive failed checks").save()
        html = operator_client.get(f"/machines/{dead.pk}").content.decode()
        assert "dead-1" in html and "3 consecutive failed checks" in html
        assert operator_client.get("/machines/999999").status_code == 404

    def test_its_row_links_to_it(self, operator_client, dead):
        html = operator_client.get("/").content.decode()
        assert html.count(f'href="/machines/{dead.pk}"') == 1
