"""First-run set-up for `make run`: the secret key and data directory, the database schema, an admin user and a
register token, each only when it does not exist yet."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from machines.models import ApiToken
from machines.tokens import create_token, seed_environment_tokens
from monitoring.alerts.channels import seed_environment_channels


def write_secret_key(path: Path) -> bool:
    """Create the embedded mode's key file, readable by its owner only; False when it already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))
    return True


class Command(BaseCommand):
    help = "Create the secret key, the database, the admin user and a register token where missing."
    # This command is what makes a missing secret key exist, so the check that reports one must not stop it.
    requires_system_checks = []

    def handle(self, *args, **options):
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        if settings.SECRET_KEY_MISSING:
            write_secret_key(settings.SECRET_KEY_FILE)
            settings.SECRET_KEY = settings.SECRET_KEY_FILE.read_text().strip()
            settings.SECRET_KEY_MISSING = False
            self.stdout.write(f"Created the secret key in {settings.SECRET_KEY_FILE}.")
        call_command("migrate", interactive=False, verbosity=0)
        User = get_user_model()
        if not User.objects.exists():
            password = settings.ADMIN_PASSWORD or secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "", password)
            if settings.ADMIN_PASSWORD:
                self.stdout.write("Created user 'admin' with the password from VXLANMGR_ADMIN_PASSWORD.")
            else:
                self.stdout.write(self.style.WARNING(f"Created user 'admin' with password: {password}"))
                self.stdout.write("  (shown only once; change it in the admin, or set VXLANMGR_ADMIN_PASSWORD)")
        seed_environment_tokens()
        seed_environment_channels()
        live = ApiToken.objects.filter(scope=ApiToken.Scope.REGISTER, revoked_at__isnull=True)
        if not live.exists():
            _token, raw = create_token("first register token", ApiToken.Scope.REGISTER)
            self.stdout.write(self.style.WARNING(f"Created register token: {raw}"))
            self.stdout.write("  (shown only once; hosts pass it to docs/register-machine.sh --token)")
