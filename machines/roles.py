"""The two roles, as groups: viewers see the dashboard, operators also delete machines. Superusers do
everything. The groups are made by a migration and kept by post_migrate (a flushed database gets them back)."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions

VIEWER, OPERATOR = "viewer", "operator"
_VIEW = [("machines", "view_machine"), ("machines", "view_machineevent")]
ROLES = {
    VIEWER: _VIEW,
    OPERATOR: [*_VIEW, ("machines", "delete_machine")],
}


def make_roles(apps, verbosity: int = 0) -> None:
    """Create the groups with their permissions, with the app registry given (a migration's or the real one)."""
    for app_config in apps.get_app_configs():
        # Permissions are normally created only after every migration has run; the groups need them now.
        had_models = getattr(app_config, "models_module", None)
        app_config.models_module = had_models or True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = had_models
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = [Permission.objects.get(content_type__app_label=app, codename=code) for app, code in codenames]
        group.permissions.add(*wanted)


def keep_roles(sender, apps=global_apps, verbosity=1, **kwargs) -> None:
    """post_migrate (also after a flush, which passes no registry): the groups exist whatever the rows went through."""
    make_roles(apps, verbosity)
