"""docs/register-machine.sh run for real (sh, ip, curl) against a live server.

The live tests create two throwaway vxlan links in the root network namespace, with global
/32 loopback addresses (127.77.N.2 and 127.77.N.3), and start pytest-django's LiveServer on the
first address. Connecting to a local address makes the kernel pick that same address as the
source, so the address the script detects on the first link is exactly the address the server
sees the request come from: a register-scope token is accepted for it, and refused (403) for the
second link's address. Nothing leaves 127.0.0.0/8; the links are deleted afterwards.
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

from conftest import require
from machines.models import ApiToken, Machine
from machines.tokens import create_token
from tests.support.namespaces import HOST_IP, MANAGER_IP
from tests.support.net import free_port

SCRIPT = Path(__file__).resolve().parent.parent / "docs" / "register-machine.sh"
MAC = "02:00:5e:00:53:01"
BASE_RETRY = "0.05"  # VXLANMGR_RETRY_BASE: waits of 25-50 ms, Retry-After capped at 30 x 0.05 = 1.5 s

SHELLS = {
    "sh": ["sh"],
    "dash": ["dash"],
    "busybox": ["busybox", "sh"],
}


def _have_shell(name: str) -> bool:
    return shutil.which(SHELLS[name][0]) is not None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _vxlan_names() -> list[str]:
    out = _ip("-o", "link", "show", "type", "vxlan", check=False).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines() if ": " in line]


def _gnu_wget_with_put() -> bool:
    if not shutil.which("wget"):
        return False
    help_text = subprocess.run(["wget", "--help"], capture_output=True, text=True).stdout
    return "--method" in help_text


class Links:
    """Two vxlan links: `first` (the server listens on its address) and `other`."""

    def __init__(self):
        n = os.getpid() % 250 + 1
        suffix = os.getpid() % 100000
        self.first, self.other = f"vxm{suffix}a", f"vxm{suffix}b"
        self.first_ip, self.other_ip = f"127.77.{n}.2", f"127.77.{n}.3"
        self.first_vni, self.other_vni = 4242, 4243
        self.first_is_first_vxlan = False

    def mac(self, name: str) -> str:
        return Path(f"/sys/class/net/{name}/address").read_text().strip()

    def mtu(self, name: str) -> int:
        return int(Path(f"/sys/class/net/{name}/mtu").read_text())

    def _index_before_other_vxlan_links(self) -> list[str]:
        # The script registers "the first vxlan link"; if the host already has some, give ours a
        # lower ifindex so that it is listed first.
        existing = _vxlan_names()
        if not existing:
            return []
        used = {int(p.read_text()) for p in Path("/sys/class/net").glob("*/ifindex")}
        lowest = min(int(Path(f"/sys/class/net/{name}/ifindex").read_text()) for name in existing)
        free = [index for index in range(2, lowest) if index not in used]
        return ["index", str(free[0])] if free else []

    def create(self) -> None:
        port = str(free_port("127.0.0.1", socket.SOCK_DGRAM))
        plan = ((self.first, self.first_vni, self.first_ip), (self.other, self.other_vni, self.other_ip))
        for name, vni, address in plan:
            _ip("link", "del", name, check=False)
            index = self._index_before_other_vxlan_links() if name == self.first else []
            added = _ip(
                "link", "add", "name", name, *index, "type", "vxlan", "id", str(vni),
                "dstport", port, "local", "127.0.0.1", "nolearning", check=False,
            )
            require(added.returncode == 0, f"cannot create a vxlan link (module, CAP_NET_ADMIN?): {added.stderr}")
            _ip("link", "set", "dev", name, "addrgenmode", "none", check=False)  # no IPv6 link-local chatter
            # iproute2 gives 127/8 addresses host scope unless told otherwise; a real overlay address is global.
            _ip("addr", "add", f"{address}/32", "dev", name, "scope", "global")
            _ip("link", "set", "dev", name, "up")
        self.first_is_first_vxlan = _vxlan_names()[:1] == [self.first]

    def delete(self) -> None:
        for name in (self.first, self.other):
            _ip("link", "del", name, check=False)


@pytest.fixture(scope="module")
def links():
    require(shutil.which("ip") is not None, "needs iproute2's ip")
    require(os.geteuid() == 0, "needs root to create vxlan links")
    require(shutil.which("curl") is not None, "needs curl")
    created = Links()
    try:
        created.create()
        yield created
    finally:
        created.delete()


@pytest.fixture
def server(links, transactional_db, settings):
    """pytest-django's LiveServer, bound to the first link's address (its `live_server` fixture
    binds once per session to an address fixed before the links exist)."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, links.first_ip]
    live = LiveServer(f"{links.first_ip}:0")
    try:
        yield live.url
    finally:
        live.stop()


@pytest.fixture
def register_token_raw(transactional_db) -> str:
    return create_token("script test", ApiToken.Scope.REGISTER)[1]


@pytest.fixture
def run(tmp_path):
    """Run the script: run(*args, using="dash", env={...}) -> CompletedProcess (or Popen with popen=True)."""
    require(shutil.which("ip") is not None, "needs iproute2's ip")
    empty_config = tmp_path / "empty.conf"
    empty_config.write_text("")

    def run_script(*args, using="sh", env=None, timeout=60, popen=False):
        require(_have_shell(using), f"needs {SHELLS[using][0]} to run the script under {using}")
        args = [str(arg) for arg in args]
        if not any(arg == "--config" or arg.startswith("--config=") for arg in args):
            args = ["--config", str(empty_config), *args]  # never pick up this host's /etc/vxlanmgr/register.conf
        # A clean environment: no proxies (127.77.x.x is not in anyone's no_proxy), no VXLANMGR_* leaking in.
        full_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "VXLANMGR_RETRY_BASE": BASE_RETRY}
        full_env.update(env or {})
        shell, *shell_args = SHELLS[using]
        command = [shutil.which(shell), *shell_args, str(SCRIPT), *args]
        if popen:
            return subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout)

    return run_script


def _lines(result: subprocess.CompletedProcess) -> str:
    return f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def _host_names() -> set[str]:
    names = set()
    for command in (["hostname", "-f"], ["hostname"], ["uname", "-n"]):
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out:
            names.add(out.split()[0].rstrip(".").lower())
    return names


# ------------------------------------------------------------------------------ live: success


@pytest.mark.netns
def test_it_detects_the_first_vxlan_link_and_registers_it(run, links, server, register_token_raw):
    require(links.first_is_first_vxlan, f"{links.first} must be the host's first vxlan link: {_vxlan_names()}")
    result = run("--url", server, "--token", register_token_raw)
    assert result.returncode == 0, _lines(result)
    machine = Machine.objects.get()
    assert machine.ip_address == links.first_ip
    assert machine.vni == links.first_vni
    assert machine.mac_address == links.mac(links.first)
    assert (machine.vtep, machine.mtu) == ("127.0.0.1", links.mtu(links.first))  # `local` of the link
    assert machine.hostname in _host_names()
    assert result.stdout == f"registered {machine.hostname} {links.first_ip} (created)\n"
    assert result.stderr == ""


@pytest.mark.netns
@pytest.mark.parametrize("shell", ["sh", "dash", "busybox"])
def test_it_creates_then_updates_under_each_shell(run, links, server, register_token_raw, shell):
    args = ["--url", server + "/", "--interface", links.first, "--hostname", "Web-01.example.com."]
    created = run(*args, "--extra-json", '{"rack": "r1", "tags": ["a", "b"]}', using=shell, env={
        "VXLANMGR_TOKEN": register_token_raw,
    })
    assert created.returncode == 0, _lines(created)
    assert created.stdout == f"registered web-01.example.com {links.first_ip} (created)\n"
    machine = Machine.objects.get()
    assert (machine.hostname, machine.ip_address, machine.vni) == ("web-01.example.com", links.first_ip, 4242)
    assert machine.mac_address == links.mac(links.first)
    assert machine.extra_data == {"rack": "r1", "tags": ["a", "b"]}

    updated = run(*args, using=shell, env={"VXLANMGR_TOKEN": register_token_raw})
    assert updated.returncode == 0, _lines(updated)
    assert updated.stdout == f"registered web-01.example.com {links.first_ip} (updated)\n"
    machine.refresh_from_db()
    assert Machine.objects.count() == 1
    assert machine.last_registered_at > machine.registered_at
    assert machine.extra_data == {}  # the server replaces extra_data with what each registration sends


@pytest.mark.netns
def test_an_api_token_may_register_another_links_address(run, links, server):
    _token, raw = create_token("automation", ApiToken.Scope.API)
    result = run("--url", server, "--token", raw, "--interface", links.other, "--hostname", "other")
    assert result.returncode == 0, _lines(result)
    machine = Machine.objects.get()
    assert (machine.ip_address, machine.vni, machine.mac_address) == (
        links.other_ip, links.other_vni, links.mac(links.other),
    )


@pytest.mark.netns
def test_a_config_file_is_parsed_not_sourced(run, links, server, register_token_raw, tmp_path):
    marker = tmp_path / "sourced"
    config = tmp_path / "register.conf"
    config.write_text(
        "# vxlanmgr registration\n"
        f"VXLANMGR_URL={server}\n"
        f"  export VXLANMGR_TOKEN = \"{register_token_raw}\"  \n"
        f"VXLANMGR_INTERFACE='{links.first}'\n"
        f"touch {marker}\n"
        f"VXLANMGR_SHELL=$(touch {marker})\n"
        f"VXLANMGR_HOSTNAME=`touch {marker}`"  # no final newline
    )
    config.chmod(0o600)
    result = run("--config", config, "--hostname", "from-config")
    assert result.returncode == 0, _lines(result)
    assert result.stdout == f"registered from-config {links.first_ip} (created)\n"
    assert not marker.exists()
    assert "ignoring a line without '='" in result.stderr
    assert "ignoring unknown key 'VXLANMGR_SHELL'" in result.stderr
    assert "readable by everyone" not in result.stderr

    config.chmod(0o644)
    again = run("--config", config, "--hostname", "from-config")
    assert again.returncode == 0, _lines(again)
    assert "readable by everyone" in again.stderr


@pytest.mark.netns
def test_it_uses_gnu_wget_when_told_to(run, links, server, register_token_raw):
    require(_gnu_wget_with_put(), "needs GNU wget (with --method)")
    env = {"VXLANMGR_HTTP_CLIENT": "wget"}
    result = run("--url", server, "--token", register_token_raw, "--interface", links.first, "--hostname", "w", env=env)
    assert result.returncode == 0, _lines(result)
    assert result.stdout == f"registered w {links.first_ip} (created)\n"
    denied = run("--url", server, "--token", "vxm_wrong", "--interface", links.first, "--hostname", "w", env=env)
    assert denied.returncode == 3, _lines(denied)
    # GNU wget throws away the body of a 401; the script says what the server would have said.
    assert denied.stderr == "register-machine.sh: error: HTTP 401: the token is unknown or revoked\n"


@pytest.mark.netns
def test_busybox_userland_reads_the_link_from_sysfs(run, links, server, register_token_raw, tmp_path):
    """Alpine-like: busybox ip (no -d, no `type`), sed, awk, od ... plus curl."""
    require(shutil.which("busybox") is not None, "needs busybox")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    applets = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        (bin_dir / applet).symlink_to(shutil.which("busybox"))
    (bin_dir / "curl").symlink_to(shutil.which("curl"))
    env = {"PATH": str(bin_dir)}
    args = ["--url", server, "--token", register_token_raw, "--interface", links.first, "--hostname", "alpine"]

    no_vni = run(*args, using="busybox", env=env)
    assert no_vni.returncode == 2, _lines(no_vni)
    assert "cannot read the VNI" in no_vni.stderr
    assert not Machine.objects.exists()

    result = run(*args, "--vni", "4242", using="busybox", env=env)
    assert result.returncode == 0, _lines(result)
    machine = Machine.objects.get()
    assert (machine.ip_address, machine.mac_address, machine.vni) == (links.first_ip, links.mac(links.first), 4242)
    # busybox ip shows no `local`: the VTEP is left out (with a warning), the MTU comes from sysfs.
    assert "cannot read the VTEP address" in result.stderr and "pass --vtep" in result.stderr
    assert (machine.vtep, machine.mtu) == (None, links.mtu(links.first))

    # A VTEP reported once (by the flag here, or by iproute2) survives registrations that cannot read it.
    assert run(*args, "--vni", "4242", "--vtep", "192.0.2.5", using="busybox", env=env).returncode == 0
    again = run(*args, "--vni", "4242", using="busybox", env=env)
    assert again.returncode == 0, _lines(again)
    machine.refresh_from_db()
    assert machine.vtep == "192.0.2.5"


# ------------------------------------------------------------------------------ live: refusals


@pytest.mark.netns
def test_dry_run_prints_the_request_and_sends_nothing(run, links, server, register_token_raw):
    result = run("--url", server, "--token", register_token_raw, "--interface", links.first, "--hostname", "web-01",
                 "--dry-run")
    assert result.returncode == 0, _lines(result)
    head, _blank, body = result.stdout.partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == f"PUT {server}/api/machines/{links.first_ip}"
    assert f"Authorization: Bearer {register_token_raw[:8]}********" in lines
    assert "Content-Type: application/json" in lines
    assert json.loads(body) == {
        "hostname": "web-01", "mac_address": links.mac(links.first), "vni": 4242, "vtep": "127.0.0.1",
        "mtu": links.mtu(links.first),
    }
    assert register_token_raw not in result.stdout + result.stderr
    assert register_token_raw[8:16] not in result.stdout + result.stderr
    assert not Machine.objects.exists()
    # authenticate() stamps last_used_at on every request it sees: none arrived.
    assert ApiToken.objects.get(scope=ApiToken.Scope.REGISTER).last_used_at is None


@pytest.mark.netns
def test_a_wrong_token_exits_3_with_the_servers_message(run, links, server):
    result = run("--url", server, "--token", "vxm_not-a-real-token-at-all-0123456789", "--interface", links.first)
    assert result.returncode == 3, _lines(result)
    assert result.stderr == "register-machine.sh: error: HTTP 401: The token is unknown or revoked.\n"
    assert result.stdout == ""
    assert not Machine.objects.exists()


@pytest.mark.netns
def test_a_register_token_for_another_address_is_refused(run, links, server, register_token_raw):
    # The other link's address is on this host too, but the request comes from the first one.
    result = run("--url", server, "--token", register_token_raw, "--interface", links.other)
    assert result.returncode == 3, _lines(result)
    assert "HTTP 403: A register token may only register the address the request comes from" in result.stderr
    assert f"({links.first_ip}), not {links.other_ip}" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert register_token_raw not in result.stderr
    assert not Machine.objects.exists()

    spoofed = run("--url", server, "--token", register_token_raw, "--interface", links.first, "--ip", links.other_ip)
    assert spoofed.returncode == 3, _lines(spoofed)
    assert "HTTP 403" in spoofed.stderr


@pytest.mark.netns
def test_field_errors_are_summarised_on_one_line(run, links, server, register_token_raw):
    result = run("--url", server, "--token", register_token_raw, "--interface", links.first,
                 "--hostname", "bad_name", "--extra-json", '{"a": 1}')
    assert result.returncode == 3, _lines(result)
    assert result.stderr.startswith("register-machine.sh: error: HTTP 400: hostname: A host name has only ASCII")
    assert len(result.stderr.splitlines()) == 1


# ------------------------------------------------------------------------------ live: retries


@pytest.mark.netns
def test_the_machine_limit_503_is_retried_then_given_up(run, links, server, register_token_raw, settings):
    settings.MAX_MACHINES = 1
    Machine.objects.create(hostname="existing", ip_address="10.0.0.1", mac_address=MAC)
    started = time.monotonic()
    result = run("--url", server, "--token", register_token_raw, "--interface", links.first, "--max-attempts", "2")
    elapsed = time.monotonic() - started
    assert result.returncode == 4, _lines(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 2, _lines(result)
    assert lines[0].startswith("register-machine.sh: attempt 1/2 failed: HTTP 503: The limit of 1 machines is reached")
    assert lines[1].startswith("register-machine.sh: error: gave up after 2 attempt(s): HTTP 503: The limit of 1")
    # Retry-After: 300 is longer than the cap (30 x 0.05 s), so the wait is 0.75-1.5 s, not 300 s
    # and not the first backoff step (25-50 ms) either.
    assert 0.7 <= elapsed < 10, elapsed
    assert Machine.objects.count() == 1


@pytest.mark.netns
def test_it_succeeds_when_the_server_recovers_between_attempts(run, links, server, register_token_raw, settings):
    settings.MAX_MACHINES = 1
    blocker = Machine.objects.create(hostname="existing", ip_address="10.0.0.1", mac_address=MAC)
    proc = run("--url", server, "--token", register_token_raw, "--interface", links.first, "--hostname", "late",
               "--max-attempts", "5", popen=True)
    try:
        first_failure = proc.stderr.readline()
        assert "attempt 1/5 failed: HTTP 503" in first_failure
        blocker.delete()  # the script is asleep for 0.75-1.5 s now
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (first_failure, out, err)
    assert out == f"registered late {links.first_ip} (created)\n"
    assert Machine.objects.get().hostname == "late"


@pytest.mark.netns
def test_429_is_retried_then_given_up(run, links, server, register_token_raw, settings):
    settings.REGISTER_RATE_PER_IP = "1/d"  # the window cannot end during the test
    args = ["--url", server, "--token", register_token_raw, "--interface", links.first]
    assert run(*args).returncode == 0
    result = run(*args, "--max-attempts", "3")
    assert result.returncode == 4, _lines(result)
    lines = result.stderr.splitlines()
    assert [line.split(": HTTP")[0] for line in lines] == [
        "register-machine.sh: attempt 1/3 failed",
        "register-machine.sh: attempt 2/3 failed",
        "register-machine.sh: error: gave up after 3 attempt(s)",
    ]
    assert "HTTP 429: Too many requests; retry in" in lines[-1]


# ------------------------------------------------------------------------------ no root needed


def _lo(*extra):
    # lo has no global IPv4 address and an all-zero MAC: give both, and get no VNI (not a vxlan link).
    return ["--interface", "lo", "--ip", "127.0.0.1", "--mac", MAC, "--hostname", "web-01", *extra]


def test_an_unreachable_server_is_retried_then_given_up(run):
    port = free_port("127.0.0.1")  # closed again: connections are refused
    result = run(*_lo("--url", f"http://127.0.0.1:{port}", "--token", "t" * 30, "--max-attempts", "3"))
    assert result.returncode == 4, _lines(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 3, _lines(result)
    assert lines[0].startswith("register-machine.sh: attempt 1/3 failed: curl: (7)")
    assert lines[2].startswith("register-machine.sh: error: gave up after 3 attempt(s): curl: (7)")


@pytest.mark.parametrize("shell", ["sh", "dash", "busybox"])
def test_dry_run_escapes_json_and_masks_the_token(run, shell):
    token = "vxm_S3cr3t-t0ken_value-that-must-not-leak"
    hostname = 'we"ird\\name\twith\nnewline'
    result = run(*_lo("--url", "https://vxlanmgr.example.com/", "--token", token, "--dry-run",
                      "--extra-json", '{"note": "caf\u00e9 \\"q\\""}'), "--hostname", hostname, using=shell)
    assert result.returncode == 0, _lines(result)
    head, _blank, body = result.stdout.partition("\n\n")
    assert head.splitlines()[0] == "PUT https://vxlanmgr.example.com/api/machines/127.0.0.1"
    assert "Authorization: Bearer vxm_S3cr********" in head.splitlines()
    assert json.loads(body) == {"hostname": hostname, "mac_address": MAC, "extra_data": {"note": 'café "q"'}}
    assert "S3cr3t-t0ken" not in result.stdout + result.stderr


def test_short_tokens_are_masked_completely(run):
    result = run(*_lo("--url", "http://x", "--token", "short-token", "--dry-run"))
    assert "Authorization: Bearer ********\n" in result.stdout
    assert "short" not in result.stdout


def test_flags_beat_the_environment_which_beats_the_config_file(run, tmp_path):
    config = tmp_path / "register.conf"
    config.write_text("VXLANMGR_URL=http://from-config\nVXLANMGR_TOKEN=config-token-0123456789abcdef\n")
    config.chmod(0o600)
    from_file = run(*_lo("--config", config, "--dry-run"))
    assert from_file.stdout.startswith("PUT http://from-config/api/machines/127.0.0.1\n"), _lines(from_file)
    assert "Bearer config-t********" in from_file.stdout
    env = {"VXLANMGR_URL": "http://from-env", "VXLANMGR_TOKEN": "env-token-0123456789abcdefgh"}
    from_env = run(*_lo("--config", config, "--dry-run"), env=env)
    assert from_env.stdout.startswith("PUT http://from-env/api/machines/127.0.0.1\n"), _lines(from_env)
    assert "Bearer env-toke********" in from_env.stdout
    from_flag = run(*_lo("--config", config, "--dry-run", "--url=http://from-flag"), env=env)
    assert from_flag.stdout.startswith("PUT http://from-flag/api/machines/127.0.0.1\n"), _lines(from_flag)


def test_vtep_and_mtu_come_from_flags_then_environment_then_config_file(run, tmp_path):
    config = tmp_path / "register.conf"
    config.write_text("VXLANMGR_VTEP=192.0.2.1\nVXLANMGR_MTU=1400\n")
    base = _lo("--url", "http://127.0.0.1:9", "--token", "t" * 30, "--config", config, "--dry-run")

    def sent(*args, env=None) -> dict:
        result = run(*base, *args, env=env)
        assert result.returncode == 0, _lines(result)
        return json.loads(result.stdout.partition("\n\n")[2])

    assert sent() == {"hostname": "web-01", "mac_address": MAC, "vtep": "192.0.2.1", "mtu": 1400}
    env = {"VXLANMGR_VTEP": "2001:db8::2", "VXLANMGR_MTU": "9000"}
    assert (sent(env=env)["vtep"], sent(env=env)["mtu"]) == ("2001:db8::2", 9000)
    flags = sent("--vtep", "192.0.2.3", "--mtu=01450", env=env)
    assert (flags["vtep"], flags["mtu"]) == ("192.0.2.3", 1450)
    # "none" clears what the server has; lo is no vxlan link, so nothing is detected for it otherwise.
    cleared = sent("--vtep", "none", "--mtu", "none")
    assert (cleared["vtep"], cleared["mtu"]) == (None, None)
    config.write_text("")
    assert "vtep" not in sent() and "mtu" not in sent()


def _in_namespace(ns, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    return ns.run("dash" if shutil.which("dash") else "sh", str(SCRIPT), *args, env=env, check=False)


@pytest.mark.netns
def test_it_reads_the_vtep_and_mtu_of_vxlan_links_over_an_underlay(lab, tmp_path):
    """In a namespace of our own: vxlan links over a veth underlay, read with --dry-run (nothing is sent)."""
    _manager, host = lab
    underlay = host.ip("-o", "-4", "addr", "show", "to", HOST_IP).split()[1]
    config = tmp_path / "empty.conf"
    config.write_text("")
    base = ["--config", str(config), "--url", "http://127.0.0.1:9", "--token", "t" * 30, "--hostname", "h",
            "--dry-run"]

    def sent(interface: str) -> dict:
        result = _in_namespace(host, *base, "--interface", interface)
        assert result.returncode == 0, _lines(result)
        assert result.stderr == ""
        return json.loads(result.stdout.partition("\n\n")[2])

    # `local` given, over the underlay device (whose 1500 bytes leave 1450 for the overlay), MTU lowered.
    host.ip("link", "add", "vxl", "type", "vxlan", "id", "100", "local", HOST_IP, "remote", MANAGER_IP,
            "dev", underlay, "dstport", "4789", "nolearning")
    host.add_address("vxl", "10.100.0.2/24")
    host.link_up("vxl")
    assert sent("vxl") == {
        "hostname": "h", "mac_address": _sysfs(host, "vxl", "address"), "vni": 100, "vtep": HOST_IP, "mtu": 1450,
    }
    host.ip("link", "set", "dev", "vxl", "mtu", "1400")
    assert sent("vxl")["mtu"] == 1400

    # No `local`: the kernel sends from the source address of its route to the remote end.
    host.ip("link", "add", "vxr", "type", "vxlan", "id", "200", "remote", MANAGER_IP, "dstport", "4790",
            "nolearning")
    host.add_address("vxr", "10.200.0.2/24")
    host.link_up("vxr")
    assert (sent("vxr")["vni"], sent("vxr")["vtep"]) == (200, HOST_IP)

    # An IPv6 underlay address.
    host.ip("link", "add", "vx6", "type", "vxlan", "id", "300", "local", "fd00:77::2", "dstport", "4791",
            "nolearning")
    host.add_address("vx6", "10.30.0.2/24")
    host.link_up("vx6")
    assert sent("vx6")["vtep"] == "fd00:77::2"

    # Neither `local` nor a remote end (addresses learnt or set in the FDB): no VTEP to report, no complaint.
    host.ip("link", "add", "vxf", "type", "vxlan", "id", "400", "dstport", "4792", "nolearning")
    host.add_address("vxf", "10.40.0.2/24")
    host.link_up("vxf")
    assert "vtep" not in sent("vxf") and sent("vxf")["mtu"] == 1500


def _sysfs(ns, interface: str, name: str) -> str:
    return ns.run("cat", f"/sys/class/net/{interface}/{name}").stdout.strip()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown argument '--bogus'"),
        (["--url"], "--url needs a value"),
        (["--max-attempts", "0"], "--max-attempts must be a whole number from 1 to 100"),
        (["--timeout", "soon"], "--timeout must be a whole number"),
        (["--extra-json", '{"a": }'], "--extra-json is not valid JSON"),
        (["--extra-json", "[1, 2]"], "--extra-json must be a JSON object"),
        (["--url", "ftp://x"], "the URL must start with http:// or https://"),
        (["--token", "two words"], "the token contains characters"),
        (["--config", "/nonexistent/register.conf"], "cannot read the config file /nonexistent/register.conf"),
        (["--vtep", "192.0.2.5; rm -rf /"], "the VTEP address (--vtep, VXLANMGR_VTEP) must be an IP address"),
        (["--mtu", "67"], "the MTU (--mtu, VXLANMGR_MTU) must be a whole number from 68 to 65535 or none, got '67'"),
        (["--mtu", "65536"], "must be a whole number from 68 to 65535"),
        (["--mtu", "1500b"], "must be a whole number from 68 to 65535"),
        (["--mtu", "0000"], "must be a whole number from 68 to 65535"),
    ],
)
def test_usage_and_config_errors_exit_1(run, args, message):
    defaults = ["--url", "http://127.0.0.1:9", "--token", "t" * 30]
    result = run(*_lo(*defaults, "--dry-run", *args))
    assert result.returncode == 1, _lines(result)
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_missing_url_or_token_exit_1(run):
    no_url = run(*_lo("--token", "t" * 30, "--dry-run"))
    assert no_url.returncode == 1 and "no server URL" in no_url.stderr
    no_token = run(*_lo("--url", "http://127.0.0.1:9", "--dry-run"))
    assert no_token.returncode == 1 and "no token" in no_token.stderr


def test_detection_errors_exit_2(run):
    base = ["--url", "http://127.0.0.1:9", "--token", "t" * 30, "--hostname", "h", "--dry-run"]
    no_mac = run(*base, "--interface", "lo", "--ip", "127.0.0.1")
    assert no_mac.returncode == 2 and "interface lo has no MAC address" in no_mac.stderr, _lines(no_mac)
    no_ip = run(*base, "--interface", "lo", "--mac", MAC)
    assert no_ip.returncode == 2 and "interface lo has no global IPv4 address" in no_ip.stderr, _lines(no_ip)
    missing = run(*base, "--interface", "nosuchif0")
    assert missing.returncode == 2 and "interface nosuchif0 does not exist" in missing.stderr, _lines(missing)


def test_busybox_wget_is_refused_clearly(run, tmp_path):
    require(shutil.which("busybox") is not None, "needs busybox")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for applet in subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True).stdout.split():
        (bin_dir / applet).symlink_to(shutil.which("busybox"))
    (bin_dir / "ip").unlink(missing_ok=True)
    (bin_dir / "ip").symlink_to(shutil.which("ip"))
    env = {"PATH": str(bin_dir)}
    result = run(*_lo("--url", "http://127.0.0.1:9", "--token", "t" * 30), using="busybox", env=env)
    assert result.returncode == 1, _lines(result)
    assert "curl is needed" in result.stderr


def test_help_documents_the_exit_codes(run):
    result = run("--help")
    assert result.returncode == 0
    assert "Exit codes: 0 ok, 1 usage/config error, 2 detection error, 3 rejected by the server" in result.stdout


def test_the_script_is_shellcheck_clean():
    require(shutil.which("shellcheck") is not None, "needs shellcheck (apt-get install shellcheck)")
    result = subprocess.run(["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# ------------------------------------------------------------------------------ a scripted server


class FakeServer:
    """Answers each request with the next scripted (status, headers, body) and records the requests."""

    def __init__(self):
        self.replies: list[tuple[int, dict[str, str], bytes]] = []
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                length = int(self.headers.get("Content-Length") or 0)
                fake.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length),
                     "at": time.monotonic()}
                )
                status, headers, body = fake.replies.pop(0) if fake.replies else (500, {}, b"")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, status: int, body: object = b"", **headers: str) -> None:
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content_Type", "application/json")
        self.replies.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, body))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    require(shutil.which("curl") is not None, "needs curl")
    server = FakeServer()
    yield server
    server.close()


MACHINE = {"id": 1, "hostname": "web-01", "ip_address": "127.0.0.1", "mac_address": MAC, "vni": None}


def test_the_request_carries_the_token_and_json(run, fake):
    token = "vxm_" + "k" * 40
    fake.reply(201, MACHINE)
    result = run(*_lo("--url", fake.url, "--extra-json", '{"rack": "r1"}'), env={"VXLANMGR_TOKEN": token})
    assert result.returncode == 0, _lines(result)
    assert result.stdout == "registered web-01 127.0.0.1 (created)\n"
    [request] = fake.requests
    assert request["path"] == "/api/machines/127.0.0.1"
    assert request["headers"]["Authorization"] == f"Bearer {token}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert "Expect" not in request["headers"]
    assert json.loads(request["body"]) == {"hostname": "web-01", "mac_address": MAC, "extra_data": {"rack": "r1"}}


def test_a_short_retry_after_is_honoured_as_a_minimum(run, fake):
    fake.reply(429, {"error": "Too many requests; retry in 1 s."}, Retry_After="1")
    fake.reply(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", Content_Type="text/html")
    fake.reply(200, MACHINE)
    result = run(*_lo("--url", fake.url, "--token", "t" * 30))
    assert result.returncode == 0, _lines(result)
    assert result.stdout == "registered web-01 127.0.0.1 (updated)\n"
    first, second, third = (request["at"] for request in fake.requests)
    assert second - first >= 1.0  # Retry-After: 1 beats the 25-50 ms backoff step
    assert third - second < 1.0
    lines = result.stderr.splitlines()
    assert lines[0].startswith("register-machine.sh: attempt 1/6 failed: HTTP 429: Too many requests; retry in 1 s.;")
    assert lines[1].startswith("register-machine.sh: attempt 2/6 failed: HTTP 503: 503 Service Unavailable;")


def test_a_200_that_is_not_a_machine_is_not_success(run, fake):
    fake.reply(200, b"<html><body>Welcome to nginx!</body></html>", Content_Type="text/html")
    result = run(*_lo("--url", fake.url, "--token", "t" * 30))
    assert result.returncode == 3, _lines(result)
    assert "the body is not a vxlanmgr machine" in result.stderr
    assert result.stdout == ""


def test_a_redirect_is_reported_not_followed(run, fake):
    fake.reply(301, b"", Location="https://vxlanmgr.example.com/api/machines/127.0.0.1")
    result = run(*_lo("--url", fake.url, "--token", "t" * 30))
    assert result.returncode == 3, _lines(result)
    assert "HTTP 301: the server redirects to https://vxlanmgr.example.com/api/machines/127.0.0.1" in result.stderr
    assert len(fake.requests) == 1


def test_an_error_message_is_unescaped(run, fake):
    fake.reply(403, {"error": "Nicht erlaubt: \"gr\u00fc\u00df\" \U0001f600 \\ /"})
    result = run(*_lo("--url", fake.url, "--token", "t" * 30), env={"LC_ALL": "C.UTF-8"})
    assert result.returncode == 3, _lines(result)
    assert result.stderr == 'register-machine.sh: error: HTTP 403: Nicht erlaubt: "grüß" \U0001f600 \\ /\n'
