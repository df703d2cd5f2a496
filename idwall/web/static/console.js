// Shared pieces of the admin console pages (People, Devices, Admins & tokens, Ledger, Incidents): the status and alert
// regions, elements built with textContent only (names, emails and ledger data are attacker-controlled text),
// and signed actions: begin, show in words exactly what the passkey will sign, then the passkey prompt, finish.
import { ApiProblem, api, passkeyFailure, when } from "/idwall/static/idwall.js";

export { api, when };

export const $ = (id) => document.getElementById(id);

/** A new element with `text` (as text, never markup) and attributes. */
export function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

/** A table cell labelled for the stacked layout of narrow screens. */
export function cell(label, ...content) {
  const td = el("td", null, { "data-label": label });
  td.append(...content.map((c) => (c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "—" : String(c)))));
  return td;
}

/** Unix seconds as local date and time, or "—". */
export function at(unix) {
  return typeof unix === "number" ? when(unix) : "—";
}

/** Announce `message` in the page's polite live region (it stays in the page; only its text changes). */
export function say(message) {
  $("status").textContent = message;
}

/** Show what went wrong in the alert region: an API problem, a passkey prompt failure, or anything else. */
export function showProblem(err) {
  const box = $("alert");
  box.replaceChildren();
  const failed = passkeyFailure(err, "the button");
  if (failed) {
    box.append(el("span", failed[1] + " " + failed[2]));
  } else if (err instanceof ApiProblem) {
    const problem = err.problem;
    box.append(el("span", (problem.title || "HTTP " + err.status) + ": " + (problem.detail || err.message)));
    if (problem.login_url) {
      // back to this page afterwards; a fixed path, never a URL taken from the answer
      box.append(" ", el("a", problem.step_up ? "Confirm with your passkey" : "Log in with your passkey",
        { href: "/idwall/login?next=" + encodeURIComponent(location.pathname) }));
    }
  } else {
    box.append(el("span", "Error: " + (err && err.message ? err.message : String(err))));
  }
  box.hidden = false;
}

export function clearProblem() {
  $("alert").hidden = true;
  $("alert").replaceChildren();
}

/** A query string of the non-empty values of `params` ("" when none). */
export function query(params) {
  const kept = Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "");
  return kept.length ? "?" + new URLSearchParams(kept).toString() : "";
}

function list(items) {
  return items.length ? items.join(", ") : "none";
}

/** The action a passkey is about to sign, in words. `about` names its target for people (a device's name). */
export function describe(action, about) {
  const target = about ? " (" + about + ")" : "";
  let what;
  switch (action.type) {
    case "invite.create":
      what = "Invite " + action.name + " as user " + action.user + (action.email ? " <" + action.email + ">" : "")
        + ", in groups: " + list(action.groups) + ", " + (action.admin ? "AS AN ADMINISTRATOR" : "not an administrator")
        + ("manager" in action ? ", manager: " + (action.manager || "none") : "")
        + ". A single-use enrollment code will be made for them.";
      break;
    case "device.approve":
      what = "Approve device " + action.device_id + target + ": it receives its certificate and can sign in.";
      break;
    case "device.reject":
      what = "Reject device " + action.device_id + target + ": it is revoked and will never sign in.";
      break;
    case "admin.grant":
      what = "Make " + action.user + " an administrator: they may invite people, approve devices, "
        + "grant and revoke administrators and create tokens.";
      break;
    case "admin.revoke":
      what = "Remove the administrator role from " + action.user + ".";
      break;
    case "token.create":
      what = "Create the automation token \u201c" + action.name + "\u201d with scope(s) " + list(action.scopes)
        + ", valid for " + action.ttl + ". It is shown once.";
      break;
    default:
      what = "Perform " + action.type + ".";
  }
  return what + " Signed by " + action.actor + "; the signature is accepted until " + at(action.not_after) + ".";
}

/**
 * Sign `fields` ({type, ...}) with this browser's passkey: begin, show the exact action in words and as JSON in the
 * #sign dialog, and only on "Sign with passkey" prompt for the passkey and finish. Resolves with the action's result,
 * or null when the person cancelled before the prompt; rejects with what went wrong.
 */
export async function signed(fields, about) {
  const opener = document.activeElement;
  const begun = await api("/idwall/api/actions/begin", { method: "POST", body: { action: fields } });
  const dialog = $("sign");
  $("sign-words").textContent = describe(begun.action, about);
  $("sign-json").textContent = JSON.stringify(begun.action, null, 2);
  $("sign-ok").disabled = false;
  dialog.showModal();
  $("sign-ok").focus();
  try {
    const go = await new Promise((resolve) => {
      const answer = (value, ev) => {
        if (ev) ev.preventDefault();
        $("sign-ok").removeEventListener("click", ok);
        $("sign-cancel").removeEventListener("click", cancel);
        dialog.removeEventListener("cancel", cancel);
        resolve(value);
      };
      const ok = () => answer(true);
      const cancel = (ev) => answer(false, ev);
      $("sign-ok").addEventListener("click", ok);
      $("sign-cancel").addEventListener("click", cancel);
      dialog.addEventListener("cancel", cancel);
    });
    if (!go) {
      say("Cancelled: nothing was signed.");
      return null;
    }
    $("sign-ok").disabled = true;
    say("Waiting for your passkey…");
    const credential = await navigator.credentials.get({
      publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(begun.options),
    });
    const done = await api("/idwall/api/actions/finish", {
      method: "POST", body: { action_id: begun.action_id, credential: credential.toJSON() },
    });
    return done.result;
  } finally {
    if (dialog.open) dialog.close();
    if (opener && document.body.contains(opener)) opener.focus();
  }
}

/** Run `work` (an async function) for a button press: errors go to the alert region, never uncaught. */
export async function guarded(work) {
  clearProblem();
  try {
    await work();
  } catch (err) {
    say("That did not work; nothing was changed.");
    showProblem(err);
  }
}

/**
 * Ask in the #confirm dialog before something that takes access away. Resolves with the reason typed (or "" when
 * `withReason` is false), or null when cancelled; focus goes back to where it was.
 */
export function confirmed(title, text, okLabel, withReason) {
  const opener = document.activeElement;
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  $("confirm-reason-label").hidden = !withReason;
  $("confirm-reason").required = withReason;
  $("confirm-reason").value = "";
  dialog.showModal();
  (withReason ? $("confirm-reason") : $("confirm-ok")).focus();
  return new Promise((resolve) => {
    const finish = (value) => {
      $("confirm-form").removeEventListener("submit", submit);
      $("confirm-cancel").removeEventListener("click", cancel);
      dialog.removeEventListener("cancel", cancel);
      if (dialog.open) dialog.close();
      if (opener && document.body.contains(opener)) opener.focus();
      resolve(value);
    };
    const submit = (ev) => {
      ev.preventDefault();
      const reason = $("confirm-reason").value.trim();
      if (withReason && !reason) return;
      finish(withReason ? reason : "");
    };
    const cancel = (ev) => {
      if (ev) ev.preventDefault();
      finish(null);
    };
    $("confirm-form").addEventListener("submit", submit);
    $("confirm-cancel").addEventListener("click", cancel);
    dialog.addEventListener("cancel", cancel);
  });
}
