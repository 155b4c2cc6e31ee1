from functools import wraps

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from monitoring.status import monitor_problem

from . import queries
from .http import client_ip, rate_limited
from .models import Machine


def _partial_or_page(request: HttpRequest, page: str, partial: str, context: dict) -> HttpResponse:
    """htmx asks for the fragment it swaps; a normal visit (or a bookmark) gets the whole page."""
    template = partial if request.htmx and not request.htmx.boosted else page
    return render(request, template, context)


def _filters(request: HttpRequest) -> dict:
    status = request.GET.get("status", "")
    if status not in Machine.Status.values:
        status = ""
    return {"status": status, "q": request.GET.get("q", "").strip()[: queries.MAX_QUERY_LENGTH]}


def _page_url(filters: dict, number: int | None) -> str:
    if number is None:
        return ""
    params = {key: value for key, value in filters.items() if value}
    params["page"] = number
    return reverse("machines-dashboard") + "?" + urlencode(params)


def _login_required(view):
    """Like login_required, but an htmx request is told to load the login page instead of swapping it in."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if request.htmx:
            back = request.htmx.current_url_abs_path or "/"
            return HttpResponseClientRedirect(f"{reverse('login')}?{urlencode({'next': back})}")
        return redirect_to_login(request.get_full_path())

    return wrapped


@_login_required
@vary_on_headers("HX-Request")
def dashboard(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    machines = queries.problems_first(queries.search(**filters))
    page = Paginator(machines, queries.PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "machines": page.object_list,
        "filters": filters,
        "counts": queries.status_counts(),
        "monitor_problem": monitor_problem(),
        "statuses": Machine.Status.choices,
        "previous_url": _page_url(filters, page.previous_page_number() if page.has_previous() else None),
        "next_url": _page_url(filters, page.next_page_number() if page.has_next() else None),
    }
    return _partial_or_page(request, "machines/dashboard.html", "machines/_list.html", context)


class _RateLimitedLoginView(LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def post(self, request, *args, **kwargs):
        wait = rate_limited(request, "login", settings.LOGIN_RATE, f"ip:{client_ip(request)}")
        if wait:
            # The password is never checked while limited, so guessing gains nothing.
            form = self.form_class(request, initial={"username": request.POST.get("username", "")[:150]})
            message = _("Too many sign-in attempts. Try again in %(s)d seconds.") % {"s": wait}
            response = self.render_to_response(self.get_context_data(form=form, rate_limit_error=message))
            response.status_code = 429
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)


login_view = _RateLimitedLoginView.as_view()


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("login")
