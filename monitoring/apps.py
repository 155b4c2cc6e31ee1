from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = _("Monitoring")

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_save

        from machines import signals
        from machines.models import MachineEvent

        from . import receivers, scope, sessions
        from .alerts import outbox

        signals.machine_reregistered.connect(receivers.check_rebooted_machine_now, dispatch_uid="monitoring-reboot")
        signals.machines_changed.connect(receivers.push_to_dashboards, dispatch_uid="monitoring-push")
        signals.describe_machine.connect(receivers.describe_uptime, dispatch_uid="monitoring-uptime")
        signals.describe_machine.connect(receivers.describe_coverage, dispatch_uid="monitoring-coverage")
        signals.describe_machines.connect(receivers.describe_coverage_of_page, dispatch_uid="monitoring-coverage-page")
        connection_created.connect(scope.register_sqlite_function, dispatch_uid="monitoring-in-network")
        post_save.connect(outbox.log_entry_saved, sender=MachineEvent, dispatch_uid="monitoring-alerts")
        user_logged_out.connect(sessions.end_session_sockets, dispatch_uid="monitoring-logout")
        post_save.connect(sessions.recheck_user_sockets, sender=get_user_model(), dispatch_uid="monitoring-password")
