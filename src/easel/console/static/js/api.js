// The console's one way to reach the server: the public native API with the signed-in key.
// The key lives in this tab's session storage; it is sent to this server only (same-origin paths).

const KEY = "easel.key";

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message, fields) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || [];
  }
}

function headers(extra) {
  const h = { ...(extra || {}) };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// fetch a native API path; the parsed JSON body, or an ApiError in the API's own error shape.
export async function api(path, { method = "GET", body, form, signal, extraHeaders } = {}) {
  const h = headers(extraHeaders);
  let payload;
  if (form !== undefined) {
    payload = form;
  } else if (body !== undefined) {
    h["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers: h, body: payload, signal, credentials: "omit", cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "NETWORK", "The server did not answer: is it running?", []);
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    json = null;
  }
  if (!response.ok || (json && json.success === false)) {
    const e = (json && json.error) || {};
    const message = e.message || (json && json.detail) || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, e.code || `HTTP_${response.status}`, String(message), e.fields || []);
  }
  return json;
}

// A user's words for an API error: what went wrong and what to do.
export function explain(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  const fields = err.fields.map((f) => `${f.field}: ${f.message}`).join("; ");
  switch (err.status) {
    case 401:
      return `${err.message}. Sign in again with a valid key.`;
    case 403:
      return `Not allowed: ${err.message}.`;
    case 429:
      return `${err.message}.`;
    default:
      return fields ? `${err.message} (${fields})` : err.message;
  }
}

// Server-sent events over fetch (EventSource cannot send the Authorization header).
// Yields {event, data, id} until the server ends the stream or `signal` aborts it.
export async function* events(path, { signal, lastEventId } = {}) {
  const h = headers({ Accept: "text/event-stream" });
  if (lastEventId) h["Last-Event-ID"] = lastEventId;
  const response = await fetch(path, { headers: h, signal, credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    let e = {};
    try {
      e = (await response.json()).error || {};
    } catch {
      e = {};
    }
    throw new ApiError(response.status, e.code || `HTTP_${response.status}`, e.message || response.statusText, e.fields || []);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const message = { event: "message", data: "", id: null };
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") message.event = text;
        else if (field === "data") data.push(text);
        else if (field === "id") message.id = text;
      }
      if (!data.length) continue;
      message.data = data.join("\n");
      yield message;
    }
  }
}

// The calling key (GET /api/v1/me).
export async function whoami() {
  return (await api("/api/v1/me")).data;
}

export function can(me, scope) {
  return !scope || me.scopes.includes("admin") || me.scopes.includes(scope);
}

// Small DOM helpers shared by the pages.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
