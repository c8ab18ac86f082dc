// The console's script. Every page works without it; with it:
// - an operation's steps update as they happen, from server-sent events,
//   and the page reloads once the operation has ended to show the
//   project's URLs;
// - a project's error log is followed live;
// - the upload forms send with a progress bar ("12.3 of 40.0 MB"), then
//   follow to the operation's page, or show the page the console answered
//   (a refusal, with its message at the top and next to the field).
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
  var final = function (st) { return st === "succeeded" || st === "failed"; };
  if (!state || !tbody || !window.EventSource || final(state.textContent)) return;
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
    if (final(st)) {
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

// Upload forms: sent with XMLHttpRequest for its progress events.
(function () {
  if (!window.XMLHttpRequest || !window.FormData || !window.DOMParser) return;
  var mb = function (n) { return (n / 1e6).toFixed(1); };
  // "12.3 of 40.0 MB"; kB for what is under a megabyte.
  var ofTotal = function (n, total) {
    return total < 1e6 ? (n / 1e3).toFixed(1) + " of " + (total / 1e3).toFixed(1) + " kB" : mb(n) + " of " + mb(total) + " MB";
  };
  // refused says why an upload was not sent where the console puts a
  // refusal: at the top of the page (the project page's #messages, or
  // above the content) and next to the file inputs.
  var refused = function (form, text, msg) {
    text.textContent = msg;
    text.className = "upload-progress-text error";
    var top = document.getElementById("alert") || document.getElementById("form-error");
    if (!top) {
      top = document.createElement("p");
      top.className = "error";
      top.setAttribute("role", "alert");
      var messages = document.getElementById("messages");
      if (messages) {
        top.id = "alert";
        messages.insertBefore(top, messages.firstChild);
      } else {
        top.id = "form-error";
        var main = document.querySelector("main");
        main.insertBefore(top, main.firstChild);
      }
    }
    top.textContent = msg;
    top.scrollIntoView();
  };
  // Listening on the document, not on each form: a refused upload's
  // answer replaces the whole page, forms included.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("upload")) return;
    var progress = form.querySelector(".upload-progress");
    var text = form.querySelector(".upload-progress-text");
    var button = form.querySelector("button[type=submit]");
    if (!progress || !text) return;
    ev.preventDefault();
    // Said before anything is sent; the console checks it again.
    var max = Number(form.getAttribute("data-max-upload")) || 0;
    var total = 0;
    Array.prototype.forEach.call(form.querySelectorAll("input[type=file]"), function (input) {
      Array.prototype.forEach.call(input.files || [], function (f) { total += f.size; });
    });
    if (max > 0 && total > max) {
      // The console's own words for it.
      refused(form, text, "The upload (" + mb(total) + " MB) is larger than " + form.getAttribute("data-max-upload-text") +
        ", the most this host takes: leave out what the app does not need to run (media, virtualenvs, node_modules), or deploy it from git. Nothing was sent.");
      return;
    }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) return;
      progress.max = e.total;
      progress.value = e.loaded;
      text.textContent = ofTotal(e.loaded, e.total);
    };
    xhr.upload.onload = function () {
      progress.value = progress.max;
      text.textContent = ofTotal(progress.max, progress.max) + " sent; checking and storing it…";
    };
    xhr.onload = function () {
      // Accepted: the console answered with a redirect (to the operation,
      // or to the project page saying nothing changed), which
      // XMLHttpRequest followed: go there.
      if (xhr.status === 200 && xhr.responseURL && xhr.responseURL !== form.action) {
        window.location.assign(xhr.responseURL);
        return;
      }
      var doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
      if (!/^text\/html/.test(xhr.getResponseHeader("Content-Type") || "")) {
        // A plain-text refusal (a stale CSRF token, say).
        refused(form, text, "The console refused the upload (HTTP " + xhr.status + "): " + xhr.responseText.slice(0, 500));
        if (button) button.disabled = false;
        return;
      }
      document.replaceChild(document.adoptNode(doc.documentElement), document.documentElement);
      var alert = document.querySelector("#messages .error, #form-error");
      if (alert) alert.scrollIntoView();
    };
    xhr.onerror = function () {
      refused(form, text, "The upload failed: the connection to the console broke before it answered. Try again; if it happens again, the upload may be too large.");
      if (button) button.disabled = false;
    };
    progress.hidden = false;
    progress.value = 0;
    text.className = "upload-progress-text";
    text.textContent = "Starting the upload…";
    if (button) button.disabled = true;
    xhr.send(new FormData(form));
  });
})();
