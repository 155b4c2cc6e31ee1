from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class MachinesConfig(AppConfig):
    name = "machines"
    verbose_name = _("Machines")

    def ready(self) -> None:
        from .roles import keep_roles

        post_migrate.connect(keep_roles, sender=self, dispatch_uid="machines-roles")
