"""Reading machines: the one filter and ordering used by the dashboard and the API alike."""

from django.db.models import Case, Count, F, IntegerField, Q, QuerySet, Value, When

from .models import Machine

MAX_QUERY_LENGTH = 100
PAGE_SIZE = 100
# Problems first: an operator opens the dashboard to see what is down.
_PROBLEMS_FIRST = (Machine.Status.UNREACHABLE, Machine.Status.PENDING, Machine.Status.ACTIVE)
_STATUS_RANK = Case(
    *(When(status=status, then=Value(rank)) for rank, status in enumerate(_PROBLEMS_FIRST)),
    output_field=IntegerField(),
)


def search(status: str = "", q: str = "") -> QuerySet[Machine]:
    machines = Machine.objects.all()
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


def status_counts() -> dict[str, int]:
    counts = {status: 0 for status in Machine.Status.values}
    for row in Machine.objects.values("status").annotate(n=Count("id")).order_by():
        counts[row["status"]] = row["n"]
    counts["total"] = sum(counts[status] for status in Machine.Status.values)
    return counts


def problems_first_slice(counts: dict[str, int], start: int, size: int, status: str = "", fields=()) -> list[Machine]:
    """Machines [start, start + size) of ``problems_first(search(status))``, read status by status.

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
        machines = Machine.objects.filter(status=each).order_by("hostname", "ip_address")
        rows += list(machines.only(*fields)[start : start + wanted] if fields else machines[start : start + wanted])
        start = 0
        if len(rows) >= size:
            break
    return rows
