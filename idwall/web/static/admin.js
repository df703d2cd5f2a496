// IDWall SOC console: live sessions, the kill switch, recent kills.
// Everything shown comes from the admin API and is written with textContent only:
// user names, device names and user agents are attacker-controlled text.
"use strict";

(function () {
  const API = "/idwall/api/admin";
  const REFRESH_MS = 2000;
  const KILL_ALL_PHRASE = "kill all";

  const $ = (id) => document.getElementById(id);
  let filter = {};
  let pending = null; // {scope, target, label} while the reason dialog is open
  let timer = null;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function ago(unixSeconds) {
    if (!unixSeconds) return "—";
    const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  function say(message) {
    // Only the text changes: the live region itself stays in the page so every message is announced.
    $("status").textContent = message;
  }

  function alertProblem(problem) {
    const box = $("alert");
    box.replaceChildren();
    box.append(el("span", (problem.title || "Error") + ": " + (problem.detail || "")));
    if (problem.login_url) {
      box.append(" ");
      const url = new URL(problem.login_url, location.href);
      box.append(el("a", problem.step_up ? "Confirm with your passkey" : "Log in with your passkey",
                    {href: url.pathname + url.search}));
    }
    box.hidden = false;
  }

  function clearAlert() {
    $("alert").hidden = true;
  }

  async function call(method, path, body) {
    const init = {method, headers: {Accept: "application/json"}, credentials: "same-origin", cache: "no-store"};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (err) {
      throw {title: "Network error", detail: "the gateway did not answer (" + err.message + ")"};
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw Object.assign({title: "HTTP " + response.status}, data);
    return data;
  }

  // -- sessions ---------------------------------------------------------------------------------

  function killButton(scope, target, label, text) {
    return el("button", text, {
      type: "button", class: "danger small", "data-scope": scope, "data-target": target,
      "data-label": label, "data-key": scope + ":" + target, "aria-label": text + " " + label,
    });
  }

  function sessionRow(s) {
    const tr = el("tr");
    const who = el("td", null, {"data-label": "User"});
    who.append(el("strong", s.name), el("br"), el("span", s.user, {class: "muted"}));
    tr.append(who);
    tr.append(el("td", s.groups.join(", ") || "—", {"data-label": "Groups"}));
    const dev = el("td", null, {"data-label": "Device"});
    dev.append(el("span", s.device_name), el("br"), el("span", s.device_id, {class: "muted"}));
    tr.append(dev);
    const from = el("td", null, {"data-label": "From"});
    from.append(el("span", s.remote || "—"), el("br"), el("span", s.user_agent || "", {class: "muted ua"}));
    tr.append(from);
    const activity = s.activity.length ? " (" + s.activity.join(", ") + ")" : "";
    tr.append(el("td", s.connections + activity, {"data-label": "Connections"}));
    tr.append(el("td", ago(s.last_seen), {"data-label": "Last seen"}));
    tr.append(el("td", ago(s.auth_time), {"data-label": "Passkey login"}));
    const actions = el("td", null, {"data-label": "Kill", class: "actions"});
    actions.append(
      killButton("session", s.session_id, "session " + s.session_id + " of " + s.user, "Session"),
      killButton("device", s.device_id, "device " + s.device_name + " of " + s.user, "Device"),
      killButton("user", s.user, "user " + s.user, "User"),
    );
    tr.append(actions);
    return tr;
  }

  function renderSessions(list) {
    const body = $("sessions-body");
    // Re-rendering replaces the buttons: give focus back to the same button so
    // keyboard users do not lose their place every two seconds.
    const focused = document.activeElement && body.contains(document.activeElement)
      ? document.activeElement.getAttribute("data-key") : null;
    body.replaceChildren(...list.map(sessionRow));
    if (focused) {
      const again = body.querySelector('[data-key="' + CSS.escape(focused) + '"]');
      (again || $("sessions-heading")).focus();
    }
    $("empty").hidden = list.length > 0;
    $("count").textContent = "(" + list.length + ")";
  }

  async function refresh() {
    try {
      const query = new URLSearchParams(filter).toString();
      const data = await call("GET", "/sessions" + (query ? "?" + query : ""));
      renderSessions(data.sessions);
      $("updated").textContent = "Updated " + new Date().toLocaleTimeString() + "; refreshes every 2 s.";
      const kills = await call("GET", "/kills");
      renderKills(kills.kills);
      clearAlert();
    } catch (problem) {
      alertProblem(problem);
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!$("confirm").open) await refresh();
      schedule();
    }, REFRESH_MS);
  }

  // -- kills ------------------------------------------------------------------------------------

  function renderKills(list) {
    $("kills-body").replaceChildren(...list.map((k) => {
      const tr = el("tr");
      tr.append(
        el("td", k.time, {"data-label": "When"}),
        el("td", k.actor, {"data-label": "Who"}),
        el("td", k.scope + (k.revoke_devices ? " + devices" : ""), {"data-label": "Scope"}),
        el("td", k.target || "everyone", {"data-label": "Target"}),
        el("td", k.reason, {"data-label": "Reason"}),
        el("td", k.sessions, {"data-label": "Sessions"}),
        el("td", k.connections_closed === null ? "(other node)" : k.connections_closed,
           {"data-label": "Connections cut"}),
      );
      return tr;
    }));
    $("kills-empty").hidden = list.length > 0;
  }

  async function kill(scope, target, reason, revokeDevices) {
    say("Killing " + (scope === "all" ? "every session" : scope + " " + target) + "…");
    try {
      const r = await call("POST", "/kill", {scope, target: scope === "all" ? null : target, reason,
                                             revoke_devices: revokeDevices});
      say("Cut " + r.connections_closed + " connection(s): " + r.sessions_revoked + " session(s) revoked, "
          + r.devices_revoked + " device(s) revoked (audit entry " + r.audit_seq + ").");
      clearAlert();
    } catch (problem) {
      say("The kill was refused.");
      alertProblem(problem);
    }
    await refresh();
  }

  function askReason(scope, target, label, opener) {
    pending = {scope, target, opener};
    $("confirm-title").textContent = "Kill " + scope;
    $("confirm-what").textContent = "Cut every live connection of " + label + " and revoke its session(s).";
    $("confirm-reason").value = "";
    $("confirm-revoke").checked = false;
    $("confirm").showModal();
    $("confirm-reason").focus();
  }

  function closeDialog() {
    const opener = pending && pending.opener;
    pending = null;
    if ($("confirm").open) $("confirm").close();
    if (opener && document.body.contains(opener)) opener.focus();
    else $("sessions-heading").focus();
  }

  // -- wiring -----------------------------------------------------------------------------------

  function start() {
    $("filter").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const form = new FormData(ev.target);
      filter = {};
      for (const name of ["user", "group", "device"]) {
        const value = String(form.get(name) || "").trim();
        if (value) filter[name] = value;
      }
      refresh();
    });
    $("filter").addEventListener("reset", () => {
      filter = {};
      setTimeout(refresh, 0);
    });

    $("sessions-body").addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-scope]");
      if (!button) return;
      askReason(button.dataset.scope, button.dataset.target, button.dataset.label, button);
    });

    $("kill-group").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const group = $("kill-group-name").value.trim();
      if (group) askReason("group", group, "group " + group, ev.submitter || $("kill-group-name"));
    });

    $("confirm-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const reason = $("confirm-reason").value.trim();
      if (!reason || !pending) return;
      const {scope, target} = pending;
      const revoke = $("confirm-revoke").checked;
      closeDialog();
      kill(scope, target, reason, revoke);
    });
    $("confirm-cancel").addEventListener("click", closeDialog);
    $("confirm").addEventListener("cancel", (ev) => {
      ev.preventDefault();
      closeDialog();
    });

    const confirmAll = () => {
      $("kill-all-button").disabled = $("kill-all-confirm").value.trim().toLowerCase() !== KILL_ALL_PHRASE;
    };
    $("kill-all-confirm").addEventListener("input", confirmAll);
    $("kill-all").addEventListener("submit", (ev) => {
      ev.preventDefault();
      confirmAll();
      const reason = $("kill-all-reason").value.trim();
      if ($("kill-all-button").disabled || !reason) return;
      const revoke = $("kill-all-revoke").checked;
      $("kill-all-confirm").value = "";
      confirmAll();
      kill("all", null, reason, revoke);
    });

    refresh();
    schedule();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
