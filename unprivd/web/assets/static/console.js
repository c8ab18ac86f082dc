// Live progress of an operation: the page is complete without this
// script (it refreshes itself); with it, steps update as they happen from
// server-sent events, and the page reloads once the operation has ended
// to show the project's URLs.
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
  var es = new EventSource("/ops/" + encodeURIComponent(id) + "/events");
  es.onmessage = function (ev) {
    var op = JSON.parse(ev.data);
    var st = lower(op.state, "OPERATION_STATE_");
    state.textContent = st;
    state.className = "opstate opstate-" + st;
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    (op.steps || []).forEach(function (s) {
      var tr = document.createElement("tr");
      var ss = lower(s.state, "STEP_STATE_");
      tr.className = "step-" + ss;
      // A failed step's message is the operation's error, shown whole
      // above the steps once the page reloads: said once.
      [s.name, ss, took(s.startTime, s.endTime), ss === "failed" ? "" : (s.message || "")].forEach(function (text) {
        var td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    if (st === "succeeded" || st === "failed") {
      es.close();
      window.location.reload();
    }
  };
  es.addEventListener("failure", function () { es.close(); window.location.reload(); });
})();
