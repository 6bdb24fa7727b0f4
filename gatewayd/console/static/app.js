// gatewayd operator console: vanilla JS, no framework, no build step.
// Every action is a POST to /api/command; live state arrives as server-sent events.
"use strict";

const $ = (id) => document.getElementById(id);
const SRP = [
  ["hold", "Hold"], ["secure", "Secure"], ["lockdown", "Lockdown"],
  ["evacuate", "Evacuate"], ["shelter", "Shelter"], ["release", "Release"],
];
const WORD_MARK = { locked: "■", unlocked: "□", open: "◇", unknown: "?", faulted: "✕" };
const ENTRY_KINDS = ["exterior", "egress"];

const app = { me: null, layout: null, doors: {}, scopes: {}, feed: [], stream: null, plans: {} };
const PLAN_MARK = { secured: "S", unsecured: "U", unknown: "?", override: "O", drill: "D" };

// --- small helpers -----------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function option(value, text) {
  return el("option", { value, textContent: text });
}

async function api(path, body) {
  const init = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    if (app.me) init.headers["X-CSRF-Token"] = app.me.csrf;
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data;
  try {
    data = await response.json();
  } catch (err) {
    data = { ok: false, error: "http_" + response.status, message: String(err) };
  }
  if (response.status === 401 && path !== "/api/signin") signedOut(data.message);
  return data;
}

function scopeName(scope) {
  if (scope === "campus") return "the whole campus";
  const [kind, id] = scope.split("/");
  if (kind === "building") {
    const b = app.layout.buildings.find((x) => x.id === id);
    return "building " + id + (b && b.name ? " (" + b.name + ")" : "");
  }
  if (kind === "zone") {
    const z = app.layout.zones.find((x) => x.id === id);
    return "zone " + id + (z && z.name !== id ? " (" + z.name + ")" : "");
  }
  return "door " + id;
}

function doorsIn(scope) {
  if (scope === "campus") return app.layout.doors;
  const [kind, id] = scope.split("/");
  return app.layout.doors.filter((d) => (kind === "building" ? d.building : d.zone) === id);
}

function when(iso) {
  // Local wall-clock time: what staff and responders read on their own watches.
  return iso ? new Date(iso).toLocaleTimeString() : "?";
}

function may(action) {
  return app.me && app.me.actions.includes(action);
}

function showResult(target, reply) {
  // The gateway's reply is shown as it came: ok, error code, message.
  const text = (reply.ok ? "OK" : "REFUSED or FAILED (" + reply.error + ")") +
    " — " + (reply.message || "");
  target.textContent = text;
  target.className = "result " + (reply.ok ? "ok" : "bad");
}

// --- sign-in and session -----------------------------------------------------------------

async function start() {
  bindStatic();
  const me = await api("/api/session");
  if (me.ok) await signedIn(me);
  else signedOut();
}

function signedOut(message) {
  app.me = null;
  if (app.stream) app.stream.close();
  app.stream = null;
  $("app-view").hidden = true;
  $("who").hidden = true;
  // A shared front-office screen must not keep the last person's name or data on it.
  $("who-name").textContent = "";
  $("signin-name").value = "";
  $("scope-cards").replaceChildren();
  $("buildings").replaceChildren();
  $("plan-view").replaceChildren();
  $("plans-panel").hidden = true;
  $("feed-list").replaceChildren();
  $("result").textContent = "";
  $("resp-result").textContent = "";
  $("incident-banner").hidden = true;
  $("drill-banner").hidden = true;
  $("conn").textContent = "";
  $("signin-view").hidden = false;
  $("signin-error").textContent = message && message.includes("expired") ? message : "";
  $("signin-name").focus();
}

async function signedIn(me) {
  app.me = me;
  $("signin-view").hidden = true;
  $("who-name").textContent = me.display + " — " + me.roles.join(", ") + " (" + me.actor + ")";
  $("who").hidden = false;
  const campus = await api("/api/campus");
  if (!campus.layout) return;
  app.layout = campus.layout;
  $("site-name").textContent = campus.layout.site.name;
  buildViews();
  applySnapshot(campus);
  $("app-view").hidden = false;
  connect();
  await loadPlans();
}

// --- floor plans -------------------------------------------------------------------------

async function loadPlans() {
  const reply = await api("/api/plans");
  app.plans = reply.plans || {};
  const ids = Object.keys(app.plans);
  $("plan-problems").textContent = (reply.problems || []).join("; ");
  $("plans-panel").hidden = ids.length === 0 && !(reply.problems || []).length;
  $("plan-building").replaceChildren(...ids.map((b) => option(b, "Building " + b)));
  showPlan();
}

function showPlan() {
  const plan = app.plans[$("plan-building").value];
  const view = $("plan-view");
  if (!plan) { view.replaceChildren(); return; }
  // The server cleaned the SVG to drawing elements only (no script, link or style).
  const doc = new DOMParser().parseFromString(plan.svg, "image/svg+xml");
  const svg = document.importNode(doc.documentElement, true);
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Floor plan of building " + $("plan-building").value);
  for (const marker of svg.querySelectorAll("[data-door]")) {
    const letter = document.createElementNS("http://www.w3.org/2000/svg", "text");
    letter.setAttribute("x", marker.getAttribute("cx") || marker.getAttribute("x"));
    letter.setAttribute("y", String(Number(marker.getAttribute("cy") || marker.getAttribute("y")) + 4));
    letter.setAttribute("class", "plan-letter");
    letter.setAttribute("text-anchor", "middle");
    letter.dataset.letterFor = marker.dataset.door;
    marker.after(letter);
  }
  view.replaceChildren(svg);
  for (const id of plan.doors) renderPlanDoor(id);
}

function planState(live) {
  if (!live || live.status === "unknown" || live.state === "unknown") return "unknown";
  const reason = live.reason || "";
  if (live.override || reason.startsWith("responder") || /^(un)?lock \(/.test(reason)) {
    return "override";
  }
  if (live.drill || reason.startsWith("DRILL")) return "drill";
  return live.status === "secured" ? "secured" : "unsecured";
}

function renderPlanDoor(id) {
  const marker = $("plan-view").querySelector('[data-door="' + CSS.escape(id) + '"]');
  if (!marker) return;
  const state = planState(app.doors[id]);
  marker.setAttribute("class", "plan-door p-" + state);
  marker.dataset.state = state;
  const letter = $("plan-view").querySelector('[data-letter-for="' + CSS.escape(id) + '"]');
  if (letter) letter.textContent = PLAN_MARK[state];
  renderPlanCounts();
}

function renderPlanCounts() {
  const markers = $("plan-view").querySelectorAll("[data-door]");
  const counts = {};
  for (const m of markers) counts[m.dataset.state] = (counts[m.dataset.state] || 0) + 1;
  $("plan-counts").textContent = Object.keys(PLAN_MARK)
    .filter((k) => counts[k]).map((k) => counts[k] + " " + k).join(", ");
}

function bindStatic() {
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const reply = await api("/api/signin", {
      name: $("signin-name").value, password: $("signin-password").value,
    });
    $("signin-password").value = "";
    if (reply.ok) await signedIn(reply);
    else $("signin-error").textContent = reply.message;
  });
  $("signout").addEventListener("click", async () => {
    await api("/api/signout", {});
    signedOut();
  });
  for (const id of ["feed-kind", "feed-building", "feed-severity"]) {
    $(id).addEventListener("change", renderFeed);
  }
  $("resp-building").addEventListener("change", () => { fillFloors(); renderResponder(); });
  $("resp-floor").addEventListener("change", renderResponder);
  $("drill-start").addEventListener("click", () => askDrill());
  $("drill-end").addEventListener("click", () => askAction("release", true));
  $("plan-building").addEventListener("change", showPlan);
}

// --- live updates ------------------------------------------------------------------------

function connect() {
  if (app.stream) app.stream.close();
  const stream = new EventSource("/api/events");
  app.stream = stream;
  stream.addEventListener("open", () => {
    $("conn").textContent = "Live: updates arrive as they happen.";
  });
  stream.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
  stream.addEventListener("doors", (e) => {
    const changed = JSON.parse(e.data);
    Object.assign(app.doors, changed);
    for (const id of Object.keys(changed)) renderDoor(id);
    renderResponder();
  });
  stream.addEventListener("scopes", (e) => {
    Object.assign(app.scopes, JSON.parse(e.data));
    renderScopes();
  });
  stream.addEventListener("feed", (e) => {
    app.feed.push(...JSON.parse(e.data));
    app.feed = app.feed.slice(-200);
    renderFeed();
  });
  stream.addEventListener("schedules", (e) => {
    app.schedules = JSON.parse(e.data);
    renderSchedules();
  });
  stream.addEventListener("signed_out", () => signedOut("Your session has expired."));
  stream.addEventListener("error", async () => {
    $("conn").textContent = "Connection lost: reconnecting…";
    if (stream.readyState === EventSource.CLOSED) {
      const me = await api("/api/session");
      if (me.ok) setTimeout(connect, 1000);
    }
  });
}

function applySnapshot(snap) {
  app.doors = snap.doors;
  app.scopes = snap.scopes;
  app.feed = snap.feed;
  app.schedules = snap.schedules || [];
  renderSchedules();
  for (const id of Object.keys(app.doors)) renderDoor(id);
  renderScopes();
  renderFeed();
  renderResponder();
}

// --- building the page -------------------------------------------------------------------

function buildViews() {
  const scopeSelect = $("action-scope");
  scopeSelect.replaceChildren(...app.layout.scopes.map((s) => option(s, scopeName(s))));
  const buttons = SRP.filter(([action]) => may(action)).map(([action, label]) =>
    el("button", { type: "button", textContent: label, "data-action": action,
      class: "srp srp-" + action, onclick: () => askAction(action, false) }));
  $("srp-buttons").replaceChildren(...buttons);
  $("drill-box").hidden = !may("drill");
  $("drill-end").hidden = !may("release");
  $("actions").hidden = buttons.length === 0 && !may("drill");
  $("responder").hidden = !(may("unlock") || may("lock"));
  $("resp-seconds").max = app.layout.responder.max_s;
  $("resp-seconds").value = app.layout.responder.default_s;
  const buildingOptions = app.layout.buildings.map((b) => option(b.id, b.id + " " + b.name));
  $("resp-building").replaceChildren(...buildingOptions);
  fillFloors();
  $("feed-building").replaceChildren(option("", "all"),
    ...app.layout.buildings.map((b) => option(b.id, b.id)));
  const container = $("buildings");
  container.replaceChildren();
  for (const building of app.layout.buildings) {
    const section = el("section", { class: "building", "data-building": building.id },
      el("h3", { textContent: "Building " + building.id + " — " + building.name }));
    for (const floor of building.floors) {
      const doors = app.layout.doors.filter((d) => d.building === building.id && d.floor === floor);
      if (!doors.length) continue;
      const list = el("ul", { class: "doors" }, ...doors.map(doorTile));
      section.append(el("h4", { textContent: "Floor " + floor }), list);
    }
    container.append(section);
  }
}

function doorTile(door) {
  return el("li", { class: "door", id: "door-" + door.id, "data-door": door.id },
    el("span", { class: "room", textContent: door.room }),
    el("span", { class: "kind", textContent: door.kind + " · " + door.id }),
    el("span", { class: "door-word" }),
    el("span", { class: "why" }));
}

function fillFloors() {
  const building = app.layout.buildings.find((b) => b.id === $("resp-building").value);
  $("resp-floor").replaceChildren(...(building ? building.floors : []).map((f) => option(f, f)));
}

// --- rendering live state ----------------------------------------------------------------

function doorText(live) {
  return WORD_MARK[live.state] + " " + live.state.toUpperCase() +
    (live.drill ? " · DRILL" : "");
}

function renderDoor(id) {
  const tile = $("door-" + id);
  const live = app.doors[id];
  if (!tile || !live) return;
  tile.className = "door s-" + live.state + (live.drill ? " drill" : "");
  tile.dataset.state = live.state;
  tile.querySelector(".door-word").textContent = doorText(live);
  let why = live.reason;
  if (live.override) {
    why += " · responder " + live.override.actor + " until " + when(live.override.until);
  }
  if (live.fault) why += " · " + live.fault;
  tile.querySelector(".why").textContent = why;
  renderPlanDoor(id);
}

function renderScopes() {
  const cards = [];
  const incidents = [];
  const drills = [];
  for (const scope of app.layout.scopes) {
    const s = app.scopes[scope];
    if (!s) continue;
    const state = s.state + (s.hazard ? " (" + s.hazard + ")" : "");
    if (s.state !== "normal" && s.source === scope) (s.drill ? drills : incidents).push(s);
    const counts = s.doors || {};
    cards.push(el("article", { class: "card st-" + s.state + (s.drill ? " drill" : ""),
      "data-scope": scope },
    el("h3", { textContent: scopeName(scope) }),
    el("p", { class: "state", textContent: (s.drill ? "DRILL: " : "") + state.toUpperCase() +
      (s.dry_run ? " (dry run)" : "") }),
    el("p", { class: "counts", textContent: "secured " + (counts.secured || 0) +
      " · unsecured " + (counts.unsecured || 0) + " · faulted " + (counts.faulted || 0) +
      " · unknown " + (counts.unknown || 0) }),
    s.air ? el("p", { class: "air-counts", textContent: "air secured " + s.air.secured +
      " · unsecured " + s.air.unsecured + " · unknown " + s.air.unknown +
      " · released " + s.air.released }) : null,
    s.source && s.source !== scope
      ? el("p", { class: "src", textContent: "set on " + s.source }) : null));
  }
  $("scope-cards").replaceChildren(...cards);
  banner("incident-banner", incidents, (s) => s.state.toUpperCase() + " on " + scopeName(s.scope) +
    (s.actor ? " by " + s.actor : "") + " since " + when(s.since));
  banner("drill-banner", drills, (s) => "DRILL — NOT A REAL INCIDENT: " + s.state + " drill on " +
    scopeName(s.scope) + (s.dry_run ? " (dry run, doors do not move)" : " (doors move)") +
    (s.until ? " until " + when(s.until) : ""));
}

function renderSchedules() {
  const list = app.schedules || [];
  $("schedules").hidden = list.length === 0;
  $("schedule-list").replaceChildren(...list.map((w) => {
    const next = w.next.map((t) => new Date(t.at).toLocaleString() + " " +
      (t.edge === "begins" ? t.action + "s" : "back to normal")).join(" · ");
    return el("li", { "data-schedule": w.id, class: w.active ? "active" : "" },
      el("strong", { textContent: (w.name || w.id) + (w.active ? " — IN FORCE" : "") }),
      el("span", { textContent: " " + w.action + " " + w.doors.join(", ") + ". Next: " +
        (next || "none") }));
  }));
}

function banner(id, items, text) {
  const node = $(id);
  node.hidden = items.length === 0;
  node.replaceChildren(...items.map((s) => el("p", { textContent: text(s) })));
}

function latencyText(lat) {
  if (!lat) return null;
  const ms = (v) => (v === null || v === undefined ? "—" : v + " ms");
  return "decided " + ms(lat.decided) + " → on the wire " + ms(lat.on_wire) +
    " → confirmed " + ms(lat.confirmed);
}

function renderFeed() {
  const kind = $("feed-kind").value;
  const building = $("feed-building").value;
  const severity = $("feed-severity").value;
  const shown = app.feed.filter((e) => (!kind || e.kind === kind) &&
    (!building || e.building === building) && (!severity || e.severity === severity));
  $("feed-list").replaceChildren(...shown.slice().reverse().map((e) => {
    const lat = latencyText(e.latency_ms);
    return el("li", { class: "sev-" + e.severity + (e.drill ? " drill" : ""), "data-kind": e.kind },
      el("time", { textContent: when(e.ts), dateTime: e.ts }),
      el("span", { class: "sev", textContent: e.severity.toUpperCase() }),
      el("span", { class: "kind", textContent: e.kind + (e.drill ? " · DRILL" : "") }),
      el("span", { class: "text", textContent: e.text }),
      lat ? el("span", { class: "lat", textContent: lat }) : null);
  }));
}

function renderResponder() {
  if ($("responder").hidden || !app.layout) return;
  const building = $("resp-building").value;
  const floor = $("resp-floor").value;
  const doors = app.layout.doors.filter((d) => d.building === building && d.floor === floor);
  // Entries first: a responder arrives at an outside door.
  doors.sort((a, b) => ENTRY_KINDS.includes(b.kind) - ENTRY_KINDS.includes(a.kind));
  $("resp-doors").replaceChildren(...doors.map((door) => {
    const live = app.doors[door.id] || { state: "unknown" };
    const entry = ENTRY_KINDS.includes(door.kind);
    return el("li", { class: "s-" + live.state, "data-door": door.id },
      el("span", { class: "room", textContent: door.room + (entry ? " (entry)" : "") }),
      el("span", { class: "door-word", textContent: doorText(live) }),
      may("unlock") ? el("button", { type: "button", textContent: "Unlock " + door.room,
        "data-action": "unlock", onclick: () => doorAction(door, "unlock") }) : null,
      may("lock") ? el("button", { type: "button", textContent: "Lock " + door.room,
        "data-action": "lock", onclick: () => doorAction(door, "lock") }) : null);
  }));
}

// --- actions -----------------------------------------------------------------------------

async function doorAction(door, action) {
  const body = { action, door: door.id };
  if (action === "unlock") body.params = { duration_s: Number($("resp-seconds").value) };
  const target = $("resp-result");
  target.textContent = action + " " + door.id + "…";
  showResult(target, await api("/api/command", body));
}

function confirmStep(title, text, withHazard) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-hazard").hidden = !withHazard;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

async function askAction(action, endingDrill) {
  const scope = $("action-scope").value;
  const count = doorsIn(scope).length;
  const label = endingDrill ? "End the drill" : action.toUpperCase();
  const ok = await confirmStep(label + " — " + scopeName(scope) + "?",
    "This acts on " + count + " door" + (count === 1 ? "" : "s") + " in " + scopeName(scope) + ".",
    action === "shelter");
  if (!ok) return;
  const body = { action, scope };
  if (action === "shelter") body.params = { hazard: $("hazard").value };
  await send(body);
}

async function askDrill() {
  const scope = $("action-scope").value;
  const state = $("drill-state").value;
  const live = $("drill-live").checked;
  const minutes = Number($("drill-minutes").value);
  const count = doorsIn(scope).length;
  const ok = await confirmStep("Start a " + state + " DRILL — " + scopeName(scope) + "?",
    (live ? "A live drill moves " : "A dry run moves none of the ") + count + " doors in " +
    scopeName(scope) + "; it ends by itself after " + minutes + " min.", state === "shelter");
  if (!ok) return;
  const params = { state, scope, duration_s: minutes * 60, dry_run: !live };
  if (state === "shelter") params.hazard = $("hazard").value;
  await send({ action: "drill", scope, params });
}

async function send(body) {
  const target = $("result");
  target.textContent = body.action + " " + body.scope + ": sent, waiting for the doors…";
  target.className = "result";
  showResult(target, await api("/api/command", body));
}

document.addEventListener("DOMContentLoaded", start);
