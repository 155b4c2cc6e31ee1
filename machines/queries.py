"""Reading machines: the one filter and ordering used by the dashboard and the API alike."""

from django.db.models import Case, Count, F, IntegerField, Q, QuerySet, Value, When

from .models import Machine
from .validation import MAX_VNI

MAX_QUERY_LENGTH = 100
PAGE_SIZE = 100
# The VNI filter's value for machines registered without a VNI (?vni=none).
NO_VNI = "none"
# How many VNIs the dashboard's summary names; the filter lists them all.
VNI_SUMMARY_SIZE = 8
# Problems first: an operator opens the dashboard to see what is down.
_PROBLEMS_FIRST = (Machine.Status.UNREACHABLE, Machine.Status.PENDING, Machine.Status.ACTIVE)
_STATUS_RANK = Case(
    *(When(status=status, then=Value(rank)) for rank, status in enumerate(_PROBLEMS_FIRST)),
    output_field=IntegerField(),
)


def parse_vni(raw: str | None) -> str:
    """A VNI filter from a query string, canonical: "" (every VNI), NO_VNI, or a VNI's decimal digits without
    leading zeros. Anything else is "" (no filter), as an unknown status is."""
    raw = (raw or "").strip()
    if raw == NO_VNI:
        return NO_VNI
    if raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) <= MAX_VNI:
        return str(int(raw))
    return ""


def _in_vni(machines: QuerySet[Machine], vni: str) -> QuerySet[Machine]:
    """`machines` filtered by a canonical VNI filter (parse_vni)."""
    if vni == NO_VNI:
        return machines.filter(vni__isnull=True)
    if vni:
        return machines.filter(vni=int(vni))
    return machines


def search(status: str = "", q: str = "", vni: str = "") -> QuerySet[Machine]:
    """Machines of one status (or all), one VNI (a canonical filter from parse_vni, or all) and matching a
    search text in host name, IP or MAC address."""
    machines = _in_vni(Machine.objects.all(), vni)
    if status:
        machines = machines.filter(status=status)
    # PostgreSQL text cannot hold NUL, and no host name, address or MAC contains one.
    q = q.replace("\x00", "").strip()[:MAX_QUERY_LENGTH]
    if q:
        machines = machines.filter(
            Q(hostname__icontains=q) | Q(ip_address__icontains=q) | Q(mac_address__icontains=q.lower())
        )
    return machines


def problems_first(machines: QuerySet[Machine]) -> QuerySet[Machine]:
    return machines.annotate(status_rank=_STATUS_RANK).order_by("status_rank", "hostname", "ip_address")


# The other orders the dashboard offers (?sort=): by 30-day uptime, worst or best first; never measured last.
UPTIME_SORTS = {
    "uptime": F("uptime_30d").asc(nulls_last=True),
    "-uptime": F("uptime_30d").desc(nulls_last=True),
}


def by_uptime(machines: QuerySet[Machine], sort: str) -> QuerySet[Machine]:
    return machines.order_by(UPTIME_SORTS[sort], "hostname", "ip_address")


def empty_counts() -> dict[str, int]:
    return {status: 0 for status in Machine.Status.values} | {"total": 0}


def status_counts() -> dict[str, int]:
    counts = empty_counts()
    for row in Machine.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    counts["total"] = sum(counts[status] for status in Machine.Status.values)
    return counts


def inventory_counts() -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """The status counts of every machine (as status_counts), and of each VNI's machines keyed by its VNI
    filter value (parse_vni): one query, grouped by VNI and status, for what the dashboard shows."""
    overall, by_vni = empty_counts(), {}
    for vni, status, n in Machine.objects.values_list("vni", "status").annotate(n=Count("id")).order_by():
        counts = by_vni.setdefault(vni_key(vni), empty_counts())
        for each in (overall, counts):
            each[status] = each.get(status, 0) + n
            each["total"] += n
    return overall, by_vni


def vni_key(vni: int | None) -> str:
    """A machine's VNI as the filter and the per-VNI counts key it (NO_VNI for none)."""
    return NO_VNI if vni is None else str(vni)


def vni_filter_values(by_vni: dict[str, dict[str, int]], selected: str = "") -> list[str]:
    """The VNI filter's choices: every VNI that has machines, in numeric order, then NO_VNI when machines
    without one exist; the selected value always, so a bookmark keeps showing what it filters by."""
    return sorted(set(by_vni) | ({selected} if selected else set()), key=_vni_order)


def _vni_order(value: str) -> tuple[bool, int]:
    return (value == NO_VNI, 0 if value == NO_VNI else int(value))


def vni_entry(vni: str, counts: dict[str, int], selected: str = "") -> dict:
    """One VNI of the per-VNI counts, as machines/_vni_count.html shows it."""
    return {"vni": vni, "counts": counts, "selected": vni == selected, "none": vni == NO_VNI}


def vni_summary(by_vni: dict[str, dict[str, int]], selected: str = "", size: int = VNI_SUMMARY_SIZE) -> dict:
    """What the summary says per VNI: at most `size` VNIs, those with the most unreachable machines first, then
    the largest, and the selected one always; `more` is how many VNIs it leaves out."""
    ranked = sorted(
        by_vni.items(),
        key=lambda item: (-item[1][Machine.Status.UNREACHABLE], -item[1]["total"], _vni_order(item[0])),
    )
    shown = ranked[:size]
    if selected and selected in by_vni and all(vni != selected for vni, _ in shown):
        shown = [*shown[: size - 1], (selected, by_vni[selected])]
    return {
        "vnis": [vni_entry(vni, counts, selected) for vni, counts in shown],
        "more": len(by_vni) - len(shown),
        "no_vni": NO_VNI,
    }


def problems_first_slice(
    counts: dict[str, int], start: int, size: int, status: str = "", fields=(), vni: str = ""
) -> list[Machine]:
    """Machines [start, start + size) of ``problems_first(search(status, vni=vni))``, read status by status;
    `counts` are the status counts of that VNI's machines when there is one.

    The counts say where each status's machines begin, so each read is a range of the (status, hostname)
    index instead of a sort of every machine by a computed rank: the dashboard's first page at 10,000 machines
    costs the 100 rows it shows. Only without a search text, whose matches the counts do not know.
    """
    rows: list[Machine] = []
    for each in _PROBLEMS_FIRST:
        if status and each != status:
            continue
        if start >= counts[each]:
            start -= counts[each]
            continue
        wanted = size - len(rows)
        machines = _in_vni(Machine.objects.filter(status=each), vni).order_by("hostname", "ip_address")
        rows += list(machines.only(*fields)[start : start + wanted] if fields else machines[start : start + wanted])
        start = 0
        if len(rows) >= size:
            break
    return rows
