"""`manage.py vxlanlab up|status|fail HOST…|recover HOST…|alerts|restart|down`: a VXLAN lab in network namespaces.

The topology and every step live in lab/vxlan.py; this command parses arguments and prints.
"""

import json
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from lab import manager, receiver, vxlan
from lab import state as state_file
from lab.netns import NetnsError


class Command(BaseCommand):
    help = (
        "A lab on this machine (root): N hosts and the manager in network namespaces, joined by a bridged "
        "underlay and a real VXLAN overlay; the dashboard on http://127.0.0.1:PORT/."
    )
    # The lab's manager runs with a configuration of its own (its secret, database, tokens); this process only
    # drives namespaces, so the checks of the caller's configuration (a secret key in VAR_DIR) do not apply.
    requires_system_checks = []

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        defaults = vxlan.Config()
        up = sub.add_parser("up", help="create the lab, start the manager, register every host")
        up.add_argument("--hosts", type=int, default=defaults.hosts, help=f"number of hosts ({defaults.hosts})")
        up.add_argument("--vni", type=int, default=defaults.vni, help=f"VXLAN network identifier ({defaults.vni})")
        up.add_argument("--overlay", default=defaults.overlay, help=f"overlay subnet ({defaults.overlay})")
        up.add_argument("--underlay", default=defaults.underlay, help=f"underlay subnet ({defaults.underlay})")
        up.add_argument(
            "--port", type=int, default=defaults.port, help=f"dashboard port on 127.0.0.1 ({defaults.port})"
        )
        up.add_argument(
            "--manager-port", type=int, default=defaults.manager_port,
            help=f"the manager's port on its overlay address ({defaults.manager_port})",
        )
        up.add_argument(
            "--name", default=defaults.name, help=f"lab name, part of the namespace names ({defaults.name})"
        )
        up.add_argument(
            "--database-url", default="",
            help="database for the lab's manager (default: a SQLite file of its own, removed by down)",
        )
        sub.add_parser("status", help="each host's overlay IP and state")
        fail = sub.add_parser("fail", help="make hosts silently stop answering (all at once)")
        fail.add_argument("hosts", nargs="+", metavar="HOST", help="h1, 1, its host name or its overlay IP")
        fail.add_argument(
            "--mode", choices=["silent", "link-down"], default="silent",
            help="silent: ignore echo requests (default); link-down: take the overlay link down",
        )
        recover = sub.add_parser(
            "recover", help="bring hosts back and have them register again (all at once), as a reboot would"
        )
        recover.add_argument("hosts", nargs="+", metavar="HOST", help="h1, 1, its host name or its overlay IP")
        alerts = sub.add_parser("alerts", help="the alerts the manager sent to the lab's webhook receiver")
        alerts.add_argument("--json", dest="as_json", action="store_true", help="one JSON object a line, as received")
        alerts.add_argument("--follow", "-f", action="store_true", help="keep printing new alerts (Ctrl-C stops)")
        restart = sub.add_parser("restart", help="kill the manager (web and monitor) and start it again")
        restart.add_argument(
            "--signal", dest="stop_signal", choices=["KILL", "TERM"], default="KILL",
            help="how to stop it (KILL, the default, is like a crash)",
        )
        down = sub.add_parser("down", help="stop everything and remove the namespaces and the lab's files")
        down.add_argument(
            "--name", default=defaults.name, help="lab name, used when the state file is lost (lab)"
        )

    def handle(self, *args, action, **options):
        directory = settings.VAR_DIR / "lab"
        try:
            if action == "alerts":  # only reads a file, and --follow must not hold the lab's lock
                self._alerts(directory, **options)
                return
            with state_file.locked(directory):
                getattr(self, f"_{action}")(directory, **options)
        except (vxlan.LabError, NetnsError) as exc:
            raise CommandError(str(exc)) from None

    # -- actions

    def _up(self, directory, *, hosts, vni, overlay, underlay, port, manager_port, name, database_url, **_):
        config = vxlan.Config(
            name=name, hosts=hosts, vni=vni, overlay=overlay, underlay=underlay, port=port, manager_port=manager_port
        )
        state = vxlan.up(directory, config, database_url=database_url, say=self.stdout.write)
        plan = state.plan
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"The lab is up: {len(plan.hosts)} hosts on VXLAN {config.vni}."))
        self.stdout.write(f"  Dashboard       {state.url}")
        if state.admin_created:
            self.stdout.write(f"  User            admin   password: {state.admin_password}")
        else:
            self.stdout.write("  User            the database had users already; sign in with yours")
        self.stdout.write(f"  Register token  {state.register_token}")
        self.stdout.write(f"  API token       {state.api_token}")
        self.stdout.write(f"  Manager         {plan.manager_url} in namespace {plan.manager}")
        self.stdout.write(f"  Manager log     {state.manager_log}")
        self.stdout.write(f"  Alerts          vxlanlab alerts (sent to {vxlan.RECEIVER_URL} in {plan.manager})")
        self.stdout.write("")
        self._table(state)
        self.stdout.write("")
        self.stdout.write(
            "Try: manage.py vxlanlab fail h2 · vxlanlab alerts · vxlanlab recover h2 · vxlanlab status · "
            "vxlanlab restart · vxlanlab down"
        )

    def _status(self, directory, **_):
        state = self._state(directory)
        plan = state.plan
        manager = state.manager
        running = manager is not None and manager.alive()
        self.stdout.write(f"Dashboard  {state.url}")
        self.stdout.write(
            f"Manager    {'running, pid ' + str(manager.pid) if running else 'NOT RUNNING (vxlanlab restart)'}; "
            f"{plan.manager_url} in {plan.manager}; log {state.manager_log}"
        )
        forwarder = state.forwarder is not None and state.forwarder.alive()
        self.stdout.write(f"Forwarder  {'running' if forwarder else 'NOT RUNNING'}: {state.url} -> {state.socket_path}")
        listening = state.receiver is not None and state.receiver.alive()
        self.stdout.write(
            f"Alerts     {len(receiver.read(state.alerts_path))} received (vxlanlab alerts); receiver "
            f"{'running' if listening else 'NOT RUNNING (vxlanlab restart)'} at {vxlan.RECEIVER_URL} in {plan.manager}"
        )
        self.stdout.write("")
        self._table(state)

    def _fail(self, directory, *, hosts, mode, **_):
        state = self._state(directory)
        targets = self._hosts(state, hosts)
        try:
            for target in targets:
                vxlan.fail(state, target, mode)
        finally:
            state.save()
        what = "ignores echo requests" if mode == "silent" else "has its overlay link down"
        for target in targets:
            self.stdout.write(f"{target.key} ({target.hostname}, {target.overlay_ip}) {what}.")
        self.stdout.write(
            f"The monitor marks {'it' if len(targets) == 1 else 'them'} unreachable after "
            f"{state.settings['VXLANMGR_FAILURE_THRESHOLD']} failed checks."
        )

    def _recover(self, directory, *, hosts, **_):
        state = self._state(directory)
        targets = self._hosts(state, hosts)
        try:
            results = vxlan.recover_many(state, targets)
        finally:
            state.save()
        failed = []
        for target in targets:
            code, output = results[target.key]
            if code == 0:
                self.stdout.write(f"{target.key} answers again and registered: {output}")
            else:
                failed.append(f"{target.key} is back, but its registration failed (exit {code}): {output}")
        if failed:
            raise CommandError("\n".join(failed))

    def _alerts(self, directory, *, as_json: bool, follow: bool, **_):
        state = self._state(directory)
        if not receiver.read(state.alerts_path) and not as_json:
            self.stdout.write(f"No alerts yet. The manager sends them to {vxlan.RECEIVER_URL} in {state.plan.manager}.")
        shown = 0
        try:
            while True:
                records = receiver.read(state.alerts_path)
                for record in records[shown:]:
                    self.stdout.write(json.dumps(record, ensure_ascii=False) if as_json else receiver.describe(record))
                    self.stdout.flush()
                shown = max(shown, len(records))
                if not follow:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass

    def _restart(self, directory, *, stop_signal, **_):
        state = self._state(directory)
        seconds = manager.restart_manager(state, signal.Signals[f"SIG{stop_signal}"])
        self.stdout.write(f"The manager was stopped with SIG{stop_signal} and is back after {seconds:.1f} s.")

    def _down(self, directory, *, name, **_):
        removed = vxlan.down(directory, name, say=self.stdout.write)
        self.stdout.write("The lab is down." if removed else "There was no lab to take down.")

    # -- helpers

    def _hosts(self, state, refs):
        return list(dict.fromkeys(state.plan.find(ref) for ref in refs))

    def _state(self, directory):
        state = vxlan.load_state(directory)
        if state is None:
            raise CommandError("no lab is up (manage.py vxlanlab up)")
        return state

    def _table(self, state):
        try:
            known = vxlan.machines(state)
        except Exception as exc:  # the manager may be down; still show the hosts
            known = {}
            self.stdout.write(self.style.WARNING(f"(the manager does not answer: {exc})"))
        rows = [("HOST", "HOST NAME", "NAMESPACE", "OVERLAY IP", "STATE", "HOST SIDE")]
        for host in state.plan.hosts:
            machine = known.get(host.overlay_ip)
            rows.append(
                (
                    host.key, host.hostname, host.namespace, host.overlay_ip,
                    machine["status"] if machine else "not registered", vxlan.host_condition(state, host),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

