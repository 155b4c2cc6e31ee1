from django.db import migrations

# The log is evidence: on PostgreSQL the database itself refuses to change or remove an entry. The one update
# allowed is the machine reference becoming NULL when the machine is deleted (on_delete=SET_NULL).
CREATE = """
CREATE FUNCTION machines_machineevent_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.machine_id IS NOT NULL AND NEW.machine_id IS NULL
       AND (to_jsonb(NEW) - 'machine_id') = (to_jsonb(OLD) - 'machine_id') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'machine log entries are append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER machines_machineevent_append_only BEFORE UPDATE OR DELETE ON machines_machineevent
    FOR EACH ROW EXECUTE FUNCTION machines_machineevent_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS machines_machineevent_append_only ON machines_machineevent;
DROP FUNCTION IF EXISTS machines_machineevent_append_only();
"""


def _run(sql):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("machines", "0005_rename_failurelog_machineevent"),
    ]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
