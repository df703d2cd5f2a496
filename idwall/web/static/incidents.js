// Incidents: every playbook run, and per incident the recovery dashboard (sessions and devices cut, users back by
// group over time drawn with uPlot, the users not back yet). The page polls the API every few seconds, so an
// analyst watching it sees people come back. Everything from the API is written as text (ids, reasons and group
// names are attacker-controlled).
import { $, api, at, cell, clearProblem, el, query, say, showProblem } from "/idwall/static/console.js";

const POLL_MS = 3000;
const NOT_BACK_SHOWN = 500;
const CHART_HEIGHT = 260;
// distinct on white, and told apart by the legend's names too (never by colour alone)
const PALETTE = ["#0550ae", "#a40e26", "#1a7f37", "#8250df", "#bc4c00", "#0a7480", "#57606a", "#bf3989"];
const HOW_WORDS = {
  recovered: "recovered", approved: "approved", "re-enrolled": "re-enrolled", logged_in: "logged in",
};
const NEEDS_WORDS = {
  login: "to sign in again",
  approval: "an approver's device.approve",
  "new device": "a new device (recovery or approval)",
};

let selected = new URLSearchParams(location.search).get("incident");
let plot = null;
let plotKey = "";
let top = 1;
let lastBack = null;

const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");

function incidentRow(i) {
  const tr = el("tr", null, { "data-incident": i.incident_id });
  if (i.incident_id === selected) tr.dataset.selected = "true";
  const show = el("button", "Show recovery", {
    type: "button", class: "small", "data-incident": i.incident_id,
    "aria-label": "Show the recovery of " + i.incident_id,
  });
  if (i.incident_id === selected) show.setAttribute("aria-pressed", "true");
  const actions = el("td", null, { "data-label": "Dashboard", class: "actions" });
  actions.append(show);
  tr.append(
    cell("Incident", el("code", i.incident_id)),
    cell("Playbook", i.playbook),
    cell("Reason", i.reason),
    cell("State", i.state),
    cell("Started", at(i.started_at)),
    cell("Stages", i.stages_committed + " of " + i.stages_total + " committed"),
    actions,
  );
  return tr;
}

async function loadIncidents() {
  const data = await api("/idwall/api/admin/incidents");
  if (!selected && data.incidents.length) selected = data.incidents[0].incident_id;
  $("incidents-body").replaceChildren(...data.incidents.map(incidentRow));
  $("incidents-empty").hidden = data.incidents.length > 0;
  $("incidents-count").textContent = "(" + data.incidents.length + ")";
}

function hows(counts) {
  const parts = Object.entries(counts).filter(([, n]) => n > 0).map(([how, n]) => n + " " + (HOW_WORDS[how] || how));
  return parts.length ? parts.join(", ") : "—";
}

function groupRow(g, color) {
  const tr = el("tr", null, { "data-group": g.group });
  const name = el("td", null, { "data-label": "Group" });
  const swatch = el("span", null, { class: "swatch", "aria-hidden": "true" });
  swatch.style.background = color; // CSSOM, not a style attribute: allowed by the page's CSP
  name.append(swatch, g.group);
  tr.append(
    name,
    cell("Users cut", String(g.users_cut)),
    el("td", String(g.users_back), { "data-label": "Back", class: "back" }),
    cell("Sessions cut", String(g.sessions_revoked)),
    cell("Devices revoked", String(g.devices_revoked)),
    cell("How they came back", hows(g.back_by_how)),
  );
  return tr;
}

/** Devices revoked, and those sent back to approval (of a stage, or of one person). */
function devicesCut(cut) {
  const reapprove = cut.devices_to_reapprove;
  return cut.devices_revoked + (reapprove ? " (+" + reapprove + " back to approval)" : "");
}

function stageRow(s) {
  const groups = Object.entries(s.by_group).map(([g, c]) => g + " " + c.users).join(", ") || "—";
  const tr = el("tr", null, { "data-stage": String(s.number) });
  tr.append(
    cell("Stage", s.number + " · " + s.part),
    cell("Steps", s.steps.join(", ")),
    cell("Committed", at(s.committed_at)),
    cell("Users", String(s.users)),
    cell("Sessions cut", String(s.sessions_revoked)),
    cell("Devices revoked", devicesCut(s)),
    cell("By group", groups),
  );
  return tr;
}

function waitingRow(w) {
  const tr = el("tr", null, { "data-user": w.user });
  tr.append(
    cell("Person", el("strong", w.user)),
    cell("Groups", w.groups.join(", ")),
    cell("Cut", "stage " + w.stage + ", " + at(w.cut_at)),
    cell("Sessions cut", String(w.sessions_revoked)),
    cell("Devices revoked", devicesCut(w)),
    cell("Needs", (NEEDS_WORDS[w.needs] || w.needs) + (w.suspect ? "; passkeys marked suspect" : "")),
  );
  return tr;
}

/** uPlot's aligned data: the times anyone came back (from the start to now), each group's running count. */
function chartData(answer, groups) {
  const times = new Set([answer.started_at]);
  for (const g of groups) for (const p of g.series) times.add(p.at);
  const xs = [...times].sort((a, b) => a - b);
  xs.push(Math.max(Date.now() / 1000, xs[xs.length - 1])); // the steps run on to now
  const ys = groups.map((g) => {
    let i = 0;
    let back = 0;
    return xs.map((x) => {
      while (i < g.series.length && g.series[i].at <= x) back = g.series[i++].back;
      return back;
    });
  });
  return [xs, ...ys];
}

function drawChart(answer) {
  const box = $("chart");
  const groups = answer.groups;
  top = Math.max(1, ...groups.map((g) => g.users_cut));
  box.dataset.back = groups.map((g) => g.group + ":" + g.users_back).join(",");
  const data = chartData(answer, groups);
  box.dataset.points = String(data[0].length);
  const key = groups.map((g) => g.group).join("\n");
  if (plot && key === plotKey) {
    plot.setData(data);
    return;
  }
  if (plot) plot.destroy();
  plotKey = key;
  const stepped = uPlot.paths.stepped({ align: 1 });
  plot = new uPlot({
    width: Math.max(240, box.clientWidth),
    height: CHART_HEIGHT,
    scales: { x: { time: true }, y: { range: () => [0, top] } },
    series: [
      { label: "Time" },
      ...groups.map((g, n) => ({
        label: g.group, stroke: PALETTE[n % PALETTE.length], width: 2, paths: stepped, points: { show: false },
      })),
    ],
    axes: [{}, { label: "users back", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }],
  }, data, box);
}

function showTotals(answer) {
  const t = answer.totals;
  $("total-cut").textContent = String(t.users_cut);
  $("total-back").textContent = String(t.users_back);
  $("total-not-back").textContent = String(t.users_not_back);
  $("total-sessions").textContent = String(t.sessions_revoked);
  $("total-devices").textContent = String(t.devices_revoked);
  $("total-reapprove").textContent = String(t.devices_to_reapprove);
  if (lastBack !== null && lastBack !== t.users_back) {
    say(plural(t.users_back, "user") + " of " + t.users_cut + " back.");
  }
  lastBack = t.users_back;
}

async function loadDashboard() {
  if (!selected) {
    $("dashboard").hidden = true;
    return;
  }
  const answer = await api("/idwall/api/admin/incidents/" + encodeURIComponent(selected) + "/recovery"
    + query({ limit: NOT_BACK_SHOWN }));
  $("dashboard").hidden = false;
  $("dashboard-id").textContent = answer.incident_id;
  $("dashboard-about").textContent = answer.playbook + ": " + answer.reason + " · started " + at(answer.started_at)
    + (answer.ended_at ? " · ended " + at(answer.ended_at) : " · active") + " · excluded (never cut): "
    + (answer.excluded.join(", ") || "nobody") + " · updated " + new Date().toLocaleTimeString();
  showTotals(answer);
  $("groups-body").replaceChildren(...answer.groups.map((g, n) => groupRow(g, PALETTE[n % PALETTE.length])));
  $("stages-body").replaceChildren(...answer.stages.map(stageRow));
  $("not-back-body").replaceChildren(...answer.not_back.map(waitingRow));
  $("not-back-empty").hidden = answer.not_back_total > 0;
  $("not-back-count").textContent = "(" + answer.not_back_total
    + (answer.not_back_total > answer.not_back.length ? ", the first " + answer.not_back.length + " shown" : "") + ")";
  $("chart-empty").hidden = answer.totals.users_back > 0;
  drawChart(answer);
}

async function refresh() {
  try {
    await loadIncidents();
    await loadDashboard();
    clearProblem();
  } catch (err) {
    showProblem(err);
  }
}

async function poll() {
  // a hidden tab asks nothing; it catches up as soon as it is shown again
  if (!document.hidden) await refresh();
  setTimeout(poll, POLL_MS);
}

function start() {
  $("incidents-body").addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-incident]");
    if (!button) return;
    selected = button.dataset.incident;
    lastBack = null;
    history.replaceState(null, "", location.pathname + query({ incident: selected }));
    refresh().then(() => $("dashboard-heading").focus());
  });
  window.addEventListener("resize", () => {
    if (plot) plot.setSize({ width: Math.max(240, $("chart").clientWidth), height: CHART_HEIGHT });
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  poll();
}

start();
