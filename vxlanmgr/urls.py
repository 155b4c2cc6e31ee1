from django.contrib import admin
from django.urls import include, path

from monitoring import metrics as monitoring_metrics
from monitoring import views as monitoring_views

from . import api_docs, auth_views

urlpatterns = [
    path("", include("machines.urls")),
    path("", include("monitoring.urls")),
    path("login/", auth_views.login_view, name="login"),
    path("logout/", auth_views.logout_view, name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("health", monitoring_views.health, name="health"),
    path("metrics", monitoring_metrics.metrics, name="monitoring-metrics"),
    path("api/openapi.yaml", api_docs.openapi_yaml, name="api-openapi-yaml"),
    path("api/openapi.json", api_docs.openapi_json, name="api-openapi-json"),
    path("api/docs", api_docs.api_docs, name="api-docs"),
    path("admin/", admin.site.urls),
]
