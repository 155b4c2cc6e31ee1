"""Rendering a change event into the out-of-band fragments one dashboard swaps in.

A machine's row is the one partial the page renders (machines/_rows.html), so page, response and push cannot
disagree; htmx's ws extension swaps every top-level element of a message into the element with its id.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from django.template.loader import render_to_string
from django.utils import translation

from machines import queries
from machines.models import Machine

MAX_VISIBLE = 1000
# Renders kept for sharing: one event, one view, one language is one render, however many sockets show it.
SHARED_RENDERS = 256
_shared: OrderedDict[tuple, str] = OrderedDict()
_shared_lock = threading.Lock()


@dataclass(frozen=True)
class View:
    """What one open dashboard shows: its filters, its page and the machines on it."""

    visible: frozenset[int] = field(default_factory=frozenset)
    status: str = ""
    q: str = ""
    vni: str = ""  # the VNI filter, canonical (queries.parse_vni)
    vnis: frozenset[str] = field(default_factory=frozenset)  # the VNIs its per-VNI line shows
    can_delete: bool = False
    page: int = 1

    def page_ids(self) -> set[int]:
        machines = queries.problems_first(queries.search(self.status, self.q, self.vni))
        start = (self.page - 1) * queries.PAGE_SIZE
        return set(machines.values_list("pk", flat=True)[start : start + queries.PAGE_SIZE])


def render_push(event: dict, view: View) -> str:
    """The fragments for one page, in the active language; empty when nothing it shows changed."""
    changed = [pk for pk in event.get("changed", []) if pk in view.visible]
    deleted = [pk for pk in event.get("deleted", []) if pk in view.visible]
    announce = {int(pk): status for pk, status in event.get("announce", {}).items()}
    machines = list(Machine.objects.filter(pk__in=changed)) if changed else []
    # A machine that vanished between the event and now is gone for this page too.
    deleted += sorted(set(changed) - {machine.pk for machine in machines})
    elsewhere = set(event.get("changed", [])) - view.visible
    # A new machine, or a status change that moves a machine onto this page, needs the list re-rendered.
    needs_refresh = bool(event.get("created")) or bool(elsewhere and elsewhere & view.page_ids())
    announcements = [
        (machine, Machine.Status(announce[machine.pk]).label) for machine in machines if machine.pk in announce
    ]
    counts, by_vni = queries.inventory_counts()
    # Every changed machine's VNI, shown on this page or not: the page's per-VNI line may count it.
    everywhere = event.get("changed", [])
    changed_vnis = (
        {machine.vni for machine in machines}
        if set(everywhere) <= view.visible
        else set(Machine.objects.filter(pk__in=everywhere).values_list("vni", flat=True).distinct())
    )
    # The whole summary when machines came or went, or when the VNIs the page's line shows are no longer the
    # ones it would show; otherwise the status counts and the counts of the changed machines' VNIs it shows,
    # each swapped in place by its id: a push stays about one row's size.
    vni_summary = queries.vni_summary(by_vni, view.vni)
    changed_keys = {queries.vni_key(vni) for vni in changed_vnis} & set(by_vni)
    whole_line = bool(deleted or event.get("created")) or {each["vni"] for each in vni_summary["vnis"]} != view.vnis
    return render_to_string(
        "machines/_push.html",
        {
            "machines": machines,
            "deleted": deleted,
            "counts": counts,
            "vni_summary": vni_summary if whole_line else None,
            "vni_changes": [
                queries.vni_entry(key, by_vni[key], view.vni) for key in sorted(changed_keys & view.vnis)
            ],
            "announcements": announcements,
            "needs_refresh": needs_refresh,
            "flash": True,
            "can_delete": view.can_delete,
        },
    )


def render_for(event: dict, view: View, language: str) -> str:
    """The fragments for one socket. Sockets showing the same view in the same language share one render of
    an event that carries an ``id``: it was rendered after the event's changes were committed, which is all a
    socket's own render would guarantee, and later changes arrive as events of their own."""
    key = (event["id"], view, language) if event.get("id") else None
    if key is not None:
        with _shared_lock:
            html = _shared.get(key)
        if html is not None:
            return html
    with translation.override(language):
        html = render_push(event, view)
    if key is not None:
        with _shared_lock:
            _shared[key] = html
            while len(_shared) > SHARED_RENDERS:
                _shared.popitem(last=False)
    return html
