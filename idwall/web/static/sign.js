// The signing page: an action the command line began, shown in words and as the exact JSON, signed with the
// passkey of this browser's session. The page never sees the result: the terminal that began it finishes it.
import {
  ApiProblem, LINKS, NetworkError, api, passkeyFailure, passkeysSupported, setText, setVisible, showState, when,
} from "./idwall.js";

const main = document.getElementById("main");
const requestId = main.dataset.requestId;
const KEPT = `idwall-sign:${requestId}`;
const ACTION_LABEL = "idwall/action/v1";
let secret = "";
let opened = null;

/** The link's secret: from the fragment (then dropped from the address bar), or kept across a sign-in. */
function takeSecret() {
  const fromLink = window.location.hash.slice(1);
  if (fromLink) {
    history.replaceState(null, "", window.location.pathname);
    return fromLink;
  }
  const kept = sessionStorage.getItem(KEPT) || "";
  sessionStorage.removeItem(KEPT);
  return kept;
}

/** Canonical JSON as the gateway makes it: keys sorted, no white space (actions hold no floats). */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

function fromB64url(text) {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("").toUpperCase();
}

/** The challenge of `action` (SHA-256 of the label and its canonical JSON), computed here, not taken on trust. */
async function challengeOf(action) {
  const bytes = new TextEncoder().encode(ACTION_LABEL + canonical(action));
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function showButtons(visible) {
  setVisible("sign", visible);
  setVisible("decline", visible);
}

function showFailure(err) {
  showButtons(false);
  if (err instanceof NetworkError) {
    showState("network", "The gateway could not be reached.", "Nothing was signed.",
      "Check your connection, then reload this page.");
    return;
  }
  if (!(err instanceof ApiProblem)) {
    showState("error", "Something went wrong.", String((err && err.message) || err), "Nothing was signed.");
    return;
  }
  const detail = err.message;
  if (err.slug === "login-required") {
    // Keep the secret for this tab only, so the page can carry on after signing in.
    sessionStorage.setItem(KEPT, secret);
    showState("login", "Sign in first.", "This page needs the signed-in session of the device the command runs on.",
      "Sign in with your passkey; you come back here afterwards.",
      [`/idwall/login?next=${encodeURIComponent(window.location.pathname)}`, "Sign in"]);
  } else if (err.slug === "no-client-certificate") {
    showState("no-certificate", "This browser has no device certificate.",
      "Open the link in the browser that holds the certificate of the device the command runs on.",
      "Nothing was signed.", LINKS.enroll);
  } else if (err.status === 403) {
    showState("other-session", "This link belongs to another session.", detail,
      "Run the command again and open its link in the browser signed in on that device.");
  } else if (err.status === 404) {
    showState("unknown", "Unknown signing link.", detail, "Open the exact link the terminal printed.");
  } else if (err.status === 410 || err.status === 409) {
    showState("ended", "This signing link cannot be used any more.", detail, "Run the command again for a new link.");
  } else if (err.slug === "webauthn-rejected") {
    showState("rejected", "The gateway did not accept this passkey response.", detail, "Nothing was signed.");
  } else {
    showState("error", err.problem.title || "Signing failed.", detail, "Nothing was signed.");
  }
}

async function open() {
  secret = takeSecret();
  if (!secret) {
    showState("incomplete", "This link is incomplete.",
      "A signing link ends with # and a secret; without it the request cannot be opened.",
      "Copy the whole link the terminal printed.");
    return;
  }
  if (!passkeysSupported("get")) {
    showState("unsupported", "This browser cannot use passkeys here.",
      "The page needs WebAuthn in a secure (https) context.", "Use a current browser.");
    return;
  }
  try {
    opened = await api("/idwall/api/sign/open", { method: "POST", body: { request_id: requestId, secret } });
  } catch (err) {
    showFailure(err);
    return;
  }
  const challenge = await challengeOf(opened.action);
  const offered = fromB64url(opened.options.challenge);
  if (hex(challenge) !== hex(offered)) {
    // What the passkey would sign is not the action shown: refuse, and tell the terminal.
    await api("/idwall/api/sign/decline", { method: "POST", body: { request_id: requestId, secret } }).catch(() => {});
    showState("mismatch", "The passkey challenge does not match the action shown.",
      "The gateway offered to sign something other than this action.", "Nothing was signed; tell your security team.");
    return;
  }
  setText("summary", opened.summary);
  setText("actor", opened.action.actor);
  setText("check-code", `${hex(challenge.slice(0, 2))}-${hex(challenge.slice(2, 4))}`);
  setText("expires", when(opened.expires_at));
  setText("canonical", canonical(opened.action));
  setVisible("facts", true);
  setVisible("exact", true);
  showButtons(true);
  showState("ready", "Check the action, then sign it.", "Compare the check code with the one in your terminal.",
    "Press Sign with passkey, or Decline if you did not ask for this.");
  document.getElementById("sign").focus();
}

async function sign() {
  const button = document.getElementById("sign");
  button.disabled = true;
  try {
    showState("signing", "Signing…", "Follow your browser's prompt: touch the sensor, look at the camera or enter your PIN.",
      "If no prompt appears, look for a browser window behind this one.");
    let credential;
    try {
      credential = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(opened.options),
      });
    } catch (err) {
      const failure = passkeyFailure(err, "Sign with passkey");
      if (failure === null) throw err;
      showState(...failure);
      return;
    }
    await api("/idwall/api/sign/approve", {
      method: "POST", body: { request_id: requestId, secret, credential: credential.toJSON() },
    });
    showButtons(false);
    showState("signed", "Signed. Return to your terminal.",
      "The command that asked finishes the action and prints its result there; this page never shows it.",
      "You can close this page.");
  } catch (err) {
    showFailure(err);
  } finally {
    button.disabled = false;
  }
}

async function decline() {
  try {
    await api("/idwall/api/sign/decline", { method: "POST", body: { request_id: requestId, secret } });
    showButtons(false);
    showState("declined", "Declined. Nothing was signed.", "The command in your terminal stops and says so.",
      "If you did not start this request, tell your security team.");
  } catch (err) {
    showFailure(err);
  }
}

document.getElementById("sign").addEventListener("click", sign);
document.getElementById("decline").addEventListener("click", decline);
open();
