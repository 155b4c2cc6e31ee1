from django.contrib import admin
from django.urls import include, path

from monitoring import views as monitoring_views

from . import auth_views

urlpatterns = [
    path("", include("machines.urls")),
    path("login/", auth_views.login_view, name="login"),
    path("logout/", auth_views.logout_view, name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("health", monitoring_views.health, name="health"),
    path("admin/", admin.site.urls),
]
