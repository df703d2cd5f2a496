// People: every user with groups, role, manager, devices, passkeys and last login; invite a person with a
// signed invite.create, whose single-use code is shown once.
import { $, api, at, cell, el, guarded, query, say, signed } from "/idwall/static/console.js";

const STATUS_WORDS = { active: "active", pending_approval: "waiting for approval", revoked: "revoked" };
let next = null;
let shown = 0;

function deviceList(devices) {
  if (!devices.length) return "none";
  const ul = el("ul", null, { class: "plain" });
  for (const d of devices) {
    const expiry = d.status === "active" && d.not_after ? ", certificate until " + at(d.not_after) : "";
    ul.append(el("li", d.name + " — " + (STATUS_WORDS[d.status] || d.status) + expiry));
  }
  return ul;
}

function personRow(u) {
  const tr = el("tr", null, { "data-user": u.id });
  const who = el("td", null, { "data-label": "Person" });
  who.append(el("strong", u.name), el("br"), el("span", u.id + (u.email ? " · " + u.email : ""), { class: "muted" }));
  tr.append(
    who,
    cell("Groups", u.groups.join(", ") || "—"),
    cell("Administrator", u.admin ? "yes" : "no"),
    cell("Manager", u.manager || "—"),
    cell("Devices", deviceList(u.devices)),
    cell("Passkeys", String(u.credentials.length)),
    cell("Last passkey login", at(u.last_login)),
  );
  return tr;
}

async function load(more) {
  const data = await api("/idwall/api/admin/users" + query({ limit: 100, after: more ? next : "" }));
  const rows = data.users.map(personRow);
  if (more) $("people-body").append(...rows);
  else $("people-body").replaceChildren(...rows);
  shown = (more ? shown : 0) + rows.length;
  next = data.next;
  $("people-more").hidden = next === null;
  $("people-empty").hidden = shown > 0;
  $("people-count").textContent = "(" + shown + (next === null ? "" : "+") + ")";
}

function inviteFields(form) {
  const data = new FormData(form);
  const text = (name) => String(data.get(name) || "").trim();
  const fields = {
    type: "invite.create", user: text("user"), name: text("name"), email: text("email"),
    groups: text("groups").split(",").map((g) => g.trim()).filter(Boolean), admin: data.get("admin") === "on",
  };
  // a manager is sent only when named, so the form works whether or not this gateway knows managers yet
  if (text("manager")) fields.manager = text("manager");
  return fields;
}

function showInvite(fields, result) {
  $("invite-who").textContent = fields.name + " (" + fields.user + ")";
  $("invite-code").textContent = result.code;
  $("invite-expires").textContent = at(result.expires_at);
  $("invite-command").textContent = "idwall device enroll --gateway " + location.origin + " --code " + result.code;
  $("invite-link").textContent = location.origin + "/idwall/enroll";
  $("invite-result").hidden = false;
  $("invite-result-heading").focus();
}

function start() {
  $("invite").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const fields = inviteFields(ev.target);
    guarded(async () => {
      const result = await signed(fields);
      if (!result) return;
      ev.target.reset();
      showInvite(fields, result);
      say("Invite for " + fields.user + " signed. The code is shown below, once.");
      await load(false);
    });
  });
  $("invite-done").addEventListener("click", () => {
    // the code exists nowhere else: once hidden it is gone from the page too
    for (const id of ["invite-code", "invite-command", "invite-who", "invite-expires"]) $(id).textContent = "";
    $("invite-result").hidden = true;
    say("The enrollment code was removed from the page.");
    $("invite-user").focus();
  });
  $("people-more").addEventListener("click", () => guarded(() => load(true)));
  guarded(() => load(false));
}

start();
