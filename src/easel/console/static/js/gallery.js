import { api, el, $, can } from "./api.js";
import { applyScopes, boot, fail, notify } from "./shell.js";

const PAGE = 24;
const state = { me: null, folder: undefined, model: "", cursor: null, shown: 0, more: false, loading: false, selected: new Set() };

// Pages by cursor: the same cost at any depth (docs/api/native.md, "Pages").
function query() {
  const q = new URLSearchParams({ limit: PAGE });
  if (state.cursor) q.set("cursor", state.cursor);
  if (state.folder !== undefined) q.set("folder", state.folder ?? "");
  if (state.model) q.set("model", state.model);
  return q;
}

async function loadFolders() {
  const folders = (await api("/api/v1/folders")).data;
  const total = folders.reduce((sum, f) => sum + f.imageCount, 0);
  const item = (value, label, count) => {
    const current = value === state.folder;
    return el("li", {}, el("button", { type: "button", class: "link folder", "aria-pressed": current ? "true" : "false",
      "data-folder": value === undefined ? "*" : value === null ? "" : value,
      onclick: () => selectFolder(value) }, label, el("span", { class: "muted small", text: ` ${count}` })));
  };
  $("#folders").replaceChildren(
    item(undefined, "All images", total),
    ...folders.map((f) => item(f.name, f.name === null ? "Unfiled" : f.name, f.imageCount)));
  $("#folder-names").replaceChildren(...folders.filter((f) => f.name).map((f) => el("option", { value: f.name })));
  $("#delete-folder").hidden = !(typeof state.folder === "string" && can(state.me, "images:write"));
}

function card(image) {
  const selectable = can(state.me, "images:write");
  const box = selectable ? el("input", { type: "checkbox", class: "select", "aria-label": `Select image ${image.id}`, onchange: (e) => {
    if (e.target.checked) state.selected.add(image.id);
    else state.selected.delete(image.id);
    updateSelection();
  } }) : null;
  return el("li", { class: "tile", "data-image-id": image.id },
    el("a", { href: `/console/images/${image.id}` },
      el("img", { src: image.storageUrl, alt: image.source === "uploaded" ? "Uploaded image" : `Generated image ${image.id}`, loading: "lazy", width: image.width, height: image.height })),
    el("div", { class: "row tight" }, box, el("span", { class: "muted small", text: `${image.width}×${image.height}${image.folder ? " · " + image.folder : ""}` })));
}

async function loadMore() {
  if (state.loading) return;
  state.loading = true;
  try {
    const r = await api(`/api/v1/images?${query()}`);
    state.shown += r.data.length;
    state.cursor = r.pagination.nextCursor;
    state.more = r.pagination.hasMore;
    $("#gallery").append(...r.data.map(card));
    $("#gallery-more").hidden = !state.more;
    $("#gallery-empty").hidden = state.shown > 0;
  } catch (err) {
    fail(err);
  } finally {
    state.loading = false;
  }
}

function reload() {
  state.cursor = null;
  state.shown = 0;
  state.selected.clear();
  updateSelection();
  $("#gallery").replaceChildren();
  return loadMore();
}

function selectFolder(folder) {
  state.folder = folder;
  const q = new URLSearchParams(location.search);
  if (folder === undefined) q.delete("folder");
  else q.set("folder", folder ?? "");
  history.replaceState(null, "", `?${q}`);
  loadFolders().catch(fail);
  reload();
}

function updateSelection() {
  const n = state.selected.size;
  $("#selection-count").textContent = n ? `${n} selected` : "";
  $("#move-selected").disabled = !n;
}

async function moveSelected() {
  const name = $("#move-target").value.trim();
  const folder = name === "" ? null : name;
  try {
    for (const id of state.selected) await api(`/api/v1/images/${id}`, { method: "PATCH", body: { folder } });
    notify(`Moved ${state.selected.size} image(s) to ${folder ?? "Unfiled"}.`);
    await loadFolders();
    await reload();
  } catch (err) {
    fail(err);
  }
}

async function deleteFolder() {
  const name = state.folder;
  if (typeof name !== "string" || !confirm(`Delete the folder "${name}"? Its images are kept, unfiled.`)) return;
  try {
    await api(`/api/v1/folders/${encodeURIComponent(name)}`, { method: "DELETE" });
    notify(`Folder "${name}" deleted; its images are unfiled.`);
    selectFolder(undefined);
  } catch (err) {
    fail(err);
  }
}

async function main() {
  state.me = await boot();
  const q = new URLSearchParams(location.search);
  if (q.has("folder")) state.folder = q.get("folder") === "" ? null : q.get("folder");
  state.model = q.get("model") || "";
  try {
    if (can(state.me, "generations:read")) {
      const models = (await api("/api/v1/models")).data;
      $("#filter-model").append(...models.map((m) => el("option", { value: m.id, selected: m.id === state.model || null }, m.id)));
    } else {
      $("#filter-model").closest("label").hidden = true;
    }
    await loadFolders();
  } catch (err) {
    fail(err);
  }
  applyScopes(state.me);
  $("#delete-folder").hidden = !(typeof state.folder === "string" && can(state.me, "images:write"));
  $("#filter-model").addEventListener("change", (e) => {
    state.model = e.target.value;
    const params = new URLSearchParams(location.search);
    if (state.model) params.set("model", state.model);
    else params.delete("model");
    history.replaceState(null, "", `?${params}`);
    reload();
  });
  $("#gallery-more").addEventListener("click", loadMore);
  $("#move-selected").addEventListener("click", moveSelected);
  $("#delete-folder").addEventListener("click", deleteFolder);
  // Infinite scroll: the next page when the end of the grid comes into view (the button is the fallback).
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && state.more) loadMore();
  }).observe($("#gallery-sentinel"));
  await reload();
  document.body.dataset.loaded = "true";
}

main();
