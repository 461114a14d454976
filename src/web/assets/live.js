// Pages marked data-live refresh their content while shown, so a run in
// progress turns into its result without a reload. Plain fetch, no framework.
(function () {
  "use strict";
  var main = document.querySelector("main[data-live]");
  if (!main) return;
  var seconds = parseInt(main.getAttribute("data-live"), 10) || 5;
  function busy() {
    var active = document.activeElement;
    return active && main.contains(active) && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }
  function refresh() {
    if (document.hidden || busy()) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var next = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (!next) return;
        main.innerHTML = next.innerHTML;
        if (!next.hasAttribute("data-live")) { main.removeAttribute("data-live"); clearInterval(timer); }
      })
      .catch(function () {});
  }
  var timer = setInterval(refresh, seconds * 1000);
})();
