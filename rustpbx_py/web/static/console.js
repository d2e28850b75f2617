/* rustpbx_py console: the little JavaScript the pages use, in one file so
   the Content-Security-Policy can say script-src 'self' (no inline code).
   Every page works without it; it only adds conveniences. */
(function () {
  "use strict";

  /* Forms with data-confirm ask before they post (delete, hang up). */
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  /* A record's SIP flow: a link to #msg-N opens that message's <details>. */
  function openTarget() {
    var id = decodeURIComponent(location.hash.slice(1));
    var element = id && document.getElementById(id);
    if (element && element.tagName === "DETAILS") {
      element.open = true;
    }
  }
  window.addEventListener("hashchange", openTarget);
  document.addEventListener("DOMContentLoaded", openTarget);

  /* Live tables (data-refresh="SECONDS" on an element with an id): fetch
     the page again and swap that element for its new copy, while the tab
     is visible and no form inside it has focus.  The new copy carries
     fresh CSRF tokens, so its buttons keep working. */
  function refresher(element) {
    var seconds = Math.max(2, parseInt(element.getAttribute("data-refresh"), 10) || 5);
    var busy = false;
    function tick() {
      var current = document.getElementById(element.id);
      if (busy || document.hidden || !current) {
        return;
      }
      if (current.contains(document.activeElement) && document.activeElement !== document.body) {
        return;
      }
      busy = true;
      fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (!response.ok || response.redirected) {
            throw new Error("HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(element.id);
          var now = document.getElementById(element.id);
          if (fresh && now) {
            now.replaceWith(document.importNode(fresh, true));
          }
        })
        .catch(function () { /* logged out or PBX stopped: leave the page as it is */ })
        .then(function () { busy = false; });
    }
    window.setInterval(tick, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelectorAll("[data-refresh][id]");
    for (var i = 0; i < live.length; i++) {
      refresher(live[i]);
    }
  });
})();
