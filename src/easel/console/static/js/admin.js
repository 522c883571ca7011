// Projects, keys, usage and webhooks: the admin API, for a key with the admin scope.
import { ApiError, api, el, $, can, explain, when } from "./api.js";
import { applyScopes, boot, fail, notify } from "./shell.js";
import { copyText } from "./jobs.js";
import { barChart } from "./chart.js";

const state = { me: null, projects: [], messagesOffset: 0 };

function showError(box, err) {
  box.textContent = err ? explain(err) : "";
  box.hidden = !err;
}

function formValues(form) {
  const out = {};
  for (const [name, value] of new FormData(form)) {
    const input = form.elements[name];
    if (value === "") continue;
    out[name] = input && input.type === "number" ? Number(value) : value;
  }
  return out;
}

// -- projects ------------------------------------------------------------------------------------------

async function loadProjects() {
  state.projects = (await api("/api/v1/admin/projects")).data;
  $("#projects").replaceChildren(...state.projects.map((p) => el("tr", { "data-project-id": p.id },
    el("td", { text: p.name }), el("td", { text: p.budgetCredits ?? "none" }),
    el("td", { text: p.rateLimitPerHour === null ? "server default" : p.rateLimitPerHour === 0 ? "unlimited" : p.rateLimitPerHour }),
    el("td", {}, el("code", { text: p.id })))));
  const select = $("#keys-project");
  const current = select.value || state.me.projectId;
  select.replaceChildren(...state.projects.map((p) => el("option", { value: p.id, selected: p.id === current || null }, p.name)));
  select.closest(".row").hidden = state.projects.length < 2;
}

async function createProject(event) {
  event.preventDefault();
  try {
    const p = (await api("/api/v1/admin/projects", { method: "POST", body: formValues(event.target) })).data;
    event.target.reset();
    notify(`Project ${p.name} created.`);
    await loadProjects();
  } catch (err) {
    fail(err);
  }
}

// -- keys ----------------------------------------------------------------------------------------------

function limits(k) {
  const parts = [];
  parts.push(k.rateLimitPerHour === null ? "default rate" : k.rateLimitPerHour === 0 ? "unlimited rate" : `${k.rateLimitPerHour}/h`);
  if (k.budgetCredits !== null) parts.push(`${k.budgetCredits} credits`);
  if (k.expiresAt) parts.push(`expires ${when(k.expiresAt)}`);
  return parts.join(" · ");
}

async function loadKeys() {
  const project = $("#keys-project").value || state.me.projectId;
  const keys = (await api(`/api/v1/admin/keys?projectId=${encodeURIComponent(project)}`)).data;
  $("#keys").replaceChildren(...keys.map((k) => el("tr", { "data-key-id": k.id, "data-state": k.revokedAt ? "revoked" : "active" },
    el("td", { text: k.name }), el("td", {}, el("code", { text: k.id })), el("td", { class: "small", text: k.scopes.join(", ") }),
    el("td", { class: "small", text: limits(k) }), el("td", { class: "small", text: when(k.lastUsedAt) }),
    el("td", { text: k.revokedAt ? `revoked ${when(k.revokedAt)}` : "active" }),
    el("td", {}, k.revokedAt || k.id === state.me.keyId ? null : el("button", { type: "button", class: "danger revoke", text: "Revoke",
      "aria-label": `Revoke key ${k.name} (${k.id})`, onclick: () => revoke(k) })))));
}

async function revoke(k) {
  if (!confirm(`Revoke the key "${k.name}" (${k.id})? Clients using it are refused at once.`)) return;
  try {
    await api(`/api/v1/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
    notify(`Key ${k.id} revoked.`);
    await loadKeys();
  } catch (err) {
    fail(err);
  }
}

async function createKey(event) {
  event.preventDefault();
  const form = event.target;
  const values = formValues(form);
  const body = { name: values.name || "key", scopes: [...form.querySelectorAll('input[name="scope"]:checked')].map((b) => b.value) };
  if (values.rateLimitPerHour !== undefined) body.rateLimitPerHour = values.rateLimitPerHour;
  if (values.budgetCredits !== undefined) body.budgetCredits = values.budgetCredits;
  if (values.expiresAt) body.expiresAt = `${values.expiresAt}T00:00:00Z`;
  const project = $("#keys-project").value;
  if (project && project !== state.me.projectId) body.projectId = project;
  showError($("#key-error"), null);
  if (!body.scopes.length) return showError($("#key-error"), new Error("Choose at least one scope."));
  try {
    const created = (await api("/api/v1/admin/keys", { method: "POST", body })).data;
    $("#new-key-value").textContent = created.key;
    $("#new-key").hidden = false;
    $("#new-key-copy").onclick = () => copyText(created.key);
    await loadKeys();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return fail(err);
    showError($("#key-error"), err);
  }
}

// -- usage ---------------------------------------------------------------------------------------------

async function loadUsage() {
  const days = Number($("#usage-days").value);
  const since = new Date(Date.now() - days * 86400000);
  since.setUTCHours(0, 0, 0, 0);
  const report = (await api(`/api/v1/usage?period=day&from=${encodeURIComponent(since.toISOString().replace(/\.\d+Z$/, "Z"))}`)).data;
  const perDay = new Map();
  for (let d = 0; d <= days; d++) {
    const day = new Date(since.getTime() + d * 86400000).toISOString().slice(0, 10);
    perDay.set(day, 0);
  }
  for (const row of report.byPeriod) {
    const day = String(row.period).slice(0, 10);
    perDay.set(day, (perDay.get(day) || 0) + row.credits);
  }
  barChart($("#usage-chart"), [...perDay].map(([day, credits]) => ({ label: day, value: credits })), "credits");
  const t = report.totals;
  const budget = report.budget ? ` · budget ${report.budget.credits}, ${report.budget.remaining} left` : "";
  $("#usage-totals").textContent = `${t.generations} generations, ${t.images} images, ${t.credits} credits${budget}`;
  $("#usage-models").replaceChildren(...report.byModel.map((m) => el("tr", {},
    el("td", { text: m.model }), el("td", { text: m.images }), el("td", { text: m.credits }))));
}

// -- webhooks ------------------------------------------------------------------------------------------

async function loadEndpoints() {
  const eps = (await api("/api/v1/webhooks/endpoints")).data;
  $("#endpoints").replaceChildren(...eps.map((ep) => el("tr", { "data-endpoint-id": ep.id },
    el("td", {}, el("code", { text: ep.url }), ep.description ? el("div", { class: "muted small", text: ep.description }) : null),
    el("td", { class: "small", text: ep.eventTypes.length ? ep.eventTypes.join(", ") : "all events" }),
    el("td", { text: ep.enabled ? "enabled" : `disabled${ep.disabledReason ? ": " + ep.disabledReason : ""}` }),
    el("td", { class: "actions" },
      el("button", { type: "button", text: ep.enabled ? "Disable" : "Enable", onclick: () => toggleEndpoint(ep) }),
      el("button", { type: "button", class: "danger", text: "Delete", onclick: () => deleteEndpoint(ep) })))));
}

async function createEndpoint(event) {
  event.preventDefault();
  showError($("#endpoint-error"), null);
  try {
    const ep = (await api("/api/v1/webhooks/endpoints", { method: "POST", body: formValues(event.target) })).data;
    event.target.reset();
    $("#endpoint-secret-value").textContent = ep.secret;
    $("#endpoint-secret").hidden = false;
    await loadEndpoints();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return fail(err);
    showError($("#endpoint-error"), err);
  }
}

async function toggleEndpoint(ep) {
  try {
    await api(`/api/v1/webhooks/endpoints/${ep.id}`, { method: "PATCH", body: { enabled: !ep.enabled } });
    await loadEndpoints();
  } catch (err) {
    fail(err);
  }
}

async function deleteEndpoint(ep) {
  if (!confirm(`Delete the endpoint ${ep.url}?`)) return;
  try {
    await api(`/api/v1/webhooks/endpoints/${ep.id}`, { method: "DELETE" });
    await loadEndpoints();
  } catch (err) {
    fail(err);
  }
}

function messageRow(m) {
  const detail = el("tr", { class: "detail-row", hidden: true }, el("td", { colspan: 7 }));
  const show = async () => {
    if (!detail.hidden) return (detail.hidden = true);
    try {
      const full = (await api(`/api/v1/webhooks/messages/${m.id}`)).data;
      detail.firstChild.replaceChildren(el("ol", { class: "small" }, ...full.attemptLog.map((a) =>
        el("li", {}, `${when(a.startedAt)} → ${a.url}: ${a.outcome}${a.statusCode ? " " + a.statusCode : ""}${a.error ? " (" + a.error + ")" : ""}, ${a.durationMs} ms`))));
      if (!full.attemptLog.length) detail.firstChild.textContent = "No delivery attempt yet.";
      detail.hidden = false;
    } catch (err) {
      fail(err);
    }
  };
  const main = el("tr", { "data-message-id": m.id },
    el("td", { text: m.eventType }), el("td", {}, el("code", { class: "small", text: m.generationId || "—" })),
    el("td", { text: m.status }), el("td", { text: `${m.attempts}/${m.maxAttempts}` }),
    el("td", { class: "small", text: m.lastStatusCode ? String(m.lastStatusCode) : m.lastError || "—" }),
    el("td", { class: "small", text: when(m.createdAt) }),
    el("td", { class: "actions" },
      el("button", { type: "button", text: "Attempts", "aria-expanded": "false", onclick: (e) => show().then(() => e.target.setAttribute("aria-expanded", String(!detail.hidden))) }),
      el("button", { type: "button", text: "Redeliver", onclick: () => redeliver(m) })));
  return [main, detail];
}

async function loadMessages(reset = false) {
  if (reset) {
    state.messagesOffset = 0;
    $("#messages").replaceChildren();
  }
  const r = await api(`/api/v1/webhooks/messages?limit=20&offset=${state.messagesOffset}`);
  state.messagesOffset += r.data.length;
  $("#messages").append(...r.data.flatMap(messageRow));
  if (!state.messagesOffset) $("#messages").append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No webhook messages yet." })));
  $("#messages-more").hidden = !r.pagination.hasMore;
}

async function redeliver(m) {
  try {
    await api(`/api/v1/webhooks/messages/${m.id}/redeliver`, { method: "POST" });
    notify(`Message ${m.id} is being delivered again.`);
    await loadMessages(true);
  } catch (err) {
    fail(err);
  }
}

async function main() {
  state.me = await boot();
  if (!can(state.me, "admin")) {
    $("#admin-denied").hidden = false;
    document.body.dataset.loaded = "true";
    return;
  }
  $("#admin").hidden = false;
  applyScopes(state.me);
  $("#project-form").addEventListener("submit", createProject);
  $("#keys-project").addEventListener("change", () => loadKeys().catch(fail));
  $("#key-form").addEventListener("submit", createKey);
  $("#usage-days").addEventListener("change", () => loadUsage().catch(fail));
  $("#endpoint-form").addEventListener("submit", createEndpoint);
  $("#messages-more").addEventListener("click", () => loadMessages().catch(fail));
  try {
    await loadProjects();
    await Promise.all([loadKeys(), loadUsage(), loadEndpoints(), loadMessages(true)]);
  } catch (err) {
    fail(err);
  }
  document.body.dataset.loaded = "true";
}

main();
