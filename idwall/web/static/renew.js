// The renewal page: the user signs device.renew {device_id, csr_pem} with a passkey bound to this device,
// over this device's own connection; the terminal that asked saves the new certificate.
import {
  ApiProblem, LINKS, NetworkError, api, passkeyFailure, passkeysSupported, setVisible, showState,
} from "./idwall.js";

const main = document.getElementById("main");
const renewalId = main.dataset.renewalId;
const here = `/idwall/renew/${encodeURIComponent(renewalId)}`;

function showFailure(err) {
  if (err instanceof NetworkError) {
    showState("network", "The gateway could not be reached.", "Nothing was changed.",
      "Check your connection, then try again.");
  } else if (!(err instanceof ApiProblem)) {
    showState("error", "Something went wrong.", String(err && err.message || err), "Reload this page to try again.");
  } else if (err.status === 401) {
    showState("login", "Sign in on this device first.", err.message, "Sign in, then come back to this page.",
      [`/idwall/login?next=${encodeURIComponent(here)}`, "Sign in"]);
  } else if (err.slug === "no-client-certificate") {
    showState("no-certificate", "This browser has no device certificate.", err.message,
      "Open this link in a browser that uses the device's certificate.", LINKS.enroll);
  } else if (err.status === 403) {
    showState("refused", "This renewal cannot be signed here.", err.message,
      "Open the link on the device being renewed and sign with its passkey.");
  } else if (err.slug === "webauthn-rejected") {
    showState("rejected", "The gateway did not accept your passkey.", err.message,
      "Use a passkey bound to this device and try again.");
  } else {
    showState("error", err.problem.title || "The renewal failed.", err.message,
      "Run idwall device renew again if this persists.");
  }
}

async function renew() {
  const button = document.getElementById("renew");
  button.disabled = true;
  try {
    const renewal = await api(`/idwall/api/renew/${encodeURIComponent(renewalId)}`);
    if (renewal.status !== "begun") {
      showState(renewal.status, `This renewal is ${renewal.status}.`, "", "Return to the terminal.");
      setVisible("renew", false);
      return;
    }
    showState("signing", "Renewing…",
      "Follow your browser's prompt: touch the sensor, look at the camera or enter your PIN.",
      "If no prompt appears, look for a browser window behind this one.");
    const begin = await api("/idwall/api/actions/begin", {
      method: "POST",
      body: { action: { type: "device.renew", device_id: renewal.device_id, csr_pem: renewal.csr_pem } },
    });
    let credential;
    try {
      credential = await navigator.credentials.get({
        publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(begin.options),
      });
    } catch (err) {
      const failure = passkeyFailure(err, "Renew with passkey");
      if (failure === null) throw err;
      showState(...failure);
      return;
    }
    await api("/idwall/api/actions/finish", {
      method: "POST", body: { action_id: begin.action_id, credential: credential.toJSON() },
    });
    setVisible("renew", false);
    setVisible("signing", false);
    showState("success", "The certificate is renewed; return to the terminal.",
      "The terminal saves the new device certificate; this browser's old one no longer works.",
      "Import the new device.p12 into this browser.");
  } catch (err) {
    showFailure(err);
  } finally {
    button.disabled = false;
  }
}

function start() {
  if (main.dataset.state !== "ready") return;
  if (!passkeysSupported("get")) {
    showState("unsupported", "This browser cannot use passkeys here.",
      "It lacks WebAuthn with JSON options (PublicKeyCredential.parseRequestOptionsFromJSON).",
      "Use a current Chrome, Edge, Firefox or Safari.");
    return;
  }
  document.getElementById("renew").addEventListener("click", renew);
  setVisible("renew", true);
  setVisible("signing", true);
}

start();
