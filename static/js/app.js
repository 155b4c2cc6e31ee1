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
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      const when = Date.parse(el.getAttribute("datetime"));
      if (Number.isNaN(when)) return;
      const seconds = Math.round((when - now) / 1000);
      const abs = Math.abs(seconds);
      // Same units and rounding down as the server's naturaltime, so a refresh never changes the wording.
      const sign = seconds < 0 ? -1 : 1;
      let text;
      if (abs < 60) text = format.format(sign * abs, "second");
      else if (abs < 3600) text = format.format(sign * Math.floor(abs / 60), "minute");
      else if (abs < 86400) text = format.format(sign * Math.floor(abs / 3600), "hour");
      else text = format.format(sign * Math.floor(abs / 86400), "day");
      el.textContent = text;
    });
  }

  window.vxlanmgr = window.vxlanmgr || { live: false };

  // At most one list refresh a second: a boot storm of registrations must not become a storm of reloads.
  const REFRESH_GAP_MS = 1000;
  let lastRefresh = 0;
  let refreshTimer = null;
  function refreshList() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      lastRefresh = Date.now();
      const list = document.getElementById("machine-list");
      if (list && window.htmx) window.htmx.trigger(list, "vxlanmgr:refresh");
    }, Math.max(0, lastRefresh + REFRESH_GAP_MS - Date.now()));
  }
  window.vxlanmgr.refreshList = refreshList;

  // htmx's ws extension waits up to 64 s between reconnects; an operator should not wait that long.
  if (window.htmx) {
    window.htmx.config.wsReconnectDelay = function (retry) {
      return Math.min(10000, 500 * Math.pow(2, retry)) * (0.5 + Math.random() / 2);
    };
  }

  document.addEventListener("DOMContentLoaded", function () {
    updateRelativeTimes();
    setInterval(updateRelativeTimes, 30000);
    // Polling is the fallback: while the live channel is connected it pushes every change instead.
    setInterval(function () { if (!window.vxlanmgr.live) refreshList(); }, REFRESH_MS);
  });
  // The live channel: badge, re-sync after a reconnect, and reconnecting where htmx's ws extension gives up.
  let opened = false;
  let retries = 0;
  function setBadge(state) {
    const badge = document.getElementById("live-badge");
    if (!badge) return;
    badge.dataset.state = state;
    // The words come from the template's data-label-* attributes, translated; none are kept here.
    const label = badge.dataset["label" + state.charAt(0).toUpperCase() + state.slice(1)];
    if (label) badge.textContent = label;
  }
  document.addEventListener("htmx:wsOpen", function () {
    window.vxlanmgr.live = true;
    retries = 0;
    setBadge("live");
    if (opened) refreshList();  // anything missed while disconnected is re-read
    opened = true;
  });
  document.addEventListener("htmx:wsClose", function (event) {
    window.vxlanmgr.live = false;
    setBadge("reconnecting");
    const code = event.detail && event.detail.event ? event.detail.event.code : 0;
    // The extension itself retries only after abnormal closes; a server restart may close normally.
    if ([1006, 1011, 1012, 1013].indexOf(code) < 0 && event.detail && event.detail.socketWrapper) {
      const delay = Math.min(30000, 1000 * Math.pow(2, retries++)) * (0.5 + Math.random() / 2);
      setTimeout(function () { event.detail.socketWrapper.reconnect(); }, delay);
    }
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    const signal = document.getElementById("live-signal");
    if (signal && signal.dataset.refresh) {
      delete signal.dataset.refresh;
      refreshList();
    }
  });

  // The delete confirmation: the server renders it into a native <dialog>; this only opens and closes it.
  document.addEventListener("htmx:afterSwap", function (event) {
    updateRelativeTimes(event.target);
    if (event.target.id === "confirm-dialog-body") {
      const dialog = document.getElementById("confirm-dialog");
      if (dialog && !dialog.open) dialog.showModal();
    }
  });
  document.addEventListener("click", function (event) {
    const button = event.target.closest ? event.target.closest(".js-close-dialog") : null;
    if (!button) return;
    const dialog = button.closest("dialog");
    if (dialog) dialog.close();
  });
  document.addEventListener("close", function (event) {
    if (event.target.id === "confirm-dialog") {
      document.getElementById("confirm-dialog-body").replaceChildren();
    }
  }, true);
  document.addEventListener("vxlanmgr:deleted", function (event) {
    const id = event.detail && event.detail.id;
    const row = document.getElementById("machine-" + id);
    // Hidden at once, removed by the live push that follows: a push finding no target is an htmx error.
    if (row) row.hidden = true;
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) { updateRelativeTimes(event.target); });
})();
