"""The API's documentation, served by the product: docs/openapi.yaml as it is and as JSON, and Swagger UI over it.

Swagger UI is vendored (static/vendor/swagger-ui/) and started by a script file of ours (static/js/api-docs.js),
so the page lives under the site's strict Content-Security-Policy like every other.

Anyone may read all three, signed in or not: the document is the contract published with the source and holds
no data, and those who need it most, people scripting hosts and automation, hold API tokens rather than
dashboard accounts. Every call that "Try it out" makes still needs a token (or the reader's own session).
"""

import datetime
import json
from functools import lru_cache

import yaml
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt

from machines.api import method_not_allowed

SPEC_PATH = settings.BASE_DIR / "docs" / "openapi.yaml"
_YAML, _JSON = 0, 1


def _iso(value: datetime.date) -> str:
    # YAML reads an unquoted 2025-06-01T12:00:00Z as a timestamp; JSON has only strings for it.
    return value.isoformat()


@lru_cache(maxsize=1)
def _documents(modified: int) -> tuple[bytes, bytes]:
    """The document as YAML and as JSON, read again when the file changes (`modified` is its mtime)."""
    raw = SPEC_PATH.read_bytes()
    spec = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)
    return raw, json.dumps(spec, ensure_ascii=False, indent=2, default=_iso).encode()


def _document(request: HttpRequest, which: int, content_type: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    return HttpResponse(_documents(SPEC_PATH.stat().st_mtime_ns)[which], content_type=content_type)


# Read-only and under /api/ like the rest of the API: csrf_exempt as its views are, so another method gets the
# API's JSON 405 rather than a CSRF page.
@csrf_exempt
def openapi_yaml(request: HttpRequest) -> HttpResponse:
    return _document(request, _YAML, "application/yaml; charset=utf-8")


@csrf_exempt
def openapi_json(request: HttpRequest) -> HttpResponse:
    return _document(request, _JSON, "application/json")


@csrf_exempt
def api_docs(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed("GET, HEAD")
    return render(request, "api_docs.html")
