// Live progress of an operation: the page is complete without this
// script (it refreshes itself); with it, steps update as they happen from
// server-sent events, and the page reloads once the operation has ended
// to show the project's URLs. The state (role="status") and the steps
// table (aria-live) are live regions: rows and cells are changed in
// place, only where they differ, so a screen reader says what changed
// rather than the whole table again.
"use strict";
(function () {
  var state = document.getElementById("op-state");
  var tbody = document.querySelector("#steps tbody");
  if (!state || !tbody || !window.EventSource) return;
  var id = state.getAttribute("data-op");
  var lower = function (s, prefix) { return String(s || "").replace(prefix, "").toLowerCase(); };
  var took = function (a, b) {
    if (!a || !b) return "";
    var ms = Date.parse(b) - Date.parse(a);
    return ms < 1000 ? ms + "ms" : (ms / 1000).toFixed(1) + "s";
  };
  var setText = function (el, text) { if (el.textContent !== text) el.textContent = text; };
  var es = new EventSource("/ops/" + encodeURIComponent(id) + "/events");
  es.onmessage = function (ev) {
    var op = JSON.parse(ev.data);
    var st = lower(op.state, "OPERATION_STATE_");
    setText(state, st);
    state.className = "opstate opstate-" + st;
    var steps = op.steps || [];
    steps.forEach(function (s, i) {
      var ss = lower(s.state, "STEP_STATE_");
      // A failed step's message is the operation's error, shown whole
      // above the steps once the page reloads: said once.
      var cells = [s.name, ss, took(s.startTime, s.endTime), ss === "failed" ? "" : (s.message || "")];
      var tr = tbody.rows[i];
      if (!tr) {
        tr = document.createElement("tr");
        cells.forEach(function () { tr.appendChild(document.createElement("td")); });
        tbody.appendChild(tr);
      }
      tr.className = "step-" + ss;
      cells.forEach(function (text, j) { setText(tr.cells[j], text); });
    });
    while (tbody.rows.length > steps.length) tbody.deleteRow(-1);
    if (st === "succeeded" || st === "failed") {
      es.close();
      window.location.reload();
    }
  };
  es.addEventListener("failure", function () { es.close(); window.location.reload(); });
})();
