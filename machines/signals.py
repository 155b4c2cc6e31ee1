"""What the inventory tells the rest of the project. `machines` knows nothing of the monitor or the dashboards'
live channel: they subscribe here (monitoring.apps.MonitoringConfig.ready).

The two change signals are sent inside the transaction that makes the change; a receiver that acts outside the
database (a push to open dashboards) must wait for the commit with ``transaction.on_commit``. The third,
describe_machine and describe_machines, let them add what they know to the API's description of machines.
"""

from django.dispatch import Signal

# Machines were created, updated or deleted. kwargs: changed (ids), deleted (ids), created (bool).
machines_changed = Signal()

# A known machine registered again (it probably rebooted), before the row is saved. Receivers may reschedule its
# monitor fields on ``machine``, which is then saved with them. kwargs: machine, now.
machine_reregistered = Signal()

# The API describes one machine (GET /api/machines/{id}). Each receiver returns a dict of further keys for the
# JSON (monitoring adds "uptime"), or None; a key the inventory already has is not overridden. kwargs: machine.
describe_machine = Signal()

# The API lists a page of machines (GET /api/machines). Each receiver returns {machine id: dict of further keys}
# for those it adds to, in one go for the page (monitoring adds "checked"). kwargs: machines (a list).
describe_machines = Signal()
