"""`manage.py vxlanlab up|status|fail HOST…|recover HOST…|alerts|restart|isolate|rejoin|kill-monitor N|
start-monitor N|down`: a VXLAN lab in network namespaces.

The topology and every step live in lab/vxlan.py; this command parses arguments and prints.
"""

import argparse
import json
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from lab import manager, receiver, vxlan
from lab import state as state_file
from lab.netns import NetnsError


def _vni_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected VNIs separated by commas, such as 100,200, got {text!r}") from None


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
        up.add_argument(
            "--vnis", type=_vni_list, default=(), metavar="VNI,VNI…",
            help="several overlays instead of one, e.g. 100,200: each VNI its own vxlan link and subnet "
            "(10.VNI.0.0/24 for VNIs up to 255), the hosts split between them",
        )
        up.add_argument(
            "--overlay", default=None,
            help=f"overlay subnet ({defaults.overlay}); with --vnis one per VNI, separated by commas",
        )
        up.add_argument(
            "--monitors", type=int, default=0, metavar="N",
            help="run the web process alone in the manager's namespace and one monitor per VNI (N = the number "
            "of VNIs) in namespaces of their own, sharing the PostgreSQL of --database-url and the lab's Redis",
        )
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
        isolate = sub.add_parser(
            "isolate",
            help="cut the monitoring side off its overlay: the manager's vxlan link down, or with --monitors the "
            "monitor's of each VNI; the hosts stay as they are",
        )
        isolate.add_argument("--vni", type=int, help="only this VNI's (default: every VNI's)")
        rejoin = sub.add_parser("rejoin", help="undo isolate: the links up again")
        rejoin.add_argument("--vni", type=int, help="only this VNI's (default: every VNI's)")
        kill_monitor = sub.add_parser("kill-monitor", help="SIGKILL the monitor of a VNI, as if its machine died")
        kill_monitor.add_argument("vni", metavar="VNI", help="the VNI of the monitor (or its name)")
        start_monitor = sub.add_parser("start-monitor", help="start the monitor of a VNI (again)")
        start_monitor.add_argument("vni", metavar="VNI", help="the VNI of the monitor (or its name)")
        restart = sub.add_parser(
            "restart", help="kill the manager (web and monitor; with --monitors the web process) and start it again"
        )
        restart.add_argument(
            "--signal", dest="stop_signal", choices=["KILL", "TERM"], default="KILL",
            help="how to stop it (KILL, the default, is like a crash)",
        )
        down = sub.add_parser("down", help="stop everything and remove the namespaces and the lab's files")
        down.add_argument(
            "--name", default=defaults.name, help="lab name, used when the state file is lost (lab)"
        )

    def handle(self, *args, action, **options):
        action = action.replace("-", "_")
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

    def _up(
        self, directory, *, hosts, vni, vnis, overlay, monitors, underlay, port, manager_port, name, database_url, **_
    ):
        if vnis and vni != vxlan.Config.vni:
            raise CommandError("give --vni for one overlay or --vnis for several, not both")
        if vnis:
            overlays = tuple(part.strip() for part in overlay.split(",")) if overlay else ()
            config = vxlan.Config(
                name=name, hosts=hosts, vni=vnis[0], overlay=overlays[0] if overlays else f"10.{vnis[0] % 256}.0.0/24",
                vnis=vnis, overlays=overlays, underlay=underlay, port=port, manager_port=manager_port,
                monitors=monitors,
            )
        else:
            config = vxlan.Config(
                name=name, hosts=hosts, vni=vni, overlay=overlay or vxlan.Config.overlay, underlay=underlay, port=port,
                manager_port=manager_port, monitors=monitors,
            )
        state = vxlan.up(directory, config, database_url=database_url, say=self.stdout.write)
        plan = state.plan
        self.stdout.write("")
        overlays = " and ".join(str(segment.vni) for segment in plan.segments)
        self.stdout.write(self.style.SUCCESS(f"The lab is up: {len(plan.hosts)} hosts on VXLAN {overlays}."))
        self.stdout.write(f"  Dashboard       {state.url}")
        if state.admin_created:
            self.stdout.write(f"  User            admin   password: {state.admin_password}")
        else:
            self.stdout.write("  User            the database had users already; sign in with yours")
        self.stdout.write(f"  Register token  {state.register_token}")
        self.stdout.write(f"  API token       {state.api_token}")
        urls = " ".join(plan.manager_url_for(segment.vni) for segment in plan.segments)
        self.stdout.write(f"  Manager         {urls} in namespace {plan.manager}")
        self.stdout.write(f"  Manager log     {state.manager_log}")
        for node in plan.monitors:
            self.stdout.write(f"  Monitor         {node.name} (--scope {node.scope}) in {node.namespace}, "
                              f"log {state.monitor_log(node.vni)}")
        if plan.monitors:
            self.stdout.write(f"  Monitors page   {state.url}monitors")
        self.stdout.write(f"  Alerts          vxlanlab alerts (sent to {vxlan.RECEIVER_URL} in {plan.manager})")
        self.stdout.write("")
        self._table(state)
        self.stdout.write("")
        self.stdout.write(
            "Try: manage.py vxlanlab fail h2 · vxlanlab alerts · vxlanlab recover h2 · vxlanlab status · "
            "vxlanlab isolate · vxlanlab rejoin · vxlanlab restart · vxlanlab down"
            + (" · vxlanlab kill-monitor N · vxlanlab start-monitor N" if plan.monitors else "")
        )

    def _status(self, directory, **_):
        state = self._state(directory)
        plan = state.plan
        manager = state.manager
        running = manager is not None and manager.alive()
        self.stdout.write(f"Dashboard  {state.url}")
        self.stdout.write(
            f"Manager    {'running, pid ' + str(manager.pid) if running else 'NOT RUNNING (vxlanlab restart)'}"
            f"{' (web only)' if plan.monitors else ''}; "
            f"{' '.join(plan.manager_url_for(segment.vni) for segment in plan.segments)} in {plan.manager}; "
            f"log {state.manager_log}"
        )
        links = {(ns.name, dev): vxlan.link_is_up(ns, dev) for _label, ns, dev in vxlan.checking_links(state)}
        if not plan.monitors:
            down = [dev for (_ns, dev), up in links.items() if not up]
            if down:
                self.stdout.write(f"           ISOLATED: {', '.join(down)} down (vxlanlab rejoin)")
        for node in plan.monitors:
            proc = state.monitor(node.vni)
            alive = proc is not None and proc.alive()
            link = "link up" if links[(node.namespace, node.vxlan_dev)] else "ISOLATED: link down (vxlanlab rejoin)"
            self.stdout.write(
                f"Monitor    {node.name}: "
                f"{'running, pid ' + str(proc.pid) if alive else f'NOT RUNNING (vxlanlab start-monitor {node.vni})'}; "
                f"--scope {node.scope} in {node.namespace} ({node.overlay_ip} on {node.vxlan_dev}, {link}); "
                f"log {state.monitor_log(node.vni)}"
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

    def _isolate(self, directory, *, vni, **_):
        state = self._state(directory)
        for line in vxlan.isolate(state, vni):
            self.stdout.write(line + ".")
        self.stdout.write(
            "Its checks now fail from its own side; the monitor should say it is cut off rather than mark the "
            "hosts unreachable. `vxlanlab rejoin` brings the link back."
        )

    def _rejoin(self, directory, *, vni, **_):
        state = self._state(directory)
        for line in vxlan.rejoin(state, vni):
            self.stdout.write(line + ".")

    def _kill_monitor(self, directory, *, vni, **_):
        state = self._state(directory)
        node = state.plan.monitor(vni)
        try:
            running = manager.stop_monitor(state, node.vni, signal.SIGKILL)
        finally:
            state.save()
        if running:
            self.stdout.write(f"{node.name} was killed (SIGKILL); `vxlanlab start-monitor {node.vni}` starts it again.")
        else:
            self.stdout.write(f"{node.name} was not running.")

    def _start_monitor(self, directory, *, vni, **_):
        state = self._state(directory)
        node = state.plan.monitor(vni)
        try:
            manager.start_monitor(state, node.vni)
        finally:
            state.save()
        self.stdout.write(f"{node.name} is running in {node.namespace} (pid {state.monitor(node.vni).pid}).")

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
        rows = [("HOST", "HOST NAME", "NAMESPACE", "VNI", "OVERLAY IP", "STATE", "HOST SIDE")]
        for host in state.plan.hosts:
            machine = known.get(host.overlay_ip)
            status = machine["status"] if machine else "not registered"
            if machine and machine.get("checked") is False:
                status += " (not being checked)"
            rows.append(
                (
                    host.key, host.hostname, host.namespace, str(host.vni), host.overlay_ip, status,
                    vxlan.host_condition(state, host),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

