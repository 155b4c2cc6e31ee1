"""How monitoring answers the inventory's signals (machines.signals), connected in MonitoringConfig.ready."""

from datetime import timedelta

from . import broadcast, coverage, uptime
from .checks import policy, state_of
from .rules import after_reregistration


def check_rebooted_machine_now(sender, machine, now, **kwargs) -> None:
    state, delay = after_reregistration(state_of(machine), policy())
    if delay is None:
        return
    machine.check_interval = state.interval
    machine.next_check_at = now + timedelta(seconds=delay)
    # A check already in flight started before the reboot; its result must not overwrite this schedule.
    machine.claim_token = ""
    machine.claimed_until = None


def push_to_dashboards(sender, changed=(), deleted=(), created=False, **kwargs) -> None:
    broadcast.push_after_commit(broadcast.event(changed=changed, deleted=deleted, created=created))


def describe_uptime(sender, machine, **kwargs) -> dict:
    return {"uptime": uptime.uptime(machine)}


def describe_coverage(sender, machine, **kwargs) -> dict:
    reason = coverage.unchecked_reason(machine.vni, machine.ip_address, coverage.live_monitors())
    return {"checked": not reason, "unchecked_reason": reason or None}


def describe_coverage_of_page(sender, machines, **kwargs) -> dict:
    reasons = coverage.unchecked(machines)
    return {
        machine.pk: {"checked": machine.pk not in reasons, "unchecked_reason": reasons.get(machine.pk)}
        for machine in machines
    }
