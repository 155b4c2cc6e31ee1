"""Alert channels in the admin, in a real browser: add one pointing at a local webhook receiver, the URL is masked
once saved, and "Send a test message" says on the page that it arrived, which it did."""

import re

import pytest
from playwright.sync_api import expect

from monitoring.models import Channel
from tests.support.receivers import HttpReceiver

from .support import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SECRET = "hunter2-webhook-password"


def admin_log_in(context, server, path: str):
    page = context.new_page()
    page.goto(f"{server.url}{path}")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.locator("#login-form [type=submit]").click()
    page.wait_for_url(re.compile(re.escape(f"{server.url}{path}") + "$"))
    return page


def test_add_a_channel_see_it_masked_and_send_a_test(user, django_user_model, server, new_context, errors):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    with HttpReceiver() as receiver:
        url = f"json://alerts:{SECRET}@127.0.0.1:{receiver.port}/hook"
        page = errors.watch(admin_log_in(new_context(), server, "/admin/monitoring/channel/add/"))
        page.fill("#id_name", "ops webhook")
        page.fill("#id_url", url)
        page.get_by_label("Became unreachable").check()
        page.get_by_label("Recovered", exact=True).check()
        page.fill("#id_vnis", "100, 200")
        page.locator("input[name=_continue]").click()

        expect(page.locator(".messagelist .success")).to_contain_text("was added successfully")
        channel = Channel.objects.get()
        assert channel.url == url and channel.events == ["unreachable", "recovered"] and channel.vnis == [100, 200]
        # Masked: the stored URL is shown as its scheme only, the field is empty, the secret is nowhere.
        expect(page.locator("#id_url")).to_have_value("")
        expect(page.locator(".field-url")).to_contain_text("Stored: json://••••")
        assert SECRET not in page.content() and str(receiver.port) not in page.content()

        page.get_by_role("button", name="Send a test message").click()
        expect(page.locator(".messagelist .success")).to_have_text("Test message sent to “ops webhook”.")
        [request] = receiver.wait_for(1, 10, "/hook")
        assert request.json()["title"] == "[vxlanmgr] Test message"

        # The list shows it masked too.
        page.goto(f"{server.url}/admin/monitoring/channel/")
        expect(page.locator("#result_list")).to_contain_text("json://••••")
        assert SECRET not in page.content()

        # A receiver that is down: the page says so, with the reason but without the credentials.
        receiver.stop()
        page.goto(f"{server.url}/admin/monitoring/channel/{channel.pk}/change/")
        page.get_by_role("button", name="Send a test message").click()
        failure = page.locator(".messagelist .error")
        expect(failure).to_contain_text("The test message to “ops webhook” could not be sent")
        assert SECRET not in page.content()
    errors.assert_none()
