"""What the browser tests and `make screenshots` share: Chromium's launch, the real server as a process, login."""

import re
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
USERNAME = "operator"
PASSWORD = "browser-test-password-42"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
START_TIMEOUT = 45.0


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


class PageErrors:
    """Console errors and uncaught exceptions of every page it watches."""

    def __init__(self):
        self.console: list[str] = []
        self.uncaught: list[str] = []

    def watch(self, page):
        def on_console(message):
            if message.type == "error":
                self.console.append(f"{message.text} @ {message.location.get('url', '')}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.uncaught.append(str(error)))
        return page

    def assert_none(self, *allowed: str) -> None:
        """No uncaught exception, and no console error except those matching an `allowed` regex."""
        assert not self.uncaught, self.uncaught
        unexpected = [text for text in self.console if not any(re.search(pattern, text) for pattern in allowed)]
        assert not unexpected, unexpected


def log_in(
    context, server, errors: PageErrors | None = None, path: str = "/", live: bool = True, username: str = USERNAME
):
    """Sign in through the real login page; by default wait for the dashboard's live channel too."""
    from playwright.sync_api import expect

    page = context.new_page()
    if errors:
        errors.watch(page)
    page.goto(f"{server.url}{path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.locator("form.stack button[type=submit]").click()
    page.wait_for_url(re.compile(re.escape(f"{server.url}{path}") + r"$"))
    if live:
        expect(page.locator("#live-badge")).to_have_attribute("data-state", "live")
    return page


@contextmanager
def no_reload(page):
    """Fails if the page navigated (reloaded) inside the block."""
    page.evaluate("window.__vxmSamePage = true")
    yield
    assert page.evaluate("window.__vxmSamePage === true"), "the page reloaded"
