// Pages marked data-live follow the runs as they go, without a reload: the
// server pushes each run's stage (server-sent events from /api/events), a
// card's badge then reads "in progress: validating", and when a run ends the
// page's live parts are fetched again and swapped in, with the result and
// its counts. Plain JS, no framework, nothing from elsewhere.
(function () {
  "use strict";
  var main = document.querySelector("main[data-live]");
  if (!main) return;

  // Someone typing or choosing in a form keeps what they typed: the swap
  // waits until they are done.
  function busy() {
    var active = document.activeElement;
    return active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function refresh() {
    if (busy()) { setTimeout(refresh, 2000); return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var next = new DOMParser().parseFromString(text, "text/html");
        var parts = main.querySelectorAll("[data-live-part]");
        var nextMain = next.querySelector("main");
        if (!nextMain) return;
        // Pages with forms swap only their live parts (a chosen file stays
        // chosen); the others swap all they show.
        if (parts.length && nextMain.querySelector("[data-live-part]")) {
          parts.forEach(function (part) {
            var fresh = next.getElementById(part.id);
            if (fresh) part.replaceWith(fresh);
          });
        } else {
          main.innerHTML = nextMain.innerHTML;
        }
      })
      .catch(function () {});
  }

  function show(run) {
    var text = "in progress" + (run.stage ? ": " + run.stage : "");
    var badges = document.querySelectorAll("[data-live-integration], [data-live-execution]");
    badges.forEach(function (badge) {
      if (badge.getAttribute("data-live-integration") === run.integration ||
          (run.execution_id && badge.getAttribute("data-live-execution") === run.execution_id)) {
        badge.textContent = text;
        badge.className = "badge badge-running";
      }
    });
  }

  if (!window.EventSource) { setInterval(refresh, 5000); return; }
  var events = new EventSource("/api/events");
  events.addEventListener("run", function (e) {
    var run;
    try { run = JSON.parse(e.data); } catch (_) { return; }
    if (run.state === "in_progress") show(run); else refresh();
  });
  events.addEventListener("lagged", refresh);
})();
