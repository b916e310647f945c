/* Connect Box status page: refresh the live part every few seconds; confirm risky actions. */
(function () {
  "use strict";
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");

  function now() {
    var t = new Date();
    return [t.getHours(), t.getMinutes(), t.getSeconds()].map(function (n) {
      return (n < 10 ? "0" : "") + n;
    }).join(":");
  }

  if (live && window.fetch) {
    var period = (parseInt(live.getAttribute("data-refresh"), 10) || 5) * 1000;
    var url = live.getAttribute("data-url");
    var selecting = function () {
      var selection = window.getSelection ? window.getSelection() : null;
      return selection && !selection.isCollapsed && live.contains(selection.anchorNode);
    };
    var tick = function () {
      if (selecting()) {  // someone is copying a value: do not pull it from under them
        window.setTimeout(tick, period);
        return;
      }
      fetch(url, { cache: "no-store", credentials: "same-origin" })
        .then(function (reply) {
          if (!reply.ok) { throw new Error("HTTP " + reply.status); }
          return reply.text();
        })
        .then(function (html) {
          live.innerHTML = html;
          state.textContent = "Updated " + now();
          state.className = "live-state";
        })
        .catch(function () {
          state.textContent = "The box is not answering (" + now() + ")";
          state.className = "live-state stale";
        })
        .then(function () { window.setTimeout(tick, period); });
    };
    window.setTimeout(tick, period);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (button && !window.confirm(button.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });
})();
