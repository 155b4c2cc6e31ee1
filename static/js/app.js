// vxlanmgr page behaviour. Served as a file so the Content-Security-Policy needs no 'unsafe-inline'.
(function () {
  "use strict";
  const REFRESH_MS = 60000;
  document.documentElement.classList.add("scripted");

  document.addEventListener("change", function (event) {
    const target = event.target;
    if (target.classList && target.classList.contains("js-autosubmit") && target.form) {
      target.form.submit();
    }
  });

  // Relative times ("3 minutes ago") drift while a page stays open; recompute them from their datetime.
  function updateRelativeTimes(root) {
    const lang = document.documentElement.lang || "en";
    const format = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
    const now = Date.now();
    (root || document).querySelectorAll("time.js-relative").forEach(function (el) {
      const when = Date.parse(el.getAttribute("datetime"));
      if (Number.isNaN(when)) return;
      const seconds = Math.round((when - now) / 1000);
      const abs = Math.abs(seconds);
      let text;
      if (abs < 45) text = format.format(Math.min(0, seconds) === 0 ? 0 : seconds, "second");
      else if (abs < 2700) text = format.format(Math.round(seconds / 60), "minute");
      else if (abs < 79200) text = format.format(Math.round(seconds / 3600), "hour");
      else text = format.format(Math.round(seconds / 86400), "day");
      el.textContent = text;
    });
  }

  window.vxlanmgr = window.vxlanmgr || { live: false };

  function refreshList() {
    const list = document.getElementById("machine-list");
    if (list && window.htmx) window.htmx.trigger(list, "vxlanmgr:refresh");
  }
  window.vxlanmgr.refreshList = refreshList;

  document.addEventListener("DOMContentLoaded", function () {
    updateRelativeTimes();
    setInterval(updateRelativeTimes, 30000);
    // Polling is the fallback: while the live channel is connected it pushes every change instead.
    setInterval(function () { if (!window.vxlanmgr.live) refreshList(); }, REFRESH_MS);
  });
  document.addEventListener("htmx:afterSwap", function (event) { updateRelativeTimes(event.target); });
  document.addEventListener("htmx:oobAfterSwap", function (event) { updateRelativeTimes(event.target); });
})();
