"""What the inventory tells the rest of the project. `machines` knows nothing of the monitor or the dashboards'
live channel: they subscribe here (monitoring.apps.MonitoringConfig.ready).

Both signals are sent inside the transaction that makes the change; a receiver that acts outside the database
(a push to open dashboards) must wait for the commit with ``transaction.on_commit``.
"""

from django.dispatch import Signal

# Machines were created, updated or deleted. kwargs: changed (ids), deleted (ids), created (bool).
machines_changed = Signal()

# A known machine registered again (it probably rebooted), before the row is saved. Receivers may reschedule its
# monitor fields on ``machine``, which is then saved with them. kwargs: machine, now.
machine_reregistered = Signal()
