import { api, el, $, explain, ApiError, can } from "./api.js";
import { boot, fail, notify } from "./shell.js";
import { JobCard } from "./jobs.js";
import { MaskPainter } from "./mask.js";

const form = $("#gen-form");
const state = { me: null, models: new Map(), model: null, source: null, lastSeed: null, open: 0 };
const painter = new MaskPainter($("#mask-canvas"));
const IMAGE_SIZE_LABEL = { thumbnail: "Thumbnail", small: "Small", medium: "Medium", large: "Large" };

function option(value, label, selected) {
  return el("option", { value, selected: selected || null }, label);
}

function formError(message) {
  const box = $("#form-error");
  box.textContent = message || "";
  box.hidden = !message;
}

// Offer only what the chosen model can do.
function showModel(model) {
  state.model = model;
  const d = model.defaults || {};
  $("#model-help").textContent = model.description || "";
  $("#aspectRatio").replaceChildren(...model.aspectRatios.map((r) => option(r, r, r === (d.aspectRatio || "1:1"))));
  $("#imageSize").replaceChildren(...Object.entries(model.imageSizes).map(([name, px]) =>
    option(name, `${IMAGE_SIZE_LABEL[name] || name} (${px} px)`, name === d.imageSize)));
  $("#size-help").textContent = `Exact sizes: ${model.minSize}–${model.maxSize} px a side, multiples of ${model.multipleOf}.`;
  $("#n").max = model.maxN;
  if (Number($("#n").value) > model.maxN) $("#n").value = model.maxN;
  $("#prompt").maxLength = model.maxPromptLength || 5000;
  $("#steps").placeholder = d.steps ? `${d.steps} (default)` : "default";
  $("#guidance").placeholder = d.guidance !== undefined ? `${d.guidance} (default)` : "default";
  const params = model.parameters || {};
  $("#neg-row").hidden = params.negativePrompt === false;
  $("#guidance-row").hidden = !params.guidance;
  $("#style").replaceChildren(option("", "None"), ...(model.styles || []).map((s) => option(s, s)));
  $("#style-row").hidden = !(model.styles || []).length;
  const loras = model.loras || [];
  $("#lora-set").hidden = !loras.length;
  $("#loras").replaceChildren(...loras.map((name) => el("li", {},
    el("label", { class: "check" }, el("input", { type: "checkbox", name: "lora", value: name }), ` ${name}`),
    el("label", {}, " scale ", el("input", { type: "number", name: `lora-scale-${name}`, min: -4, max: 4, step: 0.05, placeholder: "catalog's", "aria-label": `Scale of ${name}` })))));
  const editing = model.tasks.includes("image-to-image") || model.tasks.includes("inpaint");
  $("#source-set").hidden = !editing;
  $("#mask-on").disabled = !model.tasks.includes("inpaint");
  $("#mask-on").closest(".row").hidden = !model.tasks.includes("inpaint");
  if (!editing) clearSource();
  if (d.strength !== undefined && !state.source) $("#strength").value = d.strength;
  updateStrength();
  updateCost();
}

function updateCost() {
  const m = state.model;
  if (!m) return;
  const n = Math.max(1, Number($("#n").value) || 1);
  $("#cost").textContent = m.creditsPerImage ? `${(m.creditsPerImage * n).toFixed(2).replace(/\.00$/, "")} credits` : "";
}

function updateStrength() {
  $("#strength-out").textContent = Number($("#strength").value).toFixed(2);
}

// -- the source image and its mask ----------------------------------------------------------------

function setSource(source) {
  state.source = source;
  const img = $("#source-img");
  img.onload = () => {
    painter.reset(img.naturalWidth, img.naturalHeight);
    $("#source-box").hidden = false;
  };
  img.src = source.url;
  $("#mask-on").checked = false;
  toggleMask();
}

function clearSource() {
  state.source = null;
  $("#source-box").hidden = true;
  $("#source-img").removeAttribute("src");
  $("#mask-on").checked = false;
  toggleMask();
}

function toggleMask() {
  const on = $("#mask-on").checked;
  painter.enabled = on;
  $("#mask-tools").hidden = !on;
  $("#mask-canvas").classList.toggle("active", on);
  if (!on) painter.clear();
}

async function upload(file, name) {
  const data = new FormData();
  data.append("file", file, name || file.name || "image.png");
  return (await api("/api/v1/images", { method: "POST", form: data })).data;
}

async function uploadSource(file) {
  if (!file) return;
  if (!can(state.me, "images:write")) {
    notify("This key may not upload images (images:write).", "error");
    return;
  }
  try {
    const image = await upload(file);
    setSource({ id: image.id, url: image.storageUrl, width: image.width, height: image.height });
    notify("Source image uploaded.");
  } catch (err) {
    fail(err);
  }
}

function wireSource() {
  $("#source-file").addEventListener("change", (e) => uploadSource(e.target.files[0]));
  const zone = $("#dropzone");
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    uploadSource(e.dataTransfer.files[0]);
  });
  zone.addEventListener("keydown", (e) => {
    if (e.target === zone && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      $("#source-file").click();
    }
  });
  $("#source-clear").addEventListener("click", clearSource);
  $("#mask-on").addEventListener("change", toggleMask);
  $("#mask-clear").addEventListener("click", () => painter.clear());
  $("#mask-fill").addEventListener("click", () => painter.fill());
  $("#brush").addEventListener("input", (e) => (painter.brush = Number(e.target.value)));
  $("#strength").addEventListener("input", updateStrength);
  wirePicker();
}

// -- picking a source from the gallery --------------------------------------------------------------

function wirePicker() {
  const dialog = $("#picker");
  let offset = 0;
  const more = async () => {
    try {
      const r = await api(`/api/v1/images?limit=24&offset=${offset}`);
      offset += r.data.length;
      $("#picker-grid").append(...r.data.map((image) => el("li", {},
        el("button", { type: "button", class: "thumb", "data-image-id": image.id, onclick: () => {
          setSource({ id: image.id, url: image.storageUrl, width: image.width, height: image.height });
          dialog.close();
        } }, el("img", { src: image.storageUrl, alt: `Image ${image.id}`, loading: "lazy" })))));
      $("#picker-more").hidden = !r.pagination.hasMore;
      if (!offset) $("#picker-grid").append(el("li", { class: "muted", text: "The gallery is empty." }));
    } catch (err) {
      fail(err);
    }
  };
  $("#pick-gallery").hidden = !can(state.me, "images:read");
  $("#pick-gallery").addEventListener("click", () => {
    offset = 0;
    $("#picker-grid").replaceChildren();
    dialog.showModal();
    more();
  });
  $("#picker-more").addEventListener("click", more);
  $("#picker-close").addEventListener("click", () => dialog.close());
}

// -- the request ---------------------------------------------------------------------------------------

function numberOf(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

async function requestBody() {
  const body = { prompt: $("#prompt").value.trim(), model: $("#model").value };
  const neg = $("#negativePrompt").value.trim();
  if (neg && !$("#neg-row").hidden) body.negativePrompt = neg;
  const custom = $("#customSize").value.trim();
  if (custom) body.size = custom;
  else {
    body.aspectRatio = $("#aspectRatio").value;
    body.imageSize = $("#imageSize").value;
  }
  body.n = numberOf("#n") ?? 1;
  const seed = numberOf("#seed");
  if (seed !== undefined) body.seed = seed;
  const steps = numberOf("#steps");
  if (steps !== undefined) body.steps = steps;
  const guidance = numberOf("#guidance");
  if (guidance !== undefined && !$("#guidance-row").hidden) body.guidance = guidance;
  const previews = numberOf("#previews");
  if (previews) body.previews = previews;
  if ($("#style").value) body.style = $("#style").value;
  const loras = [...form.querySelectorAll('input[name="lora"]:checked')].map((box) => {
    const scale = form.querySelector(`input[name="lora-scale-${box.value}"]`).value.trim();
    return scale === "" ? { name: box.value } : { name: box.value, scale: Number(scale) };
  });
  if (loras.length) body.loras = loras;
  if (state.source) {
    body.sourceImageId = state.source.id;
    body.strength = Number($("#strength").value);
    if ($("#mask-on").checked) {
      if (!painter.painted) throw new Error("Paint the area to repaint on the image, or turn the mask off.");
      const mask = await upload(await painter.toBlob(), "mask.png");
      body.maskImageId = mask.id;
    }
  }
  return body;
}

async function submit(body) {
  formError("");
  const button = $("#generate");
  button.disabled = true;
  try {
    const r = await api("/api/v1/generations", { method: "POST", body });
    track(r.data, body);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return fail(err);
    formError(explain(err));
    const field = err.fields && err.fields[0] && err.fields[0].field;
    const input = field && form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (input) input.focus();
  } finally {
    button.disabled = false;
  }
}

function track(gen, body) {
  $("#jobs-empty").hidden = true;
  const card = new JobCard(gen, {
    canCancel: can(state.me, "generations:write"),
    actions: [
      { label: "Use as source", run: (_g, image) => {
        setSource({ id: image.id, url: image.storageUrl, width: image.width, height: image.height });
        $("#source-set").scrollIntoView({ block: "nearest" });
      } },
      { label: "Same settings, new seed", run: () => {
        const { seed: _seed, ...again } = body; // the same request (source and mask included), a new seed
        submit(again);
      } },
    ],
    onEnd: (ended) => {
      if (ended.status === "success") {
        state.lastSeed = ended.seed;
        $("#seed-reuse").disabled = false;
      }
    },
  });
  $("#jobs").prepend(card.node);
  card.follow();
}

// -- recall: fill the form from a generation (gallery's "recall") --------------------------------------

async function recall(id) {
  try {
    const gen = (await api(`/api/v1/generations/${encodeURIComponent(id)}`)).data;
    if (state.models.has(gen.model)) {
      $("#model").value = gen.model;
      showModel(state.models.get(gen.model));
    }
    $("#prompt").value = gen.originalPrompt || gen.prompt;
    $("#negativePrompt").value = gen.negativePrompt || "";
    $("#customSize").value = `${gen.width}x${gen.height}`;
    $("#n").value = gen.n;
    $("#seed").value = gen.seed;
    $("#steps").value = gen.steps;
    $("#guidance").value = gen.guidance ?? "";
    if (gen.style) $("#style").value = gen.style;
    for (const lora of gen.loras || []) {
      const box = form.querySelector(`input[name="lora"][value="${CSS.escape(lora.name)}"]`);
      if (box) {
        box.checked = true;
        form.querySelector(`input[name="lora-scale-${lora.name}"]`).value = lora.scale;
      }
    }
    if (gen.strength !== null && gen.strength !== undefined) $("#strength").value = gen.strength;
    updateStrength();
    $("#advanced").open = true;
    notify(`Recalled the parameters of generation ${gen.id}.`);
  } catch (err) {
    fail(err);
  }
}

async function main() {
  state.me = await boot();
  if (!can(state.me, "generations:write")) {
    formError("This key may not create generations (generations:write): the playground is read-only.");
    $("#generate").disabled = true;
  }
  try {
    const models = (await api("/api/v1/models")).data;
    for (const m of models) state.models.set(m.id, m);
    $("#model").replaceChildren(...models.map((m) => option(m.id, m.id, m.default)));
    showModel(models.find((m) => m.default) || models[0]);
  } catch (err) {
    fail(err);
    return;
  }
  $("#model").addEventListener("change", (e) => showModel(state.models.get(e.target.value)));
  $("#n").addEventListener("input", updateCost);
  $("#seed-random").addEventListener("click", () => ($("#seed").value = ""));
  $("#seed-reuse").addEventListener("click", () => ($("#seed").value = state.lastSeed ?? ""));
  wireSource();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!$("#prompt").value.trim()) {
      formError("Write a prompt first.");
      $("#prompt").focus();
      return;
    }
    let body;
    try {
      body = await requestBody();
    } catch (err) {
      formError(explain(err));
      return;
    }
    submit(body);
  });
  const params = new URLSearchParams(location.search);
  if (params.get("recall")) await recall(params.get("recall"));
  const source = sessionStorage.getItem("easel.source");
  if (source) {
    sessionStorage.removeItem("easel.source");
    setSource(JSON.parse(source));
  }
  document.body.dataset.loaded = "true";
}

main();
