"""The dashboard's Silences page: operators silence alerts for a machine, a VNI or everything until a time, and
extend or end what is silenced; viewers see it. Plain forms, posted and redirected (no script needed)."""

from datetime import timedelta
from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_POST

from machines.models import Machine
from machines.validation import MAX_VNI

from .alerts import silences
from .models import Silence

# What the page asks of a user: the roles of machines/roles.py. Silences have no permission of their own: who may
# delete machines (operators) may also silence them, who may see them (viewers) sees the silences.
VIEW, MANAGE = "machines.view_machine", "machines.delete_machine"
RECENTLY_ENDED = 10


DURATIONS = [1800, 3600, 7200, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400]
EXTENSIONS = [3600, 4 * 3600, 86400, 7 * 86400]


def duration_label(seconds: int) -> str:
    """1800 -> "30 minutes", 7200 -> "2 hours", 86400 -> "1 day", in the active language."""
    if seconds % 86400 == 0:
        return ngettext("%(n)d day", "%(n)d days", seconds // 86400) % {"n": seconds // 86400}
    if seconds % 3600 == 0:
        return ngettext("%(n)d hour", "%(n)d hours", seconds // 3600) % {"n": seconds // 3600}
    return ngettext("%(n)d minute", "%(n)d minutes", seconds // 60) % {"n": seconds // 60}


def _permission(permission: str):
    def decorate(view):
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not request.user.has_perm(permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


class SilenceForm(forms.Form):
    scope = forms.ChoiceField(
        label=gettext_lazy("Silence"), widget=forms.RadioSelect, initial="machine",
        choices=[("machine", gettext_lazy("One machine")), ("vni", gettext_lazy("One VNI")),
                 ("everything", gettext_lazy("Everything"))],
    )
    machine = forms.CharField(label=gettext_lazy("Machine"), required=False, max_length=253,
                              help_text=gettext_lazy("Its host name or IP address."))
    vni = forms.IntegerField(label=gettext_lazy("VNI"), required=False, min_value=0, max_value=MAX_VNI)
    duration = forms.TypedChoiceField(label=gettext_lazy("For"), coerce=int, initial=3600)
    until = forms.DateTimeField(
        label=gettext_lazy("Or until"), required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=gettext_lazy("Instead of the duration, when set."),
    )
    reason = forms.CharField(label=gettext_lazy("Reason"), max_length=silences.MAX_REASON,
                             help_text=gettext_lazy("A ticket or the maintenance, so others know what to expect."))

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["duration"].choices = [(seconds, duration_label(seconds)) for seconds in DURATIONS]

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        data["target"], data["target_vni"] = None, None
        if scope == "machine":
            machine, refusal = silences.find_machine(data.get("machine") or "")
            if refusal:
                self.add_error("machine", refusal)
            data["target"] = machine
        elif scope == "vni":
            if data.get("vni") is None and "vni" not in self.errors:
                self.add_error("vni", _("Give the VNI to silence."))
            data["target_vni"] = data.get("vni")
        now = timezone.now()
        until = data.get("until")
        if until is not None:
            refusal = silences.end_refusal(until, now)
            if refusal:
                self.add_error("until", refusal)
            data["ends_at"] = until
        elif data.get("duration"):
            data["ends_at"] = now + timedelta(seconds=data["duration"])
        reason = data.get("reason")
        if reason is not None:
            refusal = silences.reason_refusal(reason)
            if refusal:
                self.add_error("reason", refusal)
        return data


def _page(request: HttpRequest, form: SilenceForm, status: int = 200) -> HttpResponse:
    now = timezone.now()
    ended = silences.recent().filter(ends_at__lte=now)[:RECENTLY_ENDED]
    context = {
        "form": form,
        "active": list(silences.active(now)),
        "ended": list(ended),
        "can_manage": request.user.has_perm(MANAGE),
        "extensions": [(seconds, duration_label(seconds)) for seconds in EXTENSIONS],
        "now": now,
    }
    return render(request, "monitoring/silences.html", context, status=status)


def _initial(request: HttpRequest) -> dict:
    """?machine=<id> (the machine page's link) fills in that machine."""
    key = request.GET.get("machine", "")
    machine = Machine.objects.filter(pk=int(key)).first() if key.isdigit() and len(key) < 18 else None
    if machine is None:
        return {}
    hostnames = Machine.objects.filter(hostname__iexact=machine.hostname).count()
    return {"scope": "machine", "machine": machine.hostname if hostnames == 1 else machine.ip_address}


@_permission(VIEW)
def silence_page(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _page(request, SilenceForm(initial=_initial(request)))
    if not request.user.has_perm(MANAGE):
        raise PermissionDenied
    form = SilenceForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    silence = silences.create(machine=data["target"], vni=data["target_vni"], ends_at=data["ends_at"],
                              reason=data["reason"], by=request.user.get_username())
    messages.success(request, _("Alerts are silenced for %(scope)s.") % {"scope": describe_scope(silence)})
    return redirect("monitoring-silences")


def describe_scope(silence: Silence) -> str:
    if silence.machine_id is not None:
        return str(silence.machine)
    if silence.vni is not None:
        return _("VNI %(vni)d") % {"vni": silence.vni}
    return _("every machine")


@_permission(MANAGE)
@require_POST
def extend(request: HttpRequest, pk: int) -> HttpResponse:
    silence = get_object_or_404(Silence, pk=pk)
    by = request.POST.get("by", "")
    if not by.isdigit() or int(by) not in EXTENSIONS:
        messages.error(request, _("Choose how long to extend the silence by."))
        return redirect("monitoring-silences")
    ends_at = silence.ends_at + timedelta(seconds=int(by))
    refusal = silences.end_refusal(ends_at)
    if refusal:
        messages.error(request, _("The silence for %(scope)s cannot end then: %(why)s")
                       % {"scope": describe_scope(silence), "why": refusal})
        return redirect("monitoring-silences")
    try:
        silences.change(silence, ends_at=ends_at)
    except silences.Ended:
        messages.error(request, _("The silence for %(scope)s has ended already.") % {"scope": describe_scope(silence)})
        return redirect("monitoring-silences")
    messages.success(request, _("The silence for %(scope)s was extended.") % {"scope": describe_scope(silence)})
    return redirect("monitoring-silences")


@_permission(MANAGE)
@require_POST
def end(request: HttpRequest, pk: int) -> HttpResponse:
    silence = get_object_or_404(Silence, pk=pk)
    silences.end(silence)
    messages.success(request, _("The silence for %(scope)s has ended; machines still unreachable will be "
                                "announced.") % {"scope": describe_scope(silence)})
    return redirect("monitoring-silences")
