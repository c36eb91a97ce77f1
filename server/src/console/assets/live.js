// Live updates for the console's pages, the one script they load. Every
// second it asks /live for the newest boot report id (read from the
// database, so any replica answers for all); when it moved, it fetches
// this same page and swaps in its <main>. Pages work without it.
"use strict";
(function () {
  var body = document.body;
  var seen = body.getAttribute("data-live");
  if (seen === null) { return; }
  var busy = false;
  function refresh() {
    return fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) { main.replaceWith(document.adoptNode(fresh)); }
      });
  }
  setInterval(function () {
    if (busy) { return; }
    busy = true;
    fetch("/live", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (latest) {
        if (latest !== seen) { seen = latest; return refresh(); }
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }, 1000);
})();
