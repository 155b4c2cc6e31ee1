from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("machines", "0004_failurelog_machine_verbose_name"),
    ]

    operations = [
        migrations.RenameModel(old_name="FailureLog", new_name="MachineEvent"),
    ]
