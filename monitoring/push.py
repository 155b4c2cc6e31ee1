"""Rendering a change event into the out-of-band fragments one dashboard swaps in.

The rows and cards are the same partials the page renders, so page, response and push cannot disagree.
"""

from dataclasses import dataclass, field

from django.template.loader import render_to_string
from django.utils import translation

from machines import queries
from machines.models import Machine

MAX_VISIBLE = 1000


@dataclass(frozen=True)
class View:
    """What one open dashboard shows: its filters, its page and the machines on it."""

    visible: frozenset[int] = field(default_factory=frozenset)
    status: str = ""
    q: str = ""
    page: int = 1

    def page_ids(self) -> set[int]:
        machines = queries.problems_first(queries.search(self.status, self.q))
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
    return render_to_string(
        "machines/_push.html",
        {
            "machines": machines,
            "deleted": deleted,
            "counts": queries.status_counts(),
            "announcements": announcements,
            "needs_refresh": needs_refresh,
            "oob": True,
            "flash": True,
        },
    )


def render_for(event: dict, view: View, language: str) -> str:
    with translation.override(language):
        return render_push(event, view)
