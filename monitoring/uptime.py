"""Uptime over 24 h, 7 d, 30 d and 365 d: raw results where they exist, buckets beyond (to be written)."""


def refresh_uptime_30d(after_machine: int = 0) -> int | None:
    """Recompute Machine.uptime_30d for one slice of machines with ids above `after_machine`; returns the last
    id of the slice to continue from, or None when every machine is done."""
    raise NotImplementedError
