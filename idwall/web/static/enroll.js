// The enrollment page: create the passkey that vouches for this device's TLS key.
import {
  ApiProblem, LINKS, NetworkError, api, passkeyFailure, passkeysSupported, setText, setVisible, showState, when,
} from "./idwall.js";

const main = document.getElementById("main");
const enrollmentId = main.dataset.enrollmentId;
const statusUrl = `/idwall/api/enroll/${encodeURIComponent(enrollmentId)}`;
const button = document.getElementById("create");
const recoverUrl = `${statusUrl}/recover`;
const recoverButton = document.getElementById("recover-button");
const POLL_MS = 3000;
let options = null;
let polling = null;

function showFailure(err) {
  if (err instanceof NetworkError) {
    showState("network", "The gateway could not be reached.", "Your passkey may not have been saved.",
      "Check your connection, then press Create passkey again.");
    return;
  }
  if (!(err instanceof ApiProblem)) {
    showState("error", "Something went wrong.", String(err && err.message || err), "Reload this page to try again.");
    return;
  }
  const detail = err.message;
  switch (err.slug) {
    case "not-found":
      setVisible("facts", false);
      showState("unknown", "Unknown enrollment.", "No enrollment has this link.",
        "Open the exact link the terminal printed, or run idwall device enroll again.");
      break;
    case "gone":
      showState("expired", "This enrollment has expired or was already used.", detail,
        "Run idwall device enroll again (ask for a new invite code if this one was used).");
      break;
    case "conflict":
      showState("used", "This enrollment cannot be completed again.", detail,
        "Return to the terminal; if it failed there, start a new enrollment.");
      break;
    case "webauthn-rejected":
      showState("rejected", "The gateway did not accept your passkey.", detail,
        "Use a passkey that checks it is you (fingerprint, face or PIN), then press Create passkey again.");
      break;
    default:
      showState("error", err.problem.title || "The gateway refused the enrollment.", detail,
        "Reload this page to try again; if it keeps failing, start a new enrollment.");
  }
}

function showDone(answer) {
  setText("device-id", answer.device_id || "");
  setVisible("result", Boolean(answer.device_id));
  if (answer.root_fingerprint) {
    setText("root-fingerprint", answer.root_fingerprint);
    setVisible("root", true);
  }
  if (answer.status === "pending_approval") {
    showState("pending", "Your passkey was created; this device now waits for approval.",
      "An administrator, or another passkey you hold, must approve it before it can be used.",
      "Keep the terminal open: the command finishes by itself once the device is approved.");
    showRecovery();
  } else if (answer.status === "active") {
    stopPolling();
    setVisible("recover", false);
    showState("success", "Your device is enrolled; return to the terminal.",
      "The command there is saving the device certificate now.",
      "Then import device.p12 into your browser and sign in.", LINKS.login);
  } else if (answer.status === "expired") {
    showFailure(new ApiProblem(410, { type: "gone", detail: "This enrollment link is no longer valid." }));
  } else {
    showState("error", "This enrollment cannot be used.", `Its status is ${answer.status}.`,
      "Start again with idwall device enroll.");
  }
}

function stopPolling() {
  if (polling !== null) clearInterval(polling);
  polling = null;
}

// While the device waits, the page follows its status: an approval signed elsewhere (an administrator's, a
// manager's) shows here as soon as it happens, as it does in the polling terminal.
function followStatus() {
  if (polling !== null) return;
  polling = setInterval(async () => {
    try {
      const info = await api(statusUrl);
      if (info.status !== "pending_approval") showDone(info);
    } catch (err) {
      // a missed poll changes nothing: the next one asks again
    }
  }, POLL_MS);
}

// A self-service device waits: say which case applies (approve it yourself, or who must), and offer the button.
async function showRecovery() {
  followStatus();
  let info;
  try {
    info = await api(recoverUrl);
  } catch (err) {
    return;  // an invited device (or one no longer waiting): the pending state above stands
  }
  // the words come from the gateway, which renders the same ones into the page when it is loaded
  if (info.case !== "self") {
    setVisible("recover", false);
    showState("pending", info.title, info.detail, info.next);
    return;
  }
  setText("recover-device", info.device_name);
  setText("recover-started", when(info.started_at));
  setText("recover-source", info.source || "unknown");
  showState("recover", info.title, info.detail, info.next);
  setVisible("recover", true);
  recoverButton.hidden = false;
}

function showRecoverFailure(err) {
  if (!(err instanceof ApiProblem)) {
    showFailure(err);
    return;
  }
  switch (err.slug) {
    case "passkey-suspect":
      recoverButton.hidden = true;
      showState("suspect", "Your passkey cannot approve this device.", err.message,
        "Ask an administrator to approve it (device.approve); keep the terminal open meanwhile.");
      break;
    case "forbidden":
      showState("rejected", "That passkey cannot approve this device.", err.message,
        "Press Approve with my passkey and choose another passkey you hold.");
      break;
    case "webauthn-rejected":
      showState("rejected", "The gateway did not accept that passkey.", err.message,
        "Press Approve with my passkey and choose a passkey of yours on another device.");
      break;
    case "conflict":
      recoverButton.hidden = true;
      showState("used", "This device is no longer waiting for approval.", err.message,
        "Return to the terminal.");
      break;
    default:
      showState("error", err.problem.title || "The gateway refused the approval.", err.message,
        "Press Approve with my passkey to try again.");
  }
}

async function recover() {
  recoverButton.disabled = true;
  try {
    const begun = await api(`${recoverUrl}/begin`, { method: "POST", body: {} });
    showState("waiting", "Waiting for your passkey…",
      "Choose a passkey of yours on another device, then touch the sensor, look at the camera or enter your PIN.",
      "If no prompt appears, look for a browser window behind this one.");
    let credential;
    try {
      credential = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(begun.options),
      });
    } catch (err) {
      const failure = passkeyFailure(err, "Approve with my passkey");
      if (failure === null) throw err;
      showState(...failure);
      return;
    }
    showState("finishing", "Checking your passkey…", "The gateway is verifying it and issuing the certificate.");
    await api(`${recoverUrl}/finish`, {
      method: "POST", body: { action_id: begun.action_id, credential: credential.toJSON() },
    });
    showDone(await loadStatus());
  } catch (err) {
    showRecoverFailure(err);
  } finally {
    recoverButton.disabled = false;
  }
}

async function loadStatus() {
  const info = await api(statusUrl);
  // User and device were rendered by the server ("Name (id)"); the answer only has the id, so they stay.
  // The expiry is shown again in the reader's local time.
  if (info.expires_at) setText("expires", when(info.expires_at));
  return info;
}

async function createPasskey() {
  button.disabled = true;
  try {
    if (options === null) {
      const info = await loadStatus();
      if (info.status !== "begun" || !info.options) {
        button.hidden = true;
        showDone(info);
        return;
      }
      options = info.options;
    }
    showState("waiting", "Waiting for your passkey…",
      "Follow your browser's prompt: touch the sensor, look at the camera or enter your PIN.",
      "If no prompt appears, look for a browser window behind this one.");
    let credential;
    try {
      credential = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options),
      });
    } catch (err) {
      const failure = passkeyFailure(err, "Create passkey");
      if (failure === null) throw err;
      showState(...failure);
      return;
    }
    showState("finishing", "Checking your passkey…", "The gateway is verifying it and issuing the certificate.");
    // A failed finish may consume the challenge: the next attempt fetches fresh options.
    options = null;
    const answer = await api("/idwall/api/enroll/finish", {
      method: "POST", body: { enrollment_id: enrollmentId, credential: credential.toJSON() },
    });
    button.hidden = true;
    showDone(answer);
  } catch (err) {
    showFailure(err);
  } finally {
    button.disabled = false;
  }
}

async function start() {
  let info;
  try {
    info = await loadStatus();
  } catch (err) {
    showFailure(err);
    return;
  }
  recoverButton.addEventListener("click", recover);
  if (info.status !== "begun") {
    showDone(info);
    return;
  }
  if (!passkeysSupported("create")) {
    showState("unsupported", "This browser cannot create a passkey here.",
      "It lacks WebAuthn with JSON options (PublicKeyCredential.parseCreationOptionsFromJSON).",
      "Open this link in a current Chrome, Edge, Firefox or Safari.");
    return;
  }
  options = info.options;
  button.addEventListener("click", createPasskey);
  button.hidden = false;
  button.focus();
}

start();
