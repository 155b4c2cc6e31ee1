"""Schema changes keep what operators already have."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


@pytest.mark.django_db(transaction=True)
def test_renaming_the_log_keeps_every_entry():
    executor = MigrationExecutor(connection)
    before = [("machines", "0004_failurelog_machine_verbose_name")]
    after = [("machines", "0005_rename_failurelog_machineevent")]
    executor.migrate(before)
    old_apps = executor.loader.project_state(before).apps
    OldLog = old_apps.get_model("machines", "FailureLog")
    OldLog.objects.create(hostname="h1", ip_address="10.0.0.1", mac_address="02:00:00:00:00:01", kind="deleted",
                          detail="deleted while unreachable", actor="operator")
    executor = MigrationExecutor(connection)
    executor.migrate(after)
    executor.loader.build_graph()
    new_apps = executor.loader.project_state(after).apps
    entry = new_apps.get_model("machines", "MachineEvent").objects.get()
    assert (entry.hostname, entry.kind, entry.actor) == ("h1", "deleted", "operator")
    # Leave the database at the latest schema for the tests that follow.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_database_keeps_the_log_append_only(require_postgres, make_machine):
    from django.db import IntegrityError, InternalError, ProgrammingError, transaction

    from machines import services
    from machines.models import MachineEvent

    machine = make_machine(status="unreachable")
    MachineEvent.snapshot(machine, MachineEvent.Kind.UNREACHABLE, "3 consecutive failed checks").save()
    refused = (IntegrityError, InternalError, ProgrammingError)
    with pytest.raises(refused, match="append-only"), transaction.atomic():
        MachineEvent.objects.update(detail="nothing happened")
    with pytest.raises(refused, match="append-only"), transaction.atomic():
        MachineEvent.objects.all().delete()
    # Deleting the machine only lets go of the reference; the entry and its snapshot stay.
    services.delete_machine(machine.pk, actor="operator")
    kept = MachineEvent.objects.get(kind=MachineEvent.Kind.UNREACHABLE)
    assert kept.machine_id is None and kept.detail == "3 consecutive failed checks"
    with pytest.raises(refused, match="append-only"), transaction.atomic():
        MachineEvent.objects.filter(pk=kept.pk).update(hostname="someone-else", machine=None)
