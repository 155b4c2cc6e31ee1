"""The Japanese translation is complete and current.

* locale/ja/LC_MESSAGES/django.po has no empty or fuzzy entry and keeps every placeholder;
* the committed django.mo holds exactly what the .po says (CI machines may lack gettext, so it is committed);
* running makemessages over the code now finds nothing new and nothing stale: every marked string is translated;
* the main pages rendered in Japanese show none of the English labels.

When a test here fails after a template or code change: run `make messages`, translate the new entries in
locale/ja/LC_MESSAGES/django.po, run `make messages` again and commit django.po and django.mo.
"""

import gettext
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone, translation

from conftest import require

ROOT = Path(settings.BASE_DIR)
LOCALE_DIR = ROOT / "locale" / "ja" / "LC_MESSAGES"
PO_PATH = LOCALE_DIR / "django.po"
MO_PATH = LOCALE_DIR / "django.mo"
# The same arguments as `make messages`, plus what must never be scanned for UI strings.
IGNORE = ["-i", ".venv/*", "-i", "var/*", "-i", "*/tests/*", "-i", "tests/*", "-i", "staticfiles/*"]
MAKEMESSAGES = ["manage.py", "makemessages", "-l", "ja", "--no-obsolete", *IGNORE]
FIX = "run `make messages`, translate the new entries in locale/ja/LC_MESSAGES/django.po and commit .po and .mo"


@pytest.fixture(autouse=True)
def _keep_the_language():
    # A Japanese request leaves Japanese active in this thread; later tests that call gettext expect English.
    with translation.override(translation.get_language()):
        yield


# ------------------------------------------------------------------------------------------------ .po parsing


@dataclass
class Entry:
    msgid: str = ""
    msgid_plural: str | None = None
    msgctxt: str | None = None
    msgstrs: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    line: int = 0

    @property
    def key(self) -> str:
        # How gettext's catalogue names the entry.
        return f"{self.msgctxt}\x04{self.msgid}" if self.msgctxt is not None else self.msgid

    def __str__(self) -> str:
        return f"line {self.line}: {self.msgid!r}"


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_KEYWORD = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[(\d+)\])?)\s+"(.*)"\s*$')


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda match: _ESCAPES.get(match.group(1), match.group(1)), text)


def parse_po(text: str) -> tuple[Entry, list[Entry]]:
    """(header, entries) of a .po file; obsolete (#~) entries are left out."""
    entries: list[Entry] = []
    entry: Entry | None = None
    target: tuple[str, int | None] | None = None
    pending_flags: set[str] = set()

    def finish() -> None:
        nonlocal entry, target
        if entry is not None:
            entries.append(entry)
        entry, target = None, None

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            finish()
            continue
        if line.startswith("#"):
            if entry is not None and target is not None:
                finish()  # a comment after msgstr starts the next entry
            if line.startswith("#,"):
                pending_flags |= {flag.strip() for flag in line[2:].split(",") if flag.strip()}
            continue
        match = _KEYWORD.match(line)
        if match:
            keyword, index, value = match.groups()
            if entry is None or (keyword in ("msgctxt", "msgid") and entry.msgstrs):
                finish()
                entry = Entry(flags=pending_flags, line=number)
                pending_flags = set()
            if keyword.startswith("msgstr"):
                target = ("msgstr", int(index) if index is not None else 0)
                entry.msgstrs[target[1]] = _unescape(value)
            else:
                target = (keyword, None)
                setattr(entry, keyword, _unescape(value))
            continue
        if line.startswith('"') and line.endswith('"') and entry is not None and target is not None:
            value = _unescape(line[1:-1])
            if target[0] == "msgstr":
                entry.msgstrs[target[1]] += value
            else:
                setattr(entry, target[0], (getattr(entry, target[0]) or "") + value)
            continue
        raise AssertionError(f"line {number} of the .po file is not understood: {raw!r}")
    finish()
    headers = [e for e in entries if e.msgid == "" and e.msgctxt is None]
    assert len(headers) == 1, "the .po file must have exactly one header entry"
    return headers[0], [e for e in entries if e is not headers[0]]


# Python %-format directives: %(name)s, %d, %.2f, and %% (which must be doubled in both or in neither).
_PLACEHOLDER = re.compile(r"%(?:\((?P<name>[^)]+)\))?[#0 +-]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa%]")
_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")


def placeholders(text: str) -> list[str]:
    return sorted(match.group(0) for match in _PLACEHOLDER.finditer(text))


def markup(text: str) -> list[str]:
    return sorted(_TAG.findall(text))


@pytest.fixture(scope="module")
def po():
    assert PO_PATH.exists(), f"{PO_PATH} is missing: {FIX}"
    return parse_po(PO_PATH.read_text(encoding="utf-8"))


def _problems(entries: list[Entry]) -> list[str]:
    problems = []
    for entry in entries:
        if "fuzzy" in entry.flags:
            problems.append(f"fuzzy: {entry}")
        expected = [0]  # Japanese has one plural form: msgstr[0] serves every count
        if sorted(entry.msgstrs) != expected:
            problems.append(f"msgstr forms {sorted(entry.msgstrs)}, expected {expected}: {entry}")
        for index, msgstr in entry.msgstrs.items():
            if not msgstr.strip():
                problems.append(f"untranslated (msgstr[{index}] empty): {entry}")
    return problems


# ------------------------------------------------------------------------------------------------ (a) the .po


class TestPoFile:
    def test_header_is_japanese_with_one_plural_form(self, po):
        header, _entries = po
        text = header.msgstrs[0]
        assert "Language: ja\n" in text
        assert "Plural-Forms: nplurals=1; plural=0;\n" in text
        assert "charset=UTF-8" in text
        assert "fuzzy" not in header.flags, "the header is still marked fuzzy"

    def test_every_entry_is_translated_and_none_is_fuzzy(self, po):
        _header, entries = po
        assert entries, "the .po file has no entries"
        problems = _problems(entries)
        assert not problems, f"{len(problems)} problem(s); {FIX}:\n" + "\n".join(problems)

    def test_placeholders_and_markup_survive_translation(self, po):
        _header, entries = po
        problems = []
        for entry in entries:
            for index, msgstr in entry.msgstrs.items():
                source = entry.msgid if index == 0 or entry.msgid_plural is None else entry.msgid_plural
                if "python-format" in entry.flags or _PLACEHOLDER.search(source):
                    # With one plural form, msgstr[0] stands for the plural too: it must carry its placeholders.
                    wanted = set(placeholders(source))
                    if entry.msgid_plural is not None:
                        wanted |= set(placeholders(entry.msgid_plural))
                    if set(placeholders(msgstr)) != wanted or (
                        "python-format" in entry.flags
                        and placeholders(msgstr).count("%%") != placeholders(source).count("%%")
                    ):
                        problems.append(f"placeholders {placeholders(msgstr)} != {sorted(wanted)}: {entry}")
                if markup(msgstr) != markup(source):
                    problems.append(f"markup {markup(msgstr)} != {markup(source)}: {entry}")
        assert not problems, "\n".join(problems)

    def test_no_duplicate_entries(self, po):
        _header, entries = po
        keys = [entry.key for entry in entries]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        assert not duplicates, f"duplicate msgids: {duplicates}"

    def test_gettext_accepts_the_file(self, po):
        msgfmt = shutil.which("msgfmt")
        require(msgfmt is not None, "needs GNU gettext's msgfmt (apt-get install gettext)")
        result = subprocess.run(
            [msgfmt, "--check", "--statistics", "-o", os.devnull, str(PO_PATH)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert "untranslated" not in result.stderr and "fuzzy" not in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------------ (b) the .mo


def _po_catalog(entries: list[Entry]) -> dict:
    """What gettext's catalogue holds for these entries: msgid -> msgstr, (msgid, n) -> msgstr for plurals."""
    catalog: dict = {}
    for entry in entries:
        if entry.msgid_plural is None:
            catalog[entry.key] = entry.msgstrs[0]
        else:
            for index, msgstr in entry.msgstrs.items():
                catalog[(entry.key, index)] = msgstr
    return catalog


class TestMoFile:
    def test_the_mo_matches_the_po(self, po):
        assert MO_PATH.exists(), f"{MO_PATH} is missing: run `make messages` and commit it"
        _header, entries = po
        with MO_PATH.open("rb") as handle:
            compiled = gettext.GNUTranslations(handle)
        mo = {key: value for key, value in compiled._catalog.items() if key != ""}
        expected = _po_catalog(entries)
        missing = sorted(str(key) for key in expected.keys() - mo.keys())
        extra = sorted(str(key) for key in mo.keys() - expected.keys())
        changed = sorted(str(key) for key in expected.keys() & mo.keys() if expected[key] != mo[key])
        assert not (missing or extra or changed), (
            "django.mo is out of date with django.po; run `make messages` (or compilemessages -l ja) and commit "
            f"it.\nonly in .po: {missing}\nonly in .mo: {extra}\ntranslated differently: {changed}"
        )

    def test_the_mo_declares_one_plural_form(self):
        assert MO_PATH.exists(), f"{MO_PATH} is missing: run `make messages` and commit it"
        with MO_PATH.open("rb") as handle:
            compiled = gettext.GNUTranslations(handle)
        assert compiled.info().get("language") == "ja"
        assert {compiled.plural(n) for n in (0, 1, 2, 5, 11, 101)} == {0}


# ------------------------------------------------------------------------------------------------ (c) the code


_NOT_SOURCE = {
    ".git",
    ".venv",
    "var",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "staticfiles",
    "test-results",
    "node_modules",
}


def _skip(directory: str, names: list[str]) -> set[str]:
    # Sources only: no tool caches, databases, sockets or other special files a running test may leave.
    skipped = set()
    for name in names:
        path = Path(directory, name)
        if name in _NOT_SOURCE or path.is_symlink():
            skipped.add(name)
        elif not path.is_dir() and (not path.is_file() or path.suffix not in {".py", ".html", ".txt", ".po", ".mo"}):
            skipped.add(name)
    return skipped


def _copy_project(destination: Path) -> Path:
    """The project's sources, as makemessages sees them, in a place where it may rewrite the .po."""
    return Path(shutil.copytree(ROOT, destination, ignore=_skip))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The .po makemessages produces from the code as it is now, merged with the committed translations."""
    require(
        shutil.which("xgettext") is not None and shutil.which("msgmerge") is not None,
        "needs GNU gettext's xgettext and msgmerge (apt-get install gettext)",
    )
    base = tmp_path_factory.mktemp("messages")
    copy = _copy_project(base / "project")
    env = {
        **os.environ,
        "VXLANMGR_VAR_DIR": str(base / "var"),
        "VXLANMGR_SECRET_KEY": os.environ.get("VXLANMGR_SECRET_KEY") or "makemessages-only",
    }
    result = subprocess.run(
        [sys.executable, *MAKEMESSAGES], cwd=copy, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"makemessages failed:\n{result.stdout}\n{result.stderr}"
    return parse_po((copy / "locale" / "ja" / "LC_MESSAGES" / "django.po").read_text(encoding="utf-8"))


class TestCodeIsTranslated:
    def test_every_marked_string_in_the_code_is_translated(self, extracted):
        _header, entries = extracted
        problems = _problems(entries)
        assert not problems, f"strings in the code without a Japanese translation; {FIX}:\n" + "\n".join(problems)

    def test_the_committed_po_is_current(self, po, extracted):
        committed = {entry.key: entry for entry in po[1]}
        current = {entry.key: entry for entry in extracted[1]}
        new = sorted(current.keys() - committed.keys())
        stale = sorted(committed.keys() - current.keys())
        assert not new, f"strings in the code missing from the committed django.po; {FIX}: {new}"
        assert not stale, f"entries in django.po that the code no longer uses; run `make messages`: {stale}"
        plural_changed = sorted(k for k in current if current[k].msgid_plural != committed[k].msgid_plural)
        assert not plural_changed, f"plural forms changed; {FIX}: {plural_changed}"


# ------------------------------------------------------------------------------------------------ (d) the pages


class _VisibleText(HTMLParser):
    """Text a person sees or hears: text nodes, and the attributes browsers and screen readers show."""

    SHOWN_ATTRIBUTES = {"aria-label", "placeholder", "title", "alt"}
    HIDDEN_ELEMENTS = {"script", "style"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN_ELEMENTS:
            self._hidden += 1
        for name, value in attrs:
            if value and (name in self.SHOWN_ATTRIBUTES or name.startswith("data-label")):
                self.parts.append(value)
            # Submit and button inputs show their value.
            if name == "value" and value and dict(attrs).get("type") in {"submit", "button"}:
                self.parts.append(value)

    def handle_endtag(self, tag):
        if tag in self.HIDDEN_ELEMENTS and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden and data.strip():
            self.parts.append(data.strip())


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return "\n".join(parser.parts)


# The main labels of the UI, as an operator would miss them.
ENGLISH_LABELS = [
    "Machines",
    "Machine",
    "Search",
    "Sign out",
    "Sign in",
    "Last seen",
    "Delete",
    "Status",
    "Host name",
    "IP address",
    "MAC address",
    "Registered",
    "Active",
    "Unreachable",
    "Pending",
    "Live",
    "Connecting",
    "Reconnecting",
    "Filter",
    "All statuses",
    "Language",
    "Change",
    "Password",
    "User name",
    "Close",
    "Cancel",
    "Log",
    "Recent checks",
    "Round trip",
    "Loss",
    "Result",
    "Next check",
    "never",
    "answered",
    "Timed out",
    "Became unreachable",
    "Recovered",
    "Skip to content",
    "Previous",
    "Next",
    "Page",
    "ago",
]
# The language picker names each language in that language, by design.
SELF_NAMED = {"English", "Japanese"}


# Two or more English words in a row: a sentence or label someone forgot to mark for translation.
_PHRASE = re.compile(r"(?<![\w./:-])[A-Za-z][a-z]+(?: [A-Za-z][a-z]+)+(?![\w/-])")
# Commands quoted in translated sentences stay as typed.
COMMANDS = {"python manage", "make run"}
# Pieces of translated msgids that are words of their own elsewhere on a page, the same in both languages:
# the VNI column, and django-axes' "Access attempts" in the admin (axes ships no Japanese).
SAME_IN_BOTH = {"VNI", "attempts"}


def _english_left(html: str, po_entries: list[Entry], labels=ENGLISH_LABELS) -> list[str]:
    text = visible_text(html)
    found = [label for label in labels if re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", text)]
    if labels:
        found += [phrase for phrase in _PHRASE.findall(text) if phrase not in COMMANDS]
    # Any translated msgid rendered verbatim (the pieces between its placeholders) was not translated.
    for entry in po_entries:
        if entry.msgid in SELF_NAMED or entry.msgstrs.get(0) == entry.msgid:
            continue
        for source in filter(None, (entry.msgid, entry.msgid_plural)):
            for piece in _PLACEHOLDER.split(source):
                piece = (piece or "").strip(" .,:;()?")
                if (
                    piece not in SAME_IN_BOTH
                    and len(piece) >= 3
                    and re.search("[A-Za-z]{3}", piece)
                    and re.search(rf"(?<![\w-]){re.escape(piece)}(?![\w-])", text)
                ):
                    found.append(piece)
    return sorted(set(found))


# MachineEvent.detail is stored in English by design (it is evidence, like a server log), so pages show it as is.
LOG_DETAILS = {
    "unreachable": "4 consecutive failed checks; failure: timeout; last round trip seen: 0.42 ms",
    "recovered": "answered again after an outage of 0:05:00; round trip 0.42 ms",
}


@pytest.fixture
def machines(make_machine):
    from machines.models import MachineEvent
    from monitoring.models import PingResult

    now = timezone.now()
    down = make_machine(
        hostname="edge-01",
        status="unreachable",
        unreachable_since=now - timedelta(minutes=5),
        last_seen_at=now - timedelta(minutes=7),
        last_rtt_ms=0.42,
        consecutive_failures=4,
        extra_data={"rack": "r1"},
    )
    up = make_machine(hostname="core-02", status="active", last_seen_at=now, last_rtt_ms=0.3)
    waiting = make_machine(hostname="spare-03")
    PingResult.objects.create(machine=down, ok=False, failure="timeout", loss=1.0)
    PingResult.objects.create(machine=down, ok=True, rtt_ms=0.42)
    for kind, detail in LOG_DETAILS.items():
        MachineEvent.snapshot(down, kind, detail).save()
    return {"unreachable": down, "active": up, "pending": waiting}


def _get_ja(client, path, **extra):
    response = client.get(path, HTTP_ACCEPT_LANGUAGE="ja", **extra)
    html = response.content.decode()
    if "HTTP_HX_REQUEST" not in extra:
        assert '<html lang="ja">' in html, f"{path} did not render in Japanese"
    return response, html


@pytest.mark.django_db
class TestPagesInJapanese:
    def test_dashboard(self, operator_client, machines, po):
        response, html = _get_ja(operator_client, reverse("machines-dashboard"))
        assert response.status_code == 200
        assert "マシン" in html and "稼働中" in html and "到達不能" in html and "確認待ち" in html
        assert 'data-label-live="ライブ"' in html and 'data-label-reconnecting="再接続中…"' in html
        assert "監視" in html  # the no-monitor banner (monitoring/status.py)
        assert _english_left(html, po[1]) == []

    def test_dashboard_fragment_with_no_match(self, operator_client, machines, po):
        _response, html = _get_ja(operator_client, "/?q=nothing-matches", HTTP_HX_REQUEST="true")
        assert "検索条件に一致するマシンはありません。" in html
        assert _english_left(html, po[1]) == []

    def test_empty_dashboard(self, operator_client, db, po):
        _response, html = _get_ja(operator_client, reverse("machines-dashboard"))
        assert "登録済みのマシンはまだありません。" in html
        assert _english_left(html, po[1]) == []

    def test_login_page(self, client, db, po):
        response, html = _get_ja(client, reverse("login"))
        assert response.status_code == 200 and "ログイン" in html
        assert _english_left(html, po[1]) == []

    def test_failed_login(self, client, operator, po):
        response = client.post(
            reverse("login"), {"username": "operator", "password": "wrong"}, HTTP_ACCEPT_LANGUAGE="ja"
        )
        html = response.content.decode()
        assert "form-error" in html
        assert _english_left(html, po[1]) == []

    def test_machine_page(self, operator_client, machines, po):
        response, html = _get_ja(operator_client, reverse("machines-detail", args=[machines["unreachable"].pk]))
        assert response.status_code == 200
        assert "タイムアウト" in html and "応答あり" in html and "復旧" in html
        for detail in LOG_DETAILS.values():
            assert detail in html
            html = html.replace(detail, "")
        assert _english_left(html, po[1]) == []

    def test_machine_gone(self, operator_client, db, po):
        response, html = _get_ja(operator_client, reverse("machines-detail", args=[999999]))
        assert response.status_code == 404
        assert _english_left(html, po[1]) == []

    def test_delete_confirmation(self, operator_client, machines, po):
        pk = machines["unreachable"].pk
        response, html = _get_ja(operator_client, reverse("machines-confirm-delete", args=[pk]))
        assert response.status_code == 200 and "削除" in html
        assert _english_left(html, po[1]) == []

    def test_delete_refused_and_done(self, operator_client, machines, po):
        refused = operator_client.post(
            reverse("machines-delete", args=[machines["active"].pk]), HTTP_ACCEPT_LANGUAGE="ja", HTTP_HX_REQUEST="true"
        )
        assert refused.status_code == 409
        assert "削除されませんでした" in refused.content.decode()
        assert _english_left(refused.content.decode(), po[1]) == []
        done = operator_client.post(
            reverse("machines-delete", args=[machines["unreachable"].pk]),
            HTTP_ACCEPT_LANGUAGE="ja",
            HTTP_HX_REQUEST="true",
        )
        assert done.status_code == 200
        assert "削除済み" in done.content.decode()
        assert _english_left(done.content.decode(), po[1]) == []

    def test_admin_pages(self, admin_client, machines, po):
        from machines.models import MachineEvent

        entry = MachineEvent.objects.first()
        paths = [
            reverse("admin:index"),
            reverse("admin:machines_machine_changelist"),
            reverse("admin:machines_machine_change", args=[machines["unreachable"].pk]),
            reverse("admin:machines_machineevent_changelist"),
            reverse("admin:machines_machineevent_change", args=[entry.pk]),
            reverse("admin:machines_apitoken_changelist"),
            reverse("admin:machines_apitoken_add"),
        ]
        for path in paths:
            response = admin_client.get(path, HTTP_ACCEPT_LANGUAGE="ja")
            assert response.status_code == 200, path
            # Django's own admin text is Django's catalogue, not ours: its search icon keeps alt="Search".
            html = response.content.decode().replace('alt="Search"', 'alt=""')
            for detail in LOG_DETAILS.values():
                html = html.replace(detail, "")
            assert _english_left(html, po[1], labels=()) == [], path


@pytest.mark.django_db
def test_api_errors_follow_the_language(client, register_token):
    response = client.put(
        "/api/machines/10.9.0.1",
        data='{"hostname": "a..b", "mac_address": "nope"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {register_token}",
        HTTP_ACCEPT_LANGUAGE="ja",
        REMOTE_ADDR="10.9.0.1",
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors["hostname"] == ["ホスト名に空のラベル（連続したドット）は使用できません。"]
    assert "MACアドレス" in errors["mac_address"][0]


def test_app_js_has_no_english_ui_text():
    """The script takes every word it shows from data-label-* attributes the templates render translated."""
    script = (ROOT / "static" / "js" / "app.js").read_text(encoding="utf-8")
    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", script, flags=re.S)
    strings = re.findall(r"\"((?:[^\"\\\n]|\\.)*)\"|'((?:[^'\\\n]|\\.)*)'|`([^`]*)`", code)
    literals = [next(part for part in groups if part) for groups in strings if any(groups)]
    # Identifiers, selectors, event and attribute names are fine; words meant for people are not:
    # several words, a capitalised word, a sentence's end, or any non-ASCII text.
    prose = [
        text
        for text in literals
        if text != "use strict"
        and (
            re.search(r"[A-Za-z]\s+[A-Za-z]", text)
            or re.match(r"[A-Z][a-z]", text)
            or re.search(r"[.!?…]$", text)
            or not text.isascii()
        )
    ]
    assert prose == [], f"English text in app.js; render it into a data attribute instead: {prose}"
    dashboard = (ROOT / "templates" / "machines" / "dashboard.html").read_text(encoding="utf-8")
    for state in ("live", "reconnecting", "connecting"):
        assert re.search(rf'data-label-{state}="{{% translate ', dashboard), f"data-label-{state} is not translated"
