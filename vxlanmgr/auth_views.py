"""Signing in and out of the dashboard; lockouts after failed sign-ins are django-axes' (settings.AXES_*)."""

from axes.helpers import get_cool_off
from django.contrib.auth import logout
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST


class _LoginView(LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True


login_view = _LoginView.as_view()


def locked_out(request: HttpRequest, response=None, credentials=None) -> HttpResponse:
    """What a locked-out sign-in gets, on the dashboard's login page and the admin's alike: the login page with
    the reason, 429, and when to try again. The password was not checked."""
    wait = int(get_cool_off(request).total_seconds())
    username = str((credentials or {}).get("username") or request.POST.get("username", ""))[:150]
    form = AuthenticationForm(request, initial={"username": username})
    message = _("Too many sign-in attempts. Try again in %(s)d seconds.") % {"s": wait}
    page = render(
        request, "registration/login.html", {"form": form, "rate_limit_error": message, "next": ""}, status=429
    )
    page["Retry-After"] = str(wait)
    return page


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("login")
