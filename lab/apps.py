from django.apps import AppConfig


class LabConfig(AppConfig):
    """Trying and measuring vxlanmgr: installed only with VXLANMGR_LAB=1, never in the production image."""

    name = "lab"
    verbose_name = "Lab"
