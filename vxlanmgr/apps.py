from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class VxlanmgrConfig(AppConfig):
    """The project itself: start-up checks and the commands that run the whole system."""

    name = "vxlanmgr"
    verbose_name = "vxlanmgr"

    def ready(self) -> None:
        checks.register(_secret_key_present)


def _secret_key_present(app_configs, **kwargs) -> list[checks.CheckMessage]:
    # Reading settings.SECRET_KEY itself would raise Django's own, less helpful error.
    if not settings.SECRET_KEY_MISSING:
        return []
    return [
        checks.Error(
            f"No secret key: {settings.SECRET_KEY_FILE} does not exist.",
            hint="Run 'python manage.py bootstrap' (make run does), or set VXLANMGR_SECRET_KEY.",
            id="vxlanmgr.E001",
        )
    ]
