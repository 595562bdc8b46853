// Live progress of an extract run: polls a small JSON endpoint while the run is queued or running.
(function () {
  "use strict";
  var box = document.getElementById("run-progress");
  if (!box || box.getAttribute("data-live") !== "yes") { return; }
  var url = box.getAttribute("data-progress-url");
  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        box.querySelector('[data-field="records"]').textContent = data.records.toLocaleString("en-GB");
        box.querySelector('[data-field="status"]').textContent = data.status.charAt(0).toUpperCase() + data.status.slice(1);
        // A finished run has final counts and messages: reload once to show them.
        if (data.finished) { window.location.reload(); } else { window.setTimeout(poll, 3000); }
      })
      .catch(function () { window.setTimeout(poll, 10000); });
  }
  window.setTimeout(poll, 3000);
})();
