"""Two roles: viewers look, operators also delete; superusers do everything."""

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from machines.models import Machine, MachineEvent

pytestmark = [pytest.mark.django_db]


def test_the_roles_exist_after_migrating():
    viewer = set(Group.objects.get(name="viewer").permissions.values_list("codename", flat=True))
    operator = set(Group.objects.get(name="operator").permissions.values_list("codename", flat=True))
    assert viewer == {"view_machine", "view_machineevent"}
    assert operator == viewer | {"delete_machine"}


class TestCreateUser:
    def test_it_creates_a_user_in_the_role(self, tmp_path, django_user_model):
        secret = tmp_path / "pw"
        secret.write_text("a long enough passphrase 42\n")
        call_command("createuser", "ann", "--role", "viewer", "--password-file", str(secret))
        ann = django_user_model.objects.get(username="ann")
        assert ann.check_password("a long enough passphrase 42")
        assert [g.name for g in ann.groups.all()] == ["viewer"] and not ann.is_staff

    def test_it_prompts_twice_for_the_password(self, monkeypatch, django_user_model):
        answers = iter(["a long enough passphrase 42", "a long enough passphrase 42"])
        monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
        call_command("createuser", "bob", "--role", "operator")
        assert django_user_model.objects.get(username="bob").groups.get().name == "operator"

    @pytest.mark.parametrize(
        "argv,message",
        [
            (["carol", "--role", "viewer", "--password-file", "/nonexistent"], "cannot be read"),
            (["dave", "--role", "viewer", "--password-file", "{weak}"], "not accepted"),
            (["operator", "--role", "viewer", "--password-file", "{strong}"], "already exists"),
        ],
    )
    def test_bad_input_changes_nothing(self, tmp_path, operator, django_user_model, argv, message):
        (tmp_path / "weak").write_text("123")
        (tmp_path / "strong").write_text("a long enough passphrase 42")
        argv = [arg.format(weak=tmp_path / "weak", strong=tmp_path / "strong") for arg in argv]
        before = django_user_model.objects.count()
        with pytest.raises(CommandError, match=message):
            call_command("createuser", *argv)
        assert django_user_model.objects.count() == before

    def test_an_unknown_role_is_refused(self):
        with pytest.raises(CommandError, match="invalid choice"):
            call_command("createuser", "erin", "--role", "admin")


class TestViewer:
    def test_a_viewer_sees_machines_but_no_delete(self, viewer_client, make_machine):
        dead = make_machine(hostname="dead-1", status="unreachable")
        page = viewer_client.get("/").content.decode()
        assert "dead-1" in page and f"/machines/{dead.pk}/delete" not in page
        assert viewer_client.get(f"/machines/{dead.pk}").status_code == 200

    def test_a_forged_delete_by_a_viewer_gets_403_and_changes_nothing(self, viewer_client, make_machine):
        dead = make_machine(hostname="dead-1", status="unreachable")
        assert viewer_client.get(f"/machines/{dead.pk}/delete").status_code == 403
        assert viewer_client.post(f"/machines/{dead.pk}/delete/confirm").status_code == 403
        assert viewer_client.post(f"/machines/{dead.pk}/delete/confirm", HTTP_HX_REQUEST="true").status_code == 403
        assert Machine.objects.filter(pk=dead.pk).exists() and not MachineEvent.objects.exists()

    def test_an_operator_sees_delete_and_may_delete(self, operator_client, make_machine):
        dead = make_machine(hostname="dead-1", status="unreachable")
        assert f"/machines/{dead.pk}/delete" in operator_client.get("/").content.decode()
        assert operator_client.post(f"/machines/{dead.pk}/delete/confirm").status_code == 302
        assert not Machine.objects.filter(pk=dead.pk).exists()

    def test_a_user_without_a_role_sees_nothing(self, client, django_user_model, make_machine):
        make_machine(hostname="secret-host")
        client.force_login(django_user_model.objects.create_user("nobody", password="x" * 20))
        response = client.get("/")
        assert response.status_code == 403 and "secret-host" not in response.content.decode()
