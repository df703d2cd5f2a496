// Devices: status, certificate expiry and approver; approve or reject a pending device with a signed action;
// revoke a device through the kill switch (sessions cut, certificate revoked: removing access needs no passkey).
import { $, api, at, cell, confirmed, el, guarded, query, say, signed } from "/idwall/static/console.js";

const STATUS_WORDS = { active: "Active", pending_approval: "Waiting for approval", revoked: "Revoked" };
let next = null;
let shown = 0;

function button(text, action, d, extra) {
  return el("button", text, {
    type: "button", class: "small" + (extra ? " " + extra : ""), "data-action": action, "data-device": d.id,
    "data-about": d.name + " of " + d.user, "aria-label": text + " " + d.name + " of " + d.user,
  });
}

function deviceRow(d) {
  const tr = el("tr", null, { "data-device": d.id, "data-status": d.status });
  const name = el("td", null, { "data-label": "Device" });
  name.append(el("strong", d.name), el("br"), el("span", d.id, { class: "muted" }));
  const actions = el("td", null, { "data-label": "Actions", class: "actions" });
  if (d.status === "pending_approval") {
    actions.append(button("Approve…", "approve", d, "primary"), button("Reject…", "reject", d, "danger"));
  } else if (d.status === "active") {
    actions.append(button("Revoke…", "revoke", d, "danger"));
  } else {
    actions.append("—");
  }
  tr.append(
    name,
    cell("Person", d.user_name + " (" + d.user + ")"),
    cell("Status", STATUS_WORDS[d.status] || d.status),
    cell("Certificate expires", d.status === "active" ? at(d.not_after) : "—"),
    cell("Approved by", d.approved_by || "—"),
    cell("Enrolled", at(d.enrolled_at)),
    actions,
  );
  return tr;
}

async function load(more) {
  const status = $("devices-status").value;
  const data = await api("/idwall/api/admin/devices" + query({ status, limit: 100, after: more ? next : "" }));
  const rows = data.devices.map(deviceRow);
  if (more) $("devices-body").append(...rows);
  else $("devices-body").replaceChildren(...rows);
  shown = (more ? shown : 0) + rows.length;
  next = data.next;
  $("devices-more").hidden = next === null;
  $("devices-empty").hidden = shown > 0;
  $("devices-count").textContent = "(" + shown + (next === null ? "" : "+") + ")";
}

async function act(action, deviceId, about) {
  if (action === "approve" || action === "reject") {
    const result = await signed({ type: "device." + action, device_id: deviceId }, about);
    if (!result) return;
    say((action === "approve" ? "Approved " : "Rejected ") + about + ": the device is now "
      + (STATUS_WORDS[result.status] || result.status).toLowerCase() + ".");
  } else {
    const reason = await confirmed("Revoke device", "Cut every session of " + about + " now and revoke its "
      + "certificate. Its owner must enroll it again.", "Revoke device", true);
    if (reason === null) return;
    const cut = await api("/idwall/api/admin/kill", {
      method: "POST", body: { scope: "device", target: deviceId, reason, revoke_devices: true },
    });
    say("Revoked " + about + ": " + cut.devices_revoked + " device(s) revoked, " + cut.sessions_revoked
      + " session(s) ended, " + cut.connections_closed + " connection(s) cut (audit entry " + cut.audit_seq + ").");
  }
  await load(false);
  $("devices-heading").focus();
}

function start() {
  $("devices-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(() => load(false));
  });
  $("devices-body").addEventListener("click", (ev) => {
    const pressed = ev.target.closest("button[data-action]");
    if (!pressed) return;
    guarded(() => act(pressed.dataset.action, pressed.dataset.device, pressed.dataset.about));
  });
  $("devices-more").addEventListener("click", () => guarded(() => load(true)));
  const wanted = new URLSearchParams(location.search).get("status");
  if (wanted && [...$("devices-status").options].some((o) => o.value === wanted)) $("devices-status").value = wanted;
  guarded(() => load(false));
}

start();
