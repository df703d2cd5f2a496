// Shared helpers of the IDWall pages: JSON API calls with problem+json handling, the status region,
// passkey support checks and the safe "next" path. Text only ever goes into the page through textContent.

/** A non-2xx answer of the API; `problem` is its RFC 9457 body (or null when it had none). */
export class ApiProblem extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `the gateway answered HTTP ${status}`);
    this.name = "ApiProblem";
    this.status = status;
    this.problem = problem || {};
    // "https://idwall.dev/problems/webauthn-rejected" -> "webauthn-rejected"
    const type = typeof this.problem.type === "string" ? this.problem.type : "";
    this.slug = type.slice(type.lastIndexOf("/") + 1);
  }
}

/** The request never got an answer (network down, gateway stopped, TLS refused). */
export class NetworkError extends Error {
  constructor(cause) {
    super("the gateway could not be reached");
    this.name = "NetworkError";
    this.cause = cause;
  }
}

/** Call the JSON API; resolves with the body of a 2xx answer, rejects with ApiProblem or NetworkError. */
export async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new NetworkError(err);
  }
  let data = null;
  if ((response.headers.get("Content-Type") || "").includes("json")) {
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
  }
  if (!response.ok) throw new ApiProblem(response.status, data);
  return data;
}

/** Links a state may offer as its next step (fixed paths only, never text from an answer). */
export const LINKS = {
  enroll: ["/idwall/enroll", "How to enroll a device"],
  login: ["/idwall/login", "Sign in"],
};

/** Put the status region into `state` (also its data-state), announcing it to screen readers. */
export function showState(state, title, detail = "", next = "", link = null) {
  const box = document.getElementById("status");
  box.dataset.state = state;
  box.querySelector(".status-title").textContent = title;
  box.querySelector(".status-detail").textContent = detail;
  box.querySelector(".status-next").textContent = next;
  const anchor = document.getElementById("status-link");
  anchor.parentElement.hidden = !link;
  if (link) {
    anchor.href = link[0];
    anchor.textContent = link[1];
  }
}

/** Show or hide the element with `id`. */
export function setVisible(id, visible) {
  const element = document.getElementById(id);
  if (element) element.hidden = !visible;
}

/** Set the text of the element with `id`. */
export function setText(id, text) {
  const element = document.getElementById(id);
  if (element) element.textContent = text;
}

/** Whether this browser has WebAuthn with the JSON helpers ("create" or "get"). */
export function passkeysSupported(kind) {
  const pkc = window.PublicKeyCredential;
  if (!pkc || !window.isSecureContext || !navigator.credentials) return false;
  const parse = kind === "create" ? pkc.parseCreationOptionsFromJSON : pkc.parseRequestOptionsFromJSON;
  return typeof parse === "function" && typeof pkc.prototype.toJSON === "function";
}

/** The state for an error thrown by navigator.credentials.create/get, or null if it is not one of theirs. */
export function passkeyFailure(err, retry) {
  if (!(err instanceof DOMException)) return null;
  switch (err.name) {
    case "NotAllowedError":
    case "AbortError":
      return ["cancelled", "The passkey prompt was cancelled or timed out.",
        "Nothing was changed.", `Press ${retry} to try again.`];
    case "InvalidStateError":
      return ["already-registered", "This authenticator already holds a passkey for your account.",
        "A passkey cannot be registered twice.", "Use another authenticator, or ask for help from your administrator."];
    case "SecurityError":
      return ["error", "The browser refused this page's passkey request.",
        "The page's address does not match the gateway's passkey domain.",
        "Open the exact link the terminal printed (https, same host and port)."];
    case "NotSupportedError":
      return ["unsupported", "Your authenticator does not support what the gateway asks for.",
        err.message, "Try another authenticator or a current browser."];
    default:
      return ["error", "The passkey operation failed.", `${err.name}: ${err.message}`, `Press ${retry} to try again.`];
  }
}

/** `value` if it is a same-origin absolute path (exactly one leading "/"), else "/". */
export function safeNext(value) {
  if (typeof value !== "string" || !value.startsWith("/") || value.startsWith("//")) return "/";
  // Browsers read "\" as "/" and drop tabs and newlines inside URLs, so "/\evil" or "/\t/evil" could leave.
  if (/[\\\u0000-\u0020\u007f]/.test(value)) return "/";
  return value;
}

/** Seconds since the epoch as local date and time. */
export function when(unix) {
  return typeof unix === "number" ? new Date(unix * 1000).toLocaleString() : "";
}
