// Ledger: the whole chain verified in the gateway (as `idwall audit verify` does), and a searchable, paged view of
// the entries, each with who approved it and with which passkey (and the device that passkey is bound to).
import { $, api, cell, el, guarded, query, say } from "/idwall/static/console.js";

const PAGE = 50;
let filter = {};
let next = null;
const passkeys = new Map(); // credential id -> "device name of user"

async function loadPasskeys() {
  let after = "";
  for (;;) {
    const data = await api("/idwall/api/admin/users" + query({ limit: 500, after }));
    for (const u of data.users) {
      const names = new Map(u.devices.map((d) => [d.id, d.name]));
      for (const c of u.credentials) passkeys.set(c.id, (names.get(c.device_id) || c.device_id) + " of " + u.id);
    }
    if (data.next === null) return;
    after = data.next;
  }
}

async function verify() {
  const box = $("verify-result");
  box.dataset.state = "running";
  box.textContent = "Verifying the whole ledger…";
  const root = $("verify-root").value.trim();
  const r = await api("/idwall/api/admin/audit/verify" + query({ root }));
  box.dataset.state = r.ok ? "ok" : "failed";
  const pin = r.pinned_root ? "against the pinned root " : "root (not pinned: compare it with the one written down) ";
  box.textContent = r.ok
    ? "Chain verified: " + r.entries + " entries up to seq " + r.seq + ", " + pin + r.root + ", head " + r.head + "."
    : "Chain NOT verified" + (r.complete ? " at seq " + r.seq : "") + ": " + r.reason;
}

const short = (id) => String(id).slice(0, 12) + "…";

function approval(entry) {
  const a = entry.approval;
  if (a) {
    const where = passkeys.get(a.credential_id);
    return entry.actor + " with passkey " + short(a.credential_id) + (where ? " on " + where : "");
  }
  const data = entry.data || {};
  if ((entry.type === "bootstrap" || entry.type === "device.enroll") && data.credential_id) {
    // a registration: the new passkey itself, vouched for by the invite (signed earlier) or the bootstrap code
    return "registers passkey " + short(data.credential_id);
  }
  if (entry.actor.startsWith("token:")) return "automation token " + entry.actor.slice(6) + " (no passkey needed)";
  return "no passkey needed (" + entry.actor + ")";
}

// what a person reads first about an entry; everything else is one click away
const SUMMARY_FIELDS = ["user", "name", "device_name", "scope", "target", "reason", "scopes", "status", "admin", "groups"];

function details(entry) {
  const data = entry.data || {};
  const shown = SUMMARY_FIELDS.filter((k) => k in data).slice(0, 4).map((k) => {
    const text = typeof data[k] === "object" ? JSON.stringify(data[k]) : String(data[k]);
    return k + ": " + (text.length > 40 ? text.slice(0, 40) + "…" : text);
  });
  const box = el("div", null, { class: "details" });
  box.append(el("span", shown.join("; ") || "—"));
  const all = el("details");
  all.append(el("summary", "All fields of entry " + entry.seq), el("pre", JSON.stringify(data, null, 2)));
  box.append(all);
  return box;
}

function entryRow(e) {
  const tr = el("tr", null, { "data-seq": String(e.seq), "data-type": e.type });
  tr.append(cell("Seq", String(e.seq)), cell("Time", e.time), cell("Type", el("code", e.type)), cell("Actor", e.actor),
    cell("Subject", e.subject), cell("Approved with", approval(e)), cell("Details", details(e)));
  return tr;
}

async function load(after) {
  const data = await api("/idwall/api/admin/audit/search" + query({ ...filter, after, limit: PAGE }));
  $("ledger-body").replaceChildren(...data.entries.map(entryRow));
  next = data.next;
  $("ledger-empty").hidden = data.entries.length > 0;
  $("ledger-next").disabled = next === null;
  $("ledger-first").disabled = after === 0;
  const range = data.entries.length ? "(seq " + data.entries[0].seq + " to " + data.entries[data.entries.length - 1].seq + ")" : "";
  $("ledger-range").textContent = range;
  say(data.entries.length + " entr" + (data.entries.length === 1 ? "y" : "ies") + " shown " + range + ".");
}

function start() {
  $("ledger-filter").addEventListener("submit", (ev) => {
    ev.preventDefault();
    filter = { type: $("ledger-type").value.trim(), user: $("ledger-user").value.trim() };
    guarded(() => load(0));
  });
  $("ledger-filter").addEventListener("reset", () => {
    filter = {};
    setTimeout(() => guarded(() => load(0)), 0);
  });
  $("ledger-next").addEventListener("click", () => {
    if (next === null) return;
    guarded(() => load(next));
  });
  $("ledger-first").addEventListener("click", () => {
    guarded(() => load(0));
  });
  $("verify-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(verify);
  });
  guarded(async () => {
    await loadPasskeys();
    await load(0);
    await verify();
  });
}

start();
