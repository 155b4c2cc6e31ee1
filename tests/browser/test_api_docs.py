"""/api/docs: Swagger UI over docs/openapi.yaml, under the site's strict CSP, with "Try it out" on a typed token."""

import re

import pytest
from playwright.sync_api import expect

from machines.models import ApiToken
from machines.tokens import create_token

from .support import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Any Content-Security-Policy violation, even one whose console message Chromium leaves out, is kept here.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}`);
});
"""


def open_docs(context, server, errors):
    page = errors.watch(context.new_page())
    page.add_init_script(WATCH_CSP)
    page.goto(f"{server.url}/api/docs")
    return page


def operation(page, method: str, path: re.Pattern):
    return page.locator(f".opblock-{method}").filter(has=page.locator(".opblock-summary-path", has_text=path))


def assert_no_csp_violation(page) -> None:
    assert page.evaluate("window.__cspViolations") == []


def test_the_docs_show_the_register_operation_without_errors_or_csp_violations(server, new_context, errors):
    page = open_docs(new_context(), server, errors)
    register = operation(page, "put", re.compile(r"^/api/machines/\{(ip|key)\}$"))
    expect(register).to_be_visible()
    register.locator(".opblock-summary-control").click()
    expect(register.locator(".opblock-body")).to_be_visible()
    expect(page.locator(".info .title")).to_contain_text("vxlanmgr API")
    # The strict policy is the site's own, not relaxed for this page.
    policy = page.request.get(f"{server.url}/api/docs").headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
    assert_no_csp_violation(page)
    errors.assert_none()


def test_try_it_out_with_a_typed_token_that_is_never_stored(server, new_context, errors):
    _token, raw = create_token("docs", ApiToken.Scope.API)
    page = open_docs(new_context(), server, errors)
    page.locator(".auth-wrapper .authorize").click()
    bearer = page.locator(".auth-container").filter(has_text="bearerAuth")
    bearer.locator("input").fill(raw)
    bearer.locator("button.authorize").click()
    bearer.locator(".btn-done").click()

    listing = operation(page, "get", re.compile(r"^/api/machines$"))
    listing.locator(".opblock-summary-control").click()
    listing.locator(".try-out__btn").click()
    listing.locator(".execute").click()
    expect(listing.locator(".live-responses-table tr.response .response-col_status")).to_have_text("200")
    # The request carried the token the reader typed, and nothing kept it.
    expect(listing.locator(".curl-command")).to_contain_text(f"Bearer {raw}")
    stored = page.evaluate("JSON.stringify([localStorage, sessionStorage, document.cookie])")
    assert raw not in stored
    page.reload()
    expect(operation(page, "get", re.compile(r"^/api/machines$"))).to_be_visible()
    expect(page.locator(".auth-wrapper .authorize")).not_to_have_class(re.compile(r"\blocked\b"))
    assert_no_csp_violation(page)
    errors.assert_none()


def test_the_dashboard_footer_links_to_the_docs_and_the_document_is_served(server, new_context, errors):
    page = log_in(new_context(), server, errors)
    page.get_by_role("link", name="API documentation").click()
    expect(page).to_have_url(f"{server.url}/api/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    spec = page.request.get(f"{server.url}/api/openapi.json")
    assert spec.ok and spec.json()["info"]["title"] == "vxlanmgr API"
    assert page.request.get(f"{server.url}/api/openapi.yaml").text().startswith("openapi: ")
    errors.assert_none()
