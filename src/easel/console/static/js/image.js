import { api, el, $, can, when } from "./api.js";
import { boot, fail, notify } from "./shell.js";

const id = $("#image-detail").dataset.imageId;

function row(label, value) {
  if (value === null || value === undefined || value === "") return [];
  return [el("dt", { text: label }), el("dd", { text: String(value) })];
}

async function main() {
  const me = await boot();
  let image;
  try {
    image = (await api(`/api/v1/images/${encodeURIComponent(id)}`)).data;
  } catch (err) {
    fail(err);
    return;
  }
  const img = $("#detail-img");
  img.src = image.storageUrl;
  img.alt = `Image ${image.id}`;
  $("#detail-caption").textContent = `${image.width}×${image.height} · ${image.mimeType} · ${Math.round(image.fileSize / 1024)} KB`;
  $("#download").href = image.storageUrl;
  $("#download").download = `easel-${image.id}.${image.mimeType.split("/")[1]}`;
  const params = $("#detail-params");
  params.append(...row("Source", image.source), ...row("Folder", image.folder || "Unfiled"), ...row("Created", when(image.createdAt)), ...row("Seed", image.seed));
  if (image.generationId && can(me, "generations:read")) {
    try {
      const gen = (await api(`/api/v1/generations/${image.generationId}`)).data;
      params.append(
        ...row("Prompt", gen.originalPrompt || gen.prompt),
        ...row("Prompt given to the model", gen.prompt !== gen.originalPrompt ? gen.prompt : null),
        ...row("Negative prompt", gen.negativePrompt),
        ...row("Model", gen.model),
        ...row("Task", gen.task),
        ...row("Size", `${gen.width}×${gen.height}`),
        ...row("Steps", gen.steps),
        ...row("Guidance", gen.guidance),
        ...row("Strength", gen.task !== "text-to-image" ? gen.strength : null),
        ...row("Style", gen.style),
        ...row("LoRAs", (gen.loras || []).map((l) => `${l.name} (${l.scale})`).join(", ")),
        ...row("Generation seed", gen.seed),
        ...row("Images", gen.n),
        ...row("Credits", gen.credits),
        ...row("Generation", gen.id));
      const recall = $("#recall");
      recall.hidden = !can(me, "generations:write");
      recall.addEventListener("click", () => location.assign(`/console/?recall=${encodeURIComponent(gen.id)}`));
    } catch (err) {
      fail(err);
    }
  } else {
    $("#recall").hidden = true;
  }
  $("#use-source").addEventListener("click", () => {
    sessionStorage.setItem("easel.source", JSON.stringify({ id: image.id, url: image.storageUrl, width: image.width, height: image.height }));
    location.assign("/console/");
  });
  $("#delete-image").addEventListener("click", async () => {
    if (!confirm("Delete this image? Its file is removed and its links stop working.")) return;
    try {
      await api(`/api/v1/images/${encodeURIComponent(id)}`, { method: "DELETE" });
      notify("Image deleted.");
      location.assign("/console/gallery");
    } catch (err) {
      fail(err);
    }
  });
  document.body.dataset.loaded = "true";
}

main();
