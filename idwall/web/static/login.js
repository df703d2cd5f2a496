// The sign-in page: a passkey assertion over this connection's device certificate, then back to "next".
import {
  ApiProblem, LINKS, NetworkError, api, passkeyFailure, passkeysSupported, safeNext, setText, setVisible, showState, when,
} from "./idwall.js";

const main = document.getElementById("main");
// The server already made it safe (policy.safe_next); checked again so this script alone cannot redirect away.
const next = safeNext(main.dataset.next);

function showButtons({ signIn, signedIn }) {
  setVisible("signin", signIn);
  setVisible("continue", signedIn);
  setVisible("signout", signedIn);
}

function showFailure(err) {
  if (err instanceof NetworkError) {
    showState("network", "The gateway could not be reached.", "You are not signed in.",
      "Check your connection, then try again.");
    return;
  }
  if (!(err instanceof ApiProblem)) {
    showState("error", "Something went wrong.", String(err && err.message || err), "Reload this page to try again.");
    return;
  }
  const detail = err.message;
  if (err.slug === "no-client-certificate") {
    showNoCertificate();
  } else if (err.status === 403) {
    showButtons({ signIn: false, signedIn: false });
    showState("revoked", "This device cannot sign in.", detail, "Enroll it again.", LINKS.enroll);
  } else if (err.slug === "webauthn-rejected") {
    showState("rejected", "The gateway did not accept your passkey.", detail,
      "Use the passkey you created when you enrolled this device, confirm it is you, and try again.");
  } else if (err.slug === "gone" || err.slug === "not-found") {
    showState("error", "The sign-in request expired.", detail, "Press Sign in with passkey to start again.");
  } else {
    showState("error", err.problem.title || "Sign-in failed.", detail, "Press Sign in with passkey to try again.");
  }
}

function showNoCertificate() {
  showButtons({ signIn: false, signedIn: false });
  setVisible("identity", false);
  showState("no-certificate", "This browser has no device certificate.",
    "Signing in needs an enrolled device: the browser must present its IDWall certificate.",
    "Enroll this device, or import your device.p12 and reopen this page.", LINKS.enroll);
}

function userText(user) {
  if (!user) return "";
  if (typeof user === "string") return user;
  return user.name && user.name !== user.id ? `${user.name} (${user.id})` : user.id;
}

async function signIn() {
  const button = document.getElementById("signin");
  button.disabled = true;
  try {
    showState("signing-in", "Signing in…",
      "Follow your browser's prompt: touch the sensor, look at the camera or enter your PIN.",
      "If no prompt appears, look for a browser window behind this one.");
    const begin = await api("/idwall/api/login/begin", { method: "POST", body: {} });
    let credential;
    try {
      credential = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(begin.options),
      });
    } catch (err) {
      const failure = passkeyFailure(err, "Sign in with passkey");
      if (failure === null) throw err;
      showState(...failure);
      return;
    }
    const result = await api("/idwall/api/login/finish", {
      method: "POST", body: { credential: credential.toJSON() },
    });
    showState("success", `Signed in as ${userText(result.user)}.`, "Taking you back to where you were…",
      `If nothing happens, open ${next}.`);
    window.location.assign(next);
  } catch (err) {
    showFailure(err);
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  const button = document.getElementById("signout");
  button.disabled = true;
  try {
    await api("/idwall/api/logout", { method: "POST", body: {} });
    showButtons({ signIn: true, signedIn: false });
    setText("session", "not signed in");
    showState("signed-out", "You are signed out.", "Apps behind IDWall need a new passkey sign-in on this device.",
      "Close this tab, or press Sign in with passkey.");
  } catch (err) {
    showFailure(err);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  document.getElementById("signin").addEventListener("click", signIn);
  document.getElementById("signout").addEventListener("click", signOut);
  let me;
  try {
    me = await api("/idwall/api/me");
  } catch (err) {
    // The server already rendered what it knew when it sent the page; an answer here only refines it.
    if (err instanceof ApiProblem) showFailure(err);
    return;
  }
  if (!me.device) return;
  setVisible("identity", true);
  setText("who", userText(me.user));
  setText("device", `${me.device.name} (${String(me.device.status).replace("_", " ")})`);
  setText("session", me.session ? `signed in ${when(me.session.auth_time)}, ends ${when(me.session.expires_at)}`
    : "not signed in");
  if (me.device.status !== "active") return;
  if (!passkeysSupported("get")) {
    showButtons({ signIn: false, signedIn: Boolean(me.session) });
    showState("unsupported", "This browser cannot use passkeys here.",
      "It lacks WebAuthn with JSON options (PublicKeyCredential.parseRequestOptionsFromJSON).",
      "Use a current Chrome, Edge, Firefox or Safari.");
    return;
  }
  showButtons({ signIn: true, signedIn: Boolean(me.session) });
  if (!me.session && main.dataset.state === "signed-in") {
    showState("expired", "Your session ended, sign in again.", "", "Press Sign in with passkey.");
  }
}

start();
