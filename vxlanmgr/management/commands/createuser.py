"""`manage.py createuser NAME --role viewer|operator`: a dashboard account with one of the two roles."""

import getpass
from pathlib import Path

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

ROLES = ("viewer", "operator")


class Command(BaseCommand):
    help = "Create a user who may view the dashboard (viewer) or also delete machines (operator)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", choices=ROLES, required=True)
        parser.add_argument("--password-file", type=Path, help="read the password from this file (else prompted)")

    def handle(self, *args, username, role, password_file, **options):
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        password = self._password(password_file)
        user = User(username=username)
        try:
            password_validation.validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("The password is not accepted: " + " ".join(exc.messages)) from None
        with transaction.atomic():
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get(name=role))
        self.stdout.write(f"Created {role} {username!r}.")

    def _password(self, path: Path | None) -> str:
        if path is not None:
            try:
                return path.read_text().rstrip("\n")
            except OSError as exc:
                raise CommandError(f"--password-file cannot be read: {exc}") from None
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The passwords differ.")
        return first
