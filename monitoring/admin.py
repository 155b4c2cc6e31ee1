"""Alerts in the admin: channels (the Apprise URL is a secret: typed, never shown again), the outbox to look at,
and the silences.

Channels seeded from VXLANMGR_NOTIFY_URLS keep their URL and name from the variable (a change here would be
undone at the next start); what the variable cannot say (enabled, events, VNIs, language) stays editable here
and seeding leaves it alone.
"""

from concurrent.futures import ThreadPoolExecutor

import apprise
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone, translation
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from machines.admin import ReadOnlyAdmin
from machines.validation import MAX_VNI

from .alerts import messages as alert_messages
from .alerts import sending
from .alerts.channels import apprise_accepts, masked
from .models import AlertKind, Channel, Notification, Silence

# A test from the admin waits for its answer; shorter than a delivery's, so a dead service fails the page soon.
TEST_TIMEOUT = 10.0
TEST_SENDERS = 8


def parse_vnis(text: str) -> list[int]:
    """ "100, 200" -> [100, 200]; ValueError naming the first bad item."""
    vnis = set()
    for item in text.replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        if not (item.isascii() and item.isdigit()) or int(item) > MAX_VNI:
            raise ValueError(
                gettext("“%(item)s” is not a VNI: each must be a whole number from 0 to %(max)d.")
                % {"item": item[:20], "max": MAX_VNI}
            )
        vnis.add(int(item))
    return sorted(vnis)


class ChannelForm(forms.ModelForm):
    # Never rendered with its value, not even after a validation error: a URL typed once is not shown again.
    url = forms.CharField(
        label=_("Apprise URL"), required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password", "spellcheck": "false",
                                                                 "class": "vTextField"}),
        help_text=_("One Apprise URL, e.g. mailtos://user:password@mail.example.com?to=ops@example.com or "
                    "slack://TokenA/TokenB/TokenC/#alerts. It holds credentials: it is never shown again."),
    )
    events = forms.MultipleChoiceField(
        label=_("events"), choices=AlertKind.choices, required=False, widget=forms.CheckboxSelectMultiple,
        help_text=_("The events sent to this channel; none ticked sends every event."),
    )
    vnis = forms.CharField(
        label=_("VNIs"), required=False,
        help_text=_("Only machines on these VNIs, separated by commas (e.g. 100, 200); empty sends every VNI. "
                    "Events without a machine (the monitor's) go to every channel."),
    )

    class Meta:
        model = Channel
        fields = ["name", "url", "enabled", "events", "vnis", "language"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.from_environment:
            self.fields.pop("url", None)
        elif self.instance.pk and "url" in self.fields:
            self.fields["url"].help_text = _("Stored: %(masked)s. Leave empty to keep it; type a new one to "
                                             "replace it.") % {"masked": masked(self.instance.url)}
        if self.instance.pk:
            self.initial["vnis"] = ", ".join(str(vni) for vni in self.instance.vnis)

    def clean_url(self) -> str:
        url = self.cleaned_data.get("url", "")
        if not url:
            if self.instance.pk and self.instance.url:
                return self.instance.url
            raise forms.ValidationError(_("An Apprise URL is required."), code="required")
        # The message never repeats the URL: it holds credentials.
        if not apprise_accepts(url):
            raise forms.ValidationError(
                _("Apprise cannot use this URL: its service is unknown or it is malformed. Check it against the "
                  "service's page in the Apprise documentation."),
                code="invalid",
            )
        return url

    def clean_vnis(self) -> list[int]:
        try:
            return parse_vnis(self.cleaned_data.get("vnis", ""))
        except ValueError as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None


def test_message(channel: Channel, user: str) -> tuple[str, str]:
    """The title and body of a test, in the channel's language."""
    with translation.override(channel.language):
        title = alert_messages.PREFIX + gettext("Test message")
        lines = [
            gettext("This is a test of the alert channel “%(name)s”, sent by %(user)s from the admin. Alerts about "
                    "your machines will arrive like this.") % {"name": channel.name, "user": user},
            gettext("When: %(when)s") % {"when": alert_messages.when(timezone.now())},
        ]
        if settings.BASE_URL:
            lines.append(gettext("Dashboard: %(url)s") % {"url": settings.BASE_URL + "/"})
    return title, "\n".join(lines)


def send_test(channel: Channel, user: str) -> tuple[bool, str]:
    title, body = test_message(channel, user)
    return sending.send(channel.url, title, body, apprise.NotifyType.INFO, timeout=TEST_TIMEOUT)


def report_tests(request: HttpRequest, channels: list[Channel]) -> None:
    """Send a test to each channel (side by side) and say on the page how each went."""
    user = request.user.get_username()
    with ThreadPoolExecutor(min(len(channels), TEST_SENDERS) or 1, thread_name_prefix="alerts-test") as pool:
        outcomes = list(pool.map(lambda channel: send_test(channel, user), channels))
    for channel, (ok, reason) in zip(channels, outcomes, strict=True):
        if ok:
            messages.success(request, gettext("Test message sent to “%(name)s”.") % {"name": channel.name})
        else:
            messages.error(request, gettext("The test message to “%(name)s” could not be sent: %(reason)s")
                           % {"name": channel.name, "reason": reason})


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ("name", "shown_url", "enabled", "shown_events", "shown_vnis", "language", "seeded")
    list_filter = ("enabled", "language")
    search_fields = ("name",)
    ordering = ("name",)
    actions = ["send_test_messages"]
    change_form_template = "admin/monitoring/channel/change_form.html"

    @admin.display(description=_("Apprise URL"))
    def shown_url(self, obj: Channel) -> str:
        return masked(obj.url)

    @admin.display(description=_("events"))
    def shown_events(self, obj: Channel) -> str:
        if not obj.events:
            return gettext("all")
        return ", ".join(str(AlertKind(kind).label) for kind in obj.events if kind in AlertKind.values)

    @admin.display(description=_("VNIs"))
    def shown_vnis(self, obj: Channel) -> str:
        return ", ".join(str(vni) for vni in obj.vnis) or gettext("all")

    @admin.display(description=_("seeded from the environment"), boolean=True)
    def seeded(self, obj: Channel) -> bool:
        return bool(obj.from_environment)

    def get_fields(self, request, obj=None):
        if obj is not None and obj.from_environment:
            return ("name", "shown_url", "from_environment", "enabled", "events", "vnis", "language", "created_at")
        if obj is not None:
            return ("name", "url", "enabled", "events", "vnis", "language", "created_at")
        return ("name", "url", "enabled", "events", "vnis", "language")

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.from_environment:
            return ("name", "shown_url", "from_environment", "created_at")
        return ("created_at",)

    def has_delete_permission(self, request, obj=None):
        # A seeded channel would be back at the next start: remove its URL from the variable instead.
        if obj is not None and obj.from_environment:
            return False
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset.filter(from_environment=""))

    # The URL travels in the POST: keep it out of error reports.
    @method_decorator(sensitive_post_parameters("url"))
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_test"
        return [
            path("<path:object_id>/test/", self.admin_site.admin_view(self.test_view), name=name),
            *super().get_urls(),
        ]

    @method_decorator(require_POST)
    def test_view(self, request: HttpRequest, object_id: str):
        channel = Channel.objects.filter(pk=object_id).first() if object_id.isdigit() else None
        if channel is None:
            raise Http404
        if not self.has_change_permission(request, channel):
            raise PermissionDenied
        report_tests(request, [channel])
        return HttpResponseRedirect(reverse("admin:monitoring_channel_change", args=[channel.pk]))

    @admin.action(description=_("Send a test message to the selected channels"), permissions=["change"])
    def send_test_messages(self, request, queryset):
        report_tests(request, list(queryset.order_by("name")))


# The outbox is written by the changes that cause alerts and worked by the delivery worker; here it is to look at.
@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ("occurred_at", "kind", "host", "channel", "shown_state", "attempts", "sent_at", "last_error")
    list_filter = ("state", "kind", "channel")
    list_select_related = ("channel",)
    search_fields = ("hostname", "ip_address", "last_error")
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at", "-pk")

    @admin.display(description=_("host"), ordering="hostname")
    def host(self, obj: Notification) -> str:
        if obj.hostname and obj.ip_address:
            return f"{obj.hostname} ({obj.ip_address})"
        return obj.hostname or obj.ip_address or "—"

    @admin.display(description=_("state"), ordering="state")
    def shown_state(self, obj: Notification) -> str:
        if obj.state == Notification.State.FAILED:
            return format_html('<strong class="alert-failed">✖ {}</strong>', obj.get_state_display())
        return obj.get_state_display()


# Silences are made, extended and ended on the dashboard's Silences page and through /api/silences, which check
# them and update the open dashboards; here they are to look up.
@admin.register(Silence)
class SilenceAdmin(ReadOnlyAdmin):
    list_display = ("reason", "scope", "starts_at", "ends_at", "created_by", "concluded_at")
    list_filter = ("ends_at",)
    list_select_related = ("machine",)
    search_fields = ("reason", "created_by")
    ordering = ("-ends_at",)

    @admin.display(description=_("scope"))
    def scope(self, obj: Silence) -> str:
        if obj.machine_id is not None:
            return str(obj.machine)
        if obj.vni is not None:
            return gettext("VNI %(vni)d") % {"vni": obj.vni}
        return gettext("everything")
