// The console's pages are complete without this script; with it, two of
// them update live from server-sent events.
"use strict";

// Live progress of an operation: the page refreshes itself without the
// script; with it, steps update as they happen (WatchOperation), and the
// page reloads once the operation has ended to show the project's URLs.
// The state (role="status") and the steps table (aria-live) are live
// regions: rows and cells are changed in place, only where they differ,
// so a screen reader says what changed rather than the whole table again.
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

// Live tail of a project's error log (FollowLogs): the page shows the
// last lines; the stream's "start" event replaces them with its own last
// lines, then each message appends new ones. Log lines are the tenant's
// text: they only ever become text nodes. At most maxLines are kept.
(function () {
  var pre = document.getElementById("log-lines");
  if (!pre || !window.EventSource) return;
  var maxLines = 500;
  var live = document.getElementById("log-live");
  var none = document.getElementById("no-logs");
  var say = function (text) { if (live) live.textContent = text; };
  var add = function (lines) {
    lines.forEach(function (l) { pre.appendChild(document.createTextNode(String(l) + "\n")); });
    while (pre.childNodes.length > maxLines) pre.removeChild(pre.firstChild);
    if (lines.length) {
      if (none) { none.parentNode.removeChild(none); none = null; }
      pre.scrollTop = pre.scrollHeight;
    }
  };
  var es = new EventSource(pre.getAttribute("data-follow"));
  es.addEventListener("start", function (ev) {
    while (pre.firstChild) pre.removeChild(pre.firstChild);
    add(JSON.parse(ev.data).lines || []);
    say(" (live)");
  });
  es.onmessage = function (ev) { add(JSON.parse(ev.data).lines || []); };
  es.addEventListener("failure", function (ev) { es.close(); say(" (the live tail stopped: " + ev.data + ")"); });
  es.onerror = function () {
    if (es.readyState === EventSource.CLOSED) say(" (no live tail: reload the page to try again)");
  };
})();
