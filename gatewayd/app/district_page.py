"""The district console's page: one HTML document and its script (no inline script: CSP)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>District console - gatewayd</title>
<script src="/district.js" defer></script>
</head><body>
<h1>District console</h1>
<form id="signin" hidden>
  <label>Name <input name="name" autocomplete="username" required></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"
    required></label>
  <button>Sign in</button> <span id="signin-error"></span>
</form>
<section id="main" hidden>
  <p>Signed in as <b id="who"></b> <button id="signout">Sign out</button>
     &nbsp; <span id="checked"></span></p>
  <p><button data-action="lockdown" data-schools="all">LOCKDOWN every school</button>
     <button data-action="release" data-schools="all">Release every school</button>
     <span id="busy"></span></p>
  <table id="schools"><thead><tr><th>School</th><th>Status</th><th>State</th>
    <th>Doors</th><th>Heartbeat</th><th>Brokers</th><th>Last command</th><th></th></tr>
  </thead><tbody></tbody></table>
</section>
</body></html>
"""

SCRIPT = r"""
"use strict";
let csrf = "";
const $ = (id) => document.getElementById(id);
const cell = (row, text, cls) => {
  const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td;
};
async function api(path, body) {
  const init = body === undefined ? {} : {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}};
  const r = await fetch(path, init);
  return [r.status, await r.json()];
}
function show(signedIn) { $("signin").hidden = signedIn; $("main").hidden = !signedIn; }
async function refresh() {
  const [status, data] = await api("/api/schools");
  if (status === 401) { show(false); return; }
  const body = $("schools").tBodies[0]; body.replaceChildren();
  for (const s of data.schools) {
    const row = body.insertRow();
    cell(row, s.school);
    cell(row, s.verdict.toUpperCase(), s.verdict === "ok" ? "ok" : "alarm")
      .style.color = s.verdict === "ok" ? "green" : "red";
    cell(row, s.state || "-");
    cell(row, Object.entries(s.doors).filter(([, n]) => n).map(([k, n]) => k + " " + n)
      .join(", ") || "-");
    cell(row, s.heartbeat_age_s === null ? "-" : s.heartbeat_age_s + " s");
    cell(row, s.reached + "/" + s.brokers);
    cell(row, s.last ? s.last.action + ": " + s.last.result + (s.last.seconds ?
      " in " + s.last.seconds + " s" : "") + " (" + s.last.by + ")" : "-");
    const buttons = row.insertCell();
    for (const action of ["lockdown", "release"]) {
      const b = document.createElement("button");
      b.textContent = action; b.dataset.action = action; b.dataset.schools = s.school;
      buttons.append(b);
    }
  }
  $("checked").textContent = data.checked_at ?
    "read " + new Date(data.checked_at * 1000).toLocaleTimeString() : "reading...";
}
async function command(action, schools) {
  const where = schools === "all" ? "EVERY school" : schools;
  if (!confirm(action.toUpperCase() + " " + where + "?")) return;
  $("busy").textContent = action + " " + where + ": sending until each school answers...";
  const [, data] = await api("/api/command",
    {action, schools: schools === "all" ? "all" : [schools]});
  $("busy").textContent = (data.outcomes || []).map((o) => o.school + " " + o.result)
    .join(", ") || data.message;
  refresh();
}
document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-action]");
  if (b) command(b.dataset.action, b.dataset.schools);
});
document.addEventListener("DOMContentLoaded", async () => {
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    const [status, data] = await api("/api/signin",
      {name: form.get("name"), password: form.get("password")});
    if (status !== 200) { $("signin-error").textContent = data.message; return; }
    csrf = data.csrf; $("who").textContent = data.name; show(true); refresh();
  });
  $("signout").addEventListener("click", async () => {
    await api("/api/signout", {}); show(false);
  });
  const [status, data] = await api("/api/session");
  if (status === 200) {
    csrf = data.csrf; $("who").textContent = data.name; show(true); refresh();
  } else show(false);
  setInterval(() => { if (!$("main").hidden) refresh(); }, 2000);
});
"""
