"""Alerts: what reaches people when a machine or the monitor changes state.

outbox.py writes alerts in the transaction of the change; delivery.py sends them through Apprise.
"""
