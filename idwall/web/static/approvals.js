// Approvals: the devices waiting for this person's approval (every pending device for an administrator; those of
// the people they manage for a manager under devices.approval: manager), approved or rejected with a signed
// device.approve / device.reject. The gateway answers only what this person may approve.
import { $, api, at, cell, el, guarded, query, say, signed } from "/idwall/static/console.js";

let next = null;
let shown = 0;

function button(text, action, d, extra) {
  return el("button", text, {
    type: "button", class: "small " + extra, "data-action": action, "data-device": d.id,
    "data-about": d.name + " of " + d.user, "aria-label": text + " " + d.name + " of " + d.user,
  });
}

function deviceRow(d) {
  const tr = el("tr", null, { "data-device": d.id, "data-user": d.user });
  const name = el("td", null, { "data-label": "Device" });
  name.append(el("strong", d.name), el("br"), el("span", d.id, { class: "muted" }));
  const actions = el("td", null, { "data-label": "Actions", class: "actions" });
  actions.append(button("Approve…", "approve", d, "primary"), button("Reject…", "reject", d, "danger"));
  tr.append(cell("Person", d.user_name + " (" + d.user + ")"), name, cell("Enrolled", at(d.enrolled_at)), actions);
  return tr;
}

/** Whose devices this person approves, in words. */
function scopeWords(data) {
  if (data.scope === "all") return "As an administrator you approve the new devices of everyone.";
  if (data.scope === "reports" && data.reports.length) {
    return "You approve the new devices of the people you manage: " + data.reports.join(", ") + ".";
  }
  return "";
}

/** Why nothing is listed, in words. */
function emptyWords(data) {
  if (data.scope === "all") return "No device is waiting for approval.";
  if (!data.reports.length) return "You manage nobody, so no device waits for your approval.";
  if (data.scope === "none") {
    return "This gateway lets only administrators approve devices (devices.approval: " + data.approval
      + "), so no device waits for your approval.";
  }
  return "No device of the people you manage is waiting for approval.";
}

async function load(more) {
  const data = await api("/idwall/api/approvals" + query({ limit: 100, after: more ? next : "" }));
  const rows = data.devices.map(deviceRow);
  if (more) $("approvals-body").append(...rows);
  else $("approvals-body").replaceChildren(...rows);
  shown = (more ? shown : 0) + rows.length;
  next = data.next;
  $("approvals-scope").textContent = scopeWords(data);
  $("approvals").hidden = shown === 0;
  $("approvals-empty").textContent = emptyWords(data);
  $("approvals-empty").hidden = shown > 0;
  $("approvals-more").hidden = next === null;
  $("approvals-count").textContent = "(" + shown + (next === null ? "" : "+") + ")";
  document.body.dataset.loaded = "true";
}

async function act(action, deviceId, about) {
  const result = await signed({ type: "device." + action, device_id: deviceId }, about);
  if (!result) return;
  say((action === "approve" ? "Approved " : "Rejected ") + about + ": the device is now "
    + (result.status === "active" ? "active and receives its certificate." : result.status + "."));
  await load(false);
  $("approvals-heading").focus();
}

function start() {
  $("approvals-body").addEventListener("click", (ev) => {
    const pressed = ev.target.closest("button[data-action]");
    if (!pressed) return;
    guarded(() => act(pressed.dataset.action, pressed.dataset.device, pressed.dataset.about));
  });
  $("approvals-more").addEventListener("click", () => guarded(() => load(true)));
  guarded(() => load(false));
}

start();
