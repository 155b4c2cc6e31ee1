from django.urls import path

from . import api, monitors_views, silences_api, silences_views

urlpatterns = [
    path("api/machines/<str:key>/history", api.machine_history, name="monitoring-api-history"),
    path("api/silences", silences_api.silence_list, name="monitoring-api-silences"),
    path("api/silences/<str:key>", silences_api.silence_item, name="monitoring-api-silence"),
    path("monitors", monitors_views.monitor_page, name="monitoring-monitors"),
    path("silences", silences_views.silence_page, name="monitoring-silences"),
    path("silences/<int:pk>/extend", silences_views.extend, name="monitoring-silences-extend"),
    path("silences/<int:pk>/end", silences_views.end, name="monitoring-silences-end"),
]
