// The project's queue, live from one stream of every change (GET /api/v1/events).
import { api, el, $, can, events, when } from "./api.js";
import { boot, fail, notify } from "./shell.js";
import { statusLabel } from "./jobs.js";

const ACTIVE = new Set(["pending", "processing"]);
const ENDED_BAD = new Set(["failed", "canceled"]);
const state = { me: null, rows: new Map(), endedCursor: null };

function progressText(gen) {
  if (gen.status === "pending") return gen.queuePosition ? `position ${gen.queuePosition}` : "queued";
  if (gen.status === "processing" && gen.progress) return `step ${gen.progress.step} of ${gen.progress.total}`;
  return "";
}

function row(gen) {
  const bar = el("progress", { max: gen.progress?.total || gen.steps || 1, value: gen.progress?.step || 0, "aria-label": `Progress of ${gen.id}` });
  const actions = el("div", { class: "actions" });
  if (ACTIVE.has(gen.status) && can(state.me, "generations:write")) {
    actions.append(el("button", { type: "button", class: "cancel", text: "Cancel", onclick: (e) => act(e.target, gen, "cancel") }));
  }
  if (ENDED_BAD.has(gen.status) && can(state.me, "generations:write")) {
    actions.append(el("button", { type: "button", class: "retry", text: "Retry", onclick: (e) => act(e.target, gen, "retry") }));
  }
  return el("li", { class: "job card", "data-id": gen.id, "data-status": gen.status },
    el("div", { class: "jobhead" }, el("strong", { class: "prompt", text: gen.originalPrompt || gen.prompt }),
      el("span", { class: "muted small", text: `${gen.model} · ${gen.width}×${gen.height} · n=${gen.n} · ${when(gen.createdAt)}` })),
    el("div", { class: "row" }, el("span", { class: "status", "data-status": gen.status, text: statusLabel(gen) }),
      el("span", { class: "muted small position", text: progressText(gen) }), el("span", { class: "grow" }), actions),
    ACTIVE.has(gen.status) ? bar : null,
    gen.errorMessage ? el("p", { class: "error", text: `${gen.errorCode ? gen.errorCode + ": " : ""}${gen.errorMessage}` }) : null);
}

function place(gen) {
  const old = state.rows.get(gen.id);
  const node = row(gen);
  const list = ACTIVE.has(gen.status) ? $("#active") : ENDED_BAD.has(gen.status) ? $("#ended") : null;
  if (old) old.remove();
  if (list && !gen.deletedAt) {
    if (list === $("#active")) list.append(node);
    else list.prepend(node);
    state.rows.set(gen.id, node);
  } else {
    state.rows.delete(gen.id);
  }
  $("#active-empty").hidden = $("#active").children.length > 0;
  $("#ended-empty").hidden = $("#ended").children.length > 0;
}

async function act(button, gen, what) {
  button.disabled = true;
  try {
    const r = await api(`/api/v1/generations/${gen.id}/${what}`, { method: "POST" });
    place(r.data);
    notify(what === "cancel" ? "Generation canceled." : "Generation queued again.");
  } catch (err) {
    fail(err);
    button.disabled = false;
  }
}

async function loadEnded() {
  const q = new URLSearchParams({ status: "failed,canceled", limit: 20 });
  if (state.endedCursor) q.set("cursor", state.endedCursor);
  const r = await api(`/api/v1/generations?${q}`);
  state.endedCursor = r.pagination.nextCursor;
  for (const gen of r.data) {
    const node = row(gen);
    $("#ended").append(node);
    state.rows.set(gen.id, node);
  }
  $("#ended-more").hidden = !r.pagination.hasMore;
  $("#ended-empty").hidden = $("#ended").children.length > 0;
}

async function live() {
  let lastId = null;
  for (;;) {
    try {
      for await (const message of events("/api/v1/events", { lastEventId: lastId })) {
        if (message.id) lastId = message.id;
        if (message.event === "generation") place(JSON.parse(message.data));
      }
    } catch (err) {
      if (err.status === 401 || err.status === 403) return fail(err);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function main() {
  state.me = await boot();
  try {
    // Oldest first: the claim order within a priority class.
    const active = await api("/api/v1/generations?status=pending,processing&limit=100");
    for (const gen of active.data.reverse()) place(gen);
    await loadEnded();
  } catch (err) {
    fail(err);
    return;
  }
  $("#ended-more").addEventListener("click", () => loadEnded().catch(fail));
  live();
  document.body.dataset.loaded = "true";
}

main();
