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

  /* Bring the element `now` (in the page) to what `fresh` (from a new
     copy of the page) says, keeping every element whose place and kind
     did not change: only changed text and attributes are written, rows
     (data-key) are matched by key, so a row that stays, and the button in
     it, is the same element before and after (nothing is swapped under a
     mouse, or under a script holding it). */
  function merge(now, fresh) {
    if (now.nodeType !== fresh.nodeType || now.nodeName !== fresh.nodeName ||
        (now.nodeType === 1 && now.getAttribute("data-key") !== fresh.getAttribute("data-key"))) {
      now.replaceWith(document.importNode(fresh, true));
      return;
    }
    if (now.nodeType !== 1) {
      if (now.nodeValue !== fresh.nodeValue) {
        now.nodeValue = fresh.nodeValue;
      }
      return;
    }
    var i, name;
    for (i = now.attributes.length - 1; i >= 0; i--) {
      name = now.attributes[i].name;
      if (!fresh.hasAttribute(name)) {
        now.removeAttribute(name);
      }
    }
    for (i = 0; i < fresh.attributes.length; i++) {
      name = fresh.attributes[i].name;
      if (now.getAttribute(name) !== fresh.attributes[i].value) {
        now.setAttribute(name, fresh.attributes[i].value);
      }
    }
    var old = Array.prototype.slice.call(now.childNodes);
    var wanted = Array.prototype.slice.call(fresh.childNodes);
    var keyed = wanted.length > 0 && wanted.every(function (n) {
      return n.nodeType !== 1 || n.hasAttribute("data-key");
    }) && wanted.some(function (n) { return n.nodeType === 1; });
    if (keyed) {
      var byKey = {};
      old.forEach(function (n) {
        if (n.nodeType === 1 && n.hasAttribute("data-key")) {
          byKey[n.getAttribute("data-key")] = n;
        }
      });
      var kept = wanted.map(function (n) {
        var match = n.nodeType === 1 ? byKey[n.getAttribute("data-key")] : null;
        if (match) {
          delete byKey[n.getAttribute("data-key")];
          merge(match, n);
          return match;
        }
        return document.importNode(n, true);
      });
      old.forEach(function (n) {
        if (kept.indexOf(n) < 0) {
          n.remove();
        }
      });
      kept.forEach(function (n, at) {
        if (now.childNodes[at] !== n) {
          now.insertBefore(n, now.childNodes[at] || null);
        }
      });
      return;
    }
    if (old.length !== wanted.length) {
      while (now.firstChild) {
        now.removeChild(now.firstChild);
      }
      wanted.forEach(function (n) { now.appendChild(document.importNode(n, true)); });
      return;
    }
    for (i = 0; i < old.length; i++) {
      merge(old[i], wanted[i]);
    }
  }

  /* Live regions (data-refresh="SECONDS" on an element with an id): fetch
     the page again and merge that element's new copy into it, while the
     tab is visible and no form inside it has focus.  The new copy carries
     the session's CSRF token, so its buttons keep working. */
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
            merge(now, fresh);
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
