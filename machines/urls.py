from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.dashboard, name="machines-dashboard"),
    path("api/machines", api.machine_list, name="machines-api-list"),
    path("api/machines/<str:key>", api.machine_item, name="machines-api-item"),
]
