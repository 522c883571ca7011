import { ApiError, $, clearKey, explain, getKey, setKey, whoami } from "./api.js";
import { takeSignInMessage } from "./shell.js";

const form = $("#signin-form");
const error = $("#signin-error");
const CONSOLE_SCOPES = ["generations:write", "generations:read", "images:read", "admin"];

function show(message) {
  error.textContent = message;
  error.hidden = !message;
}

function next() {
  const target = new URLSearchParams(location.search).get("next") || "/console/";
  // Only this console's own pages: never an open redirect.
  return target.startsWith("/console/") && !target.startsWith("//") ? target : "/console/";
}

function landing(me) {
  const wanted = next();
  if (wanted !== "/console/") return wanted;
  if (me.scopes.includes("admin") || me.scopes.includes("generations:write")) return "/console/";
  if (me.scopes.includes("images:read")) return "/console/gallery";
  if (me.scopes.includes("generations:read")) return "/console/queue";
  return null;
}

async function trySignIn(key) {
  setKey(key);
  try {
    const me = await whoami();
    const target = landing(me);
    if (!target) {
      clearKey();
      show(`This key is valid but may do nothing the console shows (its scopes: ${me.scopes.join(", ") || "none"}; the console needs one of ${CONSOLE_SCOPES.join(", ")}).`);
      return;
    }
    location.assign(target);
  } catch (err) {
    clearKey();
    show(err instanceof ApiError && err.status === 401 ? `${err.message}. Check the key and try again.` : explain(err));
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("#key").value.trim();
  if (!key) {
    show("Paste an API key first.");
    $("#key").focus();
    return;
  }
  show("");
  trySignIn(key);
});

const message = takeSignInMessage();
if (message) show(message);
// A server started with --no-auth needs no key: sign straight in.
if (getKey() === null) {
  fetch("/api/v1/me", { credentials: "omit" }).then((r) => (r.ok ? trySignIn("") : null)).catch(() => null);
}
$("#key").focus();
