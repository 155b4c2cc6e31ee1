import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from machines.models import ApiToken


@pytest.mark.django_db
class TestBootstrap:
    def test_first_run_creates_admin_and_register_token_once(self, capsys):
        call_command("bootstrap")
        out = capsys.readouterr().out
        assert "Created user 'admin' with password:" in out
        assert "Created register token: vxm_" in out
        admin = get_user_model().objects.get(username="admin")
        password = out.split("password: ")[1].split()[0]
        assert admin.check_password(password) and admin.is_superuser
        call_command("bootstrap")
        assert capsys.readouterr().out == ""
        assert ApiToken.objects.count() == 1

    def test_admin_password_from_environment(self, settings, capsys):
        settings.ADMIN_PASSWORD = "from-env-password-123"
        call_command("bootstrap")
        assert "from-env-password-123" not in capsys.readouterr().out
        assert get_user_model().objects.get(username="admin").check_password("from-env-password-123")

    def test_env_tokens_are_seeded_and_rotated(self, settings):
        settings.REGISTER_TOKEN = "first-register-value-0123456789"
        settings.API_TOKEN = "first-api-value-0123456789"
        call_command("bootstrap")
        assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 2
        settings.REGISTER_TOKEN = "second-register-value-0123456789"
        call_command("bootstrap")
        live = ApiToken.objects.filter(revoked_at__isnull=True, scope="register")
        assert live.count() == 1
        assert ApiToken.objects.filter(scope="register", revoked_at__isnull=False).count() == 1


@pytest.mark.django_db
def test_admin_lists_machines_and_log_is_read_only(admin_client, make_machine):
    machine = make_machine(hostname="admin-visible")
    assert b"admin-visible" in admin_client.get("/admin/machines/machine/").content
    from machines.models import MachineEvent

    entry = MachineEvent.snapshot(machine, "unreachable")
    entry.save()
    assert admin_client.get("/admin/machines/machineevent/").status_code == 200
    assert admin_client.get("/admin/machines/machineevent/add/").status_code == 403
    assert admin_client.post(f"/admin/machines/machineevent/{entry.pk}/delete/").status_code == 403


@pytest.mark.django_db
def test_admin_shows_a_new_token_once(admin_client):
    response = admin_client.post("/admin/machines/apitoken/add/", {"name": "rack-7", "scope": "register"}, follow=True)
    token = ApiToken.objects.get(name="rack-7")
    assert b"vxm_" in response.content
    assert token.prefix.startswith("vxm_")
