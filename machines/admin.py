from django.contrib import admin, messages
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .models import ApiToken, Machine, MachineEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# Machines change only through the register API and the dashboard's confirmed delete, which validate,
# log and push every change; the admin is for looking things up.
@admin.register(Machine)
class MachineAdmin(ReadOnlyAdmin):
    list_display = ("hostname", "ip_address", "mac_address", "vni", "status", "last_seen_at", "registered_at")
    list_filter = ("status", "vni")
    search_fields = ("hostname", "ip_address", "mac_address")
    ordering = ("hostname",)


# The log is evidence: nobody edits or removes entries, not even a superuser.
@admin.register(MachineEvent)
class MachineEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "kind", "hostname", "ip_address", "mac_address", "detail")
    list_filter = ("kind", "created_at")
    search_fields = ("hostname", "ip_address", "mac_address", "detail")
    date_hierarchy = "created_at"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "scope", "prefix", "from_environment", "created_at", "last_used_at", "revoked_at")
    list_filter = ("scope", "revoked_at")
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "from_environment", "created_at", "last_used_at")
    fields = ("name", "scope", "prefix", "from_environment", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if not change:
            raw = ApiToken.generate_raw()
            obj.set_raw(raw)
            messages.warning(
                request,
                _("New token (shown only this once, copy it now): %(raw)s") % {"raw": raw},
            )
        super().save_model(request, obj, form, change)

    @admin.action(description=_("Revoke selected tokens"))
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        messages.success(request, _("%(n)d token(s) revoked.") % {"n": count})
