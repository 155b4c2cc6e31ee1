from django.db import migrations

from machines.roles import OPERATOR, ROLES, make_roles


def add_roles(apps, schema_editor):
    make_roles(apps)
    # Before roles every signed-in user could delete: existing accounts keep what they had.
    operator = apps.get_model("auth", "Group").objects.get(name=OPERATOR)
    for user in apps.get_model("auth", "User").objects.filter(is_superuser=False, groups__isnull=True):
        user.groups.add(operator)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("machines", "0006_machineevent_append_only"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(add_roles, remove_roles)]
