from django.contrib import admin
from django.urls import include, path

from machines import views as machine_views
from monitoring import views as monitoring_views

urlpatterns = [
    path("", include("machines.urls")),
    path("login/", machine_views.login_view, name="login"),
    path("logout/", machine_views.logout_view, name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("health", monitoring_views.health, name="health"),
    path("admin/", admin.site.urls),
]
