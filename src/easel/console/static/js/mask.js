// The inpainting mask: painted with a pointer on a canvas laid over the source image, at the source's own
// resolution. Exported as a black PNG with the painted area white (white = repaint, the API's convention).

export class MaskPainter {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.brush = 12;
    this.enabled = false;
    this.painted = false;
    this.drawing = false;
    this.last = null;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    for (const type of ["pointerup", "pointercancel", "pointerleave"]) canvas.addEventListener(type, () => this.up());
  }

  reset(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.clear();
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = false;
    this.canvas.dispatchEvent(new Event("maskchange"));
  }

  fill() {
    this.ctx.fillStyle = "#fff";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = true;
    this.canvas.dispatchEvent(new Event("maskchange"));
  }

  point(e) {
    const box = this.canvas.getBoundingClientRect();
    const sx = this.canvas.width / box.width;
    const sy = this.canvas.height / box.height;
    return { x: (e.clientX - box.left) * sx, y: (e.clientY - box.top) * sy, scale: (sx + sy) / 2 };
  }

  down(e) {
    if (!this.enabled) return;
    e.preventDefault();
    this.canvas.setPointerCapture(e.pointerId);
    this.drawing = true;
    this.last = this.point(e);
    this.stroke(this.last, this.last);
  }

  move(e) {
    if (!this.drawing) return;
    const p = this.point(e);
    this.stroke(this.last, p);
    this.last = p;
  }

  up() {
    if (this.drawing) this.canvas.dispatchEvent(new Event("maskchange"));
    this.drawing = false;
  }

  stroke(a, b) {
    const ctx = this.ctx;
    ctx.strokeStyle = "#fff";
    ctx.fillStyle = "#fff";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = this.brush * b.scale;
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
    this.painted = true;
  }

  // The mask as a PNG blob: black, with what was painted white.
  async toBlob() {
    const out = document.createElement("canvas");
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const ctx = out.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.drawImage(this.canvas, 0, 0);
    return new Promise((resolve) => out.toBlob(resolve, "image/png"));
  }
}
