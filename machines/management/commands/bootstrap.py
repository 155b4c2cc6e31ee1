"""First-run set-up for `make run`: an admin user and a register token, each only if none exists."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from machines.models import ApiToken
from machines.tokens import create_token, seed_environment_tokens


class Command(BaseCommand):
    help = "Create the admin user and a register token when none exist, and seed tokens from the environment."

    def handle(self, *args, **options):
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
        live = ApiToken.objects.filter(scope=ApiToken.Scope.REGISTER, revoked_at__isnull=True)
        if not live.exists():
            _token, raw = create_token("first register token", ApiToken.Scope.REGISTER)
            self.stdout.write(self.style.WARNING(f"Created register token: {raw}"))
            self.stdout.write("  (shown only once; hosts pass it to docs/register-machine.sh --token)")
