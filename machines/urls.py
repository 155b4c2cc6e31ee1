from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.dashboard, name="machines-dashboard"),
    path("machines/<int:pk>", views.machine_detail, name="machines-detail"),
    path("machines/<int:pk>/delete", views.confirm_delete, name="machines-confirm-delete"),
    path("machines/<int:pk>/delete/confirm", views.delete, name="machines-delete"),
    path("api/machines", api.machine_list, name="machines-api-list"),
    path("api/machines/<str:key>", api.machine_item, name="machines-api-item"),
]
