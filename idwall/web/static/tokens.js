// Admins & tokens: grant and revoke the administrator role (signed admin.grant / admin.revoke), create
// automation tokens (signed token.create, the token shown once) and revoke them (at once, no passkey needed).
import { $, api, at, cell, confirmed, el, guarded, query, say, signed } from "/idwall/static/console.js";

async function loadAdmins() {
  const admins = [];
  let after = "";
  // every page: the list of administrators is short, but people are many
  for (;;) {
    const data = await api("/idwall/api/admin/users" + query({ limit: 500, after }));
    admins.push(...data.users.filter((u) => u.admin));
    if (data.next === null) break;
    after = data.next;
  }
  $("admins-body").replaceChildren(...admins.map((u) => {
    const tr = el("tr", null, { "data-user": u.id });
    const actions = el("td", null, { "data-label": "Actions", class: "actions" });
    actions.append(el("button", "Revoke admin…", {
      type: "button", class: "small danger", "data-revoke-admin": u.id, "aria-label": "Revoke admin role of " + u.id,
    }));
    tr.append(cell("Person", u.name + " (" + u.id + ")"), cell("Email", u.email || "—"), actions);
    return tr;
  }));
}

async function loadTokens() {
  const data = await api("/idwall/api/admin/tokens");
  $("tokens-body").replaceChildren(...data.tokens.map((t) => {
    const tr = el("tr", null, { "data-token": t.id, "data-status": t.status });
    const name = el("td", null, { "data-label": "Name" });
    name.append(el("strong", t.name), el("br"), el("span", t.id + " · by " + t.created_by, { class: "muted" }));
    const actions = el("td", null, { "data-label": "Actions", class: "actions" });
    if (t.status === "active") {
      actions.append(el("button", "Revoke", {
        type: "button", class: "small danger", "data-revoke-token": t.id, "data-name": t.name,
        "aria-label": "Revoke token " + t.name,
      }));
    } else {
      actions.append("—");
    }
    tr.append(name, cell("Scopes", t.scopes.join(", ")), cell("Created", at(t.created_at)),
      cell("Expires", at(t.expires_at)),
      cell("Status", t.status === "revoked" ? "revoked " + at(t.revoked_at) : t.status), actions);
    return tr;
  }));
  $("tokens-empty").hidden = data.tokens.length > 0;
}

async function revokeAdmin(user) {
  const result = await signed({ type: "admin.revoke", user });
  if (!result) return;
  say(user + " is no longer an administrator.");
  await loadAdmins();
  $("admins-heading").focus();
}

async function revokeToken(id, name) {
  const ok = await confirmed("Revoke token", "Token \u201c" + name + "\u201d (" + id + ") stops working at once, "
    + "on every node. This cannot be undone.", "Revoke token", false);
  if (ok === null) return;
  const done = await api("/idwall/api/admin/tokens/" + encodeURIComponent(id) + "/revoke", { method: "POST" });
  say("Token " + name + " revoked (audit entry " + done.audit_seq + ").");
  await loadTokens();
  $("tokens-heading").focus();
}

function start() {
  $("grant").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const user = $("grant-user").value.trim();
    guarded(async () => {
      const result = await signed({ type: "admin.grant", user });
      if (!result) return;
      ev.target.reset();
      say(user + " is now an administrator.");
      await loadAdmins();
    });
  });
  $("admins-body").addEventListener("click", (ev) => {
    const pressed = ev.target.closest("button[data-revoke-admin]");
    if (pressed) guarded(() => revokeAdmin(pressed.dataset.revokeAdmin));
  });
  $("token-create").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(ev.target);
    const fields = { type: "token.create", name: String(data.get("name") || "").trim(),
      scopes: data.getAll("scope").map(String), ttl: String(data.get("ttl") || "").trim() };
    guarded(async () => {
      const result = await signed(fields);
      if (!result) return;
      ev.target.reset();
      $("token-secret").textContent = result.token;
      $("token-id").textContent = result.token_id;
      $("token-expires").textContent = at(result.expires_at);
      $("token-result").hidden = false;
      $("token-result-heading").focus();
      say("Token " + fields.name + " created. It is shown below, once.");
      await loadTokens();
    });
  });
  $("token-done").addEventListener("click", () => {
    $("token-secret").textContent = "";
    $("token-result").hidden = true;
    say("The token was removed from the page.");
    $("token-name").focus();
  });
  $("tokens-body").addEventListener("click", (ev) => {
    const pressed = ev.target.closest("button[data-revoke-token]");
    if (pressed) guarded(() => revokeToken(pressed.dataset.revokeToken, pressed.dataset.name));
  });
  guarded(async () => {
    await loadAdmins();
    await loadTokens();
  });
}

start();
