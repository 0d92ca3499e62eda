// transfer-gate console: the live decisions view. New decisions arrive from
// /v1/decisions/stream (Server-Sent Events, same origin, the session cookie authorizes it)
// and are added on top of the table. Every value is set as text, never parsed as HTML.
"use strict";
(function () {
  const table = document.getElementById("decisions");
  const state = document.getElementById("live-state");
  const dropped = document.getElementById("dropped");
  if (!table || !state || typeof EventSource === "undefined") {
    return;
  }
  const body = table.tBodies[0];
  const columns = ["time", "destination", "client_name", "identified_by", "method", "path",
    "decision", "reason", "new_subjects", "new_sensitive_subjects", "approval"];
  const numeric = new Set(["new_subjects", "new_sensitive_subjects"]);
  const maxRows = Number(table.dataset.maxRows || "500");
  const params = new URLSearchParams();
  const filters = { destination: "destination", client_name: "clientName", decision: "decision", reason: "reason" };
  for (const [name, key] of Object.entries(filters)) {
    const v = table.dataset[key];
    if (v) {
      params.set(name, v);
    }
  }
  const query = params.toString();
  const url = "/v1/decisions/stream" + (query ? "?" + query : "");
  let lost = 0;

  function show(text, cls) {
    state.textContent = text;
    state.className = cls;
  }

  function add(d) {
    const tr = document.createElement("tr");
    tr.className = "new";
    for (const c of columns) {
      const td = document.createElement("td");
      let v = d[c];
      if (v === null || v === undefined || v === "") {
        v = "-";
      }
      td.textContent = String(v);
      if (numeric.has(c)) {
        td.className = "n";
      }
      if (c === "decision") {
        td.className = "decision-" + String(d[c]).replace(/[^a-z_]/g, "");
      }
      tr.appendChild(td);
    }
    body.insertBefore(tr, body.firstChild);
    const empty = document.getElementById("no-decisions");
    if (empty) {
      empty.remove();
    }
    while (body.rows.length > maxRows) {
      body.deleteRow(body.rows.length - 1);
    }
  }

  show("connecting…", "");
  const es = new EventSource(url);
  es.addEventListener("open", function () {
    show("live", "live");
  });
  es.addEventListener("error", function () {
    show(es.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting…", "down");
  });
  es.addEventListener("decision", function (ev) {
    try {
      add(JSON.parse(ev.data));
    } catch (e) {
      show("bad event", "down");
    }
  });
  es.addEventListener("dropped", function (ev) {
    try {
      lost += Number(JSON.parse(ev.data).dropped) || 0;
    } catch (e) {
      lost += 1;
    }
    dropped.textContent = lost + " decisions were skipped while this view fell behind; reload for the latest.";
    dropped.hidden = false;
  });
})();
