// What every signed-in page does first: find the key, ask the server who it is, show only what it may do.
import { ApiError, $, can, clearKey, explain, getKey, whoami } from "./api.js";

const MESSAGE = "easel.signinMessage";

export function toSignIn(message) {
  clearKey();
  if (message) sessionStorage.setItem(MESSAGE, message);
  const next = location.pathname + location.search;
  location.replace(`/console/signin?next=${encodeURIComponent(next)}`);
}

export function takeSignInMessage() {
  const m = sessionStorage.getItem(MESSAGE);
  sessionStorage.removeItem(MESSAGE);
  return m;
}

// Show (or hide) every element with data-scope by what the key may do.
export function applyScopes(me, root = document) {
  for (const node of root.querySelectorAll("[data-scope]")) {
    node.hidden = !can(me, node.dataset.scope);
  }
  for (const node of root.querySelectorAll("[data-server-admin]")) node.hidden = !me.serverAdmin;
}

let noticeTimer = null;
export function notify(message, kind = "info") {
  const box = $("#notice");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(noticeTimer);
  if (kind !== "error") noticeTimer = setTimeout(() => (box.hidden = true), 6000);
}

// Report an API error; a key that stopped working sends the user back to sign in.
export function fail(err) {
  if (err instanceof ApiError && err.status === 401) {
    toSignIn(explain(err));
    return;
  }
  notify(explain(err), "error");
}

export async function boot() {
  if (getKey() === null) {
    toSignIn(null);
    return new Promise(() => {}); // navigating away
  }
  let me;
  try {
    me = await whoami();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      toSignIn(explain(err));
      return new Promise(() => {});
    }
    notify(explain(err), "error");
    throw err;
  }
  $("#who").textContent = me.authEnabled ? `${me.keyName || me.keyId} · ${me.projectName}` : "no auth (local)";
  $("#signout").addEventListener("click", () => {
    clearKey();
    location.assign("/console/signin");
  });
  applyScopes(me);
  document.body.dataset.ready = "true";
  return me;
}
