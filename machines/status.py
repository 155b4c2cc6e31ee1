"""A machine's liveness status: the one definition the models, the rules and the pages share.

A module of its own so the monitor's pure rules can use it without loading the models.
"""

from django.db import models
from django.utils.translation import gettext_lazy as _


class Status(models.TextChoices):
    PENDING = "pending", _("Pending")
    ACTIVE = "active", _("Active")
    UNREACHABLE = "unreachable", _("Unreachable")
