from functools import wraps

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Page, Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, trigger_client_event

from . import queries, services
from .models import Machine, MachineEvent
from .validation import address_refusal

RECENT_LOG = 50
# What a dashboard row shows (templates/machines/_rows.html): the page reads no more of each machine.
ROW_FIELDS = ("hostname", "ip_address", "mac_address", "vni", "status", "last_seen_at", "registered_at", "uptime_30d")


def _partial_or_page(request: HttpRequest, page: str, partial: str, context: dict, status: int = 200) -> HttpResponse:
    """htmx asks for the fragment it swaps; a normal visit (or a bookmark) gets the whole page."""
    template = partial if request.htmx and not request.htmx.boosted else page
    return render(request, template, context, status=status)


def _filters(request: HttpRequest) -> dict:
    status = request.GET.get("status", "")
    if status not in Machine.Status.values:
        status = ""
    sort = request.GET.get("sort", "")
    if sort not in queries.UPTIME_SORTS:
        sort = ""  # problems first
    return {
        "status": status,
        "vni": queries.parse_vni(request.GET.get("vni")),
        "q": request.GET.get("q", "").strip()[: queries.MAX_QUERY_LENGTH],
        "sort": sort,
    }


def _list_url(filters: dict, **changes) -> str:
    params = {key: value for key, value in (filters | changes).items() if value}
    return reverse("machines-dashboard") + ("?" + urlencode(params) if params else "")


def _page_url(filters: dict, number: int | None) -> str:
    return "" if number is None else _list_url(filters, page=number)


def _sort_urls(filters: dict) -> dict:
    """Where the sortable headings lead, from the first page: status back to problems first, uptime worst
    first, or best first when it is worst first already."""
    return {
        "status": _list_url(filters, sort=""),
        "uptime": _list_url(filters, sort="-uptime" if filters["sort"] == "uptime" else "uptime"),
    }


VIEW, DELETE = "machines.view_machine", "machines.delete_machine"


def _login_required(permission: str = VIEW):
    """Signed in (an htmx request is told to load the login page instead of swapping it in) and holding
    `permission` (403 otherwise: a viewer's forged delete changes nothing)."""

    def decorate(view):
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                if request.htmx:
                    back = request.htmx.current_url_abs_path or "/"
                    return HttpResponseClientRedirect(f"{reverse('login')}?{urlencode({'next': back})}")
                return redirect_to_login(request.get_full_path())
            if not request.user.has_perm(permission):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


@_login_required()
@vary_on_headers("HX-Request")
def dashboard(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    machines = queries.search(filters["status"], filters["q"], filters["vni"])
    if filters["sort"]:
        machines = queries.by_uptime(machines, filters["sort"])
    else:
        machines = queries.problems_first(machines)
    counts, by_vni = queries.inventory_counts()
    # The status counts of the machines the VNI filter leaves (all of them without one).
    listed = (by_vni.get(filters["vni"]) or queries.empty_counts()) if filters["vni"] else counts
    paginator = Paginator(machines.only(*ROW_FIELDS), queries.PAGE_SIZE)
    if filters["q"] or filters["sort"]:
        if not filters["q"]:
            paginator.count = listed[filters["status"] or "total"]
        page = paginator.get_page(request.GET.get("page"))
        shown = list(page.object_list)
    else:
        # The counts the page shows anyway say how many machines the list has and where each status begins:
        # no second COUNT(*), and the page is read along the index instead of sorting every machine.
        paginator.count = listed[filters["status"] or "total"]
        number = paginator.get_page(request.GET.get("page")).number
        start = (number - 1) * queries.PAGE_SIZE
        shown = queries.problems_first_slice(
            listed, start, queries.PAGE_SIZE, filters["status"], ROW_FIELDS, vni=filters["vni"]
        )
        page = Page(shown, number, paginator)
    context = {
        "page": page,
        "machines": shown,
        "visible": ",".join(str(machine.pk) for machine in shown),
        "filters": filters,
        "counts": counts,
        "vni_summary": queries.vni_summary(by_vni, filters["vni"]),
        "vni_choices": queries.vni_filter_values(by_vni, filters["vni"]),
        "no_vni": queries.NO_VNI,
        "statuses": Machine.Status.choices,
        "can_delete": request.user.has_perm(DELETE),
        "previous_url": _page_url(filters, page.previous_page_number() if page.has_previous() else None),
        "next_url": _page_url(filters, page.next_page_number() if page.has_next() else None),
        "sort_urls": _sort_urls(filters),
    }
    return _partial_or_page(request, "machines/dashboard.html", "machines/_list.html", context)


def _find(pk: int) -> Machine | None:
    return Machine.objects.filter(pk=pk).first()


@_login_required()
def machine_detail(request: HttpRequest, pk: int) -> HttpResponse:
    machine = _find(pk)
    if machine is None:
        return render(request, "machines/gone.html", {"pk": pk}, status=404)
    context = {
        "machine": machine,
        "log_entries": MachineEvent.objects.filter(machine=machine)[:RECENT_LOG],
        "address_refusal": address_refusal(machine.ip_address),
    }
    return render(request, "machines/detail.html", context)


@_login_required(DELETE)
@vary_on_headers("HX-Request")
def confirm_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """The confirmation, rendered by the server so it shows the machine as it is now."""
    machine = _find(pk)
    return _confirmation(request, {"machine": machine, "pk": pk}, 404 if machine is None else 200)


def _confirmation(request: HttpRequest, context: dict, status: int) -> HttpResponse:
    return _partial_or_page(request, "machines/confirm_delete.html", "machines/_confirm_delete.html", context, status)


@_login_required(DELETE)
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        entry = services.delete_machine(pk, actor=request.user.get_username())
    except services.AlreadyDeleted:
        return _confirmation(request, {"machine": None, "pk": pk}, 404)
    except services.NotUnreachable as exc:
        return _confirmation(request, {"machine": exc.machine, "pk": pk, "conflict": True}, 409)
    if not request.htmx:
        done = _("%(host)s (%(ip)s) was deleted.") % {"host": entry.hostname, "ip": entry.ip_address}
        messages.success(request, done)
        return redirect("machines-dashboard")
    response = render(request, "machines/_deleted.html", {"entry": entry, "pk": pk})
    return trigger_client_event(response, "vxlanmgr:deleted", {"id": pk})
