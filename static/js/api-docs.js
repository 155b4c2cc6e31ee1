// Starts Swagger UI on /api/docs (templates/api_docs.html). A file of our own rather than the package's inline
// initializer, so the page runs under the site's strict Content-Security-Policy (no inline script or style).
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");

  // Swagger UI has a dark scheme of its own; follow the reader's, as the dashboard does.
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  const followScheme = () => document.documentElement.classList.toggle("dark-mode", dark.matches);
  followScheme();
  dark.addEventListener("change", followScheme);

  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    displayRequestDuration: true,
    // A token typed into "Authorize" lives in this page's memory only: never in localStorage, gone on reload.
    persistAuthorization: false,
    // Never send the document to swagger.io's validator, nor load another document named in the address bar.
    validatorUrl: null,
    queryConfigEnabled: false,
  });
})();
