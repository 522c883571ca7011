// A generation as a card: live progress from its event stream, previews, cancel, results and their actions.
import { ApiError, api, el, events, explain } from "./api.js";
import { fail, notify } from "./shell.js";

const ENDED = new Set(["success", "failed", "canceled"]);
const LABEL = { pending: "Queued", processing: "Running", success: "Done", failed: "Failed", canceled: "Canceled" };

export function isEnded(gen) {
  return ENDED.has(gen.status);
}

export function statusLabel(gen) {
  return LABEL[gen.status] || gen.status;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    notify("Link copied.");
  } catch {
    window.prompt("Copy this link:", text);
  }
}

// One card per generation. `actions` adds buttons under each result image: [{label, run(gen, image)}].
export class JobCard {
  constructor(gen, { canCancel = true, actions = [], onEnd = null } = {}) {
    this.gen = gen;
    this.actions = actions;
    this.onEnd = onEnd;
    this.abort = new AbortController();
    this.status = el("span", { class: "status", "data-status": gen.status });
    this.position = el("span", { class: "muted small position" });
    this.bar = el("progress", { max: 1, value: 0, "aria-label": "Progress" });
    this.previews = el("div", { class: "previews" });
    this.results = el("ul", { class: "grid results-grid" });
    this.error = el("p", { class: "error", role: "alert", hidden: true });
    this.cancel = el("button", { type: "button", class: "cancel", text: "Cancel", hidden: !canCancel, onclick: () => this.doCancel() });
    const title = el("div", { class: "jobhead" },
      el("strong", { class: "prompt", text: gen.originalPrompt || gen.prompt }),
      el("span", { class: "muted small", text: `${gen.model} · ${gen.width}×${gen.height} · n=${gen.n} · seed ${gen.seed}` }));
    this.node = el("li", { class: "job card", "data-id": gen.id },
      title, el("div", { class: "row" }, this.status, this.position, el("span", { class: "grow" }), this.cancel),
      this.bar, this.previews, this.error, this.results);
    this.render(gen);
  }

  render(gen) {
    this.gen = gen;
    this.status.textContent = statusLabel(gen);
    this.status.dataset.status = gen.status;
    this.node.dataset.status = gen.status;
    const total = gen.progress && gen.progress.total ? gen.progress.total : gen.steps || 1;
    this.bar.max = total;
    this.bar.value = gen.status === "success" ? total : (gen.progress && gen.progress.step) || 0;
    this.bar.hidden = isEnded(gen) && gen.status !== "success";
    this.position.textContent = gen.status === "pending" && gen.queuePosition ? `position ${gen.queuePosition} in the queue` : "";
    if (isEnded(gen)) this.cancel.hidden = true;
    if (gen.status === "failed" || (gen.status === "canceled" && gen.errorMessage)) {
      this.error.textContent = gen.errorMessage || "The generation failed.";
      this.error.hidden = false;
    }
    if (gen.status === "success") this.showResults(gen);
  }

  queued(position) {
    this.status.textContent = statusLabel({ status: "pending" });
    this.position.textContent = position ? `position ${position} in the queue` : "";
  }

  progress(step, total) {
    this.status.textContent = statusLabel({ status: "processing" });
    this.status.dataset.status = "processing";
    this.node.dataset.status = "processing";
    this.position.textContent = `step ${step} of ${total}`;
    this.bar.max = total;
    this.bar.value = step;
  }

  preview(p) {
    let img = this.previews.querySelector(`[data-image-index="${p.imageIndex}"]`);
    if (!img) {
      img = el("img", { class: "preview", "data-image-index": p.imageIndex, width: p.width, height: p.height });
      this.previews.append(img);
    }
    img.src = p.image;
    img.alt = `Preview of image ${p.imageIndex + 1} at step ${p.step} of ${p.total}`;
  }

  showResults(gen) {
    this.previews.replaceChildren();
    this.results.replaceChildren(
      ...(gen.outputImages || []).map((image) => {
        const link = el("a", { href: `/console/images/${image.id}` },
          el("img", { src: image.storageUrl, alt: `Image ${image.index + 1}: ${gen.originalPrompt || gen.prompt}`, width: image.width, height: image.height, loading: "lazy" }));
        const buttons = el("div", { class: "actions" },
          el("a", { class: "button", href: image.storageUrl, download: `easel-${image.id}.${(image.mimeType || "image/png").split("/")[1]}`, text: "Download" }),
          el("button", { type: "button", text: "Copy link", onclick: () => copyText(image.storageUrl) }),
          ...this.actions.map((a) => el("button", { type: "button", text: a.label, onclick: () => a.run(gen, image) })));
        return el("li", { class: "result", "data-image-id": image.id }, link, el("span", { class: "muted small", text: `seed ${image.seed}` }), buttons);
      }));
  }

  async doCancel() {
    this.cancel.disabled = true;
    try {
      const r = await api(`/api/v1/generations/${this.gen.id}/cancel`, { method: "POST" });
      this.render(r.data);
    } catch (err) {
      fail(err);
    } finally {
      this.cancel.disabled = false;
    }
  }

  // Follow the job's event stream until it ends; if the stream breaks, read the record until it ends.
  async follow() {
    let lastId = null;
    for (let attempt = 0; attempt < 5 && !isEnded(this.gen); attempt++) {
      try {
        for await (const message of events(`/api/v1/generations/${this.gen.id}/events`, { signal: this.abort.signal, lastEventId: lastId })) {
          if (message.id) lastId = message.id;
          const data = JSON.parse(message.data);
          if (message.event === "queued") this.queued(data.position);
          else if (message.event === "progress") this.progress(data.step, data.total);
          else if (message.event === "preview") this.preview(data);
          else if (ENDED.has(data.status)) this.render(data);
        }
      } catch (err) {
        if (err.name === "AbortError") return;
        if (err instanceof ApiError && err.status && err.status !== 429) {
          fail(err);
          return;
        }
        await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
      }
      if (!isEnded(this.gen)) {
        try {
          this.render((await api(`/api/v1/generations/${this.gen.id}`)).data);
        } catch (err) {
          this.error.textContent = explain(err);
          this.error.hidden = false;
          return;
        }
      }
    }
    if (this.onEnd) this.onEnd(this.gen);
  }

  stop() {
    this.abort.abort();
  }
}
